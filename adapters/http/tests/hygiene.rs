//! Input hygiene (issue 17): malformed card payloads are refused with a 400
//! naming the field, nothing is recorded, and neither the response nor any
//! log line carries the card number or the CVV. One test per binary: it
//! captures every log line (see `hygiene_labels.rs` for the rest).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use common::*;
use payorch_engine::store::{EventStore, Position};
use serde_json::json;

const PAN: &str = "4111111111111111";
const PAN_DIGITS: u64 = 4_111_111_111_111_111;
const CVV: &str = "9731";

/// Every log line of the test, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn payment_with(method: serde_json::Value) -> String {
    json!({
        "amount": {"minor": 1000, "currency": "EUR"},
        "capture_method": "MANUAL",
        "payment_method": method,
        "return_url": "https://shop.example/return"
    })
    .to_string()
}

/// (case, body, the field the 400 must name)
fn malformed_cards() -> Vec<(&'static str, String, &'static str)> {
    let card = |extra: serde_json::Value| {
        let mut m = json!({"type": "card", "number": PAN, "exp_month": "07",
            "exp_year": "2031", "cvv": CVV});
        for (k, v) in extra.as_object().expect("object") {
            m[k] = v.clone();
        }
        m
    };
    vec![
        (
            "number as a JSON integer",
            payment_with(card(json!({"number": PAN_DIGITS}))),
            "payment_method",
        ),
        (
            "number as a JSON float",
            payment_with(card(json!({"number": 4_111_111_111_111_111.0_f64}))),
            "payment_method",
        ),
        (
            "number as an array",
            payment_with(card(json!({"number": [PAN]}))),
            "payment_method",
        ),
        (
            "number too long",
            payment_with(card(json!({"number": format!("{PAN}4444")}))),
            "payment_method.number",
        ),
        (
            "number with separators",
            payment_with(card(json!({"number": "4111-1111-1111-1111"}))),
            "payment_method.number",
        ),
        (
            "cvv as a JSON integer",
            payment_with(card(json!({"cvv": 9731}))),
            "payment_method",
        ),
        (
            "cvv too long",
            payment_with(card(json!({"cvv": format!("{CVV}1")}))),
            "payment_method.cvv",
        ),
        (
            "cvc typo",
            payment_with({
                let mut m = card(json!({}));
                m.as_object_mut().expect("object").remove("cvv");
                m["cvc"] = json!(CVV);
                m
            }),
            "payment_method",
        ),
        (
            "exp_month with a sign",
            payment_with(card(json!({"exp_month": "+7"}))),
            "payment_method.exp_month",
        ),
        (
            "exp_year with a sign",
            payment_with(card(json!({"exp_year": "+203"}))),
            "payment_method.exp_year",
        ),
        (
            "card number as a field name",
            json!({"amount": {"minor": 1000, "currency": "EUR"}, "capture_method": "MANUAL",
                PAN: CVV, "payment_method": card(json!({}))})
            .to_string(),
            "",
        ),
        (
            "unknown payment method type",
            payment_with(card(json!({"type": "kard"}))),
            "payment_method.type",
        ),
    ]
}

#[tokio::test]
async fn malformed_card_payloads_are_refused_without_echoing_card_data() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // This binary holds this one test, so no other thread can register a
    // callsite first with no subscriber (tracing caches interest).
    tracing::callsite::rebuild_interest_cache();

    let h = harness();
    for (i, (case, body, param)) in malformed_cards().into_iter().enumerate() {
        let r = h
            .post_a("/v1/payments", &format!("hygiene-{i}"), &body)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{case}: {}", r.text);
        assert!(!r.text.contains(PAN), "{case}: PAN echoed: {}", r.text);
        assert!(!r.text.contains("411111"), "{case}: PAN echoed: {}", r.text);
        assert!(!r.text.contains(CVV), "{case}: CVV echoed: {}", r.text);
        let msg = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(!msg.is_empty(), "{case}: no message: {}", r.text);
        if !param.is_empty() {
            assert_eq!(
                r.body["error"]["param"].as_str(),
                Some(param),
                "{case}: {}",
                r.text
            );
        }
    }
    // Nothing was recorded and PayKKa was never asked.
    let events = h.store.read_all(Position(0), 100).await.expect("read");
    assert!(events.is_empty(), "refused requests recorded {events:?}");
    assert_eq!(h.gateway.calls().len(), 0, "PayKKa was called");

    let text = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8");
    // The capture works: the refusals were logged (else this proves nothing).
    assert!(
        text.lines().count() >= malformed_cards().len(),
        "too few log lines captured:\n{text}"
    );
    assert!(!text.contains("411111"), "PAN in the logs:\n{text}");
    assert!(!text.contains(CVV), "CVV in the logs:\n{text}");
}
