//! Wake-ups from Postgres: `LISTEN payorch_events` on a dedicated
//! connection. Migration 0004's statement-level trigger on `events` calls
//! `pg_notify('payorch_events', '')`, delivered when the appending
//! transaction commits; no extra round trip per append.
//!
//! [`PgWakeup::start`] spawns a task that holds the listening connection
//! and turns each notification into [`WakeupSignal::notify`]. When the
//! connection is lost, notifications sent meanwhile are lost too, so the
//! task signals once after reconnecting (tailers re-read from their
//! checkpoints; a wake-up is a hint, never data). Channels are per
//! database: every payorch on the database wakes, whatever its schema.

use std::time::Duration;

use payorch_engine::wakeup::WakeupSignal;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::task::JoinHandle;

/// The notification channel written by the `events` trigger.
pub const CHANNEL: &str = "payorch_events";

/// A running `LISTEN` task; dropping it stops the task.
#[derive(Debug)]
pub struct PgWakeup {
    signal: WakeupSignal,
    task: JoinHandle<()>,
}

impl Drop for PgWakeup {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgWakeup {
    /// Listens on a new connection made with `pool`'s connect options (not
    /// a pooled connection of the store).
    pub fn start(pool: &PgPool) -> PgWakeup {
        let signal = WakeupSignal::new();
        let options = pool.connect_options().as_ref().clone();
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        let task = tokio::spawn(listen(own, signal.clone()));
        PgWakeup { signal, task }
    }

    /// The signal tailers subscribe to.
    pub fn signal(&self) -> &WakeupSignal {
        &self.signal
    }
}

async fn listen(pool: PgPool, signal: WakeupSignal) {
    let mut retry = Duration::from_millis(100);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; tailers fall back to polling");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN {CHANNEL} failed; retrying");
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(Duration::from_secs(5));
            continue;
        }
        retry = Duration::from_millis(100);
        // Anything appended before LISTEN took effect: look once.
        signal.notify();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => signal.notify(),
                // Connection lost (reconnects on the next call): what was
                // sent meanwhile is lost, so wake the tailers once.
                Ok(None) => signal.notify(),
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN {CHANNEL} broke; reconnecting");
                    signal.notify();
                    break;
                }
            }
        }
        tokio::time::sleep(retry).await;
    }
}
