//! Crashes between two steps of a merchant command, and what the same
//! idempotency key and the reconciler make of them afterwards:
//!
//! * an agreement charge interrupted after `agreement_charged`, before its
//!   order was placed (the key used to stay in progress forever, the
//!   agreement showed a charge without an order), after the placement and
//!   after PayKKa committed;
//! * a pass-through call (token remove) interrupted after its key was
//!   begun (used to answer 409 forever);
//! * a not-sent decline whose key release was lost (used to answer the
//!   declined view forever, while the normal path lets the key run again);
//! * a capture replay in `void_after_capture` mode (used to answer the
//!   view from before the Void);
//! * a refund re-send PayKKa keeps refusing (used to be re-sent without
//!   limit);
//! * a reconciler pass asked to stop (used to run to its end).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use payorch_engine::gateway::fake::{FakeGateway, Op, Step};
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway, RejectionClass};
use payorch_engine::orchestrator::{
    CommandContext, Engine, EngineConfig, EngineError, PlacePaymentRequest, ReleaseMode,
    order_stream,
};
use payorch_engine::order::{CallProgress, Phase};
use payorch_engine::reconciler::{Reconciler, ReconcilerConfig};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{
    AppendOutcome, AppendRequest, Clock, EventStore, IdempotencyCompletion, IdempotencyRecord,
    IdempotencyStore, Position, RecordedEvent, StoreError, StreamId, Version,
};
use payorch_engine::testing::ManualClock;
use payorch_engine::view::OrderView;
use payorch_schemas::events::order::TokenRequest;
use payorch_schemas::events::{
    AgreementId, AuthorisationKind, CaptureMode, PaymentKind, TokenPurpose,
};
use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, CaptureRequest, CheckoutSessionQueryRequest,
    CheckoutSessionQueryResponse, CheckoutSessionRequest, CheckoutSessionResponse, InitiateRequest,
    PaymentRequest, PaymentResponse, QueryRequest, RecurringCancelRequest, RefundQueryRequest,
    RefundRequest, RefundResponse, TokenQueryRequest, TokenQueryResponse, TokenRemoveRequest,
    VoidRequest,
};
use payorch_schemas::{Currency, Money};

const MERCHANT: &str = "18356675194960";
const STALE: Duration = Duration::from_secs(300);
const GRACE: Duration = Duration::from_secs(3600);
/// How long a test waits for a condition before it fails.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// A store and a gateway that can "crash" at a chosen step
// ---------------------------------------------------------------------------

/// The in-memory store, except that while `fail_orders` is set every
/// append to an order stream fails (the process died before it), and while
/// `fail_release` is set every lone key release fails.
#[derive(Default)]
struct CrashStore {
    inner: InMemoryStore,
    fail_orders: AtomicBool,
    fail_release: AtomicBool,
}

#[async_trait]
impl EventStore for CrashStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        if request.stream_id.as_str().starts_with("order-")
            && self.fail_orders.load(Ordering::SeqCst)
        {
            return Err(StoreError::Unavailable("crash before the order".into()));
        }
        self.inner.append(request).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
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
impl IdempotencyStore for CrashStore {
    async fn get_idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.get_idempotency(scope, key).await
    }
    async fn put_idempotency(&self, record: IdempotencyRecord) -> Result<(), StoreError> {
        self.inner.put_idempotency(record).await
    }
    async fn complete_idempotency(
        &self,
        completion: IdempotencyCompletion,
    ) -> Result<bool, StoreError> {
        self.inner.complete_idempotency(completion).await
    }
    async fn release_idempotency(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        if self.fail_release.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("crash before the release".into()));
        }
        self.inner.release_idempotency(scope, key).await
    }
}

/// Where a call hangs forever (the task running it is then aborted: a
/// crash at that point).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hang {
    /// Before the request reaches PayKKa.
    Before,
    /// After PayKKa processed it, before the answer is seen.
    After,
}

