//! Payment operations (endpoints.md §1–§4): [`InitiateRequest`] with its
//! `payment` object [`PaymentRequest`], [`QueryRequest`], [`CaptureRequest`],
//! [`VoidRequest`], and the order object [`PaymentResponse`] they all
//! answer with (inside [`super::Envelope`]).
//!
//! Requests we build carry `currency` as [`Currency`] (only ISO 4217 codes
//! can be sent); responses carry it as `String`, because PayKKa may send a
//! code outside our table and an unknown code must not make a response
//! unreadable. The money helpers convert on demand.

use serde::{Deserialize, Serialize};

use super::enums::{
    AuthorisationType, CaptureMethod, PaymentMethod, PaymentType, Reason, TokenUsage,
};
use super::objects::{
    Authentication, AuthenticationResult, Balances, Bill, Browser, CardInfo, Customer, Goods,
    MoneyBalances, PaymentInfo, Shipping, wire_money,
};
use super::secret::{CardNumber, Cvv, SecretString};
use super::wire::{self, PaykkaDateTime};
use crate::money::{Currency, Money, MoneyError};

/// Initiate transaction (发起交易), `POST /payments` (endpoints.md §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitiateRequest {
    /// ≤ 32 chars.
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub payment_type: PaymentType,
    /// PayKKa default `FINAL_AUTH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorisation_type: Option<AuthorisationType>,
    /// PayKKa default `AUTOMATIC` \[INFERRED\].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_method: Option<CaptureMethod>,
    /// Merchant order number, ≤ 64; PayKKa's idempotency key. A bare JSON
    /// number is accepted on parse (one client sent one).
    #[serde(deserialize_with = "wire::string_or_number")]
    pub trans_id: String,
    /// Epoch milliseconds; the same value goes into the signature.
    pub timestamp: i64,
    pub currency: Currency,
    /// Minor units.
    #[serde(with = "wire::amount")]
    pub amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// Required except for subsequent (MIT) recurring payments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<PaykkaDateTime>,
    /// Required with `RECURRING`: `false` first payment, `true` later ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mit: Option<bool>,
    /// Subsequent recurring payments (top level, \[INFERRED\] placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub recurring_agreement_id: Option<String>,
    pub payment: PaymentRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<Browser>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods: Option<Vec<Goods>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill: Option<Bill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping: Option<Shipping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
}

