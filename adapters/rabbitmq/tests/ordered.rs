//! Ordered scale-out (issue 14 point 4) against the real broker, with the
//! `rabbitmq_consistent_hash_exchange` plugin enabled (`.ci/run` does it).
//!
//! Three instances of one subscription with `with_ordered_delivery`: every
//! stream's versions reach the handler in increasing order, across
//! instances and across a partition handover; every instance does some of
//! the work; a failing event holds back its stream (retried in place), and
//! once dead-lettered, parks its stream's later events behind it.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use payorch_engine::bus::{
    DeliveryContext, EventEnvelope, EventHandler, HandlerError, InMemoryLeaderLock, LruSeenSet,
    SeenSet, Subscription, SubscriptionOptions, subscribe,
};
use payorch_engine::store::memory::InMemoryStore;
use payorch_rabbitmq::topology::{
    dead_letter_queue, members_queue, partition_exchange, partition_queue,
};
use payorch_rabbitmq::{RabbitBus, RabbitBusConfig, Relay};

const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: u16 = 8;

/// The log every instance writes to: stream -> versions in handling order
/// (after dedupe by message id), plus per-instance counts.
struct Log {
    streams: Mutex<HashMap<String, Vec<u64>>>,
    unique: AtomicUsize,
    seen: LruSeenSet,
    /// Attempts per (stream, version).
    attempts: Mutex<HashMap<(String, u64), u32>>,
}

impl Log {
    fn new() -> Arc<Self> {
        Arc::new(Log {
            streams: Mutex::default(),
            unique: AtomicUsize::new(0),
            seen: LruSeenSet::new(1_000_000),
            attempts: Mutex::default(),
        })
    }
    fn unique(&self) -> usize {
        self.unique.load(Ordering::SeqCst)
    }
    fn versions(&self, stream: &str) -> Vec<u64> {
        self.streams
            .lock()
            .expect("lock")
            .get(stream)
            .cloned()
            .unwrap_or_default()
    }
}

struct Instance {
    log: Arc<Log>,
    handled: Arc<AtomicUsize>,
}

#[async_trait]
impl EventHandler<serde_json::Value> for Instance {
    async fn handle(
        &self,
        event: EventEnvelope<serde_json::Value>,
        ctx: &DeliveryContext,
    ) -> Result<(), HandlerError> {
        let key = (event.stream_id.to_string(), event.version.0);
        *self
            .log
            .attempts
            .lock()
            .expect("lock")
            .entry(key.clone())
            .or_default() += 1;
        // `flaky*` fails twice, then succeeds; `poison*` always fails.
        if event.event_type.starts_with("flaky") && ctx.attempt < 2 {
            return Err(HandlerError::Transient("flaky".into()));
        }
        if event.event_type.starts_with("poison") {
            return Err(HandlerError::Transient("poison".into()));
        }
        if self.log.seen.contains(ctx.message_id).await? {
            return Ok(());
        }
        self.log
            .streams
            .lock()
            .expect("lock")
            .entry(key.0)
            .or_default()
            .push(key.1);
        self.log.unique.fetch_add(1, Ordering::SeqCst);
        self.handled.fetch_add(1, Ordering::SeqCst);
        self.log.seen.insert(ctx.message_id).await
    }
}

fn ordered_bus(url: &str, exchange: &str) -> RabbitBus {
    let mut c: RabbitBusConfig = bus_config(url, exchange);
    c.rebalance_interval = Duration::from_millis(100);
    RabbitBus::new(c)
}

async fn start_instance(
    bus: &RabbitBus,
    queue: &str,
    log: &Arc<Log>,
    opts: impl Fn(SubscriptionOptions) -> SubscriptionOptions,
) -> (Subscription, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let sub = subscribe(
        bus,
        opts(SubscriptionOptions::new(queue, ["order.#"]).with_ordered_delivery(PARTITIONS)),
        Instance {
            log: log.clone(),
            handled: handled.clone(),
        },
    )
    .await
    .expect("subscribe");
    (sub, handled)
}

/// The distinct instances consuming the test's partition queues, from the
/// consumer tags `payorch-<instance>-p<i>` (`rabbitmqctl list_consumers`).
fn partition_owners(queue: &str) -> (usize, BTreeSet<String>) {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_consumers",
            "-q",
            "--no-table-headers",
            "queue_name",
            "consumer_tag",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{queue}.p");
    let mut partitions = 0;
    let mut owners = BTreeSet::new();
    for line in text.lines() {
        let mut cols = line.split_whitespace();
        let (Some(q), Some(tag)) = (cols.next(), cols.next()) else {
            continue;
        };
        if q.starts_with(&prefix) {
            partitions += 1;
            if let Some((owner, _)) = tag.rsplit_once("-p") {
                owners.insert(owner.to_owned());
            }
        }
    }
    (partitions, owners)
}

