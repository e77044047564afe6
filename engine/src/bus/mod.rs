//! Events out: the broker-agnostic subscriber API (ARCHITECTURE.md §4).
//!
//! Every event that leaves the store travels as an [`EventEnvelope`] (JSON)
//! with a topic routing key `<stream_type>.<event_type>.<merchant_id>`
//! ([`routing_key`]). Subscribers bind topic patterns ([`TopicPattern`],
//! AMQP semantics: `*` one word, `#` zero or more words) and handle typed
//! envelopes with an [`EventHandler`]. Delivery is at-least-once: a handler
//! that is not idempotent wraps itself in [`Deduplicated`] keyed by the
//! message id (= event id).
//!
//! Two transports implement [`EventBus`] with the same semantics:
//!
//! * [`memory::InProcessBus`] (here): each subscription tails
//!   `EventStore::read_all` from its own checkpoint, for embedded users
//!   without a broker.
//! * `payorch-rabbitmq`: a relay publishes to the `payorch.events` topic
//!   exchange; its subscriber consumes a durable queue.
//!
//! Both retry a failed delivery at most [`SubscriptionOptions::max_retries`]
//! times ([`HandlerError::Transient`]), then dead-letter it; a
//! [`HandlerError::Rejected`] or an undecodable body is dead-lettered at once.
//!
//! [`lock`] holds the leader-lock port that keeps one relay active per store.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::store::{EventMetadata, Position, RecordedEvent, StoreError, StreamId, Version};

pub mod dedupe;
pub mod lock;
pub mod memory;
pub mod pattern;

pub use dedupe::{Deduplicated, LruSeenSet, SeenSet};
pub use lock::{InMemoryLeaderLock, LeaderLock, LeaseGuard};
pub use memory::{DeadLetter, InProcessBus};
pub use pattern::TopicPattern;

/// The published form of a stored event: the JSON body of every message.
///
/// `P` is the payload type: `Box<RawValue>` (default) keeps it as stored,
/// `serde_json::Value` or a concrete event enum from `payorch-schemas` decode
/// it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventEnvelope<P = Box<RawValue>> {
    pub event_id: Uuid,
    pub stream_id: StreamId,
    pub stream_type: String,
    pub version: Version,
    pub global_position: Position,
    pub event_type: String,
    pub schema_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    pub metadata: EventMetadata,
    pub payload: P,
}

impl EventEnvelope {
    /// The envelope of a stored event, payload kept as stored.
    pub fn from_recorded(event: &RecordedEvent) -> Self {
        EventEnvelope {
            event_id: event.event_id,
            stream_id: event.stream_id.clone(),
            stream_type: event.stream_type.clone(),
            version: event.version,
            global_position: event.global_position,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: event.recorded_at,
            metadata: event.metadata.clone(),
            payload: event.payload.clone(),
        }
    }
}

/// Borrowed twin of [`EventEnvelope`], so publishing does not clone.
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    event_id: Uuid,
    stream_id: &'a StreamId,
    stream_type: &'a str,
    version: Version,
    global_position: Position,
    event_type: &'a str,
    schema_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    recorded_at: OffsetDateTime,
    metadata: &'a EventMetadata,
    payload: &'a RawValue,
}

/// The JSON body published for a stored event (an [`EventEnvelope`]).
pub fn envelope_json(event: &RecordedEvent) -> Result<Vec<u8>, BusError> {
    serde_json::to_vec(&EnvelopeRef {
        event_id: event.event_id,
        stream_id: &event.stream_id,
        stream_type: &event.stream_type,
        version: event.version,
        global_position: event.global_position,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        recorded_at: event.recorded_at,
        metadata: &event.metadata,
        payload: &event.payload,
    })
    .map_err(|e| BusError::Encode(e.to_string()))
}

/// Merchant word used in routing keys when an event carries no merchant id.
pub const UNKNOWN_MERCHANT: &str = "unknown";

/// One word of a routing key: dots (the word separator) and the pattern
/// wildcards `*`/`#` become `_`; an empty word becomes `unknown`.
pub fn sanitize_word(word: &str) -> String {
    if word.is_empty() {
        return UNKNOWN_MERCHANT.to_owned();
    }
    word.chars()
        .map(|c| match c {
            '.' | '*' | '#' => '_',
            c => c,
        })
        .collect()
}

