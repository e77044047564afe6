//! Typed events <-> stored events, with the upcaster chain on the way in.
//!
//! Writing: an event is serialized once to JSON text and stored as a
//! `RawValue` with its `event_type` and the current `schema_version`.
//! Reading: a current-version payload is parsed straight from its text
//! into the variant struct (no `serde_json::Value`); an older one first
//! goes through the [`Upcaster`] chain (the only place a JSON tree is
//! built), then is parsed the same way.

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use payorch_schemas::events::{
    AGREEMENT_STREAM_TYPE, AgreementEvent, CHECKOUT_STREAM_TYPE, CheckoutEvent, EventDecodeError,
    EventEnvelope, ORDER_STREAM_TYPE, OrderEvent,
};

use crate::store::{EventMetadata, NewEvent, RecordedEvent};

/// Why a stored event could not be read or an event not written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// See [`EventDecodeError`]; do not retry.
    #[error(transparent)]
    Decode(#[from] EventDecodeError),
    /// An upcaster step could not transform an old payload (corrupt or
    /// unexpected old shape). Do not retry; fix the data or the upcaster.
    #[error("cannot upcast {event_type} v{from}: {message}")]
    Upcast {
        event_type: String,
        from: u32,
        message: String,
    },
    /// Serializing an event failed (a bug).
    #[error("cannot serialize {event_type}: {message}")]
    Encode {
        event_type: &'static str,
        message: String,
    },
}

/// One step of an upcaster chain: turns a payload of `version` into
/// `version + 1` (cqrs-style two-method upcaster).
pub trait Upcaster: Send + Sync {
    /// Whether this step handles `event_type` at `version`.
    fn can_upcast(&self, event_type: &str, version: u32) -> bool;
    /// The payload one version newer.
    fn upcast(&self, event_type: &str, payload: Value) -> Result<Value, String>;
}

/// A typed event family stored in one kind of stream.
pub trait DomainEvent: Sized + Serialize + Clone + Send + Sync + 'static {
    /// `order`, `recurring_agreement`, `checkout_session`.
    const STREAM_TYPE: &'static str;
    /// The schema version written today.
    const SCHEMA_VERSION: u32;
    fn event_type(&self) -> &'static str;
    /// Parses a current-version payload (the typed decode; implementations
    /// may try a faster strict reader first, with the same result).
    fn from_current_json(event_type: &str, json: &str) -> Result<Self, EventDecodeError>;
    /// The steps that bring older versions up to [`Self::SCHEMA_VERSION`].
    fn upcasters() -> &'static [&'static dyn Upcaster] {
        &[]
    }
}

impl DomainEvent for OrderEvent {
    const STREAM_TYPE: &'static str = ORDER_STREAM_TYPE;
    const SCHEMA_VERSION: u32 = OrderEvent::SCHEMA_VERSION;
    fn event_type(&self) -> &'static str {
        OrderEvent::event_type(self)
    }
    fn from_current_json(event_type: &str, json: &str) -> Result<Self, EventDecodeError> {
        match fast::order_event(event_type, json) {
            Some(e) => Ok(e),
            None => OrderEvent::from_json(event_type, json),
        }
    }
    fn upcasters() -> &'static [&'static dyn Upcaster] {
        &[&OrderV1ToV2]
    }
}

impl DomainEvent for AgreementEvent {
    const STREAM_TYPE: &'static str = AGREEMENT_STREAM_TYPE;
    const SCHEMA_VERSION: u32 = AgreementEvent::SCHEMA_VERSION;
    fn event_type(&self) -> &'static str {
        AgreementEvent::event_type(self)
    }
    fn from_current_json(event_type: &str, json: &str) -> Result<Self, EventDecodeError> {
        AgreementEvent::from_json(event_type, json)
    }
}

impl DomainEvent for CheckoutEvent {
    const STREAM_TYPE: &'static str = CHECKOUT_STREAM_TYPE;
    const SCHEMA_VERSION: u32 = CheckoutEvent::SCHEMA_VERSION;
    fn event_type(&self) -> &'static str {
        CheckoutEvent::event_type(self)
    }
    fn from_current_json(event_type: &str, json: &str) -> Result<Self, EventDecodeError> {
        CheckoutEvent::from_json(event_type, json)
    }
}

