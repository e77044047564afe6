//! Ordered scale-out of a [`RabbitBus`](crate::RabbitBus) subscription
//! ([`OrderedDelivery`](payorch_engine::bus::OrderedDelivery)).
//!
//! The topology ([`topology::declare_partitioned`]) hashes each event's
//! stream id onto one of N partition queues. Every running instance of the
//! subscription:
//!
//! 1. keeps a consumer on `<queue>.members`, so that queue's consumer count
//!    is the number of live instances;
//! 2. every `rebalance_interval`, computes its fair share
//!    `ceil(N / instances)` and
//!    * releases partitions above it (after the delivery in hand is
//!      settled; the channel close returns the prefetched, unacknowledged
//!      messages to the queue in their original order), and
//!    * claims free partitions (consumer count 0) up to it, each with an
//!      **exclusive** consumer on its own channel: the broker refuses a
//!      second consumer, so a partition never has two active consumers even
//!      when two instances race for it. A refused claim is simply skipped.
//!
//! A dead instance's connection drops; the broker returns its unacked
//! deliveries to their queues and the other instances claim the orphaned
//! partitions at their next rebalance.
//!
//! Why not `x-single-active-consumer` queues: on RabbitMQ 3.10 the active
//! consumer is the *first* one registered (consumer priorities are
//! ignored), so the first instance started would do all the work while the
//! others idle; and such queues refuse exclusive consumers, so an instance
//! could not tell whether it is the active one. An exclusive consumer is the
//! broker's own "one consumer per partition" guarantee, and the claim
//! protocol shares the partitions.
//!
//! Within a partition, deliveries are handled one at a time. A transient
//! failure is retried in place (no retry queue: a re-published copy would
//! land behind later events), `retry_delay` apart, `max_retries` times; then
//! the event is rejected into `<queue>.dlq` and its stream is parked: later
//! events of that stream seen by this partition owner are dead-lettered
//! too, in order, behind it. The parked set lives in the owner's memory: a
//! restart or a partition handover forgets it (documented in the README).

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use payorch_engine::bus::{DeliveryContext, HandlerError, RawEventHandler, SubscriptionOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::RabbitError;
use crate::subscriber::RabbitBusConfig;
use crate::topology::{self, H_STREAM_ID};

/// One instance of an ordered subscription.
pub(crate) struct Partitioned {
    pub(crate) config: RabbitBusConfig,
    pub(crate) partitions: u16,
    pub(crate) shared: Arc<Shared>,
    /// Spreads the instances' first claims over different partitions.
    pub(crate) instance: Uuid,
}

/// What every partition task of an instance shares.
pub(crate) struct Shared {
    pub(crate) options: SubscriptionOptions,
    pub(crate) handler: Arc<dyn RawEventHandler>,
}

pub(crate) struct Session {
    conn: Connection,
    control: Channel,
    /// Held for its consumer: it makes this instance count as a member.
    _members: (Channel, Consumer),
}

/// A claimed partition: its task, stopped through `stop`. Dropping it
/// aborts the task (the subscription's own task was aborted).
struct Owned {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), RabbitError>>>,
}

