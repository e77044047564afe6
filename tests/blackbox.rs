//! Black-box test of `payorch serve` on Postgres + RabbitMQ against the
//! PayKKa sandbox, including a `kill -9` while a PayKKa call is in flight.
//!
//! Setup: a fresh database `payorch_bb_<uuid>` (dropped at the end), the
//! sandbox in-process (so the test reads its ledger), a merchant key pair
//! from `payorch keygen`, a `payorch.toml`, and a durable queue with a unique
//! name bound to `payorch.events` with `#` BEFORE the service starts.
//!
//! Every flow is driven over HTTP: purchase, pre-auth + two partial
//! captures, 3-D Secure (challenge completed with one POST to the sandbox
//! page), void, two partial refunds, recurring first payment + charge +
//! cancel, checkout session, and a checkout session whose payment
//! notification the sandbox drops (only the reconciler's Checkout Session
//! Query can complete it). Then the crash: an initiate whose answer the
//! sandbox delays (magic amount `...991`) is in flight when the service is
//! killed with SIGKILL; the restarted service's reconciler must bring the
//! order to the sandbox's state, and the sandbox must hold exactly one order
//! for that `trans_id`. Finally every order's view is compared with the
//! sandbox ledger and every stored event must reach the subscriber.
//!
//! Notifications are delayed by 1 s (sandbox fault, probability 1) so that
//! the kill deterministically happens before the crashed order's webhook
//! reaches the service; the restarted service listens on a new port (config
//! `addr = 127.0.0.1:0`), so that webhook is lost and only the reconciler
//! can converge the order. The reconciler runs every second with a 2 s
//! threshold, so the lost-notification session and the crashed order
//! converge within a few seconds.
//!
//! Postgres (PAYORCH_TEST_DATABASE_URL) or RabbitMQ (PAYORCH_TEST_AMQP_URL)
//! unreachable: loud SKIP, unless PAYORCH_REQUIRE_SERVICES=1 (then panic).

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use payorch_engine::store::{EventStore, Position};
use payorch_postgres::PostgresStore;
use payorch_rabbitmq::lapin::Channel;
use payorch_rabbitmq::lapin::options::{BasicGetOptions, QueueDeleteOptions};
use payorch_rabbitmq::lapin::types::ShortString;
use payorch_sandbox::{DeliveryOutcome, FaultConfig, SandboxConfig, SandboxMerchant};
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use support::{Child, Services, amqp_url, keygen, services, sha256_hex, start_serve, until};

/// Names this test in skip messages.
const TEST: &str = "blackbox";

const MERCHANT: &str = "18356675194960";
const API_KEY: &str = "bb-secret-api-key-1";
/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(30);

