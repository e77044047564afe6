//! A checkout session the shopper paid on PayKKa's page, whose payment
//! notification never reached us: the reconciler finds the payment by
//! Checkout Session Query and starts the order exactly as the notification
//! would have; the late notification then changes nothing. An unpaid
//! session is expired only on a definitive "not paid"; a non-answer leaves
//! it open.

use std::time::Duration;

use payorch_engine::checkout::CheckoutPhase;
use payorch_engine::gateway::GatewayOutcome;
use payorch_engine::gateway::fake::Step;
use payorch_engine::orchestrator::{
    CheckoutSessionCreate, CheckoutView, EngineConfig, OrderView, checkout_stream, order_stream,
};
use payorch_engine::order::Phase;
use payorch_engine::reconciler::{Reconciler, ReconcilerConfig};
use payorch_engine::store::{Clock, EventStore, Version};
use payorch_engine::testing::ManualClock;
use payorch_schemas::events::{CaptureMode, OrderId, PaymentKind};
use payorch_schemas::paykka::{PaymentNotification, SessionMode};
use payorch_schemas::{Currency, Money};

mod common;
use common::{World, ctx, world};

/// One hour after the test clock's start.
fn expires_at() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_767_229_200).unwrap()
}

fn session(capture_method: CaptureMode) -> CheckoutSessionCreate {
    CheckoutSessionCreate {
        amount: Money::new(2500, Currency::EUR),
        payment_type: PaymentKind::Purchase,
        capture_method,
        session_mode: SessionMode::Hosted,
        return_url: None,
        expires_at: Some(expires_at()),
    }
}

fn advance_to(clock: &ManualClock, at: time::OffsetDateTime) {
    let now = clock.now();
    if at > now {
        clock.advance((at - now).unsigned_abs());
    }
}

async fn open_session(w: &World, capture_method: CaptureMode) -> CheckoutView {
    let s = w
        .engine
        .create_checkout_session(&ctx(), session(capture_method))
        .await
        .unwrap();
    assert_eq!(s.status, CheckoutPhase::Open);
    s
}

fn trans_id(s: &CheckoutView) -> String {
    OrderId(s.checkout_id.0).trans_id().as_str().to_owned()
}

/// The notification PayKKa sends for a paid session.
fn notification(s: &CheckoutView, gw_order_id: &str, status: &str) -> PaymentNotification {
    let notify_type = match status {
        "AUTHORIZED" => "PAYMENT.AUTHORIZATION",
        other => &format!("PAYMENT.{other}"),
    };
    serde_json::from_value(serde_json::json!({
        "notify_type": notify_type,
        "trans_id": trans_id(s),
        "order_id": gw_order_id, "session_id": s.session_id, "status": status,
        "amount": 2500, "currency": "EUR",
        "payment": {"payment_method": "BANKCARD"}
    }))
    .unwrap()
}

async fn checkout(w: &World, s: &CheckoutView) -> CheckoutView {
    w.engine
        .get_checkout_session(&ctx(), s.checkout_id)
        .await
        .unwrap()
}

async fn versions(w: &World, s: &CheckoutView) -> (Version, Version) {
    (
        w.store
            .stream_version(&checkout_stream(s.checkout_id))
            .await
            .unwrap(),
        w.store
            .stream_version(&order_stream(OrderId(s.checkout_id.0)))
            .await
            .unwrap(),
    )
}

/// What must not depend on whether the notification or the query told us.
fn money_state(v: &OrderView) -> impl PartialEq + std::fmt::Debug {
    (
        v.status,
        v.amount,
        v.authorised,
        v.captured,
        v.refunded,
        v.gateway_order_id.clone(),
        v.order_id,
    )
}

/// The order a notification makes of the same paid session, in a world
/// of its own (the reference the reconciler must agree with).
async fn order_by_notification(capture_method: CaptureMode, status: &'static str) -> OrderView {
    let w = world();
    let s = open_session(&w, capture_method).await;
    let gw = w.gateway.pay_session(&trans_id(&s), status).unwrap();
    let view = w
        .engine
        .apply_payment_notification(&notification(&s, &gw, status), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkout(&w, &s).await.status, CheckoutPhase::Completed);
    view
}

