//! `payorch serve [--addr HOST:PORT]`: the service.
//!
//! Builds the parts from the configuration ([`crate::app::App`]), then runs
//! the merchant API and PayKKa webhook endpoints (payorch-http) on every
//! node, and two leader roles, each under its own lease (`LeaderLock`:
//! a Postgres session advisory lock on Postgres, in-process on SQLite):
//!
//! * the reconciler ([`RECONCILER_LEASE`]): a standby retries the lease
//!   every [`STANDBY_POLL`]; the holder checks the lease before each pass
//!   and before each PayKKa call of a pass
//!   ([`Reconciler::run_once_leased`]) and stands by again once it is
//!   lost. Its open-work index is the store's `open_work` table.
//! * events out: the RabbitMQ relay when `amqp_url` is set (same lease
//!   scheme, see payorch-rabbitmq), else the in-process bus.
//!
//! Fencing: the advisory lock belongs to one Postgres session; the server
//! frees it only when that session ends (connection closed, process
//! killed, backend terminated), and the holder's lease check runs on that
//! same session, so once another node can take the lease the old holder's
//! next check fails and it stops. What it may still do is the one call it
//! had started after its last check: queries are reads, a re-sent cancel
//! is idempotent in effect, and appends check the stream version.
//!
//! Ctrl-C or SIGTERM: stop accepting, finish in-flight requests, stop the
//! reconciler and the relay (its checkpoint covers every confirmed event),
//! close the store (which frees the leases).
//!
//! `/metrics` gauges: the reconciler backlog per kind is set from each
//! pass, the relay lag every second (see [`crate::gauges`]; 0 without a
//! broker), and `payorch_role{role}` says which leases this node holds.
//! `/healthz` checks the store, and the broker when `amqp_url` is set.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use payorch_engine::bus::{InProcessBus, LeaderLock};
use payorch_engine::reconciler::Reconciler;
use payorch_engine::wakeup::EventWakeup;
use payorch_http::AppState;
use payorch_http::Metrics;
use payorch_rabbitmq::{Relay, RelayConfig, RelayState};
use serde_json::json;
use tokio::sync::watch;

use crate::Globals;
use crate::app::App;
use crate::config::FlagOverrides;
use crate::output::Output;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Configuration: payorch.toml (or --config FILE / $PAYORCH_CONFIG), \
    PAYORCH_* environment variables, then flags. Every key, its variable, flag and default: \
    docs/CONFIG.md in the payorch repository."
)]
pub struct Args {
    /// Listen address (default 127.0.0.1:8080; port 0 picks a free one).
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// RabbitMQ URL for events out (default: in-process bus).
    #[arg(long, value_name = "URL")]
    amqp_url: Option<String>,
    /// Log format on stderr (default: config `log_format`, else text;
    /// colours only on a terminal).
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<crate::config::LogFormat>,
}

/// How often the relay-lag gauge is refreshed while the relay lags.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Shortest time between two looks at the relay lag: after a checkpoint
/// of this process's relay (a one-row probe whether it caught up), or after
/// an append while caught up (a count).
const LAG_FAST_INTERVAL: Duration = Duration::from_millis(100);

/// With no lag: refreshed on the next append (the store's wake-up), or
/// after this long.
const LAG_IDLE_INTERVAL: Duration = Duration::from_secs(10);

/// The reconciler's leader lease.
pub const RECONCILER_LEASE: &str = "payorch.reconciler";

/// How often a standby reconciler retries the lease: a standby takes over
/// within this (plus one pass interval) of the leader's session ending.
pub const STANDBY_POLL: Duration = Duration::from_secs(1);

