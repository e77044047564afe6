//! The simulated world around the engine: a seeded PRNG, a simulated clock,
//! a simulated PayKKa with its own ledger and fault schedule, store ports
//! that yield at every call (so that concurrent commands interleave) and
//! the test-only bug switches, and a seeded executor.
//!
//! Everything random draws from the one [`Rng`] in [`World`], in the order
//! the seeded executor polls; nothing reads the wall clock or a thread RNG.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway, RejectionClass};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{
    AppendOutcome, AppendRequest, Clock, EventStore, ExpectedVersion, IdempotencyCompletion,
    IdempotencyRecord, IdempotencyStore, Position, RecordedEvent, StoreError, StreamId, Version,
};
use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, CaptureRequest, CheckoutSessionQueryRequest,
    CheckoutSessionQueryResponse, CheckoutSessionRequest, CheckoutSessionResponse, InitiateRequest,
    PaymentResponse, QueryRequest, RecurringCancelRequest, RefundQueryRequest, RefundRequest,
    RefundResponse, TokenQueryRequest, TokenQueryResponse, TokenRemoveRequest, VoidRequest,
};
use time::OffsetDateTime;

// ------------------------------------------------------------------ PRNG

/// SplitMix64: tiny, fast, and fixed forever (a seed must replay the same
/// run on every machine and every version of every crate).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5EED_5EED_5EED_5EED)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + i64::try_from(self.below(u64::try_from(hi - lo + 1).unwrap_or(1))).unwrap_or(0)
    }
}

// ---------------------------------------------------------- bug switches

/// Test-only switches that re-introduce known bug classes in the
/// simulated components (never in engine code), to prove the simulation
/// finds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The PayKKa client layer re-sends a capture whose answer timed out
    /// (the client-side re-send the engine's design forbids).
    pub resend_capture_after_timeout: bool,
    /// The store ignores the expected version (lost optimistic-concurrency
    /// check): concurrent refunds each see the whole capacity.
    pub store_ignores_expected_version: bool,
    /// The idempotency store forgets every key: the same key executes
    /// again.
    pub idempotency_forgets: bool,
    /// Not a bug switch: PayKKa notifies partial captures too (whether it
    /// does is not documented). The main run turns it on for odd seeds;
    /// before the fix of engine bug 1 (docs/SIMULATION.md) a late or
    /// duplicated notification of an earlier partial capture confirmed a
    /// later, open capture.
    pub notify_partial_captures: bool,
}

// --------------------------------------------------------- PayKKa ledger

/// One transaction at the simulated PayKKa.
#[derive(Clone, Debug)]
pub struct PkOrder {
    pub trans_id: String,
    pub order_id: String,
    pub amount: i64,
    pub currency: String,
    pub manual: bool,
    /// PROCESSING (3DS pending), AUTHORIZED, PARTIALLY_REVERSED (part
    /// captured), SUCCESS, PARTIALLY_REFUNDED, REFUNDED, CANCELED, FAILURE.
    pub status: &'static str,
    pub authorised: i64,
    pub captured: i64,
    pub refunded: i64,
    pub voided: i64,
    /// Capture operations PayKKa applied (money movements).
    pub capture_moves: u32,
    /// Void operations applied.
    pub void_moves: u32,
    /// The shopper's 3DS result once they finish: true = authorised.
    pub challenge_passes: bool,
    /// Stored card (first recurring payment): token, shopper, agreement.
    pub token: Option<(String, String, String)>,
}

impl PkOrder {
    fn response(&self) -> PaymentResponse {
        let mut json = serde_json::json!({
            "trans_id": self.trans_id,
            "order_id": self.order_id,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "error_code": if self.status == "FAILURE" { "2006" } else { "0000" },
            "error_description": if self.status == "FAILURE" { "declined" } else { "request success" },
            "card_info": {"bin": "411111", "last4": "1111", "card_brand": "VISA"},
            "balances": {
                "authed_amount": self.authorised,
                "captured_amount": self.captured,
                "able_to_capture_amount": if self.capturable() { self.authorised - self.captured } else { 0 },
                "voided_amount": self.voided,
                "able_to_void_amount": if self.status == "AUTHORIZED" && self.captured == 0 { self.authorised } else { 0 },
                "refunded_amount": self.refunded,
                "able_to_refund_amount": self.captured - self.refunded,
            }
        });
        if let (Some((token, shopper, agreement)), Some(m)) = (&self.token, json.as_object_mut())
            && !matches!(self.status, "FAILURE" | "PROCESSING")
        {
            m.insert("token".into(), token.clone().into());
            m.insert("shopper_reference".into(), shopper.clone().into());
            m.insert("recurring_agreement_id".into(), agreement.clone().into());
        }
        if self.status == "PROCESSING"
            && let Some(m) = json.as_object_mut()
        {
            m.insert(
                "authentication_result".into(),
                serde_json::json!({"authentication_url": format!("https://acs.sim/{}", self.trans_id)}),
            );
        }
        serde_json::from_value(json).unwrap_or_default()
    }

