//! Events of the `checkout_session` stream: a PayKKa hosted / drop-in
//! checkout. The session is an intention; the money lives in the order it
//! completes with (same uuid as the session, same `trans_id`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{CaptureMode, CheckoutId, MerchantId, OrderId, PaymentKind, SessionId, TransId};
use crate::Money;

/// Current schema version of every checkout event type.
pub const SCHEMA_VERSION: u32 = 1;

/// The session create call is about to be sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CheckoutSessionRequested {
    pub checkout_id: CheckoutId,
    pub merchant_id: MerchantId,
    pub trans_id: TransId,
    pub amount: Money,
    pub payment_type: PaymentKind,
    pub capture_method: CaptureMode,
    /// `HOSTED`, `DROP_IN` or `COMPONENT`.
    pub session_mode: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(
        feature = "json-schema",
        schemars(schema_with = "crate::events::rfc3339_schema")
    )]
    pub expires_at: OffsetDateTime,
    /// The merchant's own reference (absent in older events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_reference: Option<String>,
    /// The merchant's key/value labels (at most 20 keys of 1-40
    /// characters, values up to 500; empty in older events).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CheckoutSessionCreated {
    pub session_id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CheckoutSessionDeclined {
    pub code: String,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CheckoutSessionOutcomeUnknown {
    pub reason: String,
}

/// The shopper paid: the order carries the money from here on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CheckoutSessionCompleted {
    pub order_id: OrderId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CheckoutSessionExpired {}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CheckoutSessionCancelled {}

super::event_enum! {
    /// Every event of a `checkout_session` stream.
    CheckoutEvent {
        CheckoutSessionRequested = "checkout_session_requested",
        CheckoutSessionCreated = "checkout_session_created",
        CheckoutSessionDeclined = "checkout_session_declined",
        CheckoutSessionOutcomeUnknown = "checkout_session_outcome_unknown",
        CheckoutSessionCompleted = "checkout_session_completed",
        CheckoutSessionExpired = "checkout_session_expired",
        CheckoutSessionCancelled = "checkout_session_cancelled",
    }
}

impl CheckoutEvent {
    pub const SCHEMA_VERSION: u32 = SCHEMA_VERSION;
}
