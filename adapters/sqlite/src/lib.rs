//! # payorch-sqlite
//!
//! The embedded default store of payorch: the engine's storage ports
//! ([`EventStore`], [`IdempotencyStore`], [`CheckpointStore`]) on one SQLite
//! file (default [`DEFAULT_URL`], `sqlite://payorch.db?mode=rwc`).
//!
//! Design:
//!
//! * **One writer.** Every write runs in `BEGIN IMMEDIATE` on a write pool
//!   of exactly one connection, so writes are serialised inside the process
//!   and against other processes (SQLite's write lock, waited for up to the
//!   busy timeout). Positions (`INTEGER PRIMARY KEY AUTOINCREMENT`) are
//!   therefore committed in order and `read_all` can never skip an event.
//! * **Concurrent readers.** WAL journal mode; reads go through a separate
//!   pool of several connections and never block the writer.
//! * **Conflicts** are detected by the unique `(stream_id, version)`
//!   constraint, recognised by sqlx's error kind (SQLite extended codes 2067
//!   `SQLITE_CONSTRAINT_UNIQUE` / 1555 `SQLITE_CONSTRAINT_PRIMARYKEY`), never
//!   by error text. Because the version is read and written in one
//!   immediate transaction, the check before the insert normally reports the
//!   conflict first; the constraint is the backstop.
//! * **Migrations** are embedded ([`migrate`], [`SqliteStore::migrate`]).
//!
//! Payloads are stored as JSON text verbatim; timestamps as RFC 3339 text.

mod bulk;
mod open_work;
mod webhook_log;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use payorch_engine::store::{
    AppendOutcome, AppendRequest, CheckpointStore, EventMetadata, EventStore, ExpectedVersion,
    IdempotencyCompletion, IdempotencyRecord, IdempotencyStore, IdempotencyWrite, NewEvent,
    Position, RecordedEvent, StoreError, StreamId, Version,
};
use serde_json::value::RawValue;
use sqlx::error::ErrorKind;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The embedded default database: `payorch.db` in the working directory,
/// created when missing.
pub const DEFAULT_URL: &str = "sqlite://payorch.db?mode=rwc";

/// How long a writer waits for SQLite's write lock (another process)
/// before the operation fails as `Unavailable`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

mod index;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Errors of opening and migrating a SQLite store. (The storage ports
/// themselves return the engine's [`StoreError`].)
#[derive(Debug, thiserror::Error)]
pub enum SqliteStoreError {
    /// The URL is not a valid SQLite URL. Fix the configuration.
    #[error("invalid SQLite URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database file could not be opened or configured (missing
    /// directory, permissions, locked by another program). Fix and retry.
    #[error("cannot open SQLite database: {0}")]
    Open(#[source] sqlx::Error),
    /// Applying the embedded migrations failed, e.g. the file was migrated
    /// by a newer payorch. Do not start on this database.
    #[error("SQLite migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Applies the embedded migrations to `pool` (idempotent).
pub async fn migrate(pool: &SqlitePool) -> Result<(), SqliteStoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Event, idempotency and checkpoint store on one SQLite database.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (and with `mode=rwc` creates) the database at `url`, in WAL mode
    /// with a busy timeout. Does not migrate: call [`SqliteStore::migrate`].
    /// An in-memory URL (`sqlite::memory:`) gets one connection for reads and
    /// writes, since every connection would otherwise see its own database.
    pub async fn open(url: &str) -> Result<Self, SqliteStoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(SqliteStoreError::InvalidUrl)?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = if in_memory {
            options
        } else {
            options
                .journal_mode(SqliteJournalMode::Wal)
                // WAL + NORMAL is durable against application crashes and
                // loses at most the last commits on power loss.
                .synchronous(SqliteSynchronous::Normal)
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(SqliteStoreError::Open)?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .map_err(SqliteStoreError::Open)?
        };
        Ok(SqliteStore { writer, reader })
    }

    /// Opens [`DEFAULT_URL`].
    pub async fn open_default() -> Result<Self, SqliteStoreError> {
        Self::open(DEFAULT_URL).await
    }

    /// Applies the embedded migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), SqliteStoreError> {
        migrate(&self.writer).await
    }

    /// The single-connection write pool (e.g. for `migrate` or tooling).
    pub fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// The read pool.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.kind() == ErrorKind::UniqueViolation,
        _ => false,
    }
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} out of range")))
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what} {v}")))
}