#[tokio::test]
async fn a_paid_session_whose_notification_was_lost_becomes_an_order_in_one_pass() {
    for (capture_method, status, phase) in [
        (CaptureMode::Automatic, "SUCCESS", Phase::Captured),
        (CaptureMode::Manual, "AUTHORIZED", Phase::Authorised),
    ] {
        let w = world();
        let s = open_session(&w, capture_method).await;
        let gw = w.gateway.pay_session(&trans_id(&s), status).unwrap();
        let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());
        let r = rec.run_once().await.unwrap();
        assert_eq!(r.queried, 0, "younger than the threshold");

        // Long before expiry: one pass finds the payment.
        w.clock.advance(Duration::from_secs(10));
        let r = rec.run_once().await.unwrap();
        assert_eq!(
            (r.queried, r.resolved, r.checkout_paid, r.expired),
            (1, 1, 1, 0),
            "{r:?}"
        );
        let c = checkout(&w, &s).await;
        let order_id = OrderId(s.checkout_id.0);
        assert_eq!(
            (c.status, c.order_id),
            (CheckoutPhase::Completed, Some(order_id))
        );
        let order = w.engine.get_order(&ctx(), order_id).await.unwrap();
        assert_eq!(order.status, phase);
        assert_eq!(order.amount, Money::new(2500, Currency::EUR));
        assert_eq!(order.authorised, Money::new(2500, Currency::EUR));
        let captured = if status == "SUCCESS" { 2500 } else { 0 };
        assert_eq!(order.captured, Money::new(captured, Currency::EUR));
        assert_eq!(order.gateway_order_id.as_deref(), Some(gw.as_str()));

        // The same state as the notification would have made.
        let reference = order_by_notification(capture_method, status).await;
        assert_eq!(
            (order.status, order.amount, order.authorised, order.captured),
            (
                reference.status,
                reference.amount,
                reference.authorised,
                reference.captured
            )
        );
    }
}

#[tokio::test]
async fn the_late_notification_and_later_passes_add_no_events() {
    let w = world();
    let s = open_session(&w, CaptureMode::Automatic).await;
    let gw = w.gateway.pay_session(&trans_id(&s), "SUCCESS").unwrap();
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());
    w.clock.advance(Duration::from_secs(10));
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.checkout_paid, 1);
    let order = w
        .engine
        .get_order(&ctx(), OrderId(s.checkout_id.0))
        .await
        .unwrap();
    let before = versions(&w, &s).await;
    assert!(before.1 > Version::NONE, "the order exists");

    // The notification arrives late, twice (PayKKa re-sends).
    for _ in 0..2 {
        let late = w
            .engine
            .apply_payment_notification(&notification(&s, &gw, "SUCCESS"), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(money_state(&late), money_state(&order));
        assert_eq!(versions(&w, &s).await, before);
    }

    // A second and a later pass: nothing open, nothing queried or written.
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved, r.checkout_paid), (0, 0, 0), "{r:?}");
    w.clock.advance(Duration::from_secs(7200));
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.checkout_paid, r.expired), (0, 0, 0), "{r:?}");
    assert_eq!(versions(&w, &s).await, before);
    assert_eq!(checkout(&w, &s).await.status, CheckoutPhase::Completed);
}

#[tokio::test]
async fn an_unpaid_session_is_queried_and_expired_only_past_its_expiry() {
    for status in [None, Some("FAILURE")] {
        let w = world();
        let s = open_session(&w, CaptureMode::Automatic).await;
        if let Some(status) = status {
            w.gateway.pay_session(&trans_id(&s), status).unwrap();
        }
        let before = versions(&w, &s).await;
        let config = ReconcilerConfig::default();
        let threshold = config.threshold;
        let rec = Reconciler::new(w.engine.clone(), config);

        // Queried before expiry: not paid, but not expired yet either.
        w.clock.advance(Duration::from_secs(10));
        let r = rec.run_once().await.unwrap();
        assert_eq!((r.queried, r.checkout_paid, r.expired), (1, 0, 0), "{r:?}");
        // A session waiting on the shopper is not reconciler backlog.
        assert_eq!((r.open_sessions, r.candidates), (1, 0), "{r:?}");
        assert_eq!(versions(&w, &s).await, before);

        // Past expiry (and past the backoff): asked again, then expired.
        advance_to(&w.clock, expires_at() + threshold);
        let asked = w.gateway.calls().len();
        let r = rec.run_once().await.unwrap();
        assert_eq!((r.queried, r.checkout_paid, r.expired), (1, 0, 1), "{r:?}");
        assert_eq!(
            w.gateway.calls()[asked..],
            ["checkout_session_query".to_owned()]
        );
        let c = checkout(&w, &s).await;
        assert_eq!((c.status, c.order_id), (CheckoutPhase::Expired, None));
        assert_eq!(versions(&w, &s).await.1, Version::NONE, "no order");
    }
}