async fn wait_for_owners(queue: &str, instances: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (partitions, owners) = partition_owners(queue);
        if partitions == usize::from(PARTITIONS) && owners.len() == instances {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partitions never spread over {instances} instances: {partitions} consumed by {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn relay(store: &Arc<InMemoryStore>, url: &str, exchange: &str) -> Relay {
    Relay::new(
        store.clone(),
        store.clone(),
        Arc::new(InMemoryLeaderLock::new()),
        relay_config(url, exchange),
    )
}

async fn cleanup_ordered(url: &str, exchange: &str, queue: &str) {
    let Ok(conn) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        let mut queues: Vec<String> = (0..PARTITIONS).map(|p| partition_queue(queue, p)).collect();
        queues.push(dead_letter_queue(queue));
        queues.push(members_queue(queue));
        for q in queues {
            let _ = ch
                .queue_delete(q.into(), QueueDeleteOptions::default())
                .await;
        }
        for x in [partition_exchange(queue), exchange.to_owned()] {
            let _ = ch
                .exchange_delete(x.into(), lapin::options::ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, "cleanup".into()).await;
}

fn assert_increasing(log: &Log) {
    let streams = log.streams.lock().expect("lock");
    for (stream, versions) in streams.iter() {
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, &expected, "versions of {stream} out of order");
    }
}

#[tokio::test]
async fn three_ordered_instances_share_the_work_and_keep_each_stream_in_order() {
    let Some(url) = amqp_url("three_ordered_instances").await else {
        return;
    };
    let (exchange, queue) = names("ordered");
    let bus = ordered_bus(&url, &exchange);
    let log = Log::new();
    let (a, handled_a) = start_instance(&bus, &queue, &log, |o| o).await;
    let (b, handled_b) = start_instance(&bus, &queue, &log, |o| o).await;
    let (c, handled_c) = start_instance(&bus, &queue, &log, |o| o).await;
    wait_for_owners(&queue, 3).await;

    const STREAMS: usize = 300;
    const FIRST: usize = 3000;
    let store = Arc::new(InMemoryStore::new());
    fill(&store, FIRST, STREAMS, |i| format!("e{i}")).await;
    let relay = relay(&store, &url, &exchange).spawn();
    wait_until("first wave delivered", WAIT, || log.unique() == FIRST).await;
    assert_increasing(&log);
    for (name, handled) in [("a", &handled_a), ("b", &handled_b), ("c", &handled_c)] {
        assert!(
            handled.load(Ordering::SeqCst) > 0,
            "instance {name} handled nothing: the work is not shared"
        );
    }

    // Instance a leaves in the middle of a second wave: b and c take its
    // partitions over, and no stream's order breaks across the handover.
    const SECOND: usize = 3000;
    fill(&store, SECOND / 2, STREAMS, |i| format!("f{i}")).await;
    a.stop().await;
    fill(&store, SECOND / 2, STREAMS, |i| format!("g{i}")).await;
    wait_until("second wave delivered", WAIT, || {
        log.unique() == FIRST + SECOND
    })
    .await;
    assert_increasing(&log);
    assert_eq!(log.streams.lock().expect("lock").len(), STREAMS);
    wait_for_owners(&queue, 2).await;

    relay.stop().await;
    b.stop().await;
    c.stop().await;
    cleanup_ordered(&url, &exchange, &queue).await;
}

#[tokio::test]
async fn a_failing_event_holds_back_its_stream_and_parks_it_once_dead_lettered() {
    let Some(url) = amqp_url("ordered_failing_event").await else {
        return;
    };
    let (exchange, queue) = names("ordered-fail");
    let bus = ordered_bus(&url, &exchange);
    let log = Log::new();
    let opts = |o: SubscriptionOptions| {
        o.with_max_retries(3)
            .with_retry_delay(Duration::from_millis(20))
    };
    let (a, _) = start_instance(&bus, &queue, &log, opts).await;
    let (b, _) = start_instance(&bus, &queue, &log, opts).await;
    wait_for_owners(&queue, 2).await;

    // Stream order-0: e, flaky (fails twice, then succeeds), e, e.
    // Stream order-1: e, poison (always fails), e, e.
    // Streams order-2..9: plain events.
    let store = Arc::new(InMemoryStore::new());
    let kinds = |i: usize| match (i % 10, i / 10) {
        (0, 1) => "flaky".to_owned(),
        (1, 1) => "poison".to_owned(),
        _ => format!("e{i}"),
    };
    fill(&store, 40, 10, kinds).await;
    let relay = relay(&store, &url, &exchange).spawn();

    // 40 events, 3 of order-1 never handled (poison and the two parked).
    wait_until("the healthy events delivered", WAIT, || log.unique() == 37).await;
    assert_eq!(
        log.versions("order-0"),
        vec![1, 2, 3, 4],
        "flaky retried in place"
    );
    assert_eq!(
        log.attempts
            .lock()
            .expect("lock")
            .get(&("order-0".to_owned(), 2))
            .copied(),
        Some(3),
        "the flaky event took three attempts"
    );
    assert_eq!(
        log.versions("order-1"),
        vec![1],
        "nothing of order-1 overtakes its dead-lettered event"
    );
    assert_eq!(
        log.attempts
            .lock()
            .expect("lock")
            .get(&("order-1".to_owned(), 2))
            .copied(),
        Some(4),
        "poison: one try and three retries"
    );
    assert_eq!(
        log.attempts
            .lock()
            .expect("lock")
            .get(&("order-1".to_owned(), 3)),
        None,
        "parked events are not handed to the handler"
    );
    assert_increasing(&log);

    // The dead-letter queue holds order-1's versions 2, 3, 4, in order.
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while dead.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "dead letters so far: {dead:?}"
        );
        match ch
            .basic_get(
                dead_letter_queue(&queue).into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("get")
        {
            Some(m) => {
                let v: serde_json::Value = serde_json::from_slice(&m.delivery.data).expect("json");
                dead.push((
                    v["stream_id"].as_str().unwrap_or("").to_owned(),
                    v["version"].as_u64().unwrap_or(0),
                ));
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(
        dead,
        vec![
            ("order-1".to_owned(), 2),
            ("order-1".to_owned(), 3),
            ("order-1".to_owned(), 4)
        ]
    );
    let _ = conn.close(200, "done".into()).await;

    relay.stop().await;
    a.stop().await;
    b.stop().await;
    cleanup_ordered(&url, &exchange, &queue).await;
}
