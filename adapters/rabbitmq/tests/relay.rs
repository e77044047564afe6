//! Relay + subscriber against the real broker (127.0.0.1:5672 by default).
//!
//! Each test uses its own exchange and queue names, so these run in
//! parallel. Tests that disturb every connection on the broker
//! (`rabbitmqctl close_all_connections`, `stop_app`) are `#[ignore]`d: run
//! them alone and serially with
//! `cargo test -p payorch-rabbitmq -- --ignored --test-threads=1`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use payorch_engine::bus::{InMemoryLeaderLock, SubscriptionOptions, subscribe};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{CheckpointStore, EventStore, Position, StoreError};
use payorch_rabbitmq::topology::dead_letter_queue;
use payorch_rabbitmq::{RabbitBus, Relay, RelayState};

const WAIT: Duration = Duration::from_secs(60);

fn relay(
    store: &Arc<InMemoryStore>,
    lock: &InMemoryLeaderLock,
    url: &str,
    exchange: &str,
) -> Relay {
    Relay::new(
        store.clone(),
        store.clone(),
        Arc::new(lock.clone()),
        relay_config(url, exchange),
    )
}

fn assert_stream_order(seen: &Seen) {
    let streams = seen.streams.lock().expect("lock");
    for (stream, versions) in streams.iter() {
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, &expected, "versions of {stream} out of order");
    }
}

#[tokio::test]
async fn every_event_delivered_in_stream_order_once_after_dedupe() {
    let Some(url) = amqp_url("every_event_delivered").await else {
        return;
    };
    let (exchange, queue) = names("delivery");
    let store = Arc::new(InMemoryStore::new());
    let bus = RabbitBus::new(bus_config(&url, &exchange));
    let (handler, seen) = Recorder::new();
    let sub = subscribe(&bus, SubscriptionOptions::new(&queue, ["order.#"]), handler)
        .await
        .expect("subscribe");

    const N: usize = 500;
    fill(&store, N / 2, 7, |i| format!("e{i}")).await;
    let lock = InMemoryLeaderLock::new();
    let relay = relay(&store, &lock, &url, &exchange).spawn();
    fill(&store, N / 2, 7, |i| format!("e{i}")).await; // appended while running
    wait_until("all events delivered", WAIT, || seen.unique() == N).await;
    assert!(
        relay
            .wait_for(WAIT, |s| s.checkpoint == Position(N as u64))
            .await,
        "checkpoint reaches the last confirmed position"
    );
    assert_eq!(
        store
            .load_checkpoint(&format!("relay:{exchange}"))
            .await
            .expect("load"),
        Some(Position(N as u64))
    );
    assert_stream_order(&seen);
    assert_eq!(seen.streams.lock().expect("lock").len(), 7);
    relay.stop().await;
    sub.stop().await;
    cleanup(&url, &exchange, &queue).await;
}