#[tokio::test]
async fn no_answer_neither_expires_nor_completes_the_session() {
    let w = world();
    let s = open_session(&w, CaptureMode::Automatic).await;
    let before = versions(&w, &s).await;
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());
    let stream = checkout_stream(s.checkout_id);

    // Well past expiry PayKKa times out, then answers 5xx (retryable) to
    // every attempt of the next pass (the engine resends within a call).
    advance_to(&w.clock, expires_at() + Duration::from_secs(60));
    w.gateway
        .script_session_query(Step::Return(GatewayOutcome::Unknown {
            reason: "read timeout".into(),
        }));
    let attempts = EngineConfig::default().retryable_attempts;
    for _ in 0..attempts {
        w.gateway
            .script_session_query(Step::Return(GatewayOutcome::Retryable {
                reason: "HTTP 503".into(),
            }));
    }
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.expired, r.checkout_paid), (1, 0, 0), "{r:?}");
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.backed_off), (0, 1), "the backoff holds");
    advance_to(&w.clock, rec.next_query_at(&stream).unwrap());
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.expired, r.checkout_paid), (1, 0, 0), "{r:?}");
    let queries = w
        .gateway
        .calls()
        .iter()
        .filter(|c| *c == "checkout_session_query")
        .count();
    assert_eq!(
        queries,
        1 + attempts as usize,
        "every scripted answer was used"
    );
    assert_eq!(versions(&w, &s).await, before);
    assert_eq!(checkout(&w, &s).await.status, CheckoutPhase::Open);

    // The shopper had paid: once PayKKa answers, the order starts.
    w.gateway.pay_session(&trans_id(&s), "SUCCESS").unwrap();
    advance_to(&w.clock, rec.next_query_at(&stream).unwrap());
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.checkout_paid, r.expired), (1, 0), "{r:?}");
    assert_eq!(checkout(&w, &s).await.status, CheckoutPhase::Completed);
}

#[tokio::test]
async fn a_session_query_that_resolves_an_unknown_create_also_starts_a_paid_order() {
    let w = world();
    w.gateway.script_session(Step::ProcessThenTimeout);
    let s = w
        .engine
        .create_checkout_session(&ctx(), session(CaptureMode::Automatic))
        .await
        .unwrap();
    assert_eq!(s.status, CheckoutPhase::Requested);
    w.gateway.pay_session(&trans_id(&s), "SUCCESS").unwrap();
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());
    w.clock.advance(Duration::from_secs(10));
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved), (1, 1), "{r:?}");
    let c = checkout(&w, &s).await;
    assert_eq!(c.status, CheckoutPhase::Completed);
    assert!(c.session_id.is_some());
    let order = w
        .engine
        .get_order(&ctx(), OrderId(s.checkout_id.0))
        .await
        .unwrap();
    assert_eq!(
        (order.status, order.captured),
        (Phase::Captured, Money::new(2500, Currency::EUR))
    );
}

#[tokio::test]
async fn a_payment_still_processing_starts_the_order_which_the_reconciler_then_follows() {
    let w = world();
    let s = open_session(&w, CaptureMode::Automatic).await;
    let tid = trans_id(&s);
    w.gateway.pay_session(&tid, "PROCESSING").unwrap();
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());
    w.clock.advance(Duration::from_secs(10));
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.checkout_paid, 1, "{r:?}");
    assert_eq!(checkout(&w, &s).await.status, CheckoutPhase::Completed);
    let order_id = OrderId(s.checkout_id.0);
    let order = w.engine.get_order(&ctx(), order_id).await.unwrap();
    assert_eq!(order.captured, Money::new(0, Currency::EUR));
    assert_eq!(order.status, Phase::AuthorisationPending);

    // PayKKa finishes it; the order's own reconciliation picks that up.
    w.gateway.set_status(&tid, "SUCCESS");
    w.clock.advance(Duration::from_secs(3600));
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.resolved, r.checkout_paid), (1, 0), "{r:?}");
    let order = w.engine.get_order(&ctx(), order_id).await.unwrap();
    assert_eq!(
        (order.status, order.captured),
        (Phase::Captured, Money::new(2500, Currency::EUR))
    );
}
