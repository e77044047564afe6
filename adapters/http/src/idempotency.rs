//! Idempotency over HTTP: the `Idempotency-Key` header (required on every
//! POST) goes to the engine, which keeps the one store of keys (see
//! `payorch_engine::command::idempotency`): per merchant, SHA-256
//! fingerprints of what PayKKa is asked to do, one execution per key, the
//! executing request's response stored with its events. This layer keeps
//! no store of its own: a handler maps the engine's answer (the stored one
//! on a replay) to status and body, deterministically, so a replay gets
//! the status and body the first caller got.
//!
//! * same key, same request: the stored answer;
//! * same key, another request: 409 `idempotency_key_reused` naming the key;
//! * same key while the first request still executes (after a bounded
//!   wait): 409 `idempotency_key_in_progress` with `Retry-After`.

use axum::http::StatusCode;

use crate::error::ApiError;

/// 409 for a key used before with another request (names the key).
pub(crate) fn reused(key: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        format!("header `Idempotency-Key` {key:?} was already used with a different request"),
    )
}
