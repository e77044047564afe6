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

use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use payorch_engine::orchestrator::OrderView;
use payorch_engine::replay::{
    FoldTo, OrderSummary, Projection, ProjectionRunner, StreamState, explain, fold_stream,
    verify_all,
};
use payorch_engine::store::{EventStore, RecordedEvent, Version};
use payorch_engine::stream::StreamRef;
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

async fn one_stream(
    store: &dyn EventStore,
    args: &Args,
    stream: &str,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let r = StreamRef::parse(stream)?;
    let id = r.stream_id();
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
        if !matches!(r, StreamRef::Order(_)) {
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
    let to = match at {
        Some(t) => FoldTo::Time(t),
        None => FoldTo::Version(version),
    };
    let state: Value = match fold_stream(store, r, to).await? {
        StreamState::Order(s) => {
            json!({"phase": s.phase(), "order": OrderView::from_state(&s)})
        }
        StreamState::Agreement(s) => json!({
            "phase": s.phase,
            "version": s.version,
            "charges": s.charges.iter().map(|(o, m)| json!({"order_id": o, "amount": m})).collect::<Vec<_>>(),
            "cancel_outcome_unknown": s.cancel_outcome_unknown,
        }),
        StreamState::Checkout(s) => json!({
            "phase": s.phase,
            "version": s.version,
            "order_id": s.order_id,
            "outcome_unknown": s.outcome_unknown,
        }),
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

/// A projection with a progress bar ticking once per event.
struct WithProgress<'a, P> {
    inner: &'a mut P,
    bar: ProgressBar,
}

impl<P: Projection> Projection for WithProgress<'_, P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn apply(&mut self, e: &RecordedEvent) -> Result<(), String> {
        self.bar.inc(1);
        self.inner.apply(e)
    }

    fn reset(&mut self) {
        self.inner.reset();
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
    let mut projection = OrderSummary::default();
    let events = store.events();
    let checkpoints = store.checkpoints();
    let runner = ProjectionRunner::new(events.as_ref(), checkpoints.as_ref()).with_batch(512);
    let applied = runner
        .rebuild(&mut WithProgress {
            inner: &mut projection,
            bar: bar.clone(),
        })
        .await?;
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
        "orders": projection.orders(),
        "by_status": by_status,
        "totals": totals,
    });
    out.emit(&value, || {
        let mut s = format!(
            "order_summary and the listing index rebuilt from position 0: {applied} events, {} orders\n",
            projection.orders()
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

async fn verify(store: &dyn EventStore, out: &Output) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} verifying: {pos} streams")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let (checked, failures) = verify_all(store, || bar.inc(1)).await?;
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
