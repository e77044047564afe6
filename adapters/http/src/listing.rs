//! Listing and search (issue 15 point 1): `GET /v1/payments`,
//! `GET /v1/checkout-sessions`, `GET /v1/recurring-agreements`, and the
//! pagination of `GET /v1/payments/{id}/events`.
//!
//! Query parameters (each list):
//!
//! * `limit`: items per page, 1 to 100 (default 10);
//! * `starting_after`: the id of the last item of the previous page (newest
//!   first, so the next page holds older items);
//! * `status`: one state, snake_case as the resource shows it;
//! * `created[gte]`, `created[lte]`: creation time bounds, unix seconds or
//!   RFC 3339;
//! * `merchant_reference`: the merchant's own reference;
//! * `metadata[KEY]=VALUE`: one metadata key/value.
//!
//! The answer is `{"object":"list","url":...,"has_more":bool,"data":[...]}`,
//! each item exactly what `GET /v1/<resource>/{id}` shows. A merchant sees
//! only its own resources. An unknown parameter or a bad value is 400
//! `invalid_field` naming it.
//!
//! The lists read the engine's index ([`payorch_engine::listing`]); each
//! list first brings the index up to the end of the event log
//! ([`Indexer::catch_up`]), so a resource is listed as soon as its creating
//! request has been answered (on Postgres: as soon as `read_all`'s safe
//! horizon has passed its events, normally at once; a transaction left
//! open elsewhere on the server can delay that for its duration).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use payorch_engine::agreement::AgreementPhase;
use payorch_engine::checkout::CheckoutPhase;
use payorch_engine::listing::{
    Indexer, ListError, ListQuery, MAX_LIMIT, MAX_METADATA_TEXT, ResourceKind,
};
use payorch_engine::orchestrator::{CommandContext, EngineError};
use payorch_engine::order::Phase;
use payorch_schemas::events::{AgreementId, CheckoutId, OrderId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::auth::Merchant;
use crate::dto::{CheckoutSessionView, PaymentView, RecurringAgreementView};
use crate::error::ApiError;
use crate::state::AppState;

type ApiResult = Result<Response, ApiError>;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 10;

/// Default and largest page of `/v1/payments/{id}/events`.
pub const MAX_EVENTS_LIMIT: usize = 100;

fn ctx(m: &Merchant) -> CommandContext {
    m.context()
        .with_correlation_id(crate::request_id::correlation_id())
}

fn parse_limit(v: &str, max: usize) -> Result<usize, ApiError> {
    v.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::invalid_field("limit", format!("must be 1 to {max}")))
}

fn parse_time(param: &str, v: &str) -> Result<OffsetDateTime, ApiError> {
    if let Ok(secs) = v.trim().parse::<i64>() {
        return OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|_| ApiError::invalid_field(param, "out of range"));
    }
    OffsetDateTime::parse(v.trim(), &Rfc3339)
        .map_err(|_| ApiError::invalid_field(param, "must be unix seconds or an RFC 3339 time"))
}

fn statuses(kind: ResourceKind) -> Vec<&'static str> {
    match kind {
        ResourceKind::Payment => Phase::ALL
            .iter()
            .filter(|p| **p != Phase::New)
            .map(|p| p.as_str())
            .collect(),
        ResourceKind::CheckoutSession => [
            CheckoutPhase::Requested,
            CheckoutPhase::Open,
            CheckoutPhase::Completed,
            CheckoutPhase::Expired,
            CheckoutPhase::Cancelled,
        ]
        .iter()
        .map(|p| p.as_str())
        .collect(),
        ResourceKind::Agreement => [
            AgreementPhase::Active,
            AgreementPhase::Cancelling,
            AgreementPhase::Cancelled,
        ]
        .iter()
        .map(|p| p.as_str())
        .collect(),
    }
}

/// The [`ListQuery`] of a request's query parameters.
pub fn parse_query(
    kind: ResourceKind,
    merchant_id: &str,
    params: &[(String, String)],
) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery::new(kind, merchant_id);
    q.limit = DEFAULT_LIMIT;
    for (k, v) in params {
        match k.as_str() {
            "limit" => q.limit = parse_limit(v, MAX_LIMIT)?,
            "starting_after" => {
                q.starting_after = Some(Uuid::parse_str(v.trim()).map_err(|_| {
                    ApiError::invalid_field("starting_after", "must be the id of a listed item")
                })?)
            }
            "status" => {
                let allowed = statuses(kind);
                if !allowed.contains(&v.as_str()) {
                    return Err(ApiError::invalid_field(
                        "status",
                        format!("must be one of {}", allowed.join(", ")),
                    ));
                }
                q.status = Some(v.clone());
            }
            "created[gte]" => q.created_gte = Some(parse_time(k, v)?),
            "created[lte]" => q.created_lte = Some(parse_time(k, v)?),
            "merchant_reference" => {
                if v.is_empty() || v.len() > MAX_METADATA_TEXT {
                    return Err(ApiError::invalid_field(
                        "merchant_reference",
                        format!("must be 1 to {MAX_METADATA_TEXT} characters"),
                    ));
                }
                q.merchant_reference = Some(v.clone());
            }
            other => {
                let key = other
                    .strip_prefix("metadata[")
                    .and_then(|r| r.strip_suffix(']'))
                    .filter(|key| !key.is_empty() && key.len() <= MAX_METADATA_TEXT);
                match key {
                    Some(key) if q.metadata.is_none() => {
                        q.metadata = Some((key.to_owned(), v.clone()));
                    }
                    Some(_) => {
                        return Err(ApiError::invalid_field(
                            other,
                            "only one metadata filter per request",
                        ));
                    }
                    None => {
                        return Err(ApiError::invalid_field(
                            other,
                            "unknown parameter; lists take limit, starting_after, status, \
                             created[gte], created[lte], merchant_reference, metadata[KEY]",
                        ));
                    }
                }
            }
        }
    }
    if let (Some(a), Some(b)) = (q.created_gte, q.created_lte)
        && a > b
    {
        return Err(ApiError::invalid_field(
            "created[gte]",
            "is after created[lte]",
        ));
    }
    Ok(q)
}

