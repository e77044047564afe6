//! The reconciler: resolves PayKKa calls whose answer never came.
//!
//! **What a pass costs: what is open, not what was ever written.** A pass
//! first brings the open-work index up to date ([`crate::open_work`]: a
//! checkpointed projection of `read_all`, so O(new events)), then lists
//! the open streams of each kind from the index and reads only those. With
//! nothing open and nothing new, a pass is one empty `read_all`, one
//! checkpoint read and three index lists, whatever the size of history.
//! Run one reconciler per store (the service runs it under a leader lease).
//! A pass stops between items once shutdown is asked
//! ([`Reconciler::with_stop`]): what it did stays done, the rest waits for
//! the next pass.
//!
//! It looks at order streams with an open call — initiate, capture, void or refund still
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
//!   longer create that transaction. The same holds for a capture or void
//!   that a query still shows as not applied (AUTHORIZED; for a capture
//!   after an earlier partial one, `balances.captured` not grown), and for
//!   a 3DS challenge still PROCESSING.
//! * Before the grace period such observations are applied with
//!   `past_grace = false`, which the aggregate ignores.
//!
//! **Re-sends are the reconciler's alone** (the PayKKa client never sends a
//! money-moving call twice):
//! * A refund that Refund Query still does not know after the grace period
//!   is sent again with the same `refund_trans_id`
//!   ([`Engine::refresh_order`] with `past_grace`), on every due pass (per
//!   the backoff) until PayKKa knows it. A non-success answer to a re-send
//!   (timeout, 5xx, refusal, decline code) is recorded as unknown, never
//!   declined: the refund's amount stays reserved, so no second refund can
//!   take money the first may still move. Only PayKKa's own record of the
//!   refund (SUCCESS or FAILURE, by answer, query or notification) closes
//!   it. Re-sends are bounded ([`ReconcilerConfig::max_refund_resends`]):
//!   past the bound the refund is not sent again but stays unknown (it may
//!   have landed), is queried at [`ReconcilerConfig::backoff_max`], logged
//!   at warn with its order and refund ids and counted in
//!   [`ReconcileReport::needs_attention`].
//! * An initiate is not sent again for a card payment: payorch keeps no
//!   card data at rest (the card number and CVV leave memory with the first
//!   send), so there is nothing to send. Its rule stays: declined once
//!   PayKKa still has no such `trans_id` after the grace period (beyond
//!   PayKKa's payment expiry, when it can no longer create it). Token
//!   payments follow the same rule (a re-send of those is not implemented).
//! * A capture is never sent again: a PayKKa capture carries no merchant
//!   reference, so a capture still processing at PayKKa would be taken
//!   twice. A query showing the captured amount grown is how it lands; one
//!   still AUTHORIZED after the grace period did not happen.
//!
//! It also looks at agreement and checkout streams:
//! * An agreement whose cancel is requested or unknown gets the cancel sent
//!   again ([`Engine::resend_agreement_cancel`]): PayKKa has no agreement
//!   query and a cancel is idempotent in effect; only success, 2015 or 2016
//!   are recorded (cancelled), any other answer changes nothing.
//! * An agreement with a charge whose order was never placed (a crash
//!   between `agreement_charged` and the placement; the open-work
//!   projector lists it) gets that order placed and run, or recorded
//!   declined unsent once the agreement is no longer active
//!   ([`Engine::resume_charge`]). Nothing had reached PayKKa for it.
//! * A checkout session whose create is requested or unknown is looked up
//!   by Checkout Session Query ([`Engine::refresh_checkout_session`]); "does
//!   not exist" declines it only after the grace period. If that answer
//!   already shows a payment, the order starts as below.
//! * An open checkout session whose last event is older than the threshold
//!   is looked up by Checkout Session Query
//!   ([`Engine::check_checkout_payment`]), once per pass at most and with
//!   the same per-stream backoff, so a payment whose notification was lost
//!   (dropped webhook, service down) is found without waiting for expiry:
//!   - PayKKa shows a payment (PROCESSING, AUTHORIZED, SUCCESS or later,
//!     or a status we do not know): the order is placed from the session
//!     and the session completed, exactly as the notification would have
//!     done, and the answer is applied to the order (counted in
//!     `resolved` and `checkout_paid`). A late notification for it, or
//!     the next pass, appends nothing.
//!   - PayKKa shows no payment (no transaction yet, or FAILURE/CANCELED;
//!     "does not exist" only after the grace period) and `expires_at` plus
//!     the threshold has passed: the session is closed as expired
//!     ([`Engine::close_checkout_session`]); a payment PayKKa reports later
//!     still completes it.
//!   - No definitive answer (timeout, 5xx, refusal): nothing changes this
//!     pass; a session is never expired without a "not paid" answer, so
//!     with PayKKa unreachable it stays open past its expiry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use payorch_schemas::events::{OrderEvent, OrderId, RefundId};

