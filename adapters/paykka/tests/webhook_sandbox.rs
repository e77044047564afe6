//! Real notification deliveries from the sandbox through the
//! `WebhookReceiver` (behind a small axum `notify_url`): verified and routed,
//! duplicated and reordered deliveries all verified (dedupe is the
//! engine's job), wrong key / tampered / stale / oversized refused.

mod client_support;

use std::time::Duration;

use client_support::*;
use payorch_engine::gateway::{GatewayOutcome, PaymentGateway};
use payorch_paykka::keys::generate_merchant_key_pair;
use payorch_paykka::{VerifiedNotification, WebhookConfig, WebhookError, WebhookReceiver};
use payorch_sandbox::{DeliveryOutcome, RefundMode, cards};
use payorch_schemas::paykka::{CaptureMethod, CaptureRequest, RefundRequest};

const WAIT: Duration = Duration::from_secs(10);

fn verified(d: &[Delivery]) -> Vec<VerifiedNotification> {
    d.iter()
        .filter_map(|d| match d {
            Delivery::Verified(v) => Some(v.clone()),
            Delivery::Refused(_) => None,
        })
        .collect()
}

/// Authorise (manual), capture and refund one order with `notify_url`:
/// PAYMENT.AUTHORIZATION, PAYMENT.SUCCESS, REFUND.SUCCESS.
async fn pay_capture_refund(env: &Env, notify_url: &str) -> String {
    let c = &env.client;
    let mut req = card_initiate(cards::VISA_SUCCESS, 3_000, CaptureMethod::Manual);
    req.notify_url = Some(notify_url.to_owned());
    let auth = match c.initiate(&req).await {
        GatewayOutcome::Success(r) => r,
        other => panic!("{other:?}"),
    };
    let order_id = auth.order_id.clone().expect("order id");
    let cap = c
        .capture(&CaptureRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            order_id: order_id.clone(),
            amount: None,
            currency: None,
            final_capture: None,
        })
        .await;
    assert!(matches!(cap, GatewayOutcome::Success(_)), "{cap:?}");
    let refund = c
        .refund(&RefundRequest {
            merchant_id: MERCHANT.into(),
            timestamp: 0,
            refund_trans_id: unique("rf"),
            ori_order_id: order_id.clone(),
            refund_amount: 1_000,
            currency: eur(0).currency,
            reason: None,
            notify_url: Some(notify_url.to_owned()),
        })
        .await;
    assert!(matches!(refund, GatewayOutcome::Success(_)), "{refund:?}");
    order_id
}

