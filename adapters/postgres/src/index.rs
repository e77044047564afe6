//! The listing index ([`ResourceIndex`]) on Postgres: tables
//! `resource_index` and `resource_index_metadata` (migration 0005), one
//! index per filter. Rows are upserted in one transaction per batch.

use async_trait::async_trait;
use payorch_engine::listing::{IndexRow, ListError, ListPage, ListQuery, MAX_LIMIT, ResourceIndex};
use payorch_engine::store::StoreError;
use sqlx::{Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{PostgresStore, unavailable};

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl ResourceIndex for PostgresStore {
    async fn upsert(&self, rows: &[IndexRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        for r in rows {
            let id = r.id.to_string();
            let done = sqlx::query(
                "INSERT INTO resource_index (kind, id, merchant_id, status, merchant_reference, \
                 created_position, created_at_us, updated_at_us, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (kind, id) DO UPDATE SET merchant_id = excluded.merchant_id, \
                 status = excluded.status, merchant_reference = excluded.merchant_reference, \
                 created_position = excluded.created_position, created_at_us = excluded.created_at_us, \
                 updated_at_us = excluded.updated_at_us, version = excluded.version \
                 WHERE resource_index.version <= excluded.version",
            )
            .bind(r.kind.as_str())
            .bind(&id)
            .bind(&r.merchant_id)
            .bind(&r.status)
            .bind(r.merchant_reference.as_deref())
            .bind(int(r.created_position))
            .bind(micros(r.created_at))
            .bind(micros(r.updated_at))
            .bind(int(r.version))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            if done.rows_affected() == 0 {
                continue; // a newer fold is stored
            }
            sqlx::query("DELETE FROM resource_index_metadata WHERE kind = $1 AND id = $2")
                .bind(r.kind.as_str())
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            for (k, v) in &r.metadata {
                sqlx::query(
                    "INSERT INTO resource_index_metadata (kind, id, merchant_id, key, value) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(r.kind.as_str())
                .bind(&id)
                .bind(&r.merchant_id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn list(&self, q: &ListQuery) -> Result<ListPage, ListError> {
        let before: Option<i64> = match q.starting_after {
            Some(id) => {
                let row = sqlx::query(
                    "SELECT created_position FROM resource_index \
                     WHERE kind = $1 AND id = $2 AND merchant_id = $3",
                )
                .bind(q.kind.as_str())
                .bind(id.to_string())
                .bind(&q.merchant_id)
                .fetch_optional(self.pool())
                .await
                .map_err(unavailable)?;
                match row {
                    Some(r) => Some(r.try_get(0).map_err(unavailable)?),
                    None => return Err(ListError::UnknownCursor(id, q.kind.as_str())),
                }
            }
            None => None,
        };
        let limit = q.limit.clamp(1, MAX_LIMIT);
        let mut b: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT r.id FROM resource_index r WHERE r.merchant_id = ");
        b.push_bind(&q.merchant_id);
        b.push(" AND r.kind = ").push_bind(q.kind.as_str());
        if let Some(s) = &q.status {
            b.push(" AND r.status = ").push_bind(s);
        }
        if let Some(t) = q.created_gte {
            b.push(" AND r.created_at_us >= ").push_bind(micros(t));
        }
        if let Some(t) = q.created_lte {
            b.push(" AND r.created_at_us <= ").push_bind(micros(t));
        }
        if let Some(r) = &q.merchant_reference {
            b.push(" AND r.merchant_reference = ").push_bind(r);
        }
        if let Some((k, v)) = &q.metadata {
            b.push(
                " AND EXISTS (SELECT 1 FROM resource_index_metadata m \
                 WHERE m.merchant_id = r.merchant_id AND m.kind = r.kind AND m.id = r.id AND m.key = ",
            )
            .push_bind(k)
            .push(" AND m.value = ")
            .push_bind(v)
            .push(")");
        }
        if let Some(p) = before {
            b.push(" AND r.created_position < ").push_bind(p);
        }
        b.push(" ORDER BY r.created_position DESC LIMIT ")
            .push_bind(int(limit as u64 + 1));
        let rows = b
            .build()
            .fetch_all(self.pool())
            .await
            .map_err(unavailable)?;
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows {
            let text: String = r.try_get(0).map_err(unavailable)?;
            ids.push(
                Uuid::parse_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("resource_index id {text:?}: {e}")))?,
            );
        }
        let has_more = ids.len() > limit;
        ids.truncate(limit);
        Ok(ListPage { ids, has_more })
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(unavailable)?;
        for sql in [
            "DELETE FROM resource_index_metadata",
            "DELETE FROM resource_index",
        ] {
            sqlx::query(sql)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }
}
