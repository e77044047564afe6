//! Bulk import on Postgres (`payorch import`), two ways.
//!
//! **[`BulkImport`]** (any store): one transaction per batch, four round
//! trips whatever its size: look up the batch's event ids (ids already
//! stored at the same place are skipped), read the heads of its streams
//! (each stream must continue), read the transaction id, then `COPY events
//! FROM STDIN` (binary format) with the new events. Positions follow the
//! append rule (`(xid << 16) | ordinal`, see the crate docs), computed
//! here, so a batch holds at most [`crate::MAX_BATCH`] events. Payloads
//! are sent as stored (no JSON re-serialisation); Postgres still checks
//! them as `json`. Not on the append path.
//!
//! **[`BulkLoad`]** (an empty store only, [`PostgresStore::begin_bulk_load`]):
//! the whole import is ONE transaction that locks `events`, drops its
//! indexes and unique constraints, COPYs every batch, then re-creates them
//! (a sort per index instead of a btree insert per row and index) and
//! commits. See [`BulkLoad`] for how positions, validation and
//! interruption work.

use std::collections::HashMap;

use async_trait::async_trait;
use payorch_engine::bulk::{BulkImport, ImportOutcome, check_consecutive};
use payorch_engine::store::{ExpectedVersion, RecordedEvent, StoreError, StreamId, Version};
use sqlx::{PgConnection, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::{MAX_BATCH, PostgresStore, corrupt, unavailable, unique_violation};

/// The COPY of the import paths, in Postgres's binary format: fields sent
/// as their binary representation, so the server parses no numbers, ids
/// or times (measured with psql: 30% less COPY time than the text
/// format); `json` is sent and checked as text either way.
const COPY_BINARY_SQL: &str = "COPY events (global_position, stream_id, stream_type, version, \
     event_id, event_type, schema_version, payload, metadata, recorded_at) \
     FROM STDIN (FORMAT binary)";

/// The binary COPY header: signature, flags, header extension length.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Microseconds from the Unix epoch to Postgres's (2000-01-01 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// One COPY binary-format row of `events` (see [`COPY_BINARY_SQL`]).
fn copy_row_binary(buf: &mut Vec<u8>, position: i64, e: &RecordedEvent) -> Result<(), StoreError> {
    fn field(buf: &mut Vec<u8>, bytes: &[u8]) -> Result<(), StoreError> {
        let len = i32::try_from(bytes.len())
            .map_err(|_| StoreError::Invalid(format!("a field of {} bytes", bytes.len())))?;
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(bytes);
        Ok(())
    }
    let version = i64::try_from(e.version.0)
        .map_err(|_| StoreError::Invalid(format!("version {} out of range", e.version.0)))?;
    let schema = i32::try_from(e.schema_version).map_err(|_| {
        StoreError::Invalid(format!("schema version {} out of range", e.schema_version))
    })?;
    // Microseconds truncated like the text path and sqlx's encoding.
    let micros = i64::try_from(e.recorded_at.unix_timestamp_nanos().div_euclid(1000))
        .ok()
        .and_then(|us| us.checked_sub(PG_EPOCH_US))
        .ok_or_else(|| {
            StoreError::Invalid(format!("recorded_at {} out of range", e.recorded_at))
        })?;
    let metadata = serde_json::to_vec(&e.metadata)
        .map_err(|err| StoreError::Invalid(format!("metadata: {err}")))?;
    buf.extend_from_slice(&10i16.to_be_bytes());
    field(buf, &position.to_be_bytes())?;
    field(buf, e.stream_id.as_str().as_bytes())?;
    field(buf, e.stream_type.as_bytes())?;
    field(buf, &version.to_be_bytes())?;
    field(buf, e.event_id.as_bytes())?;
    field(buf, e.event_type.as_bytes())?;
    field(buf, &schema.to_be_bytes())?;
    field(buf, e.payload.get().as_bytes())?;
    field(buf, &metadata)?;
    field(buf, &micros.to_be_bytes())?;
    Ok(())
}

/// Bytes of COPY data sent per message.
const COPY_CHUNK: usize = 1 << 20;

/// Why a COPY failed: bad data (an event the row encoding refused, or a
/// payload Postgres does not take as `json`) or the server.
enum CopyError {
    Invalid(StoreError),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        CopyError::Db(e)
    }
}

fn unique_violation_of(e: &CopyError) -> Option<String> {
    match e {
        CopyError::Db(e) => unique_violation(e),
        CopyError::Invalid(_) => None,
    }
}

