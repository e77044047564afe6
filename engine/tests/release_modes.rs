//! Final captures and the release of an authorisation's uncaptured rest,
//! per [`ReleaseMode`] (PayKKa's mechanism is [INFERRED]), against the
//! fake PayKKa modelling each mode.

use std::sync::Arc;
use std::time::Duration;

use payorch_engine::gateway::fake::{FakeGateway, Op, Step};
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway};
use payorch_engine::orchestrator::{
    CommandContext, Engine, EngineConfig, PlacePaymentRequest, ReleaseMode, order_stream,
};
use payorch_engine::order::{CallProgress, Phase};
use payorch_engine::reconciler::{Reconciler, ReconcilerConfig};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{EventStore, Version};
use payorch_engine::testing::ManualClock;
use payorch_engine::view::OrderView;
use payorch_schemas::events::{AuthorisationKind, CaptureMode, PaymentKind};
use payorch_schemas::paykka::PaymentRequest;
use payorch_schemas::{Currency, Money};

const MERCHANT: &str = "18356675194960";

struct World {
    engine: Arc<Engine>,
    gateway: Arc<FakeGateway>,
    store: Arc<InMemoryStore>,
}

/// The engine told `engine_mode`, PayKKa (the fake) behaving as
/// `paykka_mode`.
fn world_with(engine_mode: ReleaseMode, paykka_mode: ReleaseMode) -> World {
    let store = Arc::new(InMemoryStore::new());
    let gateway = Arc::new(FakeGateway::with_release_mode(paykka_mode));
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        gateway.clone() as Arc<dyn PaymentGateway>,
        Arc::new(ManualClock::at_epoch_2026()),
        EngineConfig {
            retry_backoff: std::time::Duration::from_millis(1),
            release_mode: engine_mode,
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    ));
    World {
        engine,
        gateway,
        store,
    }
}

fn ctx() -> CommandContext {
    CommandContext::new(MERCHANT)
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

fn manual_card_payment(amount: i64) -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount: eur(amount),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: CaptureMode::Manual,
        payment: PaymentRequest::card("4111111111111111", "07", "2031", "987"),
        store_token: None,
        return_url: Some("https://shop.example/return".into()),
        browser: None,
    }
}

/// The capture request carries `final_capture: true` for a final capture
/// only in `capture_flag` mode; a capture that is not final, or any
/// capture in the other modes, omits the field.
#[tokio::test]
async fn only_capture_flag_mode_sends_the_final_capture_flag() {
    for mode in ReleaseMode::ALL {
        let w = world_with(mode, mode);
        let order = w
            .engine
            .place_payment(&ctx(), manual_card_payment(10_000))
            .await
            .unwrap();
        assert_eq!(order.status, Phase::Authorised);
        w.engine
            .capture(&ctx(), order.order_id, Some(eur(3_000)), false)
            .await
            .unwrap();
        w.engine
            .capture(&ctx(), order.order_id, Some(eur(2_000)), true)
            .await
            .unwrap();
        let want_final = (mode == ReleaseMode::CaptureFlag).then_some(true);
        assert_eq!(
            w.gateway.final_capture_flags(),
            vec![None, want_final],
            "mode {mode}"
        );
    }
}

/// A merchant's own mode wins over the engine's default.
#[tokio::test]
async fn a_merchant_override_decides_the_flag() {
    let store = Arc::new(InMemoryStore::new());
    let gateway = Arc::new(FakeGateway::with_release_mode(ReleaseMode::OnExpiry));
    let engine = Engine::new(
        store.clone(),
        store,
        gateway.clone() as Arc<dyn PaymentGateway>,
        Arc::new(ManualClock::at_epoch_2026()),
        EngineConfig {
            release_mode: ReleaseMode::CaptureFlag,
            merchant_release_modes: [(MERCHANT.to_owned(), ReleaseMode::OnExpiry)].into(),
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    );
    let order = engine
        .place_payment(&ctx(), manual_card_payment(10_000))
        .await
        .unwrap();
    engine
        .capture(&ctx(), order.order_id, Some(eur(4_000)), true)
        .await
        .unwrap();
    assert_eq!(gateway.final_capture_flags(), vec![None]);
}

fn reconciler(w: &World, clock: &Arc<ManualClock>) -> (Reconciler, Arc<ManualClock>) {
    (
        Reconciler::new(w.engine.clone(), ReconcilerConfig::default()),
        clock.clone(),
    )
}

/// The engine and its clock, PayKKa (the fake) behaving as `paykka_mode`.
fn world_clocked(engine_mode: ReleaseMode, paykka_mode: ReleaseMode) -> (World, Arc<ManualClock>) {
    let store = Arc::new(InMemoryStore::new());
    let gateway = Arc::new(FakeGateway::with_release_mode(paykka_mode));
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        gateway.clone() as Arc<dyn PaymentGateway>,
        clock.clone(),
        EngineConfig {
            retry_backoff: std::time::Duration::from_millis(1),
            release_mode: engine_mode,
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    ));
    (
        World {
            engine,
            gateway,
            store,
        },
        clock,
    )
}

