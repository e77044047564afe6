//! Three `payorch serve` nodes on one Postgres database and one RabbitMQ
//! broker (issue 14 point 5, first bullet): payments are spread
//! round-robin over the nodes, and the node holding the relay lease is
//! killed with SIGKILL in the middle of the load. Checked:
//!
//! * at every sample (every 50 ms, `/metrics` of each live node) at most
//!   one node reports `payorch_role{role="relay"} 1` and at most one
//!   `payorch_role{role="reconciler"} 1`, and after the kill a survivor
//!   takes both roles over;
//! * every order in the store converges (no PayKKa answer outstanding) to
//!   the sandbox's books (authorised and captured amounts per `trans_id`);
//! * every stored event reaches a subscriber queue bound before the nodes
//!   start, and each stream's events arrive in version order (after
//!   dedupe by message id: a relay taking over republishes from its
//!   checkpoint).
//!
//! Setup as in `blackbox.rs`: a fresh database (dropped at the end), the
//! sandbox in-process (its ledger is read directly), keys from `payorch
//! keygen`. The test kills only the processes it started.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use payorch_engine::store::{EventStore, Position};
use payorch_postgres::PostgresStore;
use payorch_rabbitmq::lapin::options::{BasicGetOptions, QueueDeleteOptions};
use payorch_rabbitmq::lapin::types::{AMQPValue, ShortString};
use payorch_sandbox::{SandboxConfig, SandboxMerchant};
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use support::{Child, Services, amqp_url, keygen, services, sha256_hex, start_serve, until};

/// Names this test in skip messages.
const TEST: &str = "many_nodes";

const MERCHANT: &str = "18356675194960";
const API_KEY: &str = "many-nodes-api-key-1";
/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(90);
/// Payments before and after the kill.
const BEFORE_KILL: usize = 24;
const TOTAL: usize = 72;

/// Which node reported the relay and the reconciler role at one sample.
type Holders = (Option<usize>, Option<usize>);

/// `(relay, reconciler)` roles a node reports on `/metrics`; `None` when
/// it does not answer.
async fn roles(http: &reqwest::Client, url: &str) -> Option<(bool, bool)> {
    let text = http
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some((
        text.contains("payorch_role{role=\"relay\"} 1"),
        text.contains("payorch_role{role=\"reconciler\"} 1"),
    ))
}