    fn capturable(&self) -> bool {
        matches!(self.status, "AUTHORIZED" | "PARTIALLY_REVERSED")
            && self.captured < self.authorised
    }

    /// The payment notification PayKKa sends for the current status.
    pub fn notification(&self, timestamp_ms: i64) -> serde_json::Value {
        let notify_type = match self.status {
            "AUTHORIZED" | "PARTIALLY_REVERSED" => "PAYMENT.AUTHORIZATION",
            "SUCCESS" | "PARTIALLY_REFUNDED" | "REFUNDED" => "PAYMENT.SUCCESS",
            "FAILURE" => "PAYMENT.FAILURE",
            "CANCELED" => "PAYMENT.CANCELED",
            _ => "PAYMENT.PROCESSING",
        };
        let mut n = serde_json::json!({
            "notify_type": notify_type,
            "timestamp": timestamp_ms,
            "merchant_id": crate::MERCHANT,
            "trans_id": self.trans_id,
            "order_id": self.order_id,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "error_code": if self.status == "FAILURE" { "2006" } else { "0000" },
        });
        if let (Some((token, shopper, agreement)), Some(m)) = (&self.token, n.as_object_mut())
            && !matches!(self.status, "FAILURE" | "PROCESSING")
        {
            m.insert("token".into(), token.clone().into());
            m.insert("shopper_reference".into(), shopper.clone().into());
            m.insert("recurring_agreement_id".into(), agreement.clone().into());
        }
        n
    }
}

/// One refund at the simulated PayKKa.
#[derive(Clone, Debug)]
pub struct PkRefund {
    pub trans_id: String,
    pub refund_order_id: String,
    pub amount: i64,
}

/// A checkout session at the simulated PayKKa.
#[derive(Clone, Debug)]
pub struct PkSession {
    pub session_id: String,
    pub amount: i64,
    pub currency: String,
    pub manual: bool,
    /// PayKKa closed it (expired) without a payment.
    pub expired: bool,
}

/// A notification waiting to be delivered.
#[derive(Clone, Debug)]
pub enum Delivery {
    Payment(serde_json::Value),
    Refund(serde_json::Value),
}

/// Fault probabilities (percent) for PayKKa calls; all zero = no faults.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub timeout_before_commit: u64,
    pub timeout_after_commit: u64,
    pub server_error: u64,
    pub retryable: u64,
    pub slow: u64,
    pub decline: u64,
    pub challenge: u64,
    pub notification_drop: u64,
    pub notification_duplicate: u64,
}

impl Faults {
    pub const NONE: Faults = Faults {
        timeout_before_commit: 0,
        timeout_after_commit: 0,
        server_error: 0,
        retryable: 0,
        slow: 0,
        decline: 0,
        challenge: 0,
        notification_drop: 0,
        notification_duplicate: 0,
    };

    /// Drawn per seed, so some seeds are calm and some are storms.
    pub fn draw(rng: &mut Rng) -> Faults {
        let mut p = |max: u64| rng.below(max + 1);
        Faults {
            timeout_before_commit: p(12),
            timeout_after_commit: p(15),
            server_error: p(8),
            retryable: p(10),
            slow: p(30),
            decline: p(15),
            challenge: p(30),
            notification_drop: p(40),
            notification_duplicate: p(30),
        }
    }
}

/// What a mutating call at the simulated PayKKa does this time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Normal,
    /// Lost before PayKKa saw it: Unknown, nothing applied.
    TimeoutBefore,
    /// Applied, then the answer is lost: Unknown.
    TimeoutAfter,
    /// 5xx / 999999 on a mutating call: Unknown; applied or not (drawn).
    ServerError,
    /// RETRY_ONCE (206004): nothing processed, safe to re-send.
    Retryable,
}

