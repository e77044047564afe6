//! Client-side validation of the requests we build, before they are signed
//! and sent (endpoints.md §1–§12, error codes 2008–2014 in codes.md §4).
//!
//! Each request type has `validate()` (the **first** problem, in field order,
//! so callers can return one clear error) and `validate_all()` (every
//! problem, at most one per field). A [`ValidationError`] names the field
//! with its JSON path (`payment.card_no`) and displays as
//! `payment.card_no: fails the Luhn check`.
//!
//! What is checked: required fields, lengths (`merchant_id` ≤ 32, ids ≤ 64,
//! `display_name` ≤ 75), amounts > 0, URL shape, card formats (PAN 12–19
//! digits with Luhn, month `01`–`12`, 4-digit year, CVV 3–4 digits), the
//! instrument rules of `payment`, and the recurring / tokenisation rules.
//! The currency is known by construction ([`crate::money::Currency`] only
//! holds ISO 4217 codes; an unknown code already fails deserialization).
//! Enum values PayKKa may add later (`Unknown`) are not rejected.

use std::fmt;

use super::enums::{PaymentMethod, PaymentType, TokenUsage};
use super::objects::PaymentInfo;
use super::payment::{CaptureRequest, InitiateRequest, PaymentRequest, QueryRequest, VoidRequest};
use super::refund::{RefundQueryRequest, RefundRequest};
use super::session::{CheckoutSessionQueryRequest, CheckoutSessionRequest};
use super::token::{
    ApplePaySessionRequest, RecurringCancelRequest, TokenQueryRequest, TokenRemoveRequest,
};
use super::wire::PaykkaDateTime;

