//! The open-work index: which streams the reconciler must look at, found
//! without reading history (ARCHITECTURE.md §2, "Reconciler").
//!
//! A stream has *open work* while PayKKa owes us an answer or a shopper may
//! still pay: an order with a call `*Requested` / `*OutcomeUnknown` or a 3DS
//! challenge, an agreement whose cancel is requested or unknown, a checkout
//! session whose create is requested or unknown or that is open on PayKKa's
//! page. [`open_work_of`] decides that from a stream's events (the same
//! rules the reconciler applies when it looks at the stream). One rule
//! looks beyond the stream: an agreement whose new `agreement_charged`
//! names an order that has no events yet is open too (a crash between the
//! charge and the order's placement; the projector checks the order
//! stream's version, and the reconciler removes the row once every charge
//! has its order).
//!
//! The index is a *checkpointed projection*: [`OpenWorkProjector`] tails
//! [`EventStore::read_all`](crate::store::EventStore::read_all) from its
//! checkpoint, folds each stream the new events touched (once per batch)
//! and upserts or removes its row in an [`OpenWorkIndex`]. It never touches
//! the append path, so it costs writers nothing; it can be rebuilt from
//! position 0 ([`OpenWorkProjector::rebuild`]). The reconciler runs it
//! before each pass, so a pass costs O(new events + open work), not
//! O(history).
//!
//! Ports and implementations:
//! * [`OpenWorkIndex`]: the port; [`memory::InMemoryOpenWorkIndex`] is the
//!   reference implementation; SQLite and Postgres keep an `open_work`
//!   table (migration 0004).
//! * `testkit` (feature): the conformance cases every implementation runs.

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;

use payorch_schemas::events::{
    AGREEMENT_STREAM_TYPE, AgreementEvent, CHECKOUT_STREAM_TYPE, CheckoutEvent, ORDER_STREAM_TYPE,
    OrderEvent,
};

use crate::agreement::{self, AgreementPhase, AgreementState};
use crate::checkout::{self, CheckoutPhase, CheckoutState};
use crate::codec::{self, CodecError};
use crate::order::{self, OrderState, Phase};
use crate::store::{RecordedEvent, StoreError, StreamId};

pub mod memory;
mod projector;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use memory::InMemoryOpenWorkIndex;
pub use projector::{CatchUp, OPEN_WORK_CHECKPOINT, OpenWorkProjector};

/// What kind of work is open on a stream; one kind per stream type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkKind {
    /// An order with a PayKKa call unanswered (initiate, capture, void,
    /// refund) or a 3DS challenge pending.
    OrderCall,
    /// An agreement whose cancel is requested or its outcome unknown, or
    /// with a charge whose order is not placed yet (see the projector).
    AgreementCancel,
    /// A checkout session whose create is requested or unknown, or that is
    /// open (the shopper may pay).
    CheckoutSession,
}

impl WorkKind {
    pub const ALL: [WorkKind; 3] = [
        WorkKind::OrderCall,
        WorkKind::AgreementCancel,
        WorkKind::CheckoutSession,
    ];

    /// The stored name (`order_call`, `agreement_cancel`, `checkout_session`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkKind::OrderCall => "order_call",
            WorkKind::AgreementCancel => "agreement_cancel",
            WorkKind::CheckoutSession => "checkout_session",
        }
    }

    /// The inverse of [`WorkKind::as_str`].
    pub fn parse(s: &str) -> Option<WorkKind> {
        WorkKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind of work streams of `stream_type` can have, if any.
    pub fn of_stream_type(stream_type: &str) -> Option<WorkKind> {
        match stream_type {
            ORDER_STREAM_TYPE => Some(WorkKind::OrderCall),
            AGREEMENT_STREAM_TYPE => Some(WorkKind::AgreementCancel),
            CHECKOUT_STREAM_TYPE => Some(WorkKind::CheckoutSession),
            _ => None,
        }
    }
}

impl fmt::Display for WorkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the index: a stream with open work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenItem {
    pub stream_id: StreamId,
    pub kind: WorkKind,
    /// Since when the work is open: for an order, when its last call was
    /// requested; for an agreement, when the cancel was requested; for a
    /// checkout session, when it was requested.
    pub since: OffsetDateTime,
    /// When the stream's last event (as of the projection) was recorded.
    /// The reconciler leaves a stream alone while this is younger than its
    /// threshold (the synchronous answer or the webhook may still come).
    pub touched_at: OffsetDateTime,
}

/// The open-work index port.
///
/// Promises (checked by the `testkit` cases):
/// * [`apply`](OpenWorkIndex::apply) is atomic: upserts replace a stream's
///   row (one row per stream), removals of absent streams are no-ops, and a
///   stream in both lists ends removed.
/// * [`list`](OpenWorkIndex::list) returns rows of one kind ordered by
///   stream id, after `after`, at most `limit`, only those touched at or
///   before `touched_before` when given. It reads the index, never history.
#[async_trait]
pub trait OpenWorkIndex: Send + Sync {
    /// Upserts `open` rows and removes the rows of `closed` streams, in one
    /// transaction.
    async fn apply(&self, open: &[OpenItem], closed: &[StreamId]) -> Result<(), StoreError>;