/// The shared state of one simulated run.
pub struct World {
    pub rng: Rng,
    pub now: OffsetDateTime,
    pub faults: Faults,
    pub bugs: Bugs,
    pub ledger: BTreeMap<String, PkOrder>,
    pub refunds: BTreeMap<String, PkRefund>,
    pub gw_seq: u64,
    /// PayKKa's recurring agreements: id -> cancelled.
    pub agreements: BTreeMap<String, bool>,
    /// Cancel calls PayKKa applied per agreement.
    pub cancel_moves: BTreeMap<String, u32>,
    /// Checkout sessions by trans_id.
    pub sessions: BTreeMap<String, PkSession>,
    pub inbox: Vec<Delivery>,
    /// Every PayKKa call by operation, for the report.
    pub calls: BTreeMap<&'static str, u64>,
    /// A readable trace of the run (first lines printed on failure).
    pub trace: Vec<String>,
}

pub type Shared = Arc<Mutex<World>>;

pub fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl World {
    pub fn new(seed: u64, bugs: Bugs) -> Self {
        let mut rng = Rng::new(seed);
        let faults = Faults::draw(&mut rng);
        World {
            rng,
            now: OffsetDateTime::from_unix_timestamp(1_767_225_600)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            faults,
            bugs,
            ledger: BTreeMap::new(),
            refunds: BTreeMap::new(),
            gw_seq: 0,
            agreements: BTreeMap::new(),
            cancel_moves: BTreeMap::new(),
            sessions: BTreeMap::new(),
            inbox: Vec::new(),
            calls: BTreeMap::new(),
            trace: Vec::new(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }

    fn fate(&mut self) -> Fate {
        let f = self.faults;
        let r = self.rng.below(100);
        let mut edge = f.timeout_before_commit;
        if r < edge {
            return Fate::TimeoutBefore;
        }
        edge += f.timeout_after_commit;
        if r < edge {
            return Fate::TimeoutAfter;
        }
        edge += f.server_error;
        if r < edge {
            return Fate::ServerError;
        }
        edge += f.retryable;
        if r < edge {
            return Fate::Retryable;
        }
        Fate::Normal
    }

    /// Queues the payment notification(s) of `trans_id`'s current status:
    /// dropped, duplicated or delivered later in any order.
    pub fn notify_payment(&mut self, trans_id: &str) {
        let Some(o) = self.ledger.get(trans_id) else {
            return;
        };
        let n = o.notification(self.now_ms());
        self.enqueue(Delivery::Payment(n));
    }

    fn notify_refund(&mut self, refund_trans_id: &str) {
        let Some(r) = self.refunds.get(refund_trans_id) else {
            return;
        };
        let ori = self
            .ledger
            .get(&r.trans_id)
            .map(|o| (o.order_id.clone(), o.currency.clone()))
            .unwrap_or_default();
        let n = serde_json::json!({
            "notify_type": "REFUND.SUCCESS",
            "timestamp": self.now_ms(),
            "merchant_id": crate::MERCHANT,
            "trans_id": refund_trans_id,
            "refund_order_id": r.refund_order_id,
            "ori_order_id": ori.0,
            "status": "SUCCESS",
            "amount": r.amount,
            "currency": ori.1,
        });
        self.enqueue(Delivery::Refund(n));
    }

    fn enqueue(&mut self, d: Delivery) {
        if self.rng.chance(self.faults.notification_drop) {
            return;
        }
        if self.rng.chance(self.faults.notification_duplicate) {
            self.inbox.push(d.clone());
        }
        self.inbox.push(d);
    }

    fn next_gw_id(&mut self, prefix: &str) -> String {
        self.gw_seq += 1;
        format!("{prefix}{:017}", self.gw_seq)
    }

    /// The shopper finishes 3DS on one pending challenge (if any).
    pub fn shopper_finishes_challenge(&mut self) -> Option<String> {
        let pending: Vec<String> = self
            .ledger
            .values()
            .filter(|o| o.status == "PROCESSING")
            .map(|o| o.trans_id.clone())
            .collect();
        if pending.is_empty() {
            return None;
        }
        let t = pending[usize::try_from(self.rng.below(pending.len() as u64)).unwrap_or(0)].clone();
        let o = self.ledger.get_mut(&t)?;
        if o.challenge_passes {
            o.authorised = o.amount;
            if o.manual {
                o.status = "AUTHORIZED";
            } else {
                o.status = "SUCCESS";
                o.captured = o.amount;
            }
        } else {
            o.status = "FAILURE";
        }
        self.notify_payment(&t);
        Some(t)
    }

    /// A shopper pays one open checkout session on PayKKa's page (if any).
    pub fn shopper_pays_session(&mut self) -> Option<String> {
        let open: Vec<String> = self
            .sessions
            .iter()
            .filter(|(t, s)| !s.expired && !self.ledger.contains_key(*t))
            .map(|(t, _)| t.clone())
            .collect();
        if open.is_empty() {
            return None;
        }
        let t = open[usize::try_from(self.rng.below(open.len() as u64)).unwrap_or(0)].clone();
        let s = self.sessions.get(&t)?.clone();
        let order_id = self.next_gw_id("GW");
        let o = PkOrder {
            trans_id: t.clone(),
            order_id,
            amount: s.amount,
            currency: s.currency.clone(),
            manual: s.manual,
            status: if s.manual { "AUTHORIZED" } else { "SUCCESS" },
            authorised: s.amount,
            captured: if s.manual { 0 } else { s.amount },
            refunded: 0,
            voided: 0,
            capture_moves: 0,
            void_moves: 0,
            challenge_passes: true,
            token: None,
        };
        let mut n = o.notification(self.now_ms());
        if let Some(m) = n.as_object_mut() {
            m.insert("session_id".into(), s.session_id.clone().into());
            m.insert(
                "payment".into(),
                serde_json::json!({"payment_method": "BANKCARD"}),
            );
        }
        self.ledger.insert(t.clone(), o);
        self.enqueue(Delivery::Payment(n));
        Some(t)
    }

    /// PayKKa expires every challenge still pending (before the final
    /// reconciliation: the grace period is past).
    pub fn expire_challenges(&mut self) {
        for s in self.sessions.values_mut() {
            s.expired = true;
        }
        for o in self.ledger.values_mut() {
            if o.status == "PROCESSING" {
                o.status = "FAILURE";
            }
        }
    }
}

// ------------------------------------------------------- clock and yields

/// The simulated clock: reads [`World::now`].
pub struct SimClock(pub Shared);

impl Clock for SimClock {
    fn now(&self) -> OffsetDateTime {
        lock(&self.0).now
    }
}

/// Returns `Pending` once: the executor picks another task (or this one).
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            // Under the seeded executor the waker is a no-op; under a plain
            // `block_on` (the checks) this keeps the future going.
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Yields a seeded number of times in `0..=max`.
pub async fn pause(w: &Shared, max: u64) {
    let n = lock(w).rng.below(max + 1);
    for _ in 0..n {
        YieldOnce(false).await;
    }
}

// ------------------------------------------------------------ store ports

/// The in-memory store behind ports that yield before every call (so
/// load -> decide -> append of concurrent commands interleave) and carry
/// the store-side bug switches.
pub struct SimStore {
    pub inner: Arc<InMemoryStore>,
    pub world: Shared,
}

impl SimStore {
    fn bugs(&self) -> Bugs {
        lock(&self.world).bugs
    }
}

#[async_trait]
impl EventStore for SimStore {
    async fn append(&self, mut request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        pause(&self.world, 2).await;
        let bugs = self.bugs();
        if bugs.idempotency_forgets {
            request.idempotency = None;
        }
        if bugs.store_ignores_expected_version {
            let current = self.inner.stream_version(&request.stream_id).await?;
            request.expected = if current == Version::NONE {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(current)
            };
        }
        self.inner.append(request).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        pause(&self.world, 2).await;
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        pause(&self.world, 1).await;
        self.inner.stream_version(stream).await
    }
    async fn list_streams(
        &self,
        stream_type: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, Version)>, StoreError> {
        self.inner.list_streams(stream_type, after, limit).await
    }
}

#[async_trait]
impl IdempotencyStore for SimStore {
    async fn get_idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        pause(&self.world, 1).await;
        if self.bugs().idempotency_forgets {
            return Ok(None);
        }
        self.inner.get_idempotency(scope, key).await
    }
    async fn put_idempotency(&self, record: IdempotencyRecord) -> Result<(), StoreError> {
        pause(&self.world, 1).await;
        if self.bugs().idempotency_forgets {
            return Ok(());
        }
        self.inner.put_idempotency(record).await
    }
    async fn complete_idempotency(
        &self,
        completion: IdempotencyCompletion,
    ) -> Result<bool, StoreError> {
        pause(&self.world, 1).await;
        if self.bugs().idempotency_forgets {
            return Ok(false);
        }
        self.inner.complete_idempotency(completion).await
    }
    async fn release_idempotency(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        pause(&self.world, 1).await;
        self.inner.release_idempotency(scope, key).await
    }
}

// ------------------------------------------------------------ sim PayKKa

/// The simulated PayKKa behind the `PaymentGateway` port. Requests are in
/// flight for a seeded number of executor steps before and after PayKKa
/// applies them (a crash in between loses the answer, as a real one does).
pub struct SimPaykka {
    pub world: Shared,
}

fn unknown<T>(why: &str) -> GatewayOutcome<T> {
    GatewayOutcome::Unknown {
        reason: format!("sim: {why}"),
    }
}

fn not_found<T>() -> GatewayOutcome<T> {
    GatewayOutcome::Rejected {
        class: RejectionClass::NotFound,
        code: "206024".into(),
        description: "the order doesn't exist".into(),
    }
}

fn refused<T>(what: &str) -> GatewayOutcome<T> {
    GatewayOutcome::Rejected {
        class: RejectionClass::Request,
        code: "010000".into(),
        description: what.into(),
    }
}

impl SimPaykka {
    /// In flight to PayKKa: a few steps, many when the call is slow.
    async fn travel(&self) {
        let slow = {
            let mut w = lock(&self.world);
            let p = w.faults.slow;
            w.rng.chance(p)
        };
        pause(&self.world, if slow { 30 } else { 3 }).await;
    }

    /// A mutating call: `apply` changes the ledger and returns PayKKa's
    /// answer; the fault schedule decides what the caller sees.
    async fn mutate<T>(
        &self,
        op: &'static str,
        apply: impl FnOnce(&mut World) -> GatewayOutcome<T>,
    ) -> GatewayOutcome<T> {
        self.travel().await;
        let (fate, answer) = {
            let mut w = lock(&self.world);
            *w.calls.entry(op).or_default() += 1;
            let fate = w.fate();
            let commit = match fate {
                Fate::Normal | Fate::TimeoutAfter => true,
                Fate::ServerError => w.rng.chance(50),
                Fate::TimeoutBefore | Fate::Retryable => false,
            };
            let answer = commit.then(|| apply(&mut w));
            w.trace.push(format!("paykka {op}: {fate:?}"));
            (fate, answer)
        };
        self.travel().await;
        match (fate, answer) {
            (Fate::Normal, Some(a)) => a,
            (Fate::Retryable, _) => GatewayOutcome::Retryable {
                reason: "sim: 206004 system busy".into(),
            },
            (Fate::ServerError, _) => unknown("HTTP 503"),
            _ => unknown("timeout"),
        }
    }

    /// A query: no ledger change; faults give no answer.
    async fn read<T>(
        &self,
        op: &'static str,
        look: impl FnOnce(&mut World) -> GatewayOutcome<T>,
    ) -> GatewayOutcome<T> {
        self.travel().await;
        let answer = {
            let mut w = lock(&self.world);
            *w.calls.entry(op).or_default() += 1;
            match w.fate() {
                Fate::Normal => look(&mut w),
                Fate::Retryable => GatewayOutcome::Retryable {
                    reason: "sim: 999999 on a query".into(),
                },
                _ => unknown("query timeout"),
            }
        };
        self.travel().await;
        answer
    }

    fn find_by_gw<'a>(w: &'a mut World, order_id: &str) -> Option<&'a mut PkOrder> {
        w.ledger.values_mut().find(|o| o.order_id == order_id)
    }
}

