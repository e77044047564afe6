//! `payorch webhooks`: the merchant webhook delivery log of the configured
//! store (migration 0006).
//!
//! * `payorch webhooks deliveries --endpoint ID [--limit N] [--status S]
//!   [--starting-after EVENT_ID] [--json]`: the endpoint's deliveries,
//!   newest event first, each with its attempts (the JSON of each is what
//!   `GET /v1/webhook-endpoints/{id}/deliveries` shows);
//! * `payorch webhooks redeliver --endpoint ID --event EVENT_ID`: queues a
//!   redelivery of a delivered or given-up delivery in the store. The
//!   dispatcher of a `payorch serve` on the same store sends it on its next
//!   pass (about a second): it polls the log's redelivery queue every pass,
//!   so this works from another process or host.

use std::process::ExitCode;

use anyhow::Context;
use payorch_engine::webhook_out::{
    DeliveryListError, DeliveryQuery, DeliveryState, RedeliveryRequest,
};
use payorch_http::webhooks_out::{MAX_DELIVERIES_LIMIT, delivery_value};
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::Globals;
use crate::output::Output;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// List an endpoint's deliveries (newest event first) with every attempt.
    Deliveries {
        /// The endpoint id (`[[webhooks]] id`, default `<merchant_id>-<index>`).
        #[arg(long, value_name = "ID")]
        endpoint: String,
        /// Deliveries to show, 1 to 100.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only deliveries in this state: delivered, failed_retrying, given_up.
        #[arg(long)]
        status: Option<String>,
        /// Continue after this event id (the last one of the previous page).
        #[arg(long, value_name = "EVENT_ID")]
        starting_after: Option<Uuid>,
    },
    /// Queue a redelivery of an event to an endpoint (sent by `payorch serve`).
    Redeliver {
        /// The endpoint id.
        #[arg(long, value_name = "ID")]
        endpoint: String,
        /// The event id (the `Payorch-Event-Id` header of the delivery).
        #[arg(long = "event", value_name = "EVENT_ID")]
        event: Uuid,
    },
}

fn when(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

pub fn run(args: &Args, globals: &Globals, out: &Output) -> anyhow::Result<ExitCode> {
    let config = globals.config()?;
    crate::block_on(async {
        let store = Store::open_existing_migrated(&config.store_url).await?;
        let log = store.webhook_log();
        let result = match &args.command {
            Sub::Deliveries {
                endpoint,
                limit,
                status,
                starting_after,
            } => {
                if !(1..=MAX_DELIVERIES_LIMIT).contains(limit) {
                    anyhow::bail!("--limit must be 1 to {MAX_DELIVERIES_LIMIT}");
                }
                let mut q = DeliveryQuery::new(endpoint.clone(), *limit);
                q.starting_after = *starting_after;
                q.state = match status.as_deref() {
                    None => None,
                    Some(s) => Some(
                        DeliveryState::parse(s)
                            .filter(|s| *s != DeliveryState::Pending)
                            .with_context(|| {
                                format!(
                                    "--status {s:?} is not one of delivered, failed_retrying, given_up"
                                )
                            })?,
                    ),
                };
                let page = log.list(&q).await.map_err(|e| match e {
                    DeliveryListError::UnknownCursor(c) => anyhow::anyhow!(
                        "--starting-after {c} is not a delivery of endpoint {endpoint}"
                    ),
                    DeliveryListError::Store(s) => anyhow::Error::new(s),
                })?;
                let configured = config.webhook_ids().contains(endpoint);
                out.emit(
                    &serde_json::json!({
                        "endpoint_id": endpoint,
                        "has_more": page.has_more,
                        "data": page.deliveries.iter().map(delivery_value).collect::<Vec<_>>(),
                    }),
                    || {
                        let mut s = String::new();
                        if page.deliveries.is_empty() {
                            s.push_str(&format!("no deliveries to endpoint {endpoint}"));
                            if !configured {
                                s.push_str(" (no [[webhooks]] entry has this id)");
                            }
                            return s;
                        }
                        for d in &page.deliveries {
                            s.push_str(&format!(
                                "{}  {} {}  {}  attempts={}",
                                d.target.event_id,
                                d.target.stream_id,
                                d.target.event_type,
                                d.state,
                                d.attempt_count
                            ));
                            if let Some(n) = d.next_attempt_at {
                                s.push_str(&format!("  next={}", when(n)));
                            }
                            if d.redelivery_requested_at.is_some() {
                                s.push_str("  redelivery queued");
                            }
                            s.push('\n');
                            for a in &d.attempts {
                                let outcome = match (a.status, a.error) {
                                    (Some(code), _) => format!("http {code}"),
                                    (None, Some(e)) => e.as_str().to_owned(),
                                    (None, None) => "-".to_owned(),
                                };
                                s.push_str(&format!(
                                    "    #{} {}  {}  {} ms{}\n",
                                    a.number,
                                    when(a.at),
                                    outcome,
                                    a.latency_ms,
                                    if a.manual { "  (manual)" } else { "" }
                                ));
                            }
                        }
                        if page.has_more
                            && let Some(last) = page.deliveries.last()
                        {
                            s.push_str(&format!(
                                "more: --starting-after {}\n",
                                last.target.event_id
                            ));
                        }
                        s.trim_end().to_owned()
                    },
                );
                Ok(ExitCode::SUCCESS)
            }
            Sub::Redeliver { endpoint, event } => {
                if !config.webhook_ids().contains(endpoint) {
                    anyhow::bail!(
                        "--endpoint {endpoint}: no [[webhooks]] entry has this id (configured: {})",
                        config.webhook_ids().join(", ")
                    );
                }
                match log
                    .request_redelivery(endpoint, *event, time::OffsetDateTime::now_utc())
                    .await?
                {
                    RedeliveryRequest::Queued(d) => {
                        out.emit(&delivery_value(&d), || {
                            format!(
                                "redelivery of event {event} to endpoint {endpoint} queued; \
                                 `payorch serve` on this store sends it on its next pass"
                            )
                        });
                        Ok(ExitCode::SUCCESS)
                    }
                    RedeliveryRequest::NotFound => Err(anyhow::anyhow!(
                        "no delivery of event {event} to endpoint {endpoint} in the log"
                    )),
                    RedeliveryRequest::Busy(state) => Err(anyhow::anyhow!(
                        "the delivery of event {event} to endpoint {endpoint} is {state}: \
                         it is still retried automatically; redeliver it once it is \
                         delivered or given_up"
                    )),
                }
            }
        };
        store.close().await;
        result
    })
}
