//! End-to-end tests of `payorch demo`, `replay`, `export`/`import`,
//! `migrate` and `serve`, running the binary against temp SQLite files.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn payorch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_payorch"))
        .args(args)
        .env_remove("PAYORCH_STORE_URL")
        .env_remove("PAYORCH_CONFIG")
        .output()
        .expect("run payorch")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn sqlite(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(name).display())
}

/// Runs the demo into `store` and returns its JSON report.
fn demo(store: &str) -> Value {
    let out = payorch(&["--json", "demo", "--store", store]);
    let v = json_of(&out);
    assert!(
        out.status.success(),
        "demo failed: {v:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    v
}

#[test]
fn demo_reaches_every_expected_state_and_replay_export_import_agree() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path(), "demo.db");
    let v = demo(&store);
    let flows = v["flows"].as_array().unwrap();
    let expect = [
        ("purchase", "captured"),
        ("preauth_partial_capture_refunds", "partially_refunded"),
        ("3ds_challenge", "captured"),
        ("void", "voided"),
        ("recurring_charges_cancel", "cancelled"),
        ("checkout_session", "completed"),
    ];
    assert_eq!(flows.len(), expect.len());
    for (flow, state) in expect {
        let f = flows
            .iter()
            .find(|f| f["flow"] == flow)
            .unwrap_or_else(|| panic!("no flow {flow}"));
        assert_eq!(f["actual"], state, "{f:#}");
        assert_eq!(f["ok"], true, "{f:#}");
    }
    let timeline = v["timeline"].as_array().unwrap();
    assert!(timeline.len() > 30, "{}", timeline.len());

    // replay --all: the projection sees every order of the demo.
    let out = payorch(&["--json", "--store-url", &store, "replay", "--all"]);
    assert!(out.status.success());
    let r = json_of(&out);
    assert_eq!(r["events"].as_u64().unwrap() as usize, timeline.len());
    assert_eq!(r["checkpoint"], timeline.last().unwrap()["position"]);
    assert_eq!(r["by_status"]["voided"], 1);
    assert_eq!(r["totals"]["EUR"]["refunded"], 2500);

    // replay --verify accepts every history.
    let out = payorch(&["--json", "--store-url", &store, "replay", "--verify"]);
    let r = json_of(&out);
    assert!(out.status.success(), "{r:#}");
    assert_eq!(r["failures"].as_array().unwrap().len(), 0);
    assert!(r["streams"].as_u64().unwrap() >= 8);

    // replay a stream at version 1 and with --explain.
    let voided = flows.iter().find(|f| f["flow"] == "void").unwrap()["stream"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = payorch(&[
        "--json",
        "--store-url",
        &store,
        "replay",
        &voided,
        "--version",
        "1",
    ]);
    let r = json_of(&out);
    assert_eq!(r["version"], 1);
    assert_eq!(r["state"]["phase"], "authorisation_pending");
    let out = payorch(&[
        "--json",
        "--store-url",
        &store,
        "replay",
        &voided,
        "--explain",
    ]);
    let r = json_of(&out);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.last().unwrap()["phase_after"], "voided");
    // --at: before the void was recorded, the order was still authorised.
    let authorised_at = steps
        .iter()
        .find(|s| s["event_type"] == "authorised")
        .unwrap()["recorded_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = payorch(&[
        "--json",
        "--store-url",
        &store,
        "replay",
        &voided,
        "--at",
        &authorised_at,
    ]);
    let r = json_of(&out);
    assert_eq!(r["state"]["phase"], "authorised", "{r:#}");
    let out = payorch(&["--store-url", &store, "replay", "order-nope"]);
    assert!(!out.status.success());

    // export -> import into a fresh store twice: the second is a no-op.
    let file = dir.path().join("events.jsonl");
    let out = payorch(&[
        "--json",
        "--store-url",
        &store,
        "export",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        json_of(&out)["exported"].as_u64().unwrap() as usize,
        timeline.len()
    );
    let copy = sqlite(dir.path(), "copy.db");
    let out = payorch(&[
        "--json",
        "--store-url",
        &copy,
        "import",
        file.to_str().unwrap(),
    ]);
    let r = json_of(&out);
    assert_eq!(r["imported"].as_u64().unwrap() as usize, timeline.len());
    let out = payorch(&[
        "--json",
        "--store-url",
        &copy,
        "import",
        file.to_str().unwrap(),
    ]);
    let r = json_of(&out);
    assert_eq!(r["imported"], 0);
    assert_eq!(
        r["already_present"].as_u64().unwrap() as usize,
        timeline.len()
    );
    // The copy replays to the same summary.
    let a = json_of(&payorch(&[
        "--json",
        "--store-url",
        &store,
        "replay",
        "--all",
    ]));
    let b = json_of(&payorch(&[
        "--json",
        "--store-url",
        &copy,
        "replay",
        "--all",
    ]));
    assert_eq!(a["by_status"], b["by_status"]);
    assert_eq!(a["totals"], b["totals"]);

    // export of selected streams.
    let out = payorch(&["--store-url", &store, "export", "--stream", &voided]);
    assert!(out.status.success());
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(lines, steps.len());
}