fn copy_error(e: CopyError) -> StoreError {
    match e {
        CopyError::Invalid(e) => e,
        // 22P02 invalid_text_representation (e.g. a payload that is not
        // JSON): the input is wrong, not the server.
        CopyError::Db(sqlx::Error::Database(db)) if db.code().as_deref() == Some("22P02") => {
            StoreError::Invalid(format!("postgres refused an event: {}", db.message()))
        }
        CopyError::Db(e) => unavailable(e),
    }
}

/// COPYs `events` into `events` with positions `(xid << 16) | 1..=n`, on
/// `conn` (inside the caller's transaction). At most [`MAX_BATCH`] events.
async fn copy_events(
    conn: &mut PgConnection,
    xid: i64,
    events: &[&RecordedEvent],
) -> Result<(), CopyError> {
    let mut copy = conn.copy_in_raw(COPY_BINARY_SQL).await?;
    let mut buf: Vec<u8> = Vec::with_capacity(COPY_CHUNK + 4096);
    buf.extend_from_slice(BINARY_HEADER);
    for (ord, e) in events.iter().enumerate() {
        // ord < MAX_BATCH = 0xFFFF (checked by the callers); 1-based like
        // WITH ORDINALITY on the append path.
        let position = (xid << 16) | (ord as i64 + 1);
        if let Err(err) = copy_row_binary(&mut buf, position, e) {
            let _ = copy.abort("payorch: invalid event").await;
            return Err(CopyError::Invalid(err));
        }
        if buf.len() >= COPY_CHUNK {
            copy.send(std::mem::take(&mut buf)).await?;
            buf.reserve(COPY_CHUNK + 4096);
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    if !buf.is_empty() {
        copy.send(buf).await?;
    }
    copy.finish().await?;
    Ok(())
}

#[async_trait]
impl BulkImport for PostgresStore {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn import_batch(&self, events: &[RecordedEvent]) -> Result<ImportOutcome, StoreError> {
        if events.len() > MAX_BATCH {
            return Err(StoreError::Invalid(format!(
                "import batch of {} events exceeds {MAX_BATCH}",
                events.len()
            )));
        }
        check_consecutive(events)?;
        let mut tx = self.pool().begin().await.map_err(unavailable)?;

        // 1. Already stored ids: skipped if at the same place.
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let rows = sqlx::query(
            "SELECT event_id, stream_id, version FROM events WHERE event_id = ANY($1::uuid[])",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut stored: HashMap<Uuid, (String, i64)> = HashMap::with_capacity(rows.len());
        for row in rows {
            stored.insert(
                row.try_get(0).map_err(corrupt)?,
                (
                    row.try_get(1).map_err(corrupt)?,
                    row.try_get(2).map_err(corrupt)?,
                ),
            );
        }
        let mut fresh: Vec<&RecordedEvent> = Vec::with_capacity(events.len());
        for e in events {
            match stored.get(&e.event_id) {
                Some((s, v)) if s == e.stream_id.as_str() && *v as u64 == e.version.0 => {}
                Some(_) => {
                    return Err(StoreError::EventIdReused {
                        event_id: e.event_id,
                    });
                }
                None => fresh.push(e),
            }
        }
        let outcome = ImportOutcome {
            imported: fresh.len() as u64,
            already_present: (events.len() - fresh.len()) as u64,
        };
        if fresh.is_empty() {
            return Ok(outcome);
        }

        // 2. Each stream's first new event continues the stored stream.
        let mut first: HashMap<&str, u64> = HashMap::new();
        for e in &fresh {
            first.entry(e.stream_id.as_str()).or_insert(e.version.0);
        }
        let streams: Vec<String> = first.keys().map(|s| (*s).to_owned()).collect();
        let heads = sqlx::query(
            "SELECT stream_id, max(version) FROM events WHERE stream_id = ANY($1::text[]) \
             GROUP BY stream_id",
        )
        .bind(&streams)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut head: HashMap<String, u64> = HashMap::with_capacity(heads.len());
        for row in heads {
            let v: i64 = row.try_get(1).map_err(corrupt)?;
            head.insert(row.try_get(0).map_err(corrupt)?, v.max(0) as u64);
        }
        for (stream, v) in &first {
            let at = head.get(*stream).copied().unwrap_or(0);
            if *v != at + 1 {
                return Err(StoreError::Conflict {
                    stream: StreamId::new(*stream),
                    expected: ExpectedVersion::Exact(Version(v.saturating_sub(1))),
                    actual: Version(at),
                });
            }
        }

        // 3. One COPY for the batch, positions computed here from the
        // transaction's id (the append rule), so the server only parses
        // and indexes.
        let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::int8")
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        if let Err(e) = copy_events(&mut tx, xid, &fresh).await {
            return Err(match unique_violation_of(&e) {
                Some(c) => StoreError::Unavailable(format!(
                    "a concurrent writer stored events of these streams during the import \
                     ({c}); run the import again"
                )),
                None => copy_error(e),
            });
        }
        tx.commit().await.map_err(unavailable)?;
        self.notifier.appended(self.pool());
        Ok(outcome)
    }
}

// ---------------------------------------------------------------------------
// Bulk load: one transaction, indexes re-created at the end
// ---------------------------------------------------------------------------

/// An index of `events` as it was before a bulk load dropped it.
#[derive(Debug)]
struct IndexDef {
    /// The index's name.
    name: String,
    /// The constraint it backs (primary key, unique) and the constraint's
    /// definition (`UNIQUE (event_id)`), or `None` for a plain index.
    constraint: Option<(String, String)>,
    /// `CREATE [UNIQUE] INDEX ...` as Postgres prints it.
    create: String,
}

/// The indexes of `events` (resolved through `search_path`), in creation
/// order, with the constraints they back.
const INDEXES_SQL: &str = "\
SELECT ic.relname::text, con.conname::text, pg_get_constraintdef(con.oid), \
       pg_get_indexdef(i.indexrelid) \
FROM pg_index i \
JOIN pg_class ic ON ic.oid = i.indexrelid \
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid \
WHERE i.indrelid = 'events'::regclass \
ORDER BY i.indexrelid";

/// `name` as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Memory for each index build of a bulk load (a sort of every row): the
/// default 64 MB spills a million-event sort to disk.
const LOAD_MAINTENANCE_WORK_MEM: &str = "256MB";

/// A bulk load into an empty store: the whole import in ONE transaction
/// (see [`PostgresStore::begin_bulk_load`]).
///
/// * **Atomic.** [`BulkLoad::load`] COPYs a batch; [`BulkLoad::finish`]
///   re-creates the indexes and constraints dropped at the start and
///   commits. Until then nothing is visible, and anything that stops the
///   load (an error, a refused event, a dropped `BulkLoad`, a killed
///   process or a lost connection) rolls the transaction back: the store
///   is empty again *with its indexes and constraints*, because their
///   removal was part of the same transaction. There is no half-imported
///   state to recover from.
/// * **Positions** follow the append rule with one subtransaction per
///   batch: each batch runs in a savepoint whose own transaction id `s`
///   (read as the `xmin` of a row it writes to a temp table) gives the
///   batch positions `(s << 16) | 1..=n`. A subtransaction's id is unique
///   and greater than its parent's, and the parent stays running until the
///   commit, so `read_all`'s horizon (`pg_snapshot_xmin << 16`) holds
///   every batch back until all of them are visible at once; no other
///   transaction can write in the range of `s`. Positions increase in file
///   order across batches.
/// * **Validated** as the per-batch path is: every stream must start at
///   version 1 (the store is empty) and continue consecutively, checked
///   here before each COPY (a [`StoreError::Conflict`] naming the stream);
///   each event id must appear once, checked by the unique constraint
///   itself when it is re-created (a sort, like every index build), and a
///   duplicate is then named by one `GROUP BY` query
///   ([`StoreError::EventIdReused`]).
/// * **Locking.** `events` is locked `ACCESS EXCLUSIVE` for the whole
///   load: appends and reads of other sessions wait until it ends.
pub struct BulkLoad {
    tx: Transaction<'static, Postgres>,
    indexes: Vec<IndexDef>,
    /// Each stream's last loaded version.
    heads: HashMap<String, u64>,
    /// The top transaction's 64-bit id (its subtransactions' 32-bit ids
    /// are widened against it).
    top_xid: i64,
    loaded: u64,
    /// A batch failed: the transaction can only be rolled back.
    failed: bool,
}

impl std::fmt::Debug for BulkLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkLoad")
            .field("indexes", &self.indexes)
            .field("streams", &self.heads.len())
            .field("loaded", &self.loaded)
            .field("failed", &self.failed)
            .finish()
    }
}

impl PostgresStore {
    /// Starts a [`BulkLoad`] if `events` is empty, or returns `None` (the
    /// caller imports with [`BulkImport::import_batch`] instead). For an
    /// empty store, takes the `ACCESS EXCLUSIVE` lock on `events` (waiting
    /// at most 30 s for other sessions) and checks again, so that no
    /// append can slip in between the check and the load; then drops every index and constraint of `events`
    /// (remembering their definitions, whatever the migrations made them).
    pub async fn begin_bulk_load(&self) -> Result<Option<BulkLoad>, StoreError> {
        // A store with events is not locked at all (checked again under
        // the lock).
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events)")
            .fetch_one(self.pool())
            .await
            .map_err(unavailable)?;
        if any {
            return Ok(None);
        }
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        sqlx::raw_sql(
            "SET LOCAL lock_timeout = '30s'; \
             LOCK TABLE events IN ACCESS EXCLUSIVE MODE",
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            let timed_out = matches!(
                &e,
                sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03")
            );
            if timed_out {
                StoreError::Unavailable(
                    "the events table stayed locked by other sessions for 30 s \
                     (a running `payorch serve`?); try again"
                        .into(),
                )
            } else {
                unavailable(e)
            }
        })?;
        let non_empty: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events)")
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        if non_empty {
            tx.rollback().await.map_err(unavailable)?;
            return Ok(None);
        }
        let rows = sqlx::query(INDEXES_SQL)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let mut indexes = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get(0).map_err(corrupt)?;
            let con: Option<String> = row.try_get(1).map_err(corrupt)?;
            let def: Option<String> = row.try_get(2).map_err(corrupt)?;
            indexes.push(IndexDef {
                name,
                constraint: con.zip(def),
                create: row.try_get(3).map_err(corrupt)?,
            });
        }
        let drop_constraints: Vec<String> = indexes
            .iter()
            .filter_map(|i| i.constraint.as_ref())
            .map(|(c, _)| format!("DROP CONSTRAINT {}", ident(c)))
            .collect();
        if !drop_constraints.is_empty() {
            let sql = format!("ALTER TABLE events {}", drop_constraints.join(", "));
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        let plain: Vec<String> = indexes
            .iter()
            .filter(|i| i.constraint.is_none())
            .map(|i| ident(&i.name))
            .collect();
        if !plain.is_empty() {
            let sql = format!("DROP INDEX {}", plain.join(", "));
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        let top_xid = scalar_i64(
            &mut tx,
            "CREATE TEMP TABLE payorch_import_xid (x int) ON COMMIT DROP; \
             SELECT pg_current_xact_id()::text::int8",
        )
        .await?;
        Ok(Some(BulkLoad {
            tx,
            indexes,
            heads: HashMap::new(),
            top_xid,
            loaded: 0,
            failed: false,
        }))
    }
}

