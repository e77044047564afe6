//! Events of the `recurring_agreement` stream: a stored token plus PayKKa's
//! agreement id, created by a first customer-initiated payment; each later
//! merchant-initiated charge is its own order that references the agreement.

use serde::{Deserialize, Serialize};

use super::{AgreementId, CardSummary, MerchantId, OrderId, RecurringAgreementRef};
use crate::Money;

/// Current schema version of every agreement event type.
pub const SCHEMA_VERSION: u32 = 1;

/// The first (CIT) payment succeeded and stored a token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct AgreementCreated {
    pub agreement_id: AgreementId,
    pub merchant_id: MerchantId,
    pub first_order_id: OrderId,
    pub token: String,
    pub shopper_reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_agreement_ref: Option<RecurringAgreementRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardSummary>,
    /// Inherited from the payment that created the agreement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_reference: Option<String>,
    /// The merchant's key/value labels (at most 20 keys of 1-40
    /// characters, values up to 500; empty in older events).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// A merchant-initiated charge was started as order `order_id`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct AgreementCharged {
    pub order_id: OrderId,
    pub amount: Money,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct AgreementCancelRequested {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// No further charges are possible.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct AgreementCancelled {}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct AgreementCancelDeclined {
    pub code: String,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct AgreementCancelOutcomeUnknown {
    pub reason: String,
}

super::event_enum! {
    /// Every event of a `recurring_agreement` stream.
    AgreementEvent {
        // Behind a pointer: the biggest, rarest event (one per agreement).
        AgreementCreated(std::sync::Arc<AgreementCreated>) = "agreement_created",
        AgreementCharged = "agreement_charged",
        AgreementCancelRequested = "agreement_cancel_requested",
        AgreementCancelled = "agreement_cancelled",
        AgreementCancelDeclined = "agreement_cancel_declined",
        AgreementCancelOutcomeUnknown = "agreement_cancel_outcome_unknown",
    }
}

impl AgreementEvent {
    pub const SCHEMA_VERSION: u32 = SCHEMA_VERSION;
}
