//! The merchant's own webhook endpoints and their delivery log (issue 15
//! point 6):
//!
//! * `GET /v1/webhook-endpoints`: the merchant's endpoints (`id`, `url`,
//!   `events`; the signing secret is never shown);
//! * `GET /v1/webhook-endpoints/{id}/deliveries`: the endpoint's delivery
//!   log, newest event first, with every attempt (time, HTTP status or
//!   error class, latency, manual or not). Parameters: `limit` (1 to 100,
//!   default 10), `starting_after` (the `event_id` of the last delivery of
//!   the previous page), `status` (`delivered`, `failed_retrying`,
//!   `given_up`) and `event_id`;
//! * `POST /v1/webhook-endpoints/{id}/deliveries/{event_id}/redeliver`
//!   (`Idempotency-Key` like every POST): queues a redelivery of a
//!   delivered or given-up delivery and answers 202 with the delivery
//!   (`redelivery_requested_at` set); the dispatcher of `payorch serve`
//!   sends the same event body, newly signed, within about a second and
//!   logs it as a manual attempt. 404 for an unknown endpoint or event (or
//!   one never delivered to this endpoint); 409 `invalid_state` naming the
//!   state while the delivery is still retried automatically.
//!
//! Another merchant's endpoint is 404. The endpoints are configuration
//! (`[[webhooks]]`), handed over with [`crate::AppState::with_webhooks`];
//! the log is the engine's [`WebhookDeliveryLog`] port.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use payorch_engine::webhook_out::{
    Delivery, DeliveryListError, DeliveryQuery, DeliveryState, EndpointInfo, RedeliveryError,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::auth::Merchant;
use crate::error::ApiError;
use crate::extract::IdempotencyKey;
use crate::listing::DEFAULT_LIMIT;
use crate::state::AppState;

type ApiResult = Result<Response, ApiError>;

/// Largest page of deliveries.
pub const MAX_DELIVERIES_LIMIT: usize = 100;

fn time_value(t: OffsetDateTime) -> Value {
    t.format(&Rfc3339).map(Value::from).unwrap_or(Value::Null)
}

fn endpoint_value(e: &EndpointInfo) -> Value {
    json!({
        "object": "webhook_endpoint",
        "id": e.id,
        "url": e.url,
        "events": e.events,
    })
}

/// The JSON of a delivery (see the module docs; `status` is its state).
pub fn delivery_value(d: &Delivery) -> Value {
    let attempts: Vec<Value> = d
        .attempts
        .iter()
        .map(|a| {
            json!({
                "number": a.number,
                "at": time_value(a.at),
                "http_status": a.status,
                "error": a.error.map(|e| e.as_str()),
                "latency_ms": a.latency_ms,
                "manual": a.manual,
            })
        })
        .collect();
    json!({
        "object": "webhook_delivery",
        "endpoint_id": d.target.endpoint_id,
        "event_id": d.target.event_id,
        "stream_id": d.target.stream_id,
        "event_type": d.target.event_type,
        "status": d.state.as_str(),
        "attempt_count": d.attempt_count,
        "first_attempt_at": time_value(d.first_attempt_at),
        "last_attempt_at": time_value(d.last_attempt_at),
        "next_attempt_at": d.next_attempt_at.map(time_value),
        "redelivery_requested_at": d.redelivery_requested_at.map(time_value),
        "attempts": attempts,
    })
}

/// The merchant's endpoint `id`, or 404 (unknown or another merchant's).
fn endpoint<'a>(s: &'a AppState, m: &Merchant, id: &str) -> Result<&'a EndpointInfo, ApiError> {
    s.webhook_endpoints()
        .iter()
        .find(|e| e.id == id && e.merchant_id == m.0.as_str())
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

