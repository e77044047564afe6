//! `payorch replay`: history analysis over the configured store.
//!
//! * `payorch replay STREAM [--version N | --at RFC3339] [--explain]`: the
//!   state of one stream at a version or time; `--explain` lists every
//!   event with the order's phase after it.
//! * `payorch replay --all`: rebuilds the [`OrderSummary`] projection
//!   (orders per status, money per currency) and the listing index of
//!   `GET /v1/payments` & co. (payorch_engine::listing) from position 0,
//!   progress on stderr, checkpoints saved after each batch.
//! * `payorch replay --verify`: decodes every stored event through today's
//!   upcasters and folds every stream with today's `evolve`; lists streams
//!   that fail and exits 1 if any.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use payorch_engine::codec;
use payorch_engine::orchestrator::{
    AgreementAggregate, CheckoutAggregate, OrderAggregate, OrderView, read_whole_stream,
};
use payorch_engine::order::{self, OrderState};
use payorch_engine::replay::{
    Projection, ProjectionRunner, explain, fold_to_time, fold_to_version,
};
use payorch_engine::store::{EventStore, RecordedEvent, StreamId, Version};
use payorch_schemas::events::{
    AGREEMENT_STREAM_TYPE, AgreementEvent, CHECKOUT_STREAM_TYPE, CheckoutEvent, ORDER_STREAM_TYPE,
    OrderEvent,
};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Globals;
use crate::output::Output;
use crate::store::Store;

#[derive(Debug, clap::Args)]
#[command(
    disable_version_flag = true,
    group = clap::ArgGroup::new("mode").args(["stream", "all", "verify"]).required(true)
)]
pub struct Args {
    /// Stream id (e.g. `order-0193...`).
    stream: Option<String>,
    /// Fold to this version (events 1..=N).
    #[arg(long, conflicts_with_all = ["at", "all", "verify"])]
    version: Option<u64>,
    /// Fold to this time (events recorded at or before), RFC 3339.
    #[arg(long, conflicts_with_all = ["all", "verify"])]
    at: Option<String>,
    /// List every event with the state after it (order streams).
    #[arg(long, conflicts_with_all = ["all", "verify"])]
    explain: bool,
    /// Rebuild the order-summary projection and the listing index from position 0.
    #[arg(long)]
    all: bool,
    /// Check that every stored history is accepted by today's code.
    #[arg(long)]
    verify: bool,
}

pub fn run(args: &Args, globals: &Globals, out: &Output) -> anyhow::Result<ExitCode> {
    let config = globals.config()?;
    crate::block_on(async {
        let store = Store::open_existing_migrated(&config.store_url).await?;
        let result = if args.all {
            rebuild(&store, out).await
        } else if args.verify {
            verify(store.events().as_ref(), out).await
        } else if let Some(stream) = &args.stream {
            one_stream(store.events().as_ref(), args, stream, out).await
        } else {
            bail!("give a STREAM, --all or --verify")
        };
        store.close().await;
        result
    })
}

fn stream_type_of(stream: &str) -> &'static str {
    if stream.starts_with("agreement-") {
        AGREEMENT_STREAM_TYPE
    } else if stream.starts_with("checkout-") {
        CHECKOUT_STREAM_TYPE
    } else {
        ORDER_STREAM_TYPE
    }
}

