//! # payorch-postgres
//!
//! The production store of payorch: the engine's storage ports
//! ([`EventStore`], [`IdempotencyStore`], [`CheckpointStore`]) on Postgres
//! (13+, for `xid8`), plus [`AdvisoryLock`], which keeps exactly one relay or
//! reconciler active per database.
//!
//! ## Append
//!
//! One statement, in autocommit (schema in `migrations/`): it reads the
//! stream's version and, only when the expected version matches, inserts
//! the batch with `global_position = (xid << 16) | ordinal`, where `xid` is
//! the appending transaction's 64-bit id (`pg_current_xact_id()`, assigned
//! inside the statement) and `ordinal` runs 1..n over the batch (so at most
//! [`MAX_BATCH`] events per append), plus the idempotency record begun or
//! completed (`response IS NULL` = in progress, migration 0003). No lock
//! and no sequence: concurrent writers insert in parallel and share WAL
//! flushes (group commit). Positions are strictly increasing and dense
//! within a batch, sparse across batches. The statement has two shapes: a
//! single event without an idempotency record (most appends: outcomes and
//! observations) binds scalars; anything else binds the batch as arrays.
//!
//! * **Conflicts**: the expected version is checked in the statement; a race
//!   that passes the check loses on the unique `(stream_id, version)`
//!   constraint, recognised by SQLSTATE 23505 and the constraint name
//!   (never by message text), and comes back as
//!   [`StoreError::Conflict`] with the actual version read after the failure.
//! * **Idempotent re-append**: if any event id is stored, nothing is
//!   written (the statement stops at the version check or fails on the
//!   unique `event_id` constraint); the stored events are then read,
//!   compared (semantic JSON equality) and the stored outcome returned, or
//!   [`StoreError::EventIdReused`]. Only that rare path pays the lookup.
//! * **Cancellation and lost connections**: the statement holds nothing
//!   beyond its own transaction, so a caller may drop the future at any
//!   point: the server commits or rolls back the statement on its own.
//!   Transient errors (I/O, terminated backends) are retried: retrying is
//!   safe because event ids make appends idempotent.
//!
//! ## `read_all` never skips
//!
//! With concurrent writers a higher position can commit before a lower one.
//! Because a position is its writer's xid shifted left, position order is
//! xid order. `read_all` returns only positions below
//! `pg_snapshot_xmin(pg_current_snapshot()) << 16`: they were written by
//! transactions that had ended when the reading statement started, so each
//! is visible (committed) or gone for good (aborted), while every
//! transaction still running, or started later, has an xid at or above the
//! horizon and so writes positions at or above it. A transaction that has
//! written and stays open therefore holds back every reader at its
//! position, which `tests/store_postgres.rs` proves deterministically.
//! Trade-off: any long-running *writing* transaction on the cluster delays
//! (never breaks) tailing until it ends.
//!
//! ## Import
//!
//! `payorch import` does not append: [`BulkImport`](payorch_engine::bulk::BulkImport)
//! COPYs one batch per transaction (idempotent by event id), and
//! [`BulkLoad`] loads a whole history into an *empty* store in one
//! transaction, with the indexes and unique constraints of `events`
//! dropped and re-created at the end; each batch gets its positions from
//! its own subtransaction's id, so the append rule and `read_all`'s
//! horizon hold unchanged (see `bulk.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use payorch_engine::store::{
    AppendOutcome, AppendRequest, CheckpointStore, EventMetadata, EventStore, ExpectedVersion,
    IdempotencyCompletion, IdempotencyRecord, IdempotencyStore, IdempotencyWrite, NewEvent,
    Position, RecordedEvent, StoreError, StreamId, Version,
};
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

mod bulk;
mod index;
mod lock;
mod open_work;
pub mod wakeup;
mod webhook_log;

pub use bulk::BulkLoad;
pub use lock::AdvisoryLock;