#[async_trait]
impl PaymentGateway for SimPaykka {
    async fn initiate(&self, req: &InitiateRequest) -> GatewayOutcome<PaymentResponse> {
        self.mutate("initiate", |w| {
            if let Some(o) = w.ledger.get(&req.trans_id) {
                // Same trans_id: the same transaction (PayKKa dedupes).
                return GatewayOutcome::Success(o.response());
            }
            let manual = matches!(
                req.capture_method,
                Some(payorch_schemas::paykka::CaptureMethod::Manual)
            );
            let order_id = w.next_gw_id("GW");
            // A merchant-initiated charge on a cancelled or unknown
            // agreement is refused.
            let dead_agreement = req.mit == Some(true)
                && req
                    .recurring_agreement_id
                    .as_ref()
                    .is_none_or(|a| w.agreements.get(a).is_none_or(|cancelled| *cancelled));
            let declined = dead_agreement || w.rng.chance(w.faults.decline);
            let challenge = !declined && w.rng.chance(w.faults.challenge);
            let challenge_passes = w.rng.chance(80);
            let mut o = PkOrder {
                trans_id: req.trans_id.clone(),
                order_id,
                amount: req.amount,
                currency: req.currency.code().to_owned(),
                manual,
                status: "AUTHORIZED",
                authorised: 0,
                captured: 0,
                refunded: 0,
                voided: 0,
                capture_moves: 0,
                void_moves: 0,
                challenge_passes,
                token: None,
            };
            // MIT charges skip 3DS.
            let challenge = challenge && req.mit != Some(true);
            if req.payment.store_payment_method == Some(true) && req.mit == Some(false) && !declined
            {
                let seq = w.gw_seq;
                let agreement = format!("RA{seq:017}");
                w.agreements.insert(agreement.clone(), false);
                o.token = Some((
                    format!("TK{seq:017}"),
                    req.payment.shopper_reference.clone().unwrap_or_default(),
                    agreement,
                ));
            }
            if declined {
                o.status = "FAILURE";
            } else if challenge {
                o.status = "PROCESSING";
            } else {
                o.authorised = o.amount;
                if !manual {
                    o.status = "SUCCESS";
                    o.captured = o.amount;
                }
            }
            let resp = o.response();
            let t = o.trans_id.clone();
            w.ledger.insert(t.clone(), o);
            if !challenge {
                w.notify_payment(&t);
            }
            GatewayOutcome::Success(resp)
        })
        .await
    }

