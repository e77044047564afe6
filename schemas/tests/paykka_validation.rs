//! Client-side validation rules of the PayKKa requests: one test per rule,
//! each with a passing and a failing request, checking the failure names
//! the field.

use payorch_schemas::money::{Currency, Money};
use payorch_schemas::paykka::*;

const TS: i64 = 1_704_067_200_000;
const PAN: &str = "4111111111111111";

fn card_purchase() -> InitiateRequest {
    let mut r = InitiateRequest::new(
        "10000000000001",
        TS,
        PaymentType::Purchase,
        "ord-1",
        Money::new(1299, Currency::EUR),
        PaymentRequest::card(PAN, "07", "2031", "123"),
    );
    r.return_url = Some("https://merchant.example/return".into());
    r.notify_url = Some("https://merchant.example/notify".into());
    r
}

fn first_recurring() -> InitiateRequest {
    let mut r = card_purchase();
    r.payment_type = PaymentType::Recurring;
    r.mit = Some(false);
    r.payment.store_payment_method = Some(true);
    r.payment.token_usage = Some(TokenUsage::Subscription);
    r.payment.shopper_reference = Some("cust-1".into());
    r
}

fn subsequent_recurring() -> InitiateRequest {
    let mut r = InitiateRequest::new(
        "10000000000001",
        TS,
        PaymentType::Recurring,
        "ord-2",
        Money::new(990, Currency::EUR),
        PaymentRequest::token("TK1", TokenUsage::Subscription, "cust-1"),
    );
    r.mit = Some(true);
    r.recurring_agreement_id = Some("RA1".into());
    r
}

/// Asserts that validation reports `field` (among all problems) and that
/// the message starts with the field name.
#[track_caller]
fn assert_rejects<T: Validate>(r: &T, field: &str) -> Problem {
    let errors = r.validation_errors();
    let Some(e) = errors.iter().find(|e| e.field == field) else {
        panic!("expected a problem with {field}, got {errors:?}");
    };
    assert!(
        e.to_string().starts_with(&format!("{field}: ")),
        "message {e} does not name {field}"
    );
    assert!(r.validate().is_err());
    e.problem.clone()
}

#[track_caller]
fn assert_ok<T: Validate + std::fmt::Debug>(r: &T) {
    assert_eq!(r.validate_all(), Ok(()), "{r:?}");
}

#[test]
fn base_requests_are_valid() {
    assert_ok(&card_purchase());
    assert_ok(&first_recurring());
    assert_ok(&subsequent_recurring());
}

#[test]
fn merchant_id_required_and_at_most_32() {
    let mut r = card_purchase();
    r.merchant_id = "1".repeat(32);
    assert_ok(&r);
    r.merchant_id = "1".repeat(33);
    assert_eq!(
        assert_rejects(&r, "merchant_id"),
        Problem::TooLong {
            max: 32,
            actual: 33
        }
    );
    r.merchant_id = " ".into();
    assert_eq!(assert_rejects(&r, "merchant_id"), Problem::Required);
}

#[test]
fn timestamp_must_be_positive() {
    let mut r = VoidRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        order_id: "GW1".into(),
        reason: None,
    };
    assert_ok(&r);
    r.timestamp = 0;
    assert_eq!(assert_rejects(&r, "timestamp"), Problem::NotPositive(0));
}

#[test]
fn trans_id_required_and_at_most_64() {
    let mut r = card_purchase();
    r.trans_id = "t".repeat(64);
    assert_ok(&r);
    r.trans_id = "t".repeat(65);
    assert!(matches!(
        assert_rejects(&r, "trans_id"),
        Problem::TooLong { max: 64, .. }
    ));
    r.trans_id = String::new();
    assert_eq!(assert_rejects(&r, "trans_id"), Problem::Required);
}

#[test]
fn shopper_reference_at_most_64() {
    let mut r = first_recurring();
    r.payment.shopper_reference = Some("s".repeat(64));
    assert_ok(&r);
    r.payment.shopper_reference = Some("s".repeat(65));
    assert_rejects(&r, "payment.shopper_reference");
    let mut q = TokenQueryRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        shopper_reference: "s".repeat(64),
        token: None,
    };
    assert_ok(&q);
    q.shopper_reference = "s".repeat(65);
    assert_rejects(&q, "shopper_reference");
}

