//! Replay: fold any stream to a version or a point in time
//! ([`fold_stream`]), explain a history event by event ([`explain`]),
//! verify that today's code accepts every stored history
//! ([`verify_all`]), and run projections over `read_all` with a checkpoint
//! (rebuildable from position 0; [`OrderPhases`], [`OrderSummary`]).
//! `payorch replay` is the CLI over these: it keeps the wiring and the
//! output only.

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
use crate::stream::StreamRef;
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

/// Money totals of one currency (minor units).
#[derive(Clone, Default, Debug, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub authorised: i64,
    pub captured: i64,
    pub refunded: i64,
}

/// Orders per phase and money per currency, rebuilt from the whole
/// history (`payorch replay --all`). Folds like [`OrderPhases`], under its
/// own checkpoint name.
#[derive(Default, Debug)]
pub struct OrderSummary {
    pub phases: OrderPhases,
}

impl OrderSummary {
    /// How many orders the history holds.
    pub fn orders(&self) -> usize {
        self.phases.states.len()
    }

    /// Orders per phase (snake_case) and totals per currency code.
    pub fn report(
        &self,
    ) -> (
        std::collections::BTreeMap<String, usize>,
        std::collections::BTreeMap<String, Totals>,
    ) {
        let mut by_status = std::collections::BTreeMap::new();
        let mut totals: std::collections::BTreeMap<String, Totals> = Default::default();
        for s in self.phases.states.values() {
            *by_status.entry(s.phase().to_string()).or_insert(0) += 1;
            if let Some(o) = s.order() {
                let t = totals.entry(o.currency().code().to_owned()).or_default();
                t.authorised += o.authorised;
                t.captured += o.captured;
                t.refunded += o.refunded;
            }
        }
        (by_status, totals)
    }
}

impl Projection for OrderSummary {
    fn name(&self) -> &str {
        "order_summary"
    }

    fn apply(&mut self, e: &RecordedEvent) -> Result<(), String> {
        self.phases.apply(e)
    }

    fn reset(&mut self) {
        self.phases.reset();
    }
}

/// The state of any stream, by its kind.
#[derive(Clone, Debug)]
pub enum StreamState {
    Order(OrderState),
    Agreement(crate::agreement::AgreementState),
    Checkout(crate::checkout::CheckoutState),
}

/// How far to fold a stream.
#[derive(Clone, Copy, Debug)]
pub enum FoldTo {
    /// Events 1..=version.
    Version(Version),
    /// Events recorded at or before this time.
    Time(OffsetDateTime),
}

/// The state of the stream `r` at `to`, whatever its aggregate.
pub async fn fold_stream(
    store: &dyn EventStore,
    r: StreamRef,
    to: FoldTo,
) -> Result<StreamState, ReadError> {
    use crate::aggregate::{AgreementAggregate, CheckoutAggregate};
    async fn fold<A: Aggregate>(
        store: &dyn EventStore,
        id: &StreamId,
        to: FoldTo,
    ) -> Result<A::State, ReadError> {
        match to {
            FoldTo::Version(v) => fold_to_version::<A>(store, id, v).await,
            FoldTo::Time(t) => fold_to_time::<A>(store, id, t).await,
        }
    }
    let id = r.stream_id();
    Ok(match r {
        StreamRef::Order(_) => StreamState::Order(fold::<OrderAggregate>(store, &id, to).await?),
        StreamRef::Agreement(_) => {
            StreamState::Agreement(fold::<AgreementAggregate>(store, &id, to).await?)
        }
        StreamRef::Checkout(_) => {
            StreamState::Checkout(fold::<CheckoutAggregate>(store, &id, to).await?)
        }
    })
}

/// One stream that today's code does not accept.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct VerifyFailure {
    pub stream: String,
    /// The event at fault, when one is.
    pub version: Option<u64>,
    pub error: String,
}

/// Checks that today's code accepts the stored history of `id`: versions
/// without gaps, every event decoded through today's upcasters and folded
/// with today's `evolve`. `None` when it does.
pub async fn verify_stream(store: &dyn EventStore, id: &StreamId) -> Option<VerifyFailure> {
    let fail = |version: Option<u64>, error: String| {
        Some(VerifyFailure {
            stream: id.as_str().to_owned(),
            version,
            error,
        })
    };
    let r = match StreamRef::of(id) {
        Ok(r) => r,
        Err(e) => return fail(None, e.to_string()),
    };
    let events = match read_whole_stream(store, id).await {
        Ok(e) => e,
        Err(e) => return fail(None, e.to_string()),
    };
    for (expected, e) in (1u64..).zip(events.iter()) {
        if e.version.0 != expected {
            return fail(
                Some(e.version.0),
                format!("version gap: expected {expected}"),
            );
        }
        if e.stream_type != r.stream_type() {
            return fail(
                Some(e.version.0),
                format!(
                    "stream type {:?} where {:?} was expected",
                    e.stream_type,
                    r.stream_type()
                ),
            );
        }
    }
    let folded = match r {
        StreamRef::Order(_) => fold_all::<OrderAggregate>(&events),
        StreamRef::Agreement(_) => fold_all::<crate::aggregate::AgreementAggregate>(&events),
        StreamRef::Checkout(_) => fold_all::<crate::aggregate::CheckoutAggregate>(&events),
    };
    folded.err().and_then(|(v, msg)| fail(Some(v), msg))
}

fn fold_all<A: Aggregate>(events: &[RecordedEvent]) -> Result<(), (u64, String)> {
    let mut state = A::State::default();
    for e in events {
        let event: A::Event =
            codec::decode_recorded(e).map_err(|err| (e.version.0, err.to_string()))?;
        state = A::evolve(state, &event);
    }
    drop(state);
    Ok(())
}

/// [`verify_stream`] over every stream of every kind; `progress` is called
/// once per stream checked. Returns how many were checked and the failures.
pub async fn verify_all(
    store: &dyn EventStore,
    mut progress: impl FnMut(),
) -> Result<(usize, Vec<VerifyFailure>), StoreError> {
    use payorch_schemas::events::{AGREEMENT_STREAM_TYPE, CHECKOUT_STREAM_TYPE, ORDER_STREAM_TYPE};
    let mut failures = Vec::new();
    let mut checked = 0usize;
    for stream_type in [
        ORDER_STREAM_TYPE,
        AGREEMENT_STREAM_TYPE,
        CHECKOUT_STREAM_TYPE,
    ] {
        let mut after: Option<StreamId> = None;
        loop {
            let page = store.list_streams(stream_type, after.as_ref(), 500).await?;
            let Some((last, _)) = page.last() else { break };
            let last = last.clone();
            for (id, _) in &page {
                if let Some(f) = verify_stream(store, id).await {
                    failures.push(f);
                }
                checked += 1;
                progress();
            }
            after = Some(last);
        }
    }
    Ok((checked, failures))
}
