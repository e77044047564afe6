//! Idempotency at the HTTP level: same key and same request -> the stored
//! response (status and body, as first answered); same key, another
//! request -> 409 `idempotency_key_reused` naming the key.
//!
//! The engine keeps the key promise for place/capture/void/refund/checkout
//! (one record per `(merchant, key)`, written with the command's first
//! events, pointing at the stream), and decides whether a repeat is the
//! same request. Its record holds ids, not the HTTP answer, so
//! [`engine_command`] stores the answer of the request that ran the
//! command under a second scope (`<merchant>:http-response`, same key) and
//! a replay returns it, not the resource's current state: a payment
//! captured since still replays its original `201 authorised`. A replay
//! that arrives while the first request is still running (or of a key
//! recorded before answers were stored) gets the current view instead.
//!
//! Four commands record no idempotency in the engine: cancel agreement,
//! token query, token remove and Apple Pay session. For those, when the
//! binary hands the idempotency store to [`crate::AppState`], this module
//! stores the HTTP answer (status + body) under the same `(merchant, key)`
//! scope, so a key means one request across every route: same key and same
//! request -> the stored answer; same key, another request -> 409. Only
//! 2xx answers are stored: a failed call may be retried with its key.
//!
//! Charges on an agreement are checked here before the engine runs (see
//! [`charge_replay`]): the engine records the charge on the agreement
//! before it looks at the key, so a replay would add a charge that never
//! happened.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use payorch_engine::orchestrator::CommandContext;
use payorch_engine::store::IdempotencyRecord;
use payorch_schemas::Money;
use payorch_schemas::events::{AgreementId, OrderId};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// 409 for a key used before with another request (names the key).
pub(crate) fn reused(key: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_reused",
        format!("header `Idempotency-Key` {key:?} was already used with a different request"),
    )
}

/// Scope of the stored answers of engine-recorded commands.
fn response_scope(merchant: &str) -> String {
    format!("{merchant}:http-response")
}

fn store_error(e: payorch_engine::store::StoreError) -> ApiError {
    ApiError::from(payorch_engine::orchestrator::EngineError::Store(e))
}

/// A stored `{"status", "body"}` answer as a response.
fn stored_response(rec: &IdempotencyRecord) -> Response {
    let stored: serde_json::Value = serde_json::from_str(rec.response.get()).unwrap_or_default();
    let status = stored["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    (status, Json(stored["body"].clone())).into_response()
}

/// Whether this key was seen before, for a command the engine records.
pub(crate) enum Prior {
    /// No key, no store, or a key never used: the request runs the command.
    Fresh,
    /// The engine has a record for the key; the stored answer, if any.
    Seen(Option<Response>),
}

/// Looks the key up before an engine-recorded command runs.
pub(crate) async fn prior(state: &AppState, ctx: &CommandContext) -> Result<Prior, ApiError> {
    let (Some(store), Some(key)) = (state.idempotency_store(), ctx.idempotency_key.as_deref())
    else {
        return Ok(Prior::Fresh);
    };
    let merchant = ctx.merchant_id.as_str();
    if store
        .get_idempotency(merchant, key)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Ok(Prior::Fresh);
    }
    let answer = store
        .get_idempotency(&response_scope(merchant), key)
        .await
        .map_err(store_error)?;
    Ok(Prior::Seen(answer.as_ref().map(stored_response)))
}

/// Runs an engine-recorded command (see the module docs): the engine
/// checks that a repeat is the same request (409 otherwise) and does not
/// run it again; the first answer is stored and replayed.
pub(crate) async fn engine_command<F, Fut>(
    state: &AppState,
    ctx: &CommandContext,
    f: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let prior = prior(state, ctx).await?;
    let (status, body) = f().await?;
    finish(state, ctx, prior, status, body).await
}

/// The response of an engine-recorded command given what [`prior`] found.
pub(crate) async fn finish(
    state: &AppState,
    ctx: &CommandContext,
    prior: Prior,
    status: StatusCode,
    body: serde_json::Value,
) -> Result<Response, ApiError> {
    match prior {
        Prior::Seen(Some(stored)) => Ok(stored),
        Prior::Seen(None) => Ok((status, Json(body)).into_response()),
        Prior::Fresh => {
            let scope = response_scope(ctx.merchant_id.as_str());
            store_answer(state, ctx, scope, "http-response".into(), status, &body).await;
            Ok((status, Json(body)).into_response())
        }
    }
}

