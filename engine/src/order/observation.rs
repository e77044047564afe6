//! What the engine learns from PayKKa, in engine terms.
//!
//! A synchronous response, a webhook and a query result all become a
//! [`PaymentObservation`] or a [`RefundObservation`]; the aggregate treats
//! them alike (flows.md §0 "Truth = Query"). The gateway adapter maps PayKKa
//! DTOs into these types (see `crate::gateway`).

use payorch_schemas::Money;
use payorch_schemas::events::{
    CardSummary, GatewayOrderId, GatewayRefundId, RecurringAgreementRef, RefundId,
};

/// PayKKa's gateway order status (models.md §3), with a lenient fallback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObservedStatus {
    Processing,
    Authorised,
    Success,
    Failure,
    Canceled,
    PartiallyRefunded,
    Refunded,
    PartiallyReversed,
    /// A value this version does not know: treated as non-final.
    Other(String),
}

impl ObservedStatus {
    /// Parses PayKKa's spelling leniently (case and `_` insensitive).
    pub fn parse(raw: &str) -> Self {
        let norm: String = raw
            .chars()
            .filter(|c| *c != '_' && *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        match norm.as_str() {
            "PROCESSING" => Self::Processing,
            "AUTHORIZED" | "AUTHORISED" => Self::Authorised,
            "SUCCESS" => Self::Success,
            "FAILURE" | "FAILED" => Self::Failure,
            "CANCELED" | "CANCELLED" => Self::Canceled,
            "PARTIALLYREFUNDED" => Self::PartiallyRefunded,
            "REFUNDED" => Self::Refunded,
            "PARTIALLYREVERSED" => Self::PartiallyReversed,
            _ => Self::Other(raw.to_owned()),
        }
    }

    /// Money has been captured at PayKKa.
    pub fn is_captured(&self) -> bool {
        matches!(
            self,
            Self::Success | Self::PartiallyRefunded | Self::Refunded | Self::PartiallyReversed
        )
    }
}

/// PayKKa `balances` (models.md §13), minor units of the order currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balances {
    pub authed: i64,
    pub captured: i64,
    pub refunded: i64,
    pub voided: i64,
}

/// Where an observation came from (for logs and the explain view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObservationSource {
    /// The synchronous response of our own call.
    Response,
    /// A PayKKa webhook.
    Notification,
    /// A Transaction Query / Refund Query result.
    Query,
}

/// The state of a payment as PayKKa reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentObservation {
    pub source: ObservationSource,
    pub status: ObservedStatus,
    pub gateway_order_id: Option<GatewayOrderId>,
    /// The order amount PayKKa reports (used as the authorised amount).
    pub amount: Option<Money>,
    pub card: Option<CardSummary>,
    /// Set by the reconciler once its grace period since the call was
    /// requested has passed: whatever this observation does not show (a
    /// capture, a void) did not happen. A webhook or a fresh response
    /// never sets it.
    pub past_grace: bool,
    /// Money positions; only a response or a query carries them (a
    /// notification never does).
    pub balances: Option<Balances>,
    /// Present while the shopper must pass 3-D Secure.
    pub authentication_url: Option<String>,
    pub error_code: Option<String>,
    pub error_description: Option<String>,
    pub token: Option<String>,
    pub shopper_reference: Option<String>,
    pub recurring_agreement_ref: Option<RecurringAgreementRef>,
}

impl PaymentObservation {
    /// A minimal observation with only a status (tests, fakes).
    pub fn status(source: ObservationSource, status: ObservedStatus) -> Self {
        PaymentObservation {
            source,
            status,
            gateway_order_id: None,
            amount: None,
            card: None,
            past_grace: false,
            balances: None,
            authentication_url: None,
            error_code: None,
            error_description: None,
            token: None,
            shopper_reference: None,
            recurring_agreement_ref: None,
        }
    }

    pub fn with_gateway_order_id(mut self, id: impl Into<String>) -> Self {
        self.gateway_order_id = Some(GatewayOrderId::from(id.into()));
        self
    }

    pub fn with_balances(mut self, b: Balances) -> Self {
        self.balances = Some(b);
        self
    }

    pub fn with_error(mut self, code: impl Into<String>, description: impl Into<String>) -> Self {
        self.error_code = Some(code.into());
        self.error_description = Some(description.into());
        self
    }

    pub fn with_authentication_url(mut self, url: impl Into<String>) -> Self {
        self.authentication_url = Some(url.into());
        self
    }

    pub fn with_token(
        mut self,
        token: impl Into<String>,
        shopper_reference: impl Into<String>,
    ) -> Self {
        self.token = Some(token.into());
        self.shopper_reference = Some(shopper_reference.into());
        self
    }
}

/// PayKKa refund status (models.md §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObservedRefundStatus {
    Reviewing,
    Processing,
    Success,
    Failure,
    Other(String),
}

impl ObservedRefundStatus {
    pub fn parse(raw: &str) -> Self {
        match raw.trim().to_ascii_uppercase().as_str() {
            "REVIEWING" => Self::Reviewing,
            "PROCESSING" => Self::Processing,
            "SUCCESS" => Self::Success,
            "FAILURE" | "FAILED" => Self::Failure,
            _ => Self::Other(raw.to_owned()),
        }
    }
}

/// The state of one refund as PayKKa reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundObservation {
    pub source: ObservationSource,
    pub refund_id: RefundId,
    pub status: ObservedRefundStatus,
    pub gateway_refund_id: Option<GatewayRefundId>,
    pub error_code: Option<String>,
    pub error_description: Option<String>,
}

/// Anything PayKKa told us about an order, as a command payload.
// Transient command data, never stored in bulk: the size gap is harmless.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    Payment(PaymentObservation),
    Refund(RefundObservation),
    /// Transaction Query answered "the order doesn't exist" (206024).
    /// `past_grace`: the reconciler's grace period since the initiate was
    /// requested has passed (see `crate::reconciler` for the rule).
    PaymentNotFound {
        past_grace: bool,
    },
    /// Refund Query answered "doesn't exist" for this refund. Never a
    /// decline, whenever it comes: the first send may have been lost before
    /// PayKKa saw it, and past the grace period the reconciler sends the
    /// refund again instead (same `refund_trans_id`). Changes nothing.
    RefundNotFound {
        refund_id: RefundId,
    },
}
