//! The projector that keeps an [`OpenWorkIndex`] current: see the module
//! docs of [`super`].

use std::collections::HashMap;
use std::sync::Arc;

use payorch_schemas::events::{AGREEMENT_STREAM_TYPE, AgreementEvent, OrderId};
use time::OffsetDateTime;

use crate::codec;
use crate::orchestrator::{EngineError, read_whole_stream};
use crate::read::order_stream;
use crate::store::{CheckpointStore, EventStore, Position, RecordedEvent, StreamId, Version};

use super::{OpenItem, OpenWorkIndex, open_item_of};

/// The checkpoint of the open-work projection. The suffix is the version of
/// the rules in [`super::open_work_of`]: a change of rules gets a new name,
/// so the index is rebuilt from position 0 on the next start.
pub const OPEN_WORK_CHECKPOINT: &str = "projection:open_work:v2";

/// Events read per `read_all` call.
const BATCH: usize = 1_000;

/// What one [`OpenWorkProjector::catch_up`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Events read from the store.
    pub events: usize,
    /// Streams whose row was upserted (work open).
    pub opened: usize,
    /// Streams whose row was removed (nothing open), in the order seen.
    pub closed: Vec<StreamId>,
    /// Streams left unchanged because an event could not be decoded
    /// (corrupt data: logged, page someone).
    pub errors: usize,
    /// The checkpoint after the catch-up.
    pub position: Position,
    /// Stopped between batches because shutdown was asked
    /// ([`OpenWorkProjector::catch_up_until`]).
    pub stopped: bool,
}

/// Tails the store into an [`OpenWorkIndex`] from a checkpoint.
///
/// One projector per index at a time (the reconciler runs it under its
/// leader lease): two would only redo each other's work, since each stream
/// is folded from the store and its row replaced, but they would double
/// the reads.
pub struct OpenWorkProjector {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    index: Arc<dyn OpenWorkIndex>,
    name: String,
    batch: usize,
}

impl OpenWorkProjector {
    pub fn new(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        index: Arc<dyn OpenWorkIndex>,
    ) -> Self {
        OpenWorkProjector {
            store,
            checkpoints,
            index,
            name: OPEN_WORK_CHECKPOINT.to_owned(),
            batch: BATCH,
        }
    }

    /// Reads `batch` events per `read_all` (tests use small batches to
    /// cross batch ends).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The index this projector writes.
    pub fn index(&self) -> &Arc<dyn OpenWorkIndex> {
        &self.index
    }

    /// Projects every event committed after the checkpoint, batch by batch:
    /// per batch, each touched stream is folded once and its row upserted
    /// or removed, then the checkpoint moves to the batch's last position.
    /// A crash between the two redoes the batch, which gives the same rows.
    pub async fn catch_up(&self) -> Result<CatchUp, EngineError> {
        self.catch_up_until(&|| false).await
    }

