//! Wake-ups from Postgres: `LISTEN payorch_events` on a dedicated
//! connection.
//!
//! Who sends them: the store announces its own appends itself
//! ([`AppendNotifier`]): at once to tailers in its process (an in-process
//! signal, which [`PgWakeup::start_with`] shares), and to other processes
//! with one `NOTIFY payorch_events` sent by a background task after the
//! appends committed, at most once per [`NOTIFY_GAP`]. Its sessions set
//! `payorch.append_notify = off`, which mutes migration 0004's trigger
//! (since migration 0008): a `NOTIFY` inside the appending transaction made
//! Postgres serialise the commits of all appends through one lock held
//! across the WAL flush (no group commit). Other writers (older payorch
//! versions, sessions without the setting) still notify from the trigger.
//!
//! [`PgWakeup::start`] spawns a task that holds the listening connection
//! and turns each notification into [`WakeupSignal::notify`]. When the
//! connection is lost, notifications sent meanwhile are lost too, so the
//! task signals once after reconnecting (tailers re-read from their
//! checkpoints; a wake-up is a hint, never data). Channels are per
//! database: every payorch on the database wakes, whatever its schema.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use payorch_engine::wakeup::WakeupSignal;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The notification channel written by the `events` trigger.
pub const CHANNEL: &str = "payorch_events";

/// Shortest time between two `NOTIFY`s of one store: a burst of appends
/// costs one notification per gap, and another process's tailer learns of
/// an append at most this much later (plus the `NOTIFY` round trip).
pub const NOTIFY_GAP: Duration = Duration::from_millis(5);

/// Announces a store's appends (see the module docs). Cloned stores share
/// one; the background task ends when the last clone is dropped.
#[derive(Debug, Default)]
pub(crate) struct AppendNotifier {
    signal: WakeupSignal,
    pending: Arc<Notify>,
    task: OnceLock<JoinHandle<()>>,
}

impl Drop for AppendNotifier {
    fn drop(&mut self) {
        if let Some(t) = self.task.get() {
            t.abort();
        }
    }
}

impl AppendNotifier {
    /// The in-process signal raised by every append of the store.
    pub(crate) fn signal(&self) -> &WakeupSignal {
        &self.signal
    }

    /// After a committed append: wake this process's tailers now, and
    /// other processes' through the next coalesced `NOTIFY`.
    pub(crate) fn appended(&self, pool: &PgPool) {
        self.signal.notify();
        self.task
            .get_or_init(|| tokio::spawn(notify_loop(pool.clone(), self.pending.clone())));
        // One stored permit however many appends come before the task
        // looks again: they share one NOTIFY.
        self.pending.notify_one();
    }
}

async fn notify_loop(pool: PgPool, pending: Arc<Notify>) {
    loop {
        pending.notified().await;
        // No write, no transaction id: nothing to flush, no lock held
        // across a WAL flush.
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "NOTIFY {CHANNEL} failed; other processes' tailers fall back to polling");
        }
        tokio::time::sleep(NOTIFY_GAP).await;
    }
}

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
        Self::start_with(pool, WakeupSignal::new())
    }

    /// [`PgWakeup::start`], raising `signal`: pass the store's
    /// [`crate::PostgresStore::append_signal`] so that tailers in this
    /// process wake on its appends at once, and on other processes'
    /// through `LISTEN`.
    pub fn start_with(pool: &PgPool, signal: WakeupSignal) -> PgWakeup {
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