#[test]
fn token_at_most_64() {
    let mut r = subsequent_recurring();
    r.payment.token = Some("T".repeat(64));
    assert_ok(&r);
    r.payment.token = Some("T".repeat(65));
    assert_rejects(&r, "payment.token");
    let mut rm = TokenRemoveRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        token: "T".repeat(64),
        shopper_reference: "c".into(),
    };
    assert_ok(&rm);
    rm.token = "T".repeat(65);
    assert_rejects(&rm, "token");
    rm.token = String::new();
    assert_eq!(assert_rejects(&rm, "token"), Problem::Required);
}

fn refund() -> RefundRequest {
    RefundRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        refund_trans_id: "rf-1".into(),
        ori_order_id: "GW1".into(),
        refund_amount: 500,
        currency: Currency::EUR,
        reason: Some(Reason::RequestedByCustomer),
        notify_url: Some("https://merchant.example/refund".into()),
    }
}

#[test]
fn refund_trans_id_required_and_at_most_64() {
    let mut r = refund();
    r.refund_trans_id = "r".repeat(64);
    assert_ok(&r);
    r.refund_trans_id = "r".repeat(65);
    assert_rejects(&r, "refund_trans_id");
    r.refund_trans_id = String::new();
    assert_eq!(assert_rejects(&r, "refund_trans_id"), Problem::Required);
}

#[test]
fn refund_needs_original_order() {
    let mut r = refund();
    r.ori_order_id = String::new();
    assert_eq!(assert_rejects(&r, "ori_order_id"), Problem::Required);
}

#[test]
fn refund_amount_positive() {
    let mut r = refund();
    r.refund_amount = 1;
    assert_ok(&r);
    r.refund_amount = 0;
    assert_eq!(assert_rejects(&r, "refund_amount"), Problem::NotPositive(0));
}

#[test]
fn amount_positive() {
    let mut r = card_purchase();
    r.amount = 1;
    assert_ok(&r);
    r.amount = -5;
    assert_eq!(assert_rejects(&r, "amount"), Problem::NotPositive(-5));
    let mut c = CaptureRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        order_id: "GW1".into(),
        amount: None,
        currency: None,
        final_capture: None,
    };
    assert_ok(&c);
    c.amount = Some(0);
    assert_rejects(&c, "amount");
}

#[test]
fn currency_must_be_known() {
    // Known by construction: the request type holds a Currency, and an
    // unknown code fails to parse with the code in the message.
    let mut v = serde_json::to_value(card_purchase()).unwrap();
    v["currency"] = "EUR".into();
    assert!(serde_json::from_value::<InitiateRequest>(v.clone()).is_ok());
    v["currency"] = "ZZZ".into();
    let err = serde_json::from_value::<InitiateRequest>(v).unwrap_err();
    assert!(err.to_string().contains("ZZZ"), "{err}");
}

#[test]
fn display_name_at_most_75_and_domain_bare() {
    let mut r = ApplePaySessionRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        display_name: Some("d".repeat(75)),
        domain_name: "www.your-domain.com".into(),
    };
    assert_ok(&r);
    r.display_name = Some("d".repeat(76));
    assert_eq!(
        assert_rejects(&r, "display_name"),
        Problem::TooLong {
            max: 75,
            actual: 76
        }
    );
    r.display_name = None;
    for bad in [
        "https://www.your-domain.com",
        "www.your-domain.com:443",
        "a.com/x",
    ] {
        r.domain_name = bad.into();
        assert_rejects(&r, "domain_name");
    }
    r.domain_name = String::new();
    assert_eq!(assert_rejects(&r, "domain_name"), Problem::Required);
}

#[test]
fn return_url_required_except_for_mit_recurring() {
    let mut r = card_purchase();
    r.return_url = None;
    assert!(matches!(
        assert_rejects(&r, "return_url"),
        Problem::RequiredWhen(_)
    ));
    let mut first = first_recurring();
    first.return_url = None;
    assert_rejects(&first, "return_url");
    let sub = subsequent_recurring();
    assert!(sub.return_url.is_none());
    assert_ok(&sub);
}

