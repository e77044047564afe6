//! Validation before PayKKa and an unreachable PayKKa, over real HTTP
//! (issue 15 point 3): the merchant API on SQLite with the real PayKKa
//! client, first pointed at a port nothing listens on, then at a sandbox
//! started on that same port.
//!
//! * A request PayKKa's schema rules would refuse is 400 `invalid_field`
//!   naming the field, and nothing is written.
//! * A payment whose initiate provably never left is 503
//!   `paykka_unreachable` with `Retry-After`; `/healthz` says `degraded`
//!   (200) with the `paykka` check unavailable.
//! * Once PayKKa is reachable, the same request with the same
//!   `Idempotency-Key` executes and succeeds; `/healthz` is `ok` again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use payorch_engine::listing::Indexer;
use payorch_engine::orchestrator::{Engine, EngineConfig};
use payorch_engine::store::{EventStore, Position, SystemClock};
use payorch_engine::webhook::{WebhookRejection, WebhookVerifier};
use payorch_http::{ApiKeys, AppState, TcpReachability};
use payorch_paykka::keys::generate_merchant_key_pair;
use payorch_paykka::{MerchantConfig, PaykkaClient, PaykkaPublicKey};
use payorch_sandbox::{PlatformKey, SandboxConfig, SandboxMerchant, cards};
use payorch_sqlite::SqliteStore;
use serde_json::{Value, json};

const MERCHANT: &str = "10000000000001";
const KEY: &str = "sk_test_unreachable_0123456789";

struct Refuse;
impl WebhookVerifier for Refuse {
    fn verify(
        &self,
        _: Option<&str>,
        _: &[u8],
        _: time::OffsetDateTime,
    ) -> Result<payorch_schemas::paykka::Notification, WebhookRejection> {
        Err(WebhookRejection::Unauthenticated("not in this test".into()))
    }
}

fn sandbox_config(merchant_pem: String, platform: &PlatformKey) -> SandboxConfig {
    SandboxConfig {
        merchants: vec![SandboxMerchant::new(MERCHANT, merchant_pem)],
        platform_key: Some(platform.clone()),
        ..SandboxConfig::default()
    }
}