use crate::agreement::AgreementPhase;
use crate::bus::LeaseGuard;
use crate::checkout::CheckoutPhase;
use crate::codec;
use crate::command::ReleaseMode;
use crate::open_work::{InMemoryOpenWorkIndex, OpenWorkIndex, OpenWorkProjector, WorkKind};
use crate::orchestrator::{
    AgreementAggregate, CheckoutAggregate, CommandContext, Engine, EngineError,
    SessionPaymentCheck, fold_recorded, read_whole_stream,
};
use crate::order::{self, OrderState, Phase};
use crate::store::memory::InMemoryStore;
use crate::store::{CheckpointStore, RecordedEvent, StreamId};

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
    /// Open-work rows listed per page.
    pub page: usize,
    /// Re-sends of one refund PayKKa keeps not knowing (past the grace
    /// period) before the reconciler stops re-sending it: the refund stays
    /// `refund_outcome_unknown` (never declined: it may have landed), is
    /// queried at [`ReconcilerConfig::backoff_max`], logged at warn and
    /// counted in [`ReconcileReport::needs_attention`]. Counted per
    /// process (a restart allows this many again).
    pub max_refund_resends: u32,
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
            // With the default backoff the first re-sends come at the
            // hourly cadence: about a day of trying before a person looks.
            max_refund_resends: 24,
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Streams with open work listed from the index (fresh ones included).
    pub scanned: usize,
    /// Events the open-work projection read before the pass.
    pub projected_events: usize,
    /// Orders with a PayKKa call (or a 3DS challenge) open for longer than
    /// the threshold, backed-off ones included.
    pub due_orders: usize,
    /// Agreements whose cancel is unanswered for longer than the threshold.
    pub due_agreements: usize,
    /// Checkout sessions older than the threshold whose create is
    /// unanswered or that are open (waiting for the shopper, checked for a
    /// lost payment notification).
    pub due_checkout_sessions: usize,
    /// Streams with a PayKKa call requested or unanswered for longer than
    /// the threshold (backed-off ones included): the reconciler's backlog.
    pub candidates: usize,
    /// Open checkout sessions older than the threshold, checked for a
    /// payment whose notification was lost (backed-off ones included). Not
    /// in `candidates`: they wait on the shopper, not on a PayKKa answer.
    pub open_sessions: usize,
    pub queried: usize,
    /// Streams whose state changed because of the query.
    pub resolved: usize,
    /// Streams skipped because their backoff has not elapsed.
    pub backed_off: usize,
    /// Open checkout sessions closed as expired (past `expires_at` plus
    /// the threshold, and Checkout Session Query shows no payment).
    pub expired: usize,
    /// Open checkout sessions whose payment Checkout Session Query showed
    /// (its notification lost): order started, session completed. Also
    /// counted in `resolved`.
    pub checkout_paid: usize,
    pub errors: usize,
    /// The pass stopped early because its lease was lost
    /// ([`Reconciler::run_once_leased`]).
    pub lease_lost: bool,
    /// The pass stopped early because shutdown was asked
    /// ([`Reconciler::with_stop`]).
    pub stopped: bool,
    /// Refunds past [`ReconcilerConfig::max_refund_resends`] that are
    /// still open: PayKKa keeps not knowing them; a person must look
    /// (gauge `payorch_reconciler_needs_attention`).
    pub needs_attention: usize,
}

