//! The merchant API's JSON: request bodies (deserialized, validated) and
//! response bodies (built from the engine's views).
//!
//! Amounts are `{"minor": 1299, "currency": "EUR"}` (minor units, ISO 4217).
//! Enums are upper snake case like PayKKa's (`PURCHASE`, `MANUAL`); states
//! in responses are snake_case (`authorised`, `partially_refunded`).
//!
//! Card numbers and CVVs arrive as [`CardNumber`] / [`Cvv`], whose `Debug`
//! and `Display` print a mask, so a logged request never shows them; they
//! are handed to the engine and dropped after the PayKKa call.

use payorch_engine::orchestrator::{
    AgreementView, CheckoutSessionCreate, CheckoutView, OrderView, PlacePaymentRequest,
};
use payorch_engine::order::{CallProgress, Phase};
use payorch_schemas::Money;
use payorch_schemas::events::order::TokenRequest;
use std::collections::BTreeMap;

use payorch_schemas::events::{
    AgreementId, Annotations, AuthorisationKind, CaptureId, CaptureMode, CardSummary, CheckoutId,
    OrderId, PaymentKind, RefundId, TokenPurpose,
};
use payorch_schemas::paykka::{
    Browser, CardNumber, Cvv, PaymentMethod, PaymentRequest, SecretString, SessionMode, TokenUsage,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::ApiError;

/// `PascalCase` enum serialization -> `snake_case` text.
pub(crate) fn snake<T: Serialize>(v: &T) -> String {
    let raw = serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut out = String::with_capacity(raw.len() + 4);
    for (i, c) in raw.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn positive(field: &str, m: &Money) -> Result<(), ApiError> {
    if m.minor <= 0 {
        return Err(ApiError::invalid_field(
            field,
            format!("must be a positive number of minor units, got {}", m.minor),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------ requests

/// How the shopper pays (`"type"` selects the variant).
/// Unknown fields are refused (a `cvc` typo must not silently drop the CVV).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaymentMethodInput {
    /// Plain card data (PCI-certified merchants only).
    Card {
        /// PAN, digits only (12-19).
        number: CardNumber,
        /// `"07"`.
        exp_month: String,
        /// `"2031"`.
        exp_year: String,
        #[serde(default)]
        cvv: Option<Cvv>,
        #[serde(default)]
        holder_name: Option<String>,
    },
    /// Output of PayKKa's Encrypted Card component.
    EncryptedCard {
        encrypted_card_number: SecretString,
        encrypted_exp_month: SecretString,
        encrypted_exp_year: SecretString,
        #[serde(default)]
        encrypted_cvv: Option<SecretString>,
    },
    /// A token PayKKa stored earlier for this shopper.
    Token {
        token: String,
        shopper_reference: String,
        /// Default `CARD_ON_FILE`.
        #[serde(default)]
        usage: Option<TokenPurpose>,
    },
    /// A Google Pay / Apple Pay payment token.
    Wallet {
        /// `GOOGLE_PAY` or `APPLE_PAY`.
        wallet: String,
        token_data: SecretString,
    },
}

impl PaymentMethodInput {
    fn into_paykka(self) -> Result<PaymentRequest, ApiError> {
        const F: &str = "payment_method";
        match self {
            PaymentMethodInput::Card {
                number,
                exp_month,
                exp_year,
                cvv,
                holder_name,
            } => {
                let pan = number.expose();
                if !(12..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ApiError::invalid_field(
                        "payment_method.number",
                        "must be 12 to 19 digits",
                    ));
                }
                let digits = |s: &str, n: std::ops::RangeInclusive<usize>| {
                    n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
                };
                if !digits(&exp_month, 1..=2) || !matches!(exp_month.parse::<u8>(), Ok(1..=12)) {
                    return Err(ApiError::invalid_field(
                        "payment_method.exp_month",
                        "must be 01 to 12",
                    ));
                }
                if !digits(&exp_year, 4..=4) {
                    return Err(ApiError::invalid_field(
                        "payment_method.exp_year",
                        "must be a four-digit year",
                    ));
                }
                if let Some(c) = &cvv {
                    let c = c.expose();
                    if !(3..=4).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(ApiError::invalid_field(
                            "payment_method.cvv",
                            "must be 3 or 4 digits",
                        ));
                    }
                }
                Ok(PaymentRequest {
                    card_no: Some(number),
                    exp_month: Some(format!("{:0>2}", exp_month)),
                    exp_year: Some(exp_year),
                    cvv,
                    holder_name,
                    ..PaymentRequest::new(PaymentMethod::BankCard)
                })
            }
            PaymentMethodInput::EncryptedCard {
                encrypted_card_number,
                encrypted_exp_month,
                encrypted_exp_year,
                encrypted_cvv,
            } => Ok(PaymentRequest {
                encrypted_card_no: Some(encrypted_card_number),
                encrypted_exp_month: Some(encrypted_exp_month),
                encrypted_exp_year: Some(encrypted_exp_year),
                encrypted_cvv,
                ..PaymentRequest::new(PaymentMethod::BankCard)
            }),
            PaymentMethodInput::Token {
                token,
                shopper_reference,
                usage,
            } => {
                if token.is_empty() || token.len() > 64 {
                    return Err(ApiError::invalid_field(
                        "payment_method.token",
                        "must be 1 to 64 characters",
                    ));
                }
                if shopper_reference.is_empty() || shopper_reference.len() > 64 {
                    return Err(ApiError::invalid_field(
                        "payment_method.shopper_reference",
                        "must be 1 to 64 characters",
                    ));
                }
                let usage = match usage.unwrap_or(TokenPurpose::CardOnFile) {
                    TokenPurpose::CardOnFile => TokenUsage::CardOnFile,
                    TokenPurpose::Subscription => TokenUsage::Subscription,
                };
                Ok(PaymentRequest::token(token, usage, shopper_reference))
            }
            PaymentMethodInput::Wallet { wallet, token_data } => {
                let method = PaymentMethod::parse(&wallet);
                if !method.is_wallet() {
                    return Err(ApiError::invalid_field(
                        "payment_method.wallet",
                        "must be GOOGLE_PAY or APPLE_PAY",
                    ));
                }
                if token_data.is_empty() {
                    return Err(ApiError::invalid_field(F, "token_data must not be empty"));
                }
                Ok(PaymentRequest {
                    token_data: Some(token_data),
                    ..PaymentRequest::new(method)
                })
            }
        }
    }
}

/// Ask PayKKa to store the card for later use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreTokenInput {
    /// `CARD_ON_FILE` or `SUBSCRIPTION`.
    pub purpose: TokenPurpose,
    /// The merchant's id for the shopper (1-64 characters).
    pub shopper_reference: String,
}

/// `POST /v1/payments`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentBody {
    pub amount: Money,
    /// `PURCHASE` (default) or `RECURRING` (first payment of an agreement;
    /// needs `store_token` with purpose `SUBSCRIPTION`).
    #[serde(default)]
    pub payment_type: Option<PaymentKind>,
    /// `FINAL_AUTH` (default) or `PRE_AUTH`.
    #[serde(default)]
    pub authorisation_type: AuthorisationKind,
    /// `AUTOMATIC` (default) or `MANUAL`.
    #[serde(default)]
    pub capture_method: CaptureMode,
    pub payment_method: PaymentMethodInput,
    #[serde(default)]
    pub store_token: Option<StoreTokenInput>,
    /// Where the shopper returns after 3-D Secure.
    #[serde(default)]
    pub return_url: Option<String>,
    /// Browser data for 3-D Secure 2 (PayKKa's `browser` object).
    #[serde(default)]
    pub browser: Option<Browser>,
    /// The merchant's own reference (1-128 characters; a search filter,
    /// not unique).
    #[serde(default)]
    pub merchant_reference: Option<String>,
    /// Key/value text: at most 20 keys, keys 1-40 characters, values at
    /// most 500 characters. Searchable with `metadata[KEY]=VALUE`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl CreatePaymentBody {
    /// Validates and maps to the engine's request and the payment's
    /// labels.
    pub fn into_engine(self) -> Result<(PlacePaymentRequest, Annotations), ApiError> {
        positive("amount.minor", &self.amount)?;
        let labels = annotations(self.merchant_reference, self.metadata)?;
        let payment_type = self.payment_type.unwrap_or(PaymentKind::Purchase);
        if let Some(t) = &self.store_token
            && (t.shopper_reference.is_empty() || t.shopper_reference.len() > 64)
        {
            return Err(ApiError::invalid_field(
                "store_token.shopper_reference",
                "must be 1 to 64 characters",
            ));
        }
        if payment_type == PaymentKind::Recurring
            && !self
                .store_token
                .as_ref()
                .is_some_and(|t| t.purpose == TokenPurpose::Subscription)
        {
            return Err(ApiError::invalid_field(
                "store_token",
                "a RECURRING payment must store the card with purpose SUBSCRIPTION",
            ));
        }
        let req = PlacePaymentRequest {
            amount: self.amount,
            payment_type,
            authorisation_type: self.authorisation_type,
            capture_method: self.capture_method,
            payment: self.payment_method.into_paykka()?,
            store_token: self.store_token.map(|t| TokenRequest {
                purpose: t.purpose,
                shopper_reference: t.shopper_reference,
            }),
            return_url: self.return_url,
            browser: self.browser,
        };
        Ok((req, labels))
    }
}

/// `POST /v1/payments/{id}/capture`. An empty body captures what is left.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    /// Default: everything still authorised.
    #[serde(default)]
    pub amount: Option<Money>,
    /// Release the rest of the authorisation after this capture.
    #[serde(default)]
    pub final_capture: bool,
}

