//! The fuzz targets that go through the adapter crates (payorch-paykka's
//! webhook receiver, payorch-http's router), as plain functions. Included
//! by the cargo-fuzz binaries `webhook` and `merchant_api` (feature
//! `adapters`) and by the root package's `tests/fuzz_corpus.rs`.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use super::targets::split;

/// The names of the targets in this file.
pub const TARGETS: &[&str] = &["webhook", "merchant_api"];

/// Runs the target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "webhook" => webhook(data),
        "merchant_api" => merchant_api(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

// ---------------------------------------------------------------- webhook

struct WebhookKeys {
    signer: payorch_paykka::signing::RequestSigner,
    public: payorch_paykka::PaykkaPublicKey,
}

/// One RSA-2048 pair per process, generated at first use (no key is
/// committed).
fn webhook_keys() -> &'static WebhookKeys {
    static KEYS: OnceLock<WebhookKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let pair = payorch_paykka::keys::generate_merchant_key_pair()
            .unwrap_or_else(|e| panic!("key generation failed: {e}"));
        let private = pair
            .private_key()
            .unwrap_or_else(|e| panic!("generated key does not parse: {e}"));
        WebhookKeys {
            signer: payorch_paykka::signing::RequestSigner::new(
                private,
                payorch_paykka::signing::SigningConfig::default(),
            ),
            public: pair.public.clone(),
        }
    })
}

/// Webhook headers and body through `WebhookReceiver::handle_parts`.
///
/// Byte 0 picks the signature mode and what signature is sent: the
/// fuzzer's own header bytes, or a valid signature over the fuzzed body
/// (so that bodies reach parsing and the timestamp check under
/// `Enforce`). Byte 1..: `signature header` 0xFF `body`.
///
/// Properties: no panic; under `Enforce` a body signed with another key's
/// (i.e. the fuzzer's) signature is never accepted; an accepted
/// notification re-parses to the same value from the same bytes.
pub fn webhook(data: &[u8]) {
    use payorch_paykka::SignatureMode;
    use payorch_paykka::{VerifiedNotification, WebhookConfig, WebhookReceiver};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (sig, body) = split(rest, 0xFF);
    let keys = webhook_keys();
    let signature_mode = match mode % 3 {
        0 => SignatureMode::Enforce,
        1 => SignatureMode::Warn,
        _ => SignatureMode::Off,
    };
    let sign_validly = mode & 0x80 != 0;
    let signature: Option<String> = if sign_validly {
        // Sign with the merchant id / timestamp the body names, as PayKKa
        // would; bodies without them cannot be signed validly.
        match payorch_paykka::signing::notification_signed_fields(body) {
            Ok(f) => keys
                .signer
                .sign_raw_body(&f.merchant_id, f.timestamp, body.to_vec())
                .ok()
                .map(|s| s.signature_header().to_owned()),
            Err(_) => None,
        }
    } else if mode & 0x40 != 0 {
        None
    } else {
        Some(String::from_utf8_lossy(sig).into_owned())
    };
    let config = WebhookConfig {
        signature: signature_mode,
        // 0: no freshness check, so that valid bodies get past it.
        timestamp_tolerance_ms: if mode & 0x20 != 0 { 300_000 } else { 0 },
        max_body_bytes: 64 * 1024,
    };
    let receiver = WebhookReceiver::new(keys.public.clone(), config);
    let now = time::OffsetDateTime::from_unix_timestamp(1_767_225_600)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let result = receiver.handle_parts(signature.as_deref(), body, now);
    if let Ok(n) = &result {
        if signature_mode == SignatureMode::Enforce && !sign_validly {
            // A forged signature verified: only possible if the fuzzer
            // forged RSA, or the verifier is broken.
            panic!("Enforce accepted a body with a signature we did not make: {n:?}");
        }
        let again = receiver.handle_parts(signature.as_deref(), body, now);
        assert_eq!(again.as_ref().ok(), Some(n), "same bytes, another answer");
        // Debug output never panics and the dedupe key is computable.
        let _ = format!("{n:?}");
        let _ = n.dedupe_key();
        match n {
            VerifiedNotification::Payment(p) => {
                let _ = payorch_engine::gateway::notification_observation(p);
            }
            VerifiedNotification::Refund(r) => {
                let _ = r.amount_money();
            }
        }
    }
}

// ----------------------------------------------------------- merchant API

/// Routes the merchant-API target can hit (byte 0 picks one).
const API_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/payments"),
    ("POST", "/v1/payments/{id}/capture"),
    ("POST", "/v1/payments/{id}/void"),
    ("POST", "/v1/payments/{id}/refunds"),
    ("GET", "/v1/payments/{id}"),
    ("POST", "/v1/checkout-sessions"),
    ("POST", "/v1/recurring-agreements/{id}/charges"),
    ("POST", "/v1/recurring-agreements/{id}/cancel"),
    ("POST", "/v1/tokens/query"),
    ("POST", "/v1/tokens/remove"),
    ("POST", "/v1/apple-pay/sessions"),
];

const API_MERCHANT: &str = "18356675194960";
const API_KEY: &str = "sk_fuzz_merchant_0123456789abcdef";

struct NoWebhooks;

