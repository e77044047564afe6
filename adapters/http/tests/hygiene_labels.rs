//! Input hygiene (issue 17), the parts that need no log capture: the
//! stricter card checks still let a valid card through, and metric labels
//! take HTTP methods from a fixed set.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;

#[tokio::test]
async fn a_valid_card_still_goes_through_after_the_stricter_checks() {
    let h = harness();
    let r = h
        .post_a("/v1/payments", "hygiene-ok", &card_payment("MANUAL"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn metric_labels_take_methods_from_a_fixed_set() {
    let h = harness();
    let long = "X".repeat(8 * 1024);
    let mut methods: Vec<String> = (0..50).map(|i| format!("RANDOM{i}")).collect();
    methods.push(long.clone());
    for m in &methods {
        let req = Request::builder()
            .method(m.as_str())
            .uri("/v1/payments")
            .header("authorization", format!("Bearer {KEY_A}"))
            .body(Body::empty())
            .expect("request");
        let r = send(&h.router, req).await;
        assert!(r.status.is_client_error(), "{m}: {}", r.status);
    }
    let text = h.metrics.render();
    assert!(!text.contains("RANDOM"), "{text}");
    assert!(!text.contains(&long[..64]), "long method stored");
    assert!(text.contains("method=\"OTHER\""), "{text}");
    let series = text
        .lines()
        .filter(|l| l.starts_with("payorch_http_requests_total{"))
        .count();
    assert!(series <= 3, "{series} series for one route:\n{text}");
}
