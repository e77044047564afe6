//! The two gauges of `/metrics` that `serve` keeps current:
//!
//! * `payorch_relay_lag_events`: with a broker, the store's head global
//!   position minus the relay's checkpoint (`relay:payorch.events` in the
//!   checkpoint store, so it measures whichever instance holds the relay
//!   lease). 0 means every committed event was confirmed by the broker.
//!   Positions can have gaps (a Postgres identity value is used up by a
//!   transaction that rolls back), so a non-zero value is an upper bound on
//!   the events still to publish. Without a broker nothing is published
//!   from `serve` (the in-process bus has no subscribers there), so the
//!   gauge stays 0.
//! * `payorch_reconciler_backlog_orders`: the `candidates` of the last
//!   reconciler pass: orders with an open PayKKa call older than
//!   `reconcile_threshold_secs` (backed-off ones included).
//!
//! The store's ports have no "head position" query, so [`head_position`]
//! finds it with `read_all(after, 1)` probes: one probe when the relay is
//! caught up, about 2·log2(lag) otherwise.

use payorch_engine::store::{CheckpointStore, EventStore, Position, StoreError};

/// Position of the first event after `after`, if any.
async fn first_after(store: &dyn EventStore, after: u64) -> Result<Option<u64>, StoreError> {
    Ok(store
        .read_all(Position(after), 1)
        .await?
        .first()
        .map(|e| e.global_position.0))
}

/// The highest readable global position (`after` when nothing follows it).
pub async fn head_position(
    store: &dyn EventStore,
    after: Position,
) -> Result<Position, StoreError> {
    let Some(mut lo) = first_after(store, after.0).await? else {
        return Ok(after);
    };
    // Invariant: an event exists at `lo`; none is readable after `hi`.
    let mut step = 1u64;
    let mut hi = loop {
        let probe = lo.saturating_add(step);
        match first_after(store, probe).await? {
            Some(p) => {
                lo = p;
                step = step.saturating_mul(2);
            }
            None => break probe,
        }
    };
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match first_after(store, mid).await? {
            Some(p) => lo = p,
            None => hi = mid,
        }
    }
    Ok(Position(lo))
}

/// Head position minus the checkpoint `name` (missing: position 0).
pub async fn lag(
    store: &dyn EventStore,
    checkpoints: &dyn CheckpointStore,
    name: &str,
) -> Result<u64, StoreError> {
    let checkpoint = checkpoints
        .load_checkpoint(name)
        .await?
        .unwrap_or(Position::START);
    let head = head_position(store, checkpoint).await?;
    Ok(head.0.saturating_sub(checkpoint.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use payorch_engine::store::memory::InMemoryStore;
    use payorch_engine::store::{
        AppendRequest, EventMetadata, ExpectedVersion, NewEvent, StreamId,
    };
    use serde_json::value::RawValue;

    async fn append(store: &InMemoryStore, stream: &str, n: usize) {
        let events = (0..n)
            .map(|_| NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "test".into(),
                schema_version: 1,
                payload: RawValue::from_string("{}".into()).unwrap(),
                metadata: EventMetadata::default(),
                recorded_at: time::OffsetDateTime::now_utc(),
            })
            .collect();
        store
            .append(AppendRequest {
                stream_id: StreamId::new(stream),
                stream_type: "test".into(),
                expected: ExpectedVersion::Any,
                events,
                idempotency: None,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn head_and_lag_follow_appends_and_the_checkpoint() {
        let store = InMemoryStore::new();
        assert_eq!(
            head_position(&store, Position::START).await.unwrap(),
            Position::START
        );
        assert_eq!(lag(&store, &store, "relay:x").await.unwrap(), 0);
        let mut total = 0u64;
        // Heads at every size up to a few hundred, odd ones included, so
        // the gallop and the bisection both end on every branch.
        for (i, n) in [1usize, 1, 2, 3, 5, 8, 13, 100, 250]
            .into_iter()
            .enumerate()
        {
            append(&store, &format!("s-{i}"), n).await;
            total += n as u64;
            assert_eq!(
                head_position(&store, Position::START).await.unwrap(),
                Position(total)
            );
            assert_eq!(lag(&store, &store, "relay:x").await.unwrap(), total);
        }
        for cp in [1, 7, total - 1, total] {
            store
                .save_checkpoint("relay:x", Position(cp))
                .await
                .unwrap();
            assert_eq!(lag(&store, &store, "relay:x").await.unwrap(), total - cp);
        }
    }
}
