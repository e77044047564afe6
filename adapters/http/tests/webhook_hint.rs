//! A notification that fails verification under a report-only verifier
//! (`WebhookRejection::Unverified`) is a hint: payorch asks PayKKa about
//! the order and records PayKKa's answer, never the body's claims.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::*;
use payorch_http::{ApiKeys, AppState, WebhookRejection, WebhookVerifier, hash_api_key};
use payorch_schemas::paykka::Notification;
use serde_json::json;

/// The test verifier, report-only: a body it cannot authenticate becomes
/// a hint instead of a 401.
struct ReportOnly;

impl WebhookVerifier for ReportOnly {
    fn verify(
        &self,
        signature: Option<&str>,
        raw_body: &[u8],
        now: time::OffsetDateTime,
    ) -> Result<Notification, WebhookRejection> {
        match TestVerifier.verify(signature, raw_body, now) {
            Err(WebhookRejection::Unauthenticated(reason)) => {
                let n = Notification::from_slice(raw_body)
                    .map_err(|e| WebhookRejection::Malformed(e.to_string()))?;
                Err(WebhookRejection::Unverified {
                    notification: Box::new(n),
                    reason,
                })
            }
            other => other,
        }
    }
}

fn forged(trans_id: &str, status: &str, amount: i64) -> String {
    json!({
        "notify_type": "PAYMENT.SUCCESS", "timestamp": now_ms(), "merchant_id": MERCHANT_A,
        "trans_id": trans_id, "order_id": "GW-FORGED", "status": status,
        "amount": amount, "currency": "EUR", "error_code": "0000"
    })
    .to_string()
}

#[tokio::test]
async fn an_unverified_notification_only_makes_payorch_ask_paykka() {
    let h = harness();
    let keys = ApiKeys::new()
        .with_hashed_key(MERCHANT_A, &hash_api_key(KEY_A))
        .expect("valid hash");
    let router = payorch_http::router(AppState::new(h.engine.clone(), keys, Arc::new(ReportOnly)));

    let id = create_manual(&h, "hint-1").await;
    let payment = h.get_a(&format!("/v1/payments/{id}")).await;
    let trans_id = payment.body["trans_id"]
        .as_str()
        .expect("trans_id")
        .to_owned();
    let events = h.get_a(&format!("/v1/payments/{id}/events")).await.body["events"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let queries = |h: &Harness| h.gateway.calls().iter().filter(|c| *c == "query").count();
    assert_eq!(queries(&h), 0);

    // A forged "captured 99,999" with a bad signature: PayKKa is asked, it
    // still holds an authorisation, so nothing changes.
    let body = forged(&trans_id, "SUCCESS", 99_999);
    let r = send(&router, webhook("/webhooks/paykka/payments", &body, "bad")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(queries(&h), 1, "{:?}", h.gateway.calls());
    let v = h.get_a(&format!("/v1/payments/{id}")).await;
    assert_eq!(v.body["status"], "authorised", "{}", v.text);
    let after = h.get_a(&format!("/v1/payments/{id}/events")).await;
    let n = after.body["events"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(n, events, "the forged claim was recorded: {}", after.text);
    assert!(!after.text.contains("99999"), "{}", after.text);

    // PayKKa captured it meanwhile: the next unverified hint makes payorch
    // learn that from PayKKa's answer (its amount, not the body's).
    h.gateway.set_status(&trans_id, "SUCCESS");
    let body = forged(&trans_id, "SUCCESS", 99_999);
    let r = send(&router, webhook("/webhooks/paykka/payments", &body, "bad")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(queries(&h), 2);
    let v = h.get_a(&format!("/v1/payments/{id}")).await;
    assert_eq!(v.body["status"], "captured", "{}", v.text);
    assert!(!v.text.contains("99999"), "{}", v.text);

    // A hint for an order that is not ours is acknowledged without a query.
    let body = forged("not-one-of-ours", "SUCCESS", 1);
    let r = send(&router, webhook("/webhooks/paykka/payments", &body, "bad")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(queries(&h), 2);
}

#[tokio::test]
async fn a_notification_contradicting_its_order_is_refused_and_counted() {
    let h = harness();
    // A pending payment, so a genuine notification would change it.
    h.gateway.script(
        payorch_engine::gateway::fake::Op::Initiate,
        payorch_engine::gateway::fake::Step::Return(
            payorch_engine::gateway::GatewayOutcome::Unknown {
                reason: "timeout".into(),
            },
        ),
    );
    let r = h
        .post_a("/v1/payments", "contra-1", &card_payment("MANUAL"))
        .await;
    let id = r.body["id"].as_str().expect("id").to_owned();
    let trans_id = r.body["trans_id"].as_str().expect("trans_id").to_owned();
    let events = |h: &Harness| {
        let id = id.clone();
        let router = h.router.clone();
        async move {
            let r = send(
                &router,
                get(&format!("/v1/payments/{id}/events"), Some(KEY_A)),
            )
            .await;
            r.body["events"].as_array().map(Vec::len).unwrap_or(0)
        }
    };
    let before = events(&h).await;
    let notification = |merchant: &str, currency: &str, amount: i64| {
        json!({
            "notify_type": "PAYMENT.AUTHORIZATION", "timestamp": now_ms(),
            "merchant_id": merchant, "trans_id": trans_id, "order_id": "GW00000000000000042",
            "status": "AUTHORIZED", "amount": amount, "currency": currency,
            "error_code": "0000"
        })
        .to_string()
    };
    for (case, body) in [
        ("another merchant", notification(MERCHANT_B, "EUR", 1000)),
        ("another currency", notification(MERCHANT_A, "USD", 1000)),
        ("another amount", notification(MERCHANT_A, "EUR", 100_000)),
    ] {
        let r = send(
            &h.router,
            webhook("/webhooks/paykka/payments", &body, &sign(body.as_bytes())),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{case}: {}", r.text);
        assert_eq!(events(&h).await, before, "{case}: recorded");
    }
    let metrics = h.metrics.render();
    assert!(
        metrics.contains("result=\"contradicts_order\"} 3"),
        "{metrics}"
    );
    // The genuine one still applies.
    let body = notification(MERCHANT_A, "EUR", 1000);
    let r = send(
        &h.router,
        webhook("/webhooks/paykka/payments", &body, &sign(body.as_bytes())),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = h.get_a(&format!("/v1/payments/{id}")).await;
    assert_eq!(v.body["status"], "authorised", "{}", v.text);
}