/// `POST /v1/payments/{id}/void` (body optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoidBody {
    /// `DUPLICATE`, `FRAUDULENT`, `REQUESTED_BY_CUSTOMER` or `OTHER`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/payments/{id}/refunds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    pub amount: Money,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/checkout-sessions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckoutBody {
    pub amount: Money,
    #[serde(default)]
    pub payment_type: Option<PaymentKind>,
    #[serde(default)]
    pub capture_method: CaptureMode,
    /// `HOSTED` (default), `DROP_IN` or `COMPONENT`.
    #[serde(default)]
    pub session_mode: Option<String>,
    #[serde(default)]
    pub return_url: Option<String>,
    /// RFC 3339; default now + the engine's `checkout_ttl`, fixed by the
    /// first execution of the request (a replay returns the same).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The merchant's own reference (1-128 characters; a search filter,
    /// not unique).
    #[serde(default)]
    pub merchant_reference: Option<String>,
    /// Key/value text: at most 20 keys, keys 1-40 characters, values at
    /// most 500 characters. Searchable with `metadata[KEY]=VALUE`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl CreateCheckoutBody {
    /// Validates and maps to the engine's request and the session's
    /// labels (its payment carries them too).
    pub fn into_engine(
        self,
        now: OffsetDateTime,
    ) -> Result<(CheckoutSessionCreate, Annotations), ApiError> {
        positive("amount.minor", &self.amount)?;
        let labels = annotations(self.merchant_reference, self.metadata)?;
        let session_mode = match self.session_mode.as_deref() {
            None => SessionMode::Hosted,
            Some(raw) => match SessionMode::parse(raw) {
                SessionMode::Unknown(_) => {
                    return Err(ApiError::invalid_field(
                        "session_mode",
                        "must be HOSTED, DROP_IN or COMPONENT",
                    ));
                }
                m => m,
            },
        };
        let expires_at = match self.expires_at {
            Some(t) if t <= now => {
                return Err(ApiError::invalid_field(
                    "expires_at",
                    "must be in the future",
                ));
            }
            // Absent stays absent: the engine resolves the default once,
            // so an identical retry is the same request.
            other => other,
        };
        let req = CheckoutSessionCreate {
            amount: self.amount,
            payment_type: self.payment_type.unwrap_or(PaymentKind::Purchase),
            capture_method: self.capture_method,
            session_mode,
            return_url: self.return_url,
            expires_at,
        };
        Ok((req, labels))
    }
}