impl InitiateRequest {
    /// A request with the required fields; everything optional is `None`.
    pub fn new(
        merchant_id: impl Into<String>,
        timestamp: i64,
        payment_type: PaymentType,
        trans_id: impl Into<String>,
        amount: Money,
        payment: PaymentRequest,
    ) -> Self {
        InitiateRequest {
            merchant_id: merchant_id.into(),
            payment_type,
            authorisation_type: None,
            capture_method: None,
            trans_id: trans_id.into(),
            timestamp,
            currency: amount.currency,
            amount: amount.minor,
            notify_url: None,
            return_url: None,
            expire_time: None,
            mit: None,
            recurring_agreement_id: None,
            payment,
            authentication: None,
            browser: None,
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

/// The `payment` object of [`InitiateRequest`] (endpoints.md §1): the
/// instrument. For `BANKCARD` exactly one of `token`, `card_no`,
/// `encrypted_card_no`; wallets put their token in `token_data`. PAN, CVV,
/// encrypted values and `token_data` are masked in `Debug`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRequest {
    pub payment_method: PaymentMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_payment_method: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_usage: Option<TokenUsage>,
    /// ≤ 64; required when storing or using a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub shopper_reference: Option<String>,
    /// Stored token `TK…`, ≤ 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub token: Option<String>,
    /// Plain PAN (PCI-certified merchants only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_no: Option<CardNumber>,
    /// `"2031"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp_year: Option<String>,
    /// `"07"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp_month: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvv: Option<Cvv>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_name: Option<String>,
    /// From PayKKa's Encrypted Card component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_card_no: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_exp_year: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_exp_month: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_cvv: Option<SecretString>,
    /// Wallet (Google Pay / Apple Pay) payment token as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_data: Option<SecretString>,
}

impl PaymentRequest {
    /// Only the method; every other field `None`.
    pub fn new(payment_method: PaymentMethod) -> Self {
        PaymentRequest {
            payment_method,
            store_payment_method: None,
            token_usage: None,
            shopper_reference: None,
            token: None,
            card_no: None,
            exp_year: None,
            exp_month: None,
            cvv: None,
            holder_name: None,
            encrypted_card_no: None,
            encrypted_exp_year: None,
            encrypted_exp_month: None,
            encrypted_cvv: None,
            token_data: None,
        }
    }

    /// Plain card data (`BANKCARD`).
    pub fn card(
        card_no: impl Into<String>,
        exp_month: impl Into<String>,
        exp_year: impl Into<String>,
        cvv: impl Into<String>,
    ) -> Self {
        PaymentRequest {
            card_no: Some(CardNumber::new(card_no)),
            exp_month: Some(exp_month.into()),
            exp_year: Some(exp_year.into()),
            cvv: Some(Cvv::new(cvv)),
            ..PaymentRequest::new(PaymentMethod::BankCard)
        }
    }

    /// Encrypted Card component output (`BANKCARD`).
    pub fn encrypted_card(
        encrypted_card_no: impl Into<String>,
        encrypted_exp_month: impl Into<String>,
        encrypted_exp_year: impl Into<String>,
        encrypted_cvv: Option<String>,
    ) -> Self {
        PaymentRequest {
            encrypted_card_no: Some(SecretString::new(encrypted_card_no)),
            encrypted_exp_month: Some(SecretString::new(encrypted_exp_month)),
            encrypted_exp_year: Some(SecretString::new(encrypted_exp_year)),
            encrypted_cvv: encrypted_cvv.map(SecretString::new),
            ..PaymentRequest::new(PaymentMethod::BankCard)
        }
    }

    /// A stored token (`BANKCARD`), with its usage and owner.
    pub fn token(
        token: impl Into<String>,
        token_usage: TokenUsage,
        shopper_reference: impl Into<String>,
    ) -> Self {
        PaymentRequest {
            token: Some(token.into()),
            token_usage: Some(token_usage),
            shopper_reference: Some(shopper_reference.into()),
            ..PaymentRequest::new(PaymentMethod::BankCard)
        }
    }

    /// A wallet payment (`GOOGLE_PAY` / `APPLE_PAY`) with its token data.
    pub fn wallet(method: PaymentMethod, token_data: impl Into<String>) -> Self {
        PaymentRequest {
            token_data: Some(SecretString::new(token_data)),
            ..PaymentRequest::new(method)
        }
    }
}

/// The order object PayKKa returns from initiate, query, capture and void
/// (`data` of the envelope; endpoints.md §1 "Response data", §2–§4).
///
/// Every field is optional: PayKKa omits what does not apply. `currency` is
/// text (see module docs); [`PaymentResponse::amount_money`] and
/// [`PaymentResponse::balances`] convert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PaymentResponse {
    /// Present in the v1.2 example; part of the response signature.
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub merchant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub trans_id: Option<String>,
    /// PayKKa order number `GW…`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub order_id: Option<String>,
    /// Checkout session `CS…` when paid through a session.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<super::enums::GatewayOrderStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_type: Option<PaymentType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorisation_type: Option<AuthorisationType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_method: Option<CaptureMethod>,
    #[serde(with = "wire::opt_amount", skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_info: Option<CardInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balances: Option<Balances>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_result: Option<AuthenticationResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub shopper_reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default, deserialize_with = "wire::opt_string_or_number")]
    pub recurring_agreement_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_finish_time: Option<PaykkaDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<PaykkaDateTime>,
    /// Fields this version does not know, kept verbatim (read liberally:
    /// a newer PayKKa answer loses nothing). Empty for what we build.
    #[serde(flatten, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

impl PaymentResponse {
    /// `amount` + `currency` as [`Money`]; `Ok(None)` when either is
    /// absent, `Err` when the currency code is not ISO 4217.
    pub fn amount_money(&self) -> Result<Option<Money>, MoneyError> {
        wire_money(self.amount, self.currency.as_deref())
    }

    /// The order currency, if present and known.
    pub fn currency(&self) -> Result<Option<Currency>, MoneyError> {
        self.currency.as_deref().map(Currency::new).transpose()
    }

    /// `balances` in the order currency; `Ok(None)` when balances or the
    /// currency are absent.
    pub fn balances(&self) -> Result<Option<MoneyBalances>, MoneyError> {
        match (&self.balances, self.currency()?) {
            (Some(b), Some(c)) => Ok(Some(b.in_currency(c))),
            _ => Ok(None),
        }
    }

    /// The 3DS challenge URL, if the shopper still has to authenticate.
    pub fn pending_challenge_url(&self) -> Option<&str> {
        self.authentication_result
            .as_ref()
            .and_then(AuthenticationResult::pending_challenge_url)
    }

    /// `error_code` is absent or `0000`.
    pub fn is_error_free(&self) -> bool {
        self.error_code
            .as_deref()
            .is_none_or(|c| c == super::envelope::ERROR_CODE_SUCCESS)
    }
}

/// Query transaction (交易查询), `POST /payments/query` (endpoints.md §2).
/// At least one of `trans_id`, `order_id`, `session_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub trans_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "wire::opt_string_or_number")]
    pub session_id: Option<String>,
}

impl QueryRequest {
    /// Query by PayKKa `order_id` (preferred when known).
    pub fn by_order_id(
        merchant_id: impl Into<String>,
        timestamp: i64,
        order_id: impl Into<String>,
    ) -> Self {
        QueryRequest {
            merchant_id: merchant_id.into(),
            timestamp,
            trans_id: None,
            order_id: Some(order_id.into()),
            session_id: None,
        }
    }