impl BulkLoad {
    /// Most events per [`BulkLoad::load`] call.
    pub fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    /// Events loaded so far (visible only after [`BulkLoad::finish`]).
    pub fn loaded(&self) -> u64 {
        self.loaded
    }

    /// Checks and COPYs one batch (in file order) in its own
    /// subtransaction. After an error the load is over: drop it (nothing
    /// is stored).
    pub async fn load(&mut self, events: &[RecordedEvent]) -> Result<u64, StoreError> {
        if self.failed {
            return Err(StoreError::Invalid(
                "a batch of this bulk load failed; nothing was stored".into(),
            ));
        }
        self.failed = true;
        if events.is_empty() {
            self.failed = false;
            return Ok(0);
        }
        if events.len() > MAX_BATCH {
            return Err(StoreError::Invalid(format!(
                "bulk load batch of {} events exceeds {MAX_BATCH}",
                events.len()
            )));
        }
        // Every stream starts at version 1 and continues: the store was
        // empty when the load began and nobody else can write to it.
        for e in events {
            let head = self.heads.get_mut(e.stream_id.as_str());
            let at = head.as_ref().map_or(0, |v| **v);
            if e.version.0 != at + 1 {
                return Err(StoreError::Conflict {
                    stream: e.stream_id.clone(),
                    expected: ExpectedVersion::Exact(Version(e.version.0.saturating_sub(1))),
                    actual: Version(at),
                });
            }
            match head {
                Some(v) => *v = e.version.0,
                None => {
                    self.heads
                        .insert(e.stream_id.as_str().to_owned(), e.version.0);
                }
            }
        }
        // A subtransaction with its own id for this batch's positions.
        let sub = scalar_i64(
            &mut self.tx,
            "SAVEPOINT payorch_batch; \
             INSERT INTO payorch_import_xid VALUES (1) RETURNING xmin::text::int8",
        )
        .await?;
        let xid = widen_xid(self.top_xid, sub)?;
        let refs: Vec<&RecordedEvent> = events.iter().collect();
        copy_events(&mut self.tx, xid, &refs)
            .await
            .map_err(copy_error)?;
        sqlx::raw_sql("RELEASE SAVEPOINT payorch_batch")
            .execute(&mut *self.tx)
            .await
            .map_err(unavailable)?;
        self.loaded += events.len() as u64;
        self.failed = false;
        Ok(events.len() as u64)
    }