/// Events per append: the batch ordinal is the low 16 bits of a position.
pub const MAX_BATCH: usize = 0xFFFF;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often a transient failure (lost connection, terminated backend,
/// restarting server) is retried inside one store call.
const TRANSIENT_RETRIES: u32 = 5;

/// Errors of connecting and migrating. (The storage ports themselves return
/// the engine's [`StoreError`].)
#[derive(Debug, thiserror::Error)]
pub enum PgStoreError {
    /// The database could not be reached or refused the connection (bad URL,
    /// server down, auth). Fix the configuration or retry later.
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] sqlx::Error),
    /// Applying the embedded migrations failed, e.g. the database was
    /// migrated by a newer payorch. Do not start on this database.
    #[error("Postgres migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed (e.g. while taking an advisory lock). Usually
    /// transient: retry later, page someone if it persists.
    #[error("Postgres query failed: {0}")]
    Query(#[source] sqlx::Error),
}

/// Applies the embedded migrations to `pool` (idempotent; concurrent
/// callers serialise on sqlx's migration lock).
pub async fn migrate(pool: &PgPool) -> Result<(), PgStoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Event, idempotency and checkpoint store on Postgres.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// Announces appends (see [`wakeup`]).
    notifier: Arc<wakeup::AppendNotifier>,
}

impl PostgresStore {
    /// Connects a pool of up to 16 connections to `url`. Does not migrate:
    /// call [`PostgresStore::migrate`].
    pub async fn connect(url: &str) -> Result<Self, PgStoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(Self::connect_options(url)?)
            .await
            .map_err(PgStoreError::Connect)?;
        Ok(Self::from_pool(pool))
    }

    /// Connect options for `url` with the session settings the store wants
    /// (`plan_cache_mode = force_generic_plan`: the append statement is
    /// otherwise re-planned on every call, ~0.5 ms of CPU each). Use them
    /// when building a pool for [`PostgresStore::from_pool`].
    pub fn connect_options(url: &str) -> Result<PgConnectOptions, PgStoreError> {
        let options = url
            .parse::<PgConnectOptions>()
            .map_err(PgStoreError::Connect)?;
        Ok(Self::tune(options))
    }

    /// Adds the store's session settings to existing connect options
    /// (also `payorch.append_notify = off`: the store announces its appends
    /// itself, see [`wakeup`]).
    pub fn tune(options: PgConnectOptions) -> PgConnectOptions {
        options.options([
            ("plan_cache_mode", "force_generic_plan"),
            ("payorch.append_notify", "off"),
        ])
    }

    /// Uses an existing pool (its `search_path` decides the schema). Build
    /// it from [`PostgresStore::connect_options`] or [`PostgresStore::tune`]
    /// for full speed.
    pub fn from_pool(pool: PgPool) -> Self {
        PostgresStore {
            pool,
            notifier: Arc::default(),
        }
    }

    /// The in-process signal raised after each of this store's appends
    /// (give it to [`wakeup::PgWakeup::start_with`]).
    pub fn append_signal(&self) -> &payorch_engine::wakeup::WakeupSignal {
        self.notifier.signal()
    }

    /// Applies the embedded migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), PgStoreError> {
        migrate(&self.pool).await
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

// ---------------------------------------------------------------------------
// Error mapping
// ---------------------------------------------------------------------------

/// Errors after which the same call may succeed on a fresh connection.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 57P01-03: admin shutdown / crash
            // shutdown / cannot connect now; 40001/40P01: serialization
            // failure / deadlock.
            c.starts_with("08") || c.starts_with("57P") || c == "40001" || c == "40P01"
        }),
        _ => false,
    }
}

/// The name of the unique constraint a statement violated (SQLSTATE 23505).
fn unique_violation(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Some(db.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("postgres: {e}"))
}

fn corrupt(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(format!("postgres row: {e}"))
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} out of range")))
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what} {v}")))
}

fn raw_json(s: String, what: &str) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Runs `op` with retries on transient errors (short growing backoff).
async fn retrying<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && attempt < TRANSIENT_RETRIES => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "postgres: transient error, retrying");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