    async fn query(&self, req: &QueryRequest) -> GatewayOutcome<PaymentResponse> {
        self.read("query", |w| {
            let found = match (&req.order_id, &req.trans_id) {
                (Some(g), _) => Self::find_by_gw(w, g).map(|o| o.response()),
                (None, Some(t)) => w.ledger.get(t).map(PkOrder::response),
                (None, None) => None,
            };
            found.map(GatewayOutcome::Success).unwrap_or_else(not_found)
        })
        .await
    }

    async fn capture(&self, req: &CaptureRequest) -> GatewayOutcome<PaymentResponse> {
        let first = self.mutate("capture", |w| apply_capture(w, req)).await;
        let resend = lock(&self.world).bugs.resend_capture_after_timeout;
        if resend && matches!(first, GatewayOutcome::Unknown { .. }) {
            // BUG (test-only switch): the client re-sends a capture whose
            // answer it did not see. A capture carries no reference PayKKa
            // could dedupe by, so this can capture twice.
            lock(&self.world)
                .trace
                .push("client re-sends the capture (bug switch)".into());
            return Box::pin(self.capture_once_more(req)).await;
        }
        first
    }

    async fn void(&self, req: &VoidRequest) -> GatewayOutcome<PaymentResponse> {
        self.mutate("void", |w| {
            let Some(o) = Self::find_by_gw(w, &req.order_id) else {
                return not_found();
            };
            if o.status != "AUTHORIZED" || o.captured != 0 {
                return refused("order is not voidable");
            }
            o.status = "CANCELED";
            o.voided = o.authorised;
            o.void_moves += 1;
            let resp = o.response();
            let t = o.trans_id.clone();
            w.notify_payment(&t);
            GatewayOutcome::Success(resp)
        })
        .await
    }

