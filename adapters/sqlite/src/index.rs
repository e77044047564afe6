//! The listing index ([`ResourceIndex`]) on SQLite: tables
//! `resource_index` and `resource_index_metadata` (migration 0005), one
//! index per filter. Writes go through the single write connection.

use async_trait::async_trait;
use payorch_engine::listing::{
    IndexRow, ListError, ListPage, ListQuery, Placeholders, ResourceIndex, SqlParam,
    cursor_statement, list_statement, micros, page_of,
};
use payorch_engine::store::StoreError;
use sqlx::{Row, Sqlite};

use crate::{SqliteStore, unavailable};

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, <Sqlite as sqlx::Database>::Arguments>;

/// Binds a listing statement's parameters in order.
fn bind<'q>(mut query: Query<'q>, params: &[SqlParam<'_>]) -> Query<'q> {
    for p in params {
        query = match *p {
            SqlParam::Text(s) => query.bind(s.to_owned()),
            SqlParam::Int(i) => query.bind(i),
        };
    }
    query
}

#[async_trait]
impl ResourceIndex for SqliteStore {
    async fn upsert(&self, rows: &[IndexRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for r in rows {
            let id = r.id.to_string();
            let done = sqlx::query(
                "INSERT INTO resource_index (kind, id, merchant_id, status, merchant_reference, \
                 created_position, created_at_us, updated_at_us, version) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
            sqlx::query("DELETE FROM resource_index_metadata WHERE kind = ? AND id = ?")
                .bind(r.kind.as_str())
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            for (k, v) in &r.metadata {
                sqlx::query(
                    "INSERT INTO resource_index_metadata (kind, id, merchant_id, key, value) \
                     VALUES (?, ?, ?, ?, ?)",
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
                let text = id.to_string();
                let st = cursor_statement(q, &text, Placeholders::Question);
                let row = bind(sqlx::query(sqlx::AssertSqlSafe(st.sql)), &st.params)
                    .fetch_optional(self.read_pool())
                    .await
                    .map_err(unavailable)?;
                match row {
                    Some(r) => Some(r.try_get(0).map_err(unavailable)?),
                    None => return Err(ListError::UnknownCursor(id, q.kind.as_str())),
                }
            }
            None => None,
        };
        let st = list_statement(q, before, Placeholders::Question);
        let rows = bind(sqlx::query(sqlx::AssertSqlSafe(st.sql)), &st.params)
            .fetch_all(self.read_pool())
            .await
            .map_err(unavailable)?;
        let ids = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        Ok(page_of(q, ids)?)
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
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
