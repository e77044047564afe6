//! Idempotency as one engine capability (issue 12): N concurrent identical
//! requests with one key execute once and all get the executing request's
//! answer; a later replay gets the stored answer, not the current state; a
//! key never answers two different things; a crash leaves an in-progress
//! record that the resolved stream completes after the stale period.

mod common;

use std::time::Duration;

use common::{ctx, world};
use payorch_engine::gateway::fake::{Op, Step};
use payorch_engine::orchestrator::{
    CheckoutSessionCreate, EngineError, PlacePaymentRequest, order_stream,
};
use payorch_engine::order::Phase;
use payorch_engine::store::{EventStore, IdempotencyStore, Position};
use payorch_schemas::events::order::TokenRequest;
use payorch_schemas::events::{
    AgreementId, AuthorisationKind, CaptureMode, PaymentKind, TokenPurpose,
};
use payorch_schemas::paykka::{PaymentRequest, SessionMode};
use payorch_schemas::{Currency, Money};

/// Runs the futures concurrently (spawned) and collects their results.
async fn join_all<T, F>(futs: impl IntoIterator<Item = F>) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
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

fn calls(w: &common::World, op: &str) -> usize {
    w.gateway
        .calls()
        .iter()
        .filter(|c| c.as_str() == op)
        .count()
}