/// `GET /v1/webhook-endpoints`.
pub(crate) async fn list_endpoints(State(s): State<AppState>, m: Merchant) -> ApiResult {
    let data: Vec<Value> = s
        .webhook_endpoints()
        .iter()
        .filter(|e| e.merchant_id == m.0.as_str())
        .map(endpoint_value)
        .collect();
    Ok(Json(json!({
        "object": "list",
        "url": "/v1/webhook-endpoints",
        "has_more": false,
        "data": data,
    }))
    .into_response())
}

fn parse_uuid(param: &str, v: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(v.trim()).map_err(|_| ApiError::invalid_field(param, "must be an event id"))
}

/// The [`DeliveryQuery`] of a request's query parameters.
pub fn parse_query(
    endpoint_id: &str,
    params: &[(String, String)],
) -> Result<DeliveryQuery, ApiError> {
    let mut q = DeliveryQuery::new(endpoint_id, DEFAULT_LIMIT);
    for (k, v) in params {
        match k.as_str() {
            "limit" => {
                q.limit = v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_DELIVERIES_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid_field(
                            "limit",
                            format!("must be 1 to {MAX_DELIVERIES_LIMIT}"),
                        )
                    })?
            }
            "starting_after" => q.starting_after = Some(parse_uuid(k, v)?),
            "event_id" => q.event_id = Some(parse_uuid(k, v)?),
            "status" => {
                q.state = Some(
                    DeliveryState::parse(v.trim())
                        .filter(|s| *s != DeliveryState::Pending)
                        .ok_or_else(|| {
                            ApiError::invalid_field(
                                "status",
                                "must be one of delivered, failed_retrying, given_up",
                            )
                        })?,
                )
            }
            other => {
                return Err(ApiError::invalid_field(
                    other,
                    "unknown parameter; delivery lists take limit, starting_after, status, event_id",
                ));
            }
        }
    }
    Ok(q)
}

fn log_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the webhook delivery log is unavailable; retry",
    )
}

/// `GET /v1/webhook-endpoints/{id}/deliveries`.
pub(crate) async fn list_deliveries(
    State(s): State<AppState>,
    m: Merchant,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult {
    let ep = endpoint(&s, &m, &id)?;
    let q = parse_query(&ep.id, &params)?;
    let log = s
        .webhook_log()
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    let page = log.list(&q).await.map_err(|e| match e {
        DeliveryListError::UnknownCursor(_) => {
            ApiError::invalid_field("starting_after", e.to_string())
        }
        DeliveryListError::Store(st) => {
            tracing::error!(error = %st, "webhook delivery log");
            log_unavailable()
        }
    })?;
    let data: Vec<Value> = page.deliveries.iter().map(delivery_value).collect();
    Ok(Json(json!({
        "object": "list",
        "url": format!("/v1/webhook-endpoints/{}/deliveries", ep.id),
        "has_more": page.has_more,
        "data": data,
    }))
    .into_response())
}

/// `POST /v1/webhook-endpoints/{id}/deliveries/{event_id}/redeliver`.
pub(crate) async fn redeliver(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    Path((id, event_id)): Path<(String, String)>,
) -> ApiResult {
    let ep = endpoint(&s, &m, &id)?;
    let event_id =
        Uuid::parse_str(event_id.trim()).map_err(|_| ApiError::not_found("webhook delivery"))?;
    let log = s
        .webhook_log()
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    let ctx = m
        .context()
        .with_correlation_id(crate::request_id::correlation_id())
        .with_idempotency_key(key.0);
    match s
        .engine()
        .request_webhook_redelivery(&ctx, log.as_ref(), &ep.id, event_id)
        .await
    {
        Ok(d) => Ok((StatusCode::ACCEPTED, Json(delivery_value(&d))).into_response()),
        Err(RedeliveryError::NotFound { .. }) => Err(ApiError::not_found("webhook delivery")),
        Err(RedeliveryError::Busy(state)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            format!(
                "the delivery is {state}: it is still retried automatically; \
                 redeliver it once it is delivered or given_up"
            ),
        )),
        Err(RedeliveryError::Engine(e)) => Err(e.into()),
    }
}
