//! The reconciler resolves agreement cancels and checkout session creates
//! whose answer never came: unknown outcome -> reconciler pass -> converges;
//! a non-answer changes nothing and the backoff grows; a refusal of a
//! re-sent cancel is no proof that the first cancel failed.

use std::time::Duration;

use payorch_engine::agreement::AgreementPhase;
use payorch_engine::checkout::CheckoutPhase;
use payorch_engine::gateway::fake::Step;
use payorch_engine::gateway::{GatewayOutcome, RejectionClass};
use payorch_engine::orchestrator::{
    CheckoutSessionCreate, PlacePaymentRequest, agreement_stream, checkout_stream,
};
use payorch_engine::reconciler::{Reconciler, ReconcilerConfig};
use payorch_engine::store::{Clock, EventStore};
use payorch_engine::testing::ManualClock;
use payorch_schemas::events::order::TokenRequest;
use payorch_schemas::events::{
    AgreementId, AuthorisationKind, CaptureMode, PaymentKind, TokenPurpose,
};
use payorch_schemas::paykka::{PaymentRequest, SessionMode};
use payorch_schemas::{Currency, Money};

mod common;
use common::{World, ctx, world};

fn advance_to(clock: &ManualClock, at: time::OffsetDateTime) {
    let now = clock.now();
    if at > now {
        clock.advance((at - now).unsigned_abs());
    }
}

fn unknown<T>() -> Step<T> {
    Step::Return(GatewayOutcome::Unknown {
        reason: "read timeout".into(),
    })
}

async fn agreement(w: &World) -> AgreementId {
    let order = w
        .engine
        .place_payment(
            &ctx(),
            PlacePaymentRequest {
                amount: Money::new(500, Currency::EUR),
                payment_type: PaymentKind::Recurring,
                authorisation_type: AuthorisationKind::FinalAuth,
                capture_method: CaptureMode::Automatic,
                payment: PaymentRequest::card("4111111111111111", "07", "2031", "123"),
                store_token: Some(TokenRequest {
                    purpose: TokenPurpose::Subscription,
                    shopper_reference: "cust-7".into(),
                }),
                return_url: None,
                browser: None,
            },
        )
        .await
        .unwrap();
    AgreementId(order.order_id.0)
}

async fn status(w: &World, id: AgreementId) -> AgreementPhase {
    w.engine.get_agreement(&ctx(), id).await.unwrap().status
}

#[tokio::test]
async fn an_unknown_agreement_cancel_is_resent_and_converges() {
    let w = world();
    let id = agreement(&w).await;
    w.gateway.script_recurring_cancel(Step::ProcessThenTimeout);
    let a = w.engine.cancel_agreement(&ctx(), id, None).await.unwrap();
    assert_eq!(a.status, AgreementPhase::Cancelling);
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.queried, 0, "too fresh");

    w.clock.advance(Duration::from_secs(10));
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved), (1, 1));
    assert_eq!(status(&w, id).await, AgreementPhase::Cancelled);
    let calls = w.gateway.calls();
    assert_eq!(calls.iter().filter(|c| *c == "recurring_cancel").count(), 2);
    w.clock.advance(Duration::from_secs(3600));
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.candidates, r.queried), (0, 0), "nothing open any more");
}

#[tokio::test]
async fn non_answers_and_refusals_of_the_resend_change_nothing_and_back_off() {
    let w = world();
    let id = agreement(&w).await;
    w.gateway.script_recurring_cancel(unknown());
    w.engine.cancel_agreement(&ctx(), id, None).await.unwrap();
    let stream = agreement_stream(id);
    let version = w.store.stream_version(&stream).await.unwrap();
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());

    // PayKKa is down (every retry answers unknown), then refuses for a
    // config reason: neither proves the first cancel failed.
    w.gateway.script_recurring_cancel(unknown());
    w.gateway
        .script_recurring_cancel(Step::Return(GatewayOutcome::Rejected {
            class: RejectionClass::Config,
            code: "1017".into(),
            description: "Non-whitelist request".into(),
        }));
    w.clock.advance(Duration::from_secs(10));
    let t1 = w.clock.now();
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved), (1, 0));
    let first_next = rec.next_query_at(&stream).unwrap();
    let r = rec.run_once().await.unwrap();
    assert_eq!(
        (r.backed_off, r.queried),
        (1, 0),
        "backoff between re-sends"
    );

    advance_to(&w.clock, first_next);
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved), (1, 0));
    let second_next = rec.next_query_at(&stream).unwrap();
    assert!(
        second_next - first_next > first_next - t1,
        "the backoff grows: {t1}, {first_next}, {second_next}"
    );
    assert_eq!(w.store.stream_version(&stream).await.unwrap(), version);
    assert_eq!(status(&w, id).await, AgreementPhase::Cancelling);

    // Finally 2016: the agreement is not active, i.e. cancelled.
    w.gateway
        .script_recurring_cancel(Step::Return(GatewayOutcome::Rejected {
            class: RejectionClass::Request,
            code: "2016".into(),
            description: "Recurring payment agreement is not active".into(),
        }));
    advance_to(&w.clock, second_next);
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.resolved, 1);
    assert_eq!(status(&w, id).await, AgreementPhase::Cancelled);
}