fn format_time(t: OffsetDateTime) -> Result<String, StoreError> {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| StoreError::Invalid(format!("unrepresentable timestamp: {e}")))
}

fn parse_time(s: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {s:?}: {e}")))
}

fn raw_json(s: String, what: &str) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn corrupt(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(format!("sqlite row: {e}"))
}

const EVENT_COLUMNS: &str = "global_position, stream_id, stream_type, version, event_id, \
     event_type, schema_version, payload, metadata, recorded_at";

fn decode_event(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let event_id: String = row.try_get("event_id").map_err(corrupt)?;
    let metadata: String = row.try_get("metadata").map_err(corrupt)?;
    let recorded_at: String = row.try_get("recorded_at").map_err(corrupt)?;
    let schema_version: i64 = row.try_get("schema_version").map_err(corrupt)?;
    Ok(RecordedEvent {
        global_position: Position(to_u64(
            row.try_get("global_position").map_err(corrupt)?,
            "position",
        )?),
        stream_id: StreamId::new(row.try_get::<String, _>("stream_id").map_err(corrupt)?),
        stream_type: row.try_get("stream_type").map_err(corrupt)?,
        version: Version(to_u64(row.try_get("version").map_err(corrupt)?, "version")?),
        event_id: Uuid::parse_str(&event_id)
            .map_err(|e| StoreError::Corrupt(format!("event id {event_id:?}: {e}")))?,
        event_type: row.try_get("event_type").map_err(corrupt)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| StoreError::Corrupt(format!("schema version {schema_version}")))?,
        payload: raw_json(row.try_get("payload").map_err(corrupt)?, "payload")?,
        metadata: serde_json::from_str::<EventMetadata>(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))?,
        recorded_at: parse_time(&recorded_at)?,
    })
}

/// Semantic JSON equality (stored text vs. re-sent text).
fn json_eq(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (
                serde_json::from_str::<serde_json::Value>(a),
                serde_json::from_str::<serde_json::Value>(b),
            ),
            (Ok(x), Ok(y)) if x == y
        )
}

fn same_event(stored: &RecordedEvent, new: &NewEvent, stream: &StreamId) -> bool {
    stored.stream_id == *stream
        && stored.event_type == new.event_type
        && stored.schema_version == new.schema_version
        && json_eq(stored.payload.get(), new.payload.get())
}

fn check_expected(expected: ExpectedVersion, actual: Version) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual == Version::NONE,
        ExpectedVersion::Exact(v) => actual == v,
    }
}

async fn current_version(
    tx: &mut Transaction<'static, Sqlite>,
    stream: &StreamId,
) -> Result<Version, StoreError> {
    let v: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?")
            .bind(stream.as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(unavailable)?;
    Ok(Version(to_u64(v, "version")?))
}

/// If any event id of the batch is stored: the idempotent outcome, or
/// `EventIdReused`. `None` when none is stored.
async fn stored_outcome(
    tx: &mut Transaction<'static, Sqlite>,
    request: &AppendRequest,
) -> Result<Option<AppendOutcome>, StoreError> {
    // One statement for the whole batch (the ids as a JSON array). Asked
    // only after a version mismatch or a unique violation.
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE event_id IN (SELECT value FROM json_each(?))"
    );
    let ids = serde_json::to_string(
        &request
            .events
            .iter()
            .map(|e| e.event_id.to_string())
            .collect::<Vec<_>>(),
    )
    .map_err(|e| StoreError::Invalid(format!("event ids: {e}")))?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(unavailable)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let stored: HashMap<Uuid, RecordedEvent> = rows
        .iter()
        .map(|r| decode_event(r).map(|e| (e.event_id, e)))
        .collect::<Result<_, _>>()?;
    let mut found = Vec::with_capacity(request.events.len());
    for event in &request.events {
        match stored.get(&event.event_id) {
            Some(s) if same_event(s, event, &request.stream_id) => found.push(s),
            _ => {
                return Err(StoreError::EventIdReused {
                    event_id: event.event_id,
                });
            }
        }
    }
    match (found.first(), found.last()) {
        (Some(f), Some(l)) => Ok(Some(AppendOutcome {
            version: l.version,
            first_position: f.global_position,
            last_position: l.global_position,
            already_stored: true,
        })),
        _ => Err(StoreError::Invalid("append of an empty batch".into())),
    }
}

