//! [`OpenWorkIndex`] on Postgres: the `open_work` table (migration 0004),
//! one row per stream with open work. Kept apart from the append SQL: only
//! the reconciler's projector writes it.

use std::collections::HashMap;

use async_trait::async_trait;
use payorch_engine::open_work::{OpenItem, OpenWorkIndex, WorkKind};
use payorch_engine::store::{StoreError, StreamId};
use sqlx::Row;
use time::OffsetDateTime;

use crate::{PostgresStore, corrupt, limit_i64, retrying, unavailable};

const UPSERT_SQL: &str = "INSERT INTO open_work (stream_id, kind, since, touched_at) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) \
     ON CONFLICT (stream_id) DO UPDATE SET kind = excluded.kind, since = excluded.since, \
     touched_at = excluded.touched_at";

const DELETE_SQL: &str = "DELETE FROM open_work WHERE stream_id = ANY($1::text[])";

const LIST_SQL: &str = "SELECT stream_id, kind, since, touched_at FROM open_work \
     WHERE kind = $1 AND ($2::timestamptz IS NULL OR touched_at <= $2) \
     AND ($3::text IS NULL OR stream_id > $3) \
     ORDER BY stream_id LIMIT $4";

#[async_trait]
impl OpenWorkIndex for PostgresStore {
    async fn apply(&self, open: &[OpenItem], closed: &[StreamId]) -> Result<(), StoreError> {
        // One row per stream in the upsert (ON CONFLICT cannot touch a row
        // twice); the last item of a stream wins.
        let mut last: HashMap<&StreamId, &OpenItem> = HashMap::new();
        for item in open {
            last.insert(&item.stream_id, item);
        }
        let mut streams = Vec::with_capacity(last.len());
        let mut kinds = Vec::with_capacity(last.len());
        let mut since = Vec::with_capacity(last.len());
        let mut touched = Vec::with_capacity(last.len());
        for item in last.values() {
            streams.push(item.stream_id.as_str().to_owned());
            kinds.push(item.kind.as_str().to_owned());
            since.push(item.since);
            touched.push(item.touched_at);
        }
        let closed: Vec<String> = closed.iter().map(|s| s.as_str().to_owned()).collect();
        retrying(|| async {
            let mut tx = self.pool().begin().await?;
            if !streams.is_empty() {
                sqlx::query(UPSERT_SQL)
                    .bind(&streams)
                    .bind(&kinds)
                    .bind(&since)
                    .bind(&touched)
                    .execute(&mut *tx)
                    .await?;
            }
            if !closed.is_empty() {
                sqlx::query(DELETE_SQL)
                    .bind(&closed)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
        .await
    }

    async fn list(
        &self,
        kind: WorkKind,
        touched_before: Option<OffsetDateTime>,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<OpenItem>, StoreError> {
        let after = after.map(|s| s.as_str().to_owned());
        let rows = retrying(|| {
            sqlx::query(LIST_SQL)
                .bind(kind.as_str())
                .bind(touched_before)
                .bind(after.as_deref())
                .bind(limit_i64(limit))
                .fetch_all(self.pool())
        })
        .await?;
        rows.iter()
            .map(|row| {
                let kind_name: &str = row.try_get(1).map_err(corrupt)?;
                let kind = WorkKind::parse(kind_name).ok_or_else(|| {
                    StoreError::Corrupt(format!("open_work.kind {kind_name:?} is unknown"))
                })?;
                Ok(OpenItem {
                    stream_id: StreamId::new(row.try_get::<String, _>(0).map_err(corrupt)?),
                    kind,
                    since: row.try_get(2).map_err(corrupt)?,
                    touched_at: row.try_get(3).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn count(&self, kind: WorkKind) -> Result<u64, StoreError> {
        let n: i64 = retrying(|| {
            sqlx::query_scalar("SELECT count(*) FROM open_work WHERE kind = $1")
                .bind(kind.as_str())
                .fetch_one(self.pool())
        })
        .await?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
    }

    async fn clear(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM open_work")
            .execute(self.pool())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