    /// Query by merchant `trans_id`.
    pub fn by_trans_id(
        merchant_id: impl Into<String>,
        timestamp: i64,
        trans_id: impl Into<String>,
    ) -> Self {
        QueryRequest {
            merchant_id: merchant_id.into(),
            timestamp,
            trans_id: Some(trans_id.into()),
            order_id: None,
            session_id: None,
        }
    }

    /// Query by checkout `session_id`.
    pub fn by_session_id(
        merchant_id: impl Into<String>,
        timestamp: i64,
        session_id: impl Into<String>,
    ) -> Self {
        QueryRequest {
            merchant_id: merchant_id.into(),
            timestamp,
            trans_id: None,
            order_id: None,
            session_id: Some(session_id.into()),
        }
    }
}

/// Capture (交易请款), `POST /payments/capture` (endpoints.md §3, fields
/// \[INFERRED\]). `amount` omitted ⇒ full capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    #[serde(deserialize_with = "wire::string_or_number")]
    pub order_id: String,
    #[serde(
        default,
        with = "wire::opt_amount",
        skip_serializing_if = "Option::is_none"
    )]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// `true`: this capture is the last one, release the uncaptured rest of
    /// the authorisation. How PayKKa releases a remainder is \[INFERRED\]
    /// (a flag on the capture, a void after a partial capture, or only when
    /// the authorisation expires); send it only in the flag mode. Omitted
    /// when `None`, so a capture without it is byte for byte unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_capture: Option<bool>,
}

/// Void / cancel authorisation (交易撤销), `POST /payments/void`
/// (endpoints.md §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidRequest {
    #[serde(deserialize_with = "wire::string_or_number")]
    pub merchant_id: String,
    pub timestamp: i64,
    #[serde(deserialize_with = "wire::string_or_number")]
    pub order_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}
