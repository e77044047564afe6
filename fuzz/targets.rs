//! The fuzz targets' logic as plain functions.
//!
//! Included by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`, nightly,
//! libFuzzer) and by the root package's `tests/fuzz_corpus.rs`, which
//! replays every committed input under `fuzz/corpus/<target>/` with stable
//! `cargo test` (CI has no cargo-fuzz). A function panics on a finding:
//! a crash, or a property that does not hold. Every function accepts any
//! byte string.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use payorch_engine::codec::{self, DomainEvent};
use payorch_schemas::events::{AgreementEvent, CheckoutEvent, OrderEvent};

/// The names of the targets, as in `fuzz/corpus/<name>/` and
/// `fuzz/fuzz_targets/<name>.rs`.
pub const TARGETS: &[&str] = &[
    "webhook",
    "paykka_response",
    "merchant_api",
    "codec_differential",
    "upcast",
];

/// Runs the target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "webhook" => webhook(data),
        "paykka_response" => paykka_response(data),
        "merchant_api" => merchant_api(data),
        "codec_differential" => codec_differential(data),
        "upcast" => upcast(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Splits `data` at the first `sep` byte (the rest after it).
fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
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

// ------------------------------------------------------- PayKKa responses

/// A PayKKa answer body through the schemas the client parses it with
/// (the `Envelope` of each response type) and the engine's mapping of a
/// parsed answer to an observation (`payment_observation`,
/// `refund_observation`, `session_payment_observation`). The ret_code
/// classification is the adapter's (`classify_code`, table-tested there).
/// Byte 0 picks the response type.
///
/// Properties: no panic; a parsed envelope serializes and parses back to
/// an equal value (what we log and store is what we read).
pub fn paykka_response(data: &[u8]) {
    use payorch_engine::gateway;
    use payorch_engine::order::ObservationSource;
    use payorch_schemas::events::RefundId;
    use payorch_schemas::paykka::{
        CheckoutSessionQueryResponse, CheckoutSessionResponse, Envelope, PaymentResponse,
        RefundResponse, TokenQueryResponse,
    };
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    fn roundtrip<T>(env: &Envelope<T>)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let text = serde_json::to_string(env).unwrap_or_else(|e| panic!("serialize: {e}"));
        let back: Envelope<T> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("re-parse of {text}: {e}"));
        // Floats and unknown keys are not in these types; equal values expected.
        assert_eq!(&back, env, "round trip changed the value: {text}");
    }
    match which % 5 {
        0 => {
            if let Ok(env) = serde_json::from_slice::<Envelope<PaymentResponse>>(body) {
                if let Some(r) = &env.data {
                    let _ = gateway::payment_observation(r, ObservationSource::Response);
                    let _ = r.amount_money();
                    let _ = r.pending_challenge_url();
                }
                roundtrip(&env);
            }
        }
        1 => {
            if let Ok(env) = serde_json::from_slice::<Envelope<RefundResponse>>(body) {
                if let Some(r) = &env.data {
                    let id = RefundId(uuid::Uuid::nil());
                    let _ = gateway::refund_observation(r, id, ObservationSource::Query);
                }
                roundtrip(&env);
            }
        }
        2 => {
            if let Ok(env) = serde_json::from_slice::<Envelope<CheckoutSessionQueryResponse>>(body)
            {
                if let Some(q) = &env.data {
                    let _ = gateway::session_payment_observation(q);
                }
                roundtrip(&env);
            }
        }
        3 => {
            if let Ok(env) = serde_json::from_slice::<Envelope<CheckoutSessionResponse>>(body) {
                roundtrip(&env);
            }
        }
        _ => {
            if let Ok(env) = serde_json::from_slice::<Envelope<TokenQueryResponse>>(body) {
                roundtrip(&env);
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

impl payorch_http::WebhookVerifier for NoWebhooks {
    fn verify(
        &self,
        _headers: &axum::http::HeaderMap,
        _raw_body: &[u8],
    ) -> Result<payorch_schemas::paykka::Notification, payorch_http::WebhookRejection> {
        Err(payorch_http::WebhookRejection::Unauthenticated(
            "not in this target".into(),
        ))
    }
}

/// Maximal runs of ASCII digits of at least `min` digits.
fn digit_runs(text: &[u8], min: usize) -> Vec<&[u8]> {
    text.split(|b| !b.is_ascii_digit())
        .filter(|r| r.len() >= min)
        .collect()
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
    use axum::body::Body;
    use axum::http::Request;
    use payorch_engine::gateway::PaymentGateway;
    use payorch_engine::gateway::fake::FakeGateway;
    use payorch_engine::orchestrator::{Engine, EngineConfig};
    use payorch_engine::store::memory::InMemoryStore;
    use tower::ServiceExt;

    let (Some(&route), Some(&id_pick)) = (data.first(), data.get(1)) else {
        return;
    };
    let (key, body) = split(&data[2..], 0xFF);
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let store = Arc::new(InMemoryStore::new());
        let engine = Arc::new(Engine::new(
            store.clone(),
            store.clone(),
            Arc::new(FakeGateway::new()) as Arc<dyn PaymentGateway>,
            Arc::new(payorch_engine::store::SystemClock),
            EngineConfig {
                retry_backoff: std::time::Duration::ZERO,
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
        let id = if id_pick % 2 == 0 {
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

// ---------------------------------------------------------------- codec

/// Every order event type (the fast reader knows most of them).
const EVENT_TYPES: &[&str] = OrderEvent::EVENT_TYPES;

/// Differential: the engine's decode of a current-version order payload
/// (fast strict reader first, serde_json fallback) against serde_json
/// alone (`OrderEvent::from_json`). Byte 0 picks the event type; the rest
/// is the payload text.
///
/// Property: the same answer (equal event, or both refuse). Also: what
/// either decodes re-encodes to text that decodes to the same event.
pub fn codec_differential(data: &[u8]) {
    let Some((&t, rest)) = data.split_first() else {
        return;
    };
    let Ok(json) = std::str::from_utf8(rest) else {
        return;
    };
    let event_type = EVENT_TYPES[usize::from(t) % EVENT_TYPES.len()];
    let engine = <OrderEvent as DomainEvent>::from_current_json(event_type, json);
    let serde = OrderEvent::from_json(event_type, json);
    match (&engine, &serde) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "fast reader and serde_json disagree on {json}"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "fast reader and serde_json disagree on {event_type} {json}: {:?} vs {:?}",
            engine.as_ref().map(|_| "ok"),
            serde.as_ref().map(|_| "ok")
        ),
    }
    if let Ok(e) = engine {
        let text = serde_json::to_string(&e).unwrap_or_else(|e| panic!("encode: {e}"));
        let back = <OrderEvent as DomainEvent>::from_current_json(e.event_type(), &text)
            .unwrap_or_else(|err| panic!("re-decode of {text}: {err}"));
        assert_eq!(back, e, "encode/decode round trip changed {text}");
    }
}

/// Old payloads through the upcaster chain (`codec::decode` with a
/// schema version below the current one) for order, agreement and
/// checkout events. Byte 0: stream kind and schema version; byte 1: event
/// type; the rest is the payload.
///
/// Properties: no panic; a version-1 payload that decodes gives the same
/// event as its upcast form decoded at the current version (the chain is
/// the only difference); unsupported versions are errors, never events.
pub fn upcast(data: &[u8]) {
    let (Some(&v), Some(&t)) = (data.first(), data.get(1)) else {
        return;
    };
    let Ok(json) = std::str::from_utf8(&data[2..]) else {
        return;
    };
    let event_type = EVENT_TYPES[usize::from(t) % EVENT_TYPES.len()];
    let version = u32::from(v & 0x07);
    match (v >> 3) % 3 {
        0 => {
            let r = codec::decode::<OrderEvent>(event_type, version, json);
            if version == 0 || version > OrderEvent::SCHEMA_VERSION {
                assert!(r.is_err(), "version {version} decoded: {json}");
            }
            if version == 1
                && let Ok(e) = &r
            {
                // Upcast by hand through the public step and decode at the
                // current version: must agree.
                use codec::Upcaster;
                let value: serde_json::Value = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("decoded but not JSON: {e}"));
                let up = codec::OrderV1ToV2
                    .upcast(event_type, value)
                    .unwrap_or_else(|m| panic!("decoded but the step fails: {m}"));
                let direct = codec::decode::<OrderEvent>(
                    event_type,
                    OrderEvent::SCHEMA_VERSION,
                    &up.to_string(),
                )
                .unwrap_or_else(|err| panic!("upcast form does not decode: {err}"));
                assert_eq!(&direct, e);
            }
        }
        1 => {
            let r = codec::decode::<AgreementEvent>(event_type, version, json);
            if version == 0 || version > AgreementEvent::SCHEMA_VERSION {
                assert!(r.is_err());
            }
        }
        _ => {
            let r = codec::decode::<CheckoutEvent>(event_type, version, json);
            if version == 0 || version > CheckoutEvent::SCHEMA_VERSION {
                assert!(r.is_err());
            }
        }
    }
}