fn indexer(s: &AppState) -> Result<&Arc<Indexer>, ApiError> {
    s.indexer().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "listing_unavailable",
            "listing is not configured on this service",
        )
    })
}

async fn page(s: &AppState, q: &ListQuery) -> Result<payorch_engine::listing::ListPage, ApiError> {
    let ix = indexer(s)?;
    if let Err(e) = ix.catch_up().await {
        tracing::error!(error = %e, "listing index catch-up failed");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the listing index is unavailable; retry",
        ));
    }
    ix.index().list(q).await.map_err(|e| match e {
        ListError::UnknownCursor(..) => ApiError::invalid_field("starting_after", e.to_string()),
        ListError::Store(st) => ApiError::from(EngineError::Store(st)),
    })
}

fn list_body(url: &str, has_more: bool, data: Vec<serde_json::Value>) -> Response {
    Json(serde_json::json!({
        "object": "list",
        "url": url,
        "has_more": has_more,
        "data": data,
    }))
    .into_response()
}

fn value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// Skips an item that vanished between the index and the view (it cannot,
/// short of a store reset); other errors fail the request.
fn skip_missing<T>(r: Result<T, EngineError>) -> Result<Option<T>, ApiError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(EngineError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/payments`.
pub(crate) async fn list_payments(
    State(s): State<AppState>,
    m: Merchant,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult {
    let q = parse_query(ResourceKind::Payment, m.0.as_str(), &params)?;
    let p = page(&s, &q).await?;
    let c = ctx(&m);
    let mut data = Vec::with_capacity(p.ids.len());
    for id in p.ids {
        if let Some(v) = skip_missing(s.engine().get_order(&c, OrderId(id)).await)? {
            data.push(value(&PaymentView::from(v)));
        }
    }
    Ok(list_body("/v1/payments", p.has_more, data))
}

/// `GET /v1/checkout-sessions`.
pub(crate) async fn list_checkout_sessions(
    State(s): State<AppState>,
    m: Merchant,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult {
    let q = parse_query(ResourceKind::CheckoutSession, m.0.as_str(), &params)?;
    let p = page(&s, &q).await?;
    let c = ctx(&m);
    let mut data = Vec::with_capacity(p.ids.len());
    for id in p.ids {
        let r = s.engine().get_checkout_session(&c, CheckoutId(id)).await;
        if let Some(v) = skip_missing(r)? {
            data.push(value(&CheckoutSessionView::from(v)));
        }
    }
    Ok(list_body("/v1/checkout-sessions", p.has_more, data))
}

/// `GET /v1/recurring-agreements`.
pub(crate) async fn list_agreements(
    State(s): State<AppState>,
    m: Merchant,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult {
    let q = parse_query(ResourceKind::Agreement, m.0.as_str(), &params)?;
    let p = page(&s, &q).await?;
    let c = ctx(&m);
    let mut data = Vec::with_capacity(p.ids.len());
    for id in p.ids {
        if let Some(v) = skip_missing(s.engine().get_agreement(&c, AgreementId(id)).await)? {
            data.push(value(&RecurringAgreementView::from(v)));
        }
    }
    Ok(list_body("/v1/recurring-agreements", p.has_more, data))
}

/// `GET /v1/payments/{id}/events`: oldest first, `limit` (1 to 100,
/// default 100) and `starting_after` (an `event_id` of the previous page);
/// `{"payment_id","events","has_more"}`.
pub(crate) async fn payment_events(
    State(s): State<AppState>,
    m: Merchant,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult {
    let id = OrderId::parse(&id).ok_or_else(|| ApiError::not_found("payment"))?;
    let mut limit = MAX_EVENTS_LIMIT;
    let mut after: Option<Uuid> = None;
    for (k, v) in &params {
        match k.as_str() {
            "limit" => limit = parse_limit(v, MAX_EVENTS_LIMIT)?,
            "starting_after" => {
                after = Some(Uuid::parse_str(v.trim()).map_err(|_| {
                    ApiError::invalid_field("starting_after", "must be an event_id")
                })?)
            }
            other => {
                return Err(ApiError::invalid_field(
                    other,
                    "unknown parameter; event lists take limit, starting_after",
                ));
            }
        }
    }
    let events = s.engine().list_order_events(&ctx(&m), id).await?;
    let start = match after {
        Some(a) => match events.iter().position(|e| e.event_id == a) {
            Some(i) => i + 1,
            None => {
                return Err(ApiError::invalid_field(
                    "starting_after",
                    format!("{a} is not an event of this payment"),
                ));
            }
        },
        None => 0,
    };
    let rest = &events[start.min(events.len())..];
    let has_more = rest.len() > limit;
    let shown = &rest[..rest.len().min(limit)];
    Ok(Json(serde_json::json!({
        "payment_id": id,
        "events": shown,
        "has_more": has_more,
    }))
    .into_response())
}
