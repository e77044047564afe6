//! Every JSON example of `shared/paykka-api/endpoints.md` (and the recurring
//! query example described there in prose) parses into its typed model and
//! re-serializes to equivalent JSON; plus forward-compatibility behaviour:
//! unknown fields, unknown enum values, spelling variants, string amounts.

use payorch_schemas::money::{Currency, Money};
use payorch_schemas::paykka::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Parses `text` as `T`, re-serializes, and checks the JSON is equivalent.
fn round_trip<T: DeserializeOwned + Serialize>(text: &str) -> T {
    let parsed: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("parse {text}: {e}"));
    let again = serde_json::to_value(&parsed).expect("serialize");
    let original: Value = serde_json::from_str(text).expect("valid json");
    assert_eq!(again, original, "re-serialization differs");
    parsed
}

// endpoints.md §1, request example.
const INITIATE_REQUEST: &str = r#"{"merchant_id":"10000000000001","payment_type":"PURCHASE","authorisation_type":"FINAL_AUTH",
 "capture_method":"AUTOMATIC","trans_id":"ord-20240101-0001","timestamp":1704067200000,
 "amount":1299,"currency":"EUR","notify_url":"https://merchant.example/paykka/notify",
 "return_url":"https://merchant.example/paykka/return",
 "payment":{"payment_method":"BANKCARD","encrypted_card_no":"<enc>","encrypted_exp_year":"<enc>",
            "encrypted_exp_month":"<enc>","encrypted_cvv":"<enc>"}}"#;

// endpoints.md §1, response example.
const INITIATE_RESPONSE: &str = r#"{"ret_code":"000000","ret_msg":"Success",
 "data":{"timestamp":1704067200000,"merchant_id":"10000000000001","trans_id":"ord-20240101-0001",
  "order_id":"GW10000000000000001","status":"AUTHORIZED","authorisation_type":"FINAL_AUTH",
  "capture_method":"AUTOMATIC","amount":1299,"currency":"EUR","payment":{"payment_method":"BANKCARD"},
  "card_info":{"bin":"411111","last4":"1111","card_brand":"VISA"},
  "balances":{"authed_amount":1299,"captured_amount":0,"able_to_capture_amount":1299,"voided_amount":0,
              "able_to_void_amount":1299,"refunded_amount":0,"able_to_refund_amount":0}}}"#;

// endpoints.md §2, the recurring guide's query `data` written out from the
// prose (field order as described; values illustrative).
const RECURRING_QUERY_RESPONSE: &str = r#"{"ret_code":"000000","ret_msg":"Success",
 "data":{"error_code":"0000","error_description":"request success","merchant_id":"10000000000001",
  "trans_id":"sub-20240101-0001","order_id":"GW10000000000000002","status":"SUCCESS",
  "authorisation_type":"FINAL_AUTH","capture_method":"AUTOMATIC","amount":990,"currency":"EUR",
  "pay_finish_time":"2024-01-01T08:01:00+08:00","token":"TK32896597324223532",
  "recurring_agreement_id":"RA10000000000000001"}}"#;

// endpoints.md §1 "Rules": a declined card (prose written out).
const DECLINE_RESPONSE: &str = r#"{"ret_code":"000000","ret_msg":"Success",
 "data":{"error_code":"2099","error_description":"Invalid Card","merchant_id":"10000000000001",
  "trans_id":"ord-20240101-0002","order_id":"GW10000000000000003","status":"FAILURE",
  "amount":1299,"currency":"EUR"}}"#;

// endpoints.md §4.
const VOID_REQUEST: &str = r#"{"merchant_id":"10000000000001","timestamp":1704067200000,"order_id":"GW10000000000000001","reason":"REQUESTED_BY_CUSTOMER"}"#;

// endpoints.md §6 (and authentication.md §3.4).
const TOKEN_REMOVE_REQUEST: &str = r#"{"merchant_id":"10000000000001","timestamp":1704067200000,"token":"TK10000000000000001","shopper_reference":"cust-0001"}"#;

// endpoints.md §9 (URL shortened in the doc; completed here).
const SESSION_RESPONSE: &str = r#"{"ret_code":"000000","ret_msg":"Success","data":{"session_id":"CS10000000000000001","session_url":"https://checkout-sandbox.aq.paykka.com/cp/CS10000000000000001"}}"#;

