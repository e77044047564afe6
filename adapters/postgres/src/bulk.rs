//! [`BulkImport`] on Postgres (`payorch import`): one transaction per
//! batch, three statements whatever its size: look up the batch's event
//! ids, read the heads of its streams, insert the new events with one
//! `INSERT ... SELECT FROM UNNEST(arrays)`. Positions follow the append
//! rule (`(xid << 16) | ordinal`, see the crate docs), so a batch holds at
//! most [`crate::MAX_BATCH`] events. Not on the append path.

use std::collections::HashMap;

use async_trait::async_trait;
use payorch_engine::bulk::{BulkImport, ImportOutcome, check_consecutive};
use payorch_engine::store::{ExpectedVersion, RecordedEvent, StoreError, StreamId, Version};
use sqlx::Row;
use uuid::Uuid;

use crate::{MAX_BATCH, PostgresStore, corrupt, unavailable, unique_violation};

const INSERT_SQL: &str = "INSERT INTO events (global_position, stream_id, stream_type, version, \
     event_id, event_type, schema_version, payload, metadata, recorded_at) \
     SELECT (pg_current_xact_id()::text::int8 << 16) | u.ord, u.stream_id, u.stream_type, \
            u.version, u.event_id, u.event_type, u.schema_version, u.payload::json, \
            u.metadata::json, u.recorded_at \
     FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::uuid[], $5::text[], $6::int4[], \
                 $7::text[], $8::text[], $9::timestamptz[]) \
       WITH ORDINALITY AS u(stream_id, stream_type, version, event_id, event_type, \
                            schema_version, payload, metadata, recorded_at, ord)";

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

        // 3. One insert for the batch.
        let n = fresh.len();
        let (mut sid, mut sty, mut ver, mut eid, mut ety, mut sch, mut pay, mut meta, mut rec) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for e in fresh {
            sid.push(e.stream_id.as_str());
            sty.push(e.stream_type.as_str());
            ver.push(i64::try_from(e.version.0).map_err(|_| {
                StoreError::Invalid(format!("version {} out of range", e.version.0))
            })?);
            eid.push(e.event_id);
            ety.push(e.event_type.as_str());
            sch.push(i32::try_from(e.schema_version).map_err(|_| {
                StoreError::Invalid(format!("schema version {} out of range", e.schema_version))
            })?);
            pay.push(e.payload.get());
            meta.push(
                serde_json::to_string(&e.metadata)
                    .map_err(|err| StoreError::Invalid(format!("metadata: {err}")))?,
            );
            rec.push(e.recorded_at);
        }
        let inserted = sqlx::query(INSERT_SQL)
            .bind(&sid)
            .bind(&sty)
            .bind(&ver)
            .bind(&eid)
            .bind(&ety)
            .bind(&sch)
            .bind(&pay)
            .bind(&meta)
            .bind(&rec)
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) => {
                return Err(match unique_violation(&e) {
                    Some(c) => StoreError::Unavailable(format!(
                        "a concurrent writer stored events of these streams during the import \
                         ({c}); run the import again"
                    )),
                    None => unavailable(e),
                });
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(outcome)
    }
}
