//! The SQLite `open_work` table passes the engine's open-work conformance
//! kit, and the webhook delivery log (migration 0006) its own (one temp dir
//! per test).

use std::sync::Arc;

use payorch_engine::open_work::testkit::IndexFixture;
use payorch_sqlite::SqliteStore;

struct SqliteFixture {
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

impl IndexFixture for SqliteFixture {
    type Index = SqliteStore;
    fn index(&self) -> Arc<SqliteStore> {
        Arc::clone(&self.store)
    }
    async fn teardown(self) {
        self.store.close().await;
    }
}

async fn fixture() -> Option<SqliteFixture> {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
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
    Some(SqliteFixture {
        store: Arc::new(store),
        _dir: dir,
    })
}

payorch_engine::open_work_conformance_tests!(fixture);

impl payorch_engine::webhook_out::testkit::LogFixture for SqliteFixture {
    type Log = SqliteStore;
    fn log(&self) -> Arc<SqliteStore> {
        Arc::clone(&self.store)
    }
    async fn teardown(self) {
        self.store.close().await;
    }
}

// The webhook delivery log (migration 0006) passes the engine's kit too.
payorch_engine::delivery_log_conformance_tests!(fixture);

/// `payorch import`'s bulk path on SQLite passes the engine's bulk case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_import_is_idempotent_and_validated() {
    let Some(fx) = fixture().await else { return };
    payorch_engine::bulk::conformance(fx.store.clone()).await;
    fx.teardown().await;
}
