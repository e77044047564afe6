//! [`WebhookDeliveryLog`] on SQLite: tables `webhook_deliveries` and
//! `webhook_delivery_attempts` (migration 0006). An attempt is one write
//! transaction (the delivery upsert returning the attempt number, then the
//! attempt row). Times are Unix microseconds.

use std::collections::HashMap;

use async_trait::async_trait;
use payorch_engine::store::{Position, StoreError};
use payorch_engine::webhook_out::{
    Attempt, AttemptWrite, Delivery, DeliveryListError, DeliveryPage, DeliveryQuery, DeliveryState,
    DeliveryTarget, ErrorClass, RedeliveryRequest, WebhookDeliveryLog,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{SqliteStore, corrupt, limit_i64, to_i64, to_u64, unavailable};

const COLUMNS: &str = "endpoint_id, event_id, merchant_id, stream_id, event_type, position, \
     state, attempt_count, first_attempt_us, last_attempt_us, next_attempt_us, \
     redelivery_requested_us";

fn micros(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos() / 1_000)
        .map_err(|_| StoreError::Invalid(format!("unrepresentable time {t}")))
}

fn from_micros(us: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|e| StoreError::Corrupt(format!("webhook log time {us}: {e}")))
}

fn opt_micros(us: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    us.map(from_micros).transpose()
}

fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("event id {s:?}: {e}")))
}

fn decode(row: &SqliteRow) -> Result<Delivery, StoreError> {
    let state: String = row.try_get("state").map_err(corrupt)?;
    let state = DeliveryState::parse(&state).ok_or_else(|| {
        StoreError::Corrupt(format!("webhook_deliveries.state {state:?} is unknown"))
    })?;
    let count: i64 = row.try_get("attempt_count").map_err(corrupt)?;
    let event_id: String = row.try_get("event_id").map_err(corrupt)?;
    Ok(Delivery {
        target: DeliveryTarget {
            endpoint_id: row.try_get("endpoint_id").map_err(corrupt)?,
            merchant_id: row.try_get("merchant_id").map_err(corrupt)?,
            event_id: uuid(&event_id)?,
            stream_id: row.try_get("stream_id").map_err(corrupt)?,
            event_type: row.try_get("event_type").map_err(corrupt)?,
            position: to_u64(row.try_get("position").map_err(corrupt)?, "position")?,
        },
        state,
        attempt_count: u32::try_from(count)
            .map_err(|_| StoreError::Corrupt(format!("attempt_count {count}")))?,
        first_attempt_at: from_micros(row.try_get("first_attempt_us").map_err(corrupt)?)?,
        last_attempt_at: from_micros(row.try_get("last_attempt_us").map_err(corrupt)?)?,
        next_attempt_at: opt_micros(row.try_get("next_attempt_us").map_err(corrupt)?)?,
        redelivery_requested_at: opt_micros(
            row.try_get("redelivery_requested_us").map_err(corrupt)?,
        )?,
        attempts: Vec::new(),
    })
}

fn decode_attempt(row: &SqliteRow) -> Result<(String, Attempt), StoreError> {
    let number: i64 = row.try_get("number").map_err(corrupt)?;
    let status: Option<i64> = row.try_get("status").map_err(corrupt)?;
    let error: Option<String> = row.try_get("error_class").map_err(corrupt)?;
    let error = match error {
        Some(e) => Some(ErrorClass::parse(&e).ok_or_else(|| {
            StoreError::Corrupt(format!("webhook_delivery_attempts.error_class {e:?}"))
        })?),
        None => None,
    };
    let manual: i64 = row.try_get("manual").map_err(corrupt)?;
    Ok((
        row.try_get("event_id").map_err(corrupt)?,
        Attempt {
            number: u32::try_from(number)
                .map_err(|_| StoreError::Corrupt(format!("attempt number {number}")))?,
            at: from_micros(row.try_get("at_us").map_err(corrupt)?)?,
            status: status
                .map(|s| u16::try_from(s).map_err(|_| StoreError::Corrupt(format!("status {s}"))))
                .transpose()?,
            error,
            latency_ms: to_u64(row.try_get("latency_ms").map_err(corrupt)?, "latency_ms")?,
            manual: manual != 0,
        },
    ))
}