    /// Ends the load without storing anything (the store keeps its indexes
    /// and constraints). Dropping a `BulkLoad` does the same once its
    /// connection is next used or closed; this waits for it.
    pub async fn abort(self) -> Result<(), StoreError> {
        self.tx.rollback().await.map_err(unavailable)
    }

    /// Re-creates the indexes and constraints (checking that every event
    /// id is unique), updates the planner statistics and commits. Returns
    /// the events stored. On an error nothing is stored and the store
    /// keeps its indexes and constraints.
    pub async fn finish(mut self) -> Result<u64, StoreError> {
        if self.failed {
            return Err(StoreError::Invalid(
                "a batch of this bulk load failed; nothing was stored".into(),
            ));
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET LOCAL maintenance_work_mem = '{LOAD_MAINTENANCE_WORK_MEM}'; \
             SAVEPOINT payorch_indexes"
        )))
        .execute(&mut *self.tx)
        .await
        .map_err(unavailable)?;
        let mut plain = Vec::new();
        let mut constraints = Vec::new();
        for i in &self.indexes {
            match &i.constraint {
                Some((name, def)) => {
                    constraints.push(format!("ADD CONSTRAINT {} {def}", ident(name)))
                }
                None => plain.push(format!("{};", i.create)),
            }
        }
        let mut sql = String::new();
        if !constraints.is_empty() {
            sql.push_str(&format!("ALTER TABLE events {};", constraints.join(", ")));
        }
        for p in plain {
            sql.push_str(&p);
        }
        if !sql.is_empty()
            && let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *self.tx)
                .await
        {
            let Some(constraint) = unique_violation(&e) else {
                return Err(unavailable(e));
            };
            // Name the offending event (the failed build left nothing to
            // roll back but its own work).
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT payorch_indexes")
                .execute(&mut *self.tx)
                .await
                .map_err(unavailable)?;
            let dup: Option<Uuid> = sqlx::query_scalar(
                "SELECT event_id FROM events GROUP BY event_id HAVING count(*) > 1 LIMIT 1",
            )
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(unavailable)?;
            return Err(match dup {
                Some(event_id) => StoreError::EventIdReused { event_id },
                None => StoreError::Invalid(format!(
                    "the imported events break the unique constraint {constraint}"
                )),
            });
        }
        sqlx::raw_sql("ANALYZE events")
            .execute(&mut *self.tx)
            .await
            .map_err(unavailable)?;
        self.tx.commit().await.map_err(unavailable)?;
        Ok(self.loaded)
    }
}

