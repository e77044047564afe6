//! Re-sends are the reconciler's alone (issue 17 point 1, engine side): a
//! refund PayKKa still does not know after the grace period is sent again
//! with the same `refund_trans_id`, and a non-success answer to that
//! re-send is unknown, never declined. A capture is never sent again.

use std::time::Duration;

use payorch_engine::gateway::fake::{Op, Step};
use payorch_engine::gateway::{GatewayOutcome, RejectionClass};
use payorch_engine::orchestrator::{PlacePaymentRequest, order_stream};
use payorch_engine::order::{CallProgress, Phase};
use payorch_engine::reconciler::{Reconciler, ReconcilerConfig};
use payorch_engine::store::{EventStore, Version};
use payorch_engine::view::OrderView;
use payorch_schemas::events::{AuthorisationKind, CaptureMode, PaymentKind};
use payorch_schemas::paykka::PaymentRequest;
use payorch_schemas::{Currency, Money};

mod common;
use common::{World, ctx, world};

const GRACE: Duration = Duration::from_secs(3600);

fn eur(m: i64) -> Money {
    Money::new(m, Currency::EUR)
}

fn payment() -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount: eur(1000),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: CaptureMode::Manual,
        payment: PaymentRequest::card("4111111111111111", "07", "2031", "123"),
        store_token: None,
        return_url: None,
        browser: None,
    }
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

fn count(w: &World, op: &str) -> usize {
    w.gateway.calls().iter().filter(|c| *c == op).count()
}

/// A captured order whose refund of 400 never reached PayKKa (a timeout
/// before it saw anything).
async fn lost_refund(w: &World) -> OrderView {
    let order = w.engine.place_payment(&ctx(), payment()).await.unwrap();
    w.engine
        .capture(&ctx(), order.order_id, None, false)
        .await
        .unwrap();
    w.gateway
        .script_refund(Step::Return(GatewayOutcome::Unknown {
            reason: "connect timeout".into(),
        }));
    let o = w
        .engine
        .refund(&ctx(), order.order_id, eur(400), None)
        .await
        .unwrap();
    assert_eq!(o.refunds[0].progress, CallProgress::OutcomeUnknown);
    o
}

async fn order(w: &World, o: &OrderView) -> OrderView {
    w.engine.get_order(&ctx(), o.order_id).await.unwrap()
}

#[tokio::test]
async fn a_refund_unknown_to_paykka_is_resent_only_after_the_grace_period_with_its_id() {
    let w = world();
    let o = lost_refund(&w).await;
    let rec = reconciler(&w);
    // Within the grace period: Refund Query says "not found", nothing is
    // sent and nothing changes, pass after pass.
    for _ in 0..3 {
        w.clock.advance(Duration::from_secs(120));
        rec.run_once().await.unwrap();
    }
    assert!(count(&w, "refund_query") >= 3);
    assert_eq!(count(&w, "refund"), 1, "no re-send within the grace period");
    assert_eq!(
        order(&w, &o).await.refunds[0].progress,
        CallProgress::OutcomeUnknown
    );
    // Past it: sent again, with the same refund_trans_id, and refunded once.
    w.clock.advance(GRACE);
    rec.run_once().await.unwrap();
    assert_eq!(count(&w, "refund"), 2);
    let now = order(&w, &o).await;
    assert_eq!(now.refunds[0].progress, CallProgress::Succeeded);
    assert_eq!(now.refunds[0].refund_trans_id, o.refunds[0].refund_trans_id);
    assert_eq!(now.refunded, eur(400));
    assert_eq!(now.status, Phase::PartiallyRefunded);
    let trans_id = now.trans_id.clone();
    assert_eq!(w.gateway.ledger(&trans_id), Some((1000, 400)));
    // Nothing open any more: no further re-send.
    w.clock.advance(GRACE);
    rec.run_once().await.unwrap();
    assert_eq!(count(&w, "refund"), 2);
}