// endpoints.md §13.
const PAYMENT_NOTIFICATION: &str = r#"{"timestamp":1704067260000,"notify_type":"PAYMENT.SUCCESS","error_code":"0000","error_description":"request success","merchant_id":"10000000000001","trans_id":"ord-20240101-0001","order_id":"GW10000000000000001","status":"SUCCESS","amount":1299,"currency":"EUR","pay_finish_time":"2024-01-01T08:01:00+08:00","payment":{"payment_method":"BANKCARD"},"card_info":{"bin":"411111","last4":"1111","card_brand":"VISA"}}"#;

// endpoints.md §13 acknowledgement and §6 token remove answer.
const ACK: &str = r#"{"ret_code":"000000","ret_msg":"Success"}"#;

#[test]
fn initiate_request_example() {
    let req: InitiateRequest = round_trip(INITIATE_REQUEST);
    assert_eq!(req.payment_type, PaymentType::Purchase);
    assert_eq!(req.amount_money(), Money::new(1299, Currency::EUR));
    assert_eq!(req.payment.payment_method, PaymentMethod::BankCard);
    assert_eq!(
        req.payment.encrypted_card_no.as_ref().map(|s| s.expose()),
        Some("<enc>")
    );
    assert_eq!(req.validate(), Ok(()));
}

#[test]
fn initiate_response_example() {
    let env: Envelope<PaymentResponse> = round_trip(INITIATE_RESPONSE);
    assert!(env.is_success());
    let data = env.data.expect("data");
    assert_eq!(data.status, Some(GatewayOrderStatus::Authorized));
    assert_eq!(data.order_id.as_deref(), Some("GW10000000000000001"));
    assert_eq!(
        data.amount_money().unwrap(),
        Some(Money::new(1299, Currency::EUR))
    );
    let b = data.balances().unwrap().expect("balances");
    assert_eq!(b.able_to_capture, Money::new(1299, Currency::EUR));
    assert_eq!(b.able_to_refund, Money::zero(Currency::EUR));
    assert!(b.is_consistent());
    let card = data.card_info.clone().expect("card_info");
    assert_eq!(card.card_brand, Some(CardBrand::Visa));
    assert!(data.pending_challenge_url().is_none());
    assert!(data.is_error_free());
}

#[test]
fn recurring_query_example() {
    let env: Envelope<PaymentResponse> = round_trip(RECURRING_QUERY_RESPONSE);
    let data = env.data.expect("data");
    assert_eq!(data.status, Some(GatewayOrderStatus::Success));
    assert!(data.status.as_ref().unwrap().is_final());
    assert_eq!(data.token.as_deref(), Some("TK32896597324223532"));
    assert_eq!(
        data.recurring_agreement_id.as_deref(),
        Some("RA10000000000000001")
    );
    let finished = data.pay_finish_time.expect("time").parse().expect("parses");
    assert_eq!(finished.unix_timestamp(), 1_704_067_260);
}

#[test]
fn decline_example() {
    let env: Envelope<PaymentResponse> = round_trip(DECLINE_RESPONSE);
    assert!(env.is_success(), "a decline is not a transport error");
    let data = env.data.expect("data");
    assert_eq!(data.status, Some(GatewayOrderStatus::Failure));
    assert!(!data.is_error_free());
    assert_eq!(data.error_code.as_deref(), Some("2099"));
}

#[test]
fn void_request_example() {
    let req: VoidRequest = round_trip(VOID_REQUEST);
    assert_eq!(req.reason, Some(Reason::RequestedByCustomer));
    assert_eq!(req.validate(), Ok(()));
}

#[test]
fn token_remove_example_serializes_byte_for_byte() {
    let req: TokenRemoveRequest = round_trip(TOKEN_REMOVE_REQUEST);
    assert_eq!(req.validate(), Ok(()));
    // The signing example of authentication.md §3.4 relies on these exact bytes.
    assert_eq!(serde_json::to_string(&req).unwrap(), TOKEN_REMOVE_REQUEST);
}

#[test]
fn session_response_example() {
    let env: Envelope<CheckoutSessionResponse> = round_trip(SESSION_RESPONSE);
    let data = env.data.expect("data");
    assert_eq!(data.session_id.as_deref(), Some("CS10000000000000001"));
}