    async fn refund(&self, req: &RefundRequest) -> GatewayOutcome<RefundResponse> {
        self.mutate("refund", |w| {
            if let Some(r) = w.refunds.get(&req.refund_trans_id) {
                return GatewayOutcome::Success(refund_response(&req.refund_trans_id, r));
            }
            let refund_order_id = w.next_gw_id("RG");
            let Some(o) = Self::find_by_gw(w, &req.ori_order_id) else {
                return not_found();
            };
            if req.refund_amount <= 0 || o.captured - o.refunded < req.refund_amount {
                return refused("refund exceeds refundable amount");
            }
            o.refunded += req.refund_amount;
            o.status = if o.refunded >= o.captured && o.captured >= o.authorised {
                "REFUNDED"
            } else {
                "PARTIALLY_REFUNDED"
            };
            let r = PkRefund {
                trans_id: o.trans_id.clone(),
                refund_order_id,
                amount: req.refund_amount,
            };
            let resp = refund_response(&req.refund_trans_id, &r);
            w.refunds.insert(req.refund_trans_id.clone(), r);
            w.notify_refund(&req.refund_trans_id);
            GatewayOutcome::Success(resp)
        })
        .await
    }

    async fn refund_query(&self, req: &RefundQueryRequest) -> GatewayOutcome<RefundResponse> {
        self.read("refund_query", |w| {
            let key = req.refund_trans_id.clone().unwrap_or_default();
            match w.refunds.get(&key) {
                Some(r) => GatewayOutcome::Success(refund_response(&key, r)),
                None => not_found(),
            }
        })
        .await
    }

