//! Test harness: the engine on an in-memory store, or any store given to
//! [`harness_over`] (switchable to "unavailable") and the scriptable FakeGateway, two merchants with API
//! keys, and a test webhook verifier (SHA-256 over secret + body, plus the
//! timestamp window).

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use payorch_engine::gateway::fake::FakeGateway;
use payorch_engine::orchestrator::{Engine, EngineConfig};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{
    AppendOutcome, AppendRequest, Clock, EventStore, IdempotencyCompletion, IdempotencyRecord,
    IdempotencyStore, Position, RecordedEvent, StoreError, StreamId, SystemClock, Version,
};
use payorch_http::{
    ApiKeys, AppState, HealthCheck, Metrics, WebhookRejection, WebhookVerifier, hash_api_key,
};
use payorch_schemas::paykka::Notification;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tower::ServiceExt;

pub const KEY_A: &str = "sk_test_merchant_a_0123456789abcdef";
pub const KEY_B: &str = "sk_test_merchant_b_0123456789abcdef";
pub const MERCHANT_A: &str = "18356675194960";
pub const MERCHANT_B: &str = "29999999999999";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
const TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// A store the engine can use: events and idempotency records.
pub trait Backend: EventStore + IdempotencyStore {}
impl<T: EventStore + IdempotencyStore> Backend for T {}

/// A store (in memory unless given one) that can be switched off (every
/// call `Unavailable`).
pub struct SwitchableStore {
    inner: Arc<dyn Backend>,
    down: AtomicBool,
}

impl Default for SwitchableStore {
    fn default() -> Self {
        Self::over(Arc::new(InMemoryStore::new()))
    }
}

impl SwitchableStore {
    pub fn over(inner: Arc<dyn Backend>) -> Self {
        SwitchableStore {
            inner,
            down: AtomicBool::new(false),
        }
    }
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("switched off by the test".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl EventStore for SwitchableStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.check()?;
        self.inner.append(request).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check()?;
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check()?;
        self.inner.read_all(after, limit).await
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        self.check()?;
        self.inner.stream_version(stream).await
    }
    async fn list_streams(
        &self,
        stream_type: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, Version)>, StoreError> {
        self.check()?;
        self.inner.list_streams(stream_type, after, limit).await
    }
}

#[async_trait]
impl IdempotencyStore for SwitchableStore {
    async fn get_idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.check()?;
        self.inner.get_idempotency(scope, key).await
    }
    async fn put_idempotency(&self, record: IdempotencyRecord) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_idempotency(record).await
    }
    async fn complete_idempotency(
        &self,
        completion: IdempotencyCompletion,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.complete_idempotency(completion).await
    }
    async fn release_idempotency(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.release_idempotency(scope, key).await
    }
}

/// Signature = hex(SHA-256(secret || body)) in the `signature` header;
/// timestamp within five minutes of now.
pub struct TestVerifier;

