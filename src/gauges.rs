//! The two gauges of `/metrics` that `serve` keeps current:
//!
//! * `payorch_relay_lag_events`: with a broker, the number of committed
//!   events after the relay's checkpoint (`relay:payorch.events` in the
//!   checkpoint store, so it measures whichever instance holds the relay
//!   lease), counted through `read_all` up to [`LAG_CAP`] (the gauge then
//!   reads "at least that many"). 0 means every committed event was
//!   confirmed by the broker. (Positions are not dense: the Postgres store
//!   derives them from transaction ids, so a difference of positions would
//!   not count events.) Without a broker nothing is published from `serve`
//!   (the in-process bus has no subscribers there), so the gauge stays 0.
//! * `payorch_reconciler_backlog_orders`: the `candidates` of the last
//!   reconciler pass: streams (orders, agreement cancels, session creates)
//!   with a PayKKa call open for longer than `reconcile_threshold_secs`
//!   (backed-off ones included). Open checkout sessions that are merely
//!   waiting for the shopper are not counted.
//!
//! Counting costs one empty `read_all` when the relay is caught up and
//! one page read per 1,000 events of lag otherwise; [`caught_up`] (serve's
//! probe after each checkpoint of its own relay while it lags) reads at
//! most one event.

use payorch_engine::store::{CheckpointStore, EventStore, Position, StoreError};

/// The most events [`lag`] counts; a lag at least this large reads as this.
pub const LAG_CAP: u64 = 10_000;

const PAGE: usize = 1_000;

/// Committed events after the checkpoint `name` (missing: position 0), up
/// to [`LAG_CAP`].
pub async fn lag(
    store: &dyn EventStore,
    checkpoints: &dyn CheckpointStore,
    name: &str,
) -> Result<u64, StoreError> {
    let mut after = checkpoints
        .load_checkpoint(name)
        .await?
        .unwrap_or(Position::START);
    let mut count = 0u64;
    while count < LAG_CAP {
        let page = store.read_all(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.global_position;
        count += page.len() as u64;
    }
    Ok(count.min(LAG_CAP))
}

/// Whether every committed event after the checkpoint `name` is
/// published: one `read_all` of at most one event.
pub async fn caught_up(
    store: &dyn EventStore,
    checkpoints: &dyn CheckpointStore,
    name: &str,
) -> Result<bool, StoreError> {
    let after = checkpoints
        .load_checkpoint(name)
        .await?
        .unwrap_or(Position::START);
    Ok(store.read_all(after, 1).await?.is_empty())
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
    async fn lag_counts_the_events_after_the_checkpoint() {
        let store = InMemoryStore::new();
        assert_eq!(lag(&store, &store, "relay:x").await.unwrap(), 0);
        let mut total = 0u64;
        // Sizes around the page size, so counting crosses page ends.
        for (i, n) in [1usize, 2, 13, 984, 1, 1000, 1001].into_iter().enumerate() {
            append(&store, &format!("s-{i}"), n).await;
            total += n as u64;
            assert_eq!(lag(&store, &store, "relay:x").await.unwrap(), total);
        }
        for cp in [1, 7, 1000, total - 1, total] {
            store
                .save_checkpoint("relay:x", Position(cp))
                .await
                .unwrap();
            assert_eq!(lag(&store, &store, "relay:x").await.unwrap(), total - cp);
        }
        // Beyond the cap the gauge reads the cap.
        store
            .save_checkpoint("relay:x", Position::START)
            .await
            .unwrap();
        append(&store, "big", (LAG_CAP - total) as usize + 1).await;
        assert_eq!(lag(&store, &store, "relay:x").await.unwrap(), LAG_CAP);
    }

    #[tokio::test]
    async fn caught_up_means_nothing_after_the_checkpoint() {
        let store = InMemoryStore::new();
        assert!(caught_up(&store, &store, "relay:x").await.unwrap());
        append(&store, "s", 3).await;
        assert!(!caught_up(&store, &store, "relay:x").await.unwrap());
        store.save_checkpoint("relay:x", Position(2)).await.unwrap();
        assert!(!caught_up(&store, &store, "relay:x").await.unwrap());
        store.save_checkpoint("relay:x", Position(3)).await.unwrap();
        assert!(caught_up(&store, &store, "relay:x").await.unwrap());
    }
}
