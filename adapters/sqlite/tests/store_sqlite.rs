//! The SQLite store against real database files (one temp dir per test):
//! the engine's conformance suite, heavier concurrency runs, and reopening.

use std::sync::Arc;

use payorch_engine::store::testkit::{self, Fixture};
use payorch_engine::store::{EventStore, ExpectedVersion, Position, Version};
use payorch_sqlite::SqliteStore;

/// A migrated store on a fresh file, removed with its directory.
struct SqliteFixture {
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

impl Fixture for SqliteFixture {
    type Store = SqliteStore;
    fn store(&self) -> Arc<SqliteStore> {
        Arc::clone(&self.store)
    }
    async fn teardown(self) {
        self.store.close().await;
    }
}

async fn open_in(dir: &tempfile::TempDir) -> SqliteStore {
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("payorch.db").display()
    );
    let store = match SqliteStore::open(&url).await {
        Ok(s) => s,
        Err(e) => panic!("open {url}: {e}"),
    };
    if let Err(e) = store.migrate().await {
        panic!("migrate: {e}");
    }
    store
}

async fn fixture() -> Option<SqliteFixture> {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let store = Arc::new(open_in(&dir).await);
    Some(SqliteFixture { store, _dir: dir })
}

payorch_engine::store_conformance_tests!(fixture);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_one_stream_exactly_one_winner_per_version() {
    let Some(fx) = fixture().await else { return };
    testkit::one_stream_race(fx.store(), 16, 5).await;
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_distinct_streams_with_tailer() {
    let Some(fx) = fixture().await else { return };
    testkit::gap_free_with_writers(fx.store(), 16, 40).await;
    fx.teardown().await;
}

#[tokio::test]
async fn data_survives_reopen_and_migrate_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = testkit::stream("order");
    let sent = testkit::new_events(0, 3);
    {
        let store = open_in(&dir).await;
        store
            .append(testkit::request(
                &s,
                ExpectedVersion::NoStream,
                sent.clone(),
            ))
            .await
            .expect("append");
        store.close().await;
    }
    let store = open_in(&dir).await;
    store.migrate().await.expect("second migrate is a no-op");
    assert_eq!(store.stream_version(&s).await.expect("version"), Version(3));
    let all = store.read_all(Position::START, 10).await.expect("read_all");
    let ids: Vec<_> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, sent.iter().map(|e| e.event_id).collect::<Vec<_>>());
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.read_pool())
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn in_memory_url_works() {
    let store = SqliteStore::open("sqlite::memory:").await.expect("open");
    store.migrate().await.expect("migrate");
    testkit::append_read_round_trip(Arc::new(store)).await;
}

/// Two stores on the same file (as two processes would be) race on one
/// stream: SQLite's write lock serialises them, each version has exactly
/// one winner and losers get typed conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_race_safely() {
    use payorch_engine::store::StoreError;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Arc::new(open_in(&dir).await);
    let b = Arc::new(open_in(&dir).await);
    let s = testkit::stream("shared");
    let mut handles = Vec::new();
    for w in 0..8u64 {
        let store = if w % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            while wins.len() < 5 {
                let v = store.stream_version(&s).await.expect("version");
                let events = testkit::new_events(w, 1);
                let id = events[0].event_id;
                match store
                    .append(testkit::request(&s, ExpectedVersion::Exact(v), events))
                    .await
                {
                    Ok(o) => wins.push((o.version, id)),
                    Err(StoreError::Conflict { actual, .. }) => assert!(actual > v),
                    Err(e) => panic!("append: {e}"),
                }
            }
            wins
        }));
    }
    let mut winners = std::collections::BTreeMap::new();
    for h in handles {
        for (v, id) in h.await.expect("task") {
            assert!(winners.insert(v, id).is_none(), "two winners for {v}");
        }
    }
    let stored = a.read_stream(&s, Version(1), 100).await.expect("read");
    assert_eq!(stored.len(), 40);
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.version, Version(i as u64 + 1));
        assert_eq!(winners.get(&e.version), Some(&e.event_id));
    }
}

/// The listing index (migration 0005) passes the engine's index suite.
#[tokio::test]
async fn resource_index_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_in(&dir).await;
    payorch_engine::listing::testkit::conformance(&store).await;
    store.close().await;
}
