//! The configured event store, chosen by URL scheme: `sqlite:` (embedded
//! default) or `postgres://`. One value gives the three storage ports and
//! the relay's leader lock (Postgres advisory lock, in-memory otherwise).

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use payorch_engine::bus::{InMemoryLeaderLock, LeaderLock, LeaseGuard};
use payorch_engine::listing::{Indexer, ResourceIndex};
use payorch_engine::open_work::OpenWorkIndex;
use payorch_engine::store::{CheckpointStore, EventStore, IdempotencyStore, Position, StoreError};
use payorch_engine::wakeup::{WakeupSignal, WakingStore};
use payorch_postgres::AdvisoryLock;
use payorch_postgres::PostgresStore;
use payorch_sqlite::SqliteStore;

/// An opened store.
#[derive(Clone)]
pub enum Store {
    /// The embedded store, with the in-process signal its appends raise
    /// (one process per file: every append goes through [`Store::events`]).
    Sqlite(Arc<SqliteStore>, WakeupSignal),
    Postgres(Arc<PostgresStore>),
}

/// `sqlite://payorch.db` creates the file when missing (`mode=rwc`).
fn sqlite_url(url: &str) -> String {
    if url.contains(":memory:") || url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The file of a `sqlite:` URL (`None` for in-memory databases and other
/// schemes).
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then_some(path)
}

impl Store {
    /// Opens (does not migrate) the store at `url`.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        if url.starts_with("sqlite:") {
            let s = SqliteStore::open(&sqlite_url(url))
                .await
                .with_context(|| format!("cannot open SQLite store {url}"))?;
            Ok(Store::Sqlite(Arc::new(s), WakeupSignal::new()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let s = PostgresStore::connect(url)
                .await
                .context("cannot connect to the Postgres store")?;
            Ok(Store::Postgres(Arc::new(s)))
        } else {
            anyhow::bail!(
                "store_url {:?} must start with sqlite: or postgres://",
                crate::config::redact_url(url)
            )
        }
    }

    /// Opens an existing store and applies the embedded migrations: a
    /// SQLite file that does not exist is an error naming its path (the
    /// commands that read history must not create an empty store and
    /// report on it).
    pub async fn open_existing_migrated(url: &str) -> anyhow::Result<Store> {
        if let Some(path) = sqlite_path(url)
            && !std::path::Path::new(path).exists()
        {
            anyhow::bail!(
                "SQLite store {path} does not exist (store_url {url}); check the path, \
                 or run `payorch migrate` to create an empty store"
            );
        }
        Store::open_migrated(url).await
    }

    /// Opens and applies the embedded migrations.
    pub async fn open_migrated(url: &str) -> anyhow::Result<Store> {
        let s = Store::open(url).await?;
        s.migrate().await?;
        Ok(s)
    }

    /// Applies the embedded migrations (idempotent).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(s, _) => s.migrate().await.context("SQLite migrations failed"),
            Store::Postgres(s) => s.migrate().await.context("Postgres migrations failed"),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(..) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The event store. On SQLite every successful append signals the
    /// store's [`WakeupSignal`], so tailers in this process sleep while idle.
    pub fn events(&self) -> Arc<dyn EventStore> {
        match self {
            Store::Sqlite(s, signal) => Arc::new(WakingStore::new(s.clone(), signal.clone())),
            Store::Postgres(s) => s.clone(),
        }
    }

    pub fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        match self {
            Store::Sqlite(s, _) => s.clone(),
            Store::Postgres(s) => s.clone(),
        }
    }

    /// The listing index (migration 0005).
    pub fn index(&self) -> Arc<dyn ResourceIndex> {
        match self {
            Store::Sqlite(s, _) => s.clone(),
            Store::Postgres(s) => s.clone(),
        }
    }

    /// The listing index's feeder over this store (checkpoint
    /// `resource_index`).
    pub fn indexer(&self) -> Arc<Indexer> {
        Arc::new(Indexer::new(
            self.events(),
            self.checkpoints(),
            self.index(),
        ))
    }

    pub fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        match self {
            Store::Sqlite(s, _) => s.clone(),
            Store::Postgres(s) => s.clone(),
        }
    }

    /// The reconciler's open-work index (the `open_work` table).
    pub fn open_work(&self) -> Arc<dyn OpenWorkIndex> {
        match self {
            Store::Sqlite(s, _) => s.clone(),
            Store::Postgres(s) => s.clone(),
        }
    }

    /// The merchant webhook delivery log (migration 0006).
    pub fn webhook_log(&self) -> Arc<dyn payorch_engine::webhook_out::WebhookDeliveryLog> {
        match self {
            Store::Sqlite(s, _) => s.clone(),
            Store::Postgres(s) => s.clone(),
        }
    }

    /// Bulk import (`payorch import`): batched, idempotent by event id.
    pub fn bulk(&self) -> Arc<dyn payorch_engine::bulk::BulkImport> {
        match self {
            Store::Sqlite(s, _) => s.clone(),
            Store::Postgres(s) => s.clone(),
        }
    }

    /// The highest position committed so far on Postgres (`None` on
    /// SQLite, whose one writer never commits out of order). `read_all`
    /// holds back positions of transactions younger than the oldest one
    /// still running anywhere on the server, so a reader that must see
    /// everything committed before it started (an export) reads until it
    /// has passed this position.
    pub async fn committed_head(&self) -> anyhow::Result<Option<Position>> {
        match self {
            Store::Sqlite(..) => Ok(None),
            Store::Postgres(s) => {
                let head: i64 =
                    sqlx::query_scalar("SELECT COALESCE(max(global_position), 0) FROM events")
                        .fetch_one(s.pool())
                        .await
                        .context("cannot read the store's last position")?;
                Ok(Some(Position(u64::try_from(head).unwrap_or(0))))
            }
        }
    }

    /// A one-transaction bulk load (indexes re-created at the end) when
    /// this is a Postgres store with no events; `None` otherwise (import
    /// with [`Store::bulk`]).
    pub async fn begin_bulk_load(&self) -> anyhow::Result<Option<payorch_postgres::BulkLoad>> {
        match self {
            Store::Sqlite(..) => Ok(None),
            Store::Postgres(s) => s
                .begin_bulk_load()
                .await
                .context("cannot start the bulk load"),
        }
    }

    /// A wake-up source that announces appends: on Postgres from any
    /// process (`LISTEN payorch_events`, a task holding one connection)
    /// and at once from this one (the store's own append signal); on
    /// SQLite the in-process signal raised by appends through
    /// [`Store::events`] (one process per file).
    pub fn wakeup(&self) -> StoreWakeup {
        match self {
            Store::Sqlite(_, signal) => StoreWakeup::Local(signal.clone()),
            Store::Postgres(s) => StoreWakeup::Postgres(
                payorch_postgres::wakeup::PgWakeup::start_with(s.pool(), s.append_signal().clone()),
            ),
        }
    }

    /// The relay's lock: a Postgres advisory lock (one relay per database),
    /// or a process-local lock for SQLite (one process per file).
    pub fn leader_lock(&self) -> Arc<dyn LeaderLock> {
        match self {
            Store::Sqlite(..) => Arc::new(InMemoryLeaderLock::new()),
            Store::Postgres(s) => Arc::new(PgLeaderLock { store: s.clone() }),
        }
    }

    /// Closes pools (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s, _) => s.close().await,
            Store::Postgres(s) => s.pool().close().await,
        }
    }
}

