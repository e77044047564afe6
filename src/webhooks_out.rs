//! `serve`'s merchant webhooks out: a [`payorch_webhooks::Dispatcher`] over
//! the store and its delivery log (migration 0006) for the `[[webhooks]]`
//! endpoints, one pass per second until shutdown, on one node per store
//! (lease `webhooks_out`, see [`spawn`]). Each pass also sends the
//! manual redeliveries queued in the log (by the API or by `payorch
//! webhooks redeliver` from another process), so a queued redelivery goes
//! out within about a second. Nothing runs without `[[webhooks]]`.

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

/// The delivery settings of the configuration.
pub fn delivery_config(config: &Config) -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_millis(config.webhook_timeout_ms),
        initial_backoff: Duration::from_millis(config.webhook_backoff_base_ms),
        max_backoff: Duration::from_millis(config.webhook_backoff_max_ms),
        give_up_after: Duration::from_secs(config.webhook_give_up_after_secs),
        ..DeliveryConfig::default()
    }
}

/// The lease of the one active dispatcher per store.
pub const LEASE: &str = "webhooks_out";

/// Starts the delivery loop (`None` without `[[webhooks]]`). One node per
/// store delivers, under the `webhooks_out` lease (a Postgres advisory
/// lock; in-process on SQLite), like the relay and the reconciler: two
/// dispatchers would send each event twice and could interleave a
/// payment's events. A node that takes the lease starts a fresh dispatcher,
/// which resumes from the checkpoint and the delivery log.
pub fn spawn(
    config: &Config,
    app: &App,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let endpoints = endpoints(config);
    if endpoints.is_empty() {
        return Ok(None);
    }
    let settings = delivery_config(config);
    let (events, checkpoints, log) = (
        app.store.events(),
        app.store.checkpoints(),
        app.store.webhook_log(),
    );
    let clock = app.engine.clock().clone();
    let lock = app.store.leader_lock();
    let make = move || {
        Dispatcher::new(
            events.clone(),
            checkpoints.clone(),
            clock.clone(),
            log.clone(),
            endpoints.clone(),
            settings.clone(),
        )
    };
    // Fail at start on a bad HTTP client set-up, not in the loop.
    make().context("webhooks: HTTP client")?;
    Ok(Some(tokio::spawn(async move {
        loop {
            match lock.try_acquire(LEASE).await {
                Ok(Some(lease)) => match make() {
                    Ok(dispatcher) => {
                        tracing::info!("webhooks lease taken: this node delivers");
                        loop {
                            match dispatcher.run_once().await {
                                Ok(r) if r.attempted > 0 || r.redelivered > 0 => tracing::info!(
                                    attempted = r.attempted,
                                    delivered = r.delivered,
                                    failed = r.failed,
                                    redelivered = r.redelivered,
                                    "webhook pass"
                                ),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "webhook pass failed"),
                            }
                            tokio::select! {
                                _ = stop.changed() => return,
                                _ = tokio::time::sleep(INTERVAL) => {}
                            }
                            if lease.is_lost().await {
                                tracing::warn!("webhooks lease lost: standing by");
                                break;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "webhooks: HTTP client"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "webhooks lease unavailable; standing by"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(INTERVAL) => {}
            }
        }
    })))
}
