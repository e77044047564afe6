//! Shared helpers of the RabbitMQ integration tests: service discovery with
//! loud skipping, unique names, a store filler and a recording handler.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use payorch_engine::bus::{
    DeliveryContext, EventEnvelope, EventHandler, HandlerError, LruSeenSet, SeenSet,
};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{
    AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, StreamId,
};
use payorch_rabbitmq::{Backoff, DEFAULT_AMQP_URL, RabbitBusConfig, RelayConfig};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

/// The broker URL, or None (after a loud SKIP) when it is unreachable.
/// Panics instead when PAYORCH_REQUIRE_SERVICES=1.
pub async fn amqp_url(test: &str) -> Option<String> {
    let url = std::env::var("PAYORCH_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into());
    let probe = tokio::time::timeout(
        Duration::from_secs(5),
        lapin::Connection::connect(&url, lapin::ConnectionProperties::default()),
    )
    .await;
    match probe {
        Ok(Ok(conn)) => {
            let _ = conn.close(200, "probe".into()).await;
            Some(url)
        }
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timeout".into(),
            };
            if std::env::var("PAYORCH_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("RabbitMQ required but unreachable for {test}: {why}");
            }
            eprintln!(
                "\n**************** SKIP {test}: RabbitMQ unreachable ({why}); set PAYORCH_TEST_AMQP_URL or start the broker ****************\n"
            );
            None
        }
    }
}

/// Unique exchange and queue names for one test.
pub fn names(test: &str) -> (String, String) {
    let id = Uuid::now_v7().simple().to_string();
    (
        format!("payorch.events.test.{test}.{id}"),
        format!("payorch.test.{test}.{id}"),
    )
}

pub fn relay_config(url: &str, exchange: &str) -> RelayConfig {
    let mut c = RelayConfig::new(url).with_exchange(exchange);
    c.idle_poll = Duration::from_millis(20);
    c.standby_poll = Duration::from_millis(20);
    c.lease_check_interval = Duration::from_millis(50);
    c.confirm_timeout = Duration::from_secs(10);
    c.backoff = Backoff {
        min: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    c
}

pub fn bus_config(url: &str, exchange: &str) -> RabbitBusConfig {
    let mut c = RabbitBusConfig::new(url).with_exchange(exchange);
    c.backoff = Backoff {
        min: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    c
}

/// Appends `n` events round-robin over `streams` streams of type `order`;
/// event types are `e<i>` unless `kind` picks another.
pub async fn fill(store: &InMemoryStore, n: usize, streams: usize, kind: impl Fn(usize) -> String) {
    for i in 0..n {
        let stream = format!("order-{}", i % streams);
        store
            .append(AppendRequest {
                stream_id: StreamId::new(stream),
                stream_type: "order".into(),
                expected: ExpectedVersion::Any,
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: kind(i),
                    schema_version: 1,
                    payload: RawValue::from_string(format!(r#"{{"i":{i}}}"#)).expect("json"),
                    metadata: EventMetadata {
                        merchant_id: Some(format!("m{}", i % 3)),
                        correlation_id: Some(Uuid::now_v7()),
                        ..Default::default()
                    },
                    recorded_at: OffsetDateTime::now_utc(),
                }],
                idempotency: None,
            })
            .await
            .expect("append");
    }
}

/// What a subscriber saw.
#[derive(Default)]
pub struct Seen {
    /// Every delivery, duplicates included.
    pub raw: AtomicUsize,
    /// Deduplicated: stream id -> versions in delivery order.
    pub streams: Mutex<HashMap<String, Vec<u64>>>,
    pub unique: AtomicUsize,
    /// Attempts per event type.
    pub attempts: Mutex<HashMap<String, u32>>,
}

impl Seen {
    pub fn unique(&self) -> usize {
        self.unique.load(Ordering::SeqCst)
    }
    pub fn raw(&self) -> usize {
        self.raw.load(Ordering::SeqCst)
    }
    pub fn attempts(&self, event_type: &str) -> u32 {
        self.attempts
            .lock()
            .map(|a| a.get(event_type).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Records deliveries (dedupe by message id with an LRU set); events whose
/// type starts with `poison` fail transiently.
pub struct Recorder {
    pub seen: Arc<Seen>,
    pub dedupe: LruSeenSet,
}

impl Recorder {
    pub fn new() -> (Self, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        (
            Recorder {
                seen: seen.clone(),
                dedupe: LruSeenSet::new(100_000),
            },
            seen,
        )
    }
}

#[async_trait]
impl EventHandler<serde_json::Value> for Recorder {
    async fn handle(
        &self,
        event: EventEnvelope<serde_json::Value>,
        ctx: &DeliveryContext,
    ) -> Result<(), HandlerError> {
        self.seen.raw.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut a) = self.seen.attempts.lock() {
            *a.entry(event.event_type.clone()).or_default() += 1;
        }
        if event.event_type.starts_with("poison") {
            return Err(HandlerError::Transient("poison".into()));
        }
        assert_eq!(ctx.message_id, event.event_id, "message_id is the event id");
        if self.dedupe.contains(ctx.message_id).await? {
            return Ok(());
        }
        if let Ok(mut s) = self.seen.streams.lock() {
            s.entry(event.stream_id.to_string())
                .or_default()
                .push(event.version.0);
        }
        self.seen.unique.fetch_add(1, Ordering::SeqCst);
        self.dedupe.insert(ctx.message_id).await
    }
}

/// Waits for `cond` with a deadline; panics with `what` on timeout.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Deletes a test's queues and exchange (best effort).
pub async fn cleanup(url: &str, exchange: &str, queue: &str) {
    let Ok(conn) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        for q in [
            queue.to_owned(),
            payorch_rabbitmq::topology::retry_queue(queue),
            payorch_rabbitmq::topology::dead_letter_queue(queue),
        ] {
            let _ = ch
                .queue_delete(q.into(), lapin::options::QueueDeleteOptions::default())
                .await;
        }
        let _ = ch
            .exchange_delete(
                exchange.into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
    }
    let _ = conn.close(200, "cleanup".into()).await;
}

/// Runs `rabbitmqctl` with `args`; panics if it fails.
pub fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
