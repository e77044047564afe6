//! Shared setup for the client and webhook tests: a PayKKa sandbox on an
//! ephemeral loopback port, merchant keys generated at test time, a
//! `PaykkaClient` wired to both, and a small axum receiver that feeds real
//! notification deliveries through the `WebhookReceiver`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use payorch_paykka::keys::{GeneratedKeyPair, generate_merchant_key_pair};
use payorch_paykka::{
    MerchantConfig, OperationTimeouts, PaykkaClient, PaykkaPublicKey, RetryPolicy, SignatureMode,
    VerifiedNotification, WebhookConfig, WebhookError, WebhookReceiver,
};
use payorch_sandbox::{RunningSandbox, SandboxConfig, SandboxMerchant};
use payorch_schemas::Money;
use payorch_schemas::money::Currency;
use payorch_schemas::paykka::{CaptureMethod, InitiateRequest, PaymentRequest, PaymentType};

pub const MERCHANT: &str = "10000000000001";

pub struct Env {
    pub sandbox: RunningSandbox,
    pub client: PaykkaClient,
    pub keys: GeneratedKeyPair,
    pub platform_key: PaykkaPublicKey,
}

/// Short timeouts and fast read retries so failure paths finish quickly.
pub fn test_merchant_config(
    keys: &GeneratedKeyPair,
    platform_key: PaykkaPublicKey,
    base_url: String,
) -> MerchantConfig {
    MerchantConfig::new(
        MERCHANT,
        keys.private_key().expect("private key"),
        platform_key,
    )
    .with_base_url(base_url)
    .with_timeouts(OperationTimeouts::uniform(Duration::from_secs(5)))
    .with_retry(RetryPolicy {
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        ..RetryPolicy::default()
    })
}

/// A sandbox knowing [`MERCHANT`] with a fresh key, `tweak` applied to its
/// config, and a client in `mode` (and `client_tweak` applied).
pub async fn env_with(
    tweak: impl FnOnce(&mut SandboxConfig),
    client_tweak: impl FnOnce(MerchantConfig) -> MerchantConfig,
) -> Env {
    let keys = generate_merchant_key_pair().expect("keygen");
    let mut config = SandboxConfig {
        merchants: vec![SandboxMerchant::new(MERCHANT, keys.public.to_spki_pem())],
        ..SandboxConfig::default()
    };
    tweak(&mut config);
    let sandbox = payorch_sandbox::spawn(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sandbox");
    let platform_key =
        PaykkaPublicKey::parse(&sandbox.platform_public_key_pem()).expect("platform key");
    let merchant = client_tweak(
        test_merchant_config(&keys, platform_key.clone(), sandbox.base_url())
            .with_response_signature(SignatureMode::Enforce),
    );
    let client = PaykkaClient::new(merchant).expect("client");
    Env {
        sandbox,
        client,
        keys,
        platform_key,
    }
}

pub async fn env() -> Env {
    env_with(|_| {}, |m| m).await
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A unique merchant-side id.
pub fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

pub fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::new("EUR").expect("EUR"))
}

/// A card initiate (plain PAN, as a PCI merchant would send it).
pub fn card_initiate(pan: &str, minor: i64, capture: CaptureMethod) -> InitiateRequest {
    let mut req = InitiateRequest::new(
        MERCHANT,
        0,
        PaymentType::Purchase,
        unique("ord"),
        eur(minor),
        PaymentRequest::card(pan, "07", "2031", "123"),
    );
    req.capture_method = Some(capture);
    req.return_url = Some("https://merchant.example/return".into());
    req
}

/// What the notification receiver saw, per delivery.
#[derive(Debug, Clone)]
pub enum Delivery {
    Verified(VerifiedNotification),
    Refused(WebhookError),
}

/// An axum server answering like a merchant's `notify_url`: every delivery
/// goes through the `WebhookReceiver`; verified ones are acknowledged,
/// refused ones answered with the error's status.
pub struct NotifyServer {
    pub url: String,
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    task: tokio::task::JoinHandle<()>,
}

impl NotifyServer {
    pub async fn start(receiver: WebhookReceiver) -> Self {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode};
        let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let seen = deliveries.clone();
        let receiver = Arc::new(receiver);
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let receiver = receiver.clone();
                let seen = seen.clone();
                async move {
                    let result = receiver.handle(&headers, &body, time::OffsetDateTime::now_utc());
                    let answer = match &result {
                        Ok(_) => (
                            StatusCode::OK,
                            payorch_paykka::webhook::ack_body().to_owned(),
                        ),
                        Err(e) => (
                            StatusCode::from_u16(e.http_status())
                                .unwrap_or(StatusCode::BAD_REQUEST),
                            e.response_body(),
                        ),
                    };
                    seen.lock().expect("lock").push(match result {
                        Ok(v) => Delivery::Verified(v),
                        Err(e) => Delivery::Refused(e),
                    });
                    answer
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        NotifyServer {
            url: format!("http://{addr}/notify"),
            deliveries,
            task,
        }
    }

    pub fn snapshot(&self) -> Vec<Delivery> {
        self.deliveries.lock().expect("lock").clone()
    }

    /// Waits (deadline) until `cond` holds on the deliveries.
    pub async fn wait_for(&self, timeout: Duration, cond: impl Fn(&[Delivery]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(&self.snapshot()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for NotifyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn webhook_receiver(platform_key: PaykkaPublicKey) -> WebhookReceiver {
    WebhookReceiver::new(platform_key, WebhookConfig::default())
}