/// The fake PayKKa behind hooks: a call can hang (see [`Hang`]), and a
/// callback sees every call first.
struct HookGateway {
    inner: Arc<FakeGateway>,
    hang: Mutex<HashMap<&'static str, Hang>>,
    /// Told once a call reached its hang point.
    reached: tokio::sync::Notify,
    on_call: Mutex<Option<OnCall>>,
}

/// Sees each call's operation name before it is forwarded.
type OnCall = Box<dyn Fn(&'static str) + Send + Sync>;

impl HookGateway {
    fn new(inner: Arc<FakeGateway>) -> Self {
        HookGateway {
            inner,
            hang: Mutex::new(HashMap::new()),
            reached: tokio::sync::Notify::new(),
            on_call: Mutex::new(None),
        }
    }

    fn hang(&self, op: &'static str, at: Hang) {
        self.hang.lock().unwrap().insert(op, at);
    }

    async fn gate<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = GatewayOutcome<T>>,
    ) -> GatewayOutcome<T> {
        if let Some(f) = self.on_call.lock().unwrap().as_ref() {
            f(op);
        }
        let hang = self.hang.lock().unwrap().remove(op);
        if hang == Some(Hang::Before) {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        let out = call.await;
        if hang == Some(Hang::After) {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        out
    }
}

#[async_trait]
impl PaymentGateway for HookGateway {
    async fn initiate(&self, req: &InitiateRequest) -> GatewayOutcome<PaymentResponse> {
        self.gate("initiate", self.inner.initiate(req)).await
    }
    async fn query(&self, req: &QueryRequest) -> GatewayOutcome<PaymentResponse> {
        self.gate("query", self.inner.query(req)).await
    }
    async fn capture(&self, req: &CaptureRequest) -> GatewayOutcome<PaymentResponse> {
        self.gate("capture", self.inner.capture(req)).await
    }
    async fn void(&self, req: &VoidRequest) -> GatewayOutcome<PaymentResponse> {
        self.gate("void", self.inner.void(req)).await
    }
    async fn refund(&self, req: &RefundRequest) -> GatewayOutcome<RefundResponse> {
        self.gate("refund", self.inner.refund(req)).await
    }
    async fn refund_query(&self, req: &RefundQueryRequest) -> GatewayOutcome<RefundResponse> {
        self.gate("refund_query", self.inner.refund_query(req))
            .await
    }
    async fn token_query(&self, req: &TokenQueryRequest) -> GatewayOutcome<TokenQueryResponse> {
        self.gate("token_query", self.inner.token_query(req)).await
    }
    async fn token_remove(&self, req: &TokenRemoveRequest) -> GatewayOutcome<()> {
        self.gate("token_remove", self.inner.token_remove(req))
            .await
    }
    async fn recurring_cancel(&self, req: &RecurringCancelRequest) -> GatewayOutcome<()> {
        self.gate("recurring_cancel", self.inner.recurring_cancel(req))
            .await
    }
    async fn apple_pay_session(
        &self,
        req: &ApplePaySessionRequest,
    ) -> GatewayOutcome<ApplePaySessionResponse> {
        self.gate("apple_pay_session", self.inner.apple_pay_session(req))
            .await
    }
    async fn checkout_session_create(
        &self,
        req: &CheckoutSessionRequest,
    ) -> GatewayOutcome<CheckoutSessionResponse> {
        self.gate(
            "checkout_session_create",
            self.inner.checkout_session_create(req),
        )
        .await
    }
    async fn checkout_session_query(
        &self,
        req: &CheckoutSessionQueryRequest,
    ) -> GatewayOutcome<CheckoutSessionQueryResponse> {
        self.gate(
            "checkout_session_query",
            self.inner.checkout_session_query(req),
        )
        .await
    }
}

struct World {
    engine: Arc<Engine>,
    store: Arc<CrashStore>,
    fake: Arc<FakeGateway>,
    gateway: Arc<HookGateway>,
    clock: Arc<ManualClock>,
}

fn world_with(mode: ReleaseMode) -> World {
    let store = Arc::new(CrashStore::default());
    let fake = Arc::new(FakeGateway::with_release_mode(mode));
    let gateway = Arc::new(HookGateway::new(fake.clone()));
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        gateway.clone(),
        clock.clone(),
        EngineConfig {
            retry_backoff: Duration::from_millis(1),
            idempotency_wait: Duration::from_millis(200),
            idempotency_stale_after: STALE,
            default_return_url: Some("https://shop.example/return".into()),
            release_mode: mode,
            ..EngineConfig::default()
        },
    ));
    World {
        engine,
        store,
        fake,
        gateway,
        clock,
    }
}