#[test]
fn migrate_and_bad_config_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = payorch(&[
        "--json",
        "--store-url",
        &sqlite(dir.path(), "m.db"),
        "migrate",
    ]);
    assert!(out.status.success());
    assert_eq!(json_of(&out)["migrated"], true);
    let out = payorch(&["--store-url", "mysql://x", "migrate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("store_url"));
    let cfg = dir.path().join("payorch.toml");
    std::fs::write(&cfg, "adress = \"x\"\n").unwrap();
    let out = payorch(&["--config", cfg.to_str().unwrap(), "migrate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("adress"));
}

/// Kills the child on drop so a failing test leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_answers_health_creates_and_captures_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path(), "serve.db");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args(["--store-url", &store, "serve", "--addr", "127.0.0.1:0"])
            .env_remove("PAYORCH_CONFIG")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    // The banner: first line has the URL, a later one the demo API key.
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut url, mut key) = (None, None);
    while url.is_none() || key.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("serve printed its banner in time");
        if let Some(u) = line.strip_prefix("payorch listening on ") {
            url = Some(u.trim().to_owned());
        }
        if let Some(k) = line.trim().strip_prefix("api key: ") {
            key = Some(k.trim().to_owned());
        }
    }
    let (url, key) = (url.unwrap(), key.unwrap());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        // /healthz with a deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{url}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "healthz never ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = http
            .post(format!("{url}/v1/payments"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "t-1")
            .json(&serde_json::json!({
                "amount": {"minor": 1000, "currency": "EUR"},
                "capture_method": "MANUAL",
                "payment_method": {"type": "card", "number": "4111111111111111",
                    "exp_month": "07", "exp_year": "2031", "cvv": "123"}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], "authorised", "{p:#}");
        let id = p["id"].as_str().unwrap().to_owned();
        let r = http
            .post(format!("{url}/v1/payments/{id}/capture"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "t-2")
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let p: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{p:#}");
        assert_eq!(p["status"], "captured", "{p:#}");
        // Another merchant's key sees nothing.
        let r = http
            .get(format!("{url}/v1/payments/{id}"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    });

    // SIGTERM: graceful stop with exit code 0.
    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // The store survived and replays.
    let out = payorch(&["--json", "--store-url", &store, "replay", "--verify"]);
    assert!(out.status.success());
}

/// Reads lines of a child's stdout on a thread.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn serve_with_a_configured_paykka_merchant_from_payorch_toml() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = payorch(&["keygen", "--out", keys.to_str().unwrap()]);
    assert!(out.status.success());
    // A standalone sandbox process that knows the merchant's public key.
    let mut sandbox = Child(
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args(["sandbox", "--port", "0", "--merchant-id", "18356675194960"])
            .arg("--merchant-public-key")
            .arg(keys.join("merchant_public.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rx = lines_of(&mut sandbox.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut base, mut pem, mut in_pem) = (None, String::new(), false);
    while base.is_none() || !pem.contains("END PUBLIC KEY") {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("sandbox banner");
        if let Some(b) = line.strip_prefix("base URL: ") {
            base = Some(b.trim().to_owned());
        }
        if line.contains("BEGIN PUBLIC KEY") {
            in_pem = true;
        }
        if in_pem {
            pem.push_str(&line);
            pem.push('\n');
        }
        if line.contains("END PUBLIC KEY") {
            in_pem = false;
        }
    }
    std::fs::write(dir.path().join("platform.pem"), &pem).unwrap();
    // The config holds the SHA-256 of the API key, never the key.
    let hash = {
        let out = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"secret-key-1")?;
                c.wait_with_output()
            })
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let cfg = dir.path().join("payorch.toml");
    std::fs::write(
        &cfg,
        format!(
            "store_url = \"{}\"\naddr = \"127.0.0.1:0\"\n[paykka]\nbase_url = \"{}\"\nresponse_signature = \"enforce\"\n[[merchants]]\nmerchant_id = \"18356675194960\"\nprivate_key_path = \"{}\"\npaykka_public_key_path = \"{}\"\napi_key_sha256 = \"{hash}\"\n",
            sqlite(dir.path(), "cfg.db"),
            base.unwrap(),
            keys.join("merchant_private.pem").display(),
            dir.path().join("platform.pem").display(),
        ),
    )
    .unwrap();
    let mut serve = Child(
        Command::new(env!("CARGO_BIN_EXE_payorch"))
            .args(["--config", cfg.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rx = lines_of(&mut serve.0);
    let url = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("serve banner");
        if let Some(u) = line.strip_prefix("payorch listening on ") {
            break u.trim().to_owned();
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{url}/v1/payments"))
            .bearer_auth("secret-key-1")
            .header("Idempotency-Key", "cfg-1")
            .json(&serde_json::json!({
                "amount": {"minor": 1000, "currency": "EUR"},
                "payment_method": {"type": "card", "number": "4111111111111111",
                    "exp_month": "07", "exp_year": "2031", "cvv": "123"}
            }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let p: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{p:#}");
        assert_eq!(p["status"], "captured", "{p:#}");
    });
}

/// A running `serve` on a temp SQLite store with the in-process sandbox.
struct Serve {
    _child: Child,
    url: String,
    key: String,
    _dir: tempfile::TempDir,
}

/// Starts `serve` with `args` after `serve` and the environment `env`,
/// waits for the banner (URL and demo API key).
fn start_serve(args: &[&str], env: &[(&str, &str)]) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path(), "serve.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_payorch"));
    cmd.args(["--store-url", &store, "serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .env_remove("PAYORCH_CONFIG")
        .env_remove("PAYORCH_AMQP_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Child(cmd.spawn().expect("spawn serve"));
    let rx = lines_of(&mut child.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut url, mut key) = (None, None);
    while url.is_none() || key.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("serve printed its banner in time");
        if let Some(u) = line.strip_prefix("payorch listening on ") {
            url = Some(u.trim().to_owned());
        }
        if let Some(k) = line.trim().strip_prefix("api key: ") {
            key = Some(k.trim().to_owned());
        }
    }
    Serve {
        _child: child,
        url: url.unwrap(),
        key: key.unwrap(),
        _dir: dir,
    }
}

/// Polls `f` every 100 ms until it returns `Some`, at most `secs` seconds.
async fn until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of an unlabelled gauge in a Prometheus text page.
fn gauge_of(page: &str, name: &str) -> Option<i64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn metrics_page(http: &reqwest::Client, url: &str) -> String {
    http.get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An AMQP URL at a local port where nothing listens.
fn closed_amqp_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

fn create_body(minor: i64, capture: &str) -> Value {
    serde_json::json!({
        "amount": {"minor": minor, "currency": "EUR"},
        "capture_method": capture,
        "payment_method": {"type": "card", "number": "4111111111111111",
            "exp_month": "07", "exp_year": "2031", "cvv": "123"}
    })
}

async fn create(http: &reqwest::Client, s: &Serve, key: &str, body: &Value) -> (u16, Value) {
    let r = http
        .post(format!("{}/v1/payments", s.url))
        .bearer_auth(&s.key)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[test]
fn serve_with_an_unreachable_broker_is_unhealthy_and_reports_relay_lag_and_backlog() {
    let s = start_serve(
        &["--amqp-url", &closed_amqp_url()],
        &[
            ("PAYORCH_RECONCILE_INTERVAL_SECS", "1"),
            ("PAYORCH_RECONCILE_THRESHOLD_SECS", "0"),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let r = http.get(format!("{}/healthz", s.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 503);
        let h: Value = r.json().await.unwrap();
        assert_eq!(h["checks"]["broker"]["status"], "unavailable", "{h:#}");
        assert!(h["checks"]["broker"]["error"].as_str().is_some(), "{h:#}");
        assert_eq!(h["checks"]["store"]["status"], "ok", "{h:#}");

        // A 3-D Secure payment (amount ending 993) waits for the shopper:
        // an open call the reconciler keeps in its backlog.
        let (status, p) = create(&http, &s, "m-1", &create_body(10_993, "AUTOMATIC")).await;
        assert!(status < 300, "{status} {p:#}");
        assert_eq!(p["status"], "challenge_required", "{p:#}");
        // Its events are committed but the relay cannot publish them.
        let events: Value = http
            .get(format!(
                "{}/v1/payments/{}/events",
                s.url,
                p["id"].as_str().unwrap()
            ))
            .bearer_auth(&s.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = events["events"].as_array().unwrap().len() as i64;
        assert!(n >= 2, "{events:#}");
        let (lag, backlog) = until("relay lag and backlog gauges", 30, || async {
            let page = metrics_page(&http, &s.url).await;
            let lag = gauge_of(&page, "payorch_relay_lag_events")?;
            let backlog = gauge_of(&page, "payorch_reconciler_backlog_orders")?;
            (lag >= n && backlog >= 1).then_some((lag, backlog))
        })
        .await;
        assert_eq!(lag, n, "every stored event is unpublished");
        assert_eq!(backlog, 1);
    });
}

#[test]
fn serve_with_rabbitmq_reports_the_broker_healthy_and_relays_everything() {
    let amqp = std::env::var("PAYORCH_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reachable = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(5),
            payorch_rabbitmq::lapin::Connection::connect(&amqp, Default::default()),
        )
        .await
    });
    match reachable {
        Ok(Ok(c)) => {
            let _ = rt.block_on(c.close(200, "probe".into()));
        }
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timeout".into(),
            };
            if std::env::var("PAYORCH_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("RabbitMQ at {amqp} required but unreachable: {why}");
            }
            eprintln!(
                "\n**************** SKIP serve_with_rabbitmq...: RabbitMQ at {amqp} unreachable ({why}); set PAYORCH_TEST_AMQP_URL or start the broker ****************\n"
            );
            return;
        }
    }
    let s = start_serve(&["--amqp-url", &amqp], &[]);
    rt.block_on(async {
        let http = reqwest::Client::new();
        let h: Value = until("healthz ok", 30, || async {
            let r = http.get(format!("{}/healthz", s.url)).send().await.ok()?;
            r.status().is_success().then_some(())?;
            r.json().await.ok()
        })
        .await;
        assert_eq!(h["checks"]["broker"]["status"], "ok", "{h:#}");
        assert_eq!(h["checks"]["store"]["status"], "ok", "{h:#}");
        // A second probe reuses the kept connection and is still ok.
        let r = http.get(format!("{}/healthz", s.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);

        let (status, p) = create(&http, &s, "r-1", &create_body(1000, "AUTOMATIC")).await;
        assert_eq!(status, 201, "{p:#}");
        // The relay publishes every event: the lag gauge goes back to 0
        // once the payment's events are confirmed (it counts from the
        // store's head, which is > 0 now).
        until("relay lag 0", 30, || async {
            let page = metrics_page(&http, &s.url).await;
            (gauge_of(&page, "payorch_relay_lag_events")? == 0).then_some(())
        })
        .await;
    });
}

#[test]
fn demo_refuses_a_configured_paykka_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("payorch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paykka]\nbase_url = \"https://paykka.invalid/apis\"\n[[merchants]]\nmerchant_id = \"18356675194960\"\nprivate_key_path = \"k.pem\"\npaykka_public_key_path = \"p.pem\"\napi_key_sha256 = \"{}\"\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let store = sqlite(dir.path(), "never.db");
    let out = payorch(&["--config", cfg.to_str().unwrap(), "demo", "--store", &store]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only against the in-process PayKKa sandbox"),
        "{err}"
    );
    assert!(err.contains("paykka.base_url"), "{err}");
    assert!(
        !dir.path().join("never.db").exists(),
        "nothing was recorded"
    );
    // The same through the environment (in a directory without a
    // payorch.toml).
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_payorch"))
        .args(["demo", "--store", &store])
        .env_remove("PAYORCH_CONFIG")
        .current_dir(&empty)
        .env("PAYORCH_PAYKKA_BASE_URL", "https://paykka.invalid/apis")
        .output()
        .unwrap();
    assert!(!out.status.success());
    // (validate() rejects a base URL without merchants first; either way
    // the message names the setting.)
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("paykka.base_url"), "{err}");
    // A broken config file is an error, not silently ignored.
    std::fs::write(&cfg, "reconcile_threshold_secs = \"soon\"\n").unwrap();
    let out = payorch(&["--config", cfg.to_str().unwrap(), "demo", "--store", &store]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reconcile_threshold_secs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --help says so.
    let out = payorch(&["demo", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("only against the in-process PayKKa sandbox"),
        "{help}"
    );
}
