//! The public payment event contract: what payorch appends and publishes.
//!
//! A subscriber needs this module only. Every event is a struct; the three
//! aggregate enums ([`OrderEvent`], [`AgreementEvent`], [`CheckoutEvent`])
//! serialize internally tagged with an `event_type` field in snake_case,
//! which is also the middle part of the routing key
//! `<stream_type>.<event_type>.<merchant_id>` (ARCHITECTURE.md §4).
//!
//! * Money is [`Money`](crate::Money) (`{"minor":1299,"currency":"EUR"}`).
//! * No card number or CVV ever appears: cards are described by
//!   [`CardSummary`] (brand, BIN, last 4, expiry) and PayKKa's token.
//! * `schema_version` travels beside the payload (envelope / store column).
//!   The current versions are the `SCHEMA_VERSION` constants; the engine's
//!   upcaster turns older payloads into the current shape on load.
//! * Decoding by type: `OrderEvent::from_json(event_type, json)` parses the
//!   variant struct straight from the text (no intermediate JSON tree).
//!
//! # JSON Schema
//!
//! For consumers in other languages, `schemas/json/` in the repository holds
//! one JSON Schema (draft 2020-12) per stream type, generated from these
//! types: `order_event.schema.json`, `agreement_event.schema.json` and
//! `checkout_event.schema.json`. Each describes the event payload (the
//! `payload` of a published message, tagged by `event_type`) at the current
//! `SCHEMA_VERSION`. With the cargo feature `json-schema` (off by default)
//! every event type implements `schemars::JsonSchema`. The files are checked
//! against the types by `schemas/tests/json_schema.rs` (run by
//! `cargo test --all-features`) and regenerated with
//! `UPDATE_JSON_SCHEMAS=1 cargo test -p payorch-schemas --features json-schema --test json_schema`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub mod agreement;
pub mod annotations;
pub mod checkout;
pub mod ids;
pub mod order;

pub use agreement::AgreementEvent;
pub use annotations::{AnnotationError, Annotations};
pub use checkout::CheckoutEvent;
pub use ids::*;
pub use order::OrderEvent;

/// Stream type of orders (one PayKKa `trans_id` each).
pub const ORDER_STREAM_TYPE: &str = "order";
/// Stream type of recurring agreements.
pub const AGREEMENT_STREAM_TYPE: &str = "recurring_agreement";
/// Stream type of checkout sessions.
pub const CHECKOUT_STREAM_TYPE: &str = "checkout_session";

/// JSON Schema of an `OffsetDateTime` serialized with
/// `time::serde::rfc3339`: an RFC 3339 date-time string.
#[cfg(feature = "json-schema")]
pub(crate) fn rfc3339_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 date-time, e.g. `2026-11-25T17:30:00.123Z`."
    })
}

/// Routing key of an event on the `payorch.events` exchange.
pub fn routing_key(stream_type: &str, event_type: &str, merchant_id: &str) -> String {
    format!("{stream_type}.{event_type}.{merchant_id}")
}

/// A stored event could not be turned into a typed event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    /// The `event_type` is not one this version of payorch-schemas knows:
    /// the producer is newer than the consumer. Upgrade the consumer.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The payload does not match its type's shape (after upcasting):
    /// corrupt data or a producer bug. Do not retry.
    #[error("malformed {event_type} payload: {message}")]
    Malformed {
        event_type: &'static str,
        message: String,
    },
    /// The schema version is newer than this consumer understands.
    #[error("{event_type} has schema version {found}, newest known is {supported}")]
    UnsupportedVersion {
        event_type: String,
        found: u32,
        supported: u32,
    },
}

/// Who and what caused an event; stored beside the payload and carried in
/// the published envelope. The engine's store uses this same type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct EventMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// What a subscriber receives: the typed payload plus where and when it was
/// recorded. This is exactly the JSON body of a message on the
/// `payorch.events` exchange (and of the in-process bus), so a subscriber in
/// another service needs this crate alone: deserialize the body as
/// `EventEnvelope<OrderEvent>` (or `AgreementEvent`, `CheckoutEvent`, or
/// `serde_json::Value` for any stream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct EventEnvelope<E> {
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_type: String,
    /// 1-based position of the event in its stream.
    pub version: u64,
    /// Global position in the store (1-based).
    pub global_position: u64,
    pub event_type: String,
    pub schema_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(
        feature = "json-schema",
        schemars(schema_with = "crate::events::rfc3339_schema")
    )]
    pub recorded_at: OffsetDateTime,
    #[serde(default)]
    pub metadata: EventMetadata,
    pub payload: E,
}

impl<E> EventEnvelope<E> {
    /// The merchant the event belongs to, when recorded.
    pub fn merchant_id(&self) -> Option<&str> {
        self.metadata.merchant_id.as_deref()
    }

    /// The correlation id of the command that produced the event.
    pub fn correlation_id(&self) -> Option<Uuid> {
        self.metadata.correlation_id
    }
}

/// Card details that may be stored: never the PAN or the CVV.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct CardSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// First six digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp_month: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp_year: Option<u16>,
}

/// `PURCHASE` (one-off) or `RECURRING` (first CIT or later MIT charge).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentKind {
    Purchase,
    Recurring,
}

/// `FINAL_AUTH` (default) or `PRE_AUTH`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorisationKind {
    #[default]
    FinalAuth,
    PreAuth,
}

/// `AUTOMATIC` (PayKKa captures) or `MANUAL` (the merchant captures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    #[default]
    Automatic,
    Manual,
}

/// What a stored token may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TokenPurpose {
    /// Later shopper-initiated one-click payments.
    CardOnFile,
    /// Recurring merchant-initiated charges.
    Subscription,
}

/// Generates an event enum whose variants wrap one struct each, with
/// `event_type()`, the list of types and a fast typed decoder. A variant may
/// name another payload type (`Variant(Arc<Variant>) = "tag"`): the struct
/// behind a pointer, so a big, rare event does not make every event of the
/// enum as big. Such a payload serializes exactly like the struct.
macro_rules! event_enum {
    ($(#[$meta:meta])* $enum:ident { $($variant:ident $(($payload:ty))? = $tag:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
        #[serde(tag = "event_type")]
        pub enum $enum {
            $( #[serde(rename = $tag)] $variant($crate::events::event_enum!(@payload $variant $($payload)?)), )*
        }

        impl $enum {
            /// Every `event_type` of this enum.
            pub const EVENT_TYPES: &'static [&'static str] = &[$($tag),*];

            /// The snake_case `event_type` (routing key part).
            pub fn event_type(&self) -> &'static str {
                match self { $( Self::$variant(_) => $tag, )* }
            }

            /// Parses a current-version payload of type `event_type`
            /// directly from its JSON text.
            pub fn from_json(event_type: &str, json: &str) -> Result<Self, $crate::events::EventDecodeError> {
                match event_type {
                    $( $tag => serde_json::from_str::<$variant>(json)
                        .map(Self::from)
                        .map_err(|e| $crate::events::EventDecodeError::Malformed {
                            event_type: $tag,
                            message: e.to_string(),
                        }), )*
                    other => Err($crate::events::EventDecodeError::UnknownType(other.to_owned())),
                }
            }
        }

        $( impl From<$variant> for $enum {
            #[allow(clippy::useless_conversion)]
            fn from(e: $variant) -> Self { Self::$variant(e.into()) }
        } )*
    };
    (@payload $variant:ident) => { $variant };
    (@payload $variant:ident $payload:ty) => { $payload };
}
pub(crate) use event_enum;
