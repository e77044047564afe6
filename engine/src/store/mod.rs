//! Storage ports: the event store, idempotency records and checkpoints.
//!
//! The events table is the single source of truth about money. These traits
//! say what any store must guarantee; [`memory`] is the reference
//! implementation and `testkit` (feature) the conformance suite that proves an
//! adapter keeps the same promises:
//!
//! * `append` is atomic for its batch and checks the expected version; a lost
//!   race comes back as [`StoreError::Conflict`] with expected and actual.
//! * Re-appending a batch whose event ids are already stored is idempotent:
//!   the stored result comes back, nothing is duplicated. The same event id
//!   with a different payload is [`StoreError::EventIdReused`].
//! * `read_all` returns events in global position order and never skips a
//!   committed event, even when a higher position commits before a lower one.
//! * An idempotency write handed to `append` commits in the same
//!   transaction as the events: [`IdempotencyWrite::Begin`] inserts an
//!   in-progress record (the key taken is [`StoreError::IdempotencyKeyTaken`]
//!   and nothing is written), [`IdempotencyWrite::Complete`] stores the
//!   response of an in-progress record (a record already completed keeps
//!   its response; the events are written either way),
//!   [`IdempotencyWrite::Release`] deletes an in-progress record (a
//!   completed one stands; the events are written either way).

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

pub mod memory;
#[cfg(feature = "testkit")]
pub mod testkit;

/// Identifies one stream (one aggregate instance), e.g. `order-0193...`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn new(id: impl Into<String>) -> Self {
        StreamId(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

/// Number of events in a stream; the version of an event is its 1-based
/// index in its stream. `Version(0)` means "no events yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    pub const NONE: Version = Version(0);
    pub fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Global position of an event in the whole store (1-based, increasing in
/// commit-safe order). `Position(0)` means "before the first event".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    pub const START: Position = Position(0);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The version a writer expects a stream to be at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check (use only for streams with a single writer).
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be exactly at this version (`Exact(Version(0))` is the
    /// same as `NoStream`).
    Exact(Version),
}

/// Who and what caused an event; stored beside the payload. Defined in
/// payorch-schemas because it is part of the published envelope.
pub use payorch_schemas::events::EventMetadata;

/// An event to append. The id is chosen by the writer (uuid v7) so that a
/// retried append of the same batch is recognised as the same.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Box<RawValue>,
    pub metadata: EventMetadata,
    /// When the command that produced it was decided (from the `Clock`).
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

/// A stored event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub global_position: Position,
    pub stream_id: StreamId,
    pub stream_type: String,
    pub version: Version,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Box<RawValue>,
    pub metadata: EventMetadata,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

/// An idempotency record: the result of a merchant command keyed by
/// (scope, key). `fingerprint` identifies the request (SHA-256 hex of its
/// canonical form); the same key with another fingerprint is a conflict the
/// caller reports as such. A record is begun (in progress, no response)
/// with the command's first events and completed with its response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// Usually the merchant id: keys are unique per merchant.
    pub scope: String,
    pub key: String,
    pub fingerprint: String,
    /// The stored response, returned as is to a repeated request; `None`
    /// while the request that began the record is in progress.
    pub response: Option<Box<RawValue>>,
    pub stream_id: Option<StreamId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl IdempotencyRecord {
    /// Whether the record holds its response.
    pub fn is_completed(&self) -> bool {
        self.response.is_some()
    }
}

/// The response that completes an in-progress idempotency record.
#[derive(Clone, Debug)]
pub struct IdempotencyCompletion {
    pub scope: String,
    pub key: String,
    pub response: Box<RawValue>,
}

/// The idempotency write committed with an append.
#[derive(Clone, Debug)]
pub enum IdempotencyWrite {
    /// Insert this record (normally in progress: `response: None`); the
    /// whole append fails with `IdempotencyKeyTaken` if the key exists.
    Begin(IdempotencyRecord),
    /// Store the response of the in-progress record (scope, key); a
    /// missing or already completed record is left as it is.
    Complete(IdempotencyCompletion),
    /// Delete the in-progress record (scope, key) with the events, so the
    /// key can execute again: the command's PayKKa call provably never
    /// left (its not-sent decline is these events). A missing or
    /// completed record is left as it is, as by
    /// [`IdempotencyStore::release_idempotency`].
    Release { scope: String, key: String },
}

/// What `append` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The stream's version after the batch (its last event's version).
    pub version: Version,
    /// Global position of the batch's first and last events.
    pub first_position: Position,
    pub last_position: Position,
    /// True when every event id was already stored (idempotent re-append):
    /// nothing was written and the stored positions are returned.
    pub already_stored: bool,
}

/// One append: a batch of events for one stream, plus an optional
/// idempotency write committed atomically with it.
#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub stream_id: StreamId,
    /// `order`, `recurring_agreement`, `checkout_session`, ...
    pub stream_type: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub idempotency: Option<IdempotencyWrite>,
}

