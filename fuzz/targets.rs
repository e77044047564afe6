//! The fuzz targets' logic as plain functions (the targets that need only
//! payorch-engine and payorch-schemas; see also `targets_adapters.rs`).
//!
//! Included by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`, nightly,
//! libFuzzer) and by the root package's `tests/fuzz_corpus.rs`, which
//! replays every committed input under `fuzz/corpus/<target>/` with stable
//! `cargo test` (CI has no cargo-fuzz). A function panics on a finding:
//! a crash, or a property that does not hold. Every function accepts any
//! byte string.

#![allow(dead_code)]

use payorch_engine::codec::{self, DomainEvent};
use payorch_schemas::events::{AgreementEvent, CheckoutEvent, OrderEvent};

/// The names of the targets in this file, as in `fuzz/corpus/<name>/`
/// and `fuzz/fuzz_targets/<name>.rs`. The webhook and merchant-API
/// targets are in `targets_adapters.rs` (they need the adapter crates,
/// whose build with sanitizers takes much longer).
pub const TARGETS: &[&str] = &["paykka_response", "codec_differential", "upcast"];

/// Runs the target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "paykka_response" => paykka_response(data),
        "codec_differential" => codec_differential(data),
        "upcast" => upcast(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Splits `data` at the first `sep` byte (the rest after it).
pub fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
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
        // Unknown keys are kept as JSON values; serde_json's default float
        // parsing may move a float in one by an ulp (found by this target:
        // fuzz/corpus/paykka_response/regression-float-ulp), so floats compare
        // approximately and everything else exactly.
        let (a, b) = (serde_json::to_value(&back), serde_json::to_value(env));
        match (a, b) {
            (Ok(a), Ok(b)) => assert!(approx_eq(&a, &b), "round trip changed the value: {text}"),
            _ => panic!("a parsed envelope does not serialize: {text}"),
        }
    }
    fn approx_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (a, b) {
            (V::Number(x), V::Number(y)) if x.is_f64() || y.is_f64() => {
                match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => x == y || ((x - y) / x.abs().max(y.abs())).abs() < 1e-12,
                    _ => false,
                }
            }
            (V::Array(x), V::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| approx_eq(x, y))
            }
            (V::Object(x), V::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| approx_eq(v, w)))
            }
            _ => a == b,
        }
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