/// Fingerprint of an HTTP-level command: operation, target and the body as
/// parsed JSON (so whitespace and key order do not matter).
pub(crate) fn fingerprint(operation: &str, target: &str, body: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(b"http|");
    h.update(operation.as_bytes());
    h.update(b"|");
    h.update(target.as_bytes());
    h.update(b"|");
    h.update(body.to_string().as_bytes());
    format!("http:{}", hex::encode(h.finalize()))
}

/// A stored answer for this key, if any: `Ok(Some(response))` to replay,
/// `Err(409)` when the key belongs to another request.
pub(crate) async fn lookup(
    state: &AppState,
    ctx: &CommandContext,
    fp: &str,
) -> Result<Option<Response>, ApiError> {
    let (Some(store), Some(key)) = (state.idempotency_store(), ctx.idempotency_key.as_deref())
    else {
        return Ok(None);
    };
    let Some(rec) = store
        .get_idempotency(ctx.merchant_id.as_str(), key)
        .await
        .map_err(|e| ApiError::from(payorch_engine::orchestrator::EngineError::Store(e)))?
    else {
        return Ok(None);
    };
    if rec.fingerprint != fp {
        return Err(reused(key));
    }
    Ok(Some(stored_response(&rec)))
}

/// Stores a 2xx answer under `(scope, key)`; failures are logged, not
/// returned (the command ran; only the replay promise is lost).
async fn store_answer(
    state: &AppState,
    ctx: &CommandContext,
    scope: String,
    fp: String,
    status: StatusCode,
    body: &serde_json::Value,
) {
    let (Some(store), Some(key)) = (state.idempotency_store(), ctx.idempotency_key.as_deref())
    else {
        return;
    };
    if !status.is_success() {
        return;
    }
    let text = serde_json::json!({"status": status.as_u16(), "body": body}).to_string();
    let Ok(response) = RawValue::from_string(text) else {
        return;
    };
    let rec = IdempotencyRecord {
        scope,
        key: key.to_owned(),
        fingerprint: fp,
        response,
        stream_id: None,
        created_at: state.engine().clock().now(),
    };
    match store.put_idempotency(rec).await {
        Ok(()) | Err(payorch_engine::store::StoreError::IdempotencyKeyTaken { .. }) => {}
        Err(e) => {
            // The command ran; only the replay promise is lost. Say so.
            tracing::warn!(error = %e, "could not store the idempotency record");
        }
    }
}

/// Runs `f` under HTTP-level idempotency (see the module docs).
pub(crate) async fn run<F, Fut>(
    state: &AppState,
    ctx: &CommandContext,
    fp: String,
    f: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    if let Some(replay) = lookup(state, ctx, &fp).await? {
        return Ok(replay);
    }
    let (status, body) = f().await?;
    let scope = ctx.merchant_id.as_str().to_owned();
    store_answer(state, ctx, scope, fp, status, &body).await;
    Ok((status, Json(body)).into_response())
}

/// For a charge: the order a previous request with this key created, when
/// it was the same charge (same agreement, same amount); 409 when the key
/// was used for anything else; `None` for a fresh key.
pub(crate) async fn charge_replay(
    state: &AppState,
    ctx: &CommandContext,
    agreement: AgreementId,
    amount: Money,
) -> Result<Option<OrderId>, ApiError> {
    let (Some(store), Some(key)) = (state.idempotency_store(), ctx.idempotency_key.as_deref())
    else {
        return Ok(None);
    };
    let Some(rec) = store
        .get_idempotency(ctx.merchant_id.as_str(), key)
        .await
        .map_err(|e| ApiError::from(payorch_engine::orchestrator::EngineError::Store(e)))?
    else {
        return Ok(None);
    };
    let Some(order_id) = rec
        .stream_id
        .as_ref()
        .and_then(|s| OrderId::parse(s.as_str()))
    else {
        return Err(reused(key));
    };
    let view = state.engine().get_order(ctx, order_id).await?;
    if view.agreement_id == Some(agreement) && view.amount == amount {
        Ok(Some(order_id))
    } else {
        Err(reused(key))
    }
}
