//! What every handler shares: the engine, the API-key table, the webhook
//! verifier, metrics, health checks and HTTP settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use payorch_engine::listing::Indexer;
use payorch_engine::orchestrator::Engine;
use payorch_engine::webhook_out::{EndpointInfo, WebhookDeliveryLog};

use crate::auth::ApiKeys;
use crate::metrics::Metrics;
use payorch_engine::webhook::WebhookVerifier;

/// A dependency `/healthz` checks (store reachable, broker reachable...).
/// The binary supplies implementations.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// Short stable name shown in the `/healthz` body (`store`, `broker`).
    fn name(&self) -> &str;
    /// `Ok` when the dependency answers; `Err` with a reason otherwise.
    async fn check(&self) -> Result<(), String>;
    /// Whether a failure makes the service unavailable (`/healthz` 503,
    /// the default) or only degraded (`/healthz` 200 with `"status":
    /// "degraded"`: a remote every instance shares, like PayKKa).
    fn critical(&self) -> bool {
        true
    }
}

/// HTTP settings.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest accepted merchant API request body (413 above).
    pub max_body_bytes: usize,
    /// Largest accepted webhook body (413 above).
    pub max_webhook_body_bytes: usize,
    /// Time budget of each health check (a check that takes longer fails).
    pub health_check_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 64 * 1024,
            max_webhook_body_bytes: 64 * 1024,
            health_check_timeout: Duration::from_secs(2),
        }
    }
}

struct Inner {
    engine: Arc<Engine>,
    api_keys: ApiKeys,
    verifier: Arc<dyn WebhookVerifier>,
    metrics: Metrics,
    health: Vec<Arc<dyn HealthCheck>>,
    config: HttpConfig,
    indexer: Option<Arc<Indexer>>,
    webhook_log: Option<Arc<dyn WebhookDeliveryLog>>,
    webhook_endpoints: Vec<EndpointInfo>,
}

/// Shared state of the router (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("api_keys", &self.inner.api_keys)
            .field("health_checks", &self.inner.health.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State with default [`HttpConfig`], fresh [`Metrics`] and no health
    /// checks; add them with the `with_*` methods.
    pub fn new(engine: Arc<Engine>, api_keys: ApiKeys, verifier: Arc<dyn WebhookVerifier>) -> Self {
        AppState {
            inner: Arc::new(Inner {
                engine,
                api_keys,
                verifier,
                metrics: Metrics::new(),
                health: Vec::new(),
                config: HttpConfig::default(),
                indexer: None,
                webhook_log: None,
                webhook_endpoints: Vec::new(),
            }),
        }
    }

    fn map(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                engine: shared.engine.clone(),
                api_keys: shared.api_keys.clone(),
                verifier: shared.verifier.clone(),
                metrics: shared.metrics.clone(),
                health: shared.health.clone(),
                config: shared.config.clone(),
                indexer: shared.indexer.clone(),
                webhook_log: shared.webhook_log.clone(),
                webhook_endpoints: shared.webhook_endpoints.clone(),
            },
        };
        f(&mut inner);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// Uses this metrics handle (share it with [`crate::MeteredGateway`]).
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        self.map(|i| i.metrics = metrics)
    }

    /// Adds a health check.
    pub fn with_health_check(self, check: Arc<dyn HealthCheck>) -> Self {
        self.map(|i| i.health.push(check))
    }

    /// Replaces the HTTP settings.
    pub fn with_config(self, config: HttpConfig) -> Self {
        self.map(|i| i.config = config)
    }

    /// The listing index feeder (`GET /v1/payments` and the other lists,
    /// see [`crate::listing`]); without it the lists answer 501.
    pub fn with_indexer(self, indexer: Arc<Indexer>) -> Self {
        self.map(|i| i.indexer = Some(indexer))
    }

    /// The merchants' webhook endpoints (configuration, no secrets) and
    /// their delivery log (see [`crate::webhooks_out`]); without them
    /// every merchant has no endpoint.
    pub fn with_webhooks(
        self,
        log: Arc<dyn WebhookDeliveryLog>,
        endpoints: Vec<EndpointInfo>,
    ) -> Self {
        self.map(|i| {
            i.webhook_log = Some(log);
            i.webhook_endpoints = endpoints;
        })
    }

    /// The webhook delivery log, when configured.
    pub fn webhook_log(&self) -> Option<&Arc<dyn WebhookDeliveryLog>> {
        self.inner.webhook_log.as_ref()
    }

    /// Every merchant's webhook endpoints.
    pub fn webhook_endpoints(&self) -> &[EndpointInfo] {
        &self.inner.webhook_endpoints
    }

    /// The listing indexer, when configured.
    pub fn indexer(&self) -> Option<&Arc<Indexer>> {
        self.inner.indexer.as_ref()
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// The API-key table.
    pub fn api_keys(&self) -> &ApiKeys {
        &self.inner.api_keys
    }

    /// The webhook verifier.
    pub fn verifier(&self) -> &Arc<dyn WebhookVerifier> {
        &self.inner.verifier
    }

    /// The metrics handle.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The health checks.
    pub fn health_checks(&self) -> &[Arc<dyn HealthCheck>] {
        &self.inner.health
    }

    /// The HTTP settings.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }
}
