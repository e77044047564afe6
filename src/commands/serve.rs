//! `payorch serve [--addr HOST:PORT]`: the service.
//!
//! Builds the parts from the configuration ([`crate::app::App`]), then runs
//! the merchant API and PayKKa webhook endpoints (payorch-http), the
//! reconciler loop, and events out: the RabbitMQ relay when `amqp_url` is
//! set (leader lock: Postgres advisory lock on Postgres, in-memory on
//! SQLite), else the in-process bus. Ctrl-C or SIGTERM: stop accepting,
//! finish in-flight requests, stop the reconciler and the relay (its
//! checkpoint covers every confirmed event), close the store.
//!
//! `/metrics` gauges: the reconciler backlog is set from each pass
//! (`candidates`), the relay lag every second (see [`crate::gauges`]; 0
//! without a broker). `/healthz` checks the store, and the broker when
//! `amqp_url` is set.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use payorch_engine::bus::InProcessBus;
use payorch_engine::reconciler::Reconciler;
use payorch_http::AppState;
use payorch_rabbitmq::{Relay, RelayConfig};
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

/// How often the relay-lag gauge is refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

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
        // Replays answer the stored response (payorch_http::idempotency).
        .with_idempotency_store(app.store.idempotency())
        // GET /v1/payments and the other lists (payorch_http::listing).
        .with_indexer(app.store.indexer());
        for check in app.health_checks() {
            state = state.with_health_check(check);
        }
        let router = payorch_http::router(state);

        // Events out.
        let mut relay_name = None;
        let relay = match &config.amqp_url {
            Some(amqp) => {
                let relay_config = RelayConfig::new(amqp.clone());
                relay_name = Some(relay_config.name.clone());
                Some(
                    Relay::new(
                        app.store.events(),
                        app.store.checkpoints(),
                        app.store.leader_lock(),
                        relay_config,
                    )
                    .spawn(),
                )
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

        // Reconciler loop; each pass sets the backlog gauge.
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let reconciler = Reconciler::new(app.engine.clone(), config.reconciler());
        let interval = Duration::from_secs(config.reconcile_interval_secs.max(1));
        let metrics = app.metrics.clone();
        let reconcile_task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
                match reconciler.run_once().await {
                    Ok(r) => {
                        metrics.set_reconciler_backlog(gauge(r.candidates as u64));
                        if r.queried > 0 {
                            tracing::info!(
                                candidates = r.candidates,
                                queried = r.queried,
                                resolved = r.resolved,
                                backed_off = r.backed_off,
                                expired = r.expired,
                                checkout_paid = r.checkout_paid,
                                "reconciler pass"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reconciler pass failed"),
                }
            }
        });

        // Merchant webhooks out ([[webhooks]]), one pass per second.
        let webhook_task = crate::webhooks_out::spawn(&config, &app, stop_tx.subscribe())?;

        // Relay lag gauge (see crate::gauges), refreshed every second.
        let lag_task = relay_name.map(|name| {
            let (events, checkpoints) = (app.store.events(), app.store.checkpoints());
            let metrics = app.metrics.clone();
            let mut stop_rx = stop_tx.subscribe();
            tokio::spawn(async move {
                loop {
                    match crate::gauges::lag(events.as_ref(), checkpoints.as_ref(), &name).await {
                        Ok(lag) => metrics.set_relay_lag(gauge(lag)),
                        Err(e) => tracing::warn!(error = %e, "relay lag not measured"),
                    }
                    tokio::select! {
                        _ = stop_rx.changed() => break,
                        _ = tokio::time::sleep(LAG_INTERVAL) => {}
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
