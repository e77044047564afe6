//! The orchestrator end to end against the in-memory store and the fake
//! PayKKa: payments, idempotency, webhooks, reconciliation by query,
//! recurring agreements, checkout sessions and concurrency.

use std::sync::Arc;

use payorch_engine::gateway::fake::{FakeGateway, Op, Step};
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway};
use payorch_engine::orchestrator::{
    CheckoutSessionCreate, CommandContext, Engine, EngineConfig, EngineError, PlacePaymentRequest,
    order_stream,
};
use payorch_engine::order::{DomainError, Phase};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{EventStore, StreamId, Version};
use payorch_engine::testing::ManualClock;
use payorch_schemas::events::order::TokenRequest;
use payorch_schemas::events::{
    AgreementId, AuthorisationKind, CaptureMode, OrderId, PaymentKind, TokenPurpose,
};
use payorch_schemas::paykka::{PaymentNotification, PaymentRequest, SessionMode};
use payorch_schemas::{Currency, Money};

const PAN: &str = "4111111111111111";
const CVV: &str = "987";

struct World {
    engine: Arc<Engine>,
    store: Arc<InMemoryStore>,
    gateway: Arc<FakeGateway>,
}

fn world() -> World {
    let store = Arc::new(InMemoryStore::new());
    let gateway = Arc::new(FakeGateway::new());
    let config = EngineConfig {
        retry_backoff: std::time::Duration::from_millis(1),
        max_conflict_retries: 64,
        // As `payorch serve` sets it: PayKKa needs a return_url for
        // shopper-present payments and sessions.
        default_return_url: Some("https://shop.example/return".into()),
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        gateway.clone() as Arc<dyn PaymentGateway>,
        Arc::new(ManualClock::at_epoch_2026()),
        config,
    ));
    World {
        engine,
        store,
        gateway,
    }
}

fn ctx() -> CommandContext {
    CommandContext::new("18356675194960")
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn card_payment(amount: i64, capture_method: CaptureMode) -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount: eur(amount),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method,
        payment: PaymentRequest::card(PAN, "07", "2031", CVV),
        store_token: None,
        return_url: Some("https://shop.example/return".into()),
        browser: None,
    }
}

async fn all_payloads(store: &InMemoryStore) -> String {
    let events = store
        .read_all(payorch_engine::store::Position::START, 100_000)
        .await
        .unwrap();
    events
        .iter()
        .map(|e| e.payload.get().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn manual_capture_partial_captures_and_refunds() {
    let w = world();
    let order = w
        .engine
        .place_payment(&ctx(), card_payment(1000, CaptureMode::Manual))
        .await
        .unwrap();
    assert_eq!(order.status, Phase::Authorised);
    assert_eq!(
        order.card.as_ref().and_then(|c| c.last4.as_deref()),
        Some("1111")
    );

    let o = w
        .engine
        .capture(&ctx(), order.order_id, Some(eur(400)), false)
        .await
        .unwrap();
    assert_eq!((o.status, o.captured), (Phase::PartiallyCaptured, eur(400)));
    let o = w
        .engine
        .capture(&ctx(), order.order_id, None, false)
        .await
        .unwrap();
    assert_eq!((o.status, o.captured), (Phase::Captured, eur(1000)));

    let o = w
        .engine
        .refund(&ctx(), order.order_id, eur(300), None)
        .await
        .unwrap();
    assert_eq!((o.status, o.refunded), (Phase::PartiallyRefunded, eur(300)));
    let err = w
        .engine
        .refund(&ctx(), order.order_id, eur(800), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Domain(DomainError::AmountExceedsAvailable { .. })
        ),
        "{err}"
    );
    let o = w
        .engine
        .refund(&ctx(), order.order_id, eur(700), None)
        .await
        .unwrap();
    assert_eq!((o.status, o.refunded), (Phase::Refunded, eur(1000)));
    assert_eq!(
        w.gateway.ledger(order.trans_id.as_str()),
        Some((1000, 1000))
    );

    let events = w
        .engine
        .list_order_events(&ctx(), order.order_id)
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "payment_placed",
            "authorisation_requested",
            "authorised",
            "capture_requested",
            "captured",
            "capture_requested",
            "captured",
            "refund_requested",
            "refunded",
            "refund_requested",
            "refunded",
        ]
    );
    // Both sides of every call, and no card data at rest.
    let payloads = all_payloads(&w.store).await;
    assert!(!payloads.contains(PAN));
    assert!(!payloads.to_lowercase().contains("cvv"));
    assert!(payloads.contains("\"last4\":\"1111\""));
}

