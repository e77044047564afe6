//! `serve`'s merchant webhooks out: a [`payorch_webhooks::Dispatcher`] over
//! the store for the `[[webhooks]]` endpoints, one pass per second until
//! shutdown. Nothing runs without `[[webhooks]]`.

use std::time::Duration;

use anyhow::Context;
use payorch_webhooks::{DeliveryConfig, Dispatcher, Endpoint, Secret};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::Config;

/// Pause between two passes.
const INTERVAL: Duration = Duration::from_secs(1);

/// The endpoints of the configuration.
pub fn endpoints(config: &Config) -> Vec<Endpoint> {
    config
        .webhooks
        .iter()
        .zip(config.webhook_ids())
        .map(|(w, id)| Endpoint {
            id,
            merchant_id: w.merchant_id.clone(),
            url: w.url.clone(),
            secret: Secret::new(w.secret.clone()),
            events: w.events.clone(),
        })
        .collect()
}

/// Starts the delivery loop (`None` without `[[webhooks]]`).
pub fn spawn(
    config: &Config,
    app: &App,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let endpoints = endpoints(config);
    if endpoints.is_empty() {
        return Ok(None);
    }
    let dispatcher = Dispatcher::new(
        app.store.events(),
        app.store.checkpoints(),
        app.engine.clock().clone(),
        endpoints,
        DeliveryConfig::default(),
    )
    .context("webhooks: HTTP client")?;
    Ok(Some(tokio::spawn(async move {
        loop {
            match dispatcher.run_once().await {
                Ok(r) if r.attempted > 0 => tracing::info!(
                    attempted = r.attempted,
                    delivered = r.delivered,
                    failed = r.failed,
                    "webhook pass"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "webhook pass failed"),
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(INTERVAL) => {}
            }
        }
    })))
}