/// What is wrong with a field. All variants mean "fix the request"; none is
/// worth retrying unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Missing or blank.
    #[error("is required")]
    Required,
    /// Missing or blank although the rest of the request needs it.
    #[error("is required {0}")]
    RequiredWhen(&'static str),
    /// Present although the rest of the request forbids it.
    #[error("is not allowed {0}")]
    NotAllowed(&'static str),
    /// Present with the wrong value.
    #[error("must be {0}")]
    MustBe(&'static str),
    /// Longer than PayKKa accepts (counted in characters).
    #[error("is {actual} characters long, at most {max} allowed")]
    TooLong { max: usize, actual: usize },
    /// An amount or timestamp that must be greater than zero.
    #[error("must be greater than 0 (got {0})")]
    NotPositive(i64),
    /// Not an absolute `http://` or `https://` URL.
    #[error("must be an absolute http(s) URL")]
    NotUrl,
    /// Wrong format; the text says which.
    #[error("{0}")]
    Format(&'static str),
    /// A one-of group has zero or several members set.
    #[error("exactly one of {fields} must be set (found {found})")]
    ExactlyOneOf { fields: &'static str, found: usize },
    /// A group where at least one member must be set is empty.
    #[error("at least one of {0} must be set")]
    AtLeastOneOf(&'static str),
}

/// A request field PayKKa would reject. `field` is the JSON path
/// (`payment.card_no`, or `a|b|c` for a group rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub field: String,
    pub problem: Problem,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Whether an optional-typed field must be present.
#[derive(Clone, Copy)]
enum Need {
    Optional,
    Required,
    RequiredWhen(&'static str),
}

/// Collects problems, at most one per field.
#[derive(Default)]
struct Checker {
    errors: Vec<ValidationError>,
}

fn present(v: Option<&str>) -> bool {
    v.is_some_and(|s| !s.trim().is_empty())
}

impl Checker {
    fn push(&mut self, field: &str, problem: Problem) {
        if !self.errors.iter().any(|e| e.field == field) {
            self.errors.push(ValidationError {
                field: field.to_owned(),
                problem,
            });
        }
    }

    fn len(&mut self, field: &str, value: Option<&str>, max: usize) {
        if let Some(v) = value {
            let actual = v.chars().count();
            if actual > max {
                self.push(field, Problem::TooLong { max, actual });
            }
        }
    }

    fn required(&mut self, field: &str, value: &str, max: Option<usize>) {
        if value.trim().is_empty() {
            self.push(field, Problem::Required);
        } else if let Some(max) = max {
            self.len(field, Some(value), max);
        }
    }

    fn required_when(&mut self, field: &str, value: Option<&str>, when: &'static str) {
        if !present(value) {
            self.push(field, Problem::RequiredWhen(when));
        }
    }

    fn common(&mut self, merchant_id: &str, timestamp: i64) {
        self.required("merchant_id", merchant_id, Some(32));
        if timestamp <= 0 {
            self.push("timestamp", Problem::NotPositive(timestamp));
        }
    }

    fn positive(&mut self, field: &str, amount: i64) {
        if amount <= 0 {
            self.push(field, Problem::NotPositive(amount));
        }
    }

    fn url(&mut self, field: &str, value: Option<&str>, need: Need) {
        match value {
            Some(v) if !v.trim().is_empty() => {
                if !looks_like_url(v) {
                    self.push(field, Problem::NotUrl);
                }
            }
            _ => match need {
                Need::Optional => {}
                Need::Required => self.push(field, Problem::Required),
                Need::RequiredWhen(when) => self.push(field, Problem::RequiredWhen(when)),
            },
        }
    }

    fn datetime(&mut self, field: &str, value: Option<&PaykkaDateTime>) {
        if value.is_some_and(|v| v.parse().is_err()) {
            self.push(
                field,
                Problem::Format("must be an ISO-8601 date-time with offset"),
            );
        }
    }

    fn at_least_one(&mut self, fields: &'static str, values: &[Option<&str>]) {
        if !values.iter().any(|v| present(*v)) {
            self.push(fields, Problem::AtLeastOneOf(fields));
        }
    }

    fn finish(self) -> Vec<ValidationError> {
        self.errors
    }
}

/// `http://` or `https://`, a non-empty host part, no whitespace.
fn looks_like_url(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !v.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// Luhn (mod 10) checksum over ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 { dd - 9 } else { dd }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

const CARD_GROUP: &str = "token, card_no, encrypted_card_no";

fn check_payment(p: &PaymentRequest, c: &mut Checker) {
    let method = &p.payment_method;
    c.len(
        "payment.shopper_reference",
        p.shopper_reference.as_deref(),
        64,
    );
    c.len("payment.token", p.token.as_deref(), 64);

    let has_token = present(p.token.as_deref());
    let has_card = present(p.card_no.as_ref().map(|c| c.expose()));
    let has_encrypted = present(p.encrypted_card_no.as_ref().map(|c| c.expose()));

    if *method == PaymentMethod::BankCard {
        let found = usize::from(has_token) + usize::from(has_card) + usize::from(has_encrypted);
        if found != 1 {
            c.push(
                "payment",
                Problem::ExactlyOneOf {
                    fields: CARD_GROUP,
                    found,
                },
            );
        }
    }

    if let Some(pan) = p.card_no.as_ref().map(|c| c.expose()) {
        if !(12..=19).contains(&pan.len()) || !all_digits(pan) {
            c.push("payment.card_no", Problem::Format("must be 12-19 digits"));
        } else if !luhn_valid(pan) {
            c.push("payment.card_no", Problem::Format("fails the Luhn check"));
        }
        c.required_when("payment.exp_month", p.exp_month.as_deref(), "with card_no");
        c.required_when("payment.exp_year", p.exp_year.as_deref(), "with card_no");
        c.required_when(
            "payment.cvv",
            p.cvv.as_ref().map(|c| c.expose()),
            "with card_no",
        );
    }
    if let Some(m) = p.exp_month.as_deref() {
        let ok = m.len() == 2 && all_digits(m) && matches!(m.parse::<u8>(), Ok(1..=12));
        if !ok {
            c.push(
                "payment.exp_month",
                Problem::Format("must be two digits 01-12"),
            );
        }
    }
    if let Some(y) = p.exp_year.as_deref()
        && !(y.len() == 4 && all_digits(y))
    {
        c.push("payment.exp_year", Problem::Format("must be 4 digits"));
    }
    if let Some(cvv) = p.cvv.as_ref().map(|c| c.expose())
        && !((3..=4).contains(&cvv.len()) && all_digits(cvv))
    {
        c.push("payment.cvv", Problem::Format("must be 3-4 digits"));
    }

    if has_encrypted {
        let when = "with encrypted_card_no";
        c.required_when(
            "payment.encrypted_exp_month",
            p.encrypted_exp_month.as_ref().map(|s| s.expose()),
            when,
        );
        c.required_when(
            "payment.encrypted_exp_year",
            p.encrypted_exp_year.as_ref().map(|s| s.expose()),
            when,
        );
    }

    if p.store_payment_method == Some(true) {
        if *method != PaymentMethod::BankCard {
            c.push(
                "payment.store_payment_method",
                Problem::NotAllowed("unless payment_method is BANKCARD"),
            );
        }
        let when = "when store_payment_method is true";
        if p.token_usage.is_none() {
            c.push("payment.token_usage", Problem::RequiredWhen(when));
        }
        c.required_when(
            "payment.shopper_reference",
            p.shopper_reference.as_deref(),
            when,
        );
    }

    if has_token {
        let when = "when paying with a token";
        if p.token_usage.is_none() {
            c.push("payment.token_usage", Problem::RequiredWhen(when));
        }
        c.required_when(
            "payment.shopper_reference",
            p.shopper_reference.as_deref(),
            when,
        );
    }

    if method.is_wallet() {
        c.required_when(
            "payment.token_data",
            p.token_data.as_ref().map(|s| s.expose()),
            "for GOOGLE_PAY and APPLE_PAY",
        );
    }
}

/// Rules of a first recurring payment on `payment` (errors 2014, 2008).
fn check_first_recurring(
    store_payment_method: Option<bool>,
    token_usage: Option<&TokenUsage>,
    shopper_reference: Option<&str>,
    c: &mut Checker,
) {
    if store_payment_method != Some(true) {
        c.push(
            "payment.store_payment_method",
            Problem::MustBe("true on the first recurring payment"),
        );
    }
    if token_usage != Some(&TokenUsage::Subscription) {
        c.push(
            "payment.token_usage",
            Problem::MustBe("SUBSCRIPTION on the first recurring payment"),
        );
    }
    c.required_when(
        "payment.shopper_reference",
        shopper_reference,
        "on the first recurring payment",
    );
}

fn check_initiate(r: &InitiateRequest, c: &mut Checker) {
    c.common(&r.merchant_id, r.timestamp);
    c.required("trans_id", &r.trans_id, Some(64));
    c.positive("amount", r.amount);
    c.url("notify_url", r.notify_url.as_deref(), Need::Optional);

    let recurring = r.payment_type == PaymentType::Recurring;
    let subsequent = recurring && r.mit == Some(true);
    c.url(
        "return_url",
        r.return_url.as_deref(),
        if subsequent {
            Need::Optional
        } else {
            Need::RequiredWhen("unless this is a subsequent (mit=true) recurring payment")
        },
    );
    c.datetime("expire_time", r.expire_time.as_ref());

    match (recurring, r.mit) {
        (true, None) => c.push(
            "mit",
            Problem::RequiredWhen("when payment_type is RECURRING"),
        ),
        (false, Some(_)) => c.push(
            "mit",
            Problem::NotAllowed("unless payment_type is RECURRING"),
        ),
        _ => {}
    }

    let p = &r.payment;
    if recurring && r.mit == Some(false) {
        check_first_recurring(
            p.store_payment_method,
            p.token_usage.as_ref(),
            p.shopper_reference.as_deref(),
            c,
        );
    }
    if subsequent {
        let when = "on a subsequent (mit=true) recurring payment";
        c.required_when(
            "recurring_agreement_id",
            r.recurring_agreement_id.as_deref(),
            when,
        );
        c.required_when("payment.token", p.token.as_deref(), when);
    }
    check_payment(p, c);
}

fn check_session_payment(p: &PaymentInfo, c: &mut Checker) {
    c.len(
        "payment.shopper_reference",
        p.shopper_reference.as_deref(),
        64,
    );
    if p.store_payment_method == Some(true) {
        if p.payment_method
            .as_ref()
            .is_some_and(|m| *m != PaymentMethod::BankCard)
        {
            c.push(
                "payment.store_payment_method",
                Problem::NotAllowed("unless payment_method is BANKCARD"),
            );
        }
        let when = "when store_payment_method is true";
        if p.token_usage.is_none() {
            c.push("payment.token_usage", Problem::RequiredWhen(when));
        }
        c.required_when(
            "payment.shopper_reference",
            p.shopper_reference.as_deref(),
            when,
        );
    }
}

fn check_session(r: &CheckoutSessionRequest, c: &mut Checker) {
    c.common(&r.merchant_id, r.timestamp);
    c.required("trans_id", &r.trans_id, Some(64));
    c.positive("amount", r.amount);
    c.url("notify_url", r.notify_url.as_deref(), Need::Optional);
    c.url("return_url", r.return_url.as_deref(), Need::Required);
    c.url("cancel_url", r.cancel_url.as_deref(), Need::Optional);
    c.datetime("expire_time", r.expire_time.as_ref());
    let empty = PaymentInfo::default();
    let p = r.payment.as_ref().unwrap_or(&empty);
    if r.payment_type == PaymentType::Recurring {
        check_first_recurring(
            p.store_payment_method,
            p.token_usage.as_ref(),
            p.shopper_reference.as_deref(),
            c,
        );
    }
    check_session_payment(p, c);
}

/// Validation shared by every request type; see the module docs.
pub trait Validate {
    /// Every problem, at most one per field, in field order.
    fn validation_errors(&self) -> Vec<ValidationError>;

    /// The first problem, if any.
    fn validate(&self) -> Result<(), ValidationError> {
        match self.validation_errors().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// All problems, if any.
    fn validate_all(&self) -> Result<(), Vec<ValidationError>> {
        let errors = self.validation_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Implements [`Validate`] from a check function, plus inherent
/// `validate()`/`validate_all()` so callers need no trait import.
macro_rules! validated {
    ($($t:ty => $check:expr;)+) => {$(
        impl Validate for $t {
            fn validation_errors(&self) -> Vec<ValidationError> {
                let mut c = Checker::default();
                let check: fn(&$t, &mut Checker) = $check;
                check(self, &mut c);
                c.finish()
            }
        }

        impl $t {
            /// The first problem PayKKa would reject, if any (see
            /// [`crate::paykka::validate`]).
            pub fn validate(&self) -> Result<(), ValidationError> {
                <Self as Validate>::validate(self)
            }

            /// Every problem, at most one per field.
            pub fn validate_all(&self) -> Result<(), Vec<ValidationError>> {
                <Self as Validate>::validate_all(self)
            }
        }
    )+};
}

validated! {
    InitiateRequest => check_initiate;
    CheckoutSessionRequest => check_session;
    QueryRequest => |r, c| {
        c.common(&r.merchant_id, r.timestamp);
        c.at_least_one(
            "trans_id|order_id|session_id",
            &[r.trans_id.as_deref(), r.order_id.as_deref(), r.session_id.as_deref()],
        );
        c.len("trans_id", r.trans_id.as_deref(), 64);
    };
    CaptureRequest => |r, c| {
        c.common(&r.merchant_id, r.timestamp);
        c.required("order_id", &r.order_id, None);
        if let Some(a) = r.amount {
            c.positive("amount", a);
        }
    };
    VoidRequest => |r, c| {
        c.common(&r.merchant_id, r.timestamp);
        c.required("order_id", &r.order_id, None);
    };
    RefundRequest => |r, c| {
        c.common(&r.merchant_id, r.timestamp);
        c.required("refund_trans_id", &r.refund_trans_id, Some(64));
        c.required("ori_order_id", &r.ori_order_id, None);
        c.positive("refund_amount", r.refund_amount);
        c.url("notify_url", r.notify_url.as_deref(), Need::Optional);
    };
    RefundQueryRequest => |r, c| {
        c.common(&r.merchant_id, r.timestamp);
        c.at_least_one(
            "refund_trans_id|refund_order_id",
            &[r.refund_trans_id.as_deref(), r.refund_order_id.as_deref()],
        );
        c.len("refund_trans_id", r.refund_trans_id.as_deref(), 64);
    };
    TokenQueryRequest => |r, c| {
        c.common(&r.merchant_id, r.timestamp);
        c.required("shopper_reference", &r.shopper_reference, Some(64));
        c.len("token", r.token.as_deref(), 64);
    };
    TokenRemoveRequest => |r, c| {
        c.common(&r.merchant_id, r.timestamp);
        c.required("token", &r.token, Some(64));
        c.required("shopper_reference", &r.shopper_reference, Some(64));
    };
    RecurringCancelRequest => |r, c| {
        c.common(&r.merchant_id, r.timestamp);
        c.required("recurring_agreement_id", &r.recurring_agreement_id, None);
    };
    ApplePaySessionRequest => |r, c| {
        c.common(&r.merchant_id, r.timestamp);
        c.len("display_name", r.display_name.as_deref(), 75);
        c.required("domain_name", &r.domain_name, None);
        let d = r.domain_name.trim();
        if !d.is_empty() && (d.contains("://") || d.contains(['/', ':']) || d.contains(char::is_whitespace)) {
            c.push(
                "domain_name",
                Problem::Format("must be a bare domain without scheme, port or path"),
            );
        }
    };
    CheckoutSessionQueryRequest => |r, c| {
        c.common(&r.merchant_id, r.timestamp);
        c.at_least_one(
            "session_id|trans_id",
            &[r.session_id.as_deref(), r.trans_id.as_deref()],
        );
        c.len("trans_id", r.trans_id.as_deref(), 64);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("5555555555554444"));
        assert!(luhn_valid("378282246310005"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(!luhn_valid(""));
        assert!(!luhn_valid("41111111111111a1"));
    }

    #[test]
    fn url_shapes() {
        assert!(looks_like_url("https://merchant.example/paykka/notify"));
        assert!(looks_like_url("HTTP://localhost:8080"));
        assert!(!looks_like_url("ftp://x"));
        assert!(!looks_like_url("https://"));
        assert!(!looks_like_url("https:///path"));
        assert!(!looks_like_url("https://a b"));
        assert!(!looks_like_url("merchant.example"));
    }
}