    /// [`OpenWorkProjector::catch_up`], stopping between batches (after
    /// the checkpoint of the last one) once `stop` says so.
    pub async fn catch_up_until(
        &self,
        stop: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<CatchUp, EngineError> {
        let mut after = self
            .checkpoints
            .load_checkpoint(&self.name)
            .await?
            .unwrap_or(Position::START);
        let mut report = CatchUp {
            position: after,
            ..CatchUp::default()
        };
        loop {
            let batch = self.store.read_all(after, self.batch).await?;
            let Some(last) = batch.last() else { break };
            after = last.global_position;
            report.events += batch.len();
            let full = batch.len() >= self.batch;
            self.project(batch, &mut report).await?;
            self.checkpoints.save_checkpoint(&self.name, after).await?;
            report.position = after;
            if !full {
                break;
            }
            if stop() {
                report.stopped = true;
                break;
            }
        }
        Ok(report)
    }

    /// Empties the index and projects the whole store from position 0.
    pub async fn rebuild(&self) -> Result<CatchUp, EngineError> {
        self.index.clear().await?;
        self.checkpoints
            .save_checkpoint(&self.name, Position::START)
            .await?;
        self.catch_up().await
    }

    /// Folds each stream the batch touched and writes its row.
    async fn project(
        &self,
        batch: Vec<RecordedEvent>,
        report: &mut CatchUp,
    ) -> Result<(), EngineError> {
        // Per touched stream, in first-seen order: its events in the batch.
        let mut order: Vec<StreamId> = Vec::new();
        let mut touched: HashMap<StreamId, Vec<RecordedEvent>> = HashMap::new();
        for e in batch {
            if super::WorkKind::of_stream_type(&e.stream_type).is_none() {
                continue;
            }
            touched
                .entry(e.stream_id.clone())
                .or_insert_with(|| {
                    order.push(e.stream_id.clone());
                    Vec::new()
                })
                .push(e);
        }
        let mut open: Vec<OpenItem> = Vec::new();
        let mut closed: Vec<StreamId> = Vec::new();
        for stream in order {
            let Some(in_batch) = touched.remove(&stream) else {
                continue;
            };
            let charges = charges_in(&in_batch);
            // A stream whose whole history so far is in the batch (versions
            // 1..n) folds from the batch alone; otherwise read it. Events
            // committed after the batch are projected by a later batch.
            let events = if starts_whole(&in_batch) {
                in_batch
            } else {
                read_whole_stream(self.store.as_ref(), &stream).await?
            };
            let Some(stream_type) = events.first().map(|e| e.stream_type.clone()) else {
                continue;
            };
            let row = match open_item_of(&stream, &stream_type, &events) {
                Ok(Some(item)) => Some(item),
                Ok(None) => self.unplaced_charge(&stream, &charges, &events).await?,
                Err(e) => {
                    report.errors += 1;
                    tracing::error!(stream = %stream, error = %e, "open-work projection: undecodable event; row left unchanged");
                    continue;
                }
            };
            match row {
                Some(item) => open.push(item),
                None => closed.push(stream),
            }
        }
        if !open.is_empty() || !closed.is_empty() {
            self.index.apply(&open, &closed).await?;
        }
        report.opened += open.len();
        report.closed.extend(closed);
        Ok(())
    }
}

/// The charges (`agreement_charged`: order, when) among an agreement
/// stream's events; none for other streams or undecodable events (the
/// fold reports those).
fn charges_in(events: &[RecordedEvent]) -> Vec<(OrderId, OffsetDateTime)> {
    events
        .iter()
        .filter(|e| e.stream_type == AGREEMENT_STREAM_TYPE)
        .filter_map(|e| match codec::decode_recorded::<AgreementEvent>(e) {
            Ok(AgreementEvent::AgreementCharged(c)) => Some((c.order_id, e.recorded_at)),
            _ => None,
        })
        .collect()
}

impl OpenWorkProjector {
    /// An agreement with nothing else open is open while one of the charges
    /// this batch recorded has no order yet: the placement follows the
    /// charge at once, so an order still missing when the projection runs
    /// is either on its way or was lost to a crash. The reconciler looks
    /// after the threshold: it places a lost one ([`Engine::resume_charge`])
    /// and removes the row once every charge has its order.
    ///
    /// [`Engine::resume_charge`]: crate::orchestrator::Engine::resume_charge
    async fn unplaced_charge(
        &self,
        stream: &StreamId,
        charges: &[(OrderId, OffsetDateTime)],
        events: &[RecordedEvent],
    ) -> Result<Option<OpenItem>, EngineError> {
        let Some(last) = events.last() else {
            return Ok(None);
        };
        for (order_id, at) in charges {
            if self.store.stream_version(&order_stream(*order_id)).await? == Version::NONE {
                return Ok(Some(OpenItem {
                    stream_id: stream.clone(),
                    kind: super::WorkKind::AgreementCancel,
                    since: *at,
                    touched_at: last.recorded_at,
                }));
            }
        }
        Ok(None)
    }
}

/// Whether `events` are versions 1, 2, ... n of their stream without a gap.
fn starts_whole(events: &[RecordedEvent]) -> bool {
    events
        .iter()
        .enumerate()
        .all(|(i, e)| e.version == Version(i as u64 + 1))
}