fn world() -> World {
    world_with(ReleaseMode::CaptureFlag)
}

fn reconciler(w: &World) -> Reconciler {
    Reconciler::new(
        w.engine.clone(),
        ReconcilerConfig {
            grace: GRACE,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ..ReconcilerConfig::default()
        },
    )
}

fn ctx() -> CommandContext {
    CommandContext::new(MERCHANT)
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn calls(w: &World, op: &str) -> usize {
    w.fake.calls().iter().filter(|c| c.as_str() == op).count()
}

fn card(amount: i64, capture: CaptureMode) -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount: eur(amount),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: capture,
        payment: PaymentRequest::card("4111111111111111", "07", "2031", "987"),
        store_token: None,
        return_url: Some("https://shop.example/return".into()),
        browser: None,
    }
}

/// An active agreement (its first payment stored the card).
async fn agreement(w: &World) -> AgreementId {
    let mut first = card(500, CaptureMode::Automatic);
    first.payment_type = PaymentKind::Recurring;
    first.store_token = Some(TokenRequest {
        purpose: TokenPurpose::Subscription,
        shopper_reference: "cust-1".into(),
    });
    let o = w.engine.place_payment(&ctx(), first).await.unwrap();
    let id = AgreementId(o.order_id.0);
    w.engine.get_agreement(&ctx(), id).await.unwrap();
    id
}

/// A charge with `key` that crashes right after `agreement_charged` (the
/// order's placement never happens). Returns the order the agreement
/// recorded for it.
async fn charge_crashed_before_placement(
    w: &World,
    agreement: AgreementId,
    key: Option<&str>,
) -> payorch_schemas::events::OrderId {
    let c = match key {
        Some(k) => ctx().with_idempotency_key(k),
        None => ctx(),
    };
    w.store.fail_orders.store(true, Ordering::SeqCst);
    let r = w.engine.charge_agreement(&c, agreement, eur(300)).await;
    w.store.fail_orders.store(false, Ordering::SeqCst);
    assert!(
        matches!(r, Err(EngineError::Store(StoreError::Unavailable(_)))),
        "{r:?}"
    );
    let a = w.engine.get_agreement(&ctx(), agreement).await.unwrap();
    let order_id = *a.charges.last().expect("the charge is recorded");
    assert_eq!(
        w.store
            .stream_version(&order_stream(order_id))
            .await
            .unwrap(),
        Version::NONE,
        "and its order is not"
    );
    order_id
}

/// Runs `f` on a task until the gateway reports a hang, then aborts it (a
/// crash at that point).
async fn crash_at_hang<F>(w: &World, f: F)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = tokio::spawn(f);
    tokio::time::timeout(DEADLINE, w.gateway.reached.notified())
        .await
        .expect("the call reached its hang point");
    task.abort();
    let _ = task.await;
}

/// A charge with `key` whose process dies while its Initiate hangs `at`
/// (before PayKKa saw it, or after PayKKa took it). Returns its order.
async fn charge_crashed_in_initiate(
    w: &World,
    agreement: AgreementId,
    key: &'static str,
    at: Hang,
) -> payorch_schemas::events::OrderId {
    w.gateway.hang("initiate", at);
    let (engine, c) = (w.engine.clone(), ctx().with_idempotency_key(key));
    crash_at_hang(w, async move {
        engine.charge_agreement(&c, agreement, eur(300)).await
    })
    .await;
    let a = w.engine.get_agreement(&ctx(), agreement).await.unwrap();
    *a.charges.last().expect("the charge is recorded")
}

