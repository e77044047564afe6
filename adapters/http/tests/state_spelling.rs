//! One spelling of every state on every surface (issue 15 point 2): the
//! API's `status`, 409 messages, serialization and `Display` all say
//! `partially_refunded`, never `PartiallyRefunded`.

mod common;

use axum::http::StatusCode;
use common::*;
use payorch_engine::agreement::AgreementPhase;
use payorch_engine::checkout::CheckoutPhase;
use payorch_engine::order::Phase;

fn is_snake(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[test]
fn display_and_serialization_agree_and_are_snake_case() {
    let mut all: Vec<(String, serde_json::Value)> = Phase::ALL
        .iter()
        .map(|p| (p.to_string(), serde_json::to_value(p).unwrap()))
        .collect();
    for p in [
        AgreementPhase::New,
        AgreementPhase::Active,
        AgreementPhase::Cancelling,
        AgreementPhase::Cancelled,
    ] {
        all.push((p.to_string(), serde_json::to_value(p).unwrap()));
    }
    for p in [
        CheckoutPhase::New,
        CheckoutPhase::Requested,
        CheckoutPhase::Open,
        CheckoutPhase::Completed,
        CheckoutPhase::Expired,
        CheckoutPhase::Cancelled,
    ] {
        all.push((p.to_string(), serde_json::to_value(p).unwrap()));
    }
    for (shown, serialized) in all {
        assert!(is_snake(&shown), "{shown}");
        assert_eq!(serialized, shown.as_str());
    }
    assert_eq!(Phase::PartiallyRefunded.to_string(), "partially_refunded");
}

#[tokio::test]
async fn a_409_names_the_state_as_the_api_shows_it() {
    let h = harness();
    let id = create_manual(&h, "spell-1").await;
    let r = h
        .post_a(&format!("/v1/payments/{id}/capture"), "spell-cap", "{}")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h
        .post_a(
            &format!("/v1/payments/{id}/refunds"),
            "spell-ref",
            r#"{"amount":{"minor":100,"currency":"EUR"}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "partially_refunded", "{}", r.text);
    let r = h
        .post_a(&format!("/v1/payments/{id}/void"), "spell-void", "")
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let msg = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("state partially_refunded"), "{msg}");
    assert!(!msg.contains("PartiallyRefunded"), "{msg}");
}
