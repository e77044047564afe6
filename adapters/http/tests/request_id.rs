//! Request ids (issue 15 point 5): `X-Request-Id` accepted or generated,
//! echoed on every response, in every error body and (tests/request_id_logs.rs)
//! every log line of the request, and carried into the recorded events as the correlation id.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use payorch_engine::store::{EventStore, Position};

fn with_id(mut req: Request<Body>, id: &str) -> Request<Body> {
    req.headers_mut()
        .insert("x-request-id", id.parse().expect("header value"));
    req
}

fn echoed(r: &Resp) -> String {
    r.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_callers_id_is_echoed_and_in_the_events_as_correlation_id() {
    let h = harness();
    let id = "0192f0a4-7d2e-7c3b-9a55-5d1f8f6a0b11";
    let r = send(
        &h.router,
        with_id(
            post(
                "/v1/payments",
                Some(KEY_A),
                Some("rid-1"),
                &card_payment("MANUAL"),
            ),
            id,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(echoed(&r), id);
    let events = h.store.read_all(Position(0), 100).await.expect("read");
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(
            e.metadata.correlation_id.map(|u| u.to_string()).as_deref(),
            Some(id),
            "{}",
            e.event_type
        );
    }

    // A non-UUID id is echoed as given; the events get a generated UUID.
    let r = send(
        &h.router,
        with_id(
            post(
                "/v1/payments",
                Some(KEY_A),
                Some("rid-2"),
                &card_payment("MANUAL"),
            ),
            "req_shop-42",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(echoed(&r), "req_shop-42");
    let later = h.store.read_all(Position(0), 100).await.expect("read");
    let new: Vec<_> = later.iter().skip(events.len()).collect();
    assert!(!new.is_empty());
    let corr = new[0].metadata.correlation_id.expect("correlation id");
    assert!(new.iter().all(|e| e.metadata.correlation_id == Some(corr)));
    assert_ne!(corr.to_string(), id);
}

#[tokio::test]
async fn every_response_has_one_and_every_error_body_names_it() {
    let h = harness();
    // Generated when absent (a UUID), on success and on errors alike.
    let ok = send(&h.router, get("/healthz", None)).await;
    let generated = echoed(&ok);
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated:?}");

    let cases: Vec<(&str, Request<Body>, StatusCode, &str, &str)> = vec![
        (
            "no api key",
            get("/v1/payments/x", None),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication_error",
        ),
        (
            "unknown route",
            get("/v1/nowhere", Some(KEY_A)),
            StatusCode::NOT_FOUND,
            "route_not_found",
            "invalid_request_error",
        ),
        (
            "malformed json",
            post("/v1/payments", Some(KEY_A), Some("e-1"), "{\"amount\":"),
            StatusCode::BAD_REQUEST,
            "",
            "invalid_request_error",
        ),
        (
            "missing idempotency key",
            post("/v1/payments", Some(KEY_A), None, &card_payment("MANUAL")),
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "idempotency_error",
        ),
    ];
    for (i, (case, req, status, code, kind)) in cases.into_iter().enumerate() {
        let rid = format!("case-{i}");
        let r = send(&h.router, with_id(req, &rid)).await;
        assert_eq!(r.status, status, "{case}: {}", r.text);
        assert_eq!(echoed(&r), rid, "{case}");
        let e = &r.body["error"];
        assert_eq!(e["request_id"], rid.as_str(), "{case}: {}", r.text);
        assert_eq!(e["type"], kind, "{case}: {}", r.text);
        if !code.is_empty() {
            assert_eq!(e["code"], code, "{case}: {}", r.text);
        }
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        // Content-Length, if any, matches the rewritten body.
        if let Some(len) = r.headers.get("content-length") {
            assert_eq!(len.to_str().unwrap(), r.text.len().to_string(), "{case}");
        }
    }

    // An id with a control character or too long is replaced.
    let r = send(&h.router, with_id(get("/healthz", None), &"y".repeat(500))).await;
    assert!(uuid::Uuid::parse_str(&echoed(&r)).is_ok());
}