#[test]
fn urls_must_be_http_urls() {
    let mut r = card_purchase();
    r.notify_url = Some("merchant.example/notify".into());
    assert_eq!(assert_rejects(&r, "notify_url"), Problem::NotUrl);
    let mut r = card_purchase();
    r.return_url = Some("javascript:alert(1)".into());
    assert_eq!(assert_rejects(&r, "return_url"), Problem::NotUrl);
    let mut f = refund();
    f.notify_url = Some("ftp://x.example".into());
    assert_rejects(&f, "notify_url");
    let mut s = session();
    s.cancel_url = Some("http://localhost:8080/cancel".into());
    assert_ok(&s);
    s.cancel_url = Some("/cancel".into());
    assert_rejects(&s, "cancel_url");
}

#[test]
fn bankcard_needs_exactly_one_instrument() {
    let mut r = card_purchase();
    r.payment.token = Some("TK1".into());
    r.payment.token_usage = Some(TokenUsage::CardOnFile);
    r.payment.shopper_reference = Some("c".into());
    assert_eq!(
        assert_rejects(&r, "payment"),
        Problem::ExactlyOneOf {
            fields: "token, card_no, encrypted_card_no",
            found: 2
        }
    );
    let mut none = card_purchase();
    none.payment = PaymentRequest::new(PaymentMethod::BankCard);
    assert!(matches!(
        assert_rejects(&none, "payment"),
        Problem::ExactlyOneOf { found: 0, .. }
    ));
    let mut enc = card_purchase();
    enc.payment = PaymentRequest::encrypted_card("e1", "e2", "e3", Some("e4".into()));
    assert_ok(&enc);
}

#[test]
fn encrypted_card_needs_encrypted_expiry() {
    let mut r = card_purchase();
    r.payment = PaymentRequest::encrypted_card("e1", "e2", "e3", None);
    assert_ok(&r);
    r.payment.encrypted_exp_month = None;
    assert_rejects(&r, "payment.encrypted_exp_month");
}

#[test]
fn card_no_requires_expiry_and_cvv() {
    for field in ["exp_month", "exp_year", "cvv"] {
        let mut r = card_purchase();
        match field {
            "exp_month" => r.payment.exp_month = None,
            "exp_year" => r.payment.exp_year = None,
            _ => r.payment.cvv = None,
        }
        assert_eq!(
            assert_rejects(&r, &format!("payment.{field}")),
            Problem::RequiredWhen("with card_no")
        );
    }
}

#[test]
fn pan_is_12_to_19_digits_with_luhn() {
    let mut r = card_purchase();
    for good in ["4111111111111111", "378282246310005", "6011111111111117"] {
        r.payment.card_no = Some(CardNumber::new(good));
        assert_ok(&r);
    }
    r.payment.card_no = Some(CardNumber::new("4111111111111112"));
    assert_eq!(
        assert_rejects(&r, "payment.card_no"),
        Problem::Format("fails the Luhn check")
    );
    for bad in ["41111111111", "41111111111111111111", "4111-1111-1111-1111"] {
        r.payment.card_no = Some(CardNumber::new(bad));
        assert_eq!(
            assert_rejects(&r, "payment.card_no"),
            Problem::Format("must be 12-19 digits")
        );
    }
}

#[test]
fn exp_month_is_01_to_12() {
    let mut r = card_purchase();
    for good in ["01", "12"] {
        r.payment.exp_month = Some(good.into());
        assert_ok(&r);
    }
    for bad in ["00", "13", "7", "ab"] {
        r.payment.exp_month = Some(bad.into());
        assert_rejects(&r, "payment.exp_month");
    }
}

#[test]
fn exp_year_is_4_digits() {
    let mut r = card_purchase();
    r.payment.exp_year = Some("2031".into());
    assert_ok(&r);
    for bad in ["31", "20311", "20x1"] {
        r.payment.exp_year = Some(bad.into());
        assert_rejects(&r, "payment.exp_year");
    }
}