/// The event columns in the order [`decode_event`] reads them by index.
const EVENT_COLUMNS: &str = "global_position, stream_id, stream_type, version, event_id, \
     event_type, schema_version, payload::text AS payload, metadata::text AS metadata, recorded_at";

/// Decodes one row selected with [`EVENT_COLUMNS`], by column index (no
/// per-column name lookup) and borrowing the metadata text (parsed in place,
/// never copied). The only per-row allocations are the owned fields of
/// [`RecordedEvent`].
fn decode_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let schema_version: i32 = row.try_get(6).map_err(corrupt)?;
    let metadata: &str = row.try_get(8).map_err(corrupt)?;
    Ok(RecordedEvent {
        global_position: Position(to_u64(row.try_get(0).map_err(corrupt)?, "position")?),
        stream_id: StreamId::new(row.try_get::<String, _>(1).map_err(corrupt)?),
        stream_type: row.try_get(2).map_err(corrupt)?,
        version: Version(to_u64(row.try_get(3).map_err(corrupt)?, "version")?),
        event_id: row.try_get(4).map_err(corrupt)?,
        event_type: row.try_get(5).map_err(corrupt)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| StoreError::Corrupt(format!("schema version {schema_version}")))?,
        payload: raw_json(row.try_get(7).map_err(corrupt)?, "payload")?,
        metadata: serde_json::from_str::<EventMetadata>(metadata)
            .map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))?,
        recorded_at: row.try_get(9).map_err(corrupt)?,
    })
}

/// Semantic JSON equality (a re-sent payload may differ in formatting).
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

// ---------------------------------------------------------------------------
// Append
// ---------------------------------------------------------------------------

/// The append statement. Parameters: $1 stream_id, $2 stream_type,
/// $3 expected version (NULL = Any), $4..$9 the batch as arrays,
/// $10..$15 the idempotency record ($10 NULL = none), $16 true when the
/// record is completed (response $13) rather than begun, $17 true when the
/// in-progress record ($10, $11) is released (deleted). See the crate docs.
const APPEND_SQL: &str = r#"
WITH cur AS MATERIALIZED (
    SELECT COALESCE(MAX(version), 0)::int8 AS v FROM events WHERE stream_id = $1
), ins AS (
    INSERT INTO events (global_position, stream_id, stream_type, version, event_id,
                        event_type, schema_version, payload, metadata, recorded_at)
    SELECT (pg_current_xact_id()::text::int8 << 16) | u.ord, $1, $2, cur.v + u.ord,
           u.event_id, u.event_type, u.schema_version, u.payload::json, u.metadata::json,
           u.recorded_at
    FROM cur,
         UNNEST($4::uuid[], $5::text[], $6::int4[], $7::text[], $8::text[], $9::timestamptz[])
           WITH ORDINALITY AS u(event_id, event_type, schema_version, payload, metadata,
                                recorded_at, ord)
    WHERE $3::int8 IS NULL OR cur.v = $3::int8
    RETURNING global_position, version
), idem AS (
    INSERT INTO idempotency (scope, key, fingerprint, response, stream_id, created_at)
    SELECT $10::text, $11::text, $12::text, $13::json, $14::text, $15::timestamptz
    FROM (SELECT 1 FROM ins LIMIT 1) AS x
    WHERE $10::text IS NOT NULL AND NOT $16::bool AND NOT $17::bool
    RETURNING 1
), done AS (
    UPDATE idempotency SET response = $13::json
    WHERE $16::bool AND scope = $10::text AND key = $11::text AND response IS NULL
      AND EXISTS (SELECT 1 FROM ins)
    RETURNING 1
), rel AS (
    DELETE FROM idempotency
    WHERE $17::bool AND scope = $10::text AND key = $11::text AND response IS NULL
      AND EXISTS (SELECT 1 FROM ins)
    RETURNING 1
), agg AS (
    SELECT min(global_position) AS first_pos, max(global_position) AS last_pos,
           max(version) AS last_version
    FROM ins
)
SELECT (SELECT v FROM cur) AS current_version, agg.first_pos, agg.last_pos, agg.last_version
FROM agg
"#;

