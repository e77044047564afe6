//! Names, headers and idempotent declarations shared by the relay and the
//! subscriber. Both sides declare what they use, so either may start first.
//!
//! * exchange `payorch.events`: topic, durable;
//! * per subscription `<queue>`: durable, bound with the subscription's
//!   patterns, dead-lettering (`x-dead-letter-exchange` = default exchange,
//!   `x-dead-letter-routing-key` = `<queue>.dlq`) into `<queue>.dlq`;
//! * `<queue>.retry`: durable, no consumer; a message waits there for its
//!   per-message `expiration` (the retry delay) and is dead-lettered back
//!   into `<queue>`;
//! * `<queue>.dlq`: durable, for operators (inspect, shovel back).
//!
//! With ordered delivery ([`declare_partitioned`]) the subscription has no
//! `<queue>` nor `<queue>.retry`; instead:
//!
//! * `<queue>.partitions`: a durable `x-consistent-hash` exchange (plugin
//!   `rabbitmq_consistent_hash_exchange`) hashing the `payorch-stream-id`
//!   header (argument `hash-header`), bound to `payorch.events` with the
//!   subscription's patterns (exchange-to-exchange bindings);
//! * `<queue>.p<i>` for `i` in `0..partitions`: durable, dead-lettering
//!   into `<queue>.dlq`, bound to `<queue>.partitions` with weight `"1"`,
//!   consumed by one **exclusive** consumer at a time;
//! * `<queue>.members`: durable, never bound, never holds a message; every
//!   running instance keeps a consumer on it, so its consumer count is the
//!   number of instances (the fair share of partitions each one claims).

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use payorch_engine::bus::{envelope_json, routing_key};
use payorch_engine::store::RecordedEvent;

use crate::RabbitError;

/// The exchange events are published to.
pub const EXCHANGE: &str = "payorch.events";

/// Header: the event's stream id (long string).
pub const H_STREAM_ID: &str = "payorch-stream-id";
/// Header: the event's stream type (long string).
pub const H_STREAM_TYPE: &str = "payorch-stream-type";
/// Header: the event type (long string).
pub const H_EVENT_TYPE: &str = "payorch-event-type";
/// Header: the event's version in its stream (signed 64-bit).
pub const H_VERSION: &str = "payorch-version";
/// Header: the event's global position in the store (signed 64-bit).
pub const H_GLOBAL_POSITION: &str = "payorch-global-position";
/// Header: the payload's schema version (signed 64-bit).
pub const H_SCHEMA_VERSION: &str = "payorch-schema-version";
/// Header: correlation id (long string, uuid), when the event has one.
pub const H_CORRELATION_ID: &str = "payorch-correlation-id";
/// Header: merchant id (long string), when the event has one.
pub const H_MERCHANT_ID: &str = "payorch-merchant-id";
/// Header set by subscribers on retried copies: retries so far (signed 64-bit).
pub const H_RETRIES: &str = "payorch-retries";
/// Header set by subscribers on retried copies: the original routing key.
pub const H_ROUTING_KEY: &str = "payorch-routing-key";

/// The dead-letter queue of a subscription queue.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// The retry queue of a subscription queue.
pub fn retry_queue(queue: &str) -> String {
    format!("{queue}.retry")
}

/// The consistent-hash exchange of an ordered subscription.
pub fn partition_exchange(queue: &str) -> String {
    format!("{queue}.partitions")
}

/// Partition `index` of an ordered subscription.
pub fn partition_queue(queue: &str, index: u16) -> String {
    format!("{queue}.p{index}")
}

/// The membership queue of an ordered subscription.
pub fn members_queue(queue: &str) -> String {
    format!("{queue}.members")
}

/// The header the consistent-hash exchange hashes: the stream id, so all
/// events of one stream land in one partition.
pub const PARTITION_HASH_HEADER: &str = H_STREAM_ID;

pub(crate) fn short(s: impl Into<String>) -> Result<ShortString, RabbitError> {
    let s = s.into();
    ShortString::try_new(s.clone())
        .map_err(|_| RabbitError::Config(format!("name longer than 255 bytes: {s:?}")))
}

