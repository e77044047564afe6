//! Replay: fold any stream to a version or a point in time, explain a
//! history event by event, and run projections over `read_all` with a
//! checkpoint (rebuildable from position 0).

use serde::Serialize;
use time::OffsetDateTime;

use payorch_schemas::events::OrderEvent;

use crate::aggregate::{Aggregate, OrderAggregate};
use crate::codec;
use crate::order::{self, OrderState, Phase};
use crate::read::{ReadError, read_whole_stream};
use crate::store::{
    CheckpointStore, EventStore, Position, RecordedEvent, StoreError, StreamId, Version,
};
use crate::view::OrderView;

/// The state of `stream` after its first `version` events.
pub async fn fold_to_version<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamId,
    version: Version,
) -> Result<A::State, ReadError> {
    let mut state = A::State::default();
    let mut next = Version(1);
    while next <= version {
        let want = usize::try_from(version.0 - next.0 + 1)
            .unwrap_or(usize::MAX)
            .min(1024);
        let batch = store.read_stream(stream, next, want).await?;
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            state = A::evolve(state, &codec::decode_recorded(e)?);
            next = e.version.next();
        }
    }
    Ok(state)
}

/// The state of `stream` as it was at `at` (events recorded at or before).
pub async fn fold_to_time<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamId,
    at: OffsetDateTime,
) -> Result<A::State, ReadError> {
    let mut state = A::State::default();
    for e in read_whole_stream(store, stream).await? {
        if e.recorded_at > at {
            break;
        }
        state = A::evolve(state, &codec::decode_recorded(&e)?);
    }
    Ok(state)
}

/// One line of [`explain`]: an event and the order right after it.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainStep {
    pub version: u64,
    pub position: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    pub event_type: String,
    /// The stored schema version (before upcasting).
    pub schema_version: u32,
    pub event: OrderEvent,
    pub phase_after: Phase,
    /// `None` only before placement.
    pub order_after: Option<OrderView>,
}

/// Every event of an order stream with the state after it: the audit and
/// debugging view ("why is this order Captured?").
pub async fn explain(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<Vec<ExplainStep>, ReadError> {
    let mut state = OrderState::default();
    let mut out = Vec::new();
    for e in read_whole_stream(store, stream).await? {
        let event: OrderEvent = codec::decode_recorded(&e)?;
        state = order::evolve(state, &event);
        out.push(ExplainStep {
            version: e.version.0,
            position: e.global_position.0,
            recorded_at: e.recorded_at,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            event,
            phase_after: state.phase(),
            order_after: OrderView::from_state(&state),
        });
    }
    Ok(out)
}

/// Convenience: the order state at a version.
pub async fn order_at_version(
    store: &dyn EventStore,
    stream: &StreamId,
    version: Version,
) -> Result<OrderState, ReadError> {
    fold_to_version::<OrderAggregate>(store, stream, version).await
}

/// Why a projection failed to apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The store failed; retry later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The projection refused the event (corrupt data or a bug); the
    /// checkpoint stays before it.
    #[error("projection {name} failed at position {position}: {message}")]
    Apply {
        name: String,
        position: u64,
        message: String,
    },
}

/// A read model fed from `read_all` in global order.
pub trait Projection: Send {
    /// Checkpoint name (unique per projection).
    fn name(&self) -> &str;
    /// Applies one event; must be deterministic.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), String>;
    /// Forgets everything (before a rebuild from position 0).
    fn reset(&mut self);
}

/// Runs projections with a checkpoint saved after every batch.
pub struct ProjectionRunner<'a> {
    store: &'a dyn EventStore,
    checkpoints: &'a dyn CheckpointStore,
    batch: usize,
}

impl<'a> ProjectionRunner<'a> {
    pub fn new(store: &'a dyn EventStore, checkpoints: &'a dyn CheckpointStore) -> Self {
        ProjectionRunner {
            store,
            checkpoints,
            batch: 1024,
        }
    }

    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Applies everything after the checkpoint; returns how many events.
    pub async fn run_once(&self, p: &mut dyn Projection) -> Result<usize, ProjectionError> {
        let mut position = self
            .checkpoints
            .load_checkpoint(p.name())
            .await?
            .unwrap_or(Position::START);
        let mut applied = 0;
        loop {
            let batch = self.store.read_all(position, self.batch).await?;
            if batch.is_empty() {
                return Ok(applied);
            }
            for e in &batch {
                p.apply(e).map_err(|message| ProjectionError::Apply {
                    name: p.name().to_owned(),
                    position: e.global_position.0,
                    message,
                })?;
                position = e.global_position;
                applied += 1;
            }
            self.checkpoints.save_checkpoint(p.name(), position).await?;
        }
    }

    /// Resets the projection and replays from position 0.
    pub async fn rebuild(&self, p: &mut dyn Projection) -> Result<usize, ProjectionError> {
        p.reset();
        self.checkpoints
            .save_checkpoint(p.name(), Position::START)
            .await?;
        self.run_once(p).await
    }
}

/// A ready-made projection: the current phase of every order (what a
/// dashboard or the reconciler's candidate list needs).
#[derive(Default, Debug)]
pub struct OrderPhases {
    pub states: std::collections::BTreeMap<StreamId, OrderState>,
}

impl OrderPhases {
    pub fn phase(&self, stream: &StreamId) -> Option<Phase> {
        self.states.get(stream).map(OrderState::phase)
    }
}

impl Projection for OrderPhases {
    fn name(&self) -> &str {
        "order_phases"
    }

    fn apply(&mut self, e: &RecordedEvent) -> Result<(), String> {
        if e.stream_type != payorch_schemas::events::ORDER_STREAM_TYPE {
            return Ok(());
        }
        let event: OrderEvent = codec::decode_recorded(e).map_err(|err| err.to_string())?;
        let state = self.states.remove(&e.stream_id).unwrap_or_default();
        self.states
            .insert(e.stream_id.clone(), order::evolve(state, &event));
        Ok(())
    }

    fn reset(&mut self) {
        self.states.clear();
    }
}