#[test]
fn payment_notification_example() {
    let n: PaymentNotification = round_trip(PAYMENT_NOTIFICATION);
    assert_eq!(n.notify_type, Some(NotifyType::PaymentSuccess));
    assert_eq!(n.effective_status(), Some(GatewayOrderStatus::Success));
    assert_eq!(n.timestamp_ms(), Some(1_704_067_260_000));
    match Notification::from_slice(PAYMENT_NOTIFICATION.as_bytes()).unwrap() {
        Notification::Payment(p) => assert_eq!(*p, n),
        other => panic!("routed wrongly: {other:?}"),
    }
}

#[test]
fn ack_example() {
    let ack: Ack = round_trip(ACK);
    assert_eq!(ack, Ack::success());
    let env: Envelope<Value> = round_trip(ACK);
    assert!(env.is_success() && env.data.is_none());
}

#[test]
fn refund_notification_from_the_schema_fields() {
    // endpoints.md §14 lists the fields without a literal example; this is
    // one with every listed field.
    let text = r#"{"timestamp":1659999999,"notify_type":"REFUND.SUCCESS","error_code":"0000",
      "error_description":"request success","merchant_id":"10000000000001","trans_id":"rf-0001",
      "refund_order_id":"RG10000000000000001","order_id":"GW10000000000000001","status":"SUCCESS",
      "amount":500,"currency":"EUR","pay_finish_time":"2024-01-02T10:00:00+0800",
      "expire_time":"2019-08-24T14:15:22.123Z"}"#;
    let n: RefundNotification = round_trip(text);
    assert_eq!(n.timestamp_ms(), Some(1_659_999_999_000), "seconds scaled");
    assert_eq!(n.effective_status(), Some(RefundStatus::Success));
    assert!(n.pay_finish_time.as_ref().unwrap().parse().is_ok());
    assert!(n.expire_time.as_ref().unwrap().parse().is_ok());
    match Notification::from_slice(text.as_bytes()).unwrap() {
        Notification::Refund(r) => assert_eq!(*r, n),
        other => panic!("routed wrongly: {other:?}"),
    }
}

#[test]
fn refund_notification_accepts_v3_key_names() {
    let n: RefundNotification = serde_json::from_value(json!({
        "event_type": "REFUND.FAILURE",
        "refund_trans_id": "rf-0002",
        "ori_order_id": "GW1",
        "amount": "300",
    }))
    .unwrap();
    assert_eq!(n.refund_trans_id(), Some("rf-0002"));
    assert_eq!(n.original_order_id(), Some("GW1"));
    assert_eq!(n.kind(), Some(&NotifyType::RefundFailure));
    assert_eq!(n.effective_status(), Some(RefundStatus::Failure));
    assert_eq!(n.amount, Some(300));
    // Both spellings at once still parse (no serde alias collision).
    let both: RefundNotification = serde_json::from_value(json!({
        "notify_type": "REFUND.SUCCESS", "event_type": "REFUND.SUCCESS",
        "trans_id": "rf-3", "refund_trans_id": "rf-3",
    }))
    .unwrap();
    assert_eq!(both.refund_trans_id(), Some("rf-3"));
    let p: PaymentNotification =
        serde_json::from_value(json!({"event_type": "PAYMENT.CANCELED"})).unwrap();
    assert_eq!(p.effective_status(), Some(GatewayOrderStatus::Canceled));
}

#[test]
fn notification_without_notify_type_routes_by_refund_order_id() {
    let refund = json!({"refund_order_id":"RG1","status":"PROCESSING"});
    assert!(matches!(
        Notification::from_value(refund).unwrap(),
        Notification::Refund(_)
    ));
    let payment = json!({"order_id":"GW1","status":"PROCESSING"});
    assert!(matches!(
        Notification::from_value(payment).unwrap(),
        Notification::Payment(_)
    ));
}

