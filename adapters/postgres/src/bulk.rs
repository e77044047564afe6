//! [`BulkImport`] on Postgres (`payorch import`): one transaction per
//! batch, four round trips whatever its size: look up the batch's event
//! ids (ids already stored at the same place are skipped), read the heads
//! of its streams (each stream must continue), read the transaction id,
//! then `COPY events FROM STDIN` (text format) with the new events.
//! Positions follow the append rule (`(xid << 16) | ordinal`, see the
//! crate docs), computed here, so a batch holds at most
//! [`crate::MAX_BATCH`] events. Payloads are sent as stored (no JSON
//! re-serialisation); Postgres still checks them as `json`. Not on the
//! append path.

use std::collections::HashMap;

use async_trait::async_trait;
use payorch_engine::bulk::{BulkImport, ImportOutcome, check_consecutive};
use payorch_engine::store::{ExpectedVersion, RecordedEvent, StoreError, StreamId, Version};
use sqlx::Row;
use uuid::Uuid;

use crate::{MAX_BATCH, PostgresStore, corrupt, unavailable, unique_violation};

const COPY_SQL: &str = "COPY events (global_position, stream_id, stream_type, version, \
     event_id, event_type, schema_version, payload, metadata, recorded_at) FROM STDIN";

/// Bytes of COPY data sent per message.
const COPY_CHUNK: usize = 1 << 20;

/// Appends `value` as a COPY text-format field: backslash, tab, newline
/// and carriage return escaped.
fn copy_text(buf: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(esc);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// One COPY text-format row of `events` (see [`COPY_SQL`]'s columns).
fn copy_row(buf: &mut Vec<u8>, position: i64, e: &RecordedEvent) -> Result<(), StoreError> {
    use std::io::Write as _;
    let version = i64::try_from(e.version.0)
        .map_err(|_| StoreError::Invalid(format!("version {} out of range", e.version.0)))?;
    let schema = i32::try_from(e.schema_version).map_err(|_| {
        StoreError::Invalid(format!("schema version {} out of range", e.schema_version))
    })?;
    // UTC, microseconds truncated like sqlx's encoding on the append path.
    let t = e.recorded_at.to_offset(time::UtcOffset::UTC);
    let _ = write!(buf, "{position}\t");
    copy_text(buf, e.stream_id.as_str());
    buf.push(b'\t');
    copy_text(buf, &e.stream_type);
    let _ = write!(buf, "\t{version}\t{}\t", e.event_id);
    copy_text(buf, &e.event_type);
    let _ = write!(buf, "\t{schema}\t");
    copy_text(buf, e.payload.get());
    buf.push(b'\t');
    let metadata = serde_json::to_string(&e.metadata)
        .map_err(|err| StoreError::Invalid(format!("metadata: {err}")))?;
    copy_text(buf, &metadata);
    let _ = writeln!(
        buf,
        "\t{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    );
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
        let mut copy = tx.copy_in_raw(COPY_SQL).await.map_err(unavailable)?;
        let mut buf: Vec<u8> = Vec::with_capacity(COPY_CHUNK + 4096);
        for (ord, e) in fresh.iter().enumerate() {
            // ord < MAX_BATCH = 0xFFFF: checked above; 1-based like
            // WITH ORDINALITY on the append path.
            let position = (xid << 16) | (ord as i64 + 1);
            copy_row(&mut buf, position, e)?;
            if buf.len() >= COPY_CHUNK {
                copy.send(std::mem::take(&mut buf))
                    .await
                    .map_err(unavailable)?;
                buf.reserve(COPY_CHUNK + 4096);
            }
        }
        if !buf.is_empty() {
            copy.send(buf).await.map_err(unavailable)?;
        }
        if let Err(e) = copy.finish().await {
            return Err(match unique_violation(&e) {
                Some(c) => StoreError::Unavailable(format!(
                    "a concurrent writer stored events of these streams during the import \
                     ({c}); run the import again"
                )),
                None => unavailable(e),
            });
        }
        tx.commit().await.map_err(unavailable)?;
        self.notifier.appended(self.pool());
        Ok(outcome)
    }
}