/// What payorch shows released: the authorised rest of an order whose
/// remainder is released (status captured with less captured than
/// authorised), else 0.
fn released(v: &OrderView) -> i64 {
    match v.status {
        Phase::Captured | Phase::PartiallyRefunded | Phase::Refunded => {
            v.authorised.minor - v.captured.minor
        }
        _ => 0,
    }
}

/// capture_flag: PayKKa's answer to the final capture shows the rest
/// released, and payorch shows exactly what PayKKa's ledger holds.
#[tokio::test]
async fn capture_flag_mode_shows_the_release_paykka_confirms_in_its_answer() {
    let (w, _) = world_clocked(ReleaseMode::CaptureFlag, ReleaseMode::CaptureFlag);
    let o = w
        .engine
        .place_payment(&ctx(), manual_card_payment(10_000))
        .await
        .unwrap();
    let v = w
        .engine
        .capture(&ctx(), o.order_id, Some(eur(3_000)), false)
        .await
        .unwrap();
    assert_eq!((v.status, released(&v)), (Phase::PartiallyCaptured, 0));
    let v = w
        .engine
        .capture(&ctx(), o.order_id, Some(eur(2_000)), true)
        .await
        .unwrap();
    assert_eq!(v.status, Phase::Captured);
    let (captured, voided) = w.gateway.released(&v.trans_id).unwrap();
    assert_eq!((captured, voided), (5_000, 5_000));
    assert_eq!((v.captured.minor, released(&v)), (captured, voided));
}

/// The bug of issue 17: a final capture PayKKa did not act on (it ignores
/// the flag, or never heard of it) must not show the rest released. It is
/// shown only once a query reports it (here: at the authorisation's
/// expiry), and the reconciler keeps asking until then.
#[tokio::test]
async fn a_final_capture_shows_nothing_released_until_paykka_reports_it() {
    for paykka in [ReleaseMode::OnExpiry, ReleaseMode::VoidAfterCapture] {
        let (w, clock) = world_clocked(ReleaseMode::OnExpiry, paykka);
        let o = w
            .engine
            .place_payment(&ctx(), manual_card_payment(10_000))
            .await
            .unwrap();
        let v = w
            .engine
            .capture(&ctx(), o.order_id, Some(eur(4_000)), true)
            .await
            .unwrap();
        assert_eq!((v.status, released(&v)), (Phase::PartiallyCaptured, 0));
        assert_eq!(w.gateway.released(&v.trans_id), Some((4_000, 0)));
        let (rec, clock) = reconciler(&w, &clock);
        clock.advance(Duration::from_secs(60));
        let r = rec.run_once().await.unwrap();
        assert_eq!(r.queried, 1, "a release awaited is the reconciler's work");
        let v = w.engine.get_order(&ctx(), o.order_id).await.unwrap();
        assert_eq!((v.status, released(&v)), (Phase::PartiallyCaptured, 0));
        // The authorisation expires at PayKKa: the next query shows it.
        assert!(w.gateway.expire(&v.trans_id));
        clock.advance(Duration::from_secs(3600));
        rec.run_once().await.unwrap();
        let v = w.engine.get_order(&ctx(), o.order_id).await.unwrap();
        assert_eq!(v.status, Phase::Captured, "captured, not voided");
        let (captured, voided) = w.gateway.released(&v.trans_id).unwrap();
        assert_eq!((v.captured.minor, released(&v)), (captured, voided));
        assert_eq!(voided, 6_000);
        // Nothing open any more.
        clock.advance(Duration::from_secs(3600));
        let r = rec.run_once().await.unwrap();
        assert_eq!(r.candidates, 0);
    }
}

/// A capture's answer without balances says nothing about the rest: a
/// query does.
#[tokio::test]
async fn an_answer_without_balances_leaves_the_release_to_a_query() {
    let (w, clock) = world_clocked(ReleaseMode::CaptureFlag, ReleaseMode::CaptureFlag);
    let o = w
        .engine
        .place_payment(&ctx(), manual_card_payment(10_000))
        .await
        .unwrap();
    // PayKKa takes the capture (and releases the rest) but the answer is lost.
    w.gateway.script(Op::Capture, Step::ProcessThenTimeout);
    let v = w
        .engine
        .capture(&ctx(), o.order_id, Some(eur(2_500)), true)
        .await
        .unwrap();
    assert_eq!(v.status, Phase::Authorised);
    let (rec, clock) = reconciler(&w, &clock);
    clock.advance(Duration::from_secs(60));
    rec.run_once().await.unwrap();
    let v = w.engine.get_order(&ctx(), o.order_id).await.unwrap();
    assert_eq!(v.status, Phase::Captured);
    assert_eq!((v.captured.minor, released(&v)), (2_500, 7_500));
    assert_eq!(w.gateway.released(&v.trans_id), Some((2_500, 7_500)));
}

