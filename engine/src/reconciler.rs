//! The reconciler: resolves PayKKa calls whose answer never came.
//!
//! It scans order streams (`EventStore::list_streams("order")`) and picks
//! those with an open call — initiate, capture, void or refund still
//! `*Requested` or `*OutcomeUnknown`, or a 3DS challenge — whose last
//! event is older than [`ReconcilerConfig::threshold`]. For each it runs
//! Transaction Query (and Refund Query per open refund) through
//! [`Engine::refresh_order`], with per-stream exponential backoff.
//!
//! **The rule: only a definitive answer changes state.**
//! * A query that shows the payment (any status) is applied like a webhook.
//! * Timeouts, 5xx and other non-answers change nothing; we try again later.
//! * "The order doesn't exist" (206024) for an initiate that was sent is
//!   *not* proof of failure: PayKKa may not have indexed it yet, or the
//!   request may still be in flight. It becomes a decline only once
//!   [`ReconcilerConfig::grace`] has passed since the call was requested
//!   (default 24 h, beyond PayKKa's payment expiry), when PayKKa can no
//!   longer create that transaction. The same holds for a refund that
//!   Refund Query does not know, and for a capture or void that a query
//!   still shows as not applied (AUTHORIZED), and for a 3DS challenge
//!   still PROCESSING.
//! * Before the grace period such observations are applied with
//!   `settled = false`, which the aggregate ignores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use payorch_schemas::events::{ORDER_STREAM_TYPE, OrderEvent, OrderId};

use crate::codec;
use crate::orchestrator::{Engine, EngineError, read_whole_stream};
use crate::order::{self, OrderState, Phase};
use crate::store::StreamId;

/// Settings of the reconciler.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// How old the last event of a stream with an open call must be before
    /// we query (leave time for the synchronous answer and the webhook).
    pub threshold: Duration,
    /// After this long since the call was requested, "not found" / "not
    /// applied" answers count as definitive (see module docs).
    pub grace: Duration,
    /// First backoff between two queries of one stream (doubles).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Streams listed per page.
    pub page: usize,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        // codes.md §5: query after 5 s, 30 s, 2 min, 10 min, then hourly.
        ReconcilerConfig {
            threshold: Duration::from_secs(5),
            grace: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            page: 500,
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub scanned: usize,
    pub candidates: usize,
    pub queried: usize,
    /// Streams whose state changed because of the query.
    pub resolved: usize,
    /// Streams skipped because their backoff has not elapsed.
    pub backed_off: usize,
    pub errors: usize,
}

/// See the module docs.
pub struct Reconciler {
    engine: Arc<Engine>,
    config: ReconcilerConfig,
    /// Per stream: attempts so far and the earliest next query.
    backoff: Mutex<HashMap<StreamId, (u32, OffsetDateTime)>>,
}

impl Reconciler {
    pub fn new(engine: Arc<Engine>, config: ReconcilerConfig) -> Self {
        Reconciler {
            engine,
            config,
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// One pass over every order stream.
    pub async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        let mut report = ReconcileReport::default();
        let store = self.engine.store().clone();
        let mut after: Option<StreamId> = None;
        loop {
            let page = store
                .list_streams(ORDER_STREAM_TYPE, after.as_ref(), self.config.page)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (stream, _) in &page {
                report.scanned += 1;
                match self.reconcile_stream(stream, &mut report).await {
                    Ok(()) => {}
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(stream = %stream, error = %e, "reconcile failed");
                    }
                }
            }
            if page.len() < self.config.page {
                break;
            }
        }
        Ok(report)
    }

    async fn reconcile_stream(
        &self,
        stream: &StreamId,
        report: &mut ReconcileReport,
    ) -> Result<(), EngineError> {
        let recorded = read_whole_stream(self.engine.store().as_ref(), stream).await?;
        let mut state = OrderState::default();
        let mut requested_at = None;
        for e in &recorded {
            let ev: OrderEvent = codec::decode_recorded(e)?;
            if matches!(
                ev,
                OrderEvent::AuthorisationRequested(_)
                    | OrderEvent::PaymentPlaced(_)
                    | OrderEvent::CaptureRequested(_)
                    | OrderEvent::VoidRequested(_)
                    | OrderEvent::RefundRequested(_)
                    | OrderEvent::ChallengeRequired(_)
            ) {
                requested_at = Some(e.recorded_at);
            }
            state = order::evolve(state, &ev);
        }
        let open = state.has_open_call() || state.phase() == Phase::ChallengeRequired;
        let (Some(last), Some(order_id), true) = (recorded.last(), state.order_id(), open) else {
            self.lock().remove(stream);
            return Ok(());
        };
        let now = self.engine.clock().now();
        if now - last.recorded_at < self.config.threshold {
            return Ok(());
        }
        report.candidates += 1;
        let (attempts, next_at) = self.lock().get(stream).copied().unwrap_or((0, now));
        if now < next_at {
            report.backed_off += 1;
            return Ok(());
        }
        let settled = requested_at.is_some_and(|t| now - t >= self.config.grace);
        report.queried += 1;
        let before = state.version;
        let view = self.engine.refresh_order(order_id, settled).await?;
        if view.version != before {
            report.resolved += 1;
        }
        let delay = self
            .config
            .backoff_base
            .saturating_mul(2u32.saturating_pow(attempts.min(16)))
            .min(self.config.backoff_max);
        self.lock()
            .insert(stream.clone(), (attempts + 1, now + delay));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, (u32, OffsetDateTime)>> {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queries one order now, ignoring thresholds and backoff.
    pub async fn reconcile_order(&self, order_id: OrderId) -> Result<(), EngineError> {
        self.engine.refresh_order(order_id, false).await.map(|_| ())
    }
}