/// The merchant API of one running service.
struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", Uuid::now_v7().to_string())
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            (200..300).contains(&status),
            "POST {path} -> {status}: {v:#}"
        );
        (status, v)
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        // 202: some PayKKa answer is still outstanding.
        assert!(matches!(status, 200 | 202), "GET {path} -> {status}: {v:#}");
        v
    }

    /// Polls the payment until `cond` holds.
    /// Waits until checkout session `session` is completed; its payment id.
    async fn wait_checkout_completed(&self, what: &str, session: &str) -> String {
        let s = until(WAIT, what, || async move {
            let s = self.get(&format!("/v1/checkout-sessions/{session}")).await;
            (s["status"] == "completed" && s["payment_id"].is_string()).then_some(s)
        })
        .await;
        s["payment_id"].as_str().expect("payment id").to_owned()
    }

    async fn wait_payment(&self, id: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.get(&format!("/v1/payments/{id}")).await;
            if cond(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "payment {id} never reached the expected state: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The shopper pays checkout page `page` with a test card (one HTTP call).
async fn pay_on_hosted_page(http: &reqwest::Client, page: &str) {
    let r = http
        .post(format!("{page}?card=4111111111111111"))
        .send()
        .await
        .expect("checkout page");
    assert!(r.status().is_success(), "checkout page: {}", r.status());
}

fn card(pan: &str) -> Value {
    json!({"type": "card", "number": pan, "exp_month": "07", "exp_year": "2031", "cvv": "123"})
}

fn eur(minor: i64) -> Value {
    json!({"minor": minor, "currency": "EUR"})
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v:#}"))
        .to_owned()
}

fn minor(v: &Value, field: &str) -> i64 {
    v[field]["minor"]
        .as_i64()
        .unwrap_or_else(|| panic!("no {field}.minor in {v:#}"))
}

/// Drains the subscriber queue into `seen` (message ids).
async fn drain(channel: &Channel, queue: &str, seen: &mut HashSet<String>) {
    while let Some(m) = channel
        .basic_get(
            ShortString::from(queue.to_owned()),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
    {
        if let Some(id) = m.delivery.properties.message_id() {
            seen.insert(id.as_str().to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgres_and_rabbitmq_survives_kill_9_and_matches_the_sandbox() {
    // ---- services; the subscriber queue is bound before payorch starts
    let Some(Services {
        db: _db,
        store_url,
        amqp,
        channel,
        queue,
    }) = services(TEST, "bb").await
    else {
        return;
    };

    // ---- merchant keys, sandbox, config
    let dir = tempfile::tempdir().expect("tempdir");
    let (keys, public) = keygen(dir.path());
    let sandbox = payorch_sandbox::spawn(
        SandboxConfig {
            merchants: vec![SandboxMerchant::new(MERCHANT, public)],
            faults: FaultConfig {
                // Every notification waits 1 s: the crashed order's webhook
                // cannot beat the kill (see the module docs).
                notify_delay_probability: 1.0,
                notify_delay: Duration::from_secs(1),
                // Long enough that the call is surely in flight at the kill.
                slow_response: Duration::from_secs(20),
                ..FaultConfig::default()
            },
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sandbox");
    let platform = dir.path().join("platform.pem");
    std::fs::write(&platform, sandbox.platform_public_key_pem()).expect("platform key");
    let cfg = dir.path().join("payorch.toml");
    std::fs::write(
        &cfg,
        format!(
            "store_url = \"{store_url}\"\namqp_url = \"{}\"\naddr = \"127.0.0.1:0\"\nreconcile_interval_secs = 1\nreconcile_threshold_secs = 2\n\
             [paykka]\nbase_url = \"{}\"\nresponse_signature = \"enforce\"\n\
             [[merchants]]\nmerchant_id = \"{MERCHANT}\"\nprivate_key_path = \"{}\"\npaykka_public_key_path = \"{}\"\napi_key_sha256 = \"{}\"\n",
            amqp_url(),
            sandbox.base_url(),
            keys.join("merchant_private.pem").display(),
            platform.display(),
            sha256_hex(API_KEY),
        ),
    )
    .expect("config");

    let (mut serve, url) = start_serve(&cfg, &dir.path().join("serve-1.log"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let api = Api {
        http: http.clone(),
        url,
    };
    let mut payments: Vec<String> = Vec::new();

    // ---- checkout session paid, notification dropped (part 1 of 2)
    // Paid now and checked after the other flows, so that the reconciler
    // threshold (`reconcile_threshold_secs = 2` in the config) passes
    // meanwhile instead of adding to the run time.
    const LOST_AMOUNT: i64 = 3700;
    let (_, s) = api
        .post("/v1/checkout-sessions", json!({"amount": eur(LOST_AMOUNT)}))
        .await;
    let lost_session = id_of(&s);
    let lost_gateway_session = s["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session_id: {s:#}"))
        .to_owned();
    let page = s["session_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no session_url: {s:#}"))
        .to_owned();
    sandbox.drop_session_notifications(&lost_gateway_session);
    pay_on_hosted_page(&http, &page).await;
    // The only notification PayKKa produced for it never left the sandbox.
    let of_session = |n: &payorch_sandbox::NotificationRecord| {
        serde_json::from_str::<Value>(&n.body)
            .is_ok_and(|b| b["session_id"] == lost_gateway_session.as_str())
    };
    let notified: Vec<_> = sandbox
        .notifications_sent()
        .into_iter()
        .filter(of_session)
        .collect();
    assert_eq!(notified.len(), 1, "{notified:#?}");
    assert_eq!(
        (notified[0].outcome, notified[0].attempts),
        (DeliveryOutcome::Dropped, 0),
        "{notified:#?}"
    );

    // ---- purchase (automatic capture) + two partial refunds
    let (_, p) = api
        .post(
            "/v1/payments",
            json!({"amount": eur(10000), "payment_method": card("4111111111111111")}),
        )
        .await;
    assert_eq!(p["status"], "captured", "{p:#}");
    let purchase = id_of(&p);
    payments.push(purchase.clone());
    api.post(
        &format!("/v1/payments/{purchase}/refunds"),
        json!({"amount": eur(2000)}),
    )
    .await;
    api.post(
        &format!("/v1/payments/{purchase}/refunds"),
        json!({"amount": eur(3000)}),
    )
    .await;
    let p = api
        .wait_payment(&purchase, |p| {
            p["status"] == "partially_refunded" && p["refunded"]["minor"] == 5000
        })
        .await;
    assert_eq!(p["refunds"].as_array().map(Vec::len), Some(2), "{p:#}");

    // ---- pre-auth + two partial captures
    let (_, p) = api
        .post(
            "/v1/payments",
            json!({"amount": eur(8000), "authorisation_type": "PRE_AUTH",
                   "capture_method": "MANUAL", "payment_method": card("5555555555554444")}),
        )
        .await;
    assert_eq!(p["status"], "authorised", "{p:#}");
    let preauth = id_of(&p);
    payments.push(preauth.clone());
    api.post(
        &format!("/v1/payments/{preauth}/capture"),
        json!({"amount": eur(3000)}),
    )
    .await;
    api.post(
        &format!("/v1/payments/{preauth}/capture"),
        json!({"amount": eur(2000)}),
    )
    .await;
    let p = api
        .wait_payment(&preauth, |p| p["captured"]["minor"] == 5000)
        .await;
    assert_eq!(p["captures"].as_array().map(Vec::len), Some(2), "{p:#}");

    // ---- 3-D Secure: one POST on the challenge page, then the webhook
    let (_, p) = api
        .post(
            "/v1/payments",
            json!({"amount": eur(4300), "payment_method": card("4000000000003220"),
                   "return_url": "https://shop.example/back"}),
        )
        .await;
    assert_eq!(p["status"], "challenge_required", "{p:#}");
    let three_ds = id_of(&p);
    payments.push(three_ds.clone());
    let challenge = p["next_action"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no next_action: {p:#}"))
        .to_owned();
    let r = http
        .post(format!("{challenge}?result=success"))
        .send()
        .await
        .expect("3DS page");
    assert!(r.status().is_success(), "3DS page: {}", r.status());
    api.wait_payment(&three_ds, |p| p["status"] == "captured")
        .await;

    // ---- void
    let (_, p) = api
        .post(
            "/v1/payments",
            json!({"amount": eur(5000), "capture_method": "MANUAL",
                   "payment_method": card("4111111111111111")}),
        )
        .await;
    let voided = id_of(&p);
    payments.push(voided.clone());
    api.post(
        &format!("/v1/payments/{voided}/void"),
        json!({"reason": "REQUESTED_BY_CUSTOMER"}),
    )
    .await;
    api.wait_payment(&voided, |p| p["status"] == "voided").await;

    // ---- recurring: first payment, one charge, cancel
    let (_, p) = api
        .post(
            "/v1/payments",
            json!({"amount": eur(1200), "payment_type": "RECURRING",
                   "store_token": {"purpose": "SUBSCRIPTION", "shopper_reference": "bb-shopper"},
                   "payment_method": card("4111111111111111")}),
        )
        .await;
    assert_eq!(p["status"], "captured", "{p:#}");
    payments.push(id_of(&p));
    // The first payment's view has no `agreement_id` (see
    // `first_recurring_payment_shows_its_agreement_id`); the engine uses
    // the first payment's id as the agreement id, as `payorch demo` does.
    let agreement = p["agreement_id"]
        .as_str()
        .map_or_else(|| id_of(&p), str::to_owned);
    let (_, c) = api
        .post(
            &format!("/v1/recurring-agreements/{agreement}/charges"),
            json!({"amount": eur(1200)}),
        )
        .await;
    let charge = id_of(&c);
    payments.push(charge.clone());
    api.wait_payment(&charge, |p| p["status"] == "captured")
        .await;
    api.post(
        &format!("/v1/recurring-agreements/{agreement}/cancel"),
        json!({"reason": "subscription ended"}),
    )
    .await;
    let a = until(WAIT, "agreement cancelled", || {
        let api = &api;
        let agreement = &agreement;
        async move {
            let a = api
                .get(&format!("/v1/recurring-agreements/{agreement}"))
                .await;
            (a["status"] == "cancelled").then_some(a)
        }
    })
    .await;
    assert_eq!(a["charges"].as_array().map(Vec::len), Some(1), "{a:#}");

    // ---- checkout session paid on the hosted page
    let (_, s) = api
        .post("/v1/checkout-sessions", json!({"amount": eur(4200)}))
        .await;
    let session = id_of(&s);
    let page = s["session_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no session_url: {s:#}"))
        .to_owned();
    pay_on_hosted_page(&http, &page).await;
    let checkout_payment = api
        .wait_checkout_completed("checkout completed", &session)
        .await;
    api.wait_payment(&checkout_payment, |p| p["status"] == "captured")
        .await;
    payments.push(checkout_payment);

    // ---- checkout session paid, notification dropped (part 2 of 2): only
    // the reconciler's Checkout Session Query can tell the service
    let lost_payment = api
        .wait_checkout_completed(
            "the reconciler completed the unnotified session",
            &lost_session,
        )
        .await;
    let p = api
        .wait_payment(&lost_payment, |p| {
            p["status"] == "captured" && p["captured"]["minor"] == LOST_AMOUNT
        })
        .await;
    assert_eq!(p["amount"], eur(LOST_AMOUNT), "{p:#}");
    let ledger = sandbox.ledger();
    let paid = ledger
        .merchant(MERCHANT)
        .and_then(|m| m.sessions.get(&lost_gateway_session))
        .and_then(|s| s.order_id.clone())
        .unwrap_or_else(|| panic!("the sandbox has no order for {lost_gateway_session}"));
    assert_eq!(p["gateway_order_id"].as_str(), Some(paid.as_str()), "{p:#}");
    // Still dropped: nothing reached the service after all.
    assert!(
        sandbox
            .notifications_sent()
            .iter()
            .filter(|n| of_session(n))
            .all(|n| n.outcome == DeliveryOutcome::Dropped),
        "{:#?}",
        sandbox.notifications_sent()
    );
    payments.push(lost_payment);

    // ---- crash: SIGKILL while a slow initiate is in flight
    const CRASH_AMOUNT: i64 = 10_991;
    let in_flight = {
        let http = http.clone();
        let url = api.url.clone();
        tokio::spawn(async move {
            http.post(format!("{url}/v1/payments"))
                .bearer_auth(API_KEY)
                .header("Idempotency-Key", "bb-crash")
                .json(&json!({"amount": eur(CRASH_AMOUNT), "payment_method": card("4111111111111111")}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    // The service records its intent before calling PayKKa; the sandbox
    // committed the order: the call is in flight now.
    let trans_id = until(WAIT, "the slow initiate reached the sandbox", || {
        let ledger = sandbox.ledger();
        async move {
            ledger.merchant(MERCHANT).and_then(|m| {
                m.orders
                    .values()
                    .find(|o| o.amount == CRASH_AMOUNT)
                    .map(|o| o.trans_id.clone())
            })
        }
    })
    .await;
    serve.0.kill().expect("kill -9");
    serve.0.wait().expect("reap");
    let answer = in_flight.await.expect("join");
    assert!(
        answer.is_err(),
        "the in-flight call got an answer despite the kill: {answer:?}"
    );
    drop(serve);

    let (_serve, url) = start_serve(&cfg, &dir.path().join("serve-2.log"));
    let api = Api { http, url };
    // The order's id, from the store (the client never got an answer).
    let events = PostgresStore::connect(&store_url)
        .await
        .expect("store for reading");
    let read_all = || async {
        let mut all = Vec::new();
        let mut after = Position::START;
        loop {
            let page = events.read_all(after, 500).await.expect("read_all");
            let Some(last) = page.last() else { break };
            after = last.global_position;
            all.extend(page);
        }
        all
    };
    let crash_stream = read_all()
        .await
        .into_iter()
        .find(|e| e.stream_id.as_str().starts_with("order-") && e.payload.get().contains(&trans_id))
        .map(|e| e.stream_id.as_str().to_owned())
        .expect("the intent of the crashed order is in the store");
    let crashed = crash_stream.trim_start_matches("order-").to_owned();
    let p = api
        .wait_payment(&crashed, |p| {
            p["status"] == "captured" && p["captured"]["minor"] == CRASH_AMOUNT
        })
        .await;
    assert_eq!(p["trans_id"], trans_id.as_str(), "{p:#}");
    // It was the reconciler (the webhook went to the dead process's port).
    // The pass logs its summary after it has appended the outcome, so the
    // order can be visible as captured a moment before the line is written.
    let log_path = dir.path().join("serve-2.log");
    let log = until(WAIT, "the reconciler's pass summary in the log", || {
        let log_path = &log_path;
        async move {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            (log.contains("reconciler pass") && log.contains("resolved=1")).then_some(log)
        }
    })
    .await;
    assert!(log.contains("resolved=1"), "{log}");
    payments.push(crashed);
    let ledger = sandbox.ledger();
    let books = ledger.merchant(MERCHANT).expect("merchant books");
    let charged: Vec<_> = books
        .orders
        .values()
        .filter(|o| o.trans_id == trans_id || o.amount == CRASH_AMOUNT)
        .collect();
    assert_eq!(charged.len(), 1, "charged twice: {charged:#?}");
    assert_eq!(charged[0].captured, CRASH_AMOUNT);

    // ---- every order: the service's view equals the sandbox's books
    for id in &payments {
        let v = api.get(&format!("/v1/payments/{id}")).await;
        let t = v["trans_id"].as_str().expect("trans_id");
        let o = books
            .order_by_trans_id(t)
            .unwrap_or_else(|| panic!("sandbox has no order for {t}: {v:#}"));
        assert_eq!(
            v["gateway_order_id"].as_str(),
            Some(o.order_id.as_str()),
            "{v:#}"
        );
        assert_eq!(minor(&v, "captured"), o.captured, "captured: {v:#}\n{o:#?}");
        assert_eq!(minor(&v, "refunded"), o.refunded, "refunded: {v:#}\n{o:#?}");
        if v["status"] != "voided" {
            assert_eq!(
                minor(&v, "authorised"),
                o.authorised,
                "authorised: {v:#}\n{o:#?}"
            );
        }
        assert!(
            !v["captures"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["status"] != "succeeded"),
            "open capture: {v:#}"
        );
    }
    assert_eq!(books.orders.len(), payments.len(), "{:#?}", books.orders);

    // ---- every stored event reaches the subscriber (at least once)
    let stored: HashSet<String> = read_all()
        .await
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    assert!(stored.len() > 30, "{} events", stored.len());
    let mut seen = HashSet::new();
    let deadline = Instant::now() + WAIT;
    loop {
        drain(&channel, &queue, &mut seen).await;
        let missing = stored.difference(&seen).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} stored events never reached the subscriber",
            stored.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // ---- cleanup (the database goes with `db`, the processes with their guards)
    let _ = channel
        .queue_delete(
            ShortString::from(queue.clone()),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = amqp.close(200, "done".into()).await;
    events.pool().close().await;
}

/// The first payment of a recurring agreement tells the merchant its
/// agreement id (the engine creates the agreement with the first order's id
/// when the token is stored, and the order view shows it).
/// Runs on SQLite with the in-process sandbox: no services needed.
#[test]
fn first_recurring_payment_shows_its_agreement_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite://{}", dir.path().join("rec.db").display());
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args(["--store-url", &store, "serve", "--addr", "127.0.0.1:0"])
            .env_remove("PAYORCH_CONFIG")
            .env_remove("PAYORCH_AMQP_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
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
            .expect("serve printed its banner in time");
        if let Some(u) = line.strip_prefix("payorch listening on ") {
            url = Some(u.trim().to_owned());
        }
        if let Some(k) = line.trim().strip_prefix("api key: ") {
            key = Some(k.trim().to_owned());
        }
    }
    let (url, key) = (url.expect("url"), key.expect("key"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/payments"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "rec-1")
            .json(&json!({"amount": eur(1200), "payment_type": "RECURRING",
                   "store_token": {"purpose": "SUBSCRIPTION", "shopper_reference": "s-1"},
                   "payment_method": card("4111111111111111")}))
            .send()
            .await
            .expect("POST /v1/payments");
        let p: Value = r.json().await.expect("json");
        assert_eq!(p["status"], "captured", "{p:#}");
        assert!(
            p["agreement_id"].is_string(),
            "the first recurring payment does not show its agreement id: {p:#}"
        );
    });
}
