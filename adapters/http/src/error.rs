//! The one error shape of the merchant API:
//! `{"error":{"type":"invalid_request_error","code":"<stable_snake_case_code>","message":"...","param":"field.path","request_id":"..."}}`
//! (`param` only when one request field is at fault; `request_id` is added
//! by [`crate::request_id`] to every error body), and the mapping of
//! [`EngineError`] onto HTTP statuses.
//!
//! `type` is the broad class a client branches on ([`ApiError::kind`]):
//! `invalid_request_error` (fix the request), `authentication_error` (the
//! API key), `idempotency_error` (the `Idempotency-Key`), `card_error`
//! (PayKKa declined), `api_error` (our side or PayKKa's: retry later with
//! the same `Idempotency-Key`).
//!
//! Codes are part of the API contract (clients match on them); messages are
//! for humans and name the field or state at fault. No message ever carries
//! card data or API keys: engine errors name ids, states and amounts only.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use payorch_engine::orchestrator::EngineError;
use payorch_engine::order::DomainError;
use payorch_engine::store::StoreError;

/// The code of 409 "another request with this key is still executing"
/// (answered with `Retry-After`).
pub const IN_PROGRESS: &str = "idempotency_key_in_progress";

/// An API error: HTTP status, stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status to answer with.
    pub status: StatusCode,
    /// Stable snake_case code clients may match on.
    pub code: &'static str,
    /// Human-readable explanation naming the field or state at fault.
    pub message: String,
    /// The request field at fault (`amount.minor`,
    /// `payment_method.exp_month`), when one is.
    pub param: Option<String>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    /// 400 `invalid_request` about one field.
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("field `{field}`: {problem}"),
        );
        e.param = Some(field.to_owned());
        e
    }

    /// 404 `not_found`.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// The error's `type`: its broad class (see the module docs).
    pub fn kind(&self) -> &'static str {
        error_type(self.status, self.code)
    }

    /// The JSON body of this error (without `request_id`, which the
    /// request-id middleware adds).
    pub fn body(&self) -> serde_json::Value {
        let mut e = serde_json::json!({
            "type": self.kind(), "code": self.code, "message": self.message
        });
        if let Some(p) = &self.param {
            e["param"] = serde_json::Value::from(p.as_str());
        }
        serde_json::json!({ "error": e })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE if self.code == PAYKKA_UNREACHABLE => {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(PAYKKA_RETRY_AFTER_SECS),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            StatusCode::CONFLICT if self.code == IN_PROGRESS => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

/// The `type` of an error with this status and code.
pub fn error_type(status: StatusCode, code: &str) -> &'static str {
    if code.contains("idempotency") {
        return "idempotency_error";
    }
    match status.as_u16() {
        401 | 403 => "authentication_error",
        402 => "card_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn domain(e: &DomainError) -> (StatusCode, &'static str) {
    match e {
        DomainError::IllegalCommand { .. } => (StatusCode::CONFLICT, "invalid_state"),
        DomainError::OperationInFlight { .. } => (StatusCode::CONFLICT, "operation_in_flight"),
        DomainError::IdReused { .. } => (StatusCode::CONFLICT, "id_reused"),
        DomainError::AutomaticCapture => (StatusCode::CONFLICT, "automatic_capture"),
        DomainError::AmountExceedsAvailable { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "amount_exceeds_available")
        }
        DomainError::NonPositiveAmount { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "non_positive_amount")
        }
        DomainError::CurrencyMismatch { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch")
        }
        DomainError::Money(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount"),
        DomainError::IncompleteObservation(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        }
    }
}

/// The code of a 503 whose PayKKa call never left (`Retry-After`).
pub const PAYKKA_UNREACHABLE: &str = "paykka_unreachable";

/// Seconds a client should wait after [`PAYKKA_UNREACHABLE`].
pub const PAYKKA_RETRY_AFTER_SECS: u32 = 5;

/// The merchant API's name of a field of the PayKKa request built from it
/// (`payment.card_no` is `payment_method.number`); `None` for fields the
/// server sets.
pub fn api_field(paykka: &str) -> Option<String> {
    let mapped = match paykka {
        "amount" => "amount.minor",
        "currency" => "amount.currency",
        "return_url" => "return_url",
        "expire_time" => "expires_at",
        "payment" => "payment_method",
        "payment.card_no" => "payment_method.number",
        "payment.token_usage" => "store_token.purpose",
        "payment.store_payment_method" => "store_token",
        "payment.shopper_reference" => "payment_method.shopper_reference",
        "notify_url"
        | "merchant_id"
        | "trans_id"
        | "timestamp"
        | "mit"
        | "recurring_agreement_id" => return None,
        other => {
            if let Some(rest) = other.strip_prefix("payment.") {
                return Some(format!("payment_method.{rest}"));
            }
            other
        }
    };
    Some(mapped.to_owned())
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use payorch_engine::agreement::AgreementError;
        let (status, code) = match &e {
            EngineError::Domain(d) => domain(d),
            EngineError::Agreement(AgreementError::IllegalCommand { .. }) => {
                (StatusCode::CONFLICT, "invalid_state")
            }
            EngineError::Agreement(AgreementError::NonPositiveAmount(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "non_positive_amount")
            }
            EngineError::Checkout(_) => (StatusCode::CONFLICT, "invalid_state"),
            EngineError::NotFound { what, .. } => {
                // The engine's id may be a stream id; keep the message short.
                return ApiError::not_found(what);
            }
            EngineError::IdempotencyConflict { key } => {
                return crate::idempotency::reused(key);
            }
            EngineError::IdempotencyInProgress { key, .. } => {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    IN_PROGRESS,
                    format!(
                        "a request with header `Idempotency-Key` {key:?} is still in progress; \
                         retry after the `Retry-After` delay to get its answer"
                    ),
                );
            }
            EngineError::Contention { .. } => (StatusCode::SERVICE_UNAVAILABLE, "contention"),
            EngineError::Store(StoreError::Unavailable(_)) => {
                tracing::error!(error = %e, "store unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the event store is unavailable; retry with the same Idempotency-Key",
                );
            }
            EngineError::Store(StoreError::IdempotencyKeyTaken { .. }) => {
                (StatusCode::CONFLICT, "idempotency_key_reused")
            }
            EngineError::Store(StoreError::Conflict { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "contention")
            }
            EngineError::Store(_) | EngineError::Codec(_) => {
                tracing::error!(error = %e, "internal error");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "internal error; the operators have been alerted",
                );
            }
            EngineError::Gateway { kind, .. } => match *kind {
                "declined" => (StatusCode::PAYMENT_REQUIRED, "gateway_declined"),
                "rejected" => (StatusCode::UNPROCESSABLE_ENTITY, "gateway_rejected"),
                _ => (StatusCode::BAD_GATEWAY, "gateway_unavailable"),
            },
            EngineError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            EngineError::InvalidField { field, problem } => {
                return match api_field(field) {
                    Some(f) => ApiError::invalid_field(&f, problem),
                    // A field only the server sets (notify_url from the
                    // config, merchant_id, trans_id): not the caller's fault.
                    None => {
                        tracing::error!(error = %e, "a request built by the server fails PayKKa's rules");
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal_error",
                            format!("server configuration: {field}: {problem}"),
                        )
                    }
                };
            }
            EngineError::PaykkaUnreachable { .. } => {
                tracing::warn!(error = %e, "PayKKa unreachable");
                (StatusCode::SERVICE_UNAVAILABLE, PAYKKA_UNREACHABLE)
            }
            // Only notifications meet it; the webhook handler answers those.
            EngineError::NotificationContradicts { .. } => {
                (StatusCode::CONFLICT, "notification_contradicts_order")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_statuses() {
        let nf = ApiError::from(EngineError::NotFound {
            what: "order",
            id: "order-x".into(),
        });
        assert_eq!(nf.status, StatusCode::NOT_FOUND);
        assert_eq!(nf.message, "order not found");
        let down = ApiError::from(EngineError::Store(StoreError::Unavailable("pg".into())));
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.code, "store_unavailable");
        let idem = ApiError::from(EngineError::IdempotencyConflict {
            key: "order-77".into(),
        });
        assert_eq!(idem.status, StatusCode::CONFLICT);
        assert!(idem.message.contains("Idempotency-Key"), "{}", idem.message);
        assert!(idem.message.contains("\"order-77\""), "{}", idem.message);
        let corrupt = ApiError::from(EngineError::Store(StoreError::Corrupt("x".into())));
        assert_eq!(corrupt.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!corrupt.message.contains('x'));
    }
}
