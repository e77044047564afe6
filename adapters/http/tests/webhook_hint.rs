//! A notification that fails verification under a report-only verifier
//! (`WebhookRejection::Unverified`) is a hint: payorch asks PayKKa about
//! the order and records PayKKa's answer, never the body's claims.

mod common;

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
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
        headers: &HeaderMap,
        raw_body: &[u8],
    ) -> Result<Notification, WebhookRejection> {
        match TestVerifier.verify(headers, raw_body) {
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