#[test]
fn other_request_bodies_round_trip() {
    // Bodies described in tables only (endpoints.md §2, §3, §5, §7–§12).
    round_trip::<QueryRequest>(r#"{"merchant_id":"1","timestamp":1704067200000,"order_id":"GW1"}"#);
    round_trip::<CaptureRequest>(
        r#"{"merchant_id":"1","timestamp":1704067200000,"order_id":"GW1","amount":500,"currency":"EUR"}"#,
    );
    round_trip::<TokenQueryRequest>(
        r#"{"merchant_id":"1","timestamp":1704067200000,"shopper_reference":"cust-0001"}"#,
    );
    round_trip::<RecurringCancelRequest>(
        r#"{"merchant_id":"1","timestamp":1704067200000,"recurring_agreement_id":"RA1"}"#,
    );
    round_trip::<ApplePaySessionRequest>(
        r#"{"merchant_id":"1","timestamp":1704067200000,"display_name":"Shop","domain_name":"www.your-domain.com"}"#,
    );
    round_trip::<CheckoutSessionRequest>(
        r#"{"merchant_id":"1","timestamp":1704067200000,"payment_type":"RECURRING","trans_id":"t1",
            "currency":"HKD","amount":800,"notify_url":"https://m.example/n","return_url":"https://m.example/r",
            "expire_time":"2025-05-05T17:17:24+08:00","session_mode":"HOSTED",
            "allowed_payment_methods":["GOOGLE_PAY","BANKCARD"],
            "payment":{"store_payment_method":true,"token_usage":"SUBSCRIPTION","shopper_reference":"c1"},
            "authentication":{"challenge_indicator":"AUTO"},
            "bill":{"billing_address_collection":"REQUIRED","country":"AX","area_code":"+852"},
            "goods":[{"id":"6916003178438","name":"苹果","category":"水果","price":625,"quantity":2,
                      "delivery_date":"2023-11-24T11:34:37+0800","link":"https://www.apple.com"}]}"#,
    );
    round_trip::<CheckoutSessionQueryRequest>(
        r#"{"merchant_id":"1","timestamp":1704067200000,"session_id":"CS1"}"#,
    );
    round_trip::<RefundRequest>(
        r#"{"merchant_id":"1","timestamp":1704067200000,"refund_trans_id":"rf-1","ori_order_id":"GW1",
            "refund_amount":500,"currency":"EUR","reason":"OTHER","notify_url":"https://m.example/rn"}"#,
    );
    round_trip::<RefundQueryRequest>(
        r#"{"merchant_id":"1","timestamp":1704067200000,"refund_trans_id":"rf-1"}"#,
    );
    let refund: Envelope<RefundResponse> = round_trip(
        r#"{"ret_code":"000000","ret_msg":"Success","data":{"error_code":"0000","error_description":"request success",
            "merchant_id":"1","refund_trans_id":"rf-1","refund_order_id":"RG1","status":"REVIEWING",
            "amount":500,"currency":"EUR"}}"#,
    );
    let data = refund.data.unwrap();
    assert!(!data.status.unwrap().is_final());
    assert_eq!(data.amount.unwrap(), 500);
}

#[test]
fn initiate_with_every_nested_object_round_trips() {
    let text = r#"{"merchant_id":"1","payment_type":"RECURRING","trans_id":"t1","timestamp":1704067200000,
      "amount":"1250","currency":"USD","return_url":"https://m.example/r","mit":false,
      "expire_time":"2024-01-01T08:05:00+08:00",
      "payment":{"payment_method":"BANKCARD","store_payment_method":true,"token_usage":"SUBSCRIPTION",
                 "shopper_reference":"c1","card_no":"4111111111111111","exp_year":"2031","exp_month":"07",
                 "cvv":"123","holder_name":"A B"},
      "authentication":{"challenge_indicator":"AUTO","authentication_only":false,"attempt":"AUTO","exemption":"LOW_VALUE"},
      "browser":{"user_agent":"UA","color_depth":"24","language":"en-US","java_enabled":false,"device_type":"PC",
                 "terminal_type":"WEB","device_os":"WINDOWS","timezone_offset":"+00:00","screen_height":"1080",
                 "screen_width":"1920","cookies":"x","device_finger_print_id":"d","fraud_detection_id":"f"},
      "goods":[{"id":"g","name":"n","description":"d","category":"c","brand":"b","link":"https://x.example",
                "price":625,"quantity":2,"delivery_date":"2023-11-24T11:34:37+0800","picture_url":"https://x.example/p"}],
      "bill":{"first_name":"A","middle_name":"M","last_name":"B","address_line1":"1","address_line2":"2","country":"AX",
              "state":"S","city":"C","postal_code":"999077","email":"a@b.example","area_code":"+852",
              "phone_number":"123","descriptor":"SHOP"},
      "shipping":{"first_name":"A","last_name":"B","country":"HK","city":"C"},
      "customer":{"id":"c1","registration_time":"2023-11-24T11:34:37+0800","past_transactions":3,"email":"a@b.example",
                  "order_ip":"1.2.3.4","pay_ip":"1.2.3.4","level":"gold","gender":"F","date_of_birth":"1990-01-01"}}"#;
    let req: InitiateRequest = serde_json::from_str(text).unwrap();
    assert_eq!(req.amount, 1250, "string amount accepted");
    assert_eq!(req.validate(), Ok(()));
    let mut expected: Value = serde_json::from_str(text).unwrap();
    expected["amount"] = json!(1250);
    assert_eq!(serde_json::to_value(&req).unwrap(), expected);
}

