//! Every event names its merchant, whatever path recorded it (issue 17
//! point 3): a merchant request, a PayKKa notification that arrives before
//! the PayKKa response, a notification for a lost response, a query by the
//! reconciler, the agreement a first recurring payment creates, a checkout
//! session paid by notification. A subscriber bound to `*.*.<merchant>` on
//! the in-process bus sees every event of that merchant's streams, and no
//! stored event has an empty merchant.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use payorch_engine::bus::memory::InProcessBus;
use payorch_engine::bus::{
    DeliveryContext, EventEnvelope, EventHandler, HandlerError, SubscriptionOptions, subscribe,
};
use payorch_engine::gateway::fake::{FakeGateway, Op, Step};
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway};
use payorch_engine::orchestrator::{
    CheckoutSessionCreate, CommandContext, Engine, EngineConfig, PlacePaymentRequest,
};
use payorch_engine::order::Phase;
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{Clock, EventStore, Position};
use payorch_engine::testing::ManualClock;
use payorch_schemas::events::order::TokenRequest;
use payorch_schemas::events::{AuthorisationKind, CaptureMode, OrderId, PaymentKind, TokenPurpose};
use payorch_schemas::paykka::{
    ApplePaySessionRequest, ApplePaySessionResponse, CaptureRequest, CheckoutSessionQueryRequest,
    CheckoutSessionQueryResponse, CheckoutSessionRequest, CheckoutSessionResponse, InitiateRequest,
    PaymentNotification, PaymentRequest, PaymentResponse, QueryRequest, RecurringCancelRequest,
    RefundQueryRequest, RefundRequest, RefundResponse, SessionMode, TokenQueryRequest,
    TokenQueryResponse, TokenRemoveRequest, VoidRequest,
};
use payorch_schemas::{Currency, Money};

const A: &str = "18356675194960";
const B: &str = "29000000000001";

/// The fake PayKKa, except that while `notify_first` is set the
/// notification of a successful initiate reaches the engine before the
/// response does (the race behind the `order.*.unknown` routing keys).
struct NotifyFirst {
    inner: Arc<FakeGateway>,
    engine: OnceLock<Weak<Engine>>,
    notify_first: AtomicBool,
}

fn notification_of(r: &PaymentResponse) -> PaymentNotification {
    let mut v = serde_json::to_value(r).expect("response serializes");
    let status = v["status"].as_str().unwrap_or("SUCCESS").to_owned();
    v["notify_type"] = serde_json::Value::String(if status == "AUTHORIZED" {
        "PAYMENT.AUTHORIZATION".into()
    } else {
        format!("PAYMENT.{status}")
    });
    serde_json::from_value(v).expect("a notification")
}