/// The routing key of a stored event:
/// `<stream_type>.<event_type>.<merchant_id>`, merchant `unknown` if absent.
pub fn routing_key(event: &RecordedEvent) -> String {
    routing_key_of(
        &event.stream_type,
        &event.event_type,
        event.metadata.merchant_id.as_deref(),
    )
}

/// [`routing_key`] from its parts.
pub fn routing_key_of(stream_type: &str, event_type: &str, merchant_id: Option<&str>) -> String {
    format!(
        "{}.{}.{}",
        sanitize_word(stream_type),
        sanitize_word(event_type),
        sanitize_word(merchant_id.unwrap_or(UNKNOWN_MERCHANT))
    )
}

/// What a handler reports when it could not process an event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// Might work later (a dependency is down): the delivery is retried up
    /// to `max_retries` times, then dead-lettered.
    #[error("transient handler failure: {0}")]
    Transient(String),
    /// Will never work (invalid content, undecodable body): dead-lettered
    /// at once, without retries.
    #[error("handler rejected the event: {0}")]
    Rejected(String),
}

/// Errors of the bus itself (not of handlers).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The store failed while tailing or checkpointing; retried by the bus,
    /// returned only from setup calls. Page someone if it persists.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A binding pattern is malformed (empty word). Fix the configuration.
    #[error("invalid topic pattern {0:?}")]
    InvalidPattern(String),
    /// Subscription options are invalid (empty name, no pattern). Fix the
    /// configuration.
    #[error("invalid subscription: {0}")]
    InvalidOptions(String),
    /// An event could not be encoded as JSON (a bug; do not retry).
    #[error("event could not be encoded: {0}")]
    Encode(String),
    /// The broker could not be reached or refused an operation; the adapter
    /// retries with backoff, setup calls return it. Check the broker.
    #[error("broker error: {0}")]
    Broker(String),
}

/// How a subscription binds and retries.
#[derive(Clone, Debug)]
pub struct SubscriptionOptions {
    /// Subscription name: the RabbitMQ queue name, or the in-process
    /// checkpoint name (`bus:<name>`). Stable across restarts.
    pub name: String,
    /// Topic patterns over routing keys (`order.*.#`, `#`).
    pub patterns: Vec<String>,
    /// Redeliveries after a transient failure before dead-lettering.
    pub max_retries: u32,
    /// Delay before a redelivery.
    pub retry_delay: Duration,
    /// Messages delivered ahead of acknowledgement (RabbitMQ `basic.qos`),
    /// or events read per batch in process.
    pub prefetch: u16,
    /// Scale out with each stream's events kept in order: `None` (default)
    /// is one queue whose consumers compete (fast, but two instances, or a
    /// retry, may deliver an order's `captured` before its `authorised`).
    /// See [`OrderedDelivery`].
    pub ordered: Option<OrderedDelivery>,
}

/// Ordered scale-out: events are partitioned by stream id, each partition
/// has one active consumer at a time, and a failing event is retried in
/// place, so no later event of the same stream overtakes it.
///
/// * RabbitMQ: a consistent-hash exchange spreads streams over
///   `partitions` queues; each running instance of the subscription owns a
///   fair share of them (see `payorch-rabbitmq`'s README). Partitions are
///   handled in parallel; within one, deliveries are handled one at a time.
///   A transient failure is retried in place `max_retries` times,
///   `retry_delay` apart, holding back the rest of its partition. Once
///   retries are exhausted (or at once for a rejection) the event is
///   dead-lettered and its stream is *parked*: the instance owning the
///   partition dead-letters the stream's later events too, in order, so
///   they never run ahead of the failed one; operators replay the
///   dead-letter queue in order once the cause is fixed.
/// * In process: a subscription is a single tailer of the store in global
///   order that already retries in place, so the option changes nothing
///   there (a dead-lettered event does not park its stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderedDelivery {
    /// Number of partitions (1..=[`OrderedDelivery::MAX_PARTITIONS`]). More
    /// partitions than instances lets work spread; changing it for an
    /// existing subscription moves streams between partitions, so drain
    /// the subscription first.
    pub partitions: u16,
}

