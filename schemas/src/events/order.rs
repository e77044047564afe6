//! Events of the `order` stream: one payment attempt (one PayKKa `trans_id`).
//!
//! Every PayKKa call appears twice: `*Requested` before the call, then the
//! outcome (`Authorised`/`Captured`/..., `*Declined` or `*OutcomeUnknown`).
//!
//! Schema history (see the engine's upcaster):
//! * v1 -> v2: `payment_placed` carried `amount_minor` + `currency`; v2 has
//!   `amount: Money`. `authorised` called PayKKa's order number `order_id`;
//!   v2 calls it `gateway_order_id`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    AgreementId, AuthorisationKind, CaptureId, CaptureMode, CardSummary, CheckoutId,
    GatewayOrderId, GatewayRefundId, MerchantId, OrderId, PaymentKind, RecurringAgreementRef,
    RefundId, RefundTransId, SessionId, TokenPurpose, TransId,
};
use crate::Money;

/// Current schema version of every order event type.
pub const SCHEMA_VERSION: u32 = 2;

/// How the shopper pays, without secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct InstrumentSummary {
    /// PayKKa `payment_method` as sent (`BANKCARD`, `GOOGLE_PAY`, ...).
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardSummary>,
    /// The stored token paid with, when paying by token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The shopper asked PayKKa to store the card.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct TokenRequest {
    pub purpose: TokenPurpose,
    pub shopper_reference: String,
}

/// The order exists: amount, currency and the authorisation parameters are
/// fixed from here on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct PaymentPlaced {
    pub order_id: OrderId,
    pub merchant_id: MerchantId,
    pub trans_id: TransId,
    pub amount: Money,
    pub payment_type: PaymentKind,
    pub authorisation_type: AuthorisationKind,
    pub capture_method: CaptureMode,
    pub instrument: InstrumentSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_token: Option<TokenRequest>,
    /// Set on a merchant-initiated charge of a recurring agreement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_id: Option<AgreementId>,
    /// Set when the shopper paid on a PayKKa checkout session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<CheckoutId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// The merchant's own reference (absent in older events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_reference: Option<String>,
    /// The merchant's key/value labels (at most 20 keys of 1-40
    /// characters, values up to 500; empty in older events).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// The initiate call is about to be sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct AuthorisationRequested {
    pub trans_id: TransId,
}

/// PayKKa wants the shopper to pass a 3-D Secure challenge.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct ChallengeRequired {
    pub authentication_url: String,
}

/// The shopper came back from the challenge (result still to come).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct ChallengeCompleted {}

/// The challenge failed; the attempt is over.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct ChallengeFailed {
    pub code: String,
    pub description: String,
}

/// The shopper never completed the challenge and PayKKa confirmed the
/// payment was not made; the attempt is over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct ChallengeExpired {}

/// Funds are held.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct Authorised {
    pub gateway_order_id: GatewayOrderId,
    pub amount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardSummary>,
}

/// PayKKa or the issuer refused the payment (codes.md §4); final.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct AuthorisationDeclined {
    pub code: String,
    pub description: String,
}

/// The initiate call's result is unknown (timeout, 5xx, 999999): the
/// reconciler will query. Not a failure.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct AuthorisationOutcomeUnknown {
    pub reason: String,
}

/// PayKKa captured by itself (automatic capture): the payment succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct Succeeded {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_order_id: Option<GatewayOrderId>,
    pub captured: Money,
}

/// A (partial) capture is about to be sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CaptureRequested {
    pub capture_id: CaptureId,
    pub amount: Money,
    /// Release the uncaptured remainder after this capture.
    pub final_capture: bool,
}

/// The capture went through.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct Captured {
    pub capture_id: CaptureId,
    pub amount: Money,
    /// PayKKa's answer showed the rest of the authorisation released (no
    /// more captures). Set only from PayKKa's balances, never from our
    /// request's `final_capture`.
    pub remainder_released: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CaptureDeclined {
    pub capture_id: CaptureId,
    pub code: String,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CaptureOutcomeUnknown {
    pub capture_id: CaptureId,
    pub reason: String,
}

/// PayKKa confirmed that the uncaptured rest of a partially captured
/// authorisation is released (its balances: `voided_amount` grown, nothing
/// left to capture), by the answer to a capture or void, a query or a
/// notification. No more captures; the order is captured, not voided.
/// How PayKKa releases it is [INFERRED] (the engine's release mode); it is
/// recorded only from PayKKa's balances, never from our own request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct RemainderReleased {
    /// The released amount (authorised minus captured).
    pub amount: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct VoidRequested {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct Voided {}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct VoidDeclined {
    pub code: String,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct VoidOutcomeUnknown {
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct RefundRequested {
    pub refund_id: RefundId,
    pub refund_trans_id: RefundTransId,
    pub amount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct Refunded {
    pub refund_id: RefundId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_refund_id: Option<GatewayRefundId>,
    pub amount: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct RefundDeclined {
    pub refund_id: RefundId,
    pub code: String,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct RefundOutcomeUnknown {
    pub refund_id: RefundId,
    pub reason: String,
}

/// PayKKa stored the card: a token (and for recurring, an agreement).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct TokenStored {
    pub token: String,
    pub shopper_reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_agreement_ref: Option<RecurringAgreementRef>,
}

super::event_enum! {
    /// Every event of an `order` stream.
    OrderEvent {
        // Shared: the biggest event (~300 bytes) is behind a pointer, so
        // every other event stays small to move, and the order state keeps
        // the same `Arc` instead of a deep copy.
        PaymentPlaced(Arc<PaymentPlaced>) = "payment_placed",
        AuthorisationRequested = "authorisation_requested",
        ChallengeRequired = "challenge_required",
        ChallengeCompleted = "challenge_completed",
        ChallengeFailed = "challenge_failed",
        ChallengeExpired = "challenge_expired",
        Authorised = "authorised",
        AuthorisationDeclined = "authorisation_declined",
        AuthorisationOutcomeUnknown = "authorisation_outcome_unknown",
        Succeeded = "succeeded",
        CaptureRequested = "capture_requested",
        Captured = "captured",
        CaptureDeclined = "capture_declined",
        CaptureOutcomeUnknown = "capture_outcome_unknown",
        VoidRequested = "void_requested",
        Voided = "voided",
        VoidDeclined = "void_declined",
        VoidOutcomeUnknown = "void_outcome_unknown",
        RefundRequested = "refund_requested",
        Refunded = "refunded",
        RefundDeclined = "refund_declined",
        RefundOutcomeUnknown = "refund_outcome_unknown",
        TokenStored = "token_stored",
        RemainderReleased = "remainder_released",
    }
}

impl OrderEvent {
    pub const SCHEMA_VERSION: u32 = SCHEMA_VERSION;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;

    #[test]
    fn tagged_json_and_typed_decoding_agree() {
        let e = OrderEvent::Captured(Captured {
            capture_id: CaptureId(uuid::Uuid::from_u128(7)),
            amount: Money::new(500, Currency::EUR),
            remainder_released: false,
        });
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.starts_with(r#"{"event_type":"captured","#), "{json}");
        assert_eq!(OrderEvent::from_json("captured", &json).unwrap(), e);
        assert_eq!(serde_json::from_str::<OrderEvent>(&json).unwrap(), e);
        assert!(matches!(
            OrderEvent::from_json("nope", &json),
            Err(super::super::EventDecodeError::UnknownType(_))
        ));
        assert_eq!(e.event_type(), "captured");
        assert_eq!(OrderEvent::EVENT_TYPES.len(), 24);
    }
}
