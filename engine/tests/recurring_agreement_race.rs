//! A first recurring payment answers only once its agreement exists, even
//! when the token was recorded by the other path (PayKKa's notification or
//! response, whichever came first) and that path did not get to create the
//! agreement (it crashed, or is still on its way). Without this a merchant
//! charging right after `captured` got 404 for the agreement (seen in
//! `payorch load` and the demo).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use payorch_engine::gateway::PaymentGateway;
use payorch_engine::gateway::fake::{FakeGateway, Op, Step};
use payorch_engine::orchestrator::{
    CommandContext, Engine, EngineConfig, EngineError, PlacePaymentRequest,
};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{
    AppendOutcome, AppendRequest, EventStore, Position, RecordedEvent, StoreError, StreamId,
    Version,
};
use payorch_engine::testing::ManualClock;
use payorch_schemas::events::order::TokenRequest;
use payorch_schemas::events::{
    AgreementId, AuthorisationKind, CaptureMode, PaymentKind, TokenPurpose,
};
use payorch_schemas::paykka::{PaymentNotification, PaymentRequest, QueryRequest};
use payorch_schemas::{Currency, Money};

const A: &str = "18356675194960";

/// The in-memory store, except that the next append to an agreement
/// stream fails while `fail_agreement` is set (a crash between the order's
/// append and the agreement's).
#[derive(Default)]
struct CrashBeforeAgreement {
    inner: InMemoryStore,
    fail_agreement: AtomicBool,
}

#[async_trait]
impl EventStore for CrashBeforeAgreement {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        if request.stream_id.as_str().starts_with("agreement-")
            && self.fail_agreement.swap(false, Ordering::SeqCst)
        {
            return Err(StoreError::Unavailable("crash before the agreement".into()));
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

fn notification_of(r: &payorch_schemas::paykka::PaymentResponse) -> PaymentNotification {
    let mut v = serde_json::to_value(r).expect("response serializes");
    let status = v["status"].as_str().unwrap_or("SUCCESS").to_owned();
    v["notify_type"] = serde_json::Value::String(format!("PAYMENT.{status}"));
    serde_json::from_value(v).expect("a notification")
}

#[tokio::test]
async fn the_path_that_finds_the_token_recorded_still_creates_the_agreement() {
    let store = Arc::new(CrashBeforeAgreement::default());
    let fake = Arc::new(FakeGateway::new());
    let engine = Engine::new(
        store.clone(),
        Arc::new(InMemoryStore::new()),
        fake.clone(),
        Arc::new(ManualClock::at_epoch_2026()),
        EngineConfig {
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    );
    let ctx = CommandContext::new(A);

    // PayKKa takes the first recurring payment (and stores the card) but
    // its answer is lost.
    fake.script(Op::Initiate, Step::ProcessThenTimeout);
    let placed = engine
        .place_payment(
            &ctx,
            PlacePaymentRequest {
                amount: Money::new(900, Currency::EUR),
                payment_type: PaymentKind::Recurring,
                authorisation_type: AuthorisationKind::FinalAuth,
                capture_method: CaptureMode::Automatic,
                payment: PaymentRequest::card("4111111111111111", "07", "2031", "987"),
                store_token: Some(TokenRequest {
                    purpose: TokenPurpose::Subscription,
                    shopper_reference: "cust-1".into(),
                }),
                return_url: Some("https://shop.example/return".into()),
                browser: None,
            },
        )
        .await
        .expect("placed");
    let agreement_id = AgreementId(placed.order_id.0);

    // The notification records the token, then "crashes" before the
    // agreement is written.
    let q = QueryRequest {
        merchant_id: A.into(),
        timestamp: 0,
        trans_id: Some(placed.trans_id.clone()),
        order_id: None,
        session_id: None,
    };
    let payorch_engine::gateway::GatewayOutcome::Success(r) = fake.query(&q).await else {
        panic!("the fake knows the order")
    };
    store.fail_agreement.store(true, Ordering::SeqCst);
    let crashed = engine
        .apply_payment_notification(&notification_of(&r), None)
        .await;
    assert!(
        matches!(crashed, Err(EngineError::Store(StoreError::Unavailable(_)))),
        "{crashed:?}"
    );
    let events = engine
        .list_order_events(&ctx, placed.order_id)
        .await
        .expect("events");
    assert!(
        events.iter().any(|e| e.event_type == "token_stored"),
        "the token is recorded"
    );
    assert!(matches!(
        engine.get_agreement(&ctx, agreement_id).await,
        Err(EngineError::NotFound { .. })
    ));

    // The other path (here the reconciler's query; PayKKa's late answer
    // takes the same route) records nothing new for the order, yet the
    // agreement exists when it answers.
    let view = engine
        .refresh_order(placed.order_id, false)
        .await
        .expect("refreshed");
    let after = engine
        .list_order_events(&ctx, placed.order_id)
        .await
        .expect("events");
    assert_eq!(after.len(), events.len(), "no new order facts");
    assert!(
        view.status.is_terminal() || view.captured.minor == 900,
        "{view:?}"
    );
    let agreement = engine
        .get_agreement(&ctx, agreement_id)
        .await
        .expect("the agreement exists once the payment answered");
    assert_eq!(agreement.first_order_id, placed.order_id);
}