/// The append statement for one event and no idempotency record (most
/// appends: gateway outcomes and observations). Parameters as
/// [`APPEND_SQL`]'s $1..$9, scalars instead of arrays. No row: the
/// expected version did not match (the caller reads the actual one).
const APPEND_ONE_SQL: &str = r#"
WITH cur AS MATERIALIZED (
    SELECT COALESCE(MAX(version), 0)::int8 AS v FROM events WHERE stream_id = $1
)
INSERT INTO events (global_position, stream_id, stream_type, version, event_id,
                    event_type, schema_version, payload, metadata, recorded_at)
SELECT (pg_current_xact_id()::text::int8 << 16) | 1, $1, $2, cur.v + 1,
       $4::uuid, $5::text, $6::int4, $7::text::json, $8::text::json, $9::timestamptz
FROM cur
WHERE $3::int8 IS NULL OR cur.v = $3::int8
RETURNING global_position, version
"#;

/// The arrays and scalars of one append, prepared once for all attempts.
struct AppendArgs {
    stream_id: String,
    stream_type: String,
    expected: Option<i64>,
    ids: Vec<Uuid>,
    types: Vec<String>,
    schema_versions: Vec<i32>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    recorded_at: Vec<OffsetDateTime>,
    idempotency: Option<IdempotencyWrite>,
}

impl AppendArgs {
    fn new(request: &AppendRequest) -> Result<Self, StoreError> {
        let expected = match request.expected {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => Some(to_i64(v.0, "expected version")?),
        };
        let mut args = AppendArgs {
            stream_id: request.stream_id.as_str().to_owned(),
            stream_type: request.stream_type.clone(),
            expected,
            ids: Vec::with_capacity(request.events.len()),
            types: Vec::with_capacity(request.events.len()),
            schema_versions: Vec::with_capacity(request.events.len()),
            payloads: Vec::with_capacity(request.events.len()),
            metadata: Vec::with_capacity(request.events.len()),
            recorded_at: Vec::with_capacity(request.events.len()),
            idempotency: request.idempotency.clone(),
        };
        for e in &request.events {
            args.ids.push(e.event_id);
            args.types.push(e.event_type.clone());
            args.schema_versions
                .push(i32::try_from(e.schema_version).map_err(|_| {
                    StoreError::Invalid(format!("schema version {} too large", e.schema_version))
                })?);
            args.payloads.push(e.payload.get().to_owned());
            args.metadata.push(
                serde_json::to_string(&e.metadata)
                    .map_err(|err| StoreError::Invalid(format!("metadata: {err}")))?,
            );
            args.recorded_at.push(e.recorded_at);
        }
        Ok(args)
    }
}

/// What the append statement reported.
struct AppendRow {
    /// The stream's version as the statement read it (`None`: not
    /// reported; read it again if needed).
    current: Option<i64>,
    first: Option<i64>,
    last: Option<i64>,
    last_version: Option<i64>,
}