    /// Open items of `kind`; see the trait docs.
    async fn list(
        &self,
        kind: WorkKind,
        touched_before: Option<OffsetDateTime>,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<OpenItem>, StoreError>;

    /// How many streams have open work of `kind`.
    async fn count(&self, kind: WorkKind) -> Result<u64, StoreError>;

    /// Removes every row (before a rebuild from position 0).
    async fn clear(&self) -> Result<(), StoreError>;
}

/// What [`open_work_of`] found: the stream's open work, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenWork {
    pub kind: WorkKind,
    pub since: OffsetDateTime,
}

/// Whether a stream of `stream_type` whose events (version 1 onwards, in
/// order) are `events` has open work, and since when. `Ok(None)`: nothing
/// open, or a stream type without reconcilable work. The same rules as the
/// reconciler's (see [`crate::reconciler`]).
pub fn open_work_of(
    stream_type: &str,
    events: &[RecordedEvent],
) -> Result<Option<OpenWork>, CodecError> {
    let Some(kind) = WorkKind::of_stream_type(stream_type) else {
        return Ok(None);
    };
    let since = match kind {
        WorkKind::OrderCall => order_open_since(events)?,
        WorkKind::AgreementCancel => agreement_open_since(events)?,
        WorkKind::CheckoutSession => checkout_open_since(events)?,
    };
    Ok(since.map(|since| OpenWork { kind, since }))
}

/// An order is open while a call is unanswered or a 3DS challenge pends;
/// since its last `*Requested` (or placement/challenge) event.
fn order_open_since(events: &[RecordedEvent]) -> Result<Option<OffsetDateTime>, CodecError> {
    let mut state = OrderState::default();
    let mut requested_at = None;
    for e in events {
        let ev: OrderEvent = codec::decode_recorded(e)?;
        if matches!(
            ev,
            OrderEvent::AuthorisationRequested(_)
                | OrderEvent::PaymentPlaced(_)
                | OrderEvent::CaptureRequested(_)
                | OrderEvent::VoidRequested(_)
                | OrderEvent::RefundRequested(_)
                | OrderEvent::ChallengeRequired(_)
        ) {
            requested_at = Some(e.recorded_at);
        }
        state = order::evolve(state, &ev);
    }
    let open = state.has_open_call()
        || state.awaits_release()
        || state.phase() == Phase::ChallengeRequired;
    Ok(match (open, state.order_id(), events.first()) {
        (true, Some(_), Some(first)) => Some(requested_at.unwrap_or(first.recorded_at)),
        _ => None,
    })
}

/// An agreement is open while its cancel is requested or unknown; since the
/// event that started the cancel.
fn agreement_open_since(events: &[RecordedEvent]) -> Result<Option<OffsetDateTime>, CodecError> {
    let mut state = AgreementState::default();
    let mut since = None;
    for e in events {
        let ev: AgreementEvent = codec::decode_recorded(e)?;
        let before = state.phase;
        state = agreement::evolve(state, &ev);
        if state.phase == AgreementPhase::Cancelling && before != AgreementPhase::Cancelling {
            since = Some(e.recorded_at);
        }
    }
    Ok(match (state.phase, state.created.is_some(), since) {
        (AgreementPhase::Cancelling, true, Some(t)) => Some(t),
        _ => None,
    })
}

/// A checkout session is open while its create is requested or unknown, or
/// while it is open on PayKKa's page; since its first event.
fn checkout_open_since(events: &[RecordedEvent]) -> Result<Option<OffsetDateTime>, CodecError> {
    let mut state = CheckoutState::default();
    for e in events {
        let ev: CheckoutEvent = codec::decode_recorded(e)?;
        state = checkout::evolve(state, &ev);
    }
    let open = matches!(state.phase, CheckoutPhase::Requested | CheckoutPhase::Open);
    Ok(match (open, state.requested.is_some(), events.first()) {
        (true, true, Some(first)) => Some(first.recorded_at),
        _ => None,
    })
}

/// The index row for a stream, from its events: `Ok(None)` when nothing is
/// open (the row must go).
pub fn open_item_of(
    stream_id: &StreamId,
    stream_type: &str,
    events: &[RecordedEvent],
) -> Result<Option<OpenItem>, CodecError> {
    let Some(last) = events.last() else {
        return Ok(None);
    };
    Ok(open_work_of(stream_type, events)?.map(|w| OpenItem {
        stream_id: stream_id.clone(),
        kind: w.kind,
        since: w.since,
        touched_at: last.recorded_at,
    }))
}