/// The one value the last statement of `sql` (several statements, sent
/// as one simple query: one round trip) returns.
async fn scalar_i64(conn: &mut PgConnection, sql: &'static str) -> Result<i64, StoreError> {
    let rows = sqlx::raw_sql(sql)
        .fetch_all(conn)
        .await
        .map_err(unavailable)?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt(format!("no row from {sql}")))?;
    row.try_get(0).map_err(corrupt)
}

/// The 64-bit id of a subtransaction of `top` from its 32-bit id (`xmin`):
/// subtransaction ids are assigned after their parent's, less than 2^31
/// later.
fn widen_xid(top: i64, sub32: i64) -> Result<i64, StoreError> {
    let low = (top as u64 & 0xFFFF_FFFF) as u32;
    let delta = i64::from((sub32 as u64 as u32).wrapping_sub(low));
    if delta <= 0 || delta >= 1 << 31 {
        return Err(StoreError::Corrupt(format!(
            "subtransaction id {sub32} is not after its transaction's {top}"
        )));
    }
    Ok(top + delta)
}

#[cfg(test)]
mod tests {
    use super::{ident, widen_xid};

    #[test]
    fn subtransaction_ids_widen_across_an_epoch() {
        assert_eq!(widen_xid(5 << 32 | 100, 103).ok(), Some(5 << 32 | 103));
        // The 32-bit counter wrapped between parent and child.
        assert_eq!(
            widen_xid(5 << 32 | 0xFFFF_FFF0, 3).ok(),
            Some((6 << 32) | 3)
        );
        assert!(widen_xid(5 << 32 | 100, 100).is_err(), "not after");
        assert!(widen_xid(5 << 32 | 100, 99).is_err(), "before");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("events_pkey"), "\"events_pkey\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