impl OrderedDelivery {
    /// Upper bound of [`OrderedDelivery::partitions`].
    pub const MAX_PARTITIONS: u16 = 1024;
}

impl SubscriptionOptions {
    /// Options with defaults: 5 retries, 1 s apart, prefetch 64.
    pub fn new(
        name: impl Into<String>,
        patterns: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        SubscriptionOptions {
            name: name.into(),
            patterns: patterns.into_iter().map(Into::into).collect(),
            max_retries: 5,
            retry_delay: Duration::from_secs(1),
            prefetch: 64,
            ordered: None,
        }
    }
    /// Ordered scale-out over `partitions` partitions ([`OrderedDelivery`]).
    pub fn with_ordered_delivery(mut self, partitions: u16) -> Self {
        self.ordered = Some(OrderedDelivery { partitions });
        self
    }
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }
    pub fn with_retry_delay(mut self, d: Duration) -> Self {
        self.retry_delay = d;
        self
    }
    pub fn with_prefetch(mut self, n: u16) -> Self {
        self.prefetch = n;
        self
    }

    /// Checks the name and parses the patterns.
    pub fn validate(&self) -> Result<Vec<TopicPattern>, BusError> {
        if self.name.trim().is_empty() {
            return Err(BusError::InvalidOptions("empty subscription name".into()));
        }
        if self.patterns.is_empty() {
            return Err(BusError::InvalidOptions(format!(
                "subscription {:?} has no binding pattern",
                self.name
            )));
        }
        if let Some(o) = self.ordered
            && !(1..=OrderedDelivery::MAX_PARTITIONS).contains(&o.partitions)
        {
            return Err(BusError::InvalidOptions(format!(
                "subscription {:?}: ordered delivery needs 1..={} partitions, got {}",
                self.name,
                OrderedDelivery::MAX_PARTITIONS,
                o.partitions
            )));
        }
        self.patterns
            .iter()
            .map(|p| TopicPattern::parse(p))
            .collect()
    }
}

/// Facts about one delivery, beside the event.
#[derive(Clone, Debug)]
pub struct DeliveryContext {
    /// The message id: the event id. Dedupe on it.
    pub message_id: Uuid,
    pub routing_key: String,
    /// 0 on the first delivery, n on the n-th retry.
    pub attempt: u32,
    /// The transport may have delivered this message before (broker
    /// redelivery flag, or replay after a restart).
    pub redelivered: bool,
}

/// A typed event handler. Return `Ok` only once the event's effects are
/// durable: the message is acknowledged right after.
#[async_trait]
pub trait EventHandler<P>: Send + Sync {
    async fn handle(
        &self,
        event: EventEnvelope<P>,
        ctx: &DeliveryContext,
    ) -> Result<(), HandlerError>;
}

#[async_trait]
impl<P: Send + 'static, H: EventHandler<P> + ?Sized> EventHandler<P> for Arc<H> {
    async fn handle(
        &self,
        event: EventEnvelope<P>,
        ctx: &DeliveryContext,
    ) -> Result<(), HandlerError> {
        (**self).handle(event, ctx).await
    }
}

/// The transport-level handler: gets the JSON body. [`typed`] turns an
/// [`EventHandler`] into one.
#[async_trait]
pub trait RawEventHandler: Send + Sync {
    async fn handle_raw(&self, body: &[u8], ctx: &DeliveryContext) -> Result<(), HandlerError>;
}

struct Typed<P, H> {
    inner: H,
    _payload: PhantomData<fn() -> P>,
}

#[async_trait]
impl<P, H> RawEventHandler for Typed<P, H>
where
    P: DeserializeOwned + Send + 'static,
    H: EventHandler<P>,
{
    async fn handle_raw(&self, body: &[u8], ctx: &DeliveryContext) -> Result<(), HandlerError> {
        let event: EventEnvelope<P> = serde_json::from_slice(body)
            .map_err(|e| HandlerError::Rejected(format!("undecodable event envelope: {e}")))?;
        self.inner.handle(event, ctx).await
    }
}