/// Order events v1 -> v2:
/// * `payment_placed`: `amount_minor` + `currency` became `amount: Money`;
/// * `authorised`: PayKKa's order number `order_id` became `gateway_order_id`;
/// * every other type is unchanged (only the version number moves).
pub struct OrderV1ToV2;

impl Upcaster for OrderV1ToV2 {
    fn can_upcast(&self, _event_type: &str, version: u32) -> bool {
        version == 1
    }

    fn upcast(&self, event_type: &str, mut payload: Value) -> Result<Value, String> {
        let obj = payload
            .as_object_mut()
            .ok_or_else(|| "payload is not a JSON object".to_owned())?;
        match event_type {
            "payment_placed" => {
                let minor = obj
                    .remove("amount_minor")
                    .ok_or_else(|| "v1 payment_placed lacks amount_minor".to_owned())?;
                let currency = obj
                    .remove("currency")
                    .ok_or_else(|| "v1 payment_placed lacks currency".to_owned())?;
                obj.insert(
                    "amount".into(),
                    serde_json::json!({ "minor": minor, "currency": currency }),
                );
            }
            "authorised" => {
                let id = obj
                    .remove("order_id")
                    .ok_or_else(|| "v1 authorised lacks order_id".to_owned())?;
                obj.insert("gateway_order_id".into(), id);
            }
            _ => {}
        }
        Ok(payload)
    }
}

/// Parses a stored payload of any known version into the current type.
pub fn decode<E: DomainEvent>(
    event_type: &str,
    schema_version: u32,
    payload: &str,
) -> Result<E, CodecError> {
    if schema_version == E::SCHEMA_VERSION {
        return Ok(E::from_current_json(event_type, payload)?);
    }
    if schema_version > E::SCHEMA_VERSION || schema_version == 0 {
        return Err(EventDecodeError::UnsupportedVersion {
            event_type: event_type.to_owned(),
            found: schema_version,
            supported: E::SCHEMA_VERSION,
        }
        .into());
    }
    let upcast_err = |from: u32, message: String| CodecError::Upcast {
        event_type: event_type.to_owned(),
        from,
        message,
    };
    let mut value: Value =
        serde_json::from_str(payload).map_err(|e| upcast_err(schema_version, e.to_string()))?;
    let mut version = schema_version;
    while version < E::SCHEMA_VERSION {
        let step = E::upcasters()
            .iter()
            .find(|u| u.can_upcast(event_type, version))
            .ok_or_else(|| upcast_err(version, "no upcaster for this version".into()))?;
        value = step
            .upcast(event_type, value)
            .map_err(|m| upcast_err(version, m))?;
        version += 1;
    }
    let text = value.to_string();
    Ok(E::from_current_json(event_type, &text)?)
}

/// Decodes a stored event.
pub fn decode_recorded<E: DomainEvent>(e: &RecordedEvent) -> Result<E, CodecError> {
    decode(&e.event_type, e.schema_version, e.payload.get())
}

/// The subscriber envelope of a stored event, payload upcast and typed.
pub fn envelope<E: DomainEvent>(e: &RecordedEvent) -> Result<EventEnvelope<E>, CodecError> {
    Ok(EventEnvelope {
        event_id: e.event_id,
        stream_id: e.stream_id.as_str().to_owned(),
        stream_type: e.stream_type.clone(),
        version: e.version.0,
        global_position: e.global_position.0,
        recorded_at: e.recorded_at,
        metadata: e.metadata.clone(),
        event_type: e.event_type.clone(),
        schema_version: E::SCHEMA_VERSION,
        payload: decode_recorded(e)?,
    })
}

/// Serializes an event for `append`.
pub fn encode<E: DomainEvent>(
    event: &E,
    event_id: Uuid,
    metadata: EventMetadata,
    recorded_at: OffsetDateTime,
) -> Result<NewEvent, CodecError> {
    let encode_err = |e: serde_json::Error| CodecError::Encode {
        event_type: event.event_type(),
        message: e.to_string(),
    };
    let text = serde_json::to_string(event).map_err(encode_err)?;
    let payload = RawValue::from_string(text).map_err(encode_err)?;
    Ok(NewEvent {
        event_id,
        event_type: event.event_type().to_owned(),
        schema_version: E::SCHEMA_VERSION,
        payload,
        metadata,
        recorded_at,
    })
}

/// The strict reader of payorch's own compact JSON (see its docs).
mod fast;
