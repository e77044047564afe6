//! A cheap broker health probe for `/healthz`.
//!
//! [`BrokerHealth`] keeps one AMQP connection and, per probe, opens and
//! closes a channel on it: one round trip to the broker, no new TCP/TLS
//! handshake. When the connection is gone (broker restarted, network
//! failure) the probe drops it and connects afresh, so the next probe after
//! the broker comes back is healthy again. Every probe is bounded by a
//! timeout.

use std::time::Duration;

use lapin::types::ShortString;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::Mutex;

use crate::RabbitError;

/// See the module docs.
pub struct BrokerHealth {
    amqp_url: String,
    timeout: Duration,
    connection: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for BrokerHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: not printed.
        f.debug_struct("BrokerHealth")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl BrokerHealth {
    /// A probe of the broker at `amqp_url`; each probe (connect included)
    /// takes at most `timeout`. Connects lazily, on the first probe.
    pub fn new(amqp_url: impl Into<String>, timeout: Duration) -> Self {
        BrokerHealth {
            amqp_url: amqp_url.into(),
            timeout,
            connection: Mutex::new(None),
        }
    }

    /// `Ok` when the broker opened (and closed) a channel within the
    /// timeout. On failure the kept connection is dropped; the next probe
    /// reconnects.
    pub async fn check(&self) -> Result<(), RabbitError> {
        let mut slot = self.connection.lock().await;
        let result = tokio::time::timeout(self.timeout, async {
            if slot.as_ref().is_none_or(|c| !c.status().connected()) {
                *slot = None;
                let conn = Connection::connect(
                    &self.amqp_url,
                    ConnectionProperties::default().with_connection_name("payorch-healthz".into()),
                )
                .await?;
                *slot = Some(conn);
            }
            let Some(conn) = slot.as_ref() else {
                return Ok(());
            };
            let channel = conn.create_channel().await?;
            channel
                .close(200, ShortString::from("healthz"))
                .await
                .map_err(RabbitError::from)
        })
        .await
        .unwrap_or(Err(RabbitError::Timeout(self.timeout)));
        if result.is_err() {
            // Best effort: do not keep a connection that failed a probe.
            if let Some(conn) = slot.take() {
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    conn.close(200, ShortString::from("healthz failed")),
                )
                .await;
            }
        }
        result
    }

    /// Closes the kept connection (on shutdown).
    pub async fn close(&self) {
        if let Some(conn) = self.connection.lock().await.take() {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                conn.close(200, ShortString::from("shutdown")),
            )
            .await;
        }
    }
}