/// Errors from a store. Domain-level problems (`Conflict`, `EventIdReused`,
/// `IdempotencyKeyTaken`) are distinct from infrastructure ones
/// (`Unavailable`, `Corrupt`) so callers can match on them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency: another writer got there first. Reload the
    /// stream and decide again.
    #[error("stream {stream} expected at {expected:?} but is at version {actual}")]
    Conflict {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: Version,
    },
    /// An event id is already stored with a different payload, type or
    /// stream: a bug in the caller (ids must identify one event). Do not retry.
    #[error("event id {event_id} is already stored with different content")]
    EventIdReused { event_id: Uuid },
    /// An idempotency record with this (scope, key) exists. The caller reads
    /// it and compares fingerprints.
    #[error("idempotency key {key:?} of {scope:?} is already used")]
    IdempotencyKeyTaken { scope: String, key: String },
    /// The request itself is invalid (empty batch, bad name). Fix the caller.
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The backing store could not be reached or failed transiently; the
    /// operation may be retried. Page someone if it persists.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (bad JSON, impossible values).
    /// Page someone; do not retry.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// The event store port.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends a batch atomically after checking `expected`. An empty batch
    /// is `Invalid`.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// Events of one stream with version >= `from` (use `Version(1)` for
    /// all), in version order, at most `limit`.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Events with global position > `after`, in position order, at most
    /// `limit`. Never returns an event while a lower position may still
    /// commit: a caller that saves the last returned position as its
    /// checkpoint never skips an event.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Current version of a stream (`Version(0)` when it has no events).
    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError>;

    /// Stream ids of a type with their current version, for scans by the
    /// reconciler and replay tools, ordered by stream id, after `after`.
    async fn list_streams(
        &self,
        stream_type: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, Version)>, StoreError>;
}

/// Idempotency records for merchant commands.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    async fn get_idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Stores a record on its own (a command that appends no events: a
    /// pass-through call, a repeat of what the state already shows). An
    /// existing (scope, key) is `IdempotencyKeyTaken`.
    async fn put_idempotency(&self, record: IdempotencyRecord) -> Result<(), StoreError>;
    /// Completes an in-progress record on its own (the outcome appended
    /// nothing). `Ok(true)`: this call stored the response; `Ok(false)`:
    /// the record was already completed (its response stands) or is
    /// missing.
    async fn complete_idempotency(
        &self,
        completion: IdempotencyCompletion,
    ) -> Result<bool, StoreError>;
    /// Deletes an in-progress record (no response yet) so that the key can
    /// execute again: the command's PayKKa call provably never left.
    /// `Ok(true)`: deleted; `Ok(false)`: missing or completed (a completed
    /// record always stands).
    async fn release_idempotency(&self, scope: &str, key: &str) -> Result<bool, StoreError>;
}

/// Named checkpoints of subscribers, projections and the relay.
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError>;
    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError>;
}

/// The current time, injected so that the pure core never reads a clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