impl SqliteStore {
    /// Fills the attempts of `deliveries` (all of one endpoint).
    async fn with_attempts(
        &self,
        endpoint_id: &str,
        mut deliveries: Vec<Delivery>,
    ) -> Result<Vec<Delivery>, StoreError> {
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let marks = vec!["?"; deliveries.len()].join(", ");
        let sql = format!(
            "SELECT event_id, number, at_us, status, error_class, latency_ms, manual \
             FROM webhook_delivery_attempts WHERE endpoint_id = ? AND event_id IN ({marks}) \
             ORDER BY event_id, number"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(endpoint_id.to_owned());
        for d in &deliveries {
            query = query.bind(d.target.event_id.to_string());
        }
        let rows = query
            .fetch_all(self.read_pool())
            .await
            .map_err(unavailable)?;
        let mut by_event: HashMap<String, Vec<Attempt>> = HashMap::new();
        for row in &rows {
            let (id, a) = decode_attempt(row)?;
            by_event.entry(id).or_default().push(a);
        }
        for d in &mut deliveries {
            d.attempts = by_event
                .remove(&d.target.event_id.to_string())
                .unwrap_or_default();
        }
        Ok(deliveries)
    }

    async fn fetch_deliveries(
        &self,
        sql: String,
        binds: Vec<Option<String>>,
        ints: Vec<i64>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b);
        }
        for i in ints {
            query = query.bind(i);
        }
        let rows = query
            .fetch_all(self.read_pool())
            .await
            .map_err(unavailable)?;
        rows.iter().map(decode).collect()
    }
}

