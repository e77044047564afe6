//! Merchant API handlers, `/healthz`, `/metrics` and `/openapi.json`.
//!
//! Status codes: a created payment is 201; 202 when PayKKa's answer is not
//! known yet (the view shows `authorisation_unknown` or a call with status
//! `outcome_unknown`; the reconciler or a notification settles it); other
//! commands answer 200. A declined payment is still a created resource
//! (201, `status: declined`, `decline` set).
//!
//! Times: every resource shows `created_at`/`updated_at`, the recorded
//! times of its first and latest events. The engine's commands and queries
//! answer views stamped from the events they appended or read; a replayed
//! answer stored without them is stamped from its stream
//! ([`payorch_engine::orchestrator::Engine::stamp`], a no-op otherwise).
//!
//! Idempotency: every POST passes `Idempotency-Key` to the engine
//! (`CommandContext::with_idempotency_key`), which keeps one record per
//! (merchant, key) and answers a repeat with the stored response of the
//! request that executed; the status derives from that response as it did
//! for the first caller (see [`crate::idempotency`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use payorch_engine::orchestrator::{CommandContext, OrderView};
use payorch_schemas::events::{AgreementId, CheckoutId, OrderId};

use crate::auth::Merchant;
use crate::dto::{
    ApplePaySessionBody, CancelAgreementBody, CaptureBody, ChargeBody, CheckoutSessionView,
    CreateCheckoutBody, CreatePaymentBody, PaymentView, RecurringAgreementView, RefundBody,
    TokenQueryBody, TokenRemoveBody, VoidBody, require_text,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, IdempotencyKey, OptionalJson};
use crate::state::AppState;

type ApiResult = Result<Response, ApiError>;

fn ctx(m: &Merchant, key: Option<IdempotencyKey>) -> CommandContext {
    let c = m
        .context()
        .with_correlation_id(crate::request_id::correlation_id());
    match key {
        Some(k) => c.with_idempotency_key(k.0),
        None => c,
    }
}

fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(raw).ok_or_else(|| ApiError::not_found("payment"))
}

fn agreement_id(raw: &str) -> Result<AgreementId, ApiError> {
    AgreementId::parse(raw).ok_or_else(|| ApiError::not_found("recurring agreement"))
}

fn checkout_id(raw: &str) -> Result<CheckoutId, ApiError> {
    CheckoutId::parse(raw).ok_or_else(|| ApiError::not_found("checkout session"))
}

/// 201/202/200 per the module docs.
fn payment_parts(view: OrderView, created: bool) -> (StatusCode, serde_json::Value) {
    let v = PaymentView::from(view);
    let status = if v.authorisation_pending() || v.has_open_call() {
        StatusCode::ACCEPTED
    } else if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, body_value(&v))
}

fn payment(view: OrderView, created: bool) -> Response {
    let (status, body) = payment_parts(view, created);
    (status, Json(body)).into_response()
}

/// `POST /v1/payments`.
pub(crate) async fn create_payment(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<CreatePaymentBody>,
) -> ApiResult {
    let (req, labels) = body.into_engine()?;
    let ctx = ctx(&m, Some(key)).with_annotations(labels);
    let view = s.engine().place_payment(&ctx, req).await?;
    Ok(payment(s.engine().stamp(view).await?, true))
}

/// `GET /v1/payments/{id}`.
pub(crate) async fn get_payment(
    State(s): State<AppState>,
    m: Merchant,
    Path(id): Path<String>,
) -> ApiResult {
    let id = order_id(&id)?;
    let view = s.engine().get_order(&ctx(&m, None), id).await?;
    Ok(payment(view, false))
}

/// `POST /v1/payments/{id}/capture`.
pub(crate) async fn capture(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CaptureBody>,
) -> ApiResult {
    let id = order_id(&id)?;
    if let Some(a) = &body.amount
        && a.minor <= 0
    {
        return Err(ApiError::invalid_field(
            "amount.minor",
            "must be a positive number of minor units",
        ));
    }
    let ctx = ctx(&m, Some(key));
    let view = s
        .engine()
        .capture(&ctx, id, body.amount, body.final_capture)
        .await?;
    Ok(payment(s.engine().stamp(view).await?, false))
}

/// PayKKa's void/refund `reason` enum (models.md §5): anything else is
/// refused before PayKKa sees it.
fn check_reason(reason: &Option<String>) -> Result<(), ApiError> {
    const REASONS: [&str; 4] = ["DUPLICATE", "FRAUDULENT", "REQUESTED_BY_CUSTOMER", "OTHER"];
    match reason {
        Some(r) if !REASONS.contains(&r.as_str()) => Err(ApiError::invalid_field(
            "reason",
            "must be DUPLICATE, FRAUDULENT, REQUESTED_BY_CUSTOMER or OTHER",
        )),
        _ => Ok(()),
    }
}

/// `POST /v1/payments/{id}/void`.
pub(crate) async fn void(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<VoidBody>,
) -> ApiResult {
    let id = order_id(&id)?;
    let ctx = ctx(&m, Some(key));
    check_reason(&body.reason)?;
    let view = s.engine().void(&ctx, id, body.reason).await?;
    Ok(payment(s.engine().stamp(view).await?, false))
}

/// `POST /v1/payments/{id}/refunds`.
pub(crate) async fn refund(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RefundBody>,
) -> ApiResult {
    let id = order_id(&id)?;
    if body.amount.minor <= 0 {
        return Err(ApiError::invalid_field(
            "amount.minor",
            "must be a positive number of minor units",
        ));
    }
    check_reason(&body.reason)?;
    let ctx = ctx(&m, Some(key));
    let view = s
        .engine()
        .refund(&ctx, id, body.amount, body.reason)
        .await?;
    Ok(payment(s.engine().stamp(view).await?, false))
}

