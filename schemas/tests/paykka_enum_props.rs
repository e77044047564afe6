//! Property: every PayKKa enum accepts any string; an unknown value keeps
//! its raw text and re-serializes unchanged; a known value re-parses to
//! itself from its canonical spelling.

use payorch_schemas::paykka::*;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn check<T>(raw: &str, is_unknown: impl Fn(&T) -> bool) -> Result<(), TestCaseError>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(raw).unwrap();
    let parsed: T = serde_json::from_str(&json).unwrap();
    let written = serde_json::to_string(&parsed).unwrap();
    if is_unknown(&parsed) {
        prop_assert_eq!(&written, &json, "unknown value changed");
    }
    let again: T = serde_json::from_str(&written).unwrap();
    prop_assert_eq!(again, parsed);
    Ok(())
}

macro_rules! check_all {
    ($raw:expr, $($t:ty),+) => {$(
        check::<$t>($raw, |v| v.is_unknown())?;
    )+};
}

/// Strings that look like PayKKa values (upper/lower/mixed snake case and
/// dotted names), so the known-value branch is exercised too.
fn enum_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z]{1,12}([_. -][A-Za-z]{1,12}){0,3}",
        Just("BANKCARD".to_owned()),
        Just("BankCard".to_owned()),
        Just("google_pay".to_owned()),
        Just("Payment.Success".to_owned()),
        Just("partially refunded".to_owned()),
        Just("Drop-In".to_owned()),
    ]
}

proptest! {
    #[test]
    fn any_string_round_trips(raw in any::<String>()) {
        check_all!(&raw, PaymentType, AuthorisationType, CaptureMethod, PaymentMethod, TokenUsage,
            GatewayOrderStatus, RefundStatus, NotifyType, SessionMode, Reason, CardBrand);
    }

    #[test]
    fn enum_like_strings_round_trip(raw in enum_like()) {
        check_all!(&raw, PaymentType, AuthorisationType, CaptureMethod, PaymentMethod, TokenUsage,
            GatewayOrderStatus, RefundStatus, NotifyType, SessionMode, Reason, CardBrand);
    }
}

#[test]
fn every_known_value_round_trips_through_its_spelling() {
    macro_rules! known {
        ($($t:ty),+) => {$(
            for v in <$t>::known() {
                let json = serde_json::to_string(v).unwrap();
                let back: $t = serde_json::from_str(&json).unwrap();
                assert_eq!(&back, v, "{json}");
                assert!(!back.is_unknown());
            }
        )+};
    }
    known!(
        PaymentType,
        AuthorisationType,
        CaptureMethod,
        PaymentMethod,
        TokenUsage,
        GatewayOrderStatus,
        RefundStatus,
        NotifyType,
        SessionMode,
        Reason,
        CardBrand
    );
}
