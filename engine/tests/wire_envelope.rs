//! The message body published for an event (relay and in-process bus) is
//! exactly `payorch_schemas::events::EventEnvelope`: a subscriber in another
//! service decodes it with payorch-schemas alone.

use payorch_engine::bus::envelope_json;
use payorch_engine::codec::{encode, envelope};
use payorch_engine::store::{EventMetadata, Position, RecordedEvent, StreamId, Version};
use payorch_schemas::events::order::Captured;
use payorch_schemas::events::{CaptureId, EventEnvelope, OrderEvent};
use payorch_schemas::{Currency, Money};
use time::OffsetDateTime;
use uuid::Uuid;

#[test]
fn the_published_body_is_the_schemas_envelope() {
    let event: OrderEvent = Captured {
        capture_id: CaptureId(Uuid::from_u128(7)),
        amount: Money::new(400, Currency::EUR),
        remainder_released: false,
    }
    .into();
    let metadata = EventMetadata {
        correlation_id: Some(Uuid::from_u128(9)),
        causation_id: None,
        merchant_id: Some("18356675194960".into()),
        actor: Some("merchant".into()),
    };
    let at = OffsetDateTime::from_unix_timestamp(1_764_000_000).expect("valid time");
    let new = encode(&event, Uuid::from_u128(42), metadata.clone(), at).expect("encodes");
    let recorded = RecordedEvent {
        global_position: Position(17),
        stream_id: StreamId::new("order-0193"),
        stream_type: "order".into(),
        version: Version(5),
        event_id: new.event_id,
        event_type: new.event_type,
        schema_version: new.schema_version,
        payload: new.payload,
        metadata: new.metadata,
        recorded_at: new.recorded_at,
    };

    let body = envelope_json(&recorded).expect("publishes");
    let received: EventEnvelope<OrderEvent> =
        serde_json::from_slice(&body).expect("a subscriber decodes the wire body");

    assert_eq!(
        received,
        envelope::<OrderEvent>(&recorded).expect("typed envelope")
    );
    assert_eq!(received.payload, event);
    assert_eq!(received.global_position, 17);
    assert_eq!(received.version, 5);
    assert_eq!(received.merchant_id(), Some("18356675194960"));
    assert_eq!(received.correlation_id(), Some(Uuid::from_u128(9)));
    assert_eq!(received.metadata, metadata);
}