impl Owned {
    async fn release(mut self) -> Result<(), RabbitError> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Err(RabbitError::ConsumerEnded)),
            None => Ok(()),
        }
    }
    fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Partitioned {
    fn name(&self) -> &str {
        &self.shared.options.name
    }

    /// Connects, declares the topology and joins the members.
    pub(crate) async fn open(&self) -> Result<Session, RabbitError> {
        let conn = Connection::connect(
            &self.config.amqp_url,
            ConnectionProperties::default().with_connection_name(
                format!("payorch-subscriber:{}:{}", self.name(), self.instance).into(),
            ),
        )
        .await?;
        let control = conn.create_channel().await?;
        topology::declare_partitioned(
            &control,
            &self.config.exchange,
            self.name(),
            &self.shared.options.patterns,
            self.partitions,
        )
        .await?;
        let members = conn.create_channel().await?;
        let consumer = members
            .basic_consume(
                topology::short(topology::members_queue(self.name()))?,
                ShortString::from(format!("payorch-member-{}", self.instance)),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Session {
            conn,
            control,
            _members: (members, consumer),
        })
    }

    pub(crate) async fn run(self, first: Session, mut stop: watch::Receiver<bool>) {
        let mut session = Some(first);
        let mut backoff = self.config.backoff.min;
        loop {
            if *stop.borrow() {
                return;
            }
            let s = match session.take() {
                Some(s) => s,
                None => match self.open().await {
                    Ok(s) => {
                        tracing::info!(subscription = %self.name(), "ordered subscriber reconnected");
                        backoff = self.config.backoff.min;
                        s
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %self.name(), error = %e, retry_in = ?backoff, "ordered subscriber connect failed");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                        backoff = self.config.backoff.next(backoff);
                        continue;
                    }
                },
            };
            let result = self.balance(&s, &mut stop).await;
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                s.conn.close(200, ShortString::from("subscription stopped")),
            )
            .await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(subscription = %self.name(), error = %e, retry_in = ?backoff, "ordered subscriber session failed; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    backoff = self.config.backoff.next(backoff);
                }
            }
        }
    }

    /// Rebalances until stopped (`Ok`) or the connection fails; releases
    /// every owned partition on the way out.
    async fn balance(
        &self,
        s: &Session,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), RabbitError> {
        let mut owned: BTreeMap<u16, Owned> = BTreeMap::new();
        let result = loop {
            let finished: Vec<u16> = owned
                .iter()
                .filter(|(_, o)| o.is_finished())
                .map(|(p, _)| *p)
                .collect();
            for p in finished {
                if let Some(o) = owned.remove(&p)
                    && let Err(e) = o.release().await
                {
                    tracing::warn!(subscription = %self.name(), partition = p, error = %e, "partition consumer ended; it will be claimed again");
                }
            }
            if let Err(e) = self.rebalance(s, &mut owned).await {
                break Err(e);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.rebalance_interval) => {}
                _ = stop.wait_for(|s| *s) => break Ok(()),
            }
        };
        for (_, o) in owned {
            let _ = o.release().await;
        }
        result
    }

    async fn rebalance(
        &self,
        s: &Session,
        owned: &mut BTreeMap<u16, Owned>,
    ) -> Result<(), RabbitError> {
        let passive = QueueDeclareOptions {
            passive: true,
            durable: true,
            ..Default::default()
        };
        let members = s
            .control
            .queue_declare(
                topology::short(topology::members_queue(self.name()))?,
                passive,
                FieldTable::default(),
            )
            .await?
            .consumer_count()
            .max(1);
        let n = u32::from(self.partitions);
        let fair = usize::try_from(n.div_ceil(members)).unwrap_or(usize::MAX);
        while owned.len() > fair {
            if let Some((p, o)) = owned.pop_last() {
                tracing::info!(subscription = %self.name(), partition = p, members, "releasing a partition to another instance");
                if let Err(e) = o.release().await {
                    tracing::warn!(subscription = %self.name(), partition = p, error = %e, "released partition had failed");
                }
            }
        }
        if owned.len() >= fair {
            return Ok(());
        }
        let start = u32::try_from(self.instance.as_u128() % u128::from(n)).unwrap_or(0);
        for k in 0..n {
            if owned.len() >= fair {
                break;
            }
            let Ok(p) = u16::try_from((start + k) % n) else {
                continue;
            };
            if owned.contains_key(&p) {
                continue;
            }
            let queue = topology::short(topology::partition_queue(self.name(), p))?;
            let consumers = s
                .control
                .queue_declare(queue.clone(), passive, FieldTable::default())
                .await?
                .consumer_count();
            if consumers > 0 {
                continue;
            }
            match self.claim(&s.conn, p, queue).await {
                Ok(o) => {
                    tracing::info!(subscription = %self.name(), partition = p, members, "claimed a partition");
                    owned.insert(p, o);
                }
                // Another instance got it first (ACCESS_REFUSED closes only
                // the claim's channel).
                Err(e) => {
                    tracing::debug!(subscription = %self.name(), partition = p, error = %e, "partition claim refused")
                }
            }
        }
        Ok(())
    }

    async fn claim(
        &self,
        conn: &Connection,
        p: u16,
        queue: ShortString,
    ) -> Result<Owned, RabbitError> {
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(
                self.shared.options.prefetch.max(1),
                BasicQosOptions::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue,
                ShortString::from(format!("payorch-{}-p{p}", self.instance)),
                BasicConsumeOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(partition_task(
            self.shared.clone(),
            p,
            channel,
            consumer,
            stop_rx,
        ));
        Ok(Owned {
            stop: stop_tx,
            task: Some(task),
        })
    }
}

