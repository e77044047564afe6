//! # payorch-http
//!
//! payorch's HTTP surface on axum 0.8 (ARCHITECTURE.md §6):
//!
//! * the merchant API under `/v1` (payments, captures, voids, refunds,
//!   events, checkout sessions, recurring agreements, tokens, Apple Pay),
//!   with per-merchant API keys ([`auth`]) and `Idempotency-Key` on every
//!   POST ([`extract`]);
//! * PayKKa's notification endpoints ([`webhook`]), verified through the
//!   [`WebhookVerifier`] port that the binary implements with payorch-paykka;
//! * `/healthz` ([`HealthCheck`]), `/metrics` ([`Metrics`],
//!   [`MeteredGateway`]) and `/openapi.json` ([`openapi`]).
//!
//! [`routes::routes`] is the single route table both [`router`] and the
//! OpenAPI document read.

pub mod auth;
pub mod dto;
pub mod error;
pub mod extract;
mod handlers;
mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod webhook;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::trace::TraceLayer;

pub use auth::{ApiKeyError, ApiKeys, Merchant, hash_api_key};
pub use error::ApiError;
pub use metrics::{MeteredGateway, Metrics};
pub use state::{AppState, HealthCheck, HttpConfig};
pub use webhook::{WebhookRejection, WebhookVerifier};

/// The service's router: every route of [`routes::routes`], JSON errors
/// for unknown routes and methods, the body limit, request metrics and a
/// trace span per request.
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