#[tokio::test]
async fn another_merchant_cannot_see_or_touch_the_order() {
    let w = world();
    let order = w
        .engine
        .place_payment(&ctx(), card_payment(1000, CaptureMode::Manual))
        .await
        .unwrap();
    let other = CommandContext::new("99999999999999");
    assert!(matches!(
        w.engine.get_order(&other, order.order_id).await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(matches!(
        w.engine.capture(&other, order.order_id, None, false).await,
        Err(EngineError::NotFound { .. })
    ));
}

#[tokio::test]
async fn idempotency_same_key_same_request_returns_the_stored_result() {
    let w = world();
    let c = ctx().with_idempotency_key("k-1");
    let a = w
        .engine
        .place_payment(&c, card_payment(1000, CaptureMode::Manual))
        .await
        .unwrap();
    let b = w
        .engine
        .place_payment(&c, card_payment(1000, CaptureMode::Manual))
        .await
        .unwrap();
    assert_eq!(a.order_id, b.order_id);
    assert_eq!(
        w.gateway
            .calls()
            .iter()
            .filter(|c| *c == "initiate")
            .count(),
        1
    );

    let err = w
        .engine
        .place_payment(&c, card_payment(1200, CaptureMode::Manual))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::IdempotencyConflict { .. }),
        "{err}"
    );

    let cap = ctx().with_idempotency_key("cap-1");
    let x = w
        .engine
        .capture(&cap, a.order_id, Some(eur(100)), false)
        .await
        .unwrap();
    let y = w
        .engine
        .capture(&cap, a.order_id, Some(eur(100)), false)
        .await
        .unwrap();
    assert_eq!(x.captured, eur(100));
    assert_eq!(y.captured, eur(100), "the repeat must not capture twice");
}

#[tokio::test]
async fn a_timeout_after_paykka_committed_is_resolved_by_query() {
    let w = world();
    w.gateway.script(Op::Initiate, Step::ProcessThenTimeout);
    let order = w
        .engine
        .place_payment(&ctx(), card_payment(1000, CaptureMode::Manual))
        .await
        .unwrap();
    assert_eq!(order.status, Phase::AuthorisationUnknown);
    let order = w.engine.refresh_order(order.order_id, false).await.unwrap();
    assert_eq!(order.status, Phase::Authorised);
    assert_eq!(
        order.gateway_order_id.as_deref(),
        Some("GW00000000000000001")
    );
}

#[tokio::test]
async fn a_timeout_before_paykka_saw_anything_is_declined_only_after_the_grace_period() {
    let w = world();
    w.gateway.script(
        Op::Initiate,
        Step::Return(GatewayOutcome::Unknown {
            reason: "connect timeout".into(),
        }),
    );
    let order = w
        .engine
        .place_payment(&ctx(), card_payment(1000, CaptureMode::Manual))
        .await
        .unwrap();
    let o = w.engine.refresh_order(order.order_id, false).await.unwrap();
    assert_eq!(
        o.status,
        Phase::AuthorisationUnknown,
        "not found before the grace period proves nothing"
    );
    let o = w.engine.refresh_order(order.order_id, true).await.unwrap();
    assert_eq!(
        (o.status, o.decline_code.as_deref()),
        (Phase::Declined, Some("206024"))
    );
}