/// Handles one partition's deliveries one at a time until stopped or the
/// consumer ends; closing the channel returns unacked deliveries.
async fn partition_task(
    shared: Arc<Shared>,
    partition: u16,
    channel: Channel,
    mut consumer: Consumer,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RabbitError> {
    let mut parked: HashSet<String> = HashSet::new();
    let result = loop {
        let next = tokio::select! {
            d = consumer.next() => d,
            _ = stop.wait_for(|s| *s) => break Ok(()),
        };
        match next {
            Some(Ok(delivery)) => {
                if let Err(e) = shared
                    .settle(partition, delivery, &mut parked, &mut stop)
                    .await
                {
                    break Err(e);
                }
            }
            Some(Err(e)) => break Err(e.into()),
            None => break Err(RabbitError::ConsumerEnded),
        }
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        channel.close(200, ShortString::from("partition released")),
    )
    .await;
    result
}

impl Shared {
    async fn settle(
        &self,
        partition: u16,
        delivery: Delivery,
        parked: &mut HashSet<String>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), RabbitError> {
        let name = &self.options.name;
        let props = &delivery.properties;
        let stream = topology::str_header(props, H_STREAM_ID);
        let routing_key = delivery.routing_key.as_str().to_owned();
        let message_id = props
            .message_id()
            .as_ref()
            .and_then(|m| Uuid::parse_str(m.as_str()).ok());
        let Some(message_id) = message_id else {
            tracing::warn!(subscription = %name, partition, %routing_key, "message without a uuid message_id; dead-lettering");
            if let Some(s) = stream {
                parked.insert(s);
            }
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await?;
            return Ok(());
        };
        if let Some(s) = &stream
            && parked.contains(s)
        {
            tracing::warn!(subscription = %name, partition, %message_id, stream = %s, "stream parked behind a dead-lettered event; dead-lettering this one too");
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await?;
            return Ok(());
        }
        let mut attempt = 0u32;
        loop {
            let ctx = DeliveryContext {
                message_id,
                routing_key: routing_key.clone(),
                attempt,
                redelivered: delivery.redelivered || attempt > 0,
            };
            let result = AssertUnwindSafe(self.handler.handle_raw(&delivery.data, &ctx))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(HandlerError::Transient("handler panicked".into())));
            match result {
                Ok(()) => {
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    return Ok(());
                }
                Err(HandlerError::Transient(msg)) if attempt < self.options.max_retries => {
                    tracing::debug!(subscription = %name, partition, %message_id, attempt, error = %msg, "handler failed; retrying in place");
                    tokio::select! {
                        _ = tokio::time::sleep(self.options.retry_delay) => {}
                        // Left unacked: the channel close hands it, still
                        // first in line, to the partition's next owner.
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                    }
                    attempt += 1;
                }
                Err(error) => {
                    tracing::warn!(subscription = %name, partition, %message_id, %routing_key, attempts = attempt + 1, %error, "dead-lettering message and parking its stream");
                    if let Some(s) = stream {
                        parked.insert(s);
                    }
                    delivery
                        .acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await?;
                    return Ok(());
                }
            }
        }
    }
}