/// `POST /v1/recurring-agreements/{id}/charges`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeBody {
    pub amount: Money,
    /// The merchant's own reference (1-128 characters; a search filter,
    /// not unique).
    #[serde(default)]
    pub merchant_reference: Option<String>,
    /// Key/value text: at most 20 keys, keys 1-40 characters, values at
    /// most 500 characters. Searchable with `metadata[KEY]=VALUE`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl ChargeBody {
    /// The validated amount and the charge's labels.
    pub fn into_parts(self) -> Result<(Money, Annotations), ApiError> {
        positive("amount.minor", &self.amount)?;
        Ok((
            self.amount,
            annotations(self.merchant_reference, self.metadata)?,
        ))
    }
}

/// Checked labels (400 `invalid_field` naming `merchant_reference`,
/// `metadata` or `metadata.<key>`).
fn annotations(
    merchant_reference: Option<String>,
    metadata: BTreeMap<String, String>,
) -> Result<Annotations, ApiError> {
    let a = Annotations {
        merchant_reference,
        metadata,
    };
    a.validate()
        .map_err(|e| ApiError::invalid_field(&e.field, e.problem))?;
    Ok(a)
}

/// `POST /v1/recurring-agreements/{id}/cancel` (body optional).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CancelAgreementBody {
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/tokens/query`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenQueryBody {
    pub shopper_reference: String,
}

/// `POST /v1/tokens/remove`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRemoveBody {
    pub token: String,
    pub shopper_reference: String,
}

/// `POST /v1/apple-pay/sessions`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApplePaySessionBody {
    /// The domain the Apple Pay button is shown on.
    pub domain_name: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

pub(crate) fn require_text(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.trim().is_empty() || v.len() > max {
        return Err(ApiError::invalid_field(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------ responses

/// A next step the shopper must take (3-D Secure).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NextAction {
    /// Always `redirect_to_url`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub url: String,
}

/// Why PayKKa or the issuer declined.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeclineView {
    pub code: String,
    pub description: String,
}

/// One capture of a payment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaptureView {
    pub id: CaptureId,
    pub amount: Money,
    pub final_capture: bool,
    /// `requested`, `outcome_unknown`, `succeeded` or `declined`.
    pub status: CallProgress,
}

/// One refund of a payment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RefundView {
    pub id: RefundId,
    pub refund_trans_id: String,
    pub amount: Money,
    pub status: CallProgress,
}

/// A payment (one PayKKa order).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PaymentView {
    pub id: OrderId,
    /// `authorisation_pending`, `authorisation_unknown`, `challenge_required`,
    /// `authorised`, `partially_captured`, `captured`, `partially_refunded`,
    /// `refunded`, `declined`, `voided`.
    pub status: String,
    pub amount: Money,
    pub authorised: Money,
    pub captured: Money,
    pub refunded: Money,
    pub payment_type: PaymentKind,
    pub capture_method: CaptureMode,
    /// Our `trans_id` at PayKKa.
    pub trans_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_action: Option<NextAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline: Option<DeclineView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<CardSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement_id: Option<AgreementId>,
    pub captures: Vec<CaptureView>,
    pub refunds: Vec<RefundView>,
    /// Progress of the void, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub void: Option<CallProgress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_reference: Option<String>,
    /// The merchant's labels (`{}` when none).
    pub metadata: BTreeMap<String, String>,
    /// When the first event was recorded (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// When the latest event was recorded (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
    /// Event-stream version this view reflects.
    pub version: u64,
}

impl PaymentView {
    /// True while PayKKa's answer to some call is not known yet.
    pub fn has_open_call(&self) -> bool {
        self.captures.iter().any(|c| c.status.is_open())
            || self.refunds.iter().any(|r| r.status.is_open())
            || self.void.is_some_and(CallProgress::is_open)
    }

    /// True while the authorisation itself is not settled.
    pub fn authorisation_pending(&self) -> bool {
        self.status == snake(&Phase::AuthorisationPending)
            || self.status == snake(&Phase::AuthorisationUnknown)
    }
}

impl From<OrderView> for PaymentView {
    fn from(v: OrderView) -> Self {
        let decline = match (v.decline_code, v.decline_description) {
            (None, None) => None,
            (c, d) => Some(DeclineView {
                code: c.unwrap_or_default(),
                description: d.unwrap_or_default(),
            }),
        };
        PaymentView {
            id: v.order_id,
            status: snake(&v.status),
            amount: v.amount,
            authorised: v.authorised,
            captured: v.captured,
            refunded: v.refunded,
            payment_type: v.payment_type,
            capture_method: v.capture_method,
            trans_id: v.trans_id,
            gateway_order_id: v.gateway_order_id,
            next_action: v.authentication_url.map(|url| NextAction {
                kind: "redirect_to_url",
                url,
            }),
            decline,
            card: v.card,
            token: v.token,
            agreement_id: v.agreement_id,
            captures: v
                .captures
                .into_iter()
                .map(|c| CaptureView {
                    id: c.capture_id,
                    amount: c.amount,
                    final_capture: c.final_capture,
                    status: c.progress,
                })
                .collect(),
            refunds: v
                .refunds
                .into_iter()
                .map(|r| RefundView {
                    id: r.refund_id,
                    refund_trans_id: r.refund_trans_id.as_str().to_owned(),
                    amount: r.amount,
                    status: r.progress,
                })
                .collect(),
            void: v.void,
            merchant_reference: v.labels.merchant_reference,
            metadata: v.labels.metadata,
            created_at: v.labels.created_at,
            updated_at: v.labels.updated_at,
            version: v.version,
        }
    }
}

/// A checkout session (PayKKa-hosted payment page).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckoutSessionView {
    pub id: CheckoutId,
    /// `requested`, `open`, `completed`, `expired` or `cancelled`.
    pub status: String,
    pub amount: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Where to send the shopper (`HOSTED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_url: Option<String>,
    /// The payment, once the shopper paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<OrderId>,
    /// When the session expires (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_reference: Option<String>,
    /// The merchant's labels (`{}` when none).
    pub metadata: BTreeMap<String, String>,
    /// When the first event was recorded (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// When the latest event was recorded (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
    pub version: u64,
}

