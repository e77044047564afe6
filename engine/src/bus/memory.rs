//! The in-process bus: the subscriber API without a broker.
//!
//! Each subscription is a task that tails `EventStore::read_all` from its own
//! checkpoint (`bus:<name>` in the [`CheckpointStore`]), keeps the events
//! whose routing key matches one of its patterns and hands them, in global
//! order, to its handler. The checkpoint advances after a batch has been
//! handled (or dead-lettered), so delivery is at-least-once: a crash
//! replays the unfinished batch.
//!
//! Retries follow the RabbitMQ subscriber's rules: a
//! [`HandlerError::Transient`] is retried up to `max_retries` times,
//! `retry_delay` apart; then, or at once for [`HandlerError::Rejected`], the
//! event goes to the subscription's dead letters ([`InProcessBus::dead_letters`],
//! kept in memory). Unlike RabbitMQ's retry queue, a retried event holds back
//! the events after it, so order is kept even across retries.
//!
//! Subscribers poll every `poll_interval` when idle; call
//! [`InProcessBus::notify`] after an append to wake them at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use super::pattern::{TopicPattern, any_matches};
use super::{
    BusError, DeliveryContext, EventBus, HandlerError, RawEventHandler, Subscription,
    SubscriptionOptions, envelope_json, routing_key,
};
use crate::store::{CheckpointStore, EventStore, Position, RecordedEvent};

/// An event a subscription gave up on.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub message_id: Uuid,
    pub routing_key: String,
    pub global_position: Position,
    /// The envelope JSON as delivered.
    pub body: Vec<u8>,
    /// The last failure.
    pub error: HandlerError,
    /// Deliveries made (1 + retries).
    pub attempts: u32,
}

type DeadLetters = Arc<Mutex<HashMap<String, Vec<DeadLetter>>>>;

/// An [`EventBus`] over an event store, in this process.
#[derive(Clone)]
pub struct InProcessBus {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    wake: watch::Sender<u64>,
    poll_interval: Duration,
    dead: DeadLetters,
}

impl InProcessBus {
    /// A bus over `store`, keeping subscription checkpoints in `checkpoints`.
    pub fn new(store: Arc<dyn EventStore>, checkpoints: Arc<dyn CheckpointStore>) -> Self {
        InProcessBus {
            store,
            checkpoints,
            wake: watch::channel(0).0,
            poll_interval: Duration::from_millis(200),
            dead: Arc::default(),
        }
    }

    /// How often idle subscriptions look for new events (default 200 ms).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Wakes every subscription now (call after an append).
    pub fn notify(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The checkpoint name a subscription uses.
    pub fn checkpoint_name(subscription: &str) -> String {
        format!("bus:{subscription}")
    }

    /// The dead letters of a subscription so far.
    pub fn dead_letters(&self, subscription: &str) -> Vec<DeadLetter> {
        self.dead
            .lock()
            .map(|d| d.get(subscription).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn subscribe_raw(
        &self,
        options: SubscriptionOptions,
        handler: Arc<dyn RawEventHandler>,
    ) -> Result<Subscription, BusError> {
        let patterns = options.validate()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = Worker {
            store: self.store.clone(),
            checkpoints: self.checkpoints.clone(),
            checkpoint: Self::checkpoint_name(&options.name),
            wake: self.wake.subscribe(),
            poll_interval: self.poll_interval,
            dead: self.dead.clone(),
            patterns,
            options,
            handler,
            stop: stop_rx,
        };
        Ok(Subscription::new(stop_tx, tokio::spawn(worker.run())))
    }
}

struct Worker {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    checkpoint: String,
    wake: watch::Receiver<u64>,
    poll_interval: Duration,
    dead: DeadLetters,
    patterns: Vec<TopicPattern>,
    options: SubscriptionOptions,
    handler: Arc<dyn RawEventHandler>,
    stop: watch::Receiver<bool>,
}

/// Aborts the handler task if the subscription is dropped mid-call.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The subscription was asked to stop.
struct Stopped;

impl Worker {
    async fn run(mut self) {
        let Ok(mut position) = self.load_checkpoint().await else {
            return;
        };
        let batch_size = usize::from(self.options.prefetch.max(1));
        loop {
            if *self.stop.borrow() {
                return;
            }
            let batch = match self.store.read_all(position, batch_size).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(subscription = %self.options.name, error = %e, "read_all failed; retrying");
                    if self.pause(self.poll_interval).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                if self.idle().await.is_err() {
                    return;
                }
                continue;
            }
            let mut stopped = false;
            for event in &batch {
                if self.deliver(event).await.is_err() {
                    stopped = true;
                    break;
                }
                position = event.global_position;
            }
            if self.save_checkpoint(position).await.is_err() || stopped {
                return;
            }
        }
    }

    async fn load_checkpoint(&mut self) -> Result<Position, Stopped> {
        loop {
            match self.checkpoints.load_checkpoint(&self.checkpoint).await {
                Ok(p) => return Ok(p.unwrap_or(Position::START)),
                Err(e) => {
                    tracing::warn!(checkpoint = %self.checkpoint, error = %e, "loading checkpoint failed; retrying");
                    self.pause(self.poll_interval).await?;
                }
            }
        }
    }

    async fn save_checkpoint(&mut self, position: Position) -> Result<(), Stopped> {
        loop {
            match self
                .checkpoints
                .save_checkpoint(&self.checkpoint, position)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(checkpoint = %self.checkpoint, error = %e, "saving checkpoint failed; retrying");
                    self.pause(self.poll_interval).await?;
                }
            }
        }
    }