#[tokio::test]
async fn a_non_success_answer_to_a_resent_refund_is_unknown_never_declined() {
    let w = world();
    let o = lost_refund(&w).await;
    let rec = reconciler(&w);
    w.clock.advance(GRACE + Duration::from_secs(10));
    for answer in [
        GatewayOutcome::Rejected {
            class: RejectionClass::Request,
            code: "010000".into(),
            description: "bad request".into(),
        },
        GatewayOutcome::Declined {
            code: "2099".into(),
            description: "declined".into(),
        },
        GatewayOutcome::Unknown {
            reason: "HTTP 502".into(),
        },
    ] {
        w.gateway.script_refund(Step::Return(answer));
        w.clock.advance(Duration::from_secs(120));
        rec.run_once().await.unwrap();
        let now = order(&w, &o).await;
        assert_eq!(now.refunds[0].progress, CallProgress::OutcomeUnknown);
        assert_eq!(now.status, Phase::Captured, "the refund is still open");
    }
    assert_eq!(count(&w, "refund"), 4, "first send + three re-sends");
    // The amount stays reserved: no second refund can take it.
    let e = w
        .engine
        .refund(&ctx(), o.order_id, eur(700), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exceeds"), "{e}");
    // Nothing in the history says declined.
    let events = w
        .store
        .read_stream(&order_stream(o.order_id), Version::NONE, 1000)
        .await
        .unwrap();
    assert!(
        events.iter().all(|e| e.event_type != "refund_declined"),
        "{:?}",
        events.iter().map(|e| &e.event_type).collect::<Vec<_>>()
    );
    // The next re-send lands: refunded exactly once.
    w.clock.advance(Duration::from_secs(120));
    rec.run_once().await.unwrap();
    let now = order(&w, &o).await;
    assert_eq!(now.refunds[0].progress, CallProgress::Succeeded);
    assert_eq!(w.gateway.ledger(&now.trans_id), Some((1000, 400)));
}

#[tokio::test]
async fn a_refund_paykka_committed_is_found_by_query_and_never_resent() {
    let w = world();
    let order0 = w.engine.place_payment(&ctx(), payment()).await.unwrap();
    w.engine
        .capture(&ctx(), order0.order_id, None, false)
        .await
        .unwrap();
    w.gateway.script_refund(Step::ProcessThenTimeout);
    let o = w
        .engine
        .refund(&ctx(), order0.order_id, eur(300), None)
        .await
        .unwrap();
    let rec = reconciler(&w);
    w.clock.advance(GRACE + Duration::from_secs(10));
    rec.run_once().await.unwrap();
    let now = order(&w, &o).await;
    assert_eq!(now.refunds[0].progress, CallProgress::Succeeded);
    assert_eq!(count(&w, "refund"), 1);
    assert_eq!(w.gateway.ledger(&now.trans_id), Some((1000, 300)));
}

#[tokio::test]
async fn a_capture_is_never_sent_again() {
    let w = world();
    let o = w.engine.place_payment(&ctx(), payment()).await.unwrap();
    // The capture never reached PayKKa; its answer is unknown.
    w.gateway.script(
        Op::Capture,
        Step::Return(GatewayOutcome::Unknown {
            reason: "read timeout".into(),
        }),
    );
    w.engine
        .capture(&ctx(), o.order_id, Some(eur(600)), false)
        .await
        .unwrap();
    let rec = reconciler(&w);
    for _ in 0..3 {
        w.clock.advance(Duration::from_secs(120));
        rec.run_once().await.unwrap();
    }
    w.clock.advance(GRACE);
    rec.run_once().await.unwrap();
    assert_eq!(count(&w, "capture"), 1, "only the merchant's own send");
    // Past the grace period PayKKa's AUTHORIZED with nothing captured
    // declines the capture (it did not happen); the money is still held.
    let now = order(&w, &o).await;
    assert_eq!(now.captures[0].progress, CallProgress::Declined);
    assert_eq!(now.status, Phase::Authorised);
    assert_eq!(w.gateway.ledger(&now.trans_id), Some((0, 0)));
}