async fn one_stream(
    store: &dyn EventStore,
    args: &Args,
    stream: &str,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let id = StreamId::new(stream);
    let current = store.stream_version(&id).await?;
    if current == Version::NONE {
        bail!("stream {stream} has no events");
    }
    let at = match &args.at {
        Some(t) => Some(
            OffsetDateTime::parse(t, &Rfc3339)
                .with_context(|| format!("--at {t:?} is not an RFC 3339 time"))?,
        ),
        None => None,
    };
    let version = Version(args.version.unwrap_or(current.0).min(current.0));
    if args.explain {
        if stream_type_of(stream) != ORDER_STREAM_TYPE {
            bail!("--explain reads order streams; {stream} is not one");
        }
        let steps = explain(store, &id).await?;
        let steps: Vec<_> = steps
            .into_iter()
            .filter(|s| s.version <= version.0 && at.is_none_or(|t| s.recorded_at <= t))
            .collect();
        out.emit(&json!({"stream": stream, "steps": steps}), || {
            let mut s = format!("{stream}: {} event(s)\n", steps.len());
            for st in &steps {
                let o = st.order_after.as_ref();
                s.push_str(&format!(
                    "  v{:<3} {}  {:<28} -> {}{}\n",
                    st.version,
                    st.recorded_at.format(&Rfc3339).unwrap_or_default(),
                    st.event_type,
                    st.phase_after,
                    o.map(|o| format!("  (captured {} refunded {})", o.captured, o.refunded))
                        .unwrap_or_default()
                ));
            }
            s
        });
        return Ok(ExitCode::SUCCESS);
    }
    let state: Value = match stream_type_of(stream) {
        ORDER_STREAM_TYPE => {
            let s: OrderState = match at {
                Some(t) => fold_to_time::<OrderAggregate>(store, &id, t).await?,
                None => fold_to_version::<OrderAggregate>(store, &id, version).await?,
            };
            json!({"phase": s.phase(), "order": OrderView::from_state(&s)})
        }
        AGREEMENT_STREAM_TYPE => {
            let s = match at {
                Some(t) => fold_to_time::<AgreementAggregate>(store, &id, t).await?,
                None => fold_to_version::<AgreementAggregate>(store, &id, version).await?,
            };
            json!({
                "phase": s.phase,
                "version": s.version,
                "charges": s.charges.iter().map(|(o, m)| json!({"order_id": o, "amount": m})).collect::<Vec<_>>(),
                "cancel_outcome_unknown": s.cancel_outcome_unknown,
            })
        }
        _ => {
            let s = match at {
                Some(t) => fold_to_time::<CheckoutAggregate>(store, &id, t).await?,
                None => fold_to_version::<CheckoutAggregate>(store, &id, version).await?,
            };
            json!({
                "phase": s.phase,
                "version": s.version,
                "order_id": s.order_id,
                "outcome_unknown": s.outcome_unknown,
            })
        }
    };
    let value = json!({
        "stream": stream,
        "current_version": current.0,
        "version": if at.is_none() { Some(version.0) } else { None },
        "at": args.at,
        "state": state,
    });
    out.emit(&value, || {
        format!(
            "{stream} at {}:\n{:#}",
            match &args.at {
                Some(t) => t.clone(),
                None => format!("version {} of {}", version.0, current.0),
            },
            state
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// Orders per status and money per currency: a read model rebuilt from
/// the whole history.
#[derive(Default, Debug)]
pub struct OrderSummary {
    orders: BTreeMap<StreamId, OrderState>,
    bar: Option<ProgressBar>,
}

/// Money totals of one currency (minor units).
#[derive(Default, Debug, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub authorised: i64,
    pub captured: i64,
    pub refunded: i64,
}

impl OrderSummary {
    /// Orders per phase and totals per currency.
    pub fn report(&self) -> (BTreeMap<String, usize>, BTreeMap<String, Totals>) {
        let mut by_status = BTreeMap::new();
        let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
        for s in self.orders.values() {
            *by_status.entry(s.phase().to_string()).or_insert(0) += 1;
            if let Some(v) = OrderView::from_state(s) {
                let t = totals
                    .entry(v.amount.currency.code().to_owned())
                    .or_default();
                t.authorised += v.authorised.minor;
                t.captured += v.captured.minor;
                t.refunded += v.refunded.minor;
            }
        }
        (by_status, totals)
    }
}

impl Projection for OrderSummary {
    fn name(&self) -> &str {
        "order_summary"
    }

    fn apply(&mut self, e: &RecordedEvent) -> Result<(), String> {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        if e.stream_type != ORDER_STREAM_TYPE {
            return Ok(());
        }
        let event: OrderEvent = codec::decode_recorded(e).map_err(|err| err.to_string())?;
        let state = self.orders.remove(&e.stream_id).unwrap_or_default();
        self.orders
            .insert(e.stream_id.clone(), order::evolve(state, &event));
        Ok(())
    }

    fn reset(&mut self) {
        self.orders.clear();
    }
}

async fn rebuild(store: &Store, out: &Output) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} rebuilding order_summary: {pos} events ({per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut projection = OrderSummary {
        bar: Some(bar.clone()),
        ..OrderSummary::default()
    };
    let events = store.events();
    let checkpoints = store.checkpoints();
    let runner = ProjectionRunner::new(events.as_ref(), checkpoints.as_ref()).with_batch(512);
    let applied = runner.rebuild(&mut projection).await?;
    bar.set_message("rebuilding the listing index");
    let indexed = store
        .indexer()
        .rebuild()
        .await
        .context("listing index rebuild")?;
    bar.finish_and_clear();
    let checkpoint = checkpoints.load_checkpoint("order_summary").await?;
    let (by_status, totals) = projection.report();
    let value = json!({
        "projection": "order_summary",
        "events": applied,
        "resource_index_events": indexed,
        "checkpoint": checkpoint.map(|p| p.0),
        "orders": projection.orders.len(),
        "by_status": by_status,
        "totals": totals,
    });
    out.emit(&value, || {
        let mut s = format!(
            "order_summary and the listing index rebuilt from position 0: {applied} events, {} orders\n",
            projection.orders.len()
        );
        for (k, v) in &by_status {
            s.push_str(&format!("  {k:<20} {v}\n"));
        }
        for (c, t) in &totals {
            s.push_str(&format!(
                "  {c}: authorised {} captured {} refunded {} (minor units)\n",
                t.authorised, t.captured, t.refunded
            ));
        }
        s
    });
    Ok(ExitCode::SUCCESS)
}

/// One stream that today's code does not accept.
#[derive(Debug, Serialize)]
struct Failure {
    stream: String,
    version: Option<u64>,
    error: String,
}

async fn verify_stream(
    store: &dyn EventStore,
    stream_type: &str,
    id: &StreamId,
) -> Option<Failure> {
    let fail = |version: Option<u64>, error: String| {
        Some(Failure {
            stream: id.as_str().to_owned(),
            version,
            error,
        })
    };
    let events = match read_whole_stream(store, id).await {
        Ok(e) => e,
        Err(e) => return fail(None, e.to_string()),
    };
    for (expected, e) in (1u64..).zip(events.iter()) {
        if e.version.0 != expected {
            return fail(
                Some(e.version.0),
                format!("version gap: expected {expected}"),
            );
        }
    }
    // Decode through today's upcasters, then fold with today's evolve.
    let result: Result<(), (u64, String)> = match stream_type {
        ORDER_STREAM_TYPE => {
            fold_all::<OrderEvent, _>(&events, OrderState::default(), order::evolve)
        }
        AGREEMENT_STREAM_TYPE => fold_all::<AgreementEvent, _>(
            &events,
            Default::default(),
            payorch_engine::agreement::evolve,
        ),
        _ => fold_all::<CheckoutEvent, _>(
            &events,
            Default::default(),
            payorch_engine::checkout::evolve,
        ),
    };
    match result {
        Ok(()) => None,
        Err((v, msg)) => fail(Some(v), msg),
    }
}

fn fold_all<E: codec::DomainEvent, S>(
    events: &[RecordedEvent],
    init: S,
    evolve: fn(S, &E) -> S,
) -> Result<(), (u64, String)> {
    let mut state = init;
    for e in events {
        let event: E = codec::decode_recorded(e).map_err(|err| (e.version.0, err.to_string()))?;
        state = evolve(state, &event);
    }
    let _ = state;
    Ok(())
}

async fn verify(store: &dyn EventStore, out: &Output) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} verifying: {pos} streams")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut failures = Vec::new();
    let mut checked = 0usize;
    for stream_type in [
        ORDER_STREAM_TYPE,
        AGREEMENT_STREAM_TYPE,
        CHECKOUT_STREAM_TYPE,
    ] {
        let mut after: Option<StreamId> = None;
        loop {
            let page = store.list_streams(stream_type, after.as_ref(), 500).await?;
            let Some((last, _)) = page.last() else { break };
            let last = last.clone();
            for (id, _) in &page {
                if let Some(f) = verify_stream(store, stream_type, id).await {
                    failures.push(f);
                }
                checked += 1;
                bar.inc(1);
            }
            after = Some(last);
        }
    }
    bar.finish_and_clear();
    let ok = failures.is_empty();
    out.emit(
        &json!({"streams": checked, "failures": failures, "ok": ok}),
        || {
            let mut s = format!("{checked} stream(s) checked, {} failing\n", failures.len());
            for f in &failures {
                s.push_str(&format!(
                    "  FAIL {} at version {}: {}\n",
                    f.stream,
                    f.version.map(|v| v.to_string()).unwrap_or("-".into()),
                    f.error
                ));
            }
            s
        },
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