async fn event_types(w: &common::World) -> Vec<String> {
    w.store
        .read_all(Position::START, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_payments_with_one_key_execute_once() {
    let w = world();
    let c = ctx().with_idempotency_key("pay-1");
    let runs = (0..20).map(|_| {
        let e = w.engine.clone();
        let c = c.clone();
        async move {
            e.place_payment(&c, card(1000, CaptureMode::Automatic))
                .await
        }
    });
    let answers: Vec<_> = join_all(runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(calls(&w, "initiate"), 1, "one PayKKa initiate");
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "identical answers"
    );
    assert_eq!(answers[0].status, Phase::Captured, "the executing answer");
    let placed = event_types(&w).await;
    assert_eq!(placed.iter().filter(|t| *t == "payment_placed").count(), 1);

    // Later, the payment changes; a replay still answers what was stored.
    let refunded = w
        .engine
        .refund(
            &ctx().with_idempotency_key("r-1"),
            answers[0].order_id,
            eur(100),
            None,
        )
        .await
        .unwrap();
    assert_eq!(refunded.status, Phase::PartiallyRefunded);
    let replay = w
        .engine
        .place_payment(&c, card(1000, CaptureMode::Automatic))
        .await
        .unwrap();
    assert_eq!(replay, answers[0]);
    // Another body with the key: refused, naming the key.
    let other = w
        .engine
        .place_payment(&c, card(1001, CaptureMode::Automatic))
        .await;
    assert!(
        matches!(other, Err(EngineError::IdempotencyConflict { .. })),
        "{other:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_captures_and_refunds_with_one_key_execute_once() {
    let w = world();
    let o = w
        .engine
        .place_payment(&ctx(), card(1000, CaptureMode::Manual))
        .await
        .unwrap();
    let c = ctx().with_idempotency_key("cap-1");
    let runs = (0..20).map(|_| {
        let e = w.engine.clone();
        let c = c.clone();
        async move { e.capture(&c, o.order_id, Some(eur(400)), false).await }
    });
    let answers: Vec<_> = join_all(runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(calls(&w, "capture"), 1);
    assert!(answers.iter().all(|a| *a == answers[0]));
    assert_eq!(answers[0].captured, eur(400));

    let c = ctx().with_idempotency_key("ref-1");
    let runs = (0..20).map(|_| {
        let e = w.engine.clone();
        let c = c.clone();
        async move { e.refund(&c, o.order_id, eur(150), None).await }
    });
    let answers: Vec<_> = join_all(runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(calls(&w, "refund"), 1);
    assert!(answers.iter().all(|a| *a == answers[0]));
    assert_eq!(answers[0].refunded, eur(150));
    assert_eq!(answers[0].refunds.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_agreement_charges_make_one_charge() {
    let w = world();
    let mut first = card(500, CaptureMode::Automatic);
    first.payment_type = PaymentKind::Recurring;
    first.store_token = Some(TokenRequest {
        purpose: TokenPurpose::Subscription,
        shopper_reference: "cust-1".into(),
    });
    let o = w.engine.place_payment(&ctx(), first).await.unwrap();
    let agreement = AgreementId(o.order_id.0);
    let c = ctx().with_idempotency_key("charge-1");
    let runs = (0..20).map(|_| {
        let e = w.engine.clone();
        let c = c.clone();
        async move { e.charge_agreement(&c, agreement, eur(300)).await }
    });
    let answers: Vec<_> = join_all(runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(answers.iter().all(|a| *a == answers[0]));
    assert_eq!(calls(&w, "initiate"), 2, "the first payment and one charge");
    let a = w.engine.get_agreement(&ctx(), agreement).await.unwrap();
    assert_eq!(
        a.charges,
        vec![answers[0].order_id],
        "one charge, one order"
    );
    let charged = event_types(&w).await;
    assert_eq!(
        charged.iter().filter(|t| *t == "agreement_charged").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_retry_without_expiry_is_the_same_request() {
    let w = world();
    let c = ctx().with_idempotency_key("co-1");
    let req = || CheckoutSessionCreate {
        amount: eur(2500),
        payment_type: PaymentKind::Purchase,
        capture_method: CaptureMode::Automatic,
        session_mode: SessionMode::Hosted,
        return_url: None,
        expires_at: None,
    };
    let first = w.engine.create_checkout_session(&c, req()).await.unwrap();
    w.clock.advance(Duration::from_secs(90));
    let again = w.engine.create_checkout_session(&c, req()).await.unwrap();
    assert_eq!(again, first, "same session, same resolved expiry");
    let runs = (0..10).map(|_| {
        let e = w.engine.clone();
        let c = ctx().with_idempotency_key("co-2");
        async move { e.create_checkout_session(&c, req()).await }
    });
    let answers: Vec<_> = join_all(runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(answers.iter().all(|a| *a == answers[0]));
    assert_eq!(
        w.gateway
            .calls()
            .iter()
            .filter(|c| c.contains("session"))
            .count(),
        2,
        "one create per key"
    );
}

#[tokio::test]
async fn a_crashed_request_is_in_progress_until_its_stream_is_resolved() {
    let w = world();
    let c = ctx().with_idempotency_key("crash-1");
    // An order whose initiate answer was lost (open: authorisation
    // unknown), and the record its crashed request left: begun, never
    // completed.
    w.gateway.script(Op::Initiate, Step::ProcessThenTimeout);
    let first = w
        .engine
        .place_payment(&ctx(), card(700, CaptureMode::Automatic))
        .await
        .unwrap();
    assert_eq!(first.status, Phase::AuthorisationUnknown);
    // A record begun by the crashed request: in progress, pointing at the
    // order's stream.
    let fp = payorch_engine::command::idempotency::place_fingerprint(
        &card(700, CaptureMode::Automatic),
        None,
    );
    let rec = payorch_engine::store::IdempotencyRecord {
        scope: "18356675194960".into(),
        key: "crash-1".into(),
        fingerprint: fp,
        response: None,
        stream_id: Some(order_stream(first.order_id)),
        created_at: payorch_engine::store::Clock::now(w.clock.as_ref()),
    };
    w.store.put_idempotency(rec).await.unwrap();
    let wait = tokio::time::Instant::now();
    let r = w
        .engine
        .place_payment(&c, card(700, CaptureMode::Automatic))
        .await;
    assert!(
        matches!(r, Err(EngineError::IdempotencyInProgress { .. })),
        "{r:?}"
    );
    assert!(
        wait.elapsed() < Duration::from_secs(30),
        "the wait is bounded"
    );
    // Past the stale period but the order is still open: still in progress.
    w.clock.advance(Duration::from_secs(600));
    let r = w
        .engine
        .place_payment(&c, card(700, CaptureMode::Automatic))
        .await;
    assert!(
        matches!(r, Err(EngineError::IdempotencyInProgress { .. })),
        "{r:?}"
    );
    // The reconciler resolves the order: the key answers it and is completed.
    let resolved = w.engine.refresh_order(first.order_id, false).await.unwrap();
    assert_eq!(resolved.status, Phase::Captured);
    let r = w
        .engine
        .place_payment(&c, card(700, CaptureMode::Automatic))
        .await
        .unwrap();
    assert_eq!(r, resolved);
    let rec = w
        .store
        .get_idempotency("18356675194960", "crash-1")
        .await
        .unwrap()
        .unwrap();
    assert!(rec.is_completed());
    assert_eq!(calls(&w, "initiate"), 1, "never executed twice");
}
