//! Store round trips of the command path (issue 12 point 3), counted with
//! a wrapper that counts every store call. Each call is one round trip in
//! the Postgres adapter: `append` (events + idempotency begin/complete) is
//! one statement with CTEs in autocommit, reads and `complete_idempotency`
//! are one statement each.
//!
//! An automatic-capture card purchase with an idempotency key, PayKKa's
//! response first and its notification second: the placement with the key
//! begun (1), the outcome with the key completed from the state held in
//! memory (1), the notification's read that sees the fact and records
//! nothing (1). Notification first: the response's append conflicts once,
//! reloads once, sees the fact and only completes the key.
//!
//! The answer is what the HTTP API sends: stamped with `created_at` /
//! `updated_at` (`Engine::stamp`) from the events the command appended
//! or read, so stamping costs no store call.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use payorch_engine::gateway::fake::FakeGateway;
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway};
use payorch_engine::orchestrator::{CommandContext, Engine, EngineConfig, PlacePaymentRequest};
use payorch_engine::order::Phase;
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{
    AppendOutcome, AppendRequest, EventStore, IdempotencyCompletion, IdempotencyRecord,
    IdempotencyStore, Position, RecordedEvent, StoreError, StreamId, Version,
};
use payorch_engine::testing::ManualClock;
use payorch_schemas::events::{AuthorisationKind, CaptureMode, PaymentKind};
use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, CaptureRequest, CheckoutSessionQueryRequest,
    CheckoutSessionQueryResponse, CheckoutSessionRequest, CheckoutSessionResponse, InitiateRequest,
    PaymentNotification, PaymentRequest, PaymentResponse, QueryRequest, RecurringCancelRequest,
    RefundQueryRequest, RefundRequest, RefundResponse, TokenQueryRequest, TokenQueryResponse,
    TokenRemoveRequest, VoidRequest,
};
use payorch_schemas::{Currency, Money};

/// Counts every store call (one round trip each on Postgres) by name.
#[derive(Default)]
struct Counting {
    inner: InMemoryStore,
    calls: Mutex<Vec<&'static str>>,
    conflicts: AtomicUsize,
}

impl Counting {
    fn note(&self, call: &'static str) {
        self.calls.lock().unwrap().push(call);
    }
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[async_trait]
impl EventStore for Counting {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.note("append");
        let r = self.inner.append(request).await;
        if matches!(r, Err(StoreError::Conflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.note("read_stream");
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.note("read_all");
        self.inner.read_all(after, limit).await
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        self.note("stream_version");
        self.inner.stream_version(stream).await
    }
    async fn list_streams(
        &self,
        stream_type: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, Version)>, StoreError> {
        self.note("list_streams");
        self.inner.list_streams(stream_type, after, limit).await
    }
}

#[async_trait]
impl IdempotencyStore for Counting {
    async fn get_idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.note("get_idempotency");
        self.inner.get_idempotency(scope, key).await
    }
    async fn put_idempotency(&self, record: IdempotencyRecord) -> Result<(), StoreError> {
        self.note("put_idempotency");
        self.inner.put_idempotency(record).await
    }
    async fn complete_idempotency(
        &self,
        completion: IdempotencyCompletion,
    ) -> Result<bool, StoreError> {
        self.note("complete_idempotency");
        self.inner.complete_idempotency(completion).await
    }
    async fn release_idempotency(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        self.note("release_idempotency");
        self.inner.release_idempotency(scope, key).await
    }
}

/// The fake PayKKa; while `notify_first` is set, the notification of a
/// successful initiate reaches the engine before the response.
struct Gateway {
    inner: FakeGateway,
    engine: OnceLock<Weak<Engine>>,
    notify_first: std::sync::atomic::AtomicBool,
    store: Arc<Counting>,
    notification_calls: Mutex<Vec<&'static str>>,
}

fn notification_of(r: &PaymentResponse) -> PaymentNotification {
    let mut v = serde_json::to_value(r).expect("serializes");
    v["notify_type"] = serde_json::Value::String("PAYMENT.SUCCESS".into());
    serde_json::from_value(v).expect("a notification")
}

#[async_trait]
impl PaymentGateway for Gateway {
    async fn initiate(&self, req: &InitiateRequest) -> GatewayOutcome<PaymentResponse> {
        let out = self.inner.initiate(req).await;
        if let (true, GatewayOutcome::Success(r)) = (self.notify_first.load(Ordering::SeqCst), &out)
        {
            let engine = self.engine.get().and_then(Weak::upgrade).expect("engine");
            let before = self.store.take();
            engine
                .apply_payment_notification(&notification_of(r), None)
                .await
                .expect("applies");
            *self.notification_calls.lock().unwrap() = self.store.take();
            self.store.calls.lock().unwrap().extend(before);
        }
        out
    }
    async fn query(&self, req: &QueryRequest) -> GatewayOutcome<PaymentResponse> {
        self.inner.query(req).await
    }
    async fn capture(&self, req: &CaptureRequest) -> GatewayOutcome<PaymentResponse> {
        self.inner.capture(req).await
    }
    async fn void(&self, req: &VoidRequest) -> GatewayOutcome<PaymentResponse> {
        self.inner.void(req).await
    }
    async fn refund(&self, req: &RefundRequest) -> GatewayOutcome<RefundResponse> {
        self.inner.refund(req).await
    }
    async fn refund_query(&self, req: &RefundQueryRequest) -> GatewayOutcome<RefundResponse> {
        self.inner.refund_query(req).await
    }
    async fn token_query(&self, req: &TokenQueryRequest) -> GatewayOutcome<TokenQueryResponse> {
        self.inner.token_query(req).await
    }
    async fn token_remove(&self, req: &TokenRemoveRequest) -> GatewayOutcome<()> {
        self.inner.token_remove(req).await
    }
    async fn recurring_cancel(&self, req: &RecurringCancelRequest) -> GatewayOutcome<()> {
        self.inner.recurring_cancel(req).await
    }
    async fn apple_pay_session(
        &self,
        req: &ApplePaySessionRequest,
    ) -> GatewayOutcome<ApplePaySessionResponse> {
        self.inner.apple_pay_session(req).await
    }
    async fn checkout_session_create(
        &self,
        req: &CheckoutSessionRequest,
    ) -> GatewayOutcome<CheckoutSessionResponse> {
        self.inner.checkout_session_create(req).await
    }
    async fn checkout_session_query(
        &self,
        req: &CheckoutSessionQueryRequest,
    ) -> GatewayOutcome<CheckoutSessionQueryResponse> {
        self.inner.checkout_session_query(req).await
    }
}

fn purchase() -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount: Money::new(1000, Currency::EUR),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: CaptureMode::Automatic,
        payment: PaymentRequest::card("4111111111111111", "07", "2031", "987"),
        store_token: None,
        return_url: Some("https://shop.example/return".into()),
        browser: None,
    }
}

