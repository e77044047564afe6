//! Releasing the uncaptured remainder of a partially captured
//! authorisation (issue 17, point 2), in each of the sandbox's three
//! [INFERRED] modes, sent by the PayKKa client over real HTTP and compared
//! with the sandbox ledger (authorised, captured, voided, able to capture).

mod client_support;

use client_support::*;
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway};
use payorch_sandbox::{ReleaseMode, cards};
use payorch_schemas::paykka::{
    Balances, CaptureMethod, CaptureRequest, GatewayOrderStatus, PaymentResponse, QueryRequest,
    VoidRequest,
};

async fn env_in(mode: ReleaseMode) -> Env {
    env_with(|c| c.behaviour.release_mode = mode, |m| m).await
}

fn ok(o: GatewayOutcome<PaymentResponse>) -> PaymentResponse {
    match o {
        GatewayOutcome::Success(r) => r,
        other => panic!("expected Success, got {other:?}"),
    }
}

/// Authorises 10 000 and captures 6 000 of it; returns the order id.
async fn authorise_and_capture_part(env: &Env) -> String {
    let auth = ok(env
        .client
        .initiate(&card_initiate(
            cards::VISA_SUCCESS,
            10_000,
            CaptureMethod::Manual,
        ))
        .await);
    let order_id = auth.order_id.clone().expect("order_id");
    let r = ok(env.client.capture(&capture(&order_id, 6_000, None)).await);
    assert_eq!(r.status, Some(GatewayOrderStatus::Success));
    order_id
}

fn capture(order_id: &str, amount: i64, final_capture: Option<bool>) -> CaptureRequest {
    CaptureRequest {
        merchant_id: MERCHANT.into(),
        timestamp: 0,
        order_id: order_id.into(),
        amount: Some(amount),
        currency: None,
        final_capture,
    }
}

fn void(order_id: &str) -> VoidRequest {
    VoidRequest {
        merchant_id: MERCHANT.into(),
        timestamp: 0,
        order_id: order_id.into(),
        reason: None,
    }
}

/// (authorised, captured, voided, able_to_capture) in the sandbox ledger.
fn books(env: &Env, order_id: &str) -> (i64, i64, i64, i64) {
    let ledger = env.sandbox.ledger();
    let o = &ledger.merchants[MERCHANT].orders[order_id];
    (o.authorised, o.captured, o.voided, o.able_to_capture())
}

/// The same four amounts as PayKKa's query answers them.
async fn queried(env: &Env, order_id: &str) -> (i64, i64, i64, i64) {
    let r = ok(env
        .client
        .query(&QueryRequest::by_order_id(MERCHANT, 0, order_id))
        .await);
    let b: Balances = r.balances.expect("balances");
    (
        b.authed_amount.unwrap_or(-1),
        b.captured_amount.unwrap_or(-1),
        b.voided_amount.unwrap_or(-1),
        b.able_to_capture_amount.unwrap_or(-1),
    )
}

#[tokio::test]
async fn void_after_capture_releases_the_remainder() {
    let env = env_in(ReleaseMode::VoidAfterCapture).await;
    let order_id = authorise_and_capture_part(&env).await;
    // The flag means nothing in this mode.
    let r = ok(env
        .client
        .capture(&capture(&order_id, 1_000, Some(true)))
        .await);
    assert_eq!(
        r.balances.as_ref().and_then(|b| b.able_to_void_amount),
        Some(3_000)
    );
    assert_eq!(books(&env, &order_id), (10_000, 7_000, 0, 3_000));
    let r = ok(env.client.void(&void(&order_id)).await);
    assert_eq!(r.status, Some(GatewayOrderStatus::Success));
    let want = (10_000, 7_000, 3_000, 0);
    assert_eq!(books(&env, &order_id), want);
    assert_eq!(queried(&env, &order_id).await, want);
    // Nothing left to capture or void.
    assert!(matches!(
        env.client.capture(&capture(&order_id, 1, None)).await,
        GatewayOutcome::Rejected { .. }
    ));
    assert!(matches!(
        env.client.void(&void(&order_id)).await,
        GatewayOutcome::Rejected { .. }
    ));
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn the_final_capture_flag_releases_the_remainder() {
    let env = env_in(ReleaseMode::CaptureFlag).await;
    let order_id = authorise_and_capture_part(&env).await;
    // A void after a capture is refused in this mode, and changes nothing.
    assert!(matches!(
        env.client.void(&void(&order_id)).await,
        GatewayOutcome::Rejected { .. }
    ));
    assert_eq!(books(&env, &order_id), (10_000, 6_000, 0, 4_000));
    let r = ok(env
        .client
        .capture(&capture(&order_id, 1_000, Some(true)))
        .await);
    assert_eq!(r.status, Some(GatewayOrderStatus::Success));
    let want = (10_000, 7_000, 3_000, 0);
    assert_eq!(books(&env, &order_id), want);
    assert_eq!(queried(&env, &order_id).await, want);
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn on_expiry_only_the_expiry_releases_the_remainder() {
    let env = env_in(ReleaseMode::OnExpiry).await;
    let order_id = authorise_and_capture_part(&env).await;
    assert!(matches!(
        env.client.void(&void(&order_id)).await,
        GatewayOutcome::Rejected { .. }
    ));
    ok(env
        .client
        .capture(&capture(&order_id, 1_000, Some(true)))
        .await);
    // Neither the void nor the flag released anything.
    assert_eq!(books(&env, &order_id), (10_000, 7_000, 0, 3_000));
    // The authorisation expires (over HTTP, like an integrator would).
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/sandbox/orders/{order_id}/expire",
            env.sandbox.host_url()
        ))
        .send()
        .await
        .expect("expire");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
    assert_eq!(body["released"], 3_000);
    let want = (10_000, 7_000, 3_000, 0);
    assert_eq!(books(&env, &order_id), want);
    assert_eq!(queried(&env, &order_id).await, want);
    // Expiring again: nothing left, refused.
    assert!(
        env.sandbox
            .expire_authorisation(MERCHANT, &order_id)
            .is_err()
    );
    // An authorisation with nothing captured expires to CANCELED.
    let auth = ok(env
        .client
        .initiate(&card_initiate(
            cards::VISA_SUCCESS,
            2_000,
            CaptureMethod::Manual,
        ))
        .await);
    let other = auth.order_id.expect("order_id");
    let released = env
        .sandbox
        .expire_authorisation(MERCHANT, &other)
        .expect("expire");
    assert_eq!(released, 2_000);
    let r = ok(env
        .client
        .query(&QueryRequest::by_order_id(MERCHANT, 0, &other))
        .await);
    assert_eq!(r.status, Some(GatewayOrderStatus::Canceled));
    assert_eq!(books(&env, &other), (2_000, 0, 2_000, 0));
    env.sandbox.shutdown().await;
}

#[test]
fn release_modes_parse_by_name() {
    for mode in [
        ReleaseMode::VoidAfterCapture,
        ReleaseMode::CaptureFlag,
        ReleaseMode::OnExpiry,
    ] {
        assert_eq!(mode.as_str().parse::<ReleaseMode>(), Ok(mode));
    }
    assert!("void".parse::<ReleaseMode>().is_err());
}