/// Stores the response of an in-progress record; `false` when the record
/// is missing or already completed.
async fn complete_idempotency(
    tx: &mut Transaction<'static, Sqlite>,
    c: &IdempotencyCompletion,
) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "UPDATE idempotency SET response = ? \
         WHERE scope = ? AND key = ? AND response IS NULL",
    )
    .bind(c.response.get())
    .bind(&c.scope)
    .bind(&c.key)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(r.rows_affected() == 1)
}

async fn insert_idempotency(
    tx: &mut Transaction<'static, Sqlite>,
    record: &IdempotencyRecord,
) -> Result<(), StoreError> {
    let r = sqlx::query(
        "INSERT INTO idempotency (scope, key, fingerprint, response, stream_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&record.scope)
    .bind(&record.key)
    .bind(&record.fingerprint)
    .bind(record.response.as_deref().map(RawValue::get))
    .bind(record.stream_id.as_ref().map(StreamId::as_str))
    .bind(format_time(record.created_at)?)
    .execute(&mut **tx)
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::IdempotencyKeyTaken {
            scope: record.scope.clone(),
            key: record.key.clone(),
        }),
        Err(e) => Err(unavailable(e)),
    }
}

/// What one attempt of an append ended with.
enum Attempt {
    Done(AppendOutcome),
    /// The insert hit a unique constraint: look again (ids or version).
    UniqueViolation,
}

