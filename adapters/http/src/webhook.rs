//! PayKKa notification endpoints (`POST /webhooks/paykka/payments`,
//! `POST /webhooks/paykka/refunds`).
//!
//! The raw body (size-limited) goes to the webhook verifier; only a
//! verified notification reaches the engine. Answers follow PayKKa's
//! contract (flows.md §9): `200 {"ret_code":"000000","ret_msg":"Success"}`
//! once the notification is recorded — or is harmless (a duplicate, an
//! order that is not ours); `401 {"ret_code":"401","ret_msg":"Invalid signature"}`
//! with nothing recorded for a bad signature or stale timestamp; `503` when
//! storage is down so PayKKa delivers again.
//!
//! payorch-http must not depend on payorch-paykka (adapters never depend on
//! each other), so verification is the engine's port
//! [`payorch_engine::webhook::WebhookVerifier`]: this module passes it the
//! `signature` header, the raw body and the engine clock's time;
//! payorch-paykka implements it (`MerchantWebhookVerifier`) and the binary
//! wires it in.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use payorch_engine::orchestrator::{EngineError, order_of_trans_id};
use payorch_engine::store::StoreError;
use payorch_engine::webhook::WebhookRejection;
use payorch_schemas::events::{OrderId, RefundTransId};
use payorch_schemas::paykka::Notification;

use crate::state::AppState;

/// PayKKa's success acknowledgement body.
pub const ACK_BODY: &str = r#"{"ret_code":"000000","ret_msg":"Success"}"#;
/// The body answered to a notification that fails verification.
pub const INVALID_SIGNATURE_BODY: &str = r#"{"ret_code":"401","ret_msg":"Invalid signature"}"#;

fn answer(status: StatusCode, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// An unverified notification: ask PayKKa about the order it names and
/// record PayKKa's answer (never the notification's own claims).
async fn confirm_by_query(state: &AppState, n: &Notification) -> Response {
    let metrics = state.metrics();
    let order_id = match n {
        Notification::Payment(p) => p.trans_id.as_deref().and_then(order_of_trans_id),
        Notification::Refund(r) => r.trans_id.as_deref().and_then(|t| {
            OrderId::from_refund_trans_id(&RefundTransId::new(t)).map(|(order, _)| order)
        }),
    };
    let Some(order_id) = order_id else {
        metrics.record_webhook("unverified", "unknown_order");
        return answer(StatusCode::OK, ACK_BODY.to_owned());
    };
    match state.engine().refresh_order(order_id, false).await {
        Ok(view) => {
            metrics.record_webhook("unverified", "queried");
            tracing::info!(order_id = %view.order_id, "unverified notification confirmed by Transaction Query");
            answer(StatusCode::OK, ACK_BODY.to_owned())
        }
        Err(EngineError::NotFound { .. }) => {
            // Not ours (or a checkout payment the reconciler will find).
            metrics.record_webhook("unverified", "unknown_order");
            answer(StatusCode::OK, ACK_BODY.to_owned())
        }
        Err(e) => {
            metrics.record_webhook("unverified", "unavailable");
            tracing::warn!(order_id = %order_id, error = %e, "query after an unverified notification failed; PayKKa will redeliver");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                ret("503", "temporarily unavailable"),
            )
        }
    }
}

fn ret(code: &str, msg: &str) -> String {
    serde_json::json!({"ret_code": code, "ret_msg": msg}).to_string()
}

/// `POST /webhooks/paykka/payments`.
pub(crate) async fn payments(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    receive(state, "payment", headers, body).await
}

/// `POST /webhooks/paykka/refunds`.
pub(crate) async fn refunds(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    receive(state, "refund", headers, body).await
}