async fn record(w: &World, key: &str) -> Option<IdempotencyRecord> {
    w.store.get_idempotency(MERCHANT, key).await.unwrap()
}

// ---------------------------------------------------------------------------
// 1. Agreement charge interrupted by a crash
// ---------------------------------------------------------------------------

/// Crash after `agreement_charged`, before the order: the key is in
/// progress while the interrupted request may still be alive; once stale,
/// the same key places the order and runs it, once.
#[tokio::test]
async fn a_charge_crashed_before_its_order_is_completed_by_a_retry_with_its_key() {
    let w = world();
    let agreement = agreement(&w).await;
    let order_id = charge_crashed_before_placement(&w, agreement, Some("ch-1")).await;
    let c = ctx().with_idempotency_key("ch-1");

    // Fresh: the interrupted request may still be on its way.
    let r = w.engine.charge_agreement(&c, agreement, eur(300)).await;
    assert!(
        matches!(r, Err(EngineError::IdempotencyInProgress { .. })),
        "{r:?}"
    );
    assert_eq!(calls(&w, "initiate"), 1, "only the first payment so far");

    // Stale: the retry completes the charge.
    w.clock.advance(STALE + Duration::from_secs(1));
    let view = w
        .engine
        .charge_agreement(&c, agreement, eur(300))
        .await
        .unwrap();
    assert_eq!(view.order_id, order_id, "the charge's own order");
    assert_eq!(view.status, Phase::Captured);
    assert_eq!(view.agreement_id, Some(agreement));
    assert_eq!(calls(&w, "initiate"), 2, "the charge is sent once");
    assert_eq!(w.fake.ledger(&view.trans_id), Some((300, 0)));
    assert!(record(&w, "ch-1").await.unwrap().is_completed());
    // A replay answers the same; one charge, one order.
    let again = w
        .engine
        .charge_agreement(&c, agreement, eur(300))
        .await
        .unwrap();
    assert_eq!(again, view);
    assert_eq!(calls(&w, "initiate"), 2);
    let a = w.engine.get_agreement(&ctx(), agreement).await.unwrap();
    assert_eq!(a.charges, vec![order_id]);
}

/// The same crash without anyone retrying: the reconciler finds the
/// charge through the open-work index and places its order; the key then
/// answers that order.
#[tokio::test]
async fn the_reconciler_finds_a_charge_without_its_order_and_places_it() {
    let w = world();
    let agreement = agreement(&w).await;
    let order_id = charge_crashed_before_placement(&w, agreement, Some("ch-2")).await;
    let rec = reconciler(&w);

    // Too fresh: listed, not touched.
    let report = rec.run_once().await.unwrap();
    assert!(report.scanned >= 1, "{report:?}");
    assert_eq!(calls(&w, "initiate"), 1);

    w.clock.advance(Duration::from_secs(60));
    let report = rec.run_once().await.unwrap();
    assert_eq!(report.due_agreements, 1, "{report:?}");
    assert_eq!(calls(&w, "initiate"), 2, "the charge is sent once");
    let view = w.engine.get_order(&ctx(), order_id).await.unwrap();
    assert_eq!(view.status, Phase::Captured);
    assert_eq!(w.fake.ledger(&view.trans_id), Some((300, 0)));

    // Nothing open any more: the row goes, nothing is sent again.
    w.clock.advance(Duration::from_secs(60));
    rec.run_once().await.unwrap();
    w.clock.advance(Duration::from_secs(60));
    let report = rec.run_once().await.unwrap();
    assert_eq!(report.due_agreements, 0, "{report:?}");
    assert_eq!(calls(&w, "initiate"), 2);

    // The key answers the order, once stale.
    w.clock.advance(STALE);
    let c = ctx().with_idempotency_key("ch-2");
    let answer = w
        .engine
        .charge_agreement(&c, agreement, eur(300))
        .await
        .unwrap();
    assert_eq!(answer.order_id, order_id);
    assert_eq!(answer.status, Phase::Captured);
    assert_eq!(calls(&w, "initiate"), 2);
}