fn setup() -> (Arc<Engine>, Arc<Counting>, Arc<Gateway>) {
    let store = Arc::new(Counting::default());
    let gateway = Arc::new(Gateway {
        inner: FakeGateway::new(),
        engine: OnceLock::new(),
        notify_first: std::sync::atomic::AtomicBool::new(false),
        store: store.clone(),
        notification_calls: Mutex::new(Vec::new()),
    });
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        gateway.clone(),
        Arc::new(ManualClock::at_epoch_2026()),
        EngineConfig {
            retry_backoff: Duration::from_millis(1),
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    ));
    assert!(gateway.engine.set(Arc::downgrade(&engine)).is_ok());
    (engine, store, gateway)
}

#[tokio::test]
async fn response_first_purchase_and_its_notification_cost_three_round_trips() {
    let (engine, store, gateway) = setup();
    let ctx = CommandContext::new("18356675194960").with_idempotency_key("k-1");
    let o = engine.place_payment(&ctx, purchase()).await.unwrap();
    let o = engine.stamp(o).await.unwrap();
    assert_eq!(o.status, Phase::Captured);
    let request = store.take();
    assert_eq!(
        request,
        ["append", "append"],
        "placement+key, outcome+key; stamping the answer reads nothing"
    );
    let (created, updated) = (o.labels.created_at, o.labels.updated_at);
    assert!(created.is_some() && created <= updated, "{o:?}");

    let q = QueryRequest {
        merchant_id: "18356675194960".into(),
        timestamp: 0,
        trans_id: Some(o.trans_id.clone()),
        order_id: None,
        session_id: None,
    };
    let GatewayOutcome::Success(r) = gateway.inner.query(&q).await else {
        panic!("known order")
    };
    let v = engine
        .apply_payment_notification(&notification_of(&r), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.version, o.version, "the notification records nothing");
    let notification = store.take();
    assert_eq!(notification, ["read_stream"]);
    // A later GET shows what the POST answered, times included.
    let got = engine
        .get_order(&CommandContext::new("18356675194960"), o.order_id)
        .await
        .unwrap();
    assert_eq!(got, o, "GET after the POST");
    assert_eq!(
        store.take(),
        ["read_stream"],
        "GET: one read, no stamp reads"
    );
    let total = request.len() + notification.len();
    assert!(
        total <= 4,
        "{total} round trips: {request:?} + {notification:?}"
    );
    println!("round trips, response first: {total} ({request:?} + {notification:?})");
}

#[tokio::test]
async fn notification_first_purchase_reloads_once_and_records_nothing_twice() {
    let (engine, store, gateway) = setup();
    gateway.notify_first.store(true, Ordering::SeqCst);
    let ctx = CommandContext::new("18356675194960").with_idempotency_key("k-2");
    let o = engine.place_payment(&ctx, purchase()).await.unwrap();
    let o = engine.stamp(o).await.unwrap();
    assert_eq!(o.status, Phase::Captured);
    let request = store.take();
    let notification = gateway.notification_calls.lock().unwrap().clone();
    assert_eq!(
        notification,
        ["read_stream", "append"],
        "the notification records the fact"
    );
    assert_eq!(
        request,
        ["append", "append", "read_stream", "complete_idempotency"],
        "placement; the outcome append loses to the notification once, reloads, \
         sees the fact, appends nothing and completes the key"
    );
    assert_eq!(store.conflicts.load(Ordering::SeqCst), 1, "no retry storm");
    let got = engine
        .get_order(&CommandContext::new("18356675194960"), o.order_id)
        .await
        .unwrap();
    assert_eq!(got, o, "GET after the POST, times included");
    let types: Vec<String> = store
        .inner
        .read_all(Position::START, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "payment_placed",
            "authorisation_requested",
            "authorised",
            "succeeded"
        ],
        "each fact recorded once"
    );
    let total = request.len() + notification.len();
    println!("round trips, notification first: {total} ({request:?} + {notification:?})");
}
