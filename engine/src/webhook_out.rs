//! The merchant webhook delivery log port: every HTTP attempt to deliver an
//! event to a merchant's endpoint (issue 15 point 6), the state of each
//! delivery, and the queue of manual redeliveries.
//!
//! payorch-webhooks' dispatcher writes it (one [`WebhookDeliveryLog::record_attempt`]
//! per attempt: one statement on Postgres, one transaction on SQLite); the
//! merchant API (`GET /v1/webhook-endpoints/{id}/deliveries`, `POST
//! .../redeliver`) and `payorch webhooks` read it and queue redeliveries;
//! the dispatcher picks queued redeliveries up on its next pass
//! ([`WebhookDeliveryLog::queued_redeliveries`]). Implemented by the
//! Postgres and SQLite stores (migration 0006) and by
//! [`InMemoryDeliveryLog`]; `testkit` (feature) holds the conformance
//! suite every implementation runs.
//!
//! ## A delivery
//!
//! One row per (endpoint, event): created by its first attempt, then
//! [`DeliveryState::FailedRetrying`] after a failed attempt (with the time
//! of the next one), [`DeliveryState::Delivered`] after a 2xx, or
//! [`DeliveryState::GivenUp`] once retries ran out. Each attempt keeps its
//! number, time, HTTP status or error class, latency and whether it was a
//! manual redelivery; no response body is kept (rows stay small).
//!
//! ## Redelivery
//!
//! A settled delivery (delivered or given up) can be queued again
//! ([`WebhookDeliveryLog::request_redelivery`]): the same event body, newly
//! signed, sent once more and recorded as a manual attempt. A delivery the
//! dispatcher is still retrying is refused with its state (it will be
//! sent anyway); asking twice while one is queued keeps the one request.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::command::idempotency::{Key, Resolves, fingerprint_of};
use crate::command::{CommandContext, Engine, EngineError};
use crate::store::{Position, StoreError};

#[cfg(feature = "testkit")]
pub mod testkit;

/// A merchant's webhook endpoint as the API shows it: configuration, the
/// signing secret left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub id: String,
    pub merchant_id: String,
    pub url: String,
    /// Event filters (`order.*`, `order.captured`, `*`); empty: every event.
    pub events: Vec<String>,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not attempted yet (only seen in memory: a row exists once attempted).
    Pending,
    /// A 2xx answer came back.
    Delivered,
    /// The last attempt failed; another follows at `next_attempt_at`.
    FailedRetrying,
    /// Retries ran out (a day by default); redeliver by hand.
    GivenUp,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::FailedRetrying,
        DeliveryState::GivenUp,
    ];

    /// snake_case, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::FailedRetrying => "failed_retrying",
            DeliveryState::GivenUp => "given_up",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Delivered or given up: nothing more happens without a redelivery.
    pub fn is_settled(self) -> bool {
        matches!(self, DeliveryState::Delivered | DeliveryState::GivenUp)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt got no HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// No answer within the delivery timeout.
    Timeout,
    /// The connection could not be made (refused, DNS, TLS).
    Connect,
    /// Anything else (connection reset mid-request, bad response).
    Other,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorClass> {
        [ErrorClass::Timeout, ErrorClass::Connect, ErrorClass::Other]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// One HTTP attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based per delivery, assigned by the log.
    pub number: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// HTTP status, when one came back.
    pub status: Option<u16>,
    /// Why no status came back.
    pub error: Option<ErrorClass>,
    pub latency_ms: u64,
    /// A manual redelivery (API or CLI), not an automatic (re)try.
    pub manual: bool,
}

impl Attempt {
    /// Whether this attempt delivered (2xx).
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Which event goes to which endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTarget {
    pub endpoint_id: String,
    pub merchant_id: String,
    pub event_id: Uuid,
    pub stream_id: String,
    pub event_type: String,
    /// The event's global position (the body is read back from the store).
    pub position: u64,
}

/// One delivery (an event to an endpoint) as logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    #[serde(flatten)]
    pub target: DeliveryTarget,
    pub state: DeliveryState,
    /// Attempts made (automatic and manual).
    pub attempt_count: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub first_attempt_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_attempt_at: OffsetDateTime,
    /// When the dispatcher tries again (`failed_retrying` only).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// A manual redelivery is queued (since then).
    #[serde(with = "time::serde::rfc3339::option")]
    pub redelivery_requested_at: Option<OffsetDateTime>,
    /// Oldest first. Filled by [`WebhookDeliveryLog::delivery`] and
    /// [`WebhookDeliveryLog::list`]; empty from the dispatcher's queries.
    pub attempts: Vec<Attempt>,
}

/// One attempt to record with the delivery's state after it.
#[derive(Clone, Debug)]
pub struct AttemptWrite {
    pub target: DeliveryTarget,
    pub at: OffsetDateTime,
    pub status: Option<u16>,
    pub error: Option<ErrorClass>,
    pub latency_ms: u64,
    pub manual: bool,
    /// The delivery's state after this attempt.
    pub state: DeliveryState,
    pub next_attempt_at: Option<OffsetDateTime>,
    /// For a manual attempt: the `redelivery_requested_at` it answers; the
    /// request is cleared if it is still that one (a newer request stays).
    pub answers_request: Option<OffsetDateTime>,
}

/// A page query of one endpoint's deliveries, newest event first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub endpoint_id: String,
    pub limit: usize,
    /// The event id of the last delivery of the previous page.
    pub starting_after: Option<Uuid>,
    pub state: Option<DeliveryState>,
    pub event_id: Option<Uuid>,
}