/// One purchase (automatic capture) on `url`; the payment id, or `None`
/// when the node did not answer (killed while the request was in flight).
async fn purchase(http: &reqwest::Client, url: &str, minor: i64) -> Option<String> {
    let r = http
        .post(format!("{url}/v1/payments"))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .json(&json!({
            "amount": {"minor": minor, "currency": "EUR"},
            "payment_method": {"type": "card", "number": "4111111111111111", "exp_month": "07", "exp_year": "2031", "cvv": "123"}
        }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let v: Value = r.json().await.ok()?;
    assert!(
        (200..300).contains(&status),
        "POST /v1/payments -> {status}: {v:#}"
    );
    v["id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_load_and_survive_the_lease_holder_s_kill_9() {
    // ---- services; the subscriber queue is bound before payorch starts
    let Some(Services {
        db: _db,
        store_url,
        amqp,
        channel,
        queue,
    }) = services(TEST, "mn").await
    else {
        return;
    };

    // ---- keys, sandbox, config shared by the three nodes
    let dir = tempfile::tempdir().expect("tempdir");
    let (keys, public) = keygen(dir.path());
    let sandbox = payorch_sandbox::spawn(
        SandboxConfig {
            merchants: vec![SandboxMerchant::new(MERCHANT, public)],
            ..SandboxConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sandbox");
    let platform = dir.path().join("platform.pem");
    std::fs::write(&platform, sandbox.platform_public_key_pem()).expect("platform key");
    // A short grace: a purchase whose node was killed after recording the
    // intent but before the call left never reaches the sandbox; PayKKa
    // cannot create it after the grace period, so the survivors' reconciler
    // closes it then (with the default 24 h it would rightly stay pending).
    let cfg = dir.path().join("payorch.toml");
    std::fs::write(
        &cfg,
        format!(
            "store_url = \"{store_url}\"\namqp_url = \"{}\"\naddr = \"127.0.0.1:0\"\nreconcile_interval_secs = 1\nreconcile_threshold_secs = 2\nreconcile_grace_secs = 5\n\
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

    let mut nodes: Vec<Option<Child>> = Vec::new();
    let mut urls: Vec<String> = Vec::new();
    for i in 0..3 {
        let (child, url) = start_serve(&cfg, &dir.path().join(format!("serve-{i}.log")));
        nodes.push(Some(child));
        urls.push(url);
    }
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    // ---- role monitor: at most one holder of each role at every sample
    let alive: Arc<Vec<AtomicBool>> = Arc::new((0..3).map(|_| AtomicBool::new(true)).collect());
    let stop_monitor = Arc::new(AtomicBool::new(false));
    let holders: Arc<Mutex<Vec<Holders>>> = Arc::default();
    let monitor = {
        let (http, urls, alive, stop, holders) = (
            http.clone(),
            urls.clone(),
            alive.clone(),
            stop_monitor.clone(),
            holders.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (mut relay, mut reconciler) = (Vec::new(), Vec::new());
                for (i, url) in urls.iter().enumerate() {
                    if !alive[i].load(Ordering::SeqCst) {
                        continue;
                    }
                    if let Some((r, c)) = roles(&http, url).await {
                        if r {
                            relay.push(i);
                        }
                        if c {
                            reconciler.push(i);
                        }
                    }
                }
                assert!(
                    relay.len() <= 1,
                    "two relays active at once: nodes {relay:?}"
                );
                assert!(
                    reconciler.len() <= 1,
                    "two reconcilers active at once: nodes {reconciler:?}"
                );
                holders
                    .lock()
                    .expect("lock")
                    .push((relay.first().copied(), reconciler.first().copied()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Both roles held somewhere before the load starts.
    let (relay_node, _) = until(WAIT, "both leases held", || {
        let holders = holders.clone();
        async move {
            match holders.lock().expect("lock").last() {
                Some((Some(r), Some(c))) => Some((*r, *c)),
                _ => None,
            }
        }
    })
    .await;

    // ---- load: workers send purchases round-robin over the live nodes
    let next = Arc::new(AtomicUsize::new(0));
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    let lost = Arc::new(AtomicUsize::new(0));
    let per_node: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (http, urls, alive, next, created, lost, per_node) = (
                http.clone(),
                urls.clone(),
                alive.clone(),
                next.clone(),
                created.clone(),
                lost.clone(),
                per_node.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= TOTAL {
                        return;
                    }
                    let live: Vec<usize> = (0..3)
                        .filter(|n| alive[*n].load(Ordering::SeqCst))
                        .collect();
                    let node = live[i % live.len()];
                    let minor = 1000 + i as i64;
                    match purchase(&http, &urls[node], minor).await {
                        Some(id) => {
                            per_node[node].fetch_add(1, Ordering::SeqCst);
                            created.lock().expect("lock").push(id);
                        }
                        None => {
                            lost.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    until(WAIT, "the first payments", || {
        let created = created.clone();
        async move { (created.lock().expect("lock").len() >= BEFORE_KILL).then_some(()) }
    })
    .await;
    // ---- kill -9 the relay's node (it holds the reconciler too unless a
    // standby won that race at start)
    alive[relay_node].store(false, Ordering::SeqCst);
    if let Some(mut child) = nodes[relay_node].take() {
        child.0.kill().expect("SIGKILL");
        let _ = child.0.wait();
    }
    for w in workers {
        w.await.expect("worker");
    }
    let created: Vec<String> = created.lock().expect("lock").clone();
    for (n, count) in per_node.iter().enumerate() {
        assert!(
            count.load(Ordering::SeqCst) > 0,
            "node {n} served no payment"
        );
    }

    // Survivors take both roles over.
    until(WAIT, "a survivor holds both leases", || {
        let holders = holders.clone();
        async move {
            match holders.lock().expect("lock").last() {
                Some((Some(r), Some(c))) if *r != relay_node && *c != relay_node => Some(()),
                _ => None,
            }
        }
    })
    .await;

    // ---- every order in the store converges to the sandbox's books
    let events = PostgresStore::connect(&store_url).await.expect("store");
    let read_all = || async {
        let mut all = Vec::new();
        let mut after = Position::START;
        loop {
            let page = events.read_all(after, 1000).await.expect("read_all");
            let Some(last) = page.last() else { break };
            after = last.global_position;
            all.extend(page);
        }
        all
    };
    // `read_all` stops at the cluster's safe horizon, so a writing
    // transaction open elsewhere on the Postgres cluster (another test's)
    // can hold the newest events back for a while: wait for them.
    let (read_all_ref, answered) = (&read_all, created.len());
    let orders: HashSet<String> = until(WAIT, "every answered order is readable", || async move {
        let orders: HashSet<String> = read_all_ref()
            .await
            .iter()
            .filter_map(|e| {
                e.stream_id
                    .as_str()
                    .strip_prefix("order-")
                    .map(str::to_owned)
            })
            .collect();
        (orders.len() >= answered).then_some(orders)
    })
    .await;
    let live = (0..3).find(|n| *n != relay_node).expect("a survivor");
    let api = &urls[live];
    for id in &orders {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = http
                .get(format!("{api}/v1/payments/{id}"))
                .bearer_auth(API_KEY)
                .send()
                .await
                .expect("GET payment");
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            let settled = status == 200
                && v["trans_id"].is_string()
                && !v["captures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["status"] != "succeeded");
            if settled {
                let books = sandbox.ledger();
                let books = books.merchant(MERCHANT).expect("merchant books");
                let t = v["trans_id"].as_str().unwrap_or_default();
                match books.order_by_trans_id(t) {
                    Some(o) => {
                        if v["captured"]["minor"].as_i64() == Some(o.captured)
                            && v["authorised"]["minor"].as_i64() == Some(o.authorised)
                        {
                            break;
                        }
                    }
                    // Never reached PayKKa: nothing may show as paid (an
                    // order that was never authorised may carry no
                    // `captured` amount at all).
                    None => {
                        if v["captured"]["minor"].as_i64().unwrap_or(0) == 0
                            && v["status"] != "captured"
                        {
                            break;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "payment {id} never converged to the sandbox's books: {status} {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for id in &created {
        assert!(
            orders.contains(id),
            "answered payment {id} not in the store"
        );
    }

    // ---- every stored event reaches the subscriber, each stream in order
    let stored: HashSet<String> = read_all()
        .await
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut versions: HashMap<String, Vec<i64>> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    loop {
        while let Some(m) = channel
            .basic_get(
                ShortString::from(queue.clone()),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            let props = &m.delivery.properties;
            let Some(id) = props.message_id().as_ref().map(|i| i.as_str().to_owned()) else {
                continue;
            };
            // The exchange is shared with every other test on the broker:
            // only this store's events count.
            if !stored.contains(&id) || !seen.insert(id) {
                continue; // another store's event, or a republished duplicate
            }
            let headers = props.headers().clone().unwrap_or_default();
            let stream = match headers.inner().get("payorch-stream-id") {
                Some(AMQPValue::LongString(s)) => {
                    String::from_utf8_lossy(s.as_bytes()).into_owned()
                }
                other => panic!("no stream id header: {other:?}"),
            };
            let version = match headers.inner().get("payorch-version") {
                Some(AMQPValue::LongLongInt(v)) => *v,
                other => panic!("no version header: {other:?}"),
            };
            versions.entry(stream).or_default().push(version);
        }
        if stored.is_subset(&seen) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} stored events never reached the subscriber",
            stored.difference(&seen).count(),
            stored.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (stream, v) in &versions {
        let want: Vec<i64> = (1..=v.len() as i64).collect();
        assert_eq!(
            v, &want,
            "events of {stream} reached the subscriber out of order"
        );
    }

    stop_monitor.store(true, Ordering::SeqCst);
    monitor
        .await
        .expect("at most one holder of each role at every sample");
    let samples = holders.lock().expect("lock").len();
    assert!(samples > 10, "only {samples} role samples");
    eprintln!(
        "many_nodes: {} payments answered, {} lost in flight, {} orders stored, {} events, {samples} role samples",
        created.len(),
        lost.load(Ordering::SeqCst),
        orders.len(),
        stored.len()
    );

    let _ = channel
        .queue_delete(
            ShortString::from(queue.clone()),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = amqp.close(200, "done".into()).await;
    events.pool().close().await;
    drop(nodes);
}