#[async_trait]
impl PaymentGateway for NotifyFirst {
    async fn initiate(&self, req: &InitiateRequest) -> GatewayOutcome<PaymentResponse> {
        let out = self.inner.initiate(req).await;
        let first = self.notify_first.load(Ordering::SeqCst);
        if let (true, GatewayOutcome::Success(r)) = (first, &out) {
            let engine = self.engine.get().and_then(Weak::upgrade).expect("engine");
            let applied = engine
                .apply_payment_notification(&notification_of(r), None)
                .await
                .expect("notification applies");
            assert!(applied.is_some(), "the notification names our order");
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

/// Records the event ids a subscription saw.
struct Seen(Arc<Mutex<BTreeSet<uuid::Uuid>>>);

#[async_trait]
impl EventHandler<serde_json::Value> for Seen {
    async fn handle(
        &self,
        event: EventEnvelope<serde_json::Value>,
        _ctx: &DeliveryContext,
    ) -> Result<(), HandlerError> {
        self.0.lock().unwrap().insert(event.event_id);
        Ok(())
    }
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn card(amount: i64, kind: PaymentKind) -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount: eur(amount),
        payment_type: kind,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: CaptureMode::Automatic,
        payment: PaymentRequest::card("4111111111111111", "07", "2031", "987"),
        store_token: None,
        return_url: Some("https://shop.example/return".into()),
        browser: None,
    }
}

#[tokio::test]
async fn every_event_names_its_merchant_whatever_path_recorded_it() {
    let store = Arc::new(InMemoryStore::new());
    let fake = Arc::new(FakeGateway::new());
    let gateway = Arc::new(NotifyFirst {
        inner: fake.clone(),
        engine: OnceLock::new(),
        notify_first: AtomicBool::new(false),
    });
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        gateway.clone(),
        clock.clone(),
        EngineConfig {
            retry_backoff: Duration::from_millis(1),
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    ));
    assert!(gateway.engine.set(Arc::downgrade(&engine)).is_ok());
    let bus = InProcessBus::new(store.clone(), store.clone())
        .with_poll_interval(Duration::from_millis(5));
    let seen_a = Arc::new(Mutex::new(BTreeSet::new()));
    let seen_b = Arc::new(Mutex::new(BTreeSet::new()));
    let sub_a = subscribe(
        &bus,
        SubscriptionOptions::new("merchant-a", [format!("*.*.{A}")]),
        Seen(seen_a.clone()),
    )
    .await
    .unwrap();
    let sub_b = subscribe(
        &bus,
        SubscriptionOptions::new("merchant-b", [format!("*.*.{B}")]),
        Seen(seen_b.clone()),
    )
    .await
    .unwrap();
    let a = CommandContext::new(A);

    // 1. Response first, then a duplicate notification.
    let o = engine
        .place_payment(&a, card(1000, PaymentKind::Purchase))
        .await
        .unwrap();
    assert_eq!(o.status, Phase::Captured);
    let q = QueryRequest {
        merchant_id: A.into(),
        timestamp: 0,
        trans_id: Some(o.trans_id.clone()),
        order_id: None,
        session_id: None,
    };
    let GatewayOutcome::Success(r) = fake.query(&q).await else {
        panic!("the fake knows the order")
    };
    engine
        .apply_payment_notification(&notification_of(&r), None)
        .await
        .unwrap();

    // 2. and 3. Notification first: a purchase and a first recurring
    // payment that stores its card (the agreement is created on the
    // notification's path).
    for kind in [PaymentKind::Purchase, PaymentKind::Recurring] {
        let mut req = card(700, kind);
        if kind == PaymentKind::Recurring {
            req.store_token = Some(TokenRequest {
                purpose: TokenPurpose::Subscription,
                shopper_reference: "cust-1".into(),
            });
        }
        gateway.notify_first.store(true, Ordering::SeqCst);
        let o = engine.place_payment(&a, req).await.unwrap();
        gateway.notify_first.store(false, Ordering::SeqCst);
        assert_eq!(o.status, Phase::Captured);
        let events = engine.list_order_events(&a, o.order_id).await.unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.metadata.actor.as_deref() == Some("paykka")),
            "the notification recorded the outcome"
        );
    }

    // 4. The initiate answer is lost; the reconciler's query resolves it.
    fake.script(Op::Initiate, Step::ProcessThenTimeout);
    let lost = engine
        .place_payment(&a, card(300, PaymentKind::Purchase))
        .await
        .unwrap();
    assert_eq!(lost.status, Phase::AuthorisationUnknown);
    let resolved = engine.refresh_order(lost.order_id, false).await.unwrap();
    assert_eq!(resolved.status, Phase::Captured);

    // 5. A checkout session paid on the hosted page: the order starts from
    // the notification.
    let s = engine
        .create_checkout_session(
            &a,
            CheckoutSessionCreate {
                amount: eur(2500),
                payment_type: PaymentKind::Purchase,
                capture_method: CaptureMode::Automatic,
                session_mode: SessionMode::Hosted,
                return_url: None,
                expires_at: Some(clock.now() + time::Duration::hours(1)),
            },
        )
        .await
        .unwrap();
    let trans_id = OrderId(s.checkout_id.0).trans_id().as_str().to_owned();
    let gw_order = fake.pay_session(&trans_id, "SUCCESS").unwrap();
    let n: PaymentNotification = serde_json::from_value(serde_json::json!({
        "notify_type": "PAYMENT.SUCCESS", "trans_id": trans_id, "order_id": gw_order,
        "session_id": s.session_id, "status": "SUCCESS", "amount": 2500, "currency": "EUR",
        "payment": {"payment_method": "BANKCARD"}
    }))
    .unwrap();
    let paid = engine
        .apply_payment_notification(&n, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paid.status, Phase::Captured);

    // 6. Another merchant's payment.
    engine
        .place_payment(&CommandContext::new(B), card(100, PaymentKind::Purchase))
        .await
        .unwrap();

    // Every stored event names a merchant; split them by merchant.
    let all = store.read_all(Position::START, 100_000).await.unwrap();
    let mut of_a = BTreeSet::new();
    let mut of_b = BTreeSet::new();
    for e in &all {
        match e.metadata.merchant_id.as_deref() {
            Some(A) => of_a.insert(e.event_id),
            Some(B) => of_b.insert(e.event_id),
            other => panic!(
                "{} v{} ({}) names merchant {other:?}",
                e.stream_id, e.version, e.event_type
            ),
        };
    }
    let types: BTreeSet<&str> = all.iter().map(|e| e.event_type.as_str()).collect();
    assert!(
        types.contains("agreement_created"),
        "the run created an agreement: {types:?}"
    );

    // Each merchant's subscriber sees exactly its events.
    bus.notify();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (sa, sb) = (
            seen_a.lock().unwrap().clone(),
            seen_b.lock().unwrap().clone(),
        );
        if sa == of_a && sb == of_b {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "merchant A saw {} of {} events, B {} of {}",
            sa.intersection(&of_a).count(),
            of_a.len(),
            sb.intersection(&of_b).count(),
            of_b.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sub_a.stop().await;
    sub_b.stop().await;
}