#[tokio::test]
async fn webhooks_are_idempotent_and_order_insensitive() {
    let w = world();
    let order = w
        .engine
        .place_payment(&ctx(), card_payment(1000, CaptureMode::Automatic))
        .await
        .unwrap();
    assert_eq!(order.status, Phase::Captured);
    let version = order.version;
    let note = |status: &str| -> PaymentNotification {
        serde_json::from_value(serde_json::json!({
            "notify_type": format!("PAYMENT.{status}"),
            "trans_id": order.trans_id,
            "order_id": "GW00000000000000001",
            "status": if status == "AUTHORIZATION" { "AUTHORIZED" } else { status },
            "amount": 1000, "currency": "EUR"
        }))
        .unwrap()
    };
    for n in [note("SUCCESS"), note("SUCCESS"), note("AUTHORIZATION")] {
        let v = w
            .engine
            .apply_payment_notification(&n, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((v.status, v.version), (Phase::Captured, version));
    }
    // A notification for somebody else's trans_id is ignored.
    let mut stranger = note("SUCCESS");
    stranger.trans_id = Some("not-ours".into());
    assert!(
        w.engine
            .apply_payment_notification(&stranger, None)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn recurring_first_payment_creates_an_agreement_that_charges_and_cancels() {
    let w = world();
    let mut first = card_payment(500, CaptureMode::Automatic);
    first.payment_type = PaymentKind::Recurring;
    first.store_token = Some(TokenRequest {
        purpose: TokenPurpose::Subscription,
        shopper_reference: "cust-7".into(),
    });
    let order = w.engine.place_payment(&ctx(), first).await.unwrap();
    assert_eq!(order.status, Phase::Captured);
    assert!(order.token.is_some());
    let agreement_id = AgreementId(order.order_id.0);
    let a = w.engine.get_agreement(&ctx(), agreement_id).await.unwrap();
    assert_eq!(a.first_order_id, order.order_id);

    let keyed = ctx().with_idempotency_key("charge-1");
    let charge = w
        .engine
        .charge_agreement(&keyed, agreement_id, eur(500))
        .await
        .unwrap();
    let again = w
        .engine
        .charge_agreement(&keyed, agreement_id, eur(500))
        .await
        .unwrap();
    assert_eq!(
        again.order_id, charge.order_id,
        "a repeated charge is the same order"
    );
    assert_eq!(
        (charge.status, charge.agreement_id),
        (Phase::Captured, Some(agreement_id))
    );
    let a = w
        .engine
        .cancel_agreement(&ctx(), agreement_id, None)
        .await
        .unwrap();
    assert_eq!(a.status.to_string(), "cancelled");
    assert_eq!(a.charges, vec![charge.order_id]);
    assert!(
        w.engine
            .charge_agreement(&ctx(), agreement_id, eur(500))
            .await
            .is_err()
    );
}

/// A charge is refused before anything is written when its labels break a
/// limit (issue 15 point 3): no `agreement_charged` without its order.
#[tokio::test]
async fn an_invalid_charge_is_refused_before_anything_is_written() {
    let w = world();
    let mut first = card_payment(500, CaptureMode::Automatic);
    first.payment_type = PaymentKind::Recurring;
    first.store_token = Some(TokenRequest {
        purpose: TokenPurpose::Subscription,
        shopper_reference: "cust-8".into(),
    });
    let order = w.engine.place_payment(&ctx(), first).await.unwrap();
    let agreement_id = AgreementId(order.order_id.0);
    let stream = payorch_engine::orchestrator::agreement_stream(agreement_id);
    let before = w.store.stream_version(&stream).await.unwrap();
    let mut labels = payorch_schemas::events::Annotations::default();
    labels.metadata.insert("k".repeat(41), "v".into());
    let bad = ctx()
        .with_idempotency_key("bad-charge")
        .with_annotations(labels);
    let err = w
        .engine
        .charge_agreement(&bad, agreement_id, eur(500))
        .await
        .expect_err("labels over the limit are refused");
    assert!(
        matches!(
            err,
            EngineError::InvalidRequest(_) | EngineError::InvalidField { .. }
        ),
        "{err:?}"
    );
    assert_eq!(
        w.store.stream_version(&stream).await.unwrap(),
        before,
        "nothing recorded on the agreement"
    );
    let a = w.engine.get_agreement(&ctx(), agreement_id).await.unwrap();
    assert!(a.charges.is_empty(), "{a:?}");
    // The key stays free: the same key with a valid charge executes.
    let ok = w
        .engine
        .charge_agreement(
            &ctx().with_idempotency_key("bad-charge"),
            agreement_id,
            eur(500),
        )
        .await
        .unwrap();
    assert_eq!(ok.status, Phase::Captured);
}

#[tokio::test]
async fn a_checkout_session_is_completed_by_the_order_it_produces() {
    let w = world();
    let s = w
        .engine
        .create_checkout_session(
            &ctx(),
            CheckoutSessionCreate {
                amount: eur(2500),
                payment_type: PaymentKind::Purchase,
                capture_method: CaptureMode::Automatic,
                session_mode: SessionMode::Hosted,
                return_url: None,
                expires_at: Some(time::OffsetDateTime::from_unix_timestamp(1_767_229_200).unwrap()),
            },
        )
        .await
        .unwrap();
    assert!(s.session_url.is_some());
    let n: PaymentNotification = serde_json::from_value(serde_json::json!({
        "notify_type": "PAYMENT.SUCCESS",
        "trans_id": OrderId(s.checkout_id.0).trans_id().as_str(),
        "order_id": "GW77", "session_id": s.session_id, "status": "SUCCESS",
        "amount": 2500, "currency": "EUR"
    }))
    .unwrap();
    let order = w
        .engine
        .apply_payment_notification(&n, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((order.status, order.captured), (Phase::Captured, eur(2500)));
    let s = w
        .engine
        .get_checkout_session(&ctx(), s.checkout_id)
        .await
        .unwrap();
    assert_eq!(s.order_id, Some(order.order_id));
}

/// N concurrent refunds of one unit on one order: every one lands (conflict
/// retries), versions are contiguous and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_order_lose_no_update() {
    const N: i64 = 16;
    let w = world();
    let order = w
        .engine
        .place_payment(&ctx(), card_payment(N, CaptureMode::Automatic))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..N {
        let engine = w.engine.clone();
        let id = order.order_id;
        tasks.push(tokio::spawn(async move {
            engine.refund(&ctx(), id, eur(1), None).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let o = w.engine.get_order(&ctx(), order.order_id).await.unwrap();
    assert_eq!((o.status, o.refunded), (Phase::Refunded, eur(N)));
    assert_eq!(o.refunds.len() as i64, N);
    let stream = w
        .store
        .read_stream(&order_stream(order.order_id), Version(1), 10_000)
        .await
        .unwrap();
    for (i, e) in stream.iter().enumerate() {
        assert_eq!(e.version, Version(i as u64 + 1));
    }
}

/// N writers race for the same expected version: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_winner_per_version() {
    use payorch_engine::store::{AppendRequest, EventMetadata, ExpectedVersion, NewEvent};
    let store = Arc::new(InMemoryStore::new());
    let stream = StreamId::new("order-race");
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let store = store.clone();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let ev = NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "voided".into(),
                schema_version: 2,
                payload: serde_json::value::RawValue::from_string(format!("{{\"n\":{i}}}"))
                    .unwrap(),
                metadata: EventMetadata::default(),
                recorded_at: time::OffsetDateTime::UNIX_EPOCH,
            };
            store
                .append(AppendRequest {
                    stream_id: stream,
                    stream_type: "order".into(),
                    expected: ExpectedVersion::Exact(Version(0)),
                    events: vec![ev],
                    idempotency: None,
                })
                .await
                .is_ok()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(store.stream_version(&stream).await.unwrap(), Version(1));
}