fn session() -> CheckoutSessionCreate {
    CheckoutSessionCreate {
        amount: Money::new(2500, Currency::EUR),
        payment_type: PaymentKind::Purchase,
        capture_method: CaptureMode::Automatic,
        session_mode: SessionMode::Hosted,
        return_url: None,
        expires_at: Some(time::OffsetDateTime::from_unix_timestamp(1_767_229_200).unwrap()),
    }
}

#[tokio::test]
async fn an_unknown_session_create_is_resolved_by_session_query() {
    let w = world();
    w.gateway.script_session(Step::ProcessThenTimeout);
    let s = w
        .engine
        .create_checkout_session(&ctx(), session())
        .await
        .unwrap();
    assert_eq!(
        (s.status, s.session_id.as_deref()),
        (CheckoutPhase::Requested, None)
    );
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());
    w.clock.advance(Duration::from_secs(10));
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved), (1, 1));
    let s = w
        .engine
        .get_checkout_session(&ctx(), s.checkout_id)
        .await
        .unwrap();
    assert_eq!(s.status, CheckoutPhase::Open);
    assert!(s.session_id.is_some() && s.session_url.is_some());
}

#[tokio::test]
async fn an_unknown_session_is_declined_only_after_the_grace_period() {
    let w = world();
    w.gateway.script_session(unknown()); // never reached PayKKa
    let s = w
        .engine
        .create_checkout_session(&ctx(), session())
        .await
        .unwrap();
    let stream = checkout_stream(s.checkout_id);
    let version = w.store.stream_version(&stream).await.unwrap();
    let rec = Reconciler::new(
        w.engine.clone(),
        ReconcilerConfig {
            grace: Duration::from_secs(3600),
            ..ReconcilerConfig::default()
        },
    );
    // Not found before the grace period, then no answer at all.
    w.clock.advance(Duration::from_secs(10));
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved), (1, 0));
    w.clock.advance(Duration::from_secs(7200));
    w.gateway.script_session_query(unknown());
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved), (1, 0));
    assert_eq!(w.store.stream_version(&stream).await.unwrap(), version);

    // Past the grace period PayKKa still does not know it: declined.
    let at = rec.next_query_at(&stream).unwrap();
    advance_to(&w.clock, at);
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.resolved, 1);
    let s = w
        .engine
        .get_checkout_session(&ctx(), s.checkout_id)
        .await
        .unwrap();
    assert_eq!(s.status, CheckoutPhase::Cancelled);
}

#[tokio::test]
async fn an_unpaid_open_session_is_expired_after_expires_at() {
    let w = world();
    let s = w
        .engine
        .create_checkout_session(&ctx(), session())
        .await
        .unwrap();
    assert_eq!(s.status, CheckoutPhase::Open);
    let stream = checkout_stream(s.checkout_id);
    let version = w.store.stream_version(&stream).await.unwrap();
    let config = ReconcilerConfig::default();
    let threshold = config.threshold;
    let rec = Reconciler::new(w.engine.clone(), config);

    // Before expires_at + threshold: nothing is written.
    let expires_at = session().expires_at.unwrap();
    advance_to(&w.clock, expires_at);
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.expired, 0);
    assert_eq!(w.store.stream_version(&stream).await.unwrap(), version);

    // Past it: closed as expired, once.
    advance_to(&w.clock, expires_at + threshold);
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.expired, 1);
    let s = w
        .engine
        .get_checkout_session(&ctx(), s.checkout_id)
        .await
        .unwrap();
    assert_eq!(s.status, CheckoutPhase::Expired);
    let after = w.store.stream_version(&stream).await.unwrap();
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.expired, 0);
    assert_eq!(w.store.stream_version(&stream).await.unwrap(), after);
}