#[tokio::test]
async fn published_message_shape() {
    let Some(url) = amqp_url("published_message_shape").await else {
        return;
    };
    let (exchange, queue) = names("shape");
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    payorch_rabbitmq::topology::declare_exchange(&ch, &exchange)
        .await
        .expect("exchange");
    ch.queue_declare(
        queue.clone().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue");
    ch.queue_bind(
        queue.clone().into(),
        exchange.clone().into(),
        "order.*.m1".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let store = Arc::new(InMemoryStore::new());
    fill(&store, 3, 1, |_| "captured".into()).await; // merchants m0, m1, m2
    let events = store.read_all(Position::START, 10).await.expect("read");
    let lock = InMemoryLeaderLock::new();
    let relay = relay(&store, &lock, &url, &exchange).spawn();
    let mut consumer = ch
        .basic_consume(
            queue.clone().into(),
            "shape".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("a message within the deadline")
        .expect("stream open")
        .expect("delivery");
    relay.stop().await;
    let e = &events[1];
    assert_eq!(delivery.routing_key.as_str(), "order.captured.m1");
    let p = &delivery.properties;
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(
        p.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(
        p.message_id().as_ref().map(|m| m.as_str().to_owned()),
        Some(e.event_id.to_string())
    );
    let headers = p.headers().as_ref().expect("headers");
    let h = |k: &str| headers.inner().get(k).cloned();
    assert_eq!(h("payorch-version"), Some(AMQPValue::LongLongInt(2)));
    assert_eq!(
        h("payorch-global-position"),
        Some(AMQPValue::LongLongInt(2))
    );
    assert_eq!(h("payorch-schema-version"), Some(AMQPValue::LongLongInt(1)));
    assert_eq!(
        h("payorch-stream-id"),
        Some(AMQPValue::LongString("order-0".into()))
    );
    assert_eq!(
        h("payorch-event-type"),
        Some(AMQPValue::LongString("captured".into()))
    );
    let corr = e.metadata.correlation_id.expect("correlation").to_string();
    assert_eq!(
        h("payorch-correlation-id"),
        Some(AMQPValue::LongString(corr.into()))
    );
    let body: serde_json::Value = serde_json::from_slice(&delivery.data).expect("json body");
    assert_eq!(body["event_id"], e.event_id.to_string());
    assert_eq!(body["stream_id"], "order-0");
    assert_eq!(body["stream_type"], "order");
    assert_eq!(body["version"], 2);
    assert_eq!(body["global_position"], 2);
    assert_eq!(body["event_type"], "captured");
    assert_eq!(body["schema_version"], 1);
    assert_eq!(body["metadata"]["merchant_id"], "m1");
    assert_eq!(body["payload"]["i"], 1);
    assert!(body["recorded_at"].is_string());
    let _ = conn.close(200, "done".into()).await;
    cleanup(&url, &exchange, &queue).await;
}

#[tokio::test]
async fn poison_message_is_dead_lettered_after_retries() {
    let Some(url) = amqp_url("poison_message").await else {
        return;
    };
    let (exchange, queue) = names("poison");
    let store = Arc::new(InMemoryStore::new());
    let bus = RabbitBus::new(bus_config(&url, &exchange));
    let (handler, seen) = Recorder::new();
    let opts = SubscriptionOptions::new(&queue, ["#"])
        .with_max_retries(2)
        .with_retry_delay(Duration::from_millis(20));
    let sub = subscribe(&bus, opts, handler).await.expect("subscribe");
    fill(&store, 5, 2, |i| {
        if i == 2 {
            "poison".into()
        } else {
            format!("ok{i}")
        }
    })
    .await;
    let poison_id = store.read_all(Position(2), 1).await.expect("read")[0].event_id;
    let lock = InMemoryLeaderLock::new();
    let relay = relay(&store, &lock, &url, &exchange).spawn();
    wait_until("the good events", WAIT, || seen.unique() == 4).await;

    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let dlq = dead_letter_queue(&queue);
    let deadline = std::time::Instant::now() + WAIT;
    let dead = loop {
        if let Some(m) = ch
            .basic_get(dlq.clone().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic_get")
        {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "nothing in {dlq}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        dead.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned()),
        Some(poison_id.to_string())
    );
    let headers = dead
        .delivery
        .properties
        .headers()
        .as_ref()
        .expect("headers");
    assert_eq!(
        headers.inner().get("payorch-retries"),
        Some(&AMQPValue::LongLongInt(2))
    );
    assert_eq!(seen.attempts("poison"), 3, "first delivery + 2 retries");
    assert!(
        headers.inner().contains_key("x-death"),
        "dead-lettered by the broker"
    );
    let _ = conn.close(200, "done".into()).await;
    relay.stop().await;
    sub.stop().await;
    cleanup(&url, &exchange, &queue).await;
}

/// Checkpoints whose saves hang while `blocked` (a relay killed after
/// publishing but before checkpointing).
struct StuckCheckpoints {
    inner: Arc<InMemoryStore>,
    blocked: AtomicBool,
    attempted: AtomicBool,
}

#[async_trait]
impl CheckpointStore for StuckCheckpoints {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        if self.blocked.load(Ordering::SeqCst) {
            self.attempted.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        self.inner.save_checkpoint(name, position).await
    }
}

#[tokio::test]
async fn relay_killed_before_checkpoint_duplicates_but_loses_nothing() {
    let Some(url) = amqp_url("relay_killed").await else {
        return;
    };
    let (exchange, queue) = names("killed");
    let store = Arc::new(InMemoryStore::new());
    let bus = RabbitBus::new(bus_config(&url, &exchange));
    let (handler, seen) = Recorder::new();
    let sub = subscribe(&bus, SubscriptionOptions::new(&queue, ["#"]), handler)
        .await
        .expect("subscribe");
    const N: usize = 300;
    fill(&store, N, 5, |i| format!("e{i}")).await;
    let stuck = Arc::new(StuckCheckpoints {
        inner: store.clone(),
        blocked: AtomicBool::new(true),
        attempted: AtomicBool::new(false),
    });
    let lock = InMemoryLeaderLock::new();
    let first = Relay::new(
        store.clone(),
        stuck.clone(),
        Arc::new(lock.clone()),
        relay_config(&url, &exchange),
    )
    .spawn();
    wait_until(
        "the first relay got confirms and tries to checkpoint",
        WAIT,
        || stuck.attempted.load(Ordering::SeqCst),
    )
    .await;
    let published = first.status().published;
    assert!(published > 0);
    first.abort();
    wait_until("the first relay's lease is released", WAIT, || {
        first.is_finished() && !lock.is_held(&format!("relay:{exchange}"))
    })
    .await;
    assert_eq!(
        store
            .load_checkpoint(&format!("relay:{exchange}"))
            .await
            .expect("load"),
        None,
        "nothing was checkpointed"
    );
    // The confirmed messages of the dead relay reach the subscriber...
    wait_until("the first relay's messages", WAIT, || {
        seen.raw() >= published as usize
    })
    .await;
    // ...and the next relay republishes them from the checkpoint.
    let second = relay(&store, &lock, &url, &exchange).spawn();
    wait_until("every event", WAIT, || seen.unique() == N).await;
    wait_until("the duplicates", WAIT, || {
        seen.raw() >= N + published as usize
    })
    .await;
    assert_stream_order(&seen);
    second.stop().await;
    sub.stop().await;
    cleanup(&url, &exchange, &queue).await;
}

#[tokio::test]
async fn standby_relay_takes_over_when_the_leader_dies() {
    let Some(url) = amqp_url("standby_relay").await else {
        return;
    };
    let (exchange, queue) = names("standby");
    let store = Arc::new(InMemoryStore::new());
    let bus = RabbitBus::new(bus_config(&url, &exchange));
    let (handler, seen) = Recorder::new();
    let sub = subscribe(&bus, SubscriptionOptions::new(&queue, ["#"]), handler)
        .await
        .expect("subscribe");
    let lock = InMemoryLeaderLock::new();
    let leader = relay(&store, &lock, &url, &exchange).spawn();
    assert!(
        leader
            .wait_for(WAIT, |s| s.state == RelayState::Active)
            .await,
        "the first relay leads"
    );
    let standby = relay(&store, &lock, &url, &exchange).spawn();
    fill(&store, 100, 4, |i| format!("e{i}")).await;
    wait_until("the first half", WAIT, || seen.unique() == 100).await;
    assert_eq!(standby.status().state, RelayState::Standby);
    assert_eq!(
        standby.status().published,
        0,
        "the standby relay published nothing"
    );

    leader.abort();
    fill(&store, 100, 4, |i| format!("f{i}")).await;
    assert!(
        standby
            .wait_for(WAIT, |s| s.state == RelayState::Active)
            .await,
        "the standby relay takes over"
    );
    wait_until("the second half", WAIT, || seen.unique() == 200).await;
    assert!(standby.status().published >= 100);
    assert_stream_order(&seen);
    standby.stop().await;
    sub.stop().await;
    cleanup(&url, &exchange, &queue).await;
}

#[tokio::test]
async fn lost_lease_stops_publishing() {
    let Some(url) = amqp_url("lost_lease").await else {
        return;
    };
    let (exchange, _queue) = names("lease");
    let store = Arc::new(InMemoryStore::new());
    let lock = InMemoryLeaderLock::new();
    let name = format!("relay:{exchange}");
    let r = relay(&store, &lock, &url, &exchange).spawn();
    assert!(r.wait_for(WAIT, |s| s.state == RelayState::Active).await);
    // Someone else takes the lease: revoke, then hold it.
    lock.revoke(&name);
    let _other = payorch_engine::bus::LeaderLock::try_acquire(&lock, &name)
        .await
        .expect("lock")
        .expect("free after revoke");
    assert!(
        r.wait_for(WAIT, |s| s.state == RelayState::Standby).await,
        "the relay notices and stands by"
    );
    fill(&store, 10, 1, |i| format!("e{i}")).await;
    // It stays in standby while the other holds the lease.
    let mut rx = r.watch();
    let changed =
        tokio::time::timeout(Duration::from_millis(300), rx.wait_for(|s| s.published > 0)).await;
    assert!(changed.is_err(), "a relay without the lease published");
    r.stop().await;
}

/// Run alone: closes every connection of the broker.
#[tokio::test]
#[ignore = "closes every broker connection: run alone with --ignored --test-threads=1"]
async fn connections_closed_mid_stream_lose_nothing() {
    let Some(url) = amqp_url("connections_closed").await else {
        return;
    };
    let (exchange, queue) = names("closed");
    let store = Arc::new(InMemoryStore::new());
    let bus = RabbitBus::new(bus_config(&url, &exchange));
    let (handler, seen) = Recorder::new();
    let sub = subscribe(
        &bus,
        SubscriptionOptions::new(&queue, ["#"]).with_prefetch(8),
        handler,
    )
    .await
    .expect("subscribe");
    const N: usize = 3000;
    fill(&store, N, 10, |i| format!("e{i}")).await;
    let lock = InMemoryLeaderLock::new();
    let mut cfg = relay_config(&url, &exchange);
    cfg.window = 16;
    cfg.read_batch = 16;
    let relay = Relay::new(store.clone(), store.clone(), Arc::new(lock), cfg).spawn();
    wait_until("some deliveries", WAIT, || seen.unique() >= 100).await;
    rabbitmqctl(&["close_all_connections", "test"]);
    fill(&store, 100, 10, |i| format!("g{i}")).await;
    wait_until("every event after the connections closed", WAIT, || {
        seen.unique() == N + 100
    })
    .await;
    assert!(
        relay.wait_for(WAIT, |s| s.failures >= 1).await,
        "the relay saw its connection closed"
    );
    relay.stop().await;
    sub.stop().await;
    cleanup(&url, &exchange, &queue).await;
}

/// Run alone: stops and restarts the broker application.
#[tokio::test]
#[ignore = "restarts the broker: run alone with --ignored --test-threads=1"]
async fn broker_restart_loses_nothing() {
    let Some(url) = amqp_url("broker_restart").await else {
        return;
    };
    let (exchange, queue) = names("restart");
    let store = Arc::new(InMemoryStore::new());
    let bus = RabbitBus::new(bus_config(&url, &exchange));
    let (handler, seen) = Recorder::new();
    let sub = subscribe(
        &bus,
        SubscriptionOptions::new(&queue, ["#"]).with_prefetch(8),
        handler,
    )
    .await
    .expect("subscribe");
    const N: usize = 2000;
    fill(&store, N, 10, |i| format!("e{i}")).await;
    let lock = InMemoryLeaderLock::new();
    let mut cfg = relay_config(&url, &exchange);
    cfg.window = 16;
    cfg.read_batch = 16;
    let relay = Relay::new(store.clone(), store.clone(), Arc::new(lock), cfg).spawn();
    wait_until("some deliveries", WAIT, || seen.unique() >= 100).await;
    rabbitmqctl(&["stop_app"]);
    let failures = relay.status().failures;
    fill(&store, 100, 10, |i| format!("g{i}")).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    wait_until(
        "every event after the restart",
        Duration::from_secs(120),
        || seen.unique() == N + 100,
    )
    .await;
    assert!(
        relay.status().failures > failures,
        "the relay saw the broker go"
    );
    relay.stop().await;
    sub.stop().await;
    cleanup(&url, &exchange, &queue).await;
}

/// An [`InMemoryStore`] that counts the relay's reads and checkpoint
/// writes (each one a Postgres round trip on the real store).
struct CountingStore {
    inner: Arc<InMemoryStore>,
    reads: std::sync::atomic::AtomicUsize,
    saves: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl EventStore for CountingStore {
    async fn append(
        &self,
        request: payorch_engine::store::AppendRequest,
    ) -> Result<payorch_engine::store::AppendOutcome, StoreError> {
        self.inner.append(request).await
    }
    async fn read_stream(
        &self,
        stream: &payorch_engine::store::StreamId,
        from: payorch_engine::store::Version,
        limit: usize,
    ) -> Result<Vec<payorch_engine::store::RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<payorch_engine::store::RecordedEvent>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_all(after, limit).await
    }
    async fn stream_version(
        &self,
        stream: &payorch_engine::store::StreamId,
    ) -> Result<payorch_engine::store::Version, StoreError> {
        self.inner.stream_version(stream).await
    }
    async fn list_streams(
        &self,
        stream_type: &str,
        after: Option<&payorch_engine::store::StreamId>,
        limit: usize,
    ) -> Result<
        Vec<(
            payorch_engine::store::StreamId,
            payorch_engine::store::Version,
        )>,
        StoreError,
    > {
        self.inner.list_streams(stream_type, after, limit).await
    }
}

#[async_trait]
impl CheckpointStore for CountingStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        self.inner.save_checkpoint(name, position).await
    }
}

/// A leader lock whose guards count their lease checks.
struct CountingLock {
    inner: InMemoryLeaderLock,
    checks: Arc<std::sync::atomic::AtomicUsize>,
}

struct CountingGuard {
    inner: Box<dyn payorch_engine::bus::LeaseGuard>,
    checks: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait]
impl payorch_engine::bus::LeaseGuard for CountingGuard {
    async fn is_lost(&self) -> bool {
        self.checks.fetch_add(1, Ordering::SeqCst);
        self.inner.is_lost().await
    }
}

#[async_trait]
impl payorch_engine::bus::LeaderLock for CountingLock {
    async fn try_acquire(
        &self,
        name: &str,
    ) -> Result<Option<Box<dyn payorch_engine::bus::LeaseGuard>>, StoreError> {
        Ok(self.inner.try_acquire(name).await?.map(|inner| {
            Box::new(CountingGuard {
                inner,
                checks: self.checks.clone(),
            }) as Box<dyn payorch_engine::bus::LeaseGuard>
        }))
    }
}

/// Under a trickle of appends (one every few ms, as under load: each
/// command commits on its own) the relay reads at most once per
/// `read_gap` and writes its checkpoint at most once per
/// `checkpoint_interval` while caught up, instead of reading after every
/// confirm and writing whenever its pipeline drained (about one read and
/// one write per event before), and checks its lease every
/// `lease_check_interval`, not on every idle pass. Every event is still
/// published and checkpointed.
#[tokio::test]
async fn a_trickle_of_appends_is_read_in_batches() {
    let Some(url) = amqp_url("trickle_batches").await else {
        return;
    };
    let (exchange, queue) = names("trickle");
    let inner = Arc::new(InMemoryStore::new());
    let counting = Arc::new(CountingStore {
        inner: inner.clone(),
        reads: Default::default(),
        saves: Default::default(),
    });
    let mut config = relay_config(&url, &exchange);
    config.read_gap = Duration::from_millis(100);
    config.checkpoint_interval = Duration::from_millis(500);
    config.lease_check_interval = Duration::from_millis(500);
    let checks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lock = CountingLock {
        inner: InMemoryLeaderLock::new(),
        checks: checks.clone(),
    };
    let relay = Relay::new(counting.clone(), counting.clone(), Arc::new(lock), config).spawn();
    assert!(
        relay
            .wait_for(WAIT, |s| s.state == RelayState::Active)
            .await,
        "relay active"
    );
    let (reads_before, saves_before, checks_before) = (
        counting.reads.load(Ordering::SeqCst),
        counting.saves.load(Ordering::SeqCst),
        checks.load(Ordering::SeqCst),
    );
    const N: usize = 200;
    for _ in 0..N {
        fill(&inner, 1, 1, |i| format!("e{i}")).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        relay
            .wait_for(WAIT, |s| s.checkpoint == Position(N as u64))
            .await,
        "every event published and checkpointed"
    );
    let reads = counting.reads.load(Ordering::SeqCst) - reads_before;
    let saves = counting.saves.load(Ordering::SeqCst) - saves_before;
    let lease_checks = checks.load(Ordering::SeqCst) - checks_before;
    // 200 appends over >= 1 s: at most ~10 gap-limited reads plus the
    // idle polls that find nothing (every 20 ms here, each gap-limited
    // too); at most a few checkpoint writes.
    assert!(reads <= N / 4, "{reads} reads for {N} trickled events");
    assert!(saves <= N / 10, "{saves} checkpoint writes for {N} events");
    assert!(
        lease_checks <= N / 20,
        "{lease_checks} lease checks for {N} trickled events"
    );
    relay.stop().await;
    cleanup(&url, &exchange, &queue).await;
}
