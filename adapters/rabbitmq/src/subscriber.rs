//! The RabbitMQ subscriber: the engine's [`EventBus`] over a durable queue.
//!
//! `subscribe` declares the topology of [`crate::topology`] (queue named
//! after the subscription, bound with its patterns; `<queue>.retry`;
//! `<queue>.dlq`), sets `basic.qos` to the prefetch and consumes with manual
//! acks. Deliveries are handled one at a time, in queue order:
//!
//! * handler `Ok` -> ack;
//! * [`HandlerError::Transient`] (or a panic) with retries left -> a copy
//!   carrying `payorch-retries = n + 1` and the original routing key is
//!   published (with confirm) to `<queue>.retry` with a per-message TTL of
//!   `retry_delay`; it comes back to `<queue>` when it expires. The original
//!   is acked once the copy is confirmed. Retried messages lose their place
//!   in order.
//! * retries exhausted, [`HandlerError::Rejected`], an undecodable body or a
//!   missing `message_id` -> `basic.reject(requeue=false)`: the queue's
//!   dead-letter arguments route it to `<queue>.dlq` (with RabbitMQ's
//!   `x-death` header).
//!
//! With [`SubscriptionOptions::ordered`] set, the subscription is
//! partitioned by stream instead, and retries happen in place: see
//! [`crate::partitioned`].
//!
//! A lost connection is re-established with backoff; unacked deliveries are
//! redelivered by the broker (at-least-once: dedupe by `message_id`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_lite::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use payorch_engine::bus::{
    BusError, DeliveryContext, EventBus, HandlerError, RawEventHandler, Subscription,
    SubscriptionOptions,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::partitioned::{Partitioned, Shared};
use crate::topology::{self, EXCHANGE, H_RETRIES, H_ROUTING_KEY};
use crate::{Backoff, RabbitError};

/// Subscriber settings shared by the subscriptions of one [`RabbitBus`].
#[derive(Clone, Debug)]
pub struct RabbitBusConfig {
    pub amqp_url: String,
    /// Exchange the queues bind to (default `payorch.events`).
    pub exchange: String,
    pub backoff: Backoff,
    /// Ordered subscriptions: how often an instance recounts the instances
    /// and claims or releases partitions (default 2 s). A dead instance's
    /// partitions wait at most this long for a new owner.
    pub rebalance_interval: Duration,
}

impl RabbitBusConfig {
    pub fn new(amqp_url: impl Into<String>) -> Self {
        RabbitBusConfig {
            amqp_url: amqp_url.into(),
            exchange: EXCHANGE.to_owned(),
            backoff: Backoff::default(),
            rebalance_interval: Duration::from_secs(2),
        }
    }

    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }
}

/// An [`EventBus`] whose subscriptions are RabbitMQ queues.
#[derive(Clone, Debug)]
pub struct RabbitBus {
    config: RabbitBusConfig,
}

impl RabbitBus {
    pub fn new(config: RabbitBusConfig) -> Self {
        RabbitBus { config }
    }
}

#[async_trait]
impl EventBus for RabbitBus {
    /// Declares the topology and starts consuming before returning, so
    /// events published after this call reach the queue (an ordered
    /// subscription claims its partitions right after).
    async fn subscribe_raw(
        &self,
        options: SubscriptionOptions,
        handler: Arc<dyn RawEventHandler>,
    ) -> Result<Subscription, BusError> {
        options.validate()?;
        if let Some(ordered) = options.ordered {
            let worker = Partitioned {
                config: self.config.clone(),
                partitions: ordered.partitions,
                shared: Arc::new(Shared { options, handler }),
                instance: Uuid::now_v7(),
            };
            let session = worker.open().await.map_err(BusError::from)?;
            let (stop_tx, stop_rx) = watch::channel(false);
            return Ok(Subscription::new(
                stop_tx,
                tokio::spawn(worker.run(session, stop_rx)),
            ));
        }
        let worker = Worker {
            config: self.config.clone(),
            retry_queue: topology::short(topology::retry_queue(&options.name))
                .map_err(BusError::from)?,
            options,
            handler,
        };
        let session = worker.open().await.map_err(BusError::from)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        Ok(Subscription::new(
            stop_tx,
            tokio::spawn(worker.run(session, stop_rx)),
        ))
    }
}

struct Session {
    conn: Connection,
    publish: Channel,
    consumer: Consumer,
}

impl Session {
    async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.conn
                .close(200, ShortString::from("subscription stopped")),
        )
        .await;
    }
}

struct Worker {
    config: RabbitBusConfig,
    options: SubscriptionOptions,
    retry_queue: ShortString,
    handler: Arc<dyn RawEventHandler>,
}

impl Worker {
    async fn open(&self) -> Result<Session, RabbitError> {
        let conn = Connection::connect(
            &self.config.amqp_url,
            ConnectionProperties::default()
                .with_connection_name(format!("payorch-subscriber:{}", self.options.name).into()),
        )
        .await?;
        let consume = conn.create_channel().await?;
        topology::declare_subscription(
            &consume,
            &self.config.exchange,
            &self.options.name,
            &self.options.patterns,
        )
        .await?;
        consume
            .basic_qos(self.options.prefetch.max(1), BasicQosOptions::default())
            .await?;
        let publish = conn.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let consumer = consume
            .basic_consume(
                topology::short(self.options.name.clone())?,
                ShortString::from(format!("payorch-{}", Uuid::now_v7())),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Session {
            conn,
            publish,
            consumer,
        })
    }