#[async_trait]
impl WebhookDeliveryLog for SqliteStore {
    async fn record_attempt(&self, w: &AttemptWrite) -> Result<u32, StoreError> {
        let t = &w.target;
        let event_id = t.event_id.to_string();
        let at = micros(w.at)?;
        let mut tx = self.begin_write().await?;
        let number: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_deliveries AS w (endpoint_id, event_id, merchant_id, stream_id, \
               event_type, position, state, attempt_count, first_attempt_us, last_attempt_us, \
               next_attempt_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8, ?9) \
             ON CONFLICT (endpoint_id, event_id) DO UPDATE SET state = excluded.state, \
               attempt_count = w.attempt_count + 1, last_attempt_us = excluded.last_attempt_us, \
               next_attempt_us = excluded.next_attempt_us, \
               redelivery_requested_us = CASE WHEN ?10 IS NOT NULL \
                 AND w.redelivery_requested_us = ?10 THEN NULL \
                 ELSE w.redelivery_requested_us END \
             RETURNING attempt_count",
        )
        .bind(&t.endpoint_id)
        .bind(&event_id)
        .bind(&t.merchant_id)
        .bind(&t.stream_id)
        .bind(&t.event_type)
        .bind(to_i64(t.position, "position")?)
        .bind(w.state.as_str())
        .bind(at)
        .bind(w.next_attempt_at.map(micros).transpose()?)
        .bind(w.answers_request.map(micros).transpose()?)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO webhook_delivery_attempts (endpoint_id, event_id, number, at_us, status, \
             error_class, latency_ms, manual) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.endpoint_id)
        .bind(&event_id)
        .bind(number)
        .bind(at)
        .bind(w.status.map(i64::from))
        .bind(w.error.map(ErrorClass::as_str))
        .bind(i64::try_from(w.latency_ms).unwrap_or(i64::MAX))
        .bind(i64::from(w.manual))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        u32::try_from(number).map_err(|_| StoreError::Corrupt(format!("attempt number {number}")))
    }

    async fn delivery(
        &self,
        endpoint_id: &str,
        event_id: Uuid,
    ) -> Result<Option<Delivery>, StoreError> {
        let found = self
            .fetch_deliveries(
                format!(
                    "SELECT {COLUMNS} FROM webhook_deliveries WHERE endpoint_id = ? AND event_id = ?"
                ),
                vec![Some(endpoint_id.to_owned()), Some(event_id.to_string())],
                vec![],
            )
            .await?;
        Ok(self.with_attempts(endpoint_id, found).await?.pop())
    }

    async fn list(&self, q: &DeliveryQuery) -> Result<DeliveryPage, DeliveryListError> {
        let below: Option<i64> = match q.starting_after {
            Some(c) => {
                let p: Option<i64> = sqlx::query_scalar(
                    "SELECT position FROM webhook_deliveries WHERE endpoint_id = ? AND event_id = ?",
                )
                .bind(&q.endpoint_id)
                .bind(c.to_string())
                .fetch_optional(self.read_pool())
                .await
                .map_err(unavailable)?;
                Some(p.ok_or(DeliveryListError::UnknownCursor(c))?)
            }
            None => None,
        };
        let mut sql = format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE endpoint_id = ?");
        let mut binds = vec![Some(q.endpoint_id.clone())];
        if let Some(s) = q.state {
            sql.push_str(" AND state = ?");
            binds.push(Some(s.as_str().to_owned()));
        }
        if let Some(e) = q.event_id {
            sql.push_str(" AND event_id = ?");
            binds.push(Some(e.to_string()));
        }
        let mut ints = Vec::new();
        if let Some(b) = below {
            sql.push_str(" AND position < ?");
            ints.push(b);
        }
        sql.push_str(" ORDER BY position DESC LIMIT ?");
        ints.push(limit_i64(q.limit.saturating_add(1)));
        let mut deliveries = self.fetch_deliveries(sql, binds, ints).await?;
        let has_more = deliveries.len() > q.limit;
        deliveries.truncate(q.limit);
        Ok(DeliveryPage {
            deliveries: self.with_attempts(&q.endpoint_id, deliveries).await?,
            has_more,
        })
    }

    async fn request_redelivery(
        &self,
        endpoint_id: &str,
        event_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<RedeliveryRequest, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_deliveries \
             SET redelivery_requested_us = COALESCE(redelivery_requested_us, ?) \
             WHERE endpoint_id = ? AND event_id = ? AND state IN ('delivered', 'given_up') \
             RETURNING {COLUMNS}"
        )))
        .bind(micros(now)?)
        .bind(endpoint_id)
        .bind(event_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let answer = match row {
            Some(row) => RedeliveryRequest::Queued(Box::new(decode(&row)?)),
            None => {
                let state: Option<String> = sqlx::query_scalar(
                    "SELECT state FROM webhook_deliveries WHERE endpoint_id = ? AND event_id = ?",
                )
                .bind(endpoint_id)
                .bind(event_id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
                match state {
                    None => RedeliveryRequest::NotFound,
                    Some(s) => {
                        RedeliveryRequest::Busy(DeliveryState::parse(&s).ok_or_else(|| {
                            StoreError::Corrupt(format!("webhook_deliveries.state {s:?}"))
                        })?)
                    }
                }
            }
        };
        tx.commit().await.map_err(unavailable)?;
        Ok(answer)
    }

    async fn queued_redeliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.fetch_deliveries(
            format!(
                "SELECT {COLUMNS} FROM webhook_deliveries \
                 WHERE redelivery_requested_us IS NOT NULL \
                 ORDER BY redelivery_requested_us, position LIMIT ?"
            ),
            vec![],
            vec![limit_i64(limit)],
        )
        .await
    }

    async fn deliveries_between(
        &self,
        after: Position,
        upto: Position,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.fetch_deliveries(
            format!(
                "SELECT {COLUMNS} FROM webhook_deliveries WHERE position > ? AND position <= ?"
            ),
            vec![],
            vec![to_i64(after.0, "position")?, to_i64(upto.0, "position")?],
        )
        .await
    }

    async fn last_position(&self) -> Result<Option<Position>, StoreError> {
        let p: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM webhook_deliveries")
            .fetch_one(self.read_pool())
            .await
            .map_err(unavailable)?;
        p.map(|p| to_u64(p, "position").map(Position)).transpose()
    }
}