async fn receive(
    state: AppState,
    endpoint: &'static str,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let metrics = state.metrics().clone();
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            metrics.record_webhook(endpoint, "rejected");
            let status = e.status();
            tracing::warn!(endpoint, %status, "notification body unreadable");
            return answer(status, ret(status.as_str(), &e.body_text()));
        }
    };
    if body.len() > state.config().max_webhook_body_bytes {
        metrics.record_webhook(endpoint, "rejected");
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            ret("413", "notification body too large"),
        );
    }
    // A header value that is not valid UTF-8 cannot verify: pass a string
    // that never matches rather than pretending there was no header.
    let signature = headers
        .get("signature")
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let now = state.engine().clock().now();
    let notification = match state.verifier().verify(signature, &body, now) {
        Ok(n) => n,
        Err(WebhookRejection::Unverified {
            notification,
            reason,
        }) => {
            tracing::warn!(endpoint, %reason, "PayKKa notification not authenticated (report-only): asking PayKKa instead");
            return confirm_by_query(&state, &notification).await;
        }
        Err(rejection) => {
            metrics.record_webhook(endpoint, "rejected");
            tracing::warn!(endpoint, %rejection, "PayKKa notification refused");
            return match rejection {
                WebhookRejection::Unauthenticated(_) => {
                    answer(StatusCode::UNAUTHORIZED, INVALID_SIGNATURE_BODY.to_owned())
                }
                WebhookRejection::Malformed(reason) => {
                    answer(StatusCode::BAD_REQUEST, ret("400", &reason))
                }
                WebhookRejection::TooLarge => answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ret("413", "notification body too large"),
                ),
                // Handled above; answered like any unauthenticated body.
                WebhookRejection::Unverified { .. } => {
                    answer(StatusCode::UNAUTHORIZED, INVALID_SIGNATURE_BODY.to_owned())
                }
            };
        }
    };
    let correlation_id = Some(crate::request_id::correlation_id());
    let engine = state.engine();
    // Route by content, not endpoint: PayKKa may post both kinds to one URL.
    let (kind, result) = match &notification {
        Notification::Payment(n) => (
            "payment",
            engine.apply_payment_notification(n, correlation_id).await,
        ),
        Notification::Refund(n) => (
            "refund",
            engine.apply_refund_notification(n, correlation_id).await,
        ),
    };
    if kind != endpoint {
        tracing::info!(endpoint, kind, "notification kind differs from endpoint");
    }
    match result {
        Ok(Some(view)) => {
            metrics.record_webhook(kind, "applied");
            tracing::info!(kind, order_id = %view.order_id, status = %view.status, "notification applied");
            answer(StatusCode::OK, ACK_BODY.to_owned())
        }
        Ok(None) => {
            // Not one of ours (another integration, a deleted test order):
            // acknowledge so PayKKa stops, and leave a trace.
            metrics.record_webhook(kind, "unknown_order");
            tracing::warn!(kind, "notification for an unknown order acknowledged");
            answer(StatusCode::OK, ACK_BODY.to_owned())
        }
        Err(
            e @ (EngineError::Store(StoreError::Unavailable(_))
            | EngineError::Store(StoreError::Conflict { .. })
            | EngineError::Contention { .. }),
        ) => {
            metrics.record_webhook(kind, "unavailable");
            tracing::error!(kind, error = %e, "notification not recorded; PayKKa will redeliver");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                ret("503", "temporarily unavailable"),
            )
        }
        Err(e @ EngineError::NotificationContradicts { .. }) => {
            // Another merchant, currency or amount than the order: nothing
            // recorded. Redelivery would say the same: acknowledge, alert.
            metrics.record_webhook(kind, "contradicts_order");
            tracing::error!(kind, error = %e, "notification contradicts its order; nothing recorded");
            answer(StatusCode::OK, ACK_BODY.to_owned())
        }
        Err(e @ (EngineError::Domain(_) | EngineError::NotFound { .. })) => {
            // Redelivery cannot change a refusal of the order itself:
            // acknowledge and alert instead of looping.
            metrics.record_webhook(kind, "error");
            tracing::error!(kind, error = %e, "notification refused by the order; acknowledged");
            answer(StatusCode::OK, ACK_BODY.to_owned())
        }
        Err(e) => {
            metrics.record_webhook(kind, "error");
            tracing::error!(kind, error = %e, "notification failed");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                ret("500", "internal error"),
            )
        }
    }
}