pub fn sign(body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(WEBHOOK_SECRET.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

impl WebhookVerifier for TestVerifier {
    fn verify(
        &self,
        signature: Option<&str>,
        raw_body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Notification, WebhookRejection> {
        let sig =
            signature.ok_or_else(|| WebhookRejection::Unauthenticated("no signature".into()))?;
        if sig != sign(raw_body) {
            return Err(WebhookRejection::Unauthenticated("bad signature".into()));
        }
        let n = Notification::from_slice(raw_body)
            .map_err(|e| WebhookRejection::Malformed(e.to_string()))?;
        let ts = match &n {
            Notification::Payment(p) => p.timestamp_ms(),
            Notification::Refund(r) => r.timestamp_ms(),
        }
        .ok_or_else(|| WebhookRejection::Malformed("no timestamp".into()))?;
        let now = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        if (now - ts).abs() > TOLERANCE_MS {
            return Err(WebhookRejection::Unauthenticated("stale timestamp".into()));
        }
        Ok(n)
    }
}

/// A health check the test flips.
pub struct FlagCheck {
    pub name: &'static str,
    pub ok: AtomicBool,
}

#[async_trait]
impl HealthCheck for FlagCheck {
    fn name(&self) -> &str {
        self.name
    }
    async fn check(&self) -> Result<(), String> {
        if self.ok.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(format!("{} unreachable", self.name))
        }
    }
}

pub struct Harness {
    pub state: AppState,
    pub router: axum::Router,
    pub gateway: Arc<FakeGateway>,
    pub store: Arc<SwitchableStore>,
    pub engine: Arc<Engine>,
    pub broker: Arc<FlagCheck>,
    pub metrics: Metrics,
}

pub fn harness() -> Harness {
    harness_over(Arc::new(InMemoryStore::new()))
}

/// The harness on a given store (SQLite, Postgres...).
pub fn harness_over(backend: Arc<dyn Backend>) -> Harness {
    let store = Arc::new(SwitchableStore::over(backend));
    let gateway = Arc::new(FakeGateway::new());
    let metrics = Metrics::new();
    let metered =
        payorch_http::MeteredGateway::new(FakeGatewayRef(gateway.clone()), metrics.clone());
    let config = EngineConfig {
        retry_backoff: std::time::Duration::from_millis(1),
        // As `payorch serve` sets it: PayKKa needs a return_url for
        // shopper-present payments and sessions.
        default_return_url: Some("https://shop.example/return".into()),
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        Arc::new(metered),
        Arc::new(SystemClock),
        config,
    ));
    let keys = ApiKeys::new()
        .with_hashed_key(MERCHANT_A, &hash_api_key(KEY_A))
        .expect("valid hash")
        .with_hashed_key(MERCHANT_B, &hash_api_key(KEY_B))
        .expect("valid hash");
    let broker = Arc::new(FlagCheck {
        name: "broker",
        ok: AtomicBool::new(true),
    });
    let store_check = Arc::new(StoreCheck(store.clone()));
    let indexer = Arc::new(payorch_engine::listing::Indexer::new(
        store.clone(),
        Arc::new(payorch_engine::store::memory::InMemoryStore::default()),
        Arc::new(payorch_engine::listing::InMemoryIndex::new()),
    ));
    let state = AppState::new(engine.clone(), keys, Arc::new(TestVerifier))
        .with_indexer(indexer)
        .with_metrics(metrics.clone())
        .with_health_check(store_check)
        .with_health_check(broker.clone());
    Harness {
        router: payorch_http::router(state.clone()),
        state,
        gateway,
        store,
        engine,
        broker,
        metrics,
    }
}

/// Health of the switchable store.
pub struct StoreCheck(pub Arc<SwitchableStore>);

#[async_trait]
impl HealthCheck for StoreCheck {
    fn name(&self) -> &str {
        "store"
    }
    async fn check(&self) -> Result<(), String> {
        self.0
            .stream_version(&StreamId::new("healthz"))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Lets the test keep a handle on the fake while the engine owns a wrapper.
pub struct FakeGatewayRef(pub Arc<FakeGateway>);

#[async_trait]
impl payorch_engine::gateway::PaymentGateway for FakeGatewayRef {
    async fn initiate(
        &self,
        req: &payorch_schemas::paykka::InitiateRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<payorch_schemas::paykka::PaymentResponse> {
        self.0.initiate(req).await
    }
    async fn query(
        &self,
        req: &payorch_schemas::paykka::QueryRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<payorch_schemas::paykka::PaymentResponse> {
        self.0.query(req).await
    }
    async fn capture(
        &self,
        req: &payorch_schemas::paykka::CaptureRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<payorch_schemas::paykka::PaymentResponse> {
        self.0.capture(req).await
    }
    async fn void(
        &self,
        req: &payorch_schemas::paykka::VoidRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<payorch_schemas::paykka::PaymentResponse> {
        self.0.void(req).await
    }
    async fn refund(
        &self,
        req: &payorch_schemas::paykka::RefundRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<payorch_schemas::paykka::RefundResponse> {
        self.0.refund(req).await
    }
    async fn refund_query(
        &self,
        req: &payorch_schemas::paykka::RefundQueryRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<payorch_schemas::paykka::RefundResponse> {
        self.0.refund_query(req).await
    }
    async fn token_query(
        &self,
        req: &payorch_schemas::paykka::TokenQueryRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<payorch_schemas::paykka::TokenQueryResponse> {
        self.0.token_query(req).await
    }
    async fn token_remove(
        &self,
        req: &payorch_schemas::paykka::TokenRemoveRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<()> {
        self.0.token_remove(req).await
    }
    async fn recurring_cancel(
        &self,
        req: &payorch_schemas::paykka::RecurringCancelRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<()> {
        self.0.recurring_cancel(req).await
    }
    async fn apple_pay_session(
        &self,
        req: &payorch_schemas::paykka::ApplePaySessionRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<payorch_schemas::paykka::ApplePaySessionResponse>
    {
        self.0.apple_pay_session(req).await
    }
    async fn checkout_session_create(
        &self,
        req: &payorch_schemas::paykka::CheckoutSessionRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<payorch_schemas::paykka::CheckoutSessionResponse>
    {
        self.0.checkout_session_create(req).await
    }
    async fn checkout_session_query(
        &self,
        req: &payorch_schemas::paykka::CheckoutSessionQueryRequest,
    ) -> payorch_engine::gateway::GatewayOutcome<
        payorch_schemas::paykka::CheckoutSessionQueryResponse,
    > {
        self.0.checkout_session_query(req).await
    }
}

/// A response: status, headers and parsed JSON (or `Value::String` for
/// non-JSON bodies).
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn send(router: &axum::Router, req: Request<Body>) -> Resp {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::String(text.clone()));
    Resp {
        status,
        headers,
        body,
        text,
    }
}

pub fn get(path: &str, key: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Body::empty()).expect("request")
}

pub fn post(path: &str, key: Option<&str>, idem: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    if let Some(i) = idem {
        b = b.header("idempotency-key", i);
    }
    b.body(Body::from(body.to_owned())).expect("request")
}

pub fn webhook(path: &str, body: &str, signature: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("signature", signature)
        .body(Body::from(body.to_owned()))
        .expect("request")
}

pub fn now_ms() -> i64 {
    (SystemClock.now().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn card_payment(capture: &str) -> String {
    serde_json::json!({
        "amount": {"minor": 1000, "currency": "EUR"},
        "capture_method": capture,
        "payment_method": {"type": "card", "number": "4111111111111111",
            "exp_month": "07", "exp_year": "2031", "cvv": "737"},
        "return_url": "https://shop.example/return"
    })
    .to_string()
}

/// Creates a manual-capture card payment for merchant A; returns its id.
pub async fn create_manual(h: &Harness, idem: &str) -> String {
    let r = send(
        &h.router,
        post(
            "/v1/payments",
            Some(KEY_A),
            Some(idem),
            &card_payment("MANUAL"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["status"], "authorised", "{}", r.text);
    r.body["id"].as_str().expect("id").to_owned()
}

impl Harness {
    /// `POST path` as merchant A with `Idempotency-Key: idem`.
    pub async fn post_a(&self, path: &str, idem: &str, body: &str) -> Resp {
        send(&self.router, post(path, Some(KEY_A), Some(idem), body)).await
    }

    /// `GET path` as merchant A.
    pub async fn get_a(&self, path: &str) -> Resp {
        send(&self.router, get(path, Some(KEY_A))).await
    }
}