impl From<CheckoutView> for CheckoutSessionView {
    fn from(v: CheckoutView) -> Self {
        CheckoutSessionView {
            id: v.checkout_id,
            status: snake(&v.status),
            amount: v.amount,
            session_id: v.session_id,
            session_url: v.session_url,
            payment_id: v.order_id,
            expires_at: v.expires_at,
            merchant_reference: v.labels.merchant_reference,
            metadata: v.labels.metadata,
            created_at: v.labels.created_at,
            updated_at: v.labels.updated_at,
            version: v.version,
        }
    }
}

/// A recurring agreement (stored token + shopper, charged by the merchant).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecurringAgreementView {
    pub id: AgreementId,
    /// `active`, `cancelling` or `cancelled`.
    pub status: String,
    pub first_payment_id: OrderId,
    pub shopper_reference: String,
    /// Payment ids of the merchant-initiated charges.
    pub charges: Vec<OrderId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_reference: Option<String>,
    /// The merchant's labels (`{}` when none).
    pub metadata: BTreeMap<String, String>,
    /// When the first event was recorded (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// When the latest event was recorded (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
    pub version: u64,
}

impl From<AgreementView> for RecurringAgreementView {
    fn from(v: AgreementView) -> Self {
        RecurringAgreementView {
            id: v.agreement_id,
            status: snake(&v.status),
            first_payment_id: v.first_order_id,
            shopper_reference: v.shopper_reference,
            charges: v.charges,
            merchant_reference: v.labels.merchant_reference,
            metadata: v.labels.metadata,
            created_at: v.labels.created_at,
            updated_at: v.labels.updated_at,
            version: v.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_become_snake_case() {
        assert_eq!(snake(&Phase::PartiallyRefunded), "partially_refunded");
        assert_eq!(snake(&Phase::Authorised), "authorised");
    }

    #[test]
    fn card_data_never_shows_in_debug() {
        let body: CreatePaymentBody = serde_json::from_value(serde_json::json!({
            "amount": {"minor": 1000, "currency": "EUR"},
            "payment_method": {"type": "card", "number": "4111111111111111",
                "exp_month": "07", "exp_year": "2031", "cvv": "737"}
        }))
        .unwrap();
        let dbg = format!("{body:?}");
        assert!(!dbg.contains("4111111111111111"), "{dbg}");
        assert!(!dbg.contains("737"), "{dbg}");
        let (req, _) = body.into_engine().unwrap();
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("4111111111111111"), "{dbg}");
        assert!(!dbg.contains("737"), "{dbg}");
    }
}