    /// Handles one event with retries; `Err` only when asked to stop before
    /// the event was settled (it will be redelivered).
    async fn deliver(&mut self, event: &RecordedEvent) -> Result<(), Stopped> {
        let key = routing_key(event);
        if !any_matches(&self.patterns, &key) {
            return Ok(());
        }
        let body = match envelope_json(event) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                self.dead_letter(
                    event,
                    key,
                    Vec::new(),
                    HandlerError::Rejected(e.to_string()),
                    0,
                );
                return Ok(());
            }
        };
        let mut attempt = 0u32;
        loop {
            let ctx = DeliveryContext {
                message_id: event.event_id,
                routing_key: key.clone(),
                attempt,
                redelivered: attempt > 0,
            };
            match self.call_handler(&body, ctx).await {
                Ok(()) => return Ok(()),
                Err(HandlerError::Transient(msg)) if attempt < self.options.max_retries => {
                    tracing::debug!(subscription = %self.options.name, message_id = %event.event_id, attempt, error = %msg, "handler failed; retrying");
                    attempt += 1;
                    self.pause(self.options.retry_delay).await?;
                }
                Err(error) => {
                    self.dead_letter(event, key, body.to_vec(), error, attempt + 1);
                    return Ok(());
                }
            }
        }
    }

    /// Runs the handler on its own task so that a panic is a transient
    /// failure (as with the RabbitMQ subscriber) instead of the end of the
    /// subscription.
    async fn call_handler(
        &self,
        body: &Arc<Vec<u8>>,
        ctx: DeliveryContext,
    ) -> Result<(), HandlerError> {
        let handler = self.handler.clone();
        let body = body.clone();
        let mut task = AbortOnDrop(tokio::spawn(async move {
            handler.handle_raw(&body, &ctx).await
        }));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(HandlerError::Transient("handler panicked".into())),
            Err(_) => Err(HandlerError::Transient("handler task cancelled".into())),
        }
    }

    fn dead_letter(
        &self,
        event: &RecordedEvent,
        routing_key: String,
        body: Vec<u8>,
        error: HandlerError,
        attempts: u32,
    ) {
        tracing::warn!(subscription = %self.options.name, message_id = %event.event_id, %error, attempts, "event dead-lettered");
        if let Ok(mut dead) = self.dead.lock() {
            dead.entry(self.options.name.clone())
                .or_default()
                .push(DeadLetter {
                    message_id: event.event_id,
                    routing_key,
                    global_position: event.global_position,
                    body,
                    error,
                    attempts,
                });
        }
    }

    /// Sleeps, unless asked to stop.
    async fn pause(&mut self, d: Duration) -> Result<(), Stopped> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.stop.wait_for(|s| *s) => Err(Stopped),
        }
    }

    /// Waits for a wake-up, the poll interval or a stop.
    async fn idle(&mut self) -> Result<(), Stopped> {
        tokio::select! {
            _ = tokio::time::sleep(self.poll_interval) => Ok(()),
            _ = self.wake.changed() => Ok(()),
            _ = self.stop.wait_for(|s| *s) => Err(Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use serde_json::value::RawValue;
    use time::OffsetDateTime;

    use super::*;
    use crate::bus::{Deduplicated, EventEnvelope, EventHandler, LruSeenSet, subscribe};
    use crate::store::memory::InMemoryStore;
    use crate::store::{AppendRequest, EventMetadata, ExpectedVersion, NewEvent, StreamId};

    type Seen = Arc<Mutex<Vec<(String, u64, String)>>>;
    type FailWhen =
        Box<dyn Fn(&EventEnvelope<serde_json::Value>) -> Option<HandlerError> + Send + Sync>;

    /// Records (stream, version, event type); fails as told by `fail`.
    struct Recorder {
        seen: Seen,
        fail: FailWhen,
        calls: Arc<AtomicU32>,
    }

    #[async_trait]
    impl EventHandler<serde_json::Value> for Recorder {
        async fn handle(
            &self,
            event: EventEnvelope<serde_json::Value>,
            _ctx: &DeliveryContext,
        ) -> Result<(), HandlerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = (self.fail)(&event) {
                return Err(e);
            }
            if let Ok(mut s) = self.seen.lock() {
                s.push((
                    event.stream_id.to_string(),
                    event.version.0,
                    event.event_type,
                ));
            }
            Ok(())
        }
    }

    fn recorder(
        fail: impl Fn(&EventEnvelope<serde_json::Value>) -> Option<HandlerError> + Send + Sync + 'static,
    ) -> (Recorder, Seen, Arc<AtomicU32>) {
        let seen = Seen::default();
        let calls = Arc::new(AtomicU32::new(0));
        (
            Recorder {
                seen: seen.clone(),
                fail: Box::new(fail),
                calls: calls.clone(),
            },
            seen,
            calls,
        )
    }

    async fn append(store: &InMemoryStore, stream: &str, stream_type: &str, types: &[&str]) {
        let events = types
            .iter()
            .map(|t| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: (*t).to_owned(),
                schema_version: 1,
                payload: RawValue::from_string(r#"{"k":1}"#.into()).expect("json"),
                metadata: EventMetadata {
                    merchant_id: Some("m1".into()),
                    ..Default::default()
                },
                recorded_at: OffsetDateTime::UNIX_EPOCH,
            })
            .collect();
        store
            .append(AppendRequest {
                stream_id: StreamId::new(stream),
                stream_type: stream_type.into(),
                expected: ExpectedVersion::Any,
                events,
                idempotency: None,
            })
            .await
            .expect("append");
    }

    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn bus(store: &Arc<InMemoryStore>) -> InProcessBus {
        InProcessBus::new(store.clone(), store.clone())
            .with_poll_interval(Duration::from_millis(20))
    }

    fn len(seen: &Seen) -> usize {
        seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    #[tokio::test]
    async fn delivers_matching_events_in_order() {
        let store = Arc::new(InMemoryStore::new());
        let bus = bus(&store);
        append(&store, "order-1", "order", &["created", "authorized"]).await;
        append(&store, "session-1", "checkout_session", &["opened"]).await;
        let (h, seen, _) = recorder(|_| None);
        let sub = subscribe(&bus, SubscriptionOptions::new("orders", ["order.#"]), h)
            .await
            .expect("subscribe");
        append(&store, "order-2", "order", &["created"]).await;
        append(&store, "order-1", "order", &["captured"]).await;
        bus.notify();
        wait_until("4 order events", || len(&seen) == 4).await;
        sub.stop().await;
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(
            seen,
            vec![
                ("order-1".into(), 1, "created".into()),
                ("order-1".into(), 2, "authorized".into()),
                ("order-2".into(), 1, "created".into()),
                ("order-1".into(), 3, "captured".into()),
            ]
        );
        assert_eq!(
            store.load_checkpoint("bus:orders").await.expect("load"),
            Some(Position(5))
        );
    }

    #[tokio::test]
    async fn resumes_from_checkpoint_after_restart() {
        let store = Arc::new(InMemoryStore::new());
        let bus = bus(&store);
        append(&store, "order-1", "order", &["a", "b"]).await;
        let (h, seen, _) = recorder(|_| None);
        let sub = subscribe(&bus, SubscriptionOptions::new("s", ["#"]), h)
            .await
            .expect("subscribe");
        wait_until("2 events", || len(&seen) == 2).await;
        sub.stop().await;
        append(&store, "order-1", "order", &["c"]).await;
        let (h2, seen2, _) = recorder(|_| None);
        let sub = subscribe(&bus, SubscriptionOptions::new("s", ["#"]), h2)
            .await
            .expect("subscribe");
        wait_until("third event", || len(&seen2) == 1).await;
        sub.stop().await;
        assert_eq!(
            seen2.lock().map(|s| s[0].2.clone()).unwrap_or_default(),
            "c"
        );
    }

    #[tokio::test]
    async fn transient_failures_retry_then_dead_letter() {
        let store = Arc::new(InMemoryStore::new());
        let bus = bus(&store);
        append(&store, "order-1", "order", &["poison", "fine"]).await;
        let (h, seen, calls) = recorder(|e| {
            (e.event_type == "poison").then(|| HandlerError::Transient("boom".into()))
        });
        let opts = SubscriptionOptions::new("s", ["#"])
            .with_max_retries(3)
            .with_retry_delay(Duration::from_millis(1));
        let sub = subscribe(&bus, opts, h).await.expect("subscribe");
        wait_until("the good event", || len(&seen) == 1).await;
        sub.stop().await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4 + 1,
            "1 + 3 retries, then the good one"
        );
        let dead = bus.dead_letters("s");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 4);
        assert_eq!(dead[0].routing_key, "order.poison.m1");
        assert!(matches!(dead[0].error, HandlerError::Transient(_)));
    }

    #[tokio::test]
    async fn rejected_and_undecodable_dead_letter_at_once() {
        struct Strict;
        #[derive(serde::Deserialize)]
        struct NeedsField {
            #[allow(dead_code)]
            missing: u32,
        }
        #[async_trait]
        impl EventHandler<NeedsField> for Strict {
            async fn handle(
                &self,
                _event: EventEnvelope<NeedsField>,
                _ctx: &DeliveryContext,
            ) -> Result<(), HandlerError> {
                Ok(())
            }
        }
        let store = Arc::new(InMemoryStore::new());
        let bus = bus(&store);
        append(&store, "order-1", "order", &["x"]).await;
        let sub = subscribe(&bus, SubscriptionOptions::new("strict", ["#"]), Strict)
            .await
            .expect("subscribe");
        let (h, _, calls) = recorder(|_| Some(HandlerError::Rejected("no".into())));
        let sub2 = subscribe(&bus, SubscriptionOptions::new("rej", ["#"]), h)
            .await
            .expect("subscribe");
        wait_until("dead letters", || {
            bus.dead_letters("strict").len() == 1 && bus.dead_letters("rej").len() == 1
        })
        .await;
        sub.stop().await;
        sub2.stop().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no retry after Rejected");
        assert_eq!(bus.dead_letters("strict")[0].attempts, 1);
    }

    #[tokio::test]
    async fn dedupe_skips_replayed_events() {
        let store = Arc::new(InMemoryStore::new());
        let bus = bus(&store);
        append(&store, "order-1", "order", &["a", "b"]).await;
        let (h, seen, _) = recorder(|_| None);
        let seen_ids = Arc::new(LruSeenSet::new(100));
        let h = Arc::new(Deduplicated::new(h, seen_ids.clone()));
        let sub = subscribe(&bus, SubscriptionOptions::new("d", ["#"]), h.clone())
            .await
            .expect("subscribe");
        wait_until("2 events", || len(&seen) == 2).await;
        sub.stop().await;
        // Replay everything (as after a lost checkpoint): nothing handled twice.
        store
            .save_checkpoint("bus:d", Position::START)
            .await
            .expect("save");
        append(&store, "order-1", "order", &["c"]).await;
        let sub = subscribe(&bus, SubscriptionOptions::new("d", ["#"]), h)
            .await
            .expect("subscribe");
        wait_until("third event", || len(&seen) >= 3).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.load_checkpoint("bus:d").await.expect("load") != Some(Position(3)) {
            assert!(Instant::now() < deadline, "checkpoint never reached 3");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sub.stop().await;
        let types: Vec<String> = seen
            .lock()
            .map(|s| s.iter().map(|x| x.2.clone()).collect())
            .unwrap_or_default();
        assert_eq!(types, ["a", "b", "c"]);
        assert_eq!(seen_ids.len(), 3);
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_transient_failure() {
        let store = Arc::new(InMemoryStore::new());
        let bus = bus(&store);
        append(&store, "order-1", "order", &["panic", "fine"]).await;
        let (h, seen, calls) = recorder(|e| {
            assert!(e.event_type != "panic", "handler bug");
            None
        });
        let opts = SubscriptionOptions::new("p", ["#"])
            .with_max_retries(1)
            .with_retry_delay(Duration::from_millis(1));
        let sub = subscribe(&bus, opts, h).await.expect("subscribe");
        wait_until("the event after the panicking one", || len(&seen) == 1).await;
        sub.stop().await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "2 panics + the good one");
        let dead = bus.dead_letters("p");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 2);
    }
}
