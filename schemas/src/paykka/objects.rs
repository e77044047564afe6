//! Nested objects shared by requests, responses and notifications
//! (models.md §6–§13): [`Authentication`] (3DS preferences, §6.1),
//! [`AuthenticationResult`] (3DS record, §6.2), [`Browser`] (§7),
//! [`Goods`] (§8), [`Bill`] (§9), [`Shipping`] (§10), [`Customer`] (§11),
//! [`CardInfo`] (§12), [`Balances`] (§13) and [`PaymentInfo`] (the
//! `payment` object echoed in responses and notifications, endpoints.md §1).
//!
//! Every field is optional on the wire and skipped when `None`; unknown
//! fields are ignored. Enum-like fields whose value lists were never
//! captured (challenge indicator, exemption, device type, ...) stay `String`.

use serde::{Deserialize, Serialize};

use super::enums::{CardBrand, PaymentMethod, TokenUsage};
use super::secret::SecretString;
use super::wire::{self, PaykkaDateTime};
use crate::money::{Currency, Money, MoneyError};

/// Request object `authentication`: 3DS preferences (models.md §6.1). Only
/// `AUTO` / `LOW_VALUE` were seen; other values are unverified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Authentication {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge_indicator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<String>,
}

/// `authentication_result` in responses and notifications (models.md §6.2,
/// `AuthenticationRecordInNotify`). `authentication_url` present ⇒ the
/// shopper still has to complete 3DS there. `cryptogram` is masked in Debug.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthenticationResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enroll_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgraded: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downgraded: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_reason: Option<String>,
    /// 3DS protocol version, e.g. `2.2.0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_status: Option<String>,
    /// CAVV/AAV.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cryptogram: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eci: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exemption_applied: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl AuthenticationResult {
    /// The URL the shopper must open to finish 3DS, if one is pending.
    pub fn pending_challenge_url(&self) -> Option<&str> {
        self.authentication_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
    }
}

/// `browser` (BrowserReqDto, models.md §7): device data for 3DS 2.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Browser {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color_depth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub java_enabled: Option<bool>,
    /// `PC` / `MOBILE` / `TABLET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// `WEB`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_type: Option<String>,
    /// `WINDOWS`, `MACOS`, `LINUX`, `ANDROID`, `IOS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_os: Option<String>,
    /// `+00:00`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone_offset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen_height: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen_width: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookies: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_finger_print_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraud_detection_id: Option<String>,
}

/// One order line of `goods[]` (models.md §8). `price` is in minor units.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Goods {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub price: Option<i64>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_date: Option<PaykkaDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture_url: Option<String>,
}

/// `bill` (BillReqDto, models.md §9).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bill {
    /// Checkout only: `REQUIRED` (seen), `AUTO` (likely).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_address_collection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line2: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone country code, e.g. `+852`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Soft descriptor \[meaning INFERRED\].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub descriptor: Option<String>,
}

/// `shipping` (models.md §10): `bill` without collection and descriptor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Shipping {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub middle_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line2: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

/// `customer` (models.md §11): shopper profile for risk scoring.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Customer {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_time: Option<PaykkaDateTime>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub past_transactions: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub area_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_shopping_time: Option<PaykkaDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_shopping_time: Option<PaykkaDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// IP that placed the order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_ip: Option<String>,
    /// IP that pays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_ip: Option<String>,
}

/// `card_info` (models.md §12): display data, never the PAN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CardInfo {
    /// First six digits (a JSON number is read as its digits: a BIN never
    /// starts with 0).
    #[serde(
        deserialize_with = "wire::opt_string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub bin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_brand: Option<CardBrand>,
}

/// `balances` (BalanceRespInPayments, models.md §13), minor units of the
/// order currency. Absent fields stay `None` (and count as 0 in
/// [`Balances::in_currency`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Balances {
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub authed_amount: Option<i64>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub captured_amount: Option<i64>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub able_to_capture_amount: Option<i64>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub voided_amount: Option<i64>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub able_to_void_amount: Option<i64>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub refunded_amount: Option<i64>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub able_to_refund_amount: Option<i64>,
}

/// [`Balances`] as [`Money`] in the order currency (absent fields = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MoneyBalances {
    pub authed: Money,
    pub captured: Money,
    pub able_to_capture: Money,
    pub voided: Money,
    pub able_to_void: Money,
    pub refunded: Money,
    pub able_to_refund: Money,
}

impl MoneyBalances {
    /// The inferred invariants of models.md §13: `captured + voided +
    /// able_to_capture ≤ authed` and `refunded + able_to_refund ≤ captured`.
    /// A `false` is worth logging, not rejecting.
    pub fn is_consistent(&self) -> bool {
        let sum = |xs: &[i64]| xs.iter().try_fold(0i64, |acc, x| acc.checked_add(*x));
        let cap_side = sum(&[
            self.captured.minor,
            self.voided.minor,
            self.able_to_capture.minor,
        ]);
        let ref_side = sum(&[self.refunded.minor, self.able_to_refund.minor]);
        matches!(cap_side, Some(s) if s <= self.authed.minor)
            && matches!(ref_side, Some(s) if s <= self.captured.minor)
    }
}

impl Balances {
    /// Converts to [`MoneyBalances`]; absent fields count as zero.
    pub fn in_currency(&self, currency: Currency) -> MoneyBalances {
        let m = |v: Option<i64>| Money::new(v.unwrap_or(0), currency);
        MoneyBalances {
            authed: m(self.authed_amount),
            captured: m(self.captured_amount),
            able_to_capture: m(self.able_to_capture_amount),
            voided: m(self.voided_amount),
            able_to_void: m(self.able_to_void_amount),
            refunded: m(self.refunded_amount),
            able_to_refund: m(self.able_to_refund_amount),
        }
    }
}

/// The `payment` object as PayKKa echoes it in responses and notifications
/// (`{"payment_method":"BANKCARD"}`, `{"store_payment_method":false}`), and
/// the tokenisation part of a checkout session request (endpoints.md §9).
/// Carries no card data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PaymentInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<PaymentMethod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_payment_method: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_usage: Option<TokenUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub shopper_reference: Option<String>,
}

/// Parses a wire currency code for the money helpers.
pub(crate) fn wire_money(
    amount: Option<i64>,
    currency: Option<&str>,
) -> Result<Option<Money>, MoneyError> {
    match (amount, currency) {
        (Some(minor), Some(code)) => Ok(Some(Money::new(minor, Currency::new(code)?))),
        _ => Ok(None),
    }
}
