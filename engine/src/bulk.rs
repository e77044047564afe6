//! Bulk import port: moving a history into a store fast (`payorch import`),
//! off the hot append path.
//!
//! [`BulkImport::import_batch`] takes exported events (each with its
//! original id, stream and version, in stream-version order) and stores
//! them in one transaction, with new global positions in the order given.
//! Its promises, the same as appending each event at its version:
//!
//! * **Idempotent by event id**: an event whose id is already stored at the
//!   same stream and version is skipped (counted in `already_present`); the
//!   same id elsewhere is [`StoreError::EventIdReused`].
//! * **Validated**: within the batch each stream's new events have
//!   consecutive versions that continue the stored stream; anything else is
//!   [`StoreError::Conflict`] (nothing of the batch is stored).
//! * Events are not re-validated as domain events here: `payorch import`
//!   decodes each line as an exported event before batching.

use async_trait::async_trait;

use crate::store::{RecordedEvent, StoreError};

/// What one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub imported: u64,
    pub already_present: u64,
}

/// See the module docs.
#[async_trait]
pub trait BulkImport: Send + Sync {
    /// Most events per call the store accepts.
    fn max_batch(&self) -> usize;

    /// Stores `events` in one transaction (see the module docs).
    async fn import_batch(&self, events: &[RecordedEvent]) -> Result<ImportOutcome, StoreError>;
}

/// Checks that each stream's events in `events` have consecutive versions
/// in the order given; returns the first offending event's description.
pub fn check_consecutive(events: &[RecordedEvent]) -> Result<(), StoreError> {
    let mut last: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for e in events {
        if let Some(prev) = last.get(e.stream_id.as_str())
            && e.version.0 != prev + 1
        {
            return Err(StoreError::Invalid(format!(
                "event {} of stream {} has version {} after version {prev}",
                e.event_id, e.stream_id, e.version.0
            )));
        }
        last.insert(e.stream_id.as_str(), e.version.0);
    }
    Ok(())
}

/// Conformance case for [`BulkImport`] implementations (feature `testkit`):
/// takes an empty store.
#[cfg(feature = "testkit")]
pub async fn conformance<S>(store: std::sync::Arc<S>)
where
    S: BulkImport + crate::store::EventStore + 'static,
{
    use crate::store::testkit::{new_events, request, stream};
    use crate::store::{EventStore as _, ExpectedVersion, Position, Version};

    // Export-like events of three streams, from a scratch in-memory store.
    let scratch = crate::store::memory::InMemoryStore::new();
    let streams = [stream("bulk"), stream("bulk"), stream("bulk")];
    for (i, s) in streams.iter().enumerate() {
        scratch
            .append(request(
                s,
                ExpectedVersion::NoStream,
                new_events(10 * i as u64, 4),
            ))
            .await
            .expect("scratch append");
    }
    let exported = scratch.read_all(Position::START, 100).await.expect("read");
    assert_eq!(exported.len(), 12);

    // The first half, then everything: the overlap is skipped.
    let o = store
        .import_batch(&exported[..6])
        .await
        .expect("import half");
    assert_eq!((o.imported, o.already_present), (6, 0));
    let o = store.import_batch(&exported).await.expect("import all");
    assert_eq!(
        (o.imported, o.already_present),
        (6, 6),
        "ids already stored are skipped"
    );
    let o = store.import_batch(&exported).await.expect("import again");
    assert_eq!(
        (o.imported, o.already_present),
        (0, 12),
        "a second import stores nothing"
    );
    for s in &streams {
        let got = store.read_stream(s, Version(1), 100).await.expect("read");
        let want = scratch.read_stream(s, Version(1), 100).await.expect("read");
        assert_eq!(got.len(), 4);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (g.event_id, g.version, &g.event_type),
                (w.event_id, w.version, &w.event_type)
            );
        }
    }
    // read_all may hold back events while other writers' transactions on
    // the same server are open: wait (with a deadline) until they show.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let all = store
            .read_all(Position::START, 100)
            .await
            .expect("read_all");
        assert!(all.len() <= 12, "no event imported twice");
        if all.len() == 12 {
            assert!(
                all.windows(2)
                    .all(|w| w[0].global_position < w[1].global_position),
                "positions increase"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "imported events never became readable by read_all"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // A stream that does not continue where the store is: refused whole.
    let other = stream("bulk-gap");
    scratch
        .append(request(
            &other,
            ExpectedVersion::NoStream,
            new_events(100, 3),
        ))
        .await
        .expect("scratch");
    let gap = scratch
        .read_stream(&other, Version(2), 10)
        .await
        .expect("read");
    let fresh = scratch
        .read_stream(&other, Version(1), 1)
        .await
        .expect("read");
    let mut mixed = fresh.clone();
    mixed.extend(gap.iter().skip(1).cloned()); // versions 1, 3
    assert!(
        matches!(
            store.import_batch(&mixed).await,
            Err(StoreError::Invalid(_))
        ),
        "a version gap inside the batch is refused"
    );
    assert!(
        matches!(
            store.import_batch(&gap).await,
            Err(StoreError::Conflict { .. })
        ),
        "a stream starting at version 2 on an empty stream is a conflict"
    );
    assert_eq!(
        store.stream_version(&other).await.expect("version"),
        Version(0),
        "nothing of a refused batch is stored"
    );

    // The same id at another place is a reused id.
    let mut moved = exported[0].clone();
    moved.stream_id = crate::store::StreamId::new("bulk-elsewhere");
    assert!(matches!(
        store.import_batch(&[moved]).await,
        Err(StoreError::EventIdReused { .. })
    ));
}
