//! # payorch-http
//!
//! payorch's HTTP surface on axum 0.8 (ARCHITECTURE.md §6):
//!
//! * the merchant API under `/v1` (payments, captures, voids, refunds,
//!   events, checkout sessions, recurring agreements, tokens, Apple Pay),
//!   with per-merchant API keys ([`auth`]) and `Idempotency-Key` on every
//!   POST ([`extract`]);
//! * PayKKa's notification endpoints ([`webhook`]), verified through the
//!   engine's [`WebhookVerifier`] port (re-exported here), implemented by
//!   payorch-paykka and wired in by the binary;
//! * `/healthz` ([`HealthCheck`]), `/metrics` ([`Metrics`],
//!   [`MeteredGateway`]) and `/openapi.json` ([`openapi`]).
//!
//! [`routes::routes`] is the single route table both [`router`] and the
//! OpenAPI document read.
//!
//! Wiring in the binary (composition root), sketched:
//!
//! ```ignore
//! let metrics = payorch_http::Metrics::new();
//! let gateway = Arc::new(payorch_http::MeteredGateway::new(paykka_client, metrics.clone()));
//! let engine = Arc::new(Engine::new(store.clone(), store.clone(), gateway, clock.clone(), cfg));
//! let keys = ApiKeys::new().with_hashed_key("18356675194960", &merchant.api_key_sha256)?;
//! // The engine's webhook verification port, implemented by payorch-paykka.
//! let verifier = payorch_paykka::MerchantWebhookVerifier::default().merchant(
//!     "18356675194960",
//!     paykka_public_key,
//!     SignatureMode::Enforce,
//!     None, // timestamp tolerance: the default ±5 min
//! );
//! let state = AppState::new(engine, keys, Arc::new(verifier))
//!     .with_metrics(metrics)
//!     .with_health_check(store_check)
//!     .with_health_check(broker_check);
//! payorch_http::serve(listener, payorch_http::router(state), shutdown_signal).await?;
//! ```

pub mod auth;
pub mod dto;
pub mod error;
pub mod extract;
mod handlers;
mod idempotency;
pub mod listing;
pub mod metrics;
pub mod openapi;
pub mod reachability;
pub mod request_id;
pub mod routes;
pub mod state;
pub mod webhook;
pub mod webhooks_out;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::trace::TraceLayer;

pub use auth::{ApiKeyError, ApiKeys, Merchant, hash_api_key};
pub use error::ApiError;
pub use metrics::{MeteredGateway, Metrics};
pub use payorch_engine::webhook::{WebhookRejection, WebhookVerifier};
pub use reachability::TcpReachability;
pub use state::{AppState, HealthCheck, HttpConfig};

/// The service's router: every route of [`routes::routes`], JSON errors
/// for unknown routes and methods, the body limit, request metrics, a
/// trace span per request and, outermost, the request id
/// ([`request_id`]: `X-Request-Id` on every response and error body).
pub fn router(state: AppState) -> Router {
    let config = state.config().clone();
    let mut r: Router<AppState> = Router::new();
    for spec in routes::routes() {
        r = r.route(spec.path, spec.method_router(&config));
    }
    r.fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics().clone(),
            metrics::track_requests,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and waits for in-flight requests to finish.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
