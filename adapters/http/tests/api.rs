//! The merchant API end to end through the router (tower `oneshot`), on
//! the engine with an in-memory store and the FakeGateway.

mod common;

use axum::http::StatusCode;
use common::*;
use payorch_engine::gateway::fake::{Op, Step};
use payorch_engine::gateway::{GatewayOutcome, payment_response};
use payorch_schemas::{Currency, Money};
use serde_json::json;

#[tokio::test]
async fn create_get_capture_refund_events() {
    let h = harness();
    let id = create_manual(&h, "create-1").await;

    let r = h.get_a(&format!("/v1/payments/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "authorised");
    assert_eq!(r.body["card"]["last4"], "1111");
    assert!(!r.text.contains("4111111111111111"));
    // The CVV must not come back: no `cvv` field and no string equal to it
    // (a plain substring check would trip on uuids and timestamps).
    assert!(!r.text.contains("\"cvv\""), "{}", r.text);
    assert!(
        !json_strings(&r.body).iter().any(|s| s == "737"),
        "{}",
        r.text
    );

    let r = h
        .post_a(
            &format!("/v1/payments/{id}/capture"),
            "cap-1",
            r#"{"amount":{"minor":600,"currency":"EUR"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["captured"]["minor"], 600);
    assert_eq!(r.body["captures"][0]["status"], "succeeded");

    let r = h
        .post_a(
            &format!("/v1/payments/{id}/refunds"),
            "ref-1",
            r#"{"amount":{"minor":200,"currency":"EUR"},"reason":"REQUESTED_BY_CUSTOMER"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["refunded"]["minor"], 200);
    assert_eq!(r.body["refunds"][0]["status"], "succeeded");

    let r = h.get_a(&format!("/v1/payments/{id}/events")).await;
    assert_eq!(r.status, StatusCode::OK);
    let types: Vec<&str> = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or(""))
        .collect();
    assert!(types.len() >= 5, "{types:?}");
    assert!(!r.text.contains("4111111111111111"));
}

#[tokio::test]
async fn automatic_capture_and_void() {
    let h = harness();
    let r = h
        .post_a("/v1/payments", "auto-1", &card_payment("AUTOMATIC"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["status"], "captured");

    let id = create_manual(&h, "manual-void").await;
    let r = h
        .post_a(&format!("/v1/payments/{id}/void"), "void-1", "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "voided");

    // Capturing a voided payment is a state conflict.
    let r = h
        .post_a(&format!("/v1/payments/{id}/capture"), "cap-v", "{}")
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "invalid_state");
}

#[tokio::test]
async fn over_refund_is_unprocessable() {
    let h = harness();
    let r = h
        .post_a("/v1/payments", "auto-2", &card_payment("AUTOMATIC"))
        .await;
    let id = r.body["id"].as_str().expect("id").to_owned();
    let r = h
        .post_a(
            &format!("/v1/payments/{id}/refunds"),
            "ref-big",
            r#"{"amount":{"minor":5000,"currency":"EUR"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "amount_exceeds_available");
}

#[tokio::test]
async fn token_and_wallet_payments() {
    let h = harness();
    let r = h.post_a("/v1/payments", "tok-1", &json!({
                "amount": {"minor": 500, "currency": "USD"},
                "payment_method": {"type": "token", "token": "TK00000000000000001", "shopper_reference": "shopper-1"}
            })
            .to_string())
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = h.post_a("/v1/payments", "wallet-1", &json!({
                "amount": {"minor": 500, "currency": "USD"},
                "payment_method": {"type": "wallet", "wallet": "GOOGLE_PAY", "token_data": "{\"sig\":\"x\"}"}
            })
            .to_string())
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = h
        .post_a(
            "/v1/payments",
            "wallet-2",
            &json!({
                "amount": {"minor": 500, "currency": "USD"},
                "payment_method": {"type": "wallet", "wallet": "PAYPAL", "token_data": "x"}
            })
            .to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("payment_method.wallet")
    );
}

#[tokio::test]
async fn recurring_agreement_charge_get_cancel() {
    let h = harness();
    let r = h
        .post_a(
            "/v1/payments",
            "rec-1",
            &json!({
                "amount": {"minor": 999, "currency": "EUR"},
                "payment_type": "RECURRING",
                "payment_method": {"type": "card", "number": "4111111111111111",
                    "exp_month": "07", "exp_year": "2031", "cvv": "737"},
                "store_token": {"purpose": "SUBSCRIPTION", "shopper_reference": "shopper-9"},
                "return_url": "https://shop.example/return"
            })
            .to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.body["token"].is_string(), "{}", r.text);
    // The agreement id is the first payment's id.
    let agreement = r.body["id"].as_str().expect("id").to_owned();

    let r = h
        .get_a(&format!("/v1/recurring-agreements/{agreement}"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "active");

    let r = h
        .post_a(
            &format!("/v1/recurring-agreements/{agreement}/charges"),
            "charge-1",
            r#"{"amount":{"minor":999,"currency":"EUR"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["payment_type"], "RECURRING");
    assert_eq!(r.body["agreement_id"], agreement.as_str());

    // Another merchant cannot see it.
    let r = send(
        &h.router,
        get(
            &format!("/v1/recurring-agreements/{agreement}"),
            Some(KEY_B),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = h
        .post_a(
            &format!("/v1/recurring-agreements/{agreement}/cancel"),
            "cancel-1",
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");

    let r = h
        .post_a(
            &format!("/v1/recurring-agreements/{agreement}/charges"),
            "charge-2",
            r#"{"amount":{"minor":999,"currency":"EUR"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
}

#[tokio::test]
async fn checkout_sessions() {
    let h = harness();
    let r = h
        .post_a(
            "/v1/checkout-sessions",
            "cs-1",
            r#"{"amount":{"minor":1500,"currency":"EUR"},"return_url":"https://shop.example/r"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["status"], "open");
    assert!(r.body["session_url"].is_string());
    let id = r.body["id"].as_str().expect("id").to_owned();

    let r = h.get_a(&format!("/v1/checkout-sessions/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], id.as_str());
    let r = send(
        &h.router,
        get(&format!("/v1/checkout-sessions/{id}"), Some(KEY_B)),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = h
        .post_a(
            "/v1/checkout-sessions",
            "cs-2",
            r#"{"amount":{"minor":1500,"currency":"EUR"},"session_mode":"HOST"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("session_mode")
    );
}

#[tokio::test]
async fn tokens_and_apple_pay() {
    let h = harness();
    let r = h
        .post_a(
            "/v1/tokens/query",
            "tq-1",
            r#"{"shopper_reference":"shopper-1"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["tokens"].is_array());
    let r = h
        .post_a(
            "/v1/tokens/remove",
            "tr-1",
            r#"{"token":"TK1","shopper_reference":"shopper-1"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["removed"], true);
    let r = h
        .post_a(
            "/v1/apple-pay/sessions",
            "ap-1",
            r#"{"domain_name":"shop.example","display_name":"Shop"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["merchant_session"]["merchantSessionIdentifier"],
        "fake"
    );
    assert!(h.gateway.calls().contains(&"apple_pay_session".to_owned()));
}

#[tokio::test]
async fn unknown_gateway_outcome_is_202_with_pending_view() {
    let h = harness();
    h.gateway.script(
        Op::Initiate,
        Step::Return(GatewayOutcome::Unknown {
            reason: "timeout".into(),
        }),
    );
    let r = h
        .post_a("/v1/payments", "unk-1", &card_payment("MANUAL"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["status"], "authorisation_unknown");
}

#[tokio::test]
async fn auth_is_required_and_scoped() {
    let h = harness();
    let r = send(
        &h.router,
        get("/v1/payments/00000000-0000-0000-0000-000000000000", None),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = send(
        &h.router,
        get(
            "/v1/payments/00000000-0000-0000-0000-000000000000",
            Some("sk_wrong"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // 401 comes before the missing idempotency key.
    let r = send(
        &h.router,
        post("/v1/payments", None, None, &card_payment("MANUAL")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let id = create_manual(&h, "scoped").await;
    let r = send(&h.router, get(&format!("/v1/payments/{id}"), Some(KEY_B))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "not_found");
    let r = send(
        &h.router,
        post(
            &format!("/v1/payments/{id}/capture"),
            Some(KEY_B),
            Some("steal"),
            "{}",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = send(
        &h.router,
        get(&format!("/v1/payments/{id}/events"), Some(KEY_B)),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Nothing was captured by merchant B's attempt.
    let r = h.get_a(&format!("/v1/payments/{id}")).await;
    assert_eq!(r.body["status"], "authorised");
    let r = h.get_a("/v1/payments/not-a-uuid").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_replay_returns_the_stored_response_not_the_current_state() {
    let h = harness();
    let body = card_payment("MANUAL");
    let first = h.post_a("/v1/payments", "K-stored", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.body["status"], "authorised");
    let id = first.body["id"].as_str().expect("id").to_owned();
    let c = h
        .post_a(&format!("/v1/payments/{id}/capture"), "K-capture", "{}")
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    assert_eq!(c.body["status"], "captured");

    // The same key and body: the original answer, byte for byte the same
    // JSON, although the payment is captured now.
    let again = h.post_a("/v1/payments", "K-stored", &body).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.body, first.body);
    assert_eq!(again.body["status"], "authorised");
    let now = h.get_a(&format!("/v1/payments/{id}")).await;
    assert_eq!(now.body["status"], "captured");
    // The capture replays its own answer too, even after a refund.
    let r = h
        .post_a(
            &format!("/v1/payments/{id}/refunds"),
            "K-refund",
            r#"{"amount":{"minor":100,"currency":"EUR"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let c2 = h
        .post_a(&format!("/v1/payments/{id}/capture"), "K-capture", "{}")
        .await;
    assert_eq!(c2.status, c.status);
    assert_eq!(c2.body, c.body);
    assert_eq!(
        h.gateway
            .calls()
            .iter()
            .filter(|c| *c == "initiate" || *c == "capture")
            .count(),
        2,
        "replays never call PayKKa"
    );

    // The same key with another body: 409 naming the key.
    let r = h
        .post_a("/v1/payments", "K-stored", &card_payment("AUTOMATIC"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "idempotency_key_reused");
    let msg = r.body["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("\"K-stored\""), "{msg}");
    // ... and on another route (key space is per merchant).
    let r = h
        .post_a(&format!("/v1/payments/{id}/void"), "K-stored", "{}")
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("K-stored")
    );
}

#[tokio::test]
async fn idempotency_replay_conflict_and_missing_key() {
    let h = harness();
    let body = card_payment("MANUAL");
    let first = h.post_a("/v1/payments", "idem-1", &body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = h.post_a("/v1/payments", "idem-1", &body).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body);
    assert_eq!(
        h.gateway
            .calls()
            .iter()
            .filter(|c| *c == "initiate")
            .count(),
        1,
        "a replay must not call PayKKa again"
    );

    let other = card_payment("AUTOMATIC");
    let r = h.post_a("/v1/payments", "idem-1", &other).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "idempotency_key_reused");

    // Keys are per merchant: B may use the same key.
    let r = send(
        &h.router,
        post("/v1/payments", Some(KEY_B), Some("idem-1"), &body),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_ne!(r.body["id"], first.body["id"]);

    // Capture replay.
    let id = first.body["id"].as_str().expect("id");
    let cap = r#"{"amount":{"minor":300,"currency":"EUR"}}"#;
    let c1 = h
        .post_a(&format!("/v1/payments/{id}/capture"), "c-1", cap)
        .await;
    let c2 = h
        .post_a(&format!("/v1/payments/{id}/capture"), "c-1", cap)
        .await;
    assert_eq!(c1.status, StatusCode::OK);
    assert_eq!(c2.status, c1.status);
    assert_eq!(c2.body, c1.body);
    assert_eq!(c2.body["captures"].as_array().map(Vec::len), Some(1));
    let r = h
        .post_a(
            &format!("/v1/payments/{id}/capture"),
            "c-1",
            r#"{"amount":{"minor":100,"currency":"EUR"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = send(&h.router, post("/v1/payments", Some(KEY_A), None, &body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "missing_idempotency_key");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Idempotency-Key")
    );
}

#[tokio::test]
async fn body_limit_and_malformed_json() {
    let h = harness();
    let big = format!(
        r#"{{"amount":{{"minor":1,"currency":"EUR"}},"return_url":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let r = h.post_a("/v1/payments", "big", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "body_too_large");

    let r = h.post_a("/v1/payments", "bad", "{\"amount\": ").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "malformed_json");

    let r = h
        .post_a(
            "/v1/payments",
            "bad2",
            r#"{"amount":{"minor":1,"currency":"EUR"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "invalid_field");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("payment_method"),
        "{}",
        r.text
    );

    let r = h.post_a("/v1/payments", "bad3", r#"{"amount":{"minor":1,"currency":"XYZ"},"payment_method":{"type":"token","token":"t","shopper_reference":"s"}}"#)
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    let r = h.post_a("/v1/payments", "bad4", "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "malformed_json");

    let r = h.get_a("/v1/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"]["code"], "route_not_found");
    // GET /v1/payments lists (issue 15); GET of a POST-only route is 405.
    let r = h.get_a("/v1/tokens/query").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn store_down_is_503() {
    let h = harness();
    let id = create_manual(&h, "before-down").await;
    h.store.set_down(true);
    let r = h.get_a(&format!("/v1/payments/{id}")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["error"]["code"], "store_unavailable");
    let r = send(&h.router, get("/healthz", None)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["checks"]["store"]["status"], "unavailable");
    h.store.set_down(false);
    let r = send(&h.router, get("/healthz", None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn healthz_both_ways() {
    let h = harness();
    let r = send(&h.router, get("/healthz", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ok");
    assert_eq!(r.body["checks"]["store"]["status"], "ok");
    assert_eq!(r.body["checks"]["broker"]["status"], "ok");
    h.broker
        .ok
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = send(&h.router, get("/healthz", None)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["status"], "unavailable");
    assert_eq!(r.body["checks"]["broker"]["status"], "unavailable");
    assert_eq!(r.body["checks"]["store"]["status"], "ok");
}

#[tokio::test]
async fn metrics_expose_the_series() {
    let h = harness();
    let id = create_manual(&h, "m-1").await;
    h.get_a(&format!("/v1/payments/{id}")).await;
    send(&h.router, get(&format!("/v1/payments/{id}"), Some(KEY_B))).await;
    h.metrics.set_relay_lag(3);
    h.metrics.set_reconciler_backlog(1);
    let r = send(&h.router, get("/metrics", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain")
    );
    let t = &r.text;
    assert!(
        t.contains(
            r#"payorch_http_requests_total{method="POST",route="/v1/payments",status="201"} 1"#
        ),
        "{t}"
    );
    assert!(
        t.contains(
            r#"payorch_http_requests_total{method="GET",route="/v1/payments/{id}",status="200"} 1"#
        ),
        "{t}"
    );
    assert!(
        t.contains(
            r#"payorch_http_requests_total{method="GET",route="/v1/payments/{id}",status="404"} 1"#
        ),
        "{t}"
    );
    assert!(
        t.contains(r#"payorch_paykka_calls_total{operation="initiate",outcome="success"} 1"#),
        "{t}"
    );
    assert!(
        t.contains(r#"payorch_paykka_call_duration_seconds_count{operation="initiate"} 1"#),
        "{t}"
    );
    assert!(t.contains("payorch_relay_lag_events 3"), "{t}");
    assert!(t.contains("payorch_reconciler_backlog_orders 1"), "{t}");
}

#[tokio::test]
async fn pending_payment_completed_by_webhook() {
    let h = harness();
    h.gateway.script(
        Op::Initiate,
        Step::Return(GatewayOutcome::Success(payment_response(
            "PROCESSING",
            "GW00000000000000042",
            Money::new(1000, Currency::new("EUR").expect("EUR")),
        ))),
    );
    let r = h
        .post_a("/v1/payments", "pend-1", &card_payment("MANUAL"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["status"], "authorisation_pending");
    let id = r.body["id"].as_str().expect("id").to_owned();
    let trans_id = r.body["trans_id"].as_str().expect("trans_id").to_owned();
    let events_before = event_count(&h, &id).await;

    let notification = json!({
        "notify_type": "PAYMENT.AUTHORIZATION",
        "timestamp": now_ms(),
        "merchant_id": MERCHANT_A,
        "trans_id": trans_id,
        "order_id": "GW00000000000000042",
        "status": "AUTHORIZED",
        "amount": 1000,
        "currency": "EUR",
        "error_code": "0000"
    })
    .to_string();

    // Bad signature: 401, PayKKa's body, nothing recorded.
    let r = send(
        &h.router,
        webhook("/webhooks/paykka/payments", &notification, "deadbeef"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.text,
        r#"{"ret_code":"401","ret_msg":"Invalid signature"}"#
    );
    assert_eq!(event_count(&h, &id).await, events_before);

    // Stale timestamp, correctly signed: 401, nothing recorded.
    let stale = {
        let mut v: serde_json::Value = serde_json::from_str(&notification).expect("json");
        v["timestamp"] = json!(now_ms() - 3_600_000);
        v.to_string()
    };
    let r = send(
        &h.router,
        webhook("/webhooks/paykka/payments", &stale, &sign(stale.as_bytes())),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(event_count(&h, &id).await, events_before);

    // Good: 200 + order updated.
    let sig = sign(notification.as_bytes());
    let r = send(
        &h.router,
        webhook("/webhooks/paykka/payments", &notification, &sig),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.text, r#"{"ret_code":"000000","ret_msg":"Success"}"#);
    let v = h.get_a(&format!("/v1/payments/{id}")).await;
    assert_eq!(v.body["status"], "authorised", "{}", v.text);
    let after = event_count(&h, &id).await;
    assert!(after > events_before);

    // Duplicate: 200, no new events.
    let r = send(
        &h.router,
        webhook("/webhooks/paykka/payments", &notification, &sig),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(event_count(&h, &id).await, after);

    // Storage down: 503 so PayKKa redelivers.
    h.store.set_down(true);
    let r = send(
        &h.router,
        webhook("/webhooks/paykka/payments", &notification, &sig),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    h.store.set_down(false);

    // Unknown order: acknowledged.
    let unknown = json!({
        "notify_type": "PAYMENT.SUCCESS", "timestamp": now_ms(),
        "trans_id": "not-one-of-ours", "status": "SUCCESS"
    })
    .to_string();
    let r = send(
        &h.router,
        webhook(
            "/webhooks/paykka/payments",
            &unknown,
            &sign(unknown.as_bytes()),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let m = send(&h.router, get("/metrics", None)).await;
    assert!(
        m.text
            .contains(r#"payorch_webhook_notifications_total{kind="payment",result="applied"} 2"#),
        "{}",
        m.text
    );
    assert!(
        m.text
            .contains(r#"payorch_webhook_notifications_total{kind="payment",result="rejected"} 2"#),
        "{}",
        m.text
    );
}

#[tokio::test]
async fn refund_webhook_and_body_limit() {
    let h = harness();
    let r = h
        .post_a("/v1/payments", "rw-1", &card_payment("AUTOMATIC"))
        .await;
    let id = r.body["id"].as_str().expect("id").to_owned();
    h.gateway
        .script_refund(Step::Return(GatewayOutcome::Unknown {
            reason: "timeout".into(),
        }));
    let r = h
        .post_a(
            &format!("/v1/payments/{id}/refunds"),
            "rw-ref",
            r#"{"amount":{"minor":400,"currency":"EUR"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["refunds"][0]["status"], "outcome_unknown");
    let refund_trans_id = r.body["refunds"][0]["refund_trans_id"]
        .as_str()
        .expect("rt")
        .to_owned();
    let before = event_count(&h, &id).await;

    let n = json!({
        "notify_type": "REFUND.SUCCESS",
        "timestamp": now_ms(),
        "merchant_id": MERCHANT_A,
        "trans_id": refund_trans_id,
        "refund_order_id": "RG00000000000000001",
        "status": "SUCCESS",
        "amount": 400,
        "currency": "EUR"
    })
    .to_string();
    let r = send(
        &h.router,
        webhook("/webhooks/paykka/refunds", &n, &sign(n.as_bytes())),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = h.get_a(&format!("/v1/payments/{id}")).await;
    assert_eq!(v.body["refunds"][0]["status"], "succeeded", "{}", v.text);
    assert_eq!(v.body["refunded"]["minor"], 400);
    assert!(event_count(&h, &id).await > before);

    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70 * 1024));
    let r = send(
        &h.router,
        webhook("/webhooks/paykka/refunds", &big, &sign(big.as_bytes())),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

async fn event_count(h: &Harness, id: &str) -> usize {
    let r = h.get_a(&format!("/v1/payments/{id}/events")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["events"].as_array().map(Vec::len).unwrap_or(0)
}

#[tokio::test]
async fn idempotency_of_charges_and_pass_through_routes() {
    let h = harness();
    let r = h
        .post_a(
            "/v1/payments",
            "rec-idem",
            &json!({
                "amount": {"minor": 999, "currency": "EUR"},
                "payment_type": "RECURRING",
                "payment_method": {"type": "card", "number": "4111111111111111",
                    "exp_month": "07", "exp_year": "2031", "cvv": "737"},
                "store_token": {"purpose": "SUBSCRIPTION", "shopper_reference": "shopper-7"},
                "return_url": "https://shop.example/return"
            })
            .to_string(),
        )
        .await;
    let agreement = r.body["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/recurring-agreements/{agreement}/charges");
    let charge = r#"{"amount":{"minor":500,"currency":"EUR"}}"#;
    let c1 = h.post_a(&path, "ch-1", charge).await;
    assert_eq!(c1.status, StatusCode::CREATED, "{}", c1.text);
    let c2 = h.post_a(&path, "ch-1", charge).await;
    assert_eq!(c2.status, c1.status);
    assert_eq!(c2.body, c1.body);
    let a = h
        .get_a(&format!("/v1/recurring-agreements/{agreement}"))
        .await;
    assert_eq!(
        a.body["charges"].as_array().map(Vec::len),
        Some(1),
        "{}",
        a.text
    );
    let c3 = h
        .post_a(
            &path,
            "ch-1",
            r#"{"amount":{"minor":501,"currency":"EUR"}}"#,
        )
        .await;
    assert_eq!(c3.status, StatusCode::CONFLICT, "{}", c3.text);

    // Pass-through routes replay their stored answer without calling PayKKa.
    let body = r#"{"token":"TK1","shopper_reference":"shopper-7"}"#;
    let t1 = h.post_a("/v1/tokens/remove", "tr-9", body).await;
    let t2 = h.post_a("/v1/tokens/remove", "tr-9", body).await;
    assert_eq!(t1.status, StatusCode::OK);
    assert_eq!(t2.status, StatusCode::OK);
    assert_eq!(t2.body, t1.body);
    assert_eq!(
        h.gateway
            .calls()
            .iter()
            .filter(|c| *c == "token_remove")
            .count(),
        1
    );
    let t3 = h
        .post_a(
            "/v1/tokens/remove",
            "tr-9",
            r#"{"token":"TK2","shopper_reference":"shopper-7"}"#,
        )
        .await;
    assert_eq!(t3.status, StatusCode::CONFLICT);

    // One key space per merchant across routes.
    let q = h
        .post_a(
            "/v1/tokens/query",
            "ch-1",
            r#"{"shopper_reference":"shopper-7"}"#,
        )
        .await;
    assert_eq!(q.status, StatusCode::CONFLICT, "{}", q.text);
    assert_eq!(q.body["error"]["code"], "idempotency_key_reused");

    let cancel = |k: &'static str| {
        post(
            &format!("/v1/recurring-agreements/{agreement}/cancel"),
            Some(KEY_A),
            Some(k),
            "",
        )
    };
    let x1 = send(&h.router, cancel("cx-1")).await;
    let x2 = send(&h.router, cancel("cx-1")).await;
    assert_eq!(x1.status, StatusCode::OK, "{}", x1.text);
    assert_eq!(x2.body, x1.body);
    assert_eq!(
        h.gateway
            .calls()
            .iter()
            .filter(|c| *c == "recurring_cancel")
            .count(),
        1
    );
}

/// Every string value anywhere in a JSON document.
fn json_strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a.iter().flat_map(json_strings).collect(),
        serde_json::Value::Object(o) => o.values().flat_map(json_strings).collect(),
        _ => Vec::new(),
    }
}
