//! Test support: an independent test signer on aws-lc-rs (keys generated at
//! test time), a tiny signed JSON client, response verification with the
//! platform key, and a notification receiver.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use payorch_sandbox::{RunningSandbox, SandboxConfig, SandboxMerchant, spawn};
use serde_json::{Value, json};

pub const MID: &str = "10000000000001";

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<String> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn der_of_pem(text: &str) -> Vec<u8> {
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("pem base64")
}

/// A merchant key pair made at test time.
pub struct TestMerchant {
    pub id: String,
    key: KeyPair,
    pub public_pem: String,
}

impl TestMerchant {
    pub fn new(id: &str) -> Self {
        let key = KeyPair::generate(KeySize::Rsa2048).expect("keygen");
        let spki = key.public_key().as_der().expect("spki");
        TestMerchant {
            id: id.to_owned(),
            public_pem: pem("PUBLIC KEY", spki.as_ref()),
            key,
        }
    }

    /// Raw base64 signature over the v1.2 string-to-sign.
    pub fn sign_b64(&self, merchant_id: &str, ts: i64, body: &[u8]) -> String {
        let mut msg = format!("merchantId={merchant_id}&timestamp={ts}&requestBody=").into_bytes();
        msg.extend_from_slice(body);
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                &msg,
                &mut sig,
            )
            .expect("sign");
        STANDARD.encode(sig)
    }

    pub fn sign(&self, merchant_id: &str, ts: i64, body: &[u8]) -> String {
        percent(&self.sign_b64(merchant_id, ts, body))
    }
}

pub fn percent(b64: &str) -> String {
    b64.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// Verifies a PayKKa-side signature header with the platform public key.
pub fn verify_platform(
    platform_pem: &str,
    merchant_id: &str,
    ts: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let decoded = header
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    let Ok(sig) = STANDARD.decode(decoded) else {
        return false;
    };
    let mut msg = format!("merchantId={merchant_id}&timestamp={ts}&requestBody=").into_bytes();
    msg.extend_from_slice(body);
    UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        der_of_pem(platform_pem),
    )
    .verify(&msg, &sig)
    .is_ok()
}

pub struct Resp {
    pub status: u16,
    pub json: Value,
    pub body: Vec<u8>,
    pub signature: Option<String>,
}

impl Resp {
    pub fn ret_code(&self) -> &str {
        self.json["ret_code"].as_str().unwrap_or("")
    }
    pub fn data(&self) -> &Value {
        &self.json["data"]
    }
    pub fn status_text(&self) -> &str {
        self.json["data"]["status"].as_str().unwrap_or("")
    }
    pub fn order_id(&self) -> String {
        self.json["data"]["order_id"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// The sandbox plus one merchant and a client for it.
pub struct Harness {
    pub sandbox: RunningSandbox,
    pub merchant: Arc<TestMerchant>,
    pub http: reqwest::Client,
    pub platform_pem: String,
}

pub async fn start() -> Harness {
    start_with(|_| {}).await
}

pub async fn start_with(f: impl FnOnce(&mut SandboxConfig)) -> Harness {
    let merchant = Arc::new(TestMerchant::new(MID));
    let mut config = SandboxConfig {
        merchants: vec![SandboxMerchant::new(MID, merchant.public_pem.clone())],
        ..SandboxConfig::default()
    };
    f(&mut config);
    let sandbox = spawn(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("spawn");
    let platform_pem = sandbox.platform_public_key_pem();
    Harness {
        sandbox,
        merchant,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        platform_pem,
    }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.base_url())
    }

    /// Posts raw bytes with the given headers.
    pub async fn raw(&self, path: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Resp {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let signature = resp
            .headers()
            .get("signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.expect("body").to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Resp {
            status,
            json,
            body,
            signature,
        }
    }

    /// Adds `merchant_id` + fresh `timestamp`, signs, posts, and asserts
    /// the response signature verifies with the platform key.
    pub async fn call(&self, path: &str, mut body: Value) -> Resp {
        let ts = now_ms();
        body["merchant_id"] = json!(MID);
        body["timestamp"] = json!(ts);
        let bytes = serde_json::to_vec(&body).unwrap();
        let sig = self.merchant.sign(MID, ts, &bytes);
        let resp = self
            .raw(
                path,
                bytes,
                &[
                    ("signature", sig),
                    ("type", "RSA256".into()),
                    ("version", "v1.2".into()),
                ],
            )
            .await;
        self.assert_response_signed(&resp, MID, ts);
        resp
    }

    pub fn assert_response_signed(&self, resp: &Resp, merchant_id: &str, sent_ts: i64) {
        let sig = resp
            .signature
            .as_deref()
            .expect("response signature header");
        let data = &resp.json["data"];
        let (m, ts) = if data.is_object() {
            (
                data["merchant_id"]
                    .as_str()
                    .expect("data.merchant_id")
                    .to_owned(),
                data["timestamp"].as_i64().expect("data.timestamp"),
            )
        } else {
            (merchant_id.to_owned(), sent_ts)
        };
        assert!(
            verify_platform(&self.platform_pem, &m, ts, &resp.body, sig),
            "response signature must verify: {}",
            String::from_utf8_lossy(&resp.body)
        );
    }

    /// A manual-capture VISA payment notifying `url`; returns the order id.
    pub async fn pay_with_notify(&self, trans_id: &str, url: &str) -> String {
        self.call(
            "/payments",
            payment_body(trans_id, 100, "4111111111111111", true, Some(url)),
        )
        .await
        .order_id()
    }

    pub async fn pay(&self, trans_id: &str, amount: i64, card: &str, manual: bool) -> Resp {
        self.call(
            "/payments",
            payment_body(trans_id, amount, card, manual, None),
        )
        .await
    }
}

pub fn payment_body(
    trans_id: &str,
    amount: i64,
    card: &str,
    manual: bool,
    notify: Option<&str>,
) -> Value {
    let mut b = json!({
        "payment_type": "PURCHASE",
        "capture_method": if manual { "MANUAL" } else { "AUTOMATIC" },
        "trans_id": trans_id,
        "amount": amount,
        "currency": "EUR",
        "return_url": "https://merchant.example/return",
        "payment": {"payment_method": "BANKCARD", "card_no": card, "exp_month": "07", "exp_year": "2031", "cvv": "123"}
    });
    if let Some(n) = notify {
        b["notify_url"] = json!(n);
    }
    b
}

/// One received notification.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A merchant notify endpoint: records every POST; answers the first
/// `fail_first` with HTTP 500, then acknowledges.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let rec = received.clone();
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let rec = rec.clone();
                async move {
                    let n = {
                        let mut r = rec.lock().unwrap();
                        r.push(Received {
                            headers,
                            body: body.to_vec(),
                        });
                        r.len()
                    };
                    if n <= fail_first {
                        (StatusCode::INTERNAL_SERVER_ERROR, "nope".to_owned())
                    } else {
                        (
                            StatusCode::OK,
                            r#"{"ret_code":"000000","ret_msg":"Success"}"#.to_owned(),
                        )
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/notify"),
            received,
            task,
        }
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let all = self.all();
            if all.len() >= n || tokio::time::Instant::now() >= deadline {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
