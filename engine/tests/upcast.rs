//! Stored v1 payloads (engine/tests/fixtures/*.v1.json) come back as the
//! current event types through the upcaster chain.

use payorch_engine::codec::{self, CodecError};
use payorch_schemas::events::order::{Authorised, PaymentPlaced};
use payorch_schemas::events::{EventDecodeError, OrderEvent};
use payorch_schemas::{Currency, Money};

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn v1_payment_placed_split_amount_becomes_money() {
    let e: OrderEvent =
        codec::decode("payment_placed", 1, &fixture("payment_placed.v1.json")).unwrap();
    let OrderEvent::PaymentPlaced(placed) = e else {
        panic!("{e:?}")
    };
    let PaymentPlaced {
        amount, instrument, ..
    } = std::sync::Arc::unwrap_or_clone(placed);
    assert_eq!(amount, Money::new(1299, Currency::EUR));
    assert_eq!(
        instrument.card.and_then(|c| c.last4).as_deref(),
        Some("1111")
    );
}

#[test]
fn v1_authorised_order_id_is_renamed() {
    let e: OrderEvent = codec::decode("authorised", 1, &fixture("authorised.v1.json")).unwrap();
    let OrderEvent::Authorised(Authorised {
        gateway_order_id,
        amount,
        ..
    }) = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(gateway_order_id.as_str(), "GW10000000000000001");
    assert_eq!(amount.minor, 1299);
}

#[test]
fn unchanged_types_pass_through_and_a_v1_stream_folds() {
    let history: Vec<OrderEvent> = [
        ("payment_placed", "payment_placed.v1.json"),
        ("authorisation_requested", "authorisation_requested.v1.json"),
        ("authorised", "authorised.v1.json"),
    ]
    .iter()
    .map(|(t, f)| codec::decode(t, 1, &fixture(f)).unwrap())
    .collect();
    let state = payorch_engine::order::fold(&history);
    assert_eq!(state.phase(), payorch_engine::order::Phase::Authorised);
    let captured: OrderEvent = codec::decode("captured", 1, &fixture("captured.v1.json")).unwrap();
    assert_eq!(captured.event_type(), "captured");
}

#[test]
fn current_payloads_decode_directly_and_future_versions_are_refused() {
    let json = r#"{"event_type":"voided"}"#;
    let e: OrderEvent = codec::decode("voided", OrderEvent::SCHEMA_VERSION, json).unwrap();
    assert_eq!(e.event_type(), "voided");
    let err =
        codec::decode::<OrderEvent>("voided", OrderEvent::SCHEMA_VERSION + 1, json).unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::Decode(EventDecodeError::UnsupportedVersion { .. })
        ),
        "{err}"
    );
    let err = codec::decode::<OrderEvent>(
        "payment_placed",
        1,
        r#"{"amount":{"minor":1,"currency":"EUR"}}"#,
    )
    .unwrap_err();
    assert!(matches!(err, CodecError::Upcast { from: 1, .. }), "{err}");
}