#[test]
fn full_3ds_record_round_trips() {
    let text = r#"{"order_id":"GW1","status":"PROCESSING","authentication_result":{
        "authentication_url":"https://acs.example/challenge","enroll_status":"Y","upgraded":true,"downgraded":false,
        "version":"2.2.0","upgrade_reason":"r","authentication_status":"C","cryptogram":"AAABBBCCC=",
        "xid":"x","exemption":"LOW_VALUE","mode":"CHALLENGE","exemption_applied":"NONE","eci":"05"}}"#;
    let r: PaymentResponse = round_trip(text);
    assert_eq!(
        r.pending_challenge_url(),
        Some("https://acs.example/challenge")
    );
    let debug = format!("{r:?}");
    assert!(!debug.contains("AAABBBCCC"), "cryptogram leaked: {debug}");
}

#[test]
fn unknown_fields_are_tolerated_everywhere() {
    let mut resp: Value = serde_json::from_str(INITIATE_RESPONSE).unwrap();
    resp["brand_new"] = json!({"x": 1});
    resp["data"]["risk_score"] = json!(12);
    resp["data"]["card_info"]["issuer_country"] = json!("DE");
    resp["data"]["balances"]["disputed_amount"] = json!(0);
    let env: Envelope<PaymentResponse> = serde_json::from_value(resp).unwrap();
    assert_eq!(env.data.unwrap().amount, Some(1299));

    let mut req: Value = serde_json::from_str(INITIATE_REQUEST).unwrap();
    req["version"] = json!("v1.2");
    req["payment"]["future"] = json!(true);
    serde_json::from_value::<InitiateRequest>(req).unwrap();

    let mut n: Value = serde_json::from_str(PAYMENT_NOTIFICATION).unwrap();
    n["dispute_stage"] = json!("DISPUTE_CREATED");
    serde_json::from_value::<PaymentNotification>(n).unwrap();
}