/// `POST /v1/checkout-sessions`.
pub(crate) async fn create_checkout_session(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<CreateCheckoutBody>,
) -> ApiResult {
    let now = s.engine().clock().now();
    let (req, labels) = body.into_engine(now)?;
    let ctx = ctx(&m, Some(key)).with_annotations(labels);
    let view = s.engine().create_checkout_session(&ctx, req).await?;
    let v = CheckoutSessionView::from(s.engine().stamp(view).await?);
    let status = if v.status == "requested" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(v)).into_response())
}

/// `GET /v1/checkout-sessions/{id}`.
pub(crate) async fn get_checkout_session(
    State(s): State<AppState>,
    m: Merchant,
    Path(id): Path<String>,
) -> ApiResult {
    let id = checkout_id(&id)?;
    let view = s.engine().get_checkout_session(&ctx(&m, None), id).await?;
    Ok(Json(CheckoutSessionView::from(view)).into_response())
}

/// `POST /v1/recurring-agreements/{id}/charges`.
pub(crate) async fn charge_agreement(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ChargeBody>,
) -> ApiResult {
    let id = agreement_id(&id)?;
    let (amount, labels) = body.into_parts()?;
    let ctx = ctx(&m, Some(key)).with_annotations(labels);
    let view = s.engine().charge_agreement(&ctx, id, amount).await?;
    Ok(payment(s.engine().stamp(view).await?, true))
}

fn body_value<T: serde::Serialize>(body: &T) -> serde_json::Value {
    serde_json::to_value(body).unwrap_or_default()
}

/// `POST /v1/recurring-agreements/{id}/cancel`.
pub(crate) async fn cancel_agreement(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CancelAgreementBody>,
) -> ApiResult {
    let id = agreement_id(&id)?;
    let ctx = ctx(&m, Some(key));
    let view = s.engine().cancel_agreement(&ctx, id, body.reason).await?;
    let v = RecurringAgreementView::from(s.engine().stamp(view).await?);
    let status = if v.status == "cancelling" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(v)).into_response())
}

/// `GET /v1/recurring-agreements/{id}`.
pub(crate) async fn get_agreement(
    State(s): State<AppState>,
    m: Merchant,
    Path(id): Path<String>,
) -> ApiResult {
    let id = agreement_id(&id)?;
    let view = s.engine().get_agreement(&ctx(&m, None), id).await?;
    Ok(Json(RecurringAgreementView::from(view)).into_response())
}

/// `POST /v1/tokens/query`.
pub(crate) async fn token_query(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<TokenQueryBody>,
) -> ApiResult {
    require_text("shopper_reference", &body.shopper_reference, 64)?;
    let ctx = ctx(&m, Some(key));
    let r = s
        .engine()
        .token_query(&ctx, &body.shopper_reference)
        .await?;
    Ok(Json(serde_json::json!({
        "shopper_reference": r.shopper_reference.unwrap_or(body.shopper_reference),
        "tokens": r.tokens,
    }))
    .into_response())
}

/// `POST /v1/tokens/remove`.
pub(crate) async fn token_remove(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<TokenRemoveBody>,
) -> ApiResult {
    require_text("token", &body.token, 64)?;
    require_text("shopper_reference", &body.shopper_reference, 64)?;
    let ctx = ctx(&m, Some(key));
    s.engine()
        .token_remove(&ctx, &body.token, &body.shopper_reference)
        .await?;
    Ok(Json(serde_json::json!({ "token": body.token, "removed": true })).into_response())
}

/// `POST /v1/apple-pay/sessions`.
pub(crate) async fn apple_pay_session(
    State(s): State<AppState>,
    m: Merchant,
    key: IdempotencyKey,
    ApiJson(body): ApiJson<ApplePaySessionBody>,
) -> ApiResult {
    require_text("domain_name", &body.domain_name, 255)?;
    let ctx = ctx(&m, Some(key));
    let r = s
        .engine()
        .apple_pay_session(&ctx, &body.domain_name, body.display_name)
        .await?;
    // PayKKa answers Apple's merchant session, sometimes as a JSON string.
    let session = match r.0 {
        serde_json::Value::String(text) => {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        }
        other => other,
    };
    Ok(Json(serde_json::json!({ "merchant_session": session })).into_response())
}

/// `GET /healthz`: 200 `ok` when every check passes; 503 `unavailable`
/// when a critical one fails (store, broker); 200 `degraded` when only
/// non-critical ones fail (PayKKa reachability: payments answer 503
/// `paykka_unreachable` meanwhile, everything else works).
pub(crate) async fn healthz(State(s): State<AppState>) -> Response {
    let timeout = s.config().health_check_timeout;
    let mut checks = serde_json::Map::new();
    let mut healthy = true;
    let mut degraded = false;
    for c in s.health_checks() {
        let result = match tokio::time::timeout(timeout, c.check()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        let entry = match result {
            Ok(()) => serde_json::json!({"status": "ok"}),
            Err(e) => {
                if c.critical() {
                    healthy = false;
                } else {
                    degraded = true;
                }
                serde_json::json!({"status": "unavailable", "error": e})
            }
        };
        checks.insert(c.name().to_owned(), entry);
    }
    let (status, text) = match (healthy, degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ok"),
    };
    let body = serde_json::json!({
        "status": text,
        "checks": checks,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics().render(),
    )
        .into_response()
}

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

/// Fallback for unknown paths.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

/// Fallback for a known path with another method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method; see /openapi.json",
    )
}
