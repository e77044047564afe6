//! Card secrets never show up in `Debug`/`Display` output of the PayKKa
//! types, yet are serialized for real (they must reach PayKKa).

use payorch_schemas::money::{Currency, Money};
use payorch_schemas::paykka::*;

const PAN: &str = "4000056655665556";
const CVV: &str = "987";

fn card_request() -> InitiateRequest {
    let mut r = InitiateRequest::new(
        "10000000000001",
        1_704_067_200_000,
        PaymentType::Purchase,
        "ord-1",
        Money::new(1299, Currency::EUR),
        PaymentRequest::card(PAN, "07", "2031", CVV),
    );
    r.return_url = Some("https://merchant.example/return".into());
    r.payment.holder_name = Some("Jane Doe".into());
    r
}

#[test]
fn debug_of_a_card_request_has_no_pan_or_cvv() {
    let r = card_request();
    for text in [
        format!("{r:?}"),
        format!("{r:#?}"),
        format!("{:?}", r.payment),
    ] {
        assert!(!text.contains(PAN), "PAN leaked: {text}");
        assert!(!text.contains(CVV), "CVV leaked: {text}");
        assert!(
            !text.contains("05665566"),
            "PAN middle digits leaked: {text}"
        );
        assert!(text.contains("400005******5556"), "mask missing: {text}");
        assert!(text.contains("Cvv(***)"), "cvv mask missing: {text}");
    }
    // ...while the body PayKKa receives has the real values.
    let body = serde_json::to_string(&r).unwrap();
    assert!(body.contains(&format!("\"card_no\":\"{PAN}\"")), "{body}");
    assert!(body.contains(&format!("\"cvv\":\"{CVV}\"")), "{body}");
}

#[test]
fn debug_of_encrypted_card_and_wallet_payloads_is_masked() {
    let secrets = [
        "ENC-PAN-SECRET",
        "ENC-MM-SECRET",
        "ENC-YY-SECRET",
        "ENC-CVV-SECRET",
    ];
    let mut r = card_request();
    r.payment = PaymentRequest::encrypted_card(
        secrets[0],
        secrets[1],
        secrets[2],
        Some(secrets[3].to_owned()),
    );
    let text = format!("{r:?}");
    for s in secrets {
        assert!(!text.contains(s), "{s} leaked: {text}");
    }
    let body = serde_json::to_string(&r).unwrap();
    for s in secrets {
        assert!(body.contains(s), "{s} missing from the body");
    }

    let token = r#"{"signature":"WALLET-SECRET","protocolVersion":"ECv2"}"#;
    r.payment = PaymentRequest::wallet(PaymentMethod::GooglePay, token);
    let text = format!("{r:?}");
    assert!(!text.contains("WALLET-SECRET"), "{text}");
    assert!(serde_json::to_string(&r).unwrap().contains("WALLET-SECRET"));
}

#[test]
fn parsed_requests_stay_masked() {
    // A request read back (sandbox side) is just as safe to log.
    let body = serde_json::to_string(&card_request()).unwrap();
    let parsed: InitiateRequest = serde_json::from_str(&body).unwrap();
    let text = format!("{parsed:?}");
    assert!(!text.contains(PAN) && !text.contains(CVV), "{text}");
}

#[test]
fn cryptogram_is_masked_in_responses_and_notifications() {
    let n: PaymentNotification = serde_json::from_str(
        r#"{"order_id":"GW1","authentication_result":{"cryptogram":"CAVV-SECRET-VALUE","eci":"05"}}"#,
    )
    .unwrap();
    let text = format!("{n:?}");
    assert!(!text.contains("CAVV-SECRET-VALUE"), "{text}");
    assert!(
        text.contains("05"),
        "non-secret fields still visible: {text}"
    );
}

#[test]
fn card_number_helpers() {
    let pan = CardNumber::new(PAN);
    assert_eq!(pan.bin(), Some("400005"));
    assert_eq!(pan.last4(), Some("5556"));
    assert_eq!(pan.to_string(), "400005******5556");
    assert_eq!(pan.expose(), PAN);
    assert_eq!(format!("{}", Cvv::new(CVV)), "***");
    // Malformed input could be anything: nothing of it is shown.
    let junk = CardNumber::new("4000 0566 5566 5556");
    assert_eq!(format!("{junk:?}"), "CardNumber(****)");
    assert_eq!(junk.bin(), None);
}