fn long(s: impl Into<Vec<u8>>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Declares the durable topic exchange.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), RabbitError> {
    channel
        .exchange_declare(
            short(exchange)?,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares a subscription's queue, retry queue and dead-letter queue, and
/// binds the queue to `exchange` with each pattern.
pub async fn declare_subscription(
    channel: &Channel,
    exchange: &str,
    queue: &str,
    patterns: &[String],
) -> Result<(), RabbitError> {
    declare_exchange(channel, exchange).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dlq = dead_letter_queue(queue);
    let retry = retry_queue(queue);
    channel
        .queue_declare(short(dlq.clone())?, durable, FieldTable::default())
        .await?;

    let mut retry_args = FieldTable::default();
    retry_args.insert("x-dead-letter-exchange".into(), long(""));
    retry_args.insert("x-dead-letter-routing-key".into(), long(queue));
    channel
        .queue_declare(short(retry)?, durable, retry_args)
        .await?;

    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), long(""));
    args.insert("x-dead-letter-routing-key".into(), long(dlq));
    channel.queue_declare(short(queue)?, durable, args).await?;
    for pattern in patterns {
        channel
            .queue_bind(
                short(queue)?,
                short(exchange)?,
                short(pattern.clone())?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Declares an ordered subscription (see the module docs): the
/// consistent-hash exchange bound to `exchange` with each pattern,
/// `partitions` partition queues, the dead-letter queue and the membership
/// queue.
pub async fn declare_partitioned(
    channel: &Channel,
    exchange: &str,
    queue: &str,
    patterns: &[String],
    partitions: u16,
) -> Result<(), RabbitError> {
    declare_exchange(channel, exchange).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dlq = dead_letter_queue(queue);
    channel
        .queue_declare(short(dlq.clone())?, durable, FieldTable::default())
        .await?;
    channel
        .queue_declare(short(members_queue(queue))?, durable, FieldTable::default())
        .await?;

    let hash = partition_exchange(queue);
    let mut hash_args = FieldTable::default();
    hash_args.insert("hash-header".into(), long(PARTITION_HASH_HEADER));
    channel
        .exchange_declare(
            short(hash.clone())?,
            ExchangeKind::Custom("x-consistent-hash".into()),
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            hash_args,
        )
        .await?;
    for pattern in patterns {
        channel
            .exchange_bind(
                short(hash.clone())?,
                short(exchange)?,
                short(pattern.clone())?,
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    for index in 0..partitions {
        let name = short(partition_queue(queue, index))?;
        channel
            .queue_declare(name.clone(), durable, partition_queue_args(queue))
            .await?;
        channel
            .queue_bind(
                name,
                short(hash.clone())?,
                ShortString::from("1"),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// The arguments of a partition queue: dead letters into `<queue>.dlq`.
/// (Not `x-single-active-consumer`: such queues refuse the exclusive
/// consumers the claim protocol relies on.)
pub fn partition_queue_args(queue: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), long(""));
    args.insert(
        "x-dead-letter-routing-key".into(),
        long(dead_letter_queue(queue)),
    );
    args
}

/// A routing key within AMQP's 255-byte limit (cut at a char boundary; only
/// absurdly long merchant ids or event types get there).
pub(crate) fn routing_key_short(event: &RecordedEvent) -> ShortString {
    let mut key = routing_key(event);
    if key.len() > 255 {
        let mut end = 255;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    ShortString::try_new(key).unwrap_or_else(|_| ShortString::from("unknown.unknown.unknown"))
}

fn int(n: u64) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The properties and body of the message published for an event.
pub fn event_message(event: &RecordedEvent) -> Result<(BasicProperties, Vec<u8>), RabbitError> {
    let body = envelope_json(event)?;
    let mut headers = FieldTable::default();
    headers.insert(H_STREAM_ID.into(), long(event.stream_id.as_str()));
    headers.insert(H_STREAM_TYPE.into(), long(event.stream_type.as_str()));
    headers.insert(H_EVENT_TYPE.into(), long(event.event_type.as_str()));
    headers.insert(H_VERSION.into(), int(event.version.0));
    headers.insert(H_GLOBAL_POSITION.into(), int(event.global_position.0));
    headers.insert(
        H_SCHEMA_VERSION.into(),
        int(u64::from(event.schema_version)),
    );
    if let Some(c) = event.metadata.correlation_id {
        headers.insert(H_CORRELATION_ID.into(), long(c.to_string()));
    }
    if let Some(m) = &event.metadata.merchant_id {
        headers.insert(H_MERCHANT_ID.into(), long(m.as_str()));
    }
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(event.event_id.to_string().into())
        .with_app_id("payorch".into())
        .with_timestamp(u64::try_from(event.recorded_at.unix_timestamp()).unwrap_or(0))
        .with_headers(headers);
    if let Some(c) = event.metadata.correlation_id {
        props = props.with_correlation_id(c.to_string().into());
    }
    Ok((props, body))
}

/// Reads an integer header (any AMQP integer type).
pub(crate) fn int_header(props: &BasicProperties, name: &str) -> Option<i64> {
    let value = props.headers().as_ref()?.inner().get(name)?;
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

/// Reads a string header.
pub(crate) fn str_header(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

pub(crate) fn long_value(s: &str) -> AMQPValue {
    long(s)
}

pub(crate) fn int_value(n: u64) -> AMQPValue {
    int(n)
}

#[cfg(test)]
mod tests {
    use payorch_engine::store::{EventMetadata, Position, StreamId, Version};
    use serde_json::value::RawValue;
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;

    fn event(merchant: &str) -> RecordedEvent {
        RecordedEvent {
            global_position: Position(42),
            stream_id: StreamId::new("order-1"),
            stream_type: "order".into(),
            version: Version(3),
            event_id: Uuid::now_v7(),
            event_type: "captured".into(),
            schema_version: 2,
            payload: RawValue::from_string("{}".into()).expect("json"),
            metadata: EventMetadata {
                merchant_id: Some(merchant.into()),
                ..Default::default()
            },
            recorded_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn long_routing_keys_are_cut_to_the_amqp_limit() {
        let key = routing_key_short(&event(&"é".repeat(200)));
        assert!(key.as_str().len() <= 255);
        assert!(key.as_str().starts_with("order.captured.é"));
        assert_eq!(routing_key_short(&event("m")).as_str(), "order.captured.m");
    }

    #[test]
    fn message_properties_and_headers() {
        let e = event("m1");
        let (props, body) = event_message(&e).expect("encodes");
        assert_eq!(*props.delivery_mode(), Some(2));
        assert_eq!(
            props.message_id().as_ref().map(|m| m.as_str().to_owned()),
            Some(e.event_id.to_string())
        );
        assert_eq!(int_header(&props, H_VERSION), Some(3));
        assert_eq!(int_header(&props, H_GLOBAL_POSITION), Some(42));
        assert_eq!(int_header(&props, H_SCHEMA_VERSION), Some(2));
        assert_eq!(str_header(&props, H_STREAM_ID).as_deref(), Some("order-1"));
        assert_eq!(str_header(&props, H_MERCHANT_ID).as_deref(), Some("m1"));
        assert_eq!(str_header(&props, H_CORRELATION_ID), None);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["global_position"], 42);
    }
}