async fn run_append(conn: &mut PgConnection, a: &AppendArgs) -> Result<AppendRow, sqlx::Error> {
    if let ([id], [event_type], [schema_version], [payload], [metadata], [recorded_at], None) = (
        a.ids.as_slice(),
        a.types.as_slice(),
        a.schema_versions.as_slice(),
        a.payloads.as_slice(),
        a.metadata.as_slice(),
        a.recorded_at.as_slice(),
        &a.idempotency,
    ) {
        // The common case (an outcome, an observation): scalar parameters,
        // no arrays to unpack, no idempotency record.
        let row = sqlx::query(APPEND_ONE_SQL)
            .bind(&a.stream_id)
            .bind(&a.stream_type)
            .bind(a.expected)
            .bind(id)
            .bind(event_type)
            .bind(schema_version)
            .bind(payload)
            .bind(metadata)
            .bind(recorded_at)
            .fetch_optional(&mut *conn)
            .await?;
        let (position, version) = match row {
            Some(row) => (
                Some(row.try_get("global_position")?),
                Some(row.try_get("version")?),
            ),
            None => (None, None),
        };
        return Ok(AppendRow {
            current: None,
            first: position,
            last: position,
            last_version: version,
        });
    }
    let (rec, done) = match &a.idempotency {
        Some(IdempotencyWrite::Begin(r)) => (Some(r), None),
        Some(IdempotencyWrite::Complete(c)) => (None, Some(c)),
        Some(IdempotencyWrite::Release { .. }) | None => (None, None),
    };
    let released = match &a.idempotency {
        Some(IdempotencyWrite::Release { scope, key }) => Some((scope.as_str(), key.as_str())),
        _ => None,
    };
    let row = sqlx::query(APPEND_SQL)
        .bind(&a.stream_id)
        .bind(&a.stream_type)
        .bind(a.expected)
        .bind(&a.ids)
        .bind(&a.types)
        .bind(&a.schema_versions)
        .bind(&a.payloads)
        .bind(&a.metadata)
        .bind(&a.recorded_at)
        .bind(
            rec.map(|r| r.scope.as_str())
                .or(done.map(|c| c.scope.as_str()))
                .or(released.map(|r| r.0)),
        )
        .bind(
            rec.map(|r| r.key.as_str())
                .or(done.map(|c| c.key.as_str()))
                .or(released.map(|r| r.1)),
        )
        .bind(rec.map(|r| r.fingerprint.as_str()))
        .bind(
            rec.and_then(|r| r.response.as_deref().map(RawValue::get))
                .or(done.map(|c| c.response.get())),
        )
        .bind(rec.and_then(|r| r.stream_id.as_ref().map(StreamId::as_str)))
        .bind(rec.map(|r| r.created_at))
        .bind(done.is_some())
        .bind(released.is_some())
        .fetch_one(&mut *conn)
        .await?;
    Ok(AppendRow {
        current: Some(row.try_get("current_version")?),
        first: row.try_get("first_pos")?,
        last: row.try_get("last_pos")?,
        last_version: row.try_get("last_version")?,
    })
}

/// One attempt's result, before interpretation.
enum Attempt {
    Row(AppendRow),
    /// 23505 on the named constraint.
    Unique(String),
}

/// Runs the append statement on a pooled connection.
async fn attempt_append(pool: &PgPool, a: &AppendArgs) -> Result<Attempt, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    match run_append(&mut conn, a).await {
        Ok(row) => Ok(Attempt::Row(row)),
        Err(e) => match unique_violation(&e) {
            Some(constraint) => Ok(Attempt::Unique(constraint)),
            None => Err(e),
        },
    }
}

async fn read_events_by_id(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ANY($1)");
    let rows = retrying(|| {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(ids)
            .fetch_all(pool)
    })
    .await?;
    rows.iter().map(decode_event).collect()
}

