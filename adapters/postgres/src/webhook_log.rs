//! [`WebhookDeliveryLog`] on Postgres: tables `webhook_deliveries` and
//! `webhook_delivery_attempts` (migration 0006). An attempt is one
//! statement (the delivery upsert and the attempt insert in one CTE), so
//! the dispatcher pays one round trip per HTTP attempt.

use std::collections::HashMap;

use async_trait::async_trait;
use payorch_engine::store::{Position, StoreError};
use payorch_engine::webhook_out::{
    Attempt, AttemptWrite, Delivery, DeliveryListError, DeliveryPage, DeliveryQuery, DeliveryState,
    DeliveryTarget, ErrorClass, RedeliveryRequest, WebhookDeliveryLog,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{PostgresStore, corrupt, limit_i64, retrying, to_i64, to_u64};

const COLUMNS: &str = "endpoint_id, event_id, merchant_id, stream_id, event_type, position, \
     state, attempt_count, first_attempt_at, last_attempt_at, next_attempt_at, \
     redelivery_requested_at";

const RECORD_SQL: &str = "WITH d AS ( \
     INSERT INTO webhook_deliveries AS w (endpoint_id, event_id, merchant_id, stream_id, \
       event_type, position, state, attempt_count, first_attempt_at, last_attempt_at, \
       next_attempt_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8, $9) \
     ON CONFLICT (endpoint_id, event_id) DO UPDATE SET state = excluded.state, \
       attempt_count = w.attempt_count + 1, last_attempt_at = excluded.last_attempt_at, \
       next_attempt_at = excluded.next_attempt_at, \
       redelivery_requested_at = CASE WHEN $10::timestamptz IS NOT NULL \
         AND w.redelivery_requested_at = $10::timestamptz THEN NULL \
         ELSE w.redelivery_requested_at END \
     RETURNING attempt_count) \
   INSERT INTO webhook_delivery_attempts (endpoint_id, event_id, number, at, status, \
     error_class, latency_ms, manual) \
   SELECT $1, $2, d.attempt_count, $8, $11, $12, $13, $14 FROM d \
   RETURNING number";

fn decode(row: &PgRow) -> Result<Delivery, StoreError> {
    let state: String = row.try_get("state").map_err(corrupt)?;
    let state = DeliveryState::parse(&state).ok_or_else(|| {
        StoreError::Corrupt(format!("webhook_deliveries.state {state:?} is unknown"))
    })?;
    let count: i32 = row.try_get("attempt_count").map_err(corrupt)?;
    Ok(Delivery {
        target: DeliveryTarget {
            endpoint_id: row.try_get("endpoint_id").map_err(corrupt)?,
            merchant_id: row.try_get("merchant_id").map_err(corrupt)?,
            event_id: row.try_get("event_id").map_err(corrupt)?,
            stream_id: row.try_get("stream_id").map_err(corrupt)?,
            event_type: row.try_get("event_type").map_err(corrupt)?,
            position: to_u64(row.try_get("position").map_err(corrupt)?, "position")?,
        },
        state,
        attempt_count: u32::try_from(count)
            .map_err(|_| StoreError::Corrupt(format!("attempt_count {count}")))?,
        first_attempt_at: row.try_get("first_attempt_at").map_err(corrupt)?,
        last_attempt_at: row.try_get("last_attempt_at").map_err(corrupt)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(corrupt)?,
        redelivery_requested_at: row.try_get("redelivery_requested_at").map_err(corrupt)?,
        attempts: Vec::new(),
    })
}

fn decode_attempt(row: &PgRow) -> Result<(Uuid, Attempt), StoreError> {
    let number: i32 = row.try_get("number").map_err(corrupt)?;
    let status: Option<i32> = row.try_get("status").map_err(corrupt)?;
    let error: Option<String> = row.try_get("error_class").map_err(corrupt)?;
    let error = match error {
        Some(e) => Some(ErrorClass::parse(&e).ok_or_else(|| {
            StoreError::Corrupt(format!("webhook_delivery_attempts.error_class {e:?}"))
        })?),
        None => None,
    };
    Ok((
        row.try_get("event_id").map_err(corrupt)?,
        Attempt {
            number: u32::try_from(number)
                .map_err(|_| StoreError::Corrupt(format!("attempt number {number}")))?,
            at: row.try_get("at").map_err(corrupt)?,
            status: status
                .map(|s| u16::try_from(s).map_err(|_| StoreError::Corrupt(format!("status {s}"))))
                .transpose()?,
            error,
            latency_ms: to_u64(row.try_get("latency_ms").map_err(corrupt)?, "latency_ms")?,
            manual: row.try_get("manual").map_err(corrupt)?,
        },
    ))
}

impl PostgresStore {
    /// Fills the attempts of `deliveries` (all of one endpoint) in one query.
    async fn with_attempts(
        &self,
        endpoint_id: &str,
        mut deliveries: Vec<Delivery>,
    ) -> Result<Vec<Delivery>, StoreError> {
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let ids: Vec<Uuid> = deliveries.iter().map(|d| d.target.event_id).collect();
        let rows = retrying(|| {
            sqlx::query(
                "SELECT event_id, number, at, status, error_class, latency_ms, manual \
                 FROM webhook_delivery_attempts WHERE endpoint_id = $1 AND event_id = ANY($2) \
                 ORDER BY event_id, number",
            )
            .bind(endpoint_id)
            .bind(&ids)
            .fetch_all(self.pool())
        })
        .await?;
        let mut by_event: HashMap<Uuid, Vec<Attempt>> = HashMap::new();
        for row in &rows {
            let (id, a) = decode_attempt(row)?;
            by_event.entry(id).or_default().push(a);
        }
        for d in &mut deliveries {
            d.attempts = by_event.remove(&d.target.event_id).unwrap_or_default();
        }
        Ok(deliveries)
    }
}

#[async_trait]
impl WebhookDeliveryLog for PostgresStore {
    async fn record_attempt(&self, w: &AttemptWrite) -> Result<u32, StoreError> {
        let t = &w.target;
        let position = to_i64(t.position, "position")?;
        let latency = i64::try_from(w.latency_ms).unwrap_or(i64::MAX);
        let number: i32 = retrying(|| {
            sqlx::query_scalar(RECORD_SQL)
                .bind(&t.endpoint_id)
                .bind(t.event_id)
                .bind(&t.merchant_id)
                .bind(&t.stream_id)
                .bind(&t.event_type)
                .bind(position)
                .bind(w.state.as_str())
                .bind(w.at)
                .bind(w.next_attempt_at)
                .bind(w.answers_request)
                .bind(w.status.map(i32::from))
                .bind(w.error.map(ErrorClass::as_str))
                .bind(latency)
                .bind(w.manual)
                .fetch_one(self.pool())
        })
        .await?;
        u32::try_from(number).map_err(|_| StoreError::Corrupt(format!("attempt number {number}")))
    }

    async fn delivery(
        &self,
        endpoint_id: &str,
        event_id: Uuid,
    ) -> Result<Option<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2"
        );
        let row = retrying(|| {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(endpoint_id)
                .bind(event_id)
                .fetch_optional(self.pool())
        })
        .await?;
        let Some(row) = row else { return Ok(None) };
        let d = decode(&row)?;
        Ok(self.with_attempts(endpoint_id, vec![d]).await?.pop())
    }

    async fn list(&self, q: &DeliveryQuery) -> Result<DeliveryPage, DeliveryListError> {
        let below: Option<i64> = match q.starting_after {
            Some(c) => {
                let p: Option<i64> = retrying(|| {
                    sqlx::query_scalar(
                        "SELECT position FROM webhook_deliveries \
                         WHERE endpoint_id = $1 AND event_id = $2",
                    )
                    .bind(&q.endpoint_id)
                    .bind(c)
                    .fetch_optional(self.pool())
                })
                .await?;
                Some(p.ok_or(DeliveryListError::UnknownCursor(c))?)
            }
            None => None,
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 \
             AND ($2::bigint IS NULL OR position < $2) AND ($3::text IS NULL OR state = $3) \
             AND ($4::uuid IS NULL OR event_id = $4) ORDER BY position DESC LIMIT $5"
        );
        let rows = retrying(|| {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&q.endpoint_id)
                .bind(below)
                .bind(q.state.map(DeliveryState::as_str))
                .bind(q.event_id)
                .bind(limit_i64(q.limit.saturating_add(1)))
                .fetch_all(self.pool())
        })
        .await?;
        let mut deliveries = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
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
        let sql = format!(
            "UPDATE webhook_deliveries \
             SET redelivery_requested_at = COALESCE(redelivery_requested_at, $3) \
             WHERE endpoint_id = $1 AND event_id = $2 AND state IN ('delivered', 'given_up') \
             RETURNING {COLUMNS}"
        );
        let row = retrying(|| {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(endpoint_id)
                .bind(event_id)
                .bind(now)
                .fetch_optional(self.pool())
        })
        .await?;
        if let Some(row) = row {
            return Ok(RedeliveryRequest::Queued(Box::new(decode(&row)?)));
        }
        let state: Option<String> = retrying(|| {
            sqlx::query_scalar(
                "SELECT state FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2",
            )
            .bind(endpoint_id)
            .bind(event_id)
            .fetch_optional(self.pool())
        })
        .await?;
        Ok(match state {
            None => RedeliveryRequest::NotFound,
            Some(s) => RedeliveryRequest::Busy(DeliveryState::parse(&s).ok_or_else(|| {
                StoreError::Corrupt(format!("webhook_deliveries.state {s:?} is unknown"))
            })?),
        })
    }

    async fn queued_redeliveries(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE redelivery_requested_at IS NOT NULL \
             ORDER BY redelivery_requested_at, position LIMIT $1"
        );
        let rows = retrying(|| {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(limit_i64(limit))
                .fetch_all(self.pool())
        })
        .await?;
        rows.iter().map(decode).collect()
    }

    async fn deliveries_between(
        &self,
        after: Position,
        upto: Position,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE position > $1 AND position <= $2"
        );
        let (a, b) = (to_i64(after.0, "position")?, to_i64(upto.0, "position")?);
        let rows = retrying(|| {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(a)
                .bind(b)
                .fetch_all(self.pool())
        })
        .await?;
        rows.iter().map(decode).collect()
    }

    async fn last_position(&self) -> Result<Option<Position>, StoreError> {
        let p: Option<i64> = retrying(|| {
            sqlx::query_scalar("SELECT max(position) FROM webhook_deliveries")
                .fetch_one(self.pool())
        })
        .await?;
        p.map(|p| to_u64(p, "position").map(Position)).transpose()
    }
}