/// What [`Store::wakeup`] gives: keep it alive while tailers use its
/// signal (the Postgres one owns the `LISTEN` task).
pub enum StoreWakeup {
    Local(WakeupSignal),
    Postgres(payorch_postgres::wakeup::PgWakeup),
}

impl StoreWakeup {
    /// The signal tailers subscribe to.
    pub fn signal(&self) -> &WakeupSignal {
        match self {
            StoreWakeup::Local(s) => s,
            StoreWakeup::Postgres(w) => w.signal(),
        }
    }
}

/// [`LeaderLock`] over a Postgres session advisory lock.
struct PgLeaderLock {
    store: Arc<PostgresStore>,
}

struct PgGuard {
    lock: tokio::sync::Mutex<AdvisoryLock>,
}

#[async_trait]
impl LeaseGuard for PgGuard {
    async fn is_lost(&self) -> bool {
        !self.lock.lock().await.is_held().await
    }
}

#[async_trait]
impl LeaderLock for PgLeaderLock {
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn LeaseGuard>>, StoreError> {
        match AdvisoryLock::try_acquire(self.store.pool(), AdvisoryLock::key_for(name)).await {
            Ok(Some(lock)) => Ok(Some(Box::new(PgGuard {
                lock: tokio::sync::Mutex::new(lock),
            }))),
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use payorch_engine::store::{AppendRequest, ExpectedVersion, NewEvent, StreamId};
    use payorch_engine::wakeup::EventWakeup;

    use super::{Store, sqlite_path, sqlite_url};

    fn append(stream: &str) -> AppendRequest {
        AppendRequest {
            stream_id: StreamId::new(stream),
            stream_type: "order".into(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "created".into(),
                schema_version: 1,
                payload: serde_json::value::RawValue::from_string("{}".into()).expect("json"),
                metadata: Default::default(),
                recorded_at: time::OffsetDateTime::now_utc(),
            }],
            idempotency: None,
        }
    }

    /// Idle SQLite is idle: a tailer sleeping on the store's wake-up is
    /// woken by an append through `events()`, and not otherwise.
    #[tokio::test]
    async fn sqlite_appends_wake_tailers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let store = Store::open_migrated(&url).await.expect("store");
        let wakeup = store.wakeup();
        let listener = wakeup.signal().subscribe();
        assert!(
            !listener.wait(Duration::from_millis(50)).await,
            "no append, no wake-up"
        );
        let events = store.events();
        events.append(append("order-1")).await.expect("append");
        assert!(
            listener.wait(Duration::from_secs(10)).await,
            "an append wakes the tailer"
        );
        assert!(
            !listener.wait(Duration::from_millis(50)).await,
            "one append, one wake-up"
        );
        store.close().await;
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite://a.db"), Some("a.db"));
        assert_eq!(
            sqlite_path("sqlite:///tmp/a.db?mode=rwc"),
            Some("/tmp/a.db")
        );
        assert_eq!(sqlite_path("sqlite:a.db"), Some("a.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }

    #[test]
    fn sqlite_urls_create_the_file() {
        assert_eq!(sqlite_url("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            sqlite_url("sqlite://a.db?x=1"),
            "sqlite://a.db?x=1&mode=rwc"
        );
        assert_eq!(sqlite_url("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
        assert_eq!(sqlite_url("sqlite::memory:"), "sqlite::memory:");
    }
}