/// The outcome of re-appending a batch some of whose ids are stored
/// (the idempotent outcome, or `EventIdReused`); `None` when none is.
/// Asked only after the append statement inserted nothing or hit a unique
/// constraint, so the common path pays no extra lookup.
async fn stored_outcome(
    pool: &PgPool,
    request: &AppendRequest,
) -> Result<Option<AppendOutcome>, StoreError> {
    let ids: Vec<Uuid> = request.events.iter().map(|e| e.event_id).collect();
    let stored: HashMap<Uuid, RecordedEvent> = read_events_by_id(pool, &ids)
        .await?
        .into_iter()
        .map(|e| (e.event_id, e))
        .collect();
    if stored.is_empty() {
        return Ok(None);
    }
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

impl PostgresStore {
    async fn append_inner(
        pool: &PgPool,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        let args = AppendArgs::new(&request)?;
        let mut transient = 0;
        let mut races = 0;
        loop {
            let attempt = match attempt_append(pool, &args).await {
                Ok(a) => a,
                Err(e) if is_transient(&e) && transient < TRANSIENT_RETRIES => {
                    // The statement may have committed before the
                    // connection died: the retry then finds the ids stored
                    // and returns the stored outcome.
                    transient += 1;
                    tracing::warn!(error = %e, attempt = transient, "postgres append: retrying");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(transient))).await;
                    continue;
                }
                Err(e) => return Err(unavailable(e)),
            };
            match attempt {
                Attempt::Row(row) => {
                    if let (Some(first), Some(last), Some(version)) =
                        (row.first, row.last, row.last_version)
                    {
                        return Ok(AppendOutcome {
                            version: Version(to_u64(version, "version")?),
                            first_position: Position(to_u64(first, "position")?),
                            last_position: Position(to_u64(last, "position")?),
                            already_stored: false,
                        });
                    }
                    // Nothing inserted: the version check stopped it. A
                    // re-sent batch (its ids stored) is idempotent rather
                    // than a conflict.
                    if let Some(outcome) = stored_outcome(pool, &request).await? {
                        return Ok(outcome);
                    }
                    return Err(StoreError::Conflict {
                        stream: request.stream_id.clone(),
                        expected: request.expected,
                        actual: match row.current {
                            Some(v) => Version(to_u64(v, "version")?),
                            None => read_version(pool, &request.stream_id).await?,
                        },
                    });
                }
                Attempt::Unique(constraint) if constraint == "idempotency_pkey" => {
                    let (scope, key) = match &args.idempotency {
                        Some(IdempotencyWrite::Begin(r)) => (r.scope.clone(), r.key.clone()),
                        Some(IdempotencyWrite::Complete(c)) => (c.scope.clone(), c.key.clone()),
                        Some(IdempotencyWrite::Release { scope, key }) => {
                            (scope.clone(), key.clone())
                        }
                        None => Default::default(),
                    };
                    return Err(StoreError::IdempotencyKeyTaken { scope, key });
                }
                Attempt::Unique(constraint) => {
                    // events_event_id_key: the ids are stored (a re-sent
                    // batch, or a concurrent writer of the same batch that
                    // committed first): the idempotent outcome, or
                    // EventIdReused. events_stream_version_key: another
                    // writer took the version first.
                    if let Some(outcome) = stored_outcome(pool, &request).await? {
                        return Ok(outcome);
                    }
                    races += 1;
                    if constraint == "events_stream_version_key"
                        && request.expected != ExpectedVersion::Any
                    {
                        let actual = read_version(pool, &request.stream_id).await?;
                        return Err(StoreError::Conflict {
                            stream: request.stream_id.clone(),
                            expected: request.expected,
                            actual,
                        });
                    }
                    if races > 50 {
                        return Err(StoreError::Unavailable(format!(
                            "postgres: append to {} kept losing races on {constraint}",
                            request.stream_id
                        )));
                    }
                }
            }
        }
    }
}