#[test]
fn cvv_is_3_or_4_digits() {
    let mut r = card_purchase();
    for good in ["123", "1234"] {
        r.payment.cvv = Some(Cvv::new(good));
        assert_ok(&r);
    }
    for bad in ["12", "12345", "12a"] {
        r.payment.cvv = Some(Cvv::new(bad));
        assert_rejects(&r, "payment.cvv");
    }
}

#[test]
fn mit_required_with_recurring() {
    let mut r = first_recurring();
    r.mit = None;
    assert_eq!(
        assert_rejects(&r, "mit"),
        Problem::RequiredWhen("when payment_type is RECURRING")
    );
}

#[test]
fn mit_only_with_recurring() {
    let mut r = card_purchase();
    r.mit = Some(false);
    assert!(matches!(assert_rejects(&r, "mit"), Problem::NotAllowed(_)));
}

#[test]
fn first_recurring_stores_a_subscription_token_for_a_shopper() {
    let mut r = first_recurring();
    r.payment.store_payment_method = Some(false);
    assert!(matches!(
        assert_rejects(&r, "payment.store_payment_method"),
        Problem::MustBe(_)
    ));
    let mut r = first_recurring();
    r.payment.token_usage = Some(TokenUsage::CardOnFile);
    assert!(matches!(
        assert_rejects(&r, "payment.token_usage"),
        Problem::MustBe(_)
    ));
    let mut r = first_recurring();
    r.payment.shopper_reference = None;
    assert_rejects(&r, "payment.shopper_reference");
}

#[test]
fn subsequent_recurring_needs_agreement_and_token() {
    let mut r = subsequent_recurring();
    r.recurring_agreement_id = None;
    assert_rejects(&r, "recurring_agreement_id");
    let mut r = subsequent_recurring();
    r.payment = PaymentRequest::card(PAN, "07", "2031", "123");
    assert_rejects(&r, "payment.token");
}

#[test]
fn store_payment_method_only_for_bankcard_with_usage_and_shopper() {
    let mut r = card_purchase();
    r.payment.store_payment_method = Some(true);
    r.payment.token_usage = Some(TokenUsage::CardOnFile);
    r.payment.shopper_reference = Some("c".into());
    assert_ok(&r);

    let mut missing = r.clone();
    missing.payment.token_usage = None;
    assert_rejects(&missing, "payment.token_usage");
    let mut missing = r.clone();
    missing.payment.shopper_reference = None;
    assert_rejects(&missing, "payment.shopper_reference");

    let mut wallet = card_purchase();
    wallet.payment = PaymentRequest::wallet(PaymentMethod::GooglePay, "{}");
    wallet.payment.store_payment_method = Some(true);
    wallet.payment.token_usage = Some(TokenUsage::CardOnFile);
    wallet.payment.shopper_reference = Some("c".into());
    assert!(matches!(
        assert_rejects(&wallet, "payment.store_payment_method"),
        Problem::NotAllowed(_)
    ));
}

#[test]
fn token_use_needs_shopper_and_usage() {
    let mut r = card_purchase();
    r.payment = PaymentRequest::token("TK1", TokenUsage::CardOnFile, "c");
    assert_ok(&r);
    r.payment.shopper_reference = None;
    assert_rejects(&r, "payment.shopper_reference");
    r.payment.shopper_reference = Some("c".into());
    r.payment.token_usage = None;
    assert_rejects(&r, "payment.token_usage");
}

