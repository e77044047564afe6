//! Final captures and the release of an authorisation's uncaptured rest,
//! per [`ReleaseMode`] (PayKKa's mechanism is [INFERRED]), against the
//! fake PayKKa modelling each mode.

use std::sync::Arc;

use payorch_engine::gateway::PaymentGateway;
use payorch_engine::gateway::fake::FakeGateway;
use payorch_engine::orchestrator::{
    CommandContext, Engine, EngineConfig, PlacePaymentRequest, ReleaseMode,
};
use payorch_engine::order::Phase;
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::testing::ManualClock;
use payorch_schemas::events::{AuthorisationKind, CaptureMode, PaymentKind};
use payorch_schemas::paykka::PaymentRequest;
use payorch_schemas::{Currency, Money};

const MERCHANT: &str = "18356675194960";

struct World {
    engine: Arc<Engine>,
    gateway: Arc<FakeGateway>,
}

/// The engine told `engine_mode`, PayKKa (the fake) behaving as
/// `paykka_mode`.
fn world_with(engine_mode: ReleaseMode, paykka_mode: ReleaseMode) -> World {
    let store = Arc::new(InMemoryStore::new());
    let gateway = Arc::new(FakeGateway::with_release_mode(paykka_mode));
    let engine = Arc::new(Engine::new(
        store.clone(),
        store,
        gateway.clone() as Arc<dyn PaymentGateway>,
        Arc::new(ManualClock::at_epoch_2026()),
        EngineConfig {
            retry_backoff: std::time::Duration::from_millis(1),
            release_mode: engine_mode,
            ..EngineConfig::default()
        },
    ));
    World { engine, gateway }
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