async fn read_version(pool: &PgPool, stream: &StreamId) -> Result<Version, StoreError> {
    let v: i64 = retrying(|| {
        sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0)::int8 FROM events WHERE stream_id = $1",
        )
        .bind(stream.as_str())
        .fetch_one(pool)
    })
    .await?;
    Ok(Version(to_u64(v, "version")?))
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::Invalid("append of an empty batch".into()));
        }
        if request.events.len() > MAX_BATCH {
            return Err(StoreError::Invalid(format!(
                "append of {} events: at most {MAX_BATCH} per append",
                request.events.len()
            )));
        }
        let out = Self::append_inner(&self.pool, request).await?;
        if !out.already_stored {
            self.notifier.appended(&self.pool);
        }
        Ok(out)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2 \
             ORDER BY version LIMIT $3"
        );
        let rows = retrying(|| {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(stream.as_str())
                .bind(saturating_i64(from.0))
                .bind(limit_i64(limit))
                .fetch_all(&self.pool)
        })
        .await?;
        rows.iter().map(decode_event).collect()
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // The safe horizon: only rows of transactions that ended before this
        // statement's snapshot (see the crate docs).
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE global_position > $1 \
               AND global_position < \
                   ((SELECT pg_snapshot_xmin(pg_current_snapshot()))::text::int8 << 16) \
             ORDER BY global_position LIMIT $2"
        );
        let rows = retrying(|| {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(saturating_i64(after.0))
                .bind(limit_i64(limit))
                .fetch_all(&self.pool)
        })
        .await?;
        rows.iter().map(decode_event).collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        read_version(&self.pool, stream).await
    }

    async fn list_streams(
        &self,
        stream_type: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, Version)>, StoreError> {
        let rows = retrying(|| {
            sqlx::query(
                "SELECT stream_id, MAX(version) AS version FROM events \
                 WHERE stream_type = $1 AND ($2::text IS NULL OR stream_id > $2::text) \
                 GROUP BY stream_id ORDER BY stream_id LIMIT $3",
            )
            .bind(stream_type)
            .bind(after.map(StreamId::as_str))
            .bind(limit_i64(limit))
            .fetch_all(&self.pool)
        })
        .await?;
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
impl IdempotencyStore for PostgresStore {
    async fn get_idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = retrying(|| {
            sqlx::query(
                "SELECT scope, key, fingerprint, response::text AS response, stream_id, created_at \
                 FROM idempotency WHERE scope = $1 AND key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.pool)
        })
        .await?;
        let Some(r) = row else { return Ok(None) };
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
            created_at: r.try_get("created_at").map_err(corrupt)?,
        }))
    }

    async fn put_idempotency(&self, record: IdempotencyRecord) -> Result<(), StoreError> {
        let r = retrying(|| async {
            let r = sqlx::query(
                "INSERT INTO idempotency (scope, key, fingerprint, response, stream_id, created_at) \
                 VALUES ($1, $2, $3, $4::json, $5, $6)",
            )
            .bind(&record.scope)
            .bind(&record.key)
            .bind(&record.fingerprint)
            .bind(record.response.as_deref().map(RawValue::get))
            .bind(record.stream_id.as_ref().map(StreamId::as_str))
            .bind(record.created_at)
            .execute(&self.pool)
            .await;
            // A unique violation is an answer, not a failure to retry.
            match r {
                Ok(_) => Ok(true),
                Err(e) if unique_violation(&e).is_some() => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await?;
        if r {
            Ok(())
        } else {
            Err(StoreError::IdempotencyKeyTaken {
                scope: record.scope,
                key: record.key,
            })
        }
    }

    async fn complete_idempotency(
        &self,
        completion: IdempotencyCompletion,
    ) -> Result<bool, StoreError> {
        let r = retrying(|| {
            sqlx::query(
                "UPDATE idempotency SET response = $3::json \
                 WHERE scope = $1 AND key = $2 AND response IS NULL",
            )
            .bind(&completion.scope)
            .bind(&completion.key)
            .bind(completion.response.get())
            .execute(&self.pool)
        })
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn release_idempotency(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        let r = retrying(|| {
            sqlx::query(
                "DELETE FROM idempotency WHERE scope = $1 AND key = $2 AND response IS NULL",
            )
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
        })
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[async_trait]
impl CheckpointStore for PostgresStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        let v: Option<i64> = retrying(|| {
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
        })
        .await?;
        v.map(|p| to_u64(p, "checkpoint").map(Position)).transpose()
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let p = to_i64(position.0, "position")?;
        retrying(|| {
            sqlx::query(
                "INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
                 updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(p)
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_sql_derives_positions_from_the_xid_without_a_lock() {
        assert!(APPEND_SQL.contains("(pg_current_xact_id()::text::int8 << 16) | u.ord"));
        assert!(APPEND_ONE_SQL.contains("(pg_current_xact_id()::text::int8 << 16) | 1"));
        assert!(!APPEND_SQL.contains("advisory") && !APPEND_ONE_SQL.contains("advisory"));
        assert_eq!(MAX_BATCH, (1 << 16) - 1);
    }
}