#[tokio::test]
async fn deliveries_are_verified_and_routed() {
    let env = env_with(|c| c.behaviour.refunds = RefundMode::Immediate, |m| m).await;
    let server = NotifyServer::start(webhook_receiver(env.platform_key.clone())).await;
    let order_id = pay_capture_refund(&env, &server.url).await;
    assert!(
        server.wait_for(WAIT, |d| verified(d).len() >= 3).await,
        "{:?}",
        server.snapshot()
    );
    let got = verified(&server.snapshot());
    let payments: Vec<_> = got
        .iter()
        .filter_map(|v| match v {
            VerifiedNotification::Payment(p) => Some(p),
            _ => None,
        })
        .collect();
    let refunds: Vec<_> = got
        .iter()
        .filter_map(|v| match v {
            VerifiedNotification::Refund(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(
        payments
            .iter()
            .all(|p| p.order_id.as_deref() == Some(order_id.as_str()))
    );
    assert!(payments.len() >= 2, "{payments:?}");
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].original_order_id(), Some(order_id.as_str()));
    assert!(got.iter().all(|v| v.merchant_id() == Some(MERCHANT)));
    // The sandbox saw every delivery acknowledged.
    assert!(
        env.sandbox
            .wait_until(WAIT, |s| s
                .notifications_sent()
                .iter()
                .all(|r| r.outcome == DeliveryOutcome::Acknowledged))
            .await
    );
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn duplicated_deliveries_verify_with_equal_dedupe_keys() {
    let env = env_with(
        |c| {
            c.behaviour.refunds = RefundMode::Immediate;
            c.faults.notify_duplicate = 1.0;
        },
        |m| m,
    )
    .await;
    let server = NotifyServer::start(webhook_receiver(env.platform_key.clone())).await;
    pay_capture_refund(&env, &server.url).await;
    let queued = |s: &payorch_sandbox::RunningSandbox| s.notifications_sent().len();
    assert!(env.sandbox.wait_until(WAIT, |s| queued(s) >= 6).await);
    let expected = queued(&env.sandbox);
    assert!(
        server
            .wait_for(WAIT, |d| verified(d).len() >= expected)
            .await
    );
    let got = verified(&server.snapshot());
    let mut keys: Vec<String> = got.iter().map(VerifiedNotification::dedupe_key).collect();
    keys.sort();
    let mut unique_keys = keys.clone();
    unique_keys.dedup();
    // Every notification arrived twice, both copies verified, same key.
    assert_eq!(keys.len(), unique_keys.len() * 2, "{keys:?}");
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn reordered_deliveries_all_verify() {
    let env = env_with(
        |c| {
            c.behaviour.refunds = RefundMode::Immediate;
            c.faults.notify_reorder = 1.0;
            c.faults.reorder_hold = Duration::from_millis(100);
        },
        |m| m,
    )
    .await;
    let server = NotifyServer::start(webhook_receiver(env.platform_key.clone())).await;
    pay_capture_refund(&env, &server.url).await;
    assert!(
        server.wait_for(WAIT, |d| verified(d).len() >= 3).await,
        "{:?}",
        server.snapshot()
    );
    assert!(env.sandbox.notifications_sent().iter().any(|r| r.reordered));
    assert!(
        server
            .snapshot()
            .iter()
            .all(|d| matches!(d, Delivery::Verified(_)))
    );
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn wrong_platform_key_is_refused_with_401() {
    let env = env().await;
    let impostor = generate_merchant_key_pair().expect("keygen").public.clone();
    let server = NotifyServer::start(webhook_receiver(impostor)).await;
    let mut req = card_initiate(cards::VISA_SUCCESS, 100, CaptureMethod::Automatic);
    req.notify_url = Some(server.url.clone());
    assert!(matches!(
        env.client.initiate(&req).await,
        GatewayOutcome::Success(_)
    ));
    assert!(server.wait_for(WAIT, |d| !d.is_empty()).await);
    assert!(
        server
            .snapshot()
            .iter()
            .all(|d| matches!(d, Delivery::Refused(WebhookError::BadSignature(_))))
    );
    // Not acknowledged: the sandbox keeps it pending / retries.
    assert!(
        env.sandbox
            .notifications_sent()
            .iter()
            .all(|r| r.outcome != DeliveryOutcome::Acknowledged)
    );
    env.sandbox.shutdown().await;
}

#[tokio::test]
async fn tampered_stale_and_oversized_bodies_are_refused() {
    let env = env().await;
    let server = NotifyServer::start(webhook_receiver(env.platform_key.clone())).await;
    let mut req = card_initiate(cards::VISA_SUCCESS, 100, CaptureMethod::Automatic);
    req.notify_url = Some(server.url.clone());
    assert!(matches!(
        env.client.initiate(&req).await,
        GatewayOutcome::Success(_)
    ));
    assert!(server.wait_for(WAIT, |d| !verified(d).is_empty()).await);
    let record = env
        .sandbox
        .notifications_sent()
        .into_iter()
        .next()
        .expect("record");
    let rx = webhook_receiver(env.platform_key.clone());
    let now = time::OffsetDateTime::now_utc();

    // The genuine delivery passes again (replays within the window are the
    // engine's dedupe problem, not a signature problem).
    assert!(
        rx.handle_parts(Some(&record.signature), record.body.as_bytes(), now)
            .is_ok()
    );

    // Tampered amount.
    let tampered = record.body.replacen("\"amount\":100", "\"amount\":900", 1);
    assert_ne!(tampered, record.body);
    let err = rx
        .handle_parts(Some(&record.signature), tampered.as_bytes(), now)
        .unwrap_err();
    assert!(matches!(err, WebhookError::BadSignature(_)), "{err:?}");
    assert_eq!(err.http_status(), 401);
    assert_eq!(err.response_body(), payorch_paykka::webhook::reject_body());

    // No signature.
    let err = rx
        .handle_parts(None, record.body.as_bytes(), now)
        .unwrap_err();
    assert_eq!(err, WebhookError::MissingSignature);

    // Stale: delivered 10 minutes later than signed.
    let err = rx
        .handle_parts(
            Some(&record.signature),
            record.body.as_bytes(),
            now + time::Duration::minutes(10),
        )
        .unwrap_err();
    assert!(
        matches!(err, WebhookError::StaleTimestamp { .. }),
        "{err:?}"
    );
    // ... accepted with a wider window.
    let wide = WebhookReceiver::new(
        env.platform_key.clone(),
        WebhookConfig {
            timestamp_tolerance_ms: 15 * 60 * 1000,
            ..WebhookConfig::default()
        },
    );
    assert!(
        wide.handle_parts(
            Some(&record.signature),
            record.body.as_bytes(),
            now + time::Duration::minutes(10)
        )
        .is_ok()
    );

    // Oversized: refused before any parsing or crypto.
    let mut big = record.body.clone().into_bytes();
    big.resize(64 * 1024 + 1, b' ');
    let err = rx
        .handle_parts(Some(&record.signature), &big, now)
        .unwrap_err();
    assert_eq!(
        err,
        WebhookError::BodyTooLarge {
            limit: 64 * 1024,
            actual: 64 * 1024 + 1
        }
    );
    assert_eq!(err.http_status(), 413);
    env.sandbox.shutdown().await;
}
