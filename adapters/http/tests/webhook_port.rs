//! What the notification endpoints hand the engine's webhook verification
//! port: the `signature` header as received (absent: `None`; not UTF-8: a
//! value that cannot verify), the raw body byte for byte, and the time of
//! the engine's clock (not the wall clock).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use payorch_engine::gateway::fake::FakeGateway;
use payorch_engine::orchestrator::{Engine, EngineConfig};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::testing::ManualClock;
use payorch_engine::webhook::{WebhookRejection, WebhookVerifier};
use payorch_http::{ApiKeys, AppState};
use payorch_schemas::paykka::Notification;
use time::OffsetDateTime;
use tower::ServiceExt;

type Call = (Option<String>, Vec<u8>, OffsetDateTime);

/// Records every call and refuses it.
#[derive(Default)]
struct Recording(Mutex<Vec<Call>>);

impl WebhookVerifier for Recording {
    fn verify(
        &self,
        signature: Option<&str>,
        raw_body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Notification, WebhookRejection> {
        self.0
            .lock()
            .expect("lock")
            .push((signature.map(str::to_owned), raw_body.to_vec(), now));
        Err(WebhookRejection::Unauthenticated("recorded".into()))
    }
}

#[tokio::test]
async fn the_port_gets_the_signature_header_the_raw_body_and_the_engine_clock() {
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let store = Arc::new(InMemoryStore::new());
    let engine = Arc::new(Engine::new(
        store.clone(),
        store,
        Arc::new(FakeGateway::new()),
        clock.clone(),
        EngineConfig::default(),
    ));
    let verifier = Arc::new(Recording::default());
    let router = payorch_http::router(AppState::new(engine, ApiKeys::new(), verifier.clone()));

    // Not valid JSON on purpose: the port gets the bytes, not a parse.
    let body = b" {\"merchant_id\": \"1\",  \"x\":1 ";
    let requests = [
        Some(HeaderValue::from_static("sig-1")),
        None,
        Some(HeaderValue::from_bytes(b"\xff\xfe").expect("opaque header value")),
    ];
    for signature in requests {
        let mut req =
            Request::post("/webhooks/paykka/payments").header("content-type", "application/json");
        if let Some(s) = signature {
            req = req.header("signature", s);
        }
        let resp = router
            .clone()
            .oneshot(req.body(Body::from(body.to_vec())).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }

    let calls = verifier.0.lock().expect("lock").clone();
    // The engine's clock (2026-01-01), not the wall clock.
    let now = payorch_engine::store::Clock::now(&*clock);
    assert_eq!(
        calls,
        vec![
            (Some("sig-1".to_owned()), body.to_vec(), now),
            (None, body.to_vec(), now),
            (Some("\u{fffd}".to_owned()), body.to_vec(), now),
        ]
    );
}