#[test]
fn unknown_enum_values_round_trip_unchanged() {
    let text = r#"{"order_id":"GW1","status":"ON_HOLD","payment_type":"INSTALMENT","capture_method":"DELAYED",
        "authorisation_type":"INCREMENTAL","payment":{"payment_method":"GrabPay","token_usage":"UNSCHEDULED"},
        "card_info":{"card_brand":"Elo"}}"#;
    let r: PaymentResponse = round_trip(text);
    assert_eq!(
        r.status,
        Some(GatewayOrderStatus::Unknown("ON_HOLD".into()))
    );
    assert!(!r.status.as_ref().unwrap().is_final());
    assert_eq!(
        r.card_info.unwrap().card_brand,
        Some(CardBrand::Unknown("Elo".into()))
    );
    let n: PaymentNotification = round_trip(r#"{"notify_type":"PAYMENT.EXPIRED"}"#);
    assert_eq!(
        n.notify_type,
        Some(NotifyType::Unknown("PAYMENT.EXPIRED".into()))
    );
    assert_eq!(n.effective_status(), None);
    let rn: RefundNotification =
        round_trip(r#"{"notify_type":"REFUND.REVERSED","status":"CHARGEBACK"}"#);
    assert!(!rn.status.unwrap().is_final());
    assert!(matches!(
        Notification::from_slice(br#"{"notify_type":"REFUND.REVERSED"}"#).unwrap(),
        Notification::Refund(_)
    ));
}

#[test]
fn spellings_normalise_and_serialize_canonically() {
    let p: PaymentRequest =
        serde_json::from_str(r#"{"payment_method":"BankCard","token_usage":"card_on_file"}"#)
            .unwrap();
    assert_eq!(p.payment_method, PaymentMethod::BankCard);
    assert_eq!(p.token_usage, Some(TokenUsage::CardOnFile));
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(
        v,
        json!({"payment_method":"BANKCARD","token_usage":"CARD_ON_FILE"})
    );

    for (raw, want) in [
        ("GooglePay", PaymentMethod::GooglePay),
        ("GOOGLE_PAY", PaymentMethod::GooglePay),
        ("ApplePay", PaymentMethod::ApplePay),
        ("APPLE_PAY", PaymentMethod::ApplePay),
        ("BANKCARD", PaymentMethod::BankCard),
        ("WechatPayGlobal", PaymentMethod::WechatPayGlobal),
    ] {
        let got: PaymentMethod = serde_json::from_value(json!(raw)).unwrap();
        assert_eq!(got, want, "{raw}");
    }
    assert_eq!(
        serde_json::to_value(PaymentMethod::ApplePay).unwrap(),
        json!("APPLE_PAY")
    );
    let n: NotifyType = serde_json::from_value(json!("payment.canceled")).unwrap();
    assert_eq!(serde_json::to_value(&n).unwrap(), json!("PAYMENT.CANCELED"));
    let s: SessionMode = serde_json::from_value(json!("DropIn")).unwrap();
    assert_eq!(s, SessionMode::DropIn);
}

#[test]
fn amounts_as_strings_are_accepted_and_written_as_integers() {
    let r: RefundRequest = serde_json::from_value(json!({
        "merchant_id":"1","timestamp":1,"refund_trans_id":"r","ori_order_id":"GW1",
        "refund_amount":"300","currency":"HKD"
    }))
    .unwrap();
    assert_eq!(r.refund_amount, 300);
    assert_eq!(
        serde_json::to_value(&r).unwrap()["refund_amount"],
        json!(300)
    );

    let b: Balances =
        serde_json::from_value(json!({"authed_amount":"1690","captured_amount":0})).unwrap();
    assert_eq!(b.authed_amount, Some(1690));
    assert_eq!(
        serde_json::to_value(&b).unwrap(),
        json!({"authed_amount":1690,"captured_amount":0})
    );

    for bad in [
        json!("12.99"),
        json!("abc"),
        json!(""),
        json!(12.5),
        json!(true),
    ] {
        let err = serde_json::from_value::<Balances>(json!({ "authed_amount": bad.clone() }));
        assert!(err.is_err(), "{bad} accepted");
    }
    let null: Balances = serde_json::from_value(json!({"authed_amount": null})).unwrap();
    assert_eq!(null.authed_amount, None);
}

#[test]
fn request_currency_must_be_iso_4217_but_response_currency_may_be_anything() {
    let err = serde_json::from_value::<RefundRequest>(json!({
        "merchant_id":"1","timestamp":1,"refund_trans_id":"r","ori_order_id":"GW1",
        "refund_amount":300,"currency":"XYZ"
    }))
    .unwrap_err();
    assert!(err.to_string().contains("XYZ"), "{err}");

    let r: PaymentResponse = round_trip(r#"{"amount":100,"currency":"XYZ"}"#);
    assert!(r.amount_money().is_err());
    let none: PaymentResponse = round_trip(r#"{"amount":100}"#);
    assert_eq!(none.amount_money().unwrap(), None);
}

#[test]
fn date_times_keep_their_original_text() {
    for t in [
        "2025-05-05T17:17:24+08:00",
        "2023-11-24T11:34:37+0800",
        "2019-08-24T14:15:22.123Z",
    ] {
        let n: PaymentNotification = round_trip(&format!(
            r#"{{"pay_finish_time":"{t}","expire_time":"{t}"}}"#
        ));
        assert_eq!(n.pay_finish_time.as_ref().unwrap().as_str(), t);
        assert!(n.pay_finish_time.unwrap().parse().is_ok(), "{t}");
    }
}

#[test]
fn token_query_response_shapes() {
    let list: TokenQueryResponse = serde_json::from_value(json!([
        {"token":"TK1","shopper_reference":"c1","payment_method":"BANKCARD",
         "card_info":{"bin":"424242","last4":"4242","card_brand":"VISA"}},
        {"token":"TK2"}
    ]))
    .unwrap();
    assert_eq!(list.tokens.len(), 2);
    let wrapped: TokenQueryResponse =
        serde_json::from_value(json!({"shopper_reference":"c1","tokens":[{"token":"TK1"}]}))
            .unwrap();
    assert_eq!(wrapped.shopper_reference.as_deref(), Some("c1"));
    assert_eq!(wrapped.tokens[0].token.as_deref(), Some("TK1"));
    let single: TokenQueryResponse =
        serde_json::from_value(json!({"token":"TK9","shopper_reference":"c1"})).unwrap();
    assert_eq!(single.tokens.len(), 1);
    let none: TokenQueryResponse =
        serde_json::from_value(json!({"shopper_reference":"c1"})).unwrap();
    assert!(none.tokens.is_empty());
    let again: TokenQueryResponse =
        serde_json::from_value(serde_json::to_value(&wrapped).unwrap()).unwrap();
    assert_eq!(again, wrapped);
    let env: Envelope<TokenQueryResponse> = serde_json::from_str(
        r#"{"ret_code":"000000","ret_msg":"Success","data":{"list":[{"token":"TK3"}]}}"#,
    )
    .unwrap();
    assert_eq!(env.data.unwrap().tokens[0].token.as_deref(), Some("TK3"));
}

#[test]
fn apple_pay_session_payload_stays_opaque() {
    let payload = r#"{"epochTimestamp":1,"merchantSessionIdentifier":"abc","signature":"sig"}"#;
    let text = json!({"ret_code":"000000","ret_msg":"Success","data": payload}).to_string();
    let env: Envelope<ApplePaySessionResponse> = round_trip(&text);
    let session = env.data.unwrap().merchant_session().unwrap();
    assert_eq!(session["merchantSessionIdentifier"], json!("abc"));
    let as_object: ApplePaySessionResponse =
        serde_json::from_value(json!({"merchantSessionIdentifier":"def"})).unwrap();
    assert_eq!(
        as_object.merchant_session().unwrap()["merchantSessionIdentifier"],
        json!("def")
    );
}

#[test]
fn session_query_response_carries_the_transaction() {
    let text = r#"{"session_id":"CS1","session_url":"https://checkout.example/CS1","trans_id":"t1",
        "order_id":"GW1","status":"SUCCESS","amount":800,"currency":"HKD"}"#;
    let r: CheckoutSessionQueryResponse = round_trip(text);
    assert_eq!(r.order.order_id.as_deref(), Some("GW1"));
    assert_eq!(r.order.session_id.as_deref(), Some("CS1"));
    assert_eq!(r.order.status, Some(GatewayOrderStatus::Success));
    let unpaid: CheckoutSessionQueryResponse =
        round_trip(r#"{"session_id":"CS2","amount":"800"}"#.replace("\"800\"", "800").as_str());
    assert!(unpaid.order.order_id.is_none());
}

#[test]
fn numeric_trans_id_is_accepted_and_written_as_a_string() {
    let mut v: Value = serde_json::from_str(INITIATE_REQUEST).unwrap();
    v["trans_id"] = json!(20240101001u64);
    let req: InitiateRequest = serde_json::from_value(v).unwrap();
    assert_eq!(req.trans_id, "20240101001");
    assert_eq!(
        serde_json::to_value(&req).unwrap()["trans_id"],
        json!("20240101001")
    );
    let mut v: Value = serde_json::from_str(INITIATE_REQUEST).unwrap();
    v["trans_id"] = json!(true);
    assert!(serde_json::from_value::<InitiateRequest>(v).is_err());
}

#[test]
fn balances_convert_to_money_and_check_invariants() {
    let r: PaymentResponse = serde_json::from_value(json!({
        "currency": "JPY",
        "balances": {"authed_amount": 1690, "captured_amount": 1690, "refunded_amount": 500,
                     "able_to_refund_amount": 1190}
    }))
    .unwrap();
    let b = r.balances().unwrap().unwrap();
    assert_eq!(b.captured, Money::new(1690, Currency::JPY));
    assert_eq!(b.voided, Money::zero(Currency::JPY), "absent counts as 0");
    assert!(b.is_consistent());

    let over: PaymentResponse = serde_json::from_value(json!({
        "currency": "EUR",
        "balances": {"authed_amount": 100, "captured_amount": 100, "refunded_amount": 80,
                     "able_to_refund_amount": 80}
    }))
    .unwrap();
    assert!(!over.balances().unwrap().unwrap().is_consistent());

    let unknown: PaymentResponse =
        serde_json::from_value(json!({"currency": "QQQ", "balances": {}})).unwrap();
    assert!(unknown.balances().is_err());
    let no_currency: PaymentResponse = serde_json::from_value(json!({"balances": {}})).unwrap();
    assert_eq!(no_currency.balances().unwrap(), None);
}
