//! The merchant webhook delivery log end to end (issue 15 point 6), on
//! SQLite and on Postgres: `payorch serve` delivers a payment's events to a
//! real HTTP receiver that first fails (500), then holds the request past
//! the delivery timeout, then recovers (200). The log (API and CLI) shows
//! every attempt with its status or error class and latency, the final
//! `delivered` state, pages and merchant scoping; signatures verify; each
//! payment's events arrive in order; a redelivery queued through the API
//! and one queued through the CLI reach the receiver again; and a `serve`
//! killed mid-retry leaves its log behind and a restarted one completes the
//! delivery. Every wait is a condition with a deadline.

mod support;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use payorch_webhooks::{EVENT_ID_HEADER, SIGNATURE_HEADER, Secret, verify};
use serde_json::{Value, json};
use sqlx::Executor;
use support::{Child, Database, until};

const SECRET: &str = "whsec_log_test_0123456789";
const MERCHANT: &str = "10000000000001";
const WAIT: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Fail,
    Hang,
    Ok,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Seen {
    event_id: String,
    valid: bool,
    stream_id: String,
    version: u64,
    plan: Plan,
}

#[derive(Default)]
struct Receiver {
    /// What the next requests get; then `fallback`.
    plan: Mutex<VecDeque<Plan>>,
    fallback: Mutex<Option<Plan>>,
    seen: Mutex<Vec<Seen>>,
}

impl Receiver {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn set_fallback(&self, p: Plan) {
        *self.fallback.lock().unwrap() = Some(p);
    }
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let plan = r
        .plan
        .lock()
        .unwrap()
        .pop_front()
        .or(*r.fallback.lock().unwrap())
        .unwrap_or(Plan::Ok);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let valid = verify(
        &Secret::new(SECRET),
        &header(SIGNATURE_HEADER),
        &body,
        now,
        300,
    );
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.seen.lock().unwrap().push(Seen {
        event_id: header(EVENT_ID_HEADER),
        valid: valid && v["event_id"].as_str() == Some(header(EVENT_ID_HEADER).as_str()),
        stream_id: v["stream_id"].as_str().unwrap_or_default().to_owned(),
        version: v["version"].as_u64().unwrap_or(0),
        plan,
    });
    match plan {
        Plan::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        // Held until the dispatcher gives up waiting (its timeout) and
        // drops the connection, which drops this future.
        Plan::Hang => std::future::pending().await,
        Plan::Ok => StatusCode::OK,
    }
}

async fn start_receiver() -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

/// `payorch --config cfg serve` with its URL and API key (banner).
fn serve(cfg: &Path, log: &Path) -> (Child, String, String) {
    let log = std::fs::File::create(log).expect("log file");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "serve",
                "--addr",
                "127.0.0.1:0",
            ])
            .env_remove("PAYORCH_CONFIG")
            .env_remove("PAYORCH_STORE_URL")
            .env_remove("PAYORCH_AMQP_URL")
            .env_remove("PAYORCH_ADDR")
            .env_remove("PAYORCH_PAYKKA_BASE_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn serve"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut url, mut key) = (None, None);
    while url.is_none() || key.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("serve banner in time");
        if let Some(u) = line.strip_prefix("payorch listening on ") {
            url = Some(u.trim().to_owned());
        }
        if let Some(k) = line.trim().strip_prefix("api key: ") {
            key = Some(k.trim().to_owned());
        }
    }
    (child, url.unwrap(), key.unwrap())
}

/// `payorch --config cfg <args>` (blocking, on a plain thread).
async fn cli(cfg: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config".to_owned(), cfg.to_str().unwrap().to_owned()];
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args(&all)
            .env_remove("PAYORCH_CONFIG")
            .env_remove("PAYORCH_STORE_URL")
            .output()
            .expect("run payorch")
    })
    .await
    .unwrap()
}

struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn pay(&self, key: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/payments",
                key,
                json!({
                    "amount": {"minor": 1000, "currency": "EUR"},
                    "capture_method": "AUTOMATIC",
                    "payment_method": {"type": "card", "number": "4111111111111111",
                        "exp_month": "07", "exp_year": "2031", "cvv": "737"},
                    "return_url": "https://shop.example/return"
                }),
            )
            .await;
        assert!((200..300).contains(&status), "{status} {body}");
        body["id"].as_str().expect("payment id").to_owned()
    }

    /// The event ids of a payment.
    async fn events(&self, payment: &str) -> Vec<String> {
        let (status, body) = self.get(&format!("/v1/payments/{payment}/events")).await;
        assert_eq!(status, 200, "{body}");
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every delivery of the endpoint (all pages of 100).
    async fn deliveries(&self, endpoint: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!(
                "/v1/webhook-endpoints/{endpoint}/deliveries?limit=100"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().unwrap().clone()
    }

    async fn delivery(&self, endpoint: &str, event: &str) -> Option<Value> {
        let (status, body) = self
            .get(&format!(
                "/v1/webhook-endpoints/{endpoint}/deliveries?event_id={event}"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().and_then(|d| d.first().cloned())
    }
}

/// Waits until every event of `payments` is delivered to `shop-hook`.
async fn all_delivered(api: &Api, payments: &[String]) -> Vec<String> {
    until(WAIT, "every event delivered", || async move {
        let mut ids = Vec::new();
        for p in payments {
            ids.extend(api.events(p).await);
        }
        let log = api.deliveries("shop-hook").await;
        let delivered = |id: &String| {
            log.iter()
                .any(|d| d["event_id"] == id.as_str() && d["status"] == "delivered")
        };
        ids.iter().all(delivered).then_some(ids)
    })
    .await
}

fn config(dir: &Path, store_url: &str, hook: &str) -> std::path::PathBuf {
    let cfg = dir.join("payorch.toml");
    std::fs::write(
        &cfg,
        format!(
            "store_url = \"{store_url}\"\n\
             webhook_timeout_ms = 600\n\
             webhook_backoff_base_ms = 100\n\
             webhook_backoff_max_ms = 200\n\
             [[webhooks]]\nid = \"shop-hook\"\nmerchant_id = \"{MERCHANT}\"\nurl = \"{hook}\"\n\
             secret = \"{SECRET}\"\nevents = [\"order.*\"]\n\
             [[webhooks]]\nid = \"other-hook\"\nmerchant_id = \"20000000000002\"\nurl = \"{hook}\"\n\
             secret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    cfg
}

async fn scenario(store_url: String) {
    let dir = tempfile::tempdir().unwrap();
    let (hook, receiver) = start_receiver().await;
    let cfg = config(dir.path(), &store_url, &hook);
    let (child, url, key) = serve(&cfg, &dir.path().join("serve-1.log"));
    let api = Api {
        http: reqwest::Client::new(),
        url,
        key,
    };

    // The first delivery fails, the second (its retry: the payment's later
    // events wait behind it) times out, then all succeed. The second
    // payment starts once the first is delivered, so the plan is only the
    // first one's.
    *receiver.plan.lock().unwrap() = VecDeque::from([Plan::Fail, Plan::Hang]);
    let p1 = api.pay("wh-pay-1").await;
    all_delivered(&api, std::slice::from_ref(&p1)).await;
    let p2 = api.pay("wh-pay-2").await;
    let ids = all_delivered(&api, &[p1.clone(), p2.clone()]).await;
    assert!(ids.len() >= 4, "{ids:?}");

    // The first event delivered: 500, timeout, 200, with latencies.
    let log = api.deliveries("shop-hook").await;
    assert_eq!(log.len(), ids.len(), "one delivery per event: {log:#?}");
    let retried: Vec<&Value> = log
        .iter()
        .filter(|d| d["attempt_count"].as_u64() != Some(1))
        .collect();
    assert_eq!(retried.len(), 1, "{log:#?}");
    let r = retried[0];
    assert_eq!(r["status"], "delivered");
    assert_eq!(r["next_attempt_at"], Value::Null);
    let attempts = r["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{r:#}");
    assert_eq!(attempts[0]["http_status"], 500);
    assert_eq!(attempts[0]["error"], Value::Null);
    assert_eq!(attempts[1]["http_status"], Value::Null);
    assert_eq!(attempts[1]["error"], "timeout");
    assert!(attempts[1]["latency_ms"].as_u64().unwrap() >= 500, "{r:#}");
    assert_eq!(attempts[2]["http_status"], 200);
    let numbers: Vec<u64> = attempts
        .iter()
        .map(|a| a["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert!(attempts.iter().all(|a| a["manual"] == false));

    // What the receiver saw: signed, and per payment in version order (a
    // retried event is repeated, never overtaken).
    let seen = receiver.seen();
    assert!(seen.iter().all(|s| s.valid), "{seen:#?}");
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for s in &seen {
        let prev = last.entry(s.stream_id.clone()).or_insert(0);
        assert!(s.version >= *prev, "out of order: {seen:#?}");
        *prev = s.version;
    }
    assert_eq!(
        seen.iter().map(|s| s.plan).collect::<Vec<_>>()[..2],
        [Plan::Fail, Plan::Hang]
    );

    // Pages: limit 2, newest first, through starting_after, no overlap.
    let mut paged = Vec::new();
    let mut path = "/v1/webhook-endpoints/shop-hook/deliveries?limit=2".to_owned();
    loop {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "{body}");
        let data = body["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        paged.extend(
            data.iter()
                .map(|d| d["event_id"].as_str().unwrap().to_owned()),
        );
        if body["has_more"] != true {
            break;
        }
        path = format!(
            "/v1/webhook-endpoints/shop-hook/deliveries?limit=2&starting_after={}",
            data.last().unwrap()["event_id"].as_str().unwrap()
        );
    }
    let all: Vec<String> = log
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paged, all, "pages = the whole list, same order");
    // Newest first: the second payment's events before the first's.
    let p2_events = api.events(&p2).await;
    assert!(
        p2_events.iter().all(|e| all
            .iter()
            .position(|x| x == e)
            .is_some_and(|i| i < p2_events.len())),
        "newest first: {all:?} / {p2_events:?}"
    );
    let (status, body) = api
        .get("/v1/webhook-endpoints/shop-hook/deliveries?status=given_up")
        .await;
    assert_eq!(
        (status, body["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, body) = api
        .get("/v1/webhook-endpoints/shop-hook/deliveries?status=nope")
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "status");

    // Merchant scoping: only its endpoint, no secret; another's is 404.
    let (status, body) = api.get("/v1/webhook-endpoints").await;
    assert_eq!(status, 200);
    let eps: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(eps, vec!["shop-hook"]);
    assert!(!body.to_string().contains(SECRET), "secret shown: {body}");
    let (status, _) = api.get("/v1/webhook-endpoints/other-hook/deliveries").await;
    assert_eq!(status, 404, "another merchant's endpoint");
    let redeliver =
        |ep: &str, ev: &str| format!("/v1/webhook-endpoints/{ep}/deliveries/{ev}/redeliver");
    let (status, _) = api
        .post(&redeliver("other-hook", &ids[0]), "wh-other", json!({}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .post(
            &redeliver("shop-hook", &uuid::Uuid::now_v7().to_string()),
            "wh-unknown",
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "unknown event");

    // Redelivery through the API: 202 with the queued delivery; the same
    // key answers the same; the receiver gets it again, newly signed.
    let target = ids[0].clone();
    let before = receiver.seen().len();
    let (status, queued) = api
        .post(
            &redeliver("shop-hook", &target),
            "wh-redeliver-1",
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["event_id"], target.as_str());
    assert!(queued["redelivery_requested_at"].is_string(), "{queued}");
    let (status, again) = api
        .post(
            &redeliver("shop-hook", &target),
            "wh-redeliver-1",
            json!({}),
        )
        .await;
    assert_eq!((status, &again), (202, &queued), "idempotent replay");
    let (api_ref, target_ref) = (&api, &target);
    until(WAIT, "the API redelivery logged", || async move {
        let (api, target) = (api_ref, target_ref);
        let d = api.delivery("shop-hook", target).await?;
        let manual = d["attempts"]
            .as_array()?
            .iter()
            .filter(|a| a["manual"] == true && a["http_status"] == 200)
            .count();
        (manual == 1 && d["redelivery_requested_at"].is_null()).then_some(())
    })
    .await;
    let again_seen: Vec<Seen> = receiver.seen()[before..].to_vec();
    assert!(
        again_seen.iter().any(|s| s.event_id == target && s.valid),
        "{again_seen:#?}"
    );

    // Redelivery through the CLI (another process on the same store).
    let out = cli(
        &cfg,
        &[
            "webhooks",
            "redeliver",
            "--endpoint",
            "shop-hook",
            "--event",
            &target,
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until(WAIT, "the CLI redelivery logged", || async move {
        let (api, target) = (api_ref, target_ref);
        let d = api.delivery("shop-hook", target).await?;
        let manual = d["attempts"]
            .as_array()?
            .iter()
            .filter(|a| a["manual"] == true)
            .count();
        (manual == 2).then_some(())
    })
    .await;
    assert_eq!(
        receiver
            .seen()
            .iter()
            .filter(|s| s.event_id == target)
            .count(),
        if retried[0]["event_id"] == target.as_str() {
            5
        } else {
            3
        },
        "two redeliveries reached the receiver"
    );
    let out = cli(
        &cfg,
        &[
            "--json",
            "webhooks",
            "deliveries",
            "--endpoint",
            "shop-hook",
            "--limit",
            "100",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(ids.len()));

    // Restart mid-retry: the receiver fails every request; a third payment
    // is retried; while retrying, a redelivery is refused naming the state.
    receiver.set_fallback(Plan::Fail);
    let p3 = api.pay("wh-pay-3").await;
    let first3 = api.events(&p3).await[0].clone();
    let first3_ref = &first3;
    until(
        WAIT,
        "the third payment's first event retried",
        || async move {
            let (api, first3) = (api_ref, first3_ref);
            let d = api.delivery("shop-hook", first3).await?;
            (d["status"] == "failed_retrying" && d["attempt_count"].as_u64()? >= 2).then_some(())
        },
    )
    .await;
    let (status, body) = api
        .post(&redeliver("shop-hook", &first3), "wh-busy", json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failed_retrying"),
        "{body}"
    );
    drop(child); // SIGKILL mid-retry
    let out = cli(
        &cfg,
        &[
            "--json",
            "webhooks",
            "deliveries",
            "--endpoint",
            "shop-hook",
            "--limit",
            "100",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    let kept = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event_id"] == first3.as_str())
        .cloned()
        .expect("the retried delivery survives the kill");
    let attempts_before = kept["attempt_count"].as_u64().unwrap();
    assert!(attempts_before >= 2);
    assert!(
        kept["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["http_status"] == 500),
        "{kept:#}"
    );

    receiver.set_fallback(Plan::Ok);
    let (_child2, url2, key2) = serve(&cfg, &dir.path().join("serve-2.log"));
    let api = Api {
        http: reqwest::Client::new(),
        url: url2,
        key: key2,
    };
    all_delivered(&api, &[p1, p2, p3.clone()]).await;
    let d = api.delivery("shop-hook", &first3).await.unwrap();
    let attempts = d["attempts"].as_array().unwrap();
    let numbers: Vec<u64> = attempts
        .iter()
        .map(|a| a["number"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=attempts.len() as u64).collect();
    assert_eq!(numbers, expected, "numbering continues across the restart");
    assert!(attempts.len() as u64 > attempts_before);
    assert_eq!(attempts.last().unwrap()["http_status"], 200);
    // Nothing delivered before the kill was sent again automatically.
    let seen = receiver.seen();
    for id in &ids {
        let oks = seen
            .iter()
            .filter(|s| &s.event_id == id && s.plan == Plan::Ok)
            .count();
        let expected = if *id == target { 3 } else { 1 };
        assert_eq!(oks, expected, "event {id} delivered {oks} times: {seen:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_log_over_http_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hooks.db").display());
    scenario(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_log_over_http_on_postgres() {
    let mut pg = match support::admin().await {
        Ok(c) => c,
        Err(e) => {
            support::skip(
                "delivery_log_over_http_on_postgres",
                "Postgres",
                &support::database_url(),
                &e,
            );
            return;
        }
    };
    let db = Database {
        name: format!("payorch_hooks_{}", uuid::Uuid::now_v7().simple()),
    };
    pg.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", db.name)))
        .await
        .expect("create database");
    scenario(support::url_of_database(&db.name)).await;
    drop(db);
}
