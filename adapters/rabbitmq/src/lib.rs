//! # payorch-rabbitmq
//!
//! payorch's events out over RabbitMQ (ARCHITECTURE.md §4), with lapin 4:
//!
//! * [`relay::Relay`] tails `EventStore::read_all` from its checkpoint and
//!   publishes every event to the durable topic exchange `payorch.events`,
//!   with publisher confirms; the checkpoint only advances past confirmed
//!   messages, so delivery is at-least-once and never lossy. One relay per
//!   store is active at a time (a [`LeaderLock`](payorch_engine::bus::LeaderLock)
//!   lease); the others stand by.
//! * [`subscriber::RabbitBus`] implements the engine's
//!   [`EventBus`](payorch_engine::bus::EventBus): a durable queue bound with
//!   topic patterns, manual ack after the handler succeeded, bounded retries
//!   through a retry queue, then a dead-letter queue; or, with ordered
//!   delivery, [`partitioned`] queues by stream id whose partitions the
//!   running instances share, one active consumer per partition.
//! * [`health::BrokerHealth`] probes the broker for `/healthz` over one
//!   kept connection (a channel open/close per probe).
//! * [`topology`] declares exchanges and queues idempotently and names the
//!   headers; `README.md` documents the wire contract for consumers in other
//!   languages.

use std::time::Duration;

use payorch_engine::bus::BusError;
use payorch_engine::store::{Position, StoreError};

pub mod health;
pub mod partitioned;
pub mod relay;
pub mod subscriber;
pub mod topology;

pub use health::BrokerHealth;
pub use lapin;
pub use relay::{Relay, RelayConfig, RelayHandle, RelayState, RelayStatus};
pub use subscriber::{RabbitBus, RabbitBusConfig};

/// The default AMQP URL of tests and local runs.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Errors of the RabbitMQ adapter.
#[derive(Debug, thiserror::Error)]
pub enum RabbitError {
    /// The broker could not be reached, closed the connection or refused an
    /// operation. The relay and subscribers reconnect with backoff; setup
    /// calls return it. Check the broker if it persists.
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The event or checkpoint store failed. Retried with backoff by the
    /// relay; page someone if it persists.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker refused (nacked) a published message. The relay
    /// republishes from its checkpoint.
    #[error("broker nacked the event at position {0}")]
    Nacked(Position),
    /// No publisher confirm arrived in time; treated as a lost connection.
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(Duration),
    /// The broker did not answer within the given time (health probe).
    /// Check the broker and the network if it persists.
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    /// The relay's leader lease was lost; it stops publishing and stands by.
    #[error("leader lease lost")]
    LeaseLost,
    /// The broker ended a subscriber's consumer (connection lost, queue
    /// deleted or consumer cancelled). The subscriber reconnects and
    /// redeclares its queue; unacked messages are redelivered.
    #[error("the broker ended the consumer")]
    ConsumerEnded,
    /// Invalid configuration (bad name, pattern). Fix the configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An error of the broker-agnostic bus layer (bad options, encoding).
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl From<RabbitError> for BusError {
    fn from(e: RabbitError) -> Self {
        match e {
            RabbitError::Bus(b) => b,
            RabbitError::Store(s) => BusError::Store(s),
            RabbitError::Config(c) => BusError::InvalidOptions(c),
            other => BusError::Broker(other.to_string()),
        }
    }
}

/// Exponential backoff between reconnection attempts.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    pub(crate) fn next(&self, current: Duration) -> Duration {
        (current * 2).clamp(self.min, self.max)
    }
}