/// void_after_capture: once the final partial capture is confirmed the
/// engine sends a Void for the rest, recorded as `void_requested` then
/// `remainder_released` (from the Void answer's balances); the order is
/// captured, not voided, and PayKKa's ledger agrees.
#[tokio::test]
async fn void_after_capture_mode_sends_a_void_for_the_rest_and_records_it() {
    let (w, _) = world_clocked(ReleaseMode::VoidAfterCapture, ReleaseMode::VoidAfterCapture);
    let o = w
        .engine
        .place_payment(&ctx(), manual_card_payment(10_000))
        .await
        .unwrap();
    let v = w
        .engine
        .capture(&ctx(), o.order_id, Some(eur(3_000)), false)
        .await
        .unwrap();
    assert_eq!(v.status, Phase::PartiallyCaptured, "not final: no void");
    assert!(!w.gateway.calls().contains(&"void".to_owned()));
    let v = w
        .engine
        .capture(&ctx(), o.order_id, Some(eur(1_000)), true)
        .await
        .unwrap();
    assert_eq!(v.status, Phase::Captured);
    assert_eq!(v.void, Some(CallProgress::Succeeded));
    let (captured, voided) = w.gateway.released(&v.trans_id).unwrap();
    assert_eq!((captured, voided), (4_000, 6_000));
    assert_eq!((v.captured.minor, released(&v)), (captured, voided));
    let types = event_types(&w, &v).await;
    assert!(
        types.ends_with(&[
            "capture_requested".to_owned(),
            "captured".to_owned(),
            "void_requested".to_owned(),
            "remainder_released".to_owned(),
        ]),
        "{types:?}"
    );
}

/// A crash between the confirmed final capture and the Void: the order
/// awaits the release (visible as reconciler work); the reconciler queries,
/// sees the rest still held and sends the Void. Modelled by a first engine
/// that records the capture and never sends the Void (its process ends),
/// then the restarted engine (void_after_capture) over the same store.
#[tokio::test]
async fn a_crash_between_the_capture_and_the_void_is_resolved_by_the_reconciler() {
    let store = Arc::new(InMemoryStore::new());
    let gateway = Arc::new(FakeGateway::with_release_mode(
        ReleaseMode::VoidAfterCapture,
    ));
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let engine_with = |mode| {
        Arc::new(Engine::new(
            store.clone(),
            store.clone(),
            gateway.clone() as Arc<dyn PaymentGateway>,
            clock.clone(),
            EngineConfig {
                release_mode: mode,
                default_return_url: Some("https://shop.example/return".into()),
                ..EngineConfig::default()
            },
        ))
    };
    let before_crash = engine_with(ReleaseMode::OnExpiry);
    let o = before_crash
        .place_payment(&ctx(), manual_card_payment(10_000))
        .await
        .unwrap();
    let v = before_crash
        .capture(&ctx(), o.order_id, Some(eur(2_000)), true)
        .await
        .unwrap();
    assert_eq!((v.status, v.void), (Phase::PartiallyCaptured, None));
    drop(before_crash);

    let engine = engine_with(ReleaseMode::VoidAfterCapture);
    let w = World {
        engine: engine.clone(),
        gateway: gateway.clone(),
        store: store.clone(),
    };
    let (rec, clock) = reconciler(&w, &clock);
    // The Void is lost once (a timeout before PayKKa saw it): still held,
    // the void unknown, nothing shown released.
    gateway.script(
        Op::Void,
        Step::Return(GatewayOutcome::Unknown {
            reason: "read timeout".into(),
        }),
    );
    clock.advance(Duration::from_secs(60));
    rec.run_once().await.unwrap();
    let v = engine.get_order(&ctx(), o.order_id).await.unwrap();
    assert_eq!(
        (v.status, v.void, released(&v)),
        (
            Phase::PartiallyCaptured,
            Some(CallProgress::OutcomeUnknown),
            0
        )
    );
    assert_eq!(gateway.released(&v.trans_id), Some((2_000, 0)));
    // The next pass sends it again; PayKKa releases; payorch shows it.
    clock.advance(Duration::from_secs(3600));
    rec.run_once().await.unwrap();
    let v = engine.get_order(&ctx(), o.order_id).await.unwrap();
    assert_eq!(v.status, Phase::Captured);
    let (captured, voided) = gateway.released(&v.trans_id).unwrap();
    assert_eq!((captured, voided), (2_000, 8_000));
    assert_eq!((v.captured.minor, released(&v)), (captured, voided));
    let voids = gateway.calls().iter().filter(|c| *c == "void").count();
    assert_eq!(voids, 2);
    clock.advance(Duration::from_secs(3600));
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.candidates, 0, "nothing open any more");
}

async fn event_types(w: &World, v: &OrderView) -> Vec<String> {
    w.store
        .read_stream(&order_stream(v.order_id), Version::NONE, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}