/// A charge interrupted before its order, on an agreement cancelled since:
/// nothing is sent; the order is recorded declined (not sent) and the key
/// answers that.
#[tokio::test]
async fn a_charge_crashed_before_its_order_on_a_cancelled_agreement_is_declined_unsent() {
    let w = world();
    let agreement = agreement(&w).await;
    let order_id = charge_crashed_before_placement(&w, agreement, Some("ch-3")).await;
    w.engine
        .cancel_agreement(&ctx(), agreement, None)
        .await
        .unwrap();
    w.clock.advance(STALE + Duration::from_secs(1));
    let c = ctx().with_idempotency_key("ch-3");
    let view = w
        .engine
        .charge_agreement(&c, agreement, eur(300))
        .await
        .unwrap();
    assert_eq!(view.order_id, order_id);
    assert_eq!(view.status, Phase::Declined);
    assert_eq!(
        view.decline_code.as_deref(),
        Some(payorch_engine::command::CHARGE_NOT_SENT_CODE)
    );
    assert_eq!(calls(&w, "initiate"), 1, "only the first payment");
}

/// Crash after the order was placed, before Initiate left: the order is
/// open work; PayKKa never heard of it, so past the grace period it is
/// declined, and the key answers that final state.
#[tokio::test]
async fn a_charge_crashed_after_placement_before_the_call_ends_declined_after_grace() {
    let w = world();
    let agreement = agreement(&w).await;
    let order_id = charge_crashed_in_initiate(&w, agreement, "ch-4", Hang::Before).await;
    let o = w.engine.get_order(&ctx(), order_id).await.unwrap();
    assert_eq!(o.status, Phase::AuthorisationPending);

    let c = ctx().with_idempotency_key("ch-4");
    w.clock.advance(STALE + Duration::from_secs(1));
    let r = w.engine.charge_agreement(&c, agreement, eur(300)).await;
    assert!(
        matches!(r, Err(EngineError::IdempotencyInProgress { .. })),
        "open call: still in progress, {r:?}"
    );
    let rec = reconciler(&w);
    rec.run_once().await.unwrap();
    w.clock.advance(GRACE);
    rec.run_once().await.unwrap();
    let answer = w
        .engine
        .charge_agreement(&c, agreement, eur(300))
        .await
        .unwrap();
    assert_eq!(answer.order_id, order_id);
    assert_eq!(answer.status, Phase::Declined);
    assert_eq!(calls(&w, "initiate"), 1, "never sent");
}

/// Crash after PayKKa took the charge, before its answer was recorded: the
/// reconciler's query records it, and the key answers it.
#[tokio::test]
async fn a_charge_crashed_after_paykka_took_it_is_found_by_the_reconciler() {
    let w = world();
    let agreement = agreement(&w).await;
    let order_id = charge_crashed_in_initiate(&w, agreement, "ch-5", Hang::After).await;
    w.clock.advance(Duration::from_secs(60));
    reconciler(&w).run_once().await.unwrap();
    w.clock.advance(STALE);
    let c = ctx().with_idempotency_key("ch-5");
    let answer = w
        .engine
        .charge_agreement(&c, agreement, eur(300))
        .await
        .unwrap();
    assert_eq!(answer.order_id, order_id);
    assert_eq!(answer.status, Phase::Captured);
    assert_eq!(calls(&w, "initiate"), 2, "sent once");
    assert_eq!(w.fake.ledger(&answer.trans_id), Some((300, 0)));
}

// ---------------------------------------------------------------------------
// 2. Pass-through keys after a crash
// ---------------------------------------------------------------------------

