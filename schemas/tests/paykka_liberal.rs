//! Read liberally, write strictly (issue 17, point 6): answers and
//! notifications shaped like PayKKa's v1.0 examples and a PHP client's
//! (integer ids, explicit nulls, unknown fields and enum values,
//! offset-less times) parse, keep what they do not know, and what we build
//! serializes exactly as before.

use payorch_schemas::Money;
use payorch_schemas::money::Currency;
use payorch_schemas::paykka::{
    CheckoutSessionRequest, GatewayOrderStatus, InitiateRequest, Notification, PaymentRequest,
    PaymentResponse, PaymentType, RefundResponse,
};
use serde_json::json;

#[test]
fn a_payment_answer_with_integer_ids_nulls_and_unknown_fields_is_read_and_kept() {
    let body = r#"{
        "merchant_id": 18356675194960,
        "timestamp": "1733455355000",
        "trans_id": 9000001,
        "order_id": "GW2025120600000001",
        "session_id": null,
        "status": "PARTIALLY_SETTLED_LATER",
        "amount": "1299",
        "currency": "EUR",
        "payment": {"payment_method": "BANKCARD", "store_payment_method": null},
        "card_info": {"bin": 411111, "last4": "1111", "card_brand": "VISA"},
        "balances": {"authed_amount": 1299, "captured_amount": null},
        "expire_time": "2026-12-06 12:02:35",
        "risk_score": 12,
        "acquirer": {"name": "x"}
    }"#;
    let r: PaymentResponse = serde_json::from_str(body).expect("liberal read");
    assert_eq!(r.merchant_id.as_deref(), Some("18356675194960"));
    assert_eq!(r.trans_id.as_deref(), Some("9000001"));
    assert_eq!(r.session_id, None);
    assert_eq!(r.card_info.as_ref().unwrap().bin.as_deref(), Some("411111"));
    assert_eq!(r.amount, Some(1299));
    assert_eq!(r.timestamp, Some(1_733_455_355_000));
    assert_eq!(
        r.status,
        Some(GatewayOrderStatus::Unknown(
            "PARTIALLY_SETTLED_LATER".into()
        ))
    );
    assert_eq!(
        r.expire_time.as_ref().unwrap().parse().unwrap(),
        time::macros::datetime!(2026-12-06 04:02:35 UTC)
    );
    // Unknown fields are kept and written back.
    assert_eq!(r.extra["risk_score"], json!(12));
    let again = serde_json::to_value(&r).unwrap();
    assert_eq!(again["acquirer"], json!({"name": "x"}));
    assert_eq!(again["status"], "PARTIALLY_SETTLED_LATER");
}

#[test]
fn a_refund_answer_and_notifications_with_integer_ids_parse() {
    let r: RefundResponse = serde_json::from_value(json!({
        "merchant_id": 18356675194960u64, "refund_trans_id": 77, "refund_order_id": "RG1",
        "ori_order_id": "GW1", "status": "SUCCESS", "amount": 100, "currency": "EUR",
        "reason_text": "kept"
    }))
    .unwrap();
    assert_eq!(r.refund_trans_id.as_deref(), Some("77"));
    assert_eq!(r.extra["reason_text"], "kept");

    let n = Notification::from_slice(
        br#"{"notify_type":"PAYMENT.SUCCESS","merchant_id":18356675194960,"timestamp":1733455355,
             "trans_id":9000001,"order_id":"GW1","status":"SUCCESS","amount":1299,"currency":"EUR",
             "token":null,"new_field":[1,2]}"#,
    )
    .unwrap();
    match n {
        Notification::Payment(p) => {
            assert_eq!(p.merchant_id.as_deref(), Some("18356675194960"));
            assert_eq!(p.trans_id.as_deref(), Some("9000001"));
            assert_eq!(p.extra["new_field"], json!([1, 2]));
        }
        other => panic!("{other:?}"),
    }
    let n = Notification::from_slice(
        br#"{"notify_type":"REFUND.SUCCESS","merchant_id":1,"timestamp":1733455355,
             "trans_id":77,"refund_order_id":"RG1","order_id":"GW1","status":"SUCCESS"}"#,
    )
    .unwrap();
    assert!(matches!(n, Notification::Refund(r) if r.trans_id.as_deref() == Some("77")));
}

#[test]
fn a_php_clients_requests_parse_and_validate() {
    let initiate: InitiateRequest = serde_json::from_str(
        r#"{
        "version": "v1.2",
        "merchant_id": 10000000000001,
        "timestamp": 1733455355000,
        "payment_type": "PURCHASE",
        "authorisation_type": null,
        "capture_method": null,
        "trans_id": 37,
        "currency": "EUR",
        "amount": "1299",
        "notify_url": null,
        "return_url": "https://shop.example/return",
        "expire_time": "2026-12-06 12:02:35",
        "payment": {"payment_method": "BANKCARD", "card_no": "4111111111111111",
                    "exp_month": "07", "exp_year": "2031", "cvv": "123", "holder_name": null},
        "goods": [{"id": 37, "name": "Hat", "price": 1299, "quantity": 1, "description": null}],
        "customer": {"id": 12, "registration_time": "2024-01-02 03:04:05", "gender": null},
        "shipping": null,
        "bill": null
    }"#,
    )
    .expect("PHP-shaped initiate");
    assert_eq!(initiate.merchant_id, "10000000000001");
    assert_eq!(initiate.trans_id, "37");
    assert_eq!(
        initiate.goods.as_ref().unwrap()[0].id.as_deref(),
        Some("37")
    );
    assert_eq!(
        initiate.customer.as_ref().unwrap().id.as_deref(),
        Some("12")
    );
    initiate.validate().expect("valid");

    let session: CheckoutSessionRequest = serde_json::from_value(json!({
        "merchant_id": 10000000000001u64, "timestamp": 1733455355000u64, "trans_id": 38,
        "amount": 500, "currency": "EUR", "payment_type": "PURCHASE", "session_mode": "HOSTED",
        "return_url": "https://shop.example/return",
        "expire_time": "2026-12-06 12:02:35", "notify_url": null, "goods": null
    }))
    .expect("PHP-shaped session");
    assert_eq!(session.trans_id, "38");
    session.validate().expect("valid");
}

#[test]
fn what_we_build_is_written_strictly_as_before() {
    let mut req = InitiateRequest::new(
        "10000000000001",
        1_733_455_355_000,
        PaymentType::Purchase,
        "37",
        Money::new(1299, Currency::new("EUR").unwrap()),
        PaymentRequest::card("4111111111111111", "07", "2031", "123"),
    );
    req.return_url = Some("https://shop.example/return".into());
    let v = serde_json::to_value(&req).unwrap();
    assert_eq!(v["merchant_id"], "10000000000001");
    assert_eq!(v["trans_id"], "37");
    assert_eq!(v["amount"], 1299);
    assert!(v.get("extra").is_none());
    assert!(v.get("goods").is_none(), "None is omitted, never null");
    let r = PaymentResponse {
        trans_id: Some("37".into()),
        ..PaymentResponse::default()
    };
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"trans_id":"37"}"#,
        "an empty `extra` writes nothing"
    );
}