/// Wraps a typed handler: the body is decoded as `EventEnvelope<P>`; a body
/// that does not decode is [`HandlerError::Rejected`] (dead-lettered).
pub fn typed<P, H>(handler: H) -> Arc<dyn RawEventHandler>
where
    P: DeserializeOwned + Send + 'static,
    H: EventHandler<P> + 'static,
{
    Arc::new(Typed {
        inner: handler,
        _payload: PhantomData,
    })
}

/// A running subscription. Dropping it leaves the task running; call
/// [`Subscription::stop`] to end it.
#[derive(Debug)]
pub struct Subscription {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Subscription {
    /// For transports: `task` must end soon after `stop` turns true.
    pub fn new(stop: watch::Sender<bool>, task: JoinHandle<()>) -> Self {
        Subscription { stop, task }
    }
    /// Asks the task to stop after the current delivery and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
    /// Kills the task at once (simulates a crash: unacked work is redelivered).
    pub fn abort(&self) {
        self.task.abort();
    }
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// A transport that runs subscriptions.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Starts a subscription (declaring what it needs). Errors are setup
    /// errors; later failures are retried inside.
    async fn subscribe_raw(
        &self,
        options: SubscriptionOptions,
        handler: Arc<dyn RawEventHandler>,
    ) -> Result<Subscription, BusError>;
}

/// Subscribes a typed handler: the same call for every transport.
pub async fn subscribe<P, H, B>(
    bus: &B,
    options: SubscriptionOptions,
    handler: H,
) -> Result<Subscription, BusError>
where
    B: EventBus + ?Sized,
    P: DeserializeOwned + Send + 'static,
    H: EventHandler<P> + 'static,
{
    bus.subscribe_raw(options, typed::<P, H>(handler)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(merchant: Option<&str>) -> RecordedEvent {
        RecordedEvent {
            global_position: Position(7),
            stream_id: StreamId::new("order-1"),
            stream_type: "order".into(),
            version: Version(2),
            event_id: Uuid::now_v7(),
            event_type: "captured".into(),
            schema_version: 1,
            payload: RawValue::from_string(r#"{"amount":{"minor":100}}"#.into())
                .expect("valid json"),
            metadata: EventMetadata {
                merchant_id: merchant.map(str::to_owned),
                ..Default::default()
            },
            recorded_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn routing_keys() {
        assert_eq!(routing_key(&event(Some("183566"))), "order.captured.183566");
        assert_eq!(routing_key(&event(None)), "order.captured.unknown");
        assert_eq!(routing_key(&event(Some("a.b*#"))), "order.captured.a_b__");
        assert_eq!(routing_key_of("", "x.y", Some("")), "unknown.x_y.unknown");
    }

    #[test]
    fn envelope_round_trips() {
        let e = event(Some("m1"));
        let body = envelope_json(&e).expect("encodes");
        let back: EventEnvelope<serde_json::Value> =
            serde_json::from_slice(&body).expect("decodes");
        assert_eq!(back.event_id, e.event_id);
        assert_eq!(back.global_position, Position(7));
        assert_eq!(back.version, Version(2));
        assert_eq!(back.metadata.merchant_id.as_deref(), Some("m1"));
        assert_eq!(back.payload["amount"]["minor"], 100);
        let owned = EventEnvelope::from_recorded(&e);
        assert_eq!(
            serde_json::to_vec(&owned).expect("encodes"),
            body,
            "borrowed and owned envelopes serialize the same"
        );
    }

    #[test]
    fn options_validate() {
        assert!(
            SubscriptionOptions::new("a", ["order.#"])
                .validate()
                .is_ok()
        );
        assert!(SubscriptionOptions::new("", ["#"]).validate().is_err());
        assert!(
            SubscriptionOptions::new("a", Vec::<String>::new())
                .validate()
                .is_err()
        );
        assert!(SubscriptionOptions::new("a", ["a..b"]).validate().is_err());
        assert!(
            SubscriptionOptions::new("a", ["#"])
                .with_ordered_delivery(0)
                .validate()
                .is_err()
        );
        assert!(
            SubscriptionOptions::new("a", ["#"])
                .with_ordered_delivery(8)
                .validate()
                .is_ok()
        );
    }
}