    async fn token_query(&self, _req: &TokenQueryRequest) -> GatewayOutcome<TokenQueryResponse> {
        GatewayOutcome::Success(TokenQueryResponse::default())
    }

    async fn token_remove(&self, _req: &TokenRemoveRequest) -> GatewayOutcome<()> {
        GatewayOutcome::Success(())
    }

    async fn recurring_cancel(&self, req: &RecurringCancelRequest) -> GatewayOutcome<()> {
        self.mutate("recurring_cancel", |w| {
            match w.agreements.get_mut(&req.recurring_agreement_id) {
                Some(cancelled) => {
                    // Cancelling twice is fine at PayKKa.
                    *cancelled = true;
                    *w.cancel_moves
                        .entry(req.recurring_agreement_id.clone())
                        .or_default() += 1;
                    GatewayOutcome::Success(())
                }
                None => not_found(),
            }
        })
        .await
    }

    async fn apple_pay_session(
        &self,
        _req: &ApplePaySessionRequest,
    ) -> GatewayOutcome<ApplePaySessionResponse> {
        refused("not simulated")
    }

    async fn checkout_session_create(
        &self,
        req: &CheckoutSessionRequest,
    ) -> GatewayOutcome<CheckoutSessionResponse> {
        self.mutate("checkout_session_create", |w| {
            // One trans_id, one session: a re-send gets the same one.
            if !w.sessions.contains_key(&req.trans_id) {
                let session_id = w.next_gw_id("CS");
                w.sessions.insert(
                    req.trans_id.clone(),
                    PkSession {
                        session_id,
                        amount: req.amount,
                        currency: req.currency.code().to_owned(),
                        manual: matches!(
                            req.capture_method,
                            Some(payorch_schemas::paykka::CaptureMethod::Manual)
                        ),
                        expired: false,
                    },
                );
            }
            let s = &w.sessions[&req.trans_id];
            let json = serde_json::json!({
                "session_id": s.session_id,
                "session_url": format!("https://checkout.sim/{}", s.session_id),
                "trans_id": req.trans_id,
            });
            GatewayOutcome::Success(serde_json::from_value(json).unwrap_or_default())
        })
        .await
    }

    async fn checkout_session_query(
        &self,
        req: &CheckoutSessionQueryRequest,
    ) -> GatewayOutcome<CheckoutSessionQueryResponse> {
        self.read("checkout_session_query", |w| {
            let found = w.sessions.iter().find(|(t, s)| {
                req.trans_id.as_deref() == Some(t.as_str())
                    || req.session_id.as_deref() == Some(s.session_id.as_str())
            });
            let Some((t, s)) = found else {
                return GatewayOutcome::Rejected {
                    class: RejectionClass::NotFound,
                    code: "206011".into(),
                    description: "The session does not exist".into(),
                };
            };
            let mut json = serde_json::json!({
                "session_url": format!("https://checkout.sim/{}", s.session_id),
                "session_mode": "HOSTED",
                "session_id": s.session_id,
                "trans_id": t,
            });
            if let (Some(o), Some(map)) = (w.ledger.get(t), json.as_object_mut()) {
                map.insert(
                    "payment".into(),
                    serde_json::json!({"payment_method": "BANKCARD"}),
                );
                if let Ok(serde_json::Value::Object(order)) = serde_json::to_value(o.response()) {
                    for (k, v) in order {
                        map.entry(k).or_insert(v);
                    }
                }
            }
            GatewayOutcome::Success(serde_json::from_value(json).unwrap_or_default())
        })
        .await
    }
}