/// A token removal whose process died after the key was begun: in progress
/// while it may be alive, then the same key runs it again (once) and
/// answers that from then on.
#[tokio::test]
async fn a_passthrough_key_left_by_a_crash_runs_again_once_stale() {
    let w = world();
    w.gateway.hang("token_remove", Hang::Before);
    let engine = w.engine.clone();
    crash_at_hang(&w, async move {
        let c = ctx().with_idempotency_key("tr-1");
        engine.token_remove(&c, "TK1", "cust-1").await
    })
    .await;
    assert!(!record(&w, "tr-1").await.unwrap().is_completed());
    let c = ctx().with_idempotency_key("tr-1");
    let r = w.engine.token_remove(&c, "TK1", "cust-1").await;
    assert!(
        matches!(r, Err(EngineError::IdempotencyInProgress { .. })),
        "{r:?}"
    );
    // Another request with the key stays a conflict, stale or not.
    w.clock.advance(STALE + Duration::from_secs(1));
    let r = w.engine.token_remove(&c, "TK2", "cust-1").await;
    assert!(
        matches!(r, Err(EngineError::IdempotencyConflict { .. })),
        "{r:?}"
    );
    w.engine.token_remove(&c, "TK1", "cust-1").await.unwrap();
    assert_eq!(calls(&w, "token_remove"), 1, "the crashed call never left");
    assert!(record(&w, "tr-1").await.unwrap().is_completed());
    w.engine.token_remove(&c, "TK1", "cust-1").await.unwrap();
    assert_eq!(calls(&w, "token_remove"), 1, "a replay, not a second call");
}

// ---------------------------------------------------------------------------
// 3. Not-sent decline and the key's release
// ---------------------------------------------------------------------------

fn not_sent() -> Step<PaymentResponse> {
    Step::Return(GatewayOutcome::NotSent {
        reason: "connection refused".into(),
    })
}

/// The process dies right after the not-sent decline is recorded (a lone
/// release would never happen): the key is free all the same, and the
/// same request with it executes afresh once PayKKa is reachable.
#[tokio::test]
async fn a_not_sent_decline_frees_its_key_even_if_the_process_dies_after_it() {
    let w = world();
    w.store.fail_release.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        w.fake.script(Op::Initiate, not_sent());
    }
    let c = ctx().with_idempotency_key("ns-1");
    let r = w
        .engine
        .place_payment(&c, card(700, CaptureMode::Automatic))
        .await;
    assert!(
        matches!(r, Err(EngineError::PaykkaUnreachable { .. })),
        "{r:?}"
    );
    assert!(
        record(&w, "ns-1").await.is_none(),
        "released with the decline"
    );
    w.clock.advance(STALE + Duration::from_secs(1));
    let v = w
        .engine
        .place_payment(&c, card(700, CaptureMode::Automatic))
        .await
        .unwrap();
    assert_eq!(v.status, Phase::Captured, "executed afresh");

    // The same for a capture.
    let o = w
        .engine
        .place_payment(&ctx(), card(900, CaptureMode::Manual))
        .await
        .unwrap();
    for _ in 0..3 {
        w.fake.script(Op::Capture, not_sent());
    }
    let c = ctx().with_idempotency_key("ns-2");
    let r = w.engine.capture(&c, o.order_id, None, false).await;
    assert!(
        matches!(r, Err(EngineError::PaykkaUnreachable { .. })),
        "{r:?}"
    );
    w.clock.advance(STALE + Duration::from_secs(1));
    let v = w.engine.capture(&c, o.order_id, None, false).await.unwrap();
    assert_eq!(v.status, Phase::Captured);
    assert_eq!(v.captured, eur(900));
}

// ---------------------------------------------------------------------------
// 5. Capture replay in void_after_capture mode
// ---------------------------------------------------------------------------

/// A final partial capture in `void_after_capture` mode answers the view
/// after the Void that released the rest; a replay with its key answers
/// exactly that, like every other operation.
#[tokio::test]
async fn a_capture_replay_in_void_after_capture_mode_answers_what_the_first_got() {
    let w = world_with(ReleaseMode::VoidAfterCapture);
    let o = w
        .engine
        .place_payment(&ctx(), card(10_000, CaptureMode::Manual))
        .await
        .unwrap();
    let c = ctx().with_idempotency_key("cap-v");
    let first = w
        .engine
        .capture(&c, o.order_id, Some(eur(4_000)), true)
        .await
        .unwrap();
    assert_eq!(calls(&w, "void"), 1, "the rest is released by a Void");
    assert_eq!(w.fake.released(&first.trans_id), Some((4_000, 6_000)));
    let replay = w
        .engine
        .capture(&c, o.order_id, Some(eur(4_000)), true)
        .await
        .unwrap();
    assert_eq!(replay, first);
    assert_eq!(calls(&w, "capture"), 1);
    assert_eq!(calls(&w, "void"), 1);
}

