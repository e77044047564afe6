//! [`BulkImport`] on SQLite (`payorch import`): one write transaction per
//! batch (SQLite's cost is the commit, not the statement), the same checks
//! as an append at each event's version. Not on the append path.

use std::collections::HashMap;

use async_trait::async_trait;
use payorch_engine::bulk::{BulkImport, ImportOutcome, check_consecutive};
use payorch_engine::store::{ExpectedVersion, RecordedEvent, StoreError, StreamId, Version};

use crate::{SqliteStore, format_time, to_i64, unavailable};

#[async_trait]
impl BulkImport for SqliteStore {
    fn max_batch(&self) -> usize {
        10_000
    }

    async fn import_batch(&self, events: &[RecordedEvent]) -> Result<ImportOutcome, StoreError> {
        check_consecutive(events)?;
        let mut tx = self.begin_write().await?;
        let mut head: HashMap<&str, u64> = HashMap::new();
        let mut outcome = ImportOutcome::default();
        for e in events {
            let id = e.event_id.to_string();
            let at: Option<(String, i64)> =
                sqlx::query_as("SELECT stream_id, version FROM events WHERE event_id = ?")
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            match at {
                Some((s, v)) if s == e.stream_id.as_str() && v as u64 == e.version.0 => {
                    outcome.already_present += 1;
                    continue;
                }
                Some(_) => {
                    return Err(StoreError::EventIdReused {
                        event_id: e.event_id,
                    });
                }
                None => {}
            }
            let current = match head.get(e.stream_id.as_str()) {
                Some(v) => *v,
                None => {
                    let v: Option<i64> =
                        sqlx::query_scalar("SELECT max(version) FROM events WHERE stream_id = ?")
                            .bind(e.stream_id.as_str())
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(unavailable)?;
                    v.unwrap_or(0).max(0) as u64
                }
            };
            if e.version.0 != current + 1 {
                return Err(StoreError::Conflict {
                    stream: StreamId::new(e.stream_id.as_str()),
                    expected: ExpectedVersion::Exact(Version(e.version.0.saturating_sub(1))),
                    actual: Version(current),
                });
            }
            let metadata = serde_json::to_string(&e.metadata)
                .map_err(|err| StoreError::Invalid(format!("metadata: {err}")))?;
            sqlx::query(
                "INSERT INTO events (stream_id, stream_type, version, event_id, event_type, \
                 schema_version, payload, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(e.stream_id.as_str())
            .bind(&e.stream_type)
            .bind(to_i64(e.version.0, "version")?)
            .bind(&id)
            .bind(&e.event_type)
            .bind(i64::from(e.schema_version))
            .bind(e.payload.get())
            .bind(metadata)
            .bind(format_time(e.recorded_at)?)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            head.insert(e.stream_id.as_str(), e.version.0);
            outcome.imported += 1;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(outcome)
    }
}