    async fn run(self, first: Session, mut stop: watch::Receiver<bool>) {
        let mut session = Some(first);
        let mut backoff = self.config.backoff.min;
        loop {
            if *stop.borrow() {
                return;
            }
            let mut s = match session.take() {
                Some(s) => s,
                None => match self.open().await {
                    Ok(s) => {
                        tracing::info!(subscription = %self.options.name, "subscriber reconnected");
                        backoff = self.config.backoff.min;
                        s
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %self.options.name, error = %e, retry_in = ?backoff, "subscriber connect failed");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                        backoff = self.config.backoff.next(backoff);
                        continue;
                    }
                },
            };
            let result = self.consume(&mut s, &mut stop).await;
            s.close().await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(subscription = %self.options.name, error = %e, retry_in = ?backoff, "subscriber session failed; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    backoff = self.config.backoff.next(backoff);
                }
            }
        }
    }

    /// Handles deliveries until stopped (`Ok`) or the session fails.
    async fn consume(
        &self,
        session: &mut Session,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), RabbitError> {
        loop {
            let next = tokio::select! {
                d = session.consumer.next() => d,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            match next {
                Some(Ok(delivery)) => self.settle(&session.publish, delivery).await?,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(RabbitError::ConsumerEnded),
            }
        }
    }

    async fn settle(&self, publish: &Channel, delivery: Delivery) -> Result<(), RabbitError> {
        let props = &delivery.properties;
        let retries = topology::int_header(props, H_RETRIES)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        let routing_key = topology::str_header(props, H_ROUTING_KEY)
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        let message_id = props
            .message_id()
            .as_ref()
            .and_then(|m| Uuid::parse_str(m.as_str()).ok());
        let Some(message_id) = message_id else {
            tracing::warn!(subscription = %self.options.name, %routing_key, "message without a uuid message_id; dead-lettering");
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await?;
            return Ok(());
        };
        let ctx = DeliveryContext {
            message_id,
            routing_key: routing_key.clone(),
            attempt: retries,
            redelivered: delivery.redelivered || retries > 0,
        };
        let result = AssertUnwindSafe(self.handler.handle_raw(&delivery.data, &ctx))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(HandlerError::Transient("handler panicked".into())));
        match result {
            Ok(()) => {
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
            Err(HandlerError::Transient(msg)) if retries < self.options.max_retries => {
                tracing::debug!(subscription = %self.options.name, %message_id, retries, error = %msg, "handler failed; scheduling a retry");
                let copy = retry_properties(props, retries + 1, &routing_key)
                    .with_expiration(self.options.retry_delay.as_millis().to_string().into());
                let confirmation = publish
                    .basic_publish(
                        ShortString::from(""),
                        self.retry_queue.clone(),
                        BasicPublishOptions::default(),
                        &delivery.data,
                        copy,
                    )
                    .await?
                    .await?;
                if confirmation.is_ack() {
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                } else {
                    // The retry copy was refused: let the broker redeliver.
                    delivery
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await?;
                }
            }
            Err(error) => {
                tracing::warn!(subscription = %self.options.name, %message_id, %routing_key, retries, %error, "dead-lettering message");
                delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
            }
        }
        Ok(())
    }
}

/// The properties of a retry copy: the original ones with the retry count
/// and routing key set, and RabbitMQ's death history dropped (it would make
/// the broker see a dead-letter cycle).
fn retry_properties(
    props: &lapin::BasicProperties,
    retries: u32,
    routing_key: &str,
) -> lapin::BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    let kept: FieldTable = headers
        .inner()
        .iter()
        .filter(|(k, _)| {
            !k.as_str().starts_with("x-death")
                && !k.as_str().starts_with("x-first-death")
                && !k.as_str().starts_with("x-last-death")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    headers = kept;
    headers.insert(H_RETRIES.into(), topology::int_value(u64::from(retries)));
    headers.insert(H_ROUTING_KEY.into(), topology::long_value(routing_key));
    props.clone().with_headers(headers)
}

#[cfg(test)]
mod tests {
    use lapin::types::AMQPValue;

    use super::*;

    #[test]
    fn retry_copies_count_and_drop_death_history() {
        let mut headers = FieldTable::default();
        headers.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        headers.insert(
            "x-first-death-queue".into(),
            topology::long_value("q.retry"),
        );
        headers.insert("payorch-stream-id".into(), topology::long_value("order-1"));
        let props = lapin::BasicProperties::default().with_headers(headers);
        let copy = retry_properties(&props, 3, "order.captured.m1");
        let h = copy.headers().as_ref().expect("headers").inner();
        assert!(!h.contains_key("x-death"));
        assert!(!h.contains_key("x-first-death-queue"));
        assert_eq!(topology::int_header(&copy, H_RETRIES), Some(3));
        assert_eq!(
            topology::str_header(&copy, H_ROUTING_KEY).as_deref(),
            Some("order.captured.m1")
        );
        assert_eq!(
            topology::str_header(&copy, "payorch-stream-id").as_deref(),
            Some("order-1")
        );
    }
}