fn card_payment(extra: Value) -> Value {
    let mut body = json!({
        "amount": {"minor": 1250, "currency": "EUR"},
        "payment_method": {"type": "card", "number": cards::VISA_SUCCESS,
            "exp_month": "07", "exp_year": "2031", "cvv": "737"},
        "return_url": "https://shop.example/return"
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

struct Client {
    url: String,
    http: reqwest::Client,
}

impl Client {
    async fn post(&self, idem: &str, path: &str, body: &Value) -> (u16, Value, Option<String>) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .header("idempotency-key", idem)
            .json(body)
            .send()
            .await
            .expect("POST");
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (
            r.status().as_u16(),
            r.json().await.unwrap_or(Value::Null),
            retry_after,
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("GET");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

async fn event_count(store: &SqliteStore) -> usize {
    store
        .read_all(Position::START, 10_000)
        .await
        .expect("read_all")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_and_an_unreachable_paykka_over_http() {
    // A sandbox that ran once on a port and is gone: nothing listens there.
    let keys = generate_merchant_key_pair().expect("keys");
    let platform = PlatformKey::generate().expect("platform key");
    let first = payorch_sandbox::spawn(
        sandbox_config(keys.public.to_spki_pem(), &platform),
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .expect("sandbox");
    let addr: SocketAddr = first.addr();
    let base_url = first.base_url();
    let platform_pub = PaykkaPublicKey::parse(&first.platform_public_key_pem()).expect("pem");
    first.shutdown().await;

    let client = PaykkaClient::new(
        MerchantConfig::new(MERCHANT, keys.private_key().expect("key"), platform_pub)
            .with_base_url(base_url.clone()),
    )
    .expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("u.db").display());
    let store = Arc::new(SqliteStore::open(&url).await.expect("open"));
    store.migrate().await.expect("migrate");
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        Arc::new(client),
        Arc::new(SystemClock),
        EngineConfig {
            retry_backoff: Duration::from_millis(10),
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    ));
    let reach = TcpReachability::from_urls("paykka", [base_url.as_str()])
        .expect("url")
        .with_ttl(Duration::ZERO);
    let state = AppState::new(
        engine,
        ApiKeys::new().with_plain_key(MERCHANT, KEY),
        Arc::new(Refuse),
    )
    .with_health_check(Arc::new(reach))
    .with_indexer(Arc::new(Indexer::new(
        store.clone(),
        store.clone(),
        store.clone(),
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = Client {
        url: format!("http://{}", listener.local_addr().expect("addr")),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(payorch_http::serve(
        listener,
        payorch_http::router(state),
        async move {
            let _ = stopped.await;
        },
    ));

    // Refused before PayKKa, naming the field; nothing written.
    let refused = [
        (
            card_payment(json!({"return_url": "not a url"})),
            "return_url",
        ),
        (
            card_payment(json!({"return_url": "ftp://shop.example/r"})),
            "return_url",
        ),
        (
            card_payment(
                json!({"payment_method": {"type": "card", "number": "4111111111111112",
                "exp_month": "07", "exp_year": "2031", "cvv": "737"}}),
            ),
            "payment_method.number",
        ),
        (
            card_payment(
                json!({"payment_method": {"type": "card", "number": cards::VISA_SUCCESS,
                "exp_month": "07", "exp_year": "2031"}}),
            ),
            "payment_method.cvv",
        ),
        (
            card_payment(json!({"amount": {"minor": 0, "currency": "EUR"}})),
            "amount.minor",
        ),
        (
            card_payment(json!({"capture_method": "SOMETIMES"})),
            "capture_method",
        ),
    ];
    for (i, (body, param)) in refused.iter().enumerate() {
        let (s, v, _) = api.post(&format!("bad-{i}"), "/v1/payments", body).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field", "{v}");
        assert_eq!(v["error"]["param"], *param, "{v}");
    }
    let (s, v, _) = api
        .post(
            "bad-checkout",
            "/v1/checkout-sessions",
            &json!({"amount": {"minor": 1000, "currency": "EUR"}, "return_url": "shop/return"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["param"], "return_url", "{v}");
    assert_eq!(event_count(&store).await, 0, "nothing recorded");

    // PayKKa unreachable: 503 with Retry-After, /healthz degraded.
    let body = card_payment(json!({"merchant_reference": "order-77"}));
    let (s, v, retry_after) = api.post("pay-1", "/v1/payments", &body).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "paykka_unreachable", "{v}");
    let secs: u64 = retry_after
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("Retry-After seconds");
    assert!(secs >= 1);
    let (s, h) = api.get("/healthz").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["checks"]["paykka"]["status"], "unavailable", "{h}");
    // The attempt is on record as declined (no money moved), never as
    // unknown: nothing for the reconciler to chase.
    let session = json!({"amount": {"minor": 1000, "currency": "EUR"}});
    let (s, v, _) = api.post("cs-1", "/v1/checkout-sessions", &session).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "paykka_unreachable", "{v}");
    let (_, list) = api.get("/v1/payments").await;
    let data = list["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["status"], "declined", "{list}");
    assert_eq!(data[0]["decline"]["code"], "PAYKKA_UNREACHABLE", "{list}");

    // PayKKa back on the same address: the same key executes afresh.
    let second = payorch_sandbox::spawn(sandbox_config(keys.public.to_spki_pem(), &platform), addr)
        .await
        .expect("sandbox again");
    let (s, v, _) = api.post("pay-1", "/v1/payments", &body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["status"], "captured", "{v}");
    assert_eq!(v["merchant_reference"], "order-77", "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    assert_ne!(id, data[0]["id"].as_str().unwrap_or_default());
    let (s, v, _) = api.post("cs-1", "/v1/checkout-sessions", &session).await;
    assert!(s == 201 || s == 202, "{v}");
    assert_eq!(v["status"], "open", "{v}");
    // And it is now the key's answer.
    let (s, again, _) = api.post("pay-1", "/v1/payments", &body).await;
    assert_eq!(s, 201, "{again}");
    assert_eq!(again["id"], id.as_str());
    let (s, h) = api.get("/healthz").await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["status"], "ok", "{h}");

    // An enum value PayKKa does not know: refused, nothing written.
    let before = event_count(&store).await;
    let (s, v, _) = api
        .post(
            "refund-bad-reason",
            &format!("/v1/payments/{id}/refunds"),
            &json!({"amount": {"minor": 100, "currency": "EUR"}, "reason": "CHANGED_MIND"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["param"], "reason", "{v}");
    assert_eq!(event_count(&store).await, before);

    let _ = stop.send(());
    let _ = server.await;
    second.shutdown().await;
    store.close().await;
}
