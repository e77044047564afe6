//! The read side's access to streams: stream ids, reading a whole stream
//! and folding it into an aggregate's state. The command runner, replay and
//! the reconciler load through here; nothing here writes.

use payorch_schemas::events::{AgreementId, CheckoutId, OrderId};

use time::OffsetDateTime;

use crate::aggregate::Aggregate;
use crate::codec::{self, CodecError};
use crate::store::{EventStore, RecordedEvent, StoreError, StreamId, Version};
use crate::stream::StreamRef;

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The store failed (see [`StoreError`]: retry on `Unavailable`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event could not be decoded (corrupt data; page someone).
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Stream id of an order ([`StreamRef`]).
pub fn order_stream(id: OrderId) -> StreamId {
    StreamRef::Order(id).stream_id()
}
/// Stream id of an agreement ([`StreamRef`]).
pub fn agreement_stream(id: AgreementId) -> StreamId {
    StreamRef::Agreement(id).stream_id()
}
/// Stream id of a checkout session ([`StreamRef`]).
pub fn checkout_stream(id: CheckoutId) -> StreamId {
    StreamRef::Checkout(id).stream_id()
}

/// Resolves which order a PayKKa `trans_id` belongs to.
pub fn order_of_trans_id(trans_id: &str) -> Option<OrderId> {
    OrderId::from_trans_id(&payorch_schemas::events::TransId::new(trans_id))
}

const PAGE: usize = 1024;

/// Folds stored events into `state`: each payload is decoded (upcast if
/// old) and moved into the state. What [`load`] does per page; the engine
/// bench measures rehydration through it.
pub fn fold_recorded<A: Aggregate>(
    mut state: A::State,
    events: &[RecordedEvent],
) -> Result<A::State, CodecError> {
    for e in events {
        state = A::evolve(state, &codec::decode_recorded(e)?);
    }
    Ok(state)
}

/// The recorded times of a stream's first and latest events: what a view
/// shows as `created_at` / `updated_at`. Both `None` for a stream with no
/// events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamTimes {
    pub first: Option<OffsetDateTime>,
    pub last: Option<OffsetDateTime>,
}

impl StreamTimes {
    /// The times after events recorded at `recorded_at` were appended.
    pub fn after(self, recorded_at: OffsetDateTime) -> StreamTimes {
        StreamTimes {
            first: self.first.or(Some(recorded_at)),
            last: Some(recorded_at),
        }
    }

    /// The times after `events` (in version order) were folded in.
    fn after_all(self, events: &[RecordedEvent]) -> StreamTimes {
        match (events.first(), events.last()) {
            (Some(f), Some(l)) => StreamTimes {
                first: self.first.or(Some(f.recorded_at)),
                last: Some(l.recorded_at),
            },
            _ => self,
        }
    }
}

/// A folded stream: its state, version, and the recorded times of its
/// first and latest events.
#[derive(Clone, Debug)]
pub struct Loaded<S> {
    pub state: S,
    pub version: Version,
    pub times: StreamTimes,
}

impl<S: Default> Loaded<S> {
    /// A stream with no events.
    pub fn empty() -> Self {
        Loaded {
            state: S::default(),
            version: Version::NONE,
            times: StreamTimes::default(),
        }
    }
}

/// Reads and folds a whole stream: its state and version.
pub async fn load<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<(A::State, Version), ReadError> {
    let l = load_timed::<A>(store, stream).await?;
    Ok((l.state, l.version))
}

/// [`load`], plus the recorded times of the stream's first and latest
/// events (from the rows it reads anyway: no extra round trip).
pub async fn load_timed<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<Loaded<A::State>, ReadError> {
    let mut l = Loaded::<A::State>::empty();
    loop {
        let batch = store.read_stream(stream, l.version.next(), PAGE).await?;
        let n = batch.len();
        l.state = fold_recorded::<A>(l.state, &batch)?;
        l.times = l.times.after_all(&batch);
        if let Some(last) = batch.last() {
            l.version = last.version;
        }
        if n < PAGE {
            return Ok(l);
        }
    }
}

/// Every stored event of a stream, in order.
pub async fn read_whole_stream(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let mut out = Vec::new();
    loop {
        let from = Version(out.len() as u64 + 1);
        let batch = store.read_stream(stream, from, PAGE).await?;
        let n = batch.len();
        out.extend(batch);
        if n < PAGE {
            return Ok(out);
        }
    }
}