// ---------------------------------------------------------------------------
// 4. Bounded refund re-sends
// ---------------------------------------------------------------------------

/// PayKKa keeps refusing the re-sent refund: after `max_refund_resends`
/// re-sends the reconciler stops sending, keeps the refund unknown (never
/// declined), keeps querying it at the longest backoff and reports it as
/// needing attention.
#[tokio::test]
async fn refund_resends_stop_after_the_bound_and_the_refund_needs_attention() {
    let w = world();
    let o = w
        .engine
        .place_payment(&ctx(), card(1000, CaptureMode::Automatic))
        .await
        .unwrap();
    w.fake.script_refund(Step::Return(GatewayOutcome::Unknown {
        reason: "connect timeout".into(),
    }));
    for _ in 0..20 {
        w.fake.script_refund(Step::Return(GatewayOutcome::Rejected {
            class: RejectionClass::Request,
            code: "010000".into(),
            description: "bad request".into(),
        }));
    }
    let o = w
        .engine
        .refund(&ctx(), o.order_id, eur(400), None)
        .await
        .unwrap();
    let rec = Reconciler::new(
        w.engine.clone(),
        ReconcilerConfig {
            grace: GRACE,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_refund_resends: 3,
            ..ReconcilerConfig::default()
        },
    );
    w.clock.advance(GRACE + Duration::from_secs(10));
    let mut last = None;
    for _ in 0..10 {
        w.clock.advance(Duration::from_secs(61));
        last = Some(rec.run_once().await.unwrap());
    }
    assert_eq!(calls(&w, "refund"), 1 + 3, "first send + three re-sends");
    let queries = calls(&w, "refund_query");
    assert!(queries >= 10, "still queried: {queries}");
    let report = last.unwrap();
    assert_eq!(report.needs_attention, 1, "{report:?}");
    let now = w.engine.get_order(&ctx(), o.order_id).await.unwrap();
    assert_eq!(now.refunds[0].progress, CallProgress::OutcomeUnknown);
    let at = rec.next_query_at(&order_stream(o.order_id)).unwrap();
    assert_eq!(
        at,
        w.clock.now() + Duration::from_secs(60),
        "queried at the longest backoff"
    );
}

// ---------------------------------------------------------------------------
// 6. A reconciler pass stops between items on shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_reconciler_pass_stops_between_items_once_asked() {
    let w = world();
    for _ in 0..5 {
        w.fake.script(Op::Initiate, Step::ProcessThenTimeout);
        let v = w
            .engine
            .place_payment(&ctx(), card(100, CaptureMode::Automatic))
            .await
            .unwrap();
        assert_eq!(v.status, Phase::AuthorisationUnknown);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let on_query = stop_tx.clone();
    *w.gateway.on_call.lock().unwrap() = Some(Box::new(move |op: &'static str| {
        if op == "query" {
            let _ = on_query.send(true);
        }
    }));
    let rec = reconciler(&w).with_stop(stop_rx);
    w.clock.advance(Duration::from_secs(60));
    let report = rec.run_once().await.unwrap();
    assert!(report.stopped, "{report:?}");
    assert_eq!(report.queried, 1, "the item in hand finishes, no other");
    assert_eq!(calls(&w, "query"), 1);
    // A later pass (after a restart) does the rest.
    let _ = stop_tx.send(false);
    *w.gateway.on_call.lock().unwrap() = None;
    let report = rec.run_once().await.unwrap();
    assert!(!report.stopped);
    assert_eq!(report.queried, 4, "{report:?}");
}

/// Keeps `OrderView` in use for readers of the helpers above.
#[allow(dead_code)]
fn _view(_: &OrderView) {}