/// A count as a gauge value (saturating).
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The reconciler loop: stand by until the lease is ours, then run a pass
/// every `interval` while it stays ours; back to standby when it is lost.
async fn reconcile_under_lease(
    reconciler: Reconciler,
    lock: Arc<dyn LeaderLock>,
    interval: Duration,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    metrics.set_role("reconciler", false);
    loop {
        match lock.try_acquire(RECONCILER_LEASE).await {
            Ok(Some(lease)) => {
                tracing::info!("reconciler lease taken: this node reconciles");
                metrics.set_role("reconciler", true);
                loop {
                    tokio::select! {
                        _ = stop.changed() => {
                            metrics.set_role("reconciler", false);
                            return;
                        }
                        _ = tokio::time::sleep(interval) => {}
                    }
                    let started = std::time::Instant::now();
                    match reconciler.run_once_leased(lease.as_ref()).await {
                        Ok(r) if r.lease_lost => break,
                        Ok(r) if r.stopped => {
                            metrics.set_role("reconciler", false);
                            return;
                        }
                        Ok(r) => {
                            // What a pass costs (docs/BENCHMARKS.md, "Scale").
                            tracing::debug!(
                                elapsed_us = u64::try_from(started.elapsed().as_micros())
                                    .unwrap_or(u64::MAX),
                                candidates = r.candidates,
                                "reconciler pass done"
                            );
                            metrics.set_reconciler_backlog(gauge(r.candidates as u64));
                            metrics.set_reconciler_needs_attention(gauge(r.needs_attention as u64));
                            metrics.set_reconciler_open(
                                gauge(r.due_orders as u64),
                                gauge(r.due_agreements as u64),
                                gauge(r.due_checkout_sessions as u64),
                            );
                            if r.queried > 0 || r.errors > 0 {
                                tracing::info!(
                                    candidates = r.candidates,
                                    queried = r.queried,
                                    resolved = r.resolved,
                                    backed_off = r.backed_off,
                                    expired = r.expired,
                                    checkout_paid = r.checkout_paid,
                                    errors = r.errors,
                                    "reconciler pass"
                                );
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "reconciler pass failed"),
                    }
                }
                metrics.set_role("reconciler", false);
                tracing::warn!("reconciler lease lost: standing by");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reconciler lease unavailable; standing by"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(STANDBY_POLL) => {}
        }
    }
}

/// The curl line printed for the demo merchant; it works as printed.
pub fn curl_example(url: &str, api_key: &str) -> String {
    format!(
        "curl -s -X POST {url}/v1/payments \\\n  -H 'Authorization: Bearer {api_key}' \\\n  -H 'Idempotency-Key: first-payment-1' \\\n  -H 'Content-Type: application/json' \\\n  -d '{{\"amount\":{{\"minor\":1000,\"currency\":\"EUR\"}},\"capture_method\":\"MANUAL\",\"payment_method\":{{\"type\":\"card\",\"number\":\"4111111111111111\",\"exp_month\":\"07\",\"exp_year\":\"2031\",\"cvv\":\"123\"}}}}'"
    )
}

pub fn run(args: &Args, globals: &Globals, out: &Output) -> anyhow::Result<ExitCode> {
    let config = globals.config_with(FlagOverrides {
        store_url: None,
        amqp_url: args.amqp_url.clone(),
        addr: args.addr.clone(),
        log_format: args.log_format,
    })?;
    crate::logging::init(config.log_format);
    crate::block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.addr)
            .await
            .with_context(|| format!("addr: cannot listen on {}", config.addr))?;
        let local = listener.local_addr()?;
        let url = format!("http://{local}");
        let public_url = config.public_url.clone().unwrap_or_else(|| url.clone());
        let app = App::build(&config, &public_url).await?;

        let mut state = AppState::new(
            app.engine.clone(),
            app.api_keys.clone(),
            app.verifier.clone(),
        )
        .with_metrics(app.metrics.clone())
        // GET /v1/payments and the other lists (payorch_http::listing).
        .with_indexer(app.store.indexer())
        // GET /v1/webhook-endpoints & co. (payorch_http::webhooks_out).
        .with_webhooks(
            app.store.webhook_log(),
            crate::webhooks_out::endpoints(&config)
                .iter()
                .map(|e| e.info())
                .collect(),
        );
        for check in app.health_checks() {
            state = state.with_health_check(check);
        }
        let router = payorch_http::router(state);

        // Events out. The relay sleeps while idle instead of polling: woken
        // by LISTEN/NOTIFY on Postgres, by the in-process append signal on
        // SQLite.
        let wakeup = app.store.wakeup();
        let mut relay_name = None;
        let relay = match &config.amqp_url {
            Some(amqp) => {
                let relay_config = RelayConfig::new(amqp.clone());
                relay_name = Some(relay_config.name.clone());
                let mut relay = Relay::new(
                    app.store.events(),
                    app.store.checkpoints(),
                    app.store.leader_lock(),
                    relay_config,
                );
                relay = relay.with_wakeup(Arc::new(wakeup.signal().subscribe()));
                Some(relay.spawn())
            }
            None => None,
        };
        // Without a broker, in-process subscribers (embedding) use this bus;
        // it tails the same store from its own checkpoints.
        let _bus = relay.is_none().then(|| {
            Arc::new(InProcessBus::new(
                app.store.events(),
                app.store.checkpoints(),
            ))
        });

        // Reconciler: one active node per store, under its lease.
        let (stop_tx, stop_rx) = watch::channel(false);
        let reconciler = Reconciler::with_open_work(
            app.engine.clone(),
            config.reconciler(),
            app.store.open_work(),
            app.store.checkpoints(),
        )
        // A pass in progress stops between items on shutdown.
        .with_stop(stop_rx.clone());
        let interval = Duration::from_secs(config.reconcile_interval_secs.max(1));
        let reconcile_task = tokio::spawn(reconcile_under_lease(
            reconciler,
            app.store.leader_lock(),
            interval,
            app.metrics.clone(),
            stop_rx,
        ));

        // Merchant webhooks out ([[webhooks]]), one pass per second.
        let webhook_task = crate::webhooks_out::spawn(&config, &app, stop_tx.subscribe())?;

        // Relay lag gauge (see crate::gauges): counted every second while
        // the relay lags; when this process's relay saves a checkpoint, a
        // one-row probe sets it to 0 once the relay has caught up, so the
        // gauge shows the drain when it happens (at most LAG_FAST_INTERVAL
        // later), not up to a second later.
        let lag_task = relay_name.map(|name| {
            let (events, checkpoints) = (app.store.events(), app.store.checkpoints());
            let metrics = app.metrics.clone();
            let mut stop_rx = stop_tx.subscribe();
            let relay_status = relay.as_ref().map(|r| r.watch());
            let wake = wakeup.signal().subscribe();
            tokio::spawn(async move {
                let mut lag = 0;
                let mut count_at = tokio::time::Instant::now();
                loop {
                    if let Some(s) = &relay_status {
                        metrics.set_role("relay", s.borrow().state == RelayState::Active);
                    }
                    let now = tokio::time::Instant::now();
                    let measured = if lag == 0 || now >= count_at {
                        count_at = now + LAG_INTERVAL;
                        crate::gauges::lag(events.as_ref(), checkpoints.as_ref(), &name).await
                    } else {
                        crate::gauges::caught_up(events.as_ref(), checkpoints.as_ref(), &name)
                            .await
                            .map(|done| if done { 0 } else { lag })
                    };
                    match measured {
                        Ok(n) => {
                            lag = n;
                            metrics.set_relay_lag(gauge(n));
                        }
                        Err(e) => tracing::warn!(error = %e, "relay lag not measured"),
                    }
                    // Caught up and told of appends: sleep until the next
                    // one (or LAG_IDLE_INTERVAL); lagging: until the next
                    // count, or a checkpoint saved by this process's relay.
                    let saved = relay_status.as_ref().map(|s| s.borrow().checkpoint);
                    let mut status = relay_status.clone();
                    let pause = async {
                        tokio::time::sleep(LAG_FAST_INTERVAL).await;
                        if lag == 0 {
                            wake.wait(LAG_IDLE_INTERVAL).await;
                            return;
                        }
                        let count = tokio::time::sleep_until(count_at);
                        match (status.as_mut(), saved) {
                            (Some(rx), Some(saved)) => {
                                tokio::select! {
                                    _ = count => {}
                                    _ = rx.wait_for(|s| s.checkpoint != saved) => {}
                                }
                            }
                            _ => count.await,
                        }
                    };
                    tokio::select! {
                        _ = stop_rx.changed() => break,
                        _ = pause => {}
                    }
                }
            })
        });

        let broker = match &config.amqp_url {
            Some(_) => "rabbitmq relay",
            None => "in-process bus",
        };
        let gateway = match &app.sandbox {
            Some(s) => format!("in-process sandbox at {}", s.base_url()),
            None => format!("PayKKa at {}", config.paykka_base_url().unwrap_or("?")),
        };
        let info = json!({
            "url": url,
            "store": app.store.kind(),
            "events_out": broker,
            "gateway": gateway,
            "merchant_id": app.demo.as_ref().map(|d| d.merchant_id.clone()),
            "api_key": app.demo.as_ref().map(|d| d.api_key.clone()),
        });
        out.emit(&info, || {
            let mut s = format!(
                "payorch listening on {url}\n  store: {} ({})\n  events out: {broker}\n  gateway: {gateway}\n  health: {url}/healthz   metrics: {url}/metrics   OpenAPI: {url}/openapi.json\n",
                app.store.kind(),
                crate::config::redact_url(&config.store_url),
            );
            if let Some(d) = &app.demo {
                s.push_str(&format!(
                    "\nDemo merchant {} (API key shown once):\n  api key: {}\n\nTry it:\n{}\n",
                    d.merchant_id,
                    d.api_key,
                    curl_example(&url, &d.api_key)
                ));
            }
            s
        });
        use std::io::Write;
        let _ = std::io::stdout().flush();

        payorch_http::serve(listener, router, shutdown_signal())
            .await
            .context("HTTP server failed")?;
        tracing::info!("shutting down: HTTP stopped, stopping reconciler and relay");
        let _ = stop_tx.send(true);
        let _ = reconcile_task.await;
        if let Some(t) = webhook_task {
            let _ = t.await;
        }
        if let Some(t) = lag_task {
            let _ = t.await;
        }
        if let Some(r) = relay {
            r.stop().await;
        }
        app.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use payorch_engine::bus::InMemoryLeaderLock;
    use payorch_engine::gateway::fake::FakeGateway;
    use payorch_engine::orchestrator::{Engine, EngineConfig};
    use payorch_engine::reconciler::ReconcilerConfig;
    use payorch_engine::store::SystemClock;
    use payorch_engine::store::memory::InMemoryStore;

    fn holds(m: &Metrics) -> bool {
        m.render().contains("payorch_role{role=\"reconciler\"} 1")
    }

    fn node(store: &Arc<InMemoryStore>) -> Reconciler {
        let engine = Arc::new(Engine::new(
            store.clone(),
            store.clone(),
            Arc::new(FakeGateway::new()),
            Arc::new(SystemClock),
            EngineConfig::default(),
        ));
        Reconciler::new(engine, ReconcilerConfig::default())
    }

    /// Two nodes on one lock: exactly one reconciles; when its lease is
    /// lost the other takes over, and the first stands by.
    #[tokio::test]
    async fn one_reconciler_at_a_time_and_a_standby_takes_over() {
        let store = Arc::new(InMemoryStore::new());
        let lock = InMemoryLeaderLock::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ma, mb) = (Metrics::new(), Metrics::new());
        let tick = Duration::from_millis(20);
        let a = tokio::spawn(reconcile_under_lease(
            node(&store),
            Arc::new(lock.clone()),
            tick,
            ma.clone(),
            stop_rx.clone(),
        ));
        let b = tokio::spawn(reconcile_under_lease(
            node(&store),
            Arc::new(lock.clone()),
            tick,
            mb.clone(),
            stop_rx,
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let wait = |what: &'static str, cond: &dyn Fn() -> bool| {
            assert!(std::time::Instant::now() < deadline, "{what}");
            cond()
        };
        while !wait("nobody took the lease", &|| holds(&ma) || holds(&mb)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // While the lease is held, the other node keeps standing by.
        for _ in 0..20 {
            assert!(!(holds(&ma) && holds(&mb)), "two reconcilers at once");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first_was_a = holds(&ma);
        // The holder's session dies (the lease is free for the standby).
        lock.revoke(RECONCILER_LEASE);
        let other_holds = || if first_was_a { holds(&mb) } else { holds(&ma) };
        while !wait("the standby never took over", &other_holds) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let first = if first_was_a { &ma } else { &mb };
        while !wait("the old holder never stood down", &|| !holds(first)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop_tx.send(true);
        a.await.unwrap();
        b.await.unwrap();
        assert!(!holds(&ma) && !holds(&mb), "roles cleared on stop");
    }
}
