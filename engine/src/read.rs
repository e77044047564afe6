//! The read side's access to streams: stream ids, reading a whole stream
//! and folding it into an aggregate's state. The command runner, replay and
//! the reconciler load through here; nothing here writes.

use payorch_schemas::events::{AgreementId, CheckoutId, OrderId};

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

/// Reads and folds a whole stream: its state and version.
pub async fn load<A: Aggregate>(
    store: &dyn EventStore,
    stream: &StreamId,
) -> Result<(A::State, Version), ReadError> {
    let mut state = A::State::default();
    let mut version = Version::NONE;
    loop {
        let batch = store.read_stream(stream, version.next(), PAGE).await?;
        let n = batch.len();
        state = fold_recorded::<A>(state, &batch)?;
        if let Some(last) = batch.last() {
            version = last.version;
        }
        if n < PAGE {
            return Ok((state, version));
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