impl SimPaykka {
    /// The bug switch's second capture: the same request once more.
    async fn capture_once_more(&self, req: &CaptureRequest) -> GatewayOutcome<PaymentResponse> {
        self.mutate("capture", |w| apply_capture(w, req)).await
    }
}

/// PayKKa applies a capture (or refuses it).
fn apply_capture(w: &mut World, req: &CaptureRequest) -> GatewayOutcome<PaymentResponse> {
    let bugs = w.bugs;
    let Some(o) = SimPaykka::find_by_gw(w, &req.order_id) else {
        return not_found();
    };
    let amount = req.amount.unwrap_or(o.authorised - o.captured);
    if !o.capturable() || amount <= 0 || o.captured + amount > o.authorised {
        return refused("order is not capturable for this amount");
    }
    o.captured += amount;
    o.capture_moves += 1;
    o.status = if o.captured >= o.authorised {
        "SUCCESS"
    } else {
        "PARTIALLY_REVERSED"
    };
    let resp = o.response();
    let t = o.trans_id.clone();
    let notify = o.status == "SUCCESS" || bugs.notify_partial_captures;
    if notify {
        w.notify_payment(&t);
    }
    GatewayOutcome::Success(resp)
}

fn refund_response(refund_trans_id: &str, r: &PkRefund) -> RefundResponse {
    let json = serde_json::json!({
        "refund_trans_id": refund_trans_id,
        "refund_order_id": r.refund_order_id,
        "amount": r.amount,
        "status": "SUCCESS",
        "error_code": "0000",
    });
    serde_json::from_value(json).unwrap_or_default()
}

// --------------------------------------------------------------- executor

/// A task: one engine call (or a reconciler pass, a notification
/// delivery) as a future, with a name for the trace.
pub struct Task {
    pub name: String,
    pub fut: Pin<Box<dyn Future<Output = ()>>>,
}

/// The seeded executor: each step polls ONE task chosen by the RNG, with
/// a no-op waker (every live task is polled again later anyway), so the
/// seed alone decides the interleaving. Futures run `unconstrained` so
/// tokio's cooperative budget never turns a poll into a spurious Pending.
pub struct Executor {
    pub tasks: Vec<Task>,
    pub polls: u64,
}

impl Executor {
    pub fn new() -> Self {
        Executor {
            tasks: Vec::new(),
            polls: 0,
        }
    }

    pub fn spawn(&mut self, name: String, fut: impl Future<Output = ()> + 'static) {
        self.tasks.push(Task {
            name,
            fut: Box::pin(tokio::task::unconstrained(fut)),
        });
    }

    /// Polls one seeded task; true if it finished.
    pub fn step(&mut self, w: &Shared) -> bool {
        if self.tasks.is_empty() {
            return false;
        }
        let i = usize::try_from(lock(w).rng.below(self.tasks.len() as u64)).unwrap_or(0);
        self.polls += 1;
        let mut cx = Context::from_waker(Waker::noop());
        if self.tasks[i].fut.as_mut().poll(&mut cx).is_ready() {
            let t = self.tasks.swap_remove(i);
            lock(w).trace.push(format!("done {}", t.name));
            true
        } else {
            false
        }
    }

    /// A crash: every in-flight future is dropped where it stands.
    pub fn crash(&mut self) -> usize {
        let n = self.tasks.len();
        self.tasks.clear();
        n
    }
}

/// Idempotency-key bookkeeping of the workload: per key, what it answered.
#[derive(Default, Debug)]
pub struct KeyLog {
    /// key -> order ids a place with that key answered.
    pub place_answers: HashMap<String, Vec<String>>,
    /// Retries with the same key and the same body that were refused as
    /// another request under that key.
    pub same_body_conflicts: Vec<String>,
}