impl DeliveryQuery {
    pub fn new(endpoint_id: impl Into<String>, limit: usize) -> Self {
        DeliveryQuery {
            endpoint_id: endpoint_id.into(),
            limit,
            starting_after: None,
            state: None,
            event_id: None,
        }
    }
}

/// A page of deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    pub has_more: bool,
}

/// What [`WebhookDeliveryLog::request_redelivery`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedeliveryRequest {
    /// Queued (or already queued): the delivery with its request time.
    Queued(Box<Delivery>),
    /// No delivery of this event to this endpoint was ever attempted.
    NotFound,
    /// Still being retried automatically: nothing to queue.
    Busy(DeliveryState),
}

/// Errors of a page query.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryListError {
    /// `starting_after` is no delivery of this endpoint (fix the request).
    #[error("{0} is not a delivery of this endpoint")]
    UnknownCursor(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The delivery log port (see the module docs).
#[async_trait]
pub trait WebhookDeliveryLog: Send + Sync {
    /// Records one attempt and the delivery's state after it, atomically
    /// (creating the delivery on its first attempt). Returns the attempt's
    /// number.
    async fn record_attempt(&self, write: &AttemptWrite) -> Result<u32, StoreError>;

    /// One delivery with its attempts.
    async fn delivery(
        &self,
        endpoint_id: &str,
        event_id: Uuid,
    ) -> Result<Option<Delivery>, StoreError>;

    /// A page of an endpoint's deliveries, newest event (highest position)
    /// first, each with its attempts; at most `limit`.
    async fn list(&self, query: &DeliveryQuery) -> Result<DeliveryPage, DeliveryListError>;

    /// Queues a manual redelivery of a settled delivery, at `now`.
    async fn request_redelivery(
        &self,
        endpoint_id: &str,
        event_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<RedeliveryRequest, StoreError>;

    /// Deliveries with a queued redelivery, oldest request first, at most
    /// `limit` (without attempts).
    async fn queued_redeliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError>;

    /// Deliveries of events with position in `(after, upto]`, every
    /// endpoint, without attempts: a restarted dispatcher learns what it
    /// already delivered, or was retrying, past its checkpoint.
    async fn deliveries_between(
        &self,
        after: Position,
        upto: Position,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// The highest event position in the log (`None` when empty).
    async fn last_position(&self) -> Result<Option<Position>, StoreError>;
}

/// In-memory [`WebhookDeliveryLog`]: the reference implementation, for
/// tests and for a store without a log.
#[derive(Debug, Default)]
pub struct InMemoryDeliveryLog {
    rows: Mutex<Rows>,
}

/// Deliveries by (endpoint, event).
type Rows = BTreeMap<(String, Uuid), Delivery>;

impl InMemoryDeliveryLog {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Rows>, StoreError> {
        self.rows
            .lock()
            .map_err(|_| StoreError::Unavailable("delivery log mutex poisoned".into()))
    }
}

fn without_attempts(d: &Delivery) -> Delivery {
    Delivery {
        attempts: Vec::new(),
        ..d.clone()
    }
}

#[async_trait]
impl WebhookDeliveryLog for InMemoryDeliveryLog {
    async fn record_attempt(&self, w: &AttemptWrite) -> Result<u32, StoreError> {
        let mut rows = self.lock()?;
        let key = (w.target.endpoint_id.clone(), w.target.event_id);
        let d = rows.entry(key).or_insert_with(|| Delivery {
            target: w.target.clone(),
            state: w.state,
            attempt_count: 0,
            first_attempt_at: w.at,
            last_attempt_at: w.at,
            next_attempt_at: None,
            redelivery_requested_at: None,
            attempts: Vec::new(),
        });
        d.attempt_count += 1;
        d.state = w.state;
        d.last_attempt_at = w.at;
        d.next_attempt_at = w.next_attempt_at;
        if w.answers_request.is_some() && d.redelivery_requested_at == w.answers_request {
            d.redelivery_requested_at = None;
        }
        d.attempts.push(Attempt {
            number: d.attempt_count,
            at: w.at,
            status: w.status,
            error: w.error,
            latency_ms: w.latency_ms,
            manual: w.manual,
        });
        Ok(d.attempt_count)
    }

    async fn delivery(
        &self,
        endpoint_id: &str,
        event_id: Uuid,
    ) -> Result<Option<Delivery>, StoreError> {
        Ok(self
            .lock()?
            .get(&(endpoint_id.to_owned(), event_id))
            .cloned())
    }

    async fn list(&self, q: &DeliveryQuery) -> Result<DeliveryPage, DeliveryListError> {
        let rows = self.lock()?;
        let below = match q.starting_after {
            Some(c) => Some(
                rows.get(&(q.endpoint_id.clone(), c))
                    .map(|d| d.target.position)
                    .ok_or(DeliveryListError::UnknownCursor(c))?,
            ),
            None => None,
        };
        let mut all: Vec<&Delivery> = rows
            .values()
            .filter(|d| d.target.endpoint_id == q.endpoint_id)
            .filter(|d| below.is_none_or(|b| d.target.position < b))
            .filter(|d| q.state.is_none_or(|s| d.state == s))
            .filter(|d| q.event_id.is_none_or(|e| d.target.event_id == e))
            .collect();
        all.sort_by_key(|d| std::cmp::Reverse(d.target.position));
        let has_more = all.len() > q.limit;
        Ok(DeliveryPage {
            deliveries: all.into_iter().take(q.limit).cloned().collect(),
            has_more,
        })
    }

    async fn request_redelivery(
        &self,
        endpoint_id: &str,
        event_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<RedeliveryRequest, StoreError> {
        let mut rows = self.lock()?;
        let Some(d) = rows.get_mut(&(endpoint_id.to_owned(), event_id)) else {
            return Ok(RedeliveryRequest::NotFound);
        };
        if !d.state.is_settled() {
            return Ok(RedeliveryRequest::Busy(d.state));
        }
        if d.redelivery_requested_at.is_none() {
            d.redelivery_requested_at = Some(now);
        }
        Ok(RedeliveryRequest::Queued(Box::new(d.clone())))
    }

    async fn queued_redeliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let rows = self.lock()?;
        let mut q: Vec<&Delivery> = rows
            .values()
            .filter(|d| d.redelivery_requested_at.is_some())
            .collect();
        q.sort_by_key(|d| (d.redelivery_requested_at, d.target.position));
        Ok(q.into_iter().take(limit).map(without_attempts).collect())
    }

    async fn deliveries_between(
        &self,
        after: Position,
        upto: Position,
    ) -> Result<Vec<Delivery>, StoreError> {
        Ok(self
            .lock()?
            .values()
            .filter(|d| d.target.position > after.0 && d.target.position <= upto.0)
            .map(without_attempts)
            .collect())
    }

    async fn last_position(&self) -> Result<Option<Position>, StoreError> {
        Ok(self
            .lock()?
            .values()
            .map(|d| Position(d.target.position))
            .max())
    }
}

/// What a merchant's redelivery request answers.
#[derive(Debug, thiserror::Error)]
pub enum RedeliveryError {
    /// No such endpoint of this merchant, or no delivery of this event to
    /// it (HTTP 404).
    #[error("no delivery of event {event_id} to webhook endpoint {endpoint_id}")]
    NotFound { endpoint_id: String, event_id: Uuid },
    /// The delivery is still retried automatically (HTTP 409 naming it).
    #[error("the delivery is {0}: it is still retried automatically")]
    Busy(DeliveryState),
    /// Idempotency or store failure (mapped like any other command's).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for RedeliveryError {
    fn from(e: StoreError) -> Self {
        RedeliveryError::Engine(EngineError::Store(e))
    }
}

impl Engine {
    /// Queues a manual redelivery of `event_id` to the merchant's endpoint
    /// `endpoint_id` under the request's idempotency key. The caller checks
    /// that the endpoint belongs to `ctx`'s merchant (the endpoints are
    /// configuration, not events).
    ///
    /// The key's record is stored once the request is queued (queueing is
    /// itself idempotent: a queued request stays the one request), so a
    /// crash in between leaves the key free and a retry queues the same
    /// request; a refusal (not found, busy) stores nothing. A replay gets
    /// the first answer; the key with another endpoint or event is
    /// [`EngineError::IdempotencyConflict`].
    pub async fn request_webhook_redelivery(
        &self,
        ctx: &CommandContext,
        log: &dyn WebhookDeliveryLog,
        endpoint_id: &str,
        event_id: Uuid,
    ) -> Result<Delivery, RedeliveryError> {
        let key = Key::of(
            ctx,
            fingerprint_of("webhook_redelivery", &(endpoint_id, event_id)),
        );
        if let Some(k) = &key
            && self
                .idempotency
                .get_idempotency(&k.scope, &k.key)
                .await?
                .is_some()
        {
            return Ok(self.replay(ctx, k, Resolves::Nothing).await?);
        }
        match log
            .request_redelivery(endpoint_id, event_id, self.clock.now())
            .await?
        {
            RedeliveryRequest::Queued(d) => Ok(self
                .record_alone(ctx, key.as_ref(), None, Resolves::Nothing, *d)
                .await?),
            RedeliveryRequest::NotFound => Err(RedeliveryError::NotFound {
                endpoint_id: endpoint_id.to_owned(),
                event_id,
            }),
            RedeliveryRequest::Busy(s) => Err(RedeliveryError::Busy(s)),
        }
    }
}
