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
