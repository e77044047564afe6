//! Checkout sessions (endpoints.md §9–§10): [`CheckoutSessionRequest`] /
//! [`CheckoutSessionResponse`] and [`CheckoutSessionQueryRequest`] /
//! [`CheckoutSessionQueryResponse`]. A session is a payment intention; the
//! money outcome is the transaction it produces (query it with
//! [`super::QueryRequest::by_session_id`]).

use serde::{Deserialize, Serialize};

use super::enums::{AuthorisationType, CaptureMethod, PaymentMethod, PaymentType, SessionMode};
use super::objects::{Authentication, Bill, Customer, Goods, PaymentInfo, Shipping};
use super::payment::PaymentResponse;
use super::wire::{self, PaykkaDateTime};
use crate::money::{Currency, Money};

/// Checkout session create (收银台创建), `POST /session` (endpoints.md §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutSessionRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    pub payment_type: PaymentType,
    /// ≤ 64; one `trans_id` ⇒ one session. A bare JSON number is accepted.
    #[serde(deserialize_with = "wire::string_or_number")]
    pub trans_id: String,
    pub currency: Currency,
    #[serde(with = "wire::amount")]
    pub amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<PaykkaDateTime>,
    pub session_mode: SessionMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_method: Option<CaptureMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorisation_type: Option<AuthorisationType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_merchant_name: Option<String>,
    /// Page language, e.g. `zh-CN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_payment_methods: Option<Vec<PaymentMethod>>,
    /// Tokenisation / recurring via checkout (`store_payment_method`,
    /// `token_usage`, `shopper_reference`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods: Option<Vec<Goods>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill: Option<Bill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping: Option<Shipping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
}

impl CheckoutSessionRequest {
    /// A request with the required fields; everything optional is `None`.
    pub fn new(
        merchant_id: impl Into<String>,
        timestamp: i64,
        payment_type: PaymentType,
        trans_id: impl Into<String>,
        amount: Money,
        session_mode: SessionMode,
    ) -> Self {
        CheckoutSessionRequest {
            merchant_id: merchant_id.into(),
            timestamp,
            payment_type,
            trans_id: trans_id.into(),
            currency: amount.currency,
            amount: amount.minor,
            notify_url: None,
            return_url: None,
            cancel_url: None,
            expire_time: None,
            session_mode,
            capture_method: None,
            authorisation_type: None,
            display_merchant_name: None,
            display_locale: None,
            theme_id: None,
            allowed_payment_methods: None,
            payment: None,
            authentication: None,
            goods: None,
            bill: None,
            shipping: None,
            customer: None,
        }
    }

    /// `amount` + `currency` as [`Money`].
    pub fn amount_money(&self) -> Money {
        Money::new(self.amount, self.currency)
    }
}

/// `data` of session create: `session_id` (`CS…`) and, for `HOSTED`, the
/// `session_url` to redirect the shopper to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckoutSessionResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub trans_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<PaykkaDateTime>,
}

/// Checkout session query (收银台查询), `POST /session/query`
/// (endpoints.md §10, fields \[INFERRED\]): `session_id` and/or `trans_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSessionQueryRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub trans_id: Option<String>,
}

/// `data` of session query \[INFERRED\]: the session's own fields
/// (`session_url`, `session_status`) next to the transaction fields of a
/// [`PaymentResponse`] (`session_id`, `trans_id`, `order_id`, `status`, …),
/// which are empty while the shopper has not paid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckoutSessionQueryResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_mode: Option<SessionMode>,
    /// Session state text (values not captured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_status: Option<String>,
    #[serde(flatten)]
    pub order: PaymentResponse,
}