/// Why a stream is looked at: an open PayKKa call, or an open checkout
/// session that may have been paid without us hearing of it.
#[derive(Clone, Copy)]
enum Due {
    Call,
    OpenSession,
}

/// See the module docs.
pub struct Reconciler {
    engine: Arc<Engine>,
    config: ReconcilerConfig,
    /// Keeps the open-work index current; run before each pass.
    open_work: OpenWorkProjector,
    /// Per stream: attempts so far and the earliest next query.
    backoff: Mutex<HashMap<StreamId, (u32, OffsetDateTime)>>,
    /// Per refund: its order's stream and the re-sends so far.
    resends: Mutex<HashMap<RefundId, (StreamId, u32)>>,
    /// Shutdown: once `true`, a pass stops before its next item.
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Reconciler {
    /// A reconciler with an in-memory open-work index, projected from
    /// position 0 on its first pass (reads the whole history once per
    /// process). Services pass a persistent index with
    /// [`Reconciler::with_open_work`].
    pub fn new(engine: Arc<Engine>, config: ReconcilerConfig) -> Self {
        let checkpoints: Arc<dyn CheckpointStore> = Arc::new(InMemoryStore::new());
        Self::with_open_work(
            engine,
            config,
            Arc::new(InMemoryOpenWorkIndex::new()),
            checkpoints,
        )
    }

    /// A reconciler over a persistent open-work index whose projection
    /// checkpoint lives in `checkpoints`.
    pub fn with_open_work(
        engine: Arc<Engine>,
        config: ReconcilerConfig,
        index: Arc<dyn OpenWorkIndex>,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Self {
        let open_work = OpenWorkProjector::new(engine.store().clone(), checkpoints, index);
        Reconciler {
            engine,
            config,
            open_work,
            backoff: Mutex::new(HashMap::new()),
            resends: Mutex::new(HashMap::new()),
            stop: None,
        }
    }

    /// Stops a pass between items (and the open-work catch-up between
    /// batches) once `stop` holds `true`, so a service shuts down promptly
    /// during a long pass. What was done stays done; the rest waits for
    /// the next pass (on whichever node holds the lease).
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    fn stopping(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    /// The projector of the open-work index (e.g. to rebuild it).
    pub fn open_work(&self) -> &OpenWorkProjector {
        &self.open_work
    }

    /// One pass: bring the open-work index up to date, then look at every
    /// stream it lists as open (orders, agreements, checkout sessions).
    pub async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        self.pass(None).await
    }

    /// [`Reconciler::run_once`] for the holder of a leader lease: checks
    /// the lease before the pass and again right before each stream it
    /// would query or re-send for, and stops at once (`lease_lost`) when it
    /// is gone. So a node that lost its lease makes at most the one call it
    /// had already started (queries are reads; a re-sent cancel is
    /// idempotent in effect; appends check the stream version).
    pub async fn run_once_leased(
        &self,
        lease: &dyn LeaseGuard,
    ) -> Result<ReconcileReport, EngineError> {
        self.pass(Some(lease)).await
    }

    async fn pass(&self, lease: Option<&dyn LeaseGuard>) -> Result<ReconcileReport, EngineError> {
        let mut report = ReconcileReport::default();
        if let Some(l) = lease
            && l.is_lost().await
        {
            report.lease_lost = true;
            return Ok(report);
        }
        if self.stopping() {
            report.stopped = true;
            return Ok(report);
        }
        let caught_up = self.open_work.catch_up_until(&|| self.stopping()).await?;
        report.projected_events = caught_up.events;
        report.errors += caught_up.errors;
        if !caught_up.closed.is_empty() {
            let mut backoff = self.lock();
            for stream in &caught_up.closed {
                backoff.remove(stream);
            }
            drop(backoff);
            let closed: std::collections::HashSet<&StreamId> = caught_up.closed.iter().collect();
            self.resends_lock().retain(|_, (s, _)| !closed.contains(s));
        }
        if caught_up.stopped {
            report.stopped = true;
        }
        for kind in WorkKind::ALL {
            if report.lease_lost || report.stopped {
                break;
            }
            self.scan(kind, lease, &mut report).await?;
        }
        let max = self.config.max_refund_resends;
        report.needs_attention = self
            .resends_lock()
            .values()
            .filter(|(_, n)| *n >= max)
            .count();
        Ok(report)
    }

    fn resends_lock(&self) -> std::sync::MutexGuard<'_, HashMap<RefundId, (StreamId, u32)>> {
        self.resends.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn scan(
        &self,
        kind: WorkKind,
        lease: Option<&dyn LeaseGuard>,
        report: &mut ReconcileReport,
    ) -> Result<(), EngineError> {
        let index = self.open_work.index().clone();
        let mut after: Option<StreamId> = None;
        loop {
            let page = index
                .list(kind, None, after.as_ref(), self.config.page)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.stream_id.clone());
            let now = self.engine.clock().now();
            for item in &page {
                report.scanned += 1;
                // Too fresh to look at (the answer or the webhook may still
                // come): skip without reading. The stream is read below, so
                // a stale row only costs one read.
                if now - item.touched_at < self.config.threshold {
                    continue;
                }
                if self.stopping() {
                    report.stopped = true;
                    return Ok(());
                }
                if let Some(l) = lease
                    && l.is_lost().await
                {
                    report.lease_lost = true;
                    return Ok(());
                }
                let stream = &item.stream_id;
                let done = match kind {
                    WorkKind::OrderCall => self.reconcile_stream(stream, report).await,
                    WorkKind::AgreementCancel => self.reconcile_agreement(stream, report).await,
                    WorkKind::CheckoutSession => self.reconcile_checkout(stream, report).await,
                };
                if let Err(e) = done {
                    report.errors += 1;
                    tracing::warn!(stream = %stream, error = %e, "reconcile failed");
                }
            }
            if page.len() < self.config.page {
                break;
            }
        }
        Ok(())
    }

    /// An agreement whose cancel is requested or unknown: send the cancel
    /// again (see [`Engine::resend_agreement_cancel`]).
    async fn reconcile_agreement(
        &self,
        stream: &StreamId,
        report: &mut ReconcileReport,
    ) -> Result<(), EngineError> {
        let recorded = read_whole_stream(self.engine.store().as_ref(), stream).await?;
        let state = fold_recorded::<AgreementAggregate>(Default::default(), &recorded)?;
        let (Some(last), Some(c)) = (recorded.last(), state.created.as_ref()) else {
            self.lock().remove(stream);
            return Ok(());
        };
        let cancelling = state.phase == AgreementPhase::Cancelling;
        let unplaced = self.engine.unplaced_charges(&state).await?;
        if !cancelling && unplaced.is_empty() {
            // Opened for a charge whose order was on its way (see the
            // projector): every charge has its order now.
            self.lock().remove(stream);
            self.open_work
                .index()
                .apply(&[], std::slice::from_ref(stream))
                .await?;
            return Ok(());
        }
        let Some(attempts) = self.due(
            stream,
            last.recorded_at,
            Due::Call,
            WorkKind::AgreementCancel,
            report,
        ) else {
            return Ok(());
        };
        // A charge whose order was never placed (a crash between the two
        // appends): place it now; nothing reached PayKKa for it.
        for order_id in unplaced {
            tracing::warn!(agreement_id = %c.agreement_id, %order_id, "charge without its order (interrupted): placing it");
            self.engine.resume_charge(c.agreement_id, order_id).await?;
            report.resolved += 1;
        }
        if cancelling {
            report.queried += 1;
            if self.engine.resend_agreement_cancel(c.agreement_id).await? {
                report.resolved += 1;
            }
        }
        self.schedule(stream, attempts);
        Ok(())
    }

    /// A checkout session whose create call is in flight or unknown:
    /// Checkout Session Query (see [`Engine::refresh_checkout_session`]).
    async fn reconcile_checkout(
        &self,
        stream: &StreamId,
        report: &mut ReconcileReport,
    ) -> Result<(), EngineError> {
        let recorded = read_whole_stream(self.engine.store().as_ref(), stream).await?;
        let state = fold_recorded::<CheckoutAggregate>(Default::default(), &recorded)?;
        if let (Some(last), Some(r), CheckoutPhase::Open) =
            (recorded.last(), state.requested.as_ref(), state.phase)
        {
            // An open session older than the threshold: ask PayKKa whether
            // the shopper paid (the notification may be lost), at most once
            // per pass and per backoff step. Only a definitive "not paid"
            // past its expiry (plus the threshold, for a late notification)
            // closes it locally (flows.md §8); a non-answer leaves it open.
            let Some(attempts) = self.due(
                stream,
                last.recorded_at,
                Due::OpenSession,
                WorkKind::CheckoutSession,
                report,
            ) else {
                return Ok(());
            };
            let now = self.engine.clock().now();
            let past_grace = self.past_grace(&recorded);
            report.queried += 1;
            let check = self
                .engine
                .check_checkout_payment(r.checkout_id, past_grace)
                .await;
            self.schedule(stream, attempts);
            match check? {
                SessionPaymentCheck::Paid(_) => {
                    report.resolved += 1;
                    report.checkout_paid += 1;
                }
                SessionPaymentCheck::NotPaid if now >= r.expires_at + self.config.threshold => {
                    let ctx = CommandContext::new(r.merchant_id.as_str());
                    self.engine
                        .close_checkout_session(&ctx, r.checkout_id, true)
                        .await?;
                    report.expired += 1;
                }
                SessionPaymentCheck::NotPaid | SessionPaymentCheck::NoAnswer => {}
            }
            return Ok(());
        }
        let (Some(last), Some(r), CheckoutPhase::Requested) =
            (recorded.last(), state.requested.as_ref(), state.phase)
        else {
            self.lock().remove(stream);
            return Ok(());
        };
        let Some(attempts) = self.due(
            stream,
            last.recorded_at,
            Due::Call,
            WorkKind::CheckoutSession,
            report,
        ) else {
            return Ok(());
        };
        let past_grace = self.past_grace(&recorded);
        report.queried += 1;
        if self
            .engine
            .refresh_checkout_session(r.checkout_id, past_grace)
            .await?
        {
            report.resolved += 1;
        }
        self.schedule(stream, attempts);
        Ok(())
    }

    /// `Some(attempts so far)` when a candidate stream whose last event was
    /// recorded at `last` is due for a query now; counts the report.
    fn due(
        &self,
        stream: &StreamId,
        last: OffsetDateTime,
        why: Due,
        kind: WorkKind,
        report: &mut ReconcileReport,
    ) -> Option<u32> {
        let now = self.engine.clock().now();
        if now - last < self.config.threshold {
            return None;
        }
        match kind {
            WorkKind::OrderCall => report.due_orders += 1,
            WorkKind::AgreementCancel => report.due_agreements += 1,
            WorkKind::CheckoutSession => report.due_checkout_sessions += 1,
        }
        match why {
            Due::Call => report.candidates += 1,
            Due::OpenSession => report.open_sessions += 1,
        }
        let (attempts, next_at) = self.lock().get(stream).copied().unwrap_or((0, now));
        if now < next_at {
            report.backed_off += 1;
            return None;
        }
        Some(attempts)
    }

    /// Whether the grace period has passed since the stream's first event,
    /// after which PayKKa's "does not exist" is taken as final.
    fn past_grace(&self, recorded: &[RecordedEvent]) -> bool {
        let now = self.engine.clock().now();
        recorded
            .first()
            .is_some_and(|first| now - first.recorded_at >= self.config.grace)
    }

    /// Records one more query of `stream`; the next waits twice as long.
    fn schedule(&self, stream: &StreamId, attempts: u32) {
        let delay = self
            .config
            .backoff_base
            .saturating_mul(2u32.saturating_pow(attempts.min(16)))
            .min(self.config.backoff_max);
        self.schedule_after(stream, attempts, delay);
    }

    /// Records one more query of `stream`; the next after `delay`.
    fn schedule_after(&self, stream: &StreamId, attempts: u32, delay: Duration) {
        let now = self.engine.clock().now();
        self.lock()
            .insert(stream.clone(), (attempts + 1, now + delay));
    }

    /// When the next query of `stream` may run, if it was queried before.
    pub fn next_query_at(&self, stream: &StreamId) -> Option<OffsetDateTime> {
        self.lock().get(stream).map(|(_, at)| *at)
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
        let open = state.has_open_call()
            || state.awaits_release()
            || state.phase() == Phase::ChallengeRequired;
        let (Some(last), Some(order_id), true) = (recorded.last(), state.order_id(), open) else {
            self.lock().remove(stream);
            self.resends_lock().retain(|_, (s, _)| s != stream);
            return Ok(());
        };
        let Some(attempts) = self.due(
            stream,
            last.recorded_at,
            Due::Call,
            WorkKind::OrderCall,
            report,
        ) else {
            return Ok(());
        };
        let now = self.engine.clock().now();
        let past_grace = requested_at.is_some_and(|t| now - t >= self.config.grace);
        report.queried += 1;
        let before = state.version();
        // Refund re-sends are bounded (`max_refund_resends`): past the
        // bound the refund stays unknown, queried at the maximum backoff.
        let max = self.config.max_refund_resends;
        let exhausted = AtomicBool::new(false);
        let may_resend = |refund_id: RefundId| {
            let mut resends = self.resends_lock();
            let (_, sent) = resends
                .entry(refund_id)
                .or_insert_with(|| (stream.clone(), 0));
            if *sent >= max {
                exhausted.store(true, Ordering::Relaxed);
                tracing::warn!(
                    %order_id,
                    %refund_id,
                    resends = *sent,
                    "refund still unknown to PayKKa after the maximum number of re-sends: \
                     not sent again, kept unknown, queried at the maximum backoff; needs attention"
                );
                return false;
            }
            *sent += 1;
            true
        };
        let mut view = self
            .engine
            .refresh_order_resending(order_id, past_grace, &may_resend)
            .await?;
        // void_after_capture: the rest of a final partial capture is still
        // held (the Void was lost, refused for now, or never sent because
        // of a crash after the capture): send the Void (again).
        if view.status == Phase::PartiallyCaptured
            && state.awaits_release()
            && self
                .engine
                .config()
                .release_mode_for(view.merchant_id.as_str())
                == ReleaseMode::VoidAfterCapture
        {
            view = self.engine.release_remainder(order_id).await?;
        }
        if view.version != before {
            report.resolved += 1;
        }
        let open_refunds: Vec<RefundId> = view
            .refunds
            .iter()
            .filter(|r| r.progress.is_open())
            .map(|r| r.refund_id)
            .collect();
        self.resends_lock()
            .retain(|id, (s, _)| s != stream || open_refunds.contains(id));
        if exhausted.load(Ordering::Relaxed) {
            self.schedule_after(stream, attempts, self.config.backoff_max);
        } else {
            self.schedule(stream, attempts);
        }
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