#[test]
fn wallets_need_token_data() {
    for method in [PaymentMethod::GooglePay, PaymentMethod::ApplePay] {
        let mut r = card_purchase();
        r.payment = PaymentRequest::wallet(method.clone(), r#"{"signature":"x"}"#);
        assert_ok(&r);
        r.payment.token_data = None;
        assert_rejects(&r, "payment.token_data");
    }
}

#[test]
fn expire_time_must_parse() {
    let mut r = card_purchase();
    r.expire_time = Some(PaykkaDateTime::new("2024-01-01T08:05:00+08:00"));
    assert_ok(&r);
    // Without an offset it is PayKKa local time (+08:00): accepted.
    r.expire_time = Some(PaykkaDateTime::new("2024-01-01 08:05:00"));
    assert_ok(&r);
    r.expire_time = Some(PaykkaDateTime::new("2024-01-01 08:05"));
    assert_rejects(&r, "expire_time");
}

#[test]
fn query_needs_some_id() {
    let mut q = QueryRequest::by_order_id("1", TS, "GW1");
    assert_ok(&q);
    assert_ok(&QueryRequest::by_trans_id("1", TS, "t"));
    assert_ok(&QueryRequest::by_session_id("1", TS, "CS1"));
    q.order_id = Some(String::new());
    assert_eq!(
        assert_rejects(&q, "trans_id|order_id|session_id"),
        Problem::AtLeastOneOf("trans_id|order_id|session_id")
    );
}

#[test]
fn refund_query_and_session_query_need_some_id() {
    let mut q = RefundQueryRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        refund_trans_id: None,
        refund_order_id: Some("RG1".into()),
    };
    assert_ok(&q);
    q.refund_order_id = None;
    assert_rejects(&q, "refund_trans_id|refund_order_id");
    let mut s = CheckoutSessionQueryRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        session_id: Some("CS1".into()),
        trans_id: None,
    };
    assert_ok(&s);
    s.session_id = None;
    assert_rejects(&s, "session_id|trans_id");
}

#[test]
fn capture_void_cancel_need_their_ids() {
    let v = VoidRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        order_id: String::new(),
        reason: None,
    };
    assert_rejects(&v, "order_id");
    let c = CaptureRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        order_id: " ".into(),
        amount: Some(1),
        currency: Some(Currency::EUR),
        final_capture: None,
    };
    assert_rejects(&c, "order_id");
    let mut rc = RecurringCancelRequest {
        merchant_id: "1".into(),
        timestamp: TS,
        recurring_agreement_id: "RA1".into(),
    };
    assert_ok(&rc);
    rc.recurring_agreement_id = String::new();
    assert_rejects(&rc, "recurring_agreement_id");
}

fn session() -> CheckoutSessionRequest {
    let mut s = CheckoutSessionRequest::new(
        "1",
        TS,
        PaymentType::Purchase,
        "t1",
        Money::new(800, Currency::HKD),
        SessionMode::Hosted,
    );
    s.return_url = Some("https://merchant.example/return".into());
    s.notify_url = Some("https://merchant.example/notify".into());
    s
}

#[test]
fn session_rules() {
    assert_ok(&session());
    let mut s = session();
    s.return_url = None;
    assert_eq!(assert_rejects(&s, "return_url"), Problem::Required);
    let mut s = session();
    s.amount = 0;
    assert_rejects(&s, "amount");
    let mut s = session();
    s.payment_type = PaymentType::Recurring;
    assert_rejects(&s, "payment.store_payment_method");
    s.payment = Some(PaymentInfo {
        payment_method: None,
        store_payment_method: Some(true),
        token_usage: Some(TokenUsage::Subscription),
        shopper_reference: Some("c1".into()),
    });
    assert_ok(&s);
    s.payment.as_mut().unwrap().shopper_reference = None;
    assert_rejects(&s, "payment.shopper_reference");
}

#[test]
fn validate_returns_the_first_problem_and_validate_all_every_one() {
    let mut r = card_purchase();
    r.merchant_id = String::new();
    r.amount = 0;
    r.payment.cvv = Some(Cvv::new("1"));
    let first = r.validate().unwrap_err();
    assert_eq!(first.field, "merchant_id");
    assert_eq!(first.to_string(), "merchant_id: is required");
    let all = r.validate_all().unwrap_err();
    let fields: Vec<_> = all.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["merchant_id", "amount", "payment.cvv"]);
    assert_eq!(all[2].to_string(), "payment.cvv: must be 3-4 digits");
}

#[test]
fn validation_messages_never_contain_the_pan() {
    let mut r = card_purchase();
    r.payment.card_no = Some(CardNumber::new("4111111111111112"));
    r.payment.cvv = Some(Cvv::new("98765"));
    for e in r.validation_errors() {
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("4111111111111112") && !text.contains("98765"),
            "{text}"
        );
    }
}
