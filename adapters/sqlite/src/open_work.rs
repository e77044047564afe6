//! [`OpenWorkIndex`] on SQLite: the `open_work` table (migration 0004), one
//! row per stream with open work. Kept apart from the append SQL: only the
//! reconciler's projector writes it.

use async_trait::async_trait;
use payorch_engine::open_work::{OpenItem, OpenWorkIndex, WorkKind};
use payorch_engine::store::{StoreError, StreamId};
use sqlx::Row;
use time::OffsetDateTime;

use crate::{SqliteStore, corrupt, unavailable};

/// Unix microseconds (the stored form of a time).
fn micros(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos() / 1_000)
        .map_err(|_| StoreError::Invalid(format!("unrepresentable time {t}")))
}

fn from_micros(us: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|e| StoreError::Corrupt(format!("open_work time {us}: {e}")))
}

#[async_trait]
impl OpenWorkIndex for SqliteStore {
    async fn apply(&self, open: &[OpenItem], closed: &[StreamId]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for item in open {
            sqlx::query(
                "INSERT INTO open_work (stream_id, kind, since_us, touched_us) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (stream_id) DO UPDATE SET kind = excluded.kind, \
                 since_us = excluded.since_us, touched_us = excluded.touched_us",
            )
            .bind(item.stream_id.as_str())
            .bind(item.kind.as_str())
            .bind(micros(item.since)?)
            .bind(micros(item.touched_at)?)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        for stream in closed {
            sqlx::query("DELETE FROM open_work WHERE stream_id = ?")
                .bind(stream.as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn list(
        &self,
        kind: WorkKind,
        touched_before: Option<OffsetDateTime>,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<OpenItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream_id, kind, since_us, touched_us FROM open_work \
             WHERE kind = ? AND (? IS NULL OR touched_us <= ?) AND (? IS NULL OR stream_id > ?) \
             ORDER BY stream_id LIMIT ?",
        )
        .bind(kind.as_str())
        .bind(touched_before.map(micros).transpose()?)
        .bind(touched_before.map(micros).transpose()?)
        .bind(after.map(StreamId::as_str))
        .bind(after.map(StreamId::as_str))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.read_pool())
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let kind_name: &str = row.try_get(1).map_err(corrupt)?;
                let kind = WorkKind::parse(kind_name).ok_or_else(|| {
                    StoreError::Corrupt(format!("open_work.kind {kind_name:?} is unknown"))
                })?;
                Ok(OpenItem {
                    stream_id: StreamId::new(row.try_get::<String, _>(0).map_err(corrupt)?),
                    kind,
                    since: from_micros(row.try_get(2).map_err(corrupt)?)?,
                    touched_at: from_micros(row.try_get(3).map_err(corrupt)?)?,
                })
            })
            .collect()
    }

    async fn count(&self, kind: WorkKind) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM open_work WHERE kind = ?")
            .bind(kind.as_str())
            .fetch_one(self.read_pool())
            .await
            .map_err(unavailable)?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM open_work")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }
}