impl payorch_engine::webhook::WebhookVerifier for NoWebhooks {
    fn verify(
        &self,
        _signature: Option<&str>,
        _raw_body: &[u8],
        _now: time::OffsetDateTime,
    ) -> Result<payorch_schemas::paykka::Notification, payorch_engine::webhook::WebhookRejection>
    {
        Err(payorch_engine::webhook::WebhookRejection::Unauthenticated(
            "not in this target".into(),
        ))
    }
}

/// Maximal runs of ASCII digits of at least `min` digits, glued to
/// letters or not (`"4111111111111111ABC"` counts: an enum field once
/// echoed such a value; fuzz/findings/merchant_api-digit-run-echo).
fn digit_runs(text: &[u8], min: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && text[i].is_ascii_digit() {
            i += 1;
        }
        if i - start >= min {
            out.push(&text[start..i]);
        }
    }
    out
}

/// A request through the merchant API router (`payorch_http::router`)
/// with an engine on the in-memory store and the fake PayKKa. Byte 0 picks
/// the route, byte 1 whether the path id is a real order's; then
/// `Idempotency-Key` 0xFF `body`.
///
/// Properties: no panic; never a 5xx for what is only bad input (the
/// store and the fake PayKKa are healthy); a 2xx/4xx body is JSON; no run
/// of 13+ digits from the request (a card number) comes back in the
/// response.
pub fn merchant_api(data: &[u8]) {
    let (Some(&route), Some(&id_pick)) = (data.first(), data.get(1)) else {
        return;
    };
    let (key, body) = split(&data[2..], 0xFF);
    thread_local! {
        // One runtime per fuzzing thread: building one per input cost more
        // than the request itself. Each input still gets its own engine,
        // store and router, so an input's outcome depends on it alone.
        static RT: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok();
    }
    RT.with(|rt| {
        if let Some(rt) = rt {
            merchant_api_on(rt, route, id_pick, key, body, data);
        }
    });
}

fn merchant_api_on(
    rt: &tokio::runtime::Runtime,
    route: u8,
    id_pick: u8,
    key: &[u8],
    body: &[u8],
    data: &[u8],
) {
    use axum::body::Body;
    use axum::http::Request;
    use payorch_engine::gateway::PaymentGateway;
    use payorch_engine::gateway::fake::FakeGateway;
    use payorch_engine::orchestrator::{Engine, EngineConfig};
    use payorch_engine::store::memory::InMemoryStore;
    use tower::ServiceExt;

    rt.block_on(async {
        let store = Arc::new(InMemoryStore::new());
        let engine = Arc::new(Engine::new(
            store.clone(),
            store.clone(),
            Arc::new(FakeGateway::new()) as Arc<dyn PaymentGateway>,
            Arc::new(payorch_engine::store::SystemClock),
            EngineConfig {
                retry_backoff: std::time::Duration::ZERO,
                // As `payorch serve` sets it (PayKKa needs a return_url).
                default_return_url: Some("https://shop.example/return".into()),
                ..EngineConfig::default()
            },
        ));
        let keys = payorch_http::ApiKeys::new().with_plain_key(API_MERCHANT, API_KEY);
        let app = payorch_http::router(payorch_http::AppState::new(
            engine.clone(),
            keys,
            Arc::new(NoWebhooks),
        ));
        // A real order to aim capture/void/refund/get at.
        let id = if id_pick.is_multiple_of(2) {
            let place = serde_json::json!({
                "amount": {"minor": 1000, "currency": "EUR"},
                "capture_method": "MANUAL",
                "payment_method": {"type": "card", "number": "4111111111111111",
                                   "exp_month": "07", "exp_year": "2031", "cvv": "987"}
            });
            let req = Request::post("/v1/payments")
                .header("authorization", format!("Bearer {API_KEY}"))
                .header("content-type", "application/json")
                .header("idempotency-key", "fuzz-setup")
                .body(Body::from(place.to_string()));
            let mut id = None;
            if let Ok(req) = req
                && let Ok(resp) = app.clone().oneshot(req).await
                && let Ok(bytes) = axum::body::to_bytes(resp.into_body(), 1 << 20).await
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
                && let Some(s) = v.get("id").and_then(|v| v.as_str())
            {
                id = Some(s.to_owned());
            }
            // A harness bug, not a finding about the input: fail loudly.
            id.unwrap_or_else(|| panic!("the target's setup payment was not created"))
        } else {
            String::from_utf8_lossy(&data[1..2.min(data.len())]).into_owned()
        };
        let (method, template) = API_ROUTES[usize::from(route) % API_ROUTES.len()];
        let path = template.replace("{id}", &id);
        let mut builder = Request::builder()
            .method(method)
            .uri(&path)
            .header("authorization", format!("Bearer {API_KEY}"))
            .header("content-type", "application/json");
        if !key.is_empty() {
            builder = builder.header("idempotency-key", key);
        }
        let Ok(req) = builder.body(Body::from(body.to_vec())) else {
            return; // the header value is not a valid header: not our code
        };
        let resp = match app.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap_or_default();
        assert!(
            !status.is_server_error(),
            "{method} {path}: {status} for bad input: {}",
            String::from_utf8_lossy(&bytes)
        );
        if !bytes.is_empty() {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
                "{method} {path}: {status} with a body that is not JSON"
            );
        }
        for run in digit_runs(body, 13) {
            assert!(
                !bytes.windows(run.len()).any(|w| w == run),
                "{method} {path}: a digit run of the request came back"
            );
        }
    });
}