impl SqliteStore {
    async fn append_once(&self, request: &AppendRequest) -> Result<Attempt, StoreError> {
        let mut tx = self.begin_write().await?;
        // Stored ids are looked for only when the batch cannot be written
        // as it is (version mismatch, unique violation): a re-sent batch
        // then gets its stored outcome. The common path pays no lookup.
        let actual = current_version(&mut tx, &request.stream_id).await?;
        if !check_expected(request.expected, actual) {
            if let Some(outcome) = stored_outcome(&mut tx, request).await? {
                return Ok(Attempt::Done(outcome));
            }
            return Err(StoreError::Conflict {
                stream: request.stream_id.clone(),
                expected: request.expected,
                actual,
            });
        }
        let mut version = actual;
        let mut first = None;
        let mut last = Position::START;
        for event in &request.events {
            version = version.next();
            let metadata = serde_json::to_string(&event.metadata)
                .map_err(|e| StoreError::Invalid(format!("metadata: {e}")))?;
            let r = sqlx::query_scalar::<_, i64>(
                "INSERT INTO events (stream_id, stream_type, version, event_id, event_type, \
                 schema_version, payload, metadata, recorded_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING global_position",
            )
            .bind(request.stream_id.as_str())
            .bind(&request.stream_type)
            .bind(to_i64(version.0, "version")?)
            .bind(event.event_id.to_string())
            .bind(&event.event_type)
            .bind(i64::from(event.schema_version))
            .bind(event.payload.get())
            .bind(metadata)
            .bind(format_time(event.recorded_at)?)
            .fetch_one(&mut *tx)
            .await;
            match r {
                Ok(p) => {
                    let p = Position(to_u64(p, "position")?);
                    first.get_or_insert(p);
                    last = p;
                }
                Err(e) if is_unique_violation(&e) => {
                    // SQLite undid the failed statement only; the lookup
                    // sees the stored rows, and dropping `tx` rolls back
                    // this batch's earlier inserts.
                    if let Some(outcome) = stored_outcome(&mut tx, request).await? {
                        return Ok(Attempt::Done(outcome));
                    }
                    return Ok(Attempt::UniqueViolation);
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        match &request.idempotency {
            Some(IdempotencyWrite::Begin(record)) => insert_idempotency(&mut tx, record).await?,
            Some(IdempotencyWrite::Complete(c)) => {
                complete_idempotency(&mut tx, c).await?;
            }
            Some(IdempotencyWrite::Release { scope, key }) => {
                sqlx::query(
                    "DELETE FROM idempotency WHERE scope = ? AND key = ? AND response IS NULL",
                )
                .bind(scope)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
            None => {}
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Attempt::Done(AppendOutcome {
            version,
            first_position: first.unwrap_or(last),
            last_position: last,
            already_stored: false,
        }))
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::Invalid("append of an empty batch".into()));
        }
        // A unique violation means another writer (another process on the
        // same file) won a race: the second attempt then sees its rows and
        // reports an idempotent outcome, EventIdReused or Conflict.
        for _ in 0..3 {
            match self.append_once(&request).await? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::UniqueViolation => {
                    if request.expected != ExpectedVersion::Any {
                        let actual = self.stream_version(&request.stream_id).await?;
                        if !check_expected(request.expected, actual) {
                            return Err(StoreError::Conflict {
                                stream: request.stream_id.clone(),
                                expected: request.expected,
                                actual,
                            });
                        }
                    }
                }
            }
        }
        Err(StoreError::Unavailable(
            "sqlite: append kept hitting unique violations".into(),
        ))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ? AND version >= ? \
             ORDER BY version LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(stream.as_str())
            .bind(to_i64(from.0, "version")?)
            .bind(limit_i64(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        rows.iter().map(decode_event).collect()
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // One writer commits positions in order: no horizon needed.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE global_position > ? \
             ORDER BY global_position LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::try_from(after.0).unwrap_or(i64::MAX))
            .bind(limit_i64(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        rows.iter().map(decode_event).collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        let v: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?")
                .bind(stream.as_str())
                .fetch_one(&self.reader)
                .await
                .map_err(unavailable)?;
        Ok(Version(to_u64(v, "version")?))
    }

    async fn list_streams(
        &self,
        stream_type: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, Version)>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream_id, MAX(version) AS version FROM events \
             WHERE stream_type = ? AND (? IS NULL OR stream_id > ?) \
             GROUP BY stream_id ORDER BY stream_id LIMIT ?",
        )
        .bind(stream_type)
        .bind(after.map(StreamId::as_str))
        .bind(after.map(StreamId::as_str))
        .bind(limit_i64(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("stream_id").map_err(corrupt)?;
                let v: i64 = r.try_get("version").map_err(corrupt)?;
                Ok((StreamId::new(id), Version(to_u64(v, "version")?)))
            })
            .collect()
    }
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn get_idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT scope, key, fingerprint, response, stream_id, created_at \
             FROM idempotency WHERE scope = ? AND key = ?",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        let Some(r) = row else { return Ok(None) };
        let created_at: String = r.try_get("created_at").map_err(corrupt)?;
        Ok(Some(IdempotencyRecord {
            scope: r.try_get("scope").map_err(corrupt)?,
            key: r.try_get("key").map_err(corrupt)?,
            fingerprint: r.try_get("fingerprint").map_err(corrupt)?,
            response: r
                .try_get::<Option<String>, _>("response")
                .map_err(corrupt)?
                .map(|s| raw_json(s, "response"))
                .transpose()?,
            stream_id: r
                .try_get::<Option<String>, _>("stream_id")
                .map_err(corrupt)?
                .map(StreamId::new),
            created_at: parse_time(&created_at)?,
        }))
    }

    async fn put_idempotency(&self, record: IdempotencyRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        insert_idempotency(&mut tx, &record).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn complete_idempotency(
        &self,
        completion: IdempotencyCompletion,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = complete_idempotency(&mut tx, &completion).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(done)
    }

    async fn release_idempotency(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let r =
            sqlx::query("DELETE FROM idempotency WHERE scope = ? AND key = ? AND response IS NULL")
                .bind(scope)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(r.rows_affected() > 0)
    }
}

#[async_trait]
impl CheckpointStore for SqliteStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        v.map(|p| to_u64(p, "checkpoint").map(Position)).transpose()
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(to_i64(position.0, "position")?)
        .bind(format_time(OffsetDateTime::now_utc())?)
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
