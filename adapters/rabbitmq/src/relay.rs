//! The relay: event store -> `payorch.events`, at-least-once.
//!
//! The events table is the outbox: the relay reads `read_all` after its
//! checkpoint (`relay:<exchange>` by default) and publishes each event with
//! publisher confirms, keeping up to `window` messages unconfirmed. Confirms
//! are consumed in publish order, so the checkpoint moves over the
//! contiguous prefix of confirmed positions only. A nack, a missing confirm
//! or a lost connection ends the session: the relay reconnects with backoff
//! and republishes from the checkpoint (duplicates possible, loss never).
//!
//! Idle is idle: with a wake-up source ([`Relay::with_wakeup`]: Postgres
//! `LISTEN/NOTIFY`, or an in-process signal) an idle relay sleeps until an
//! append is announced, or `wakeup_fallback` (default 5 s) at the latest,
//! instead of polling every `idle_poll`; it checks its lease on each wake
//! before reading. Without one it polls every `idle_poll`.
//!
//! Only the holder of the leader lease (`LeaderLock`, named like the
//! checkpoint) publishes; other relays stand by and retry the lease every
//! `standby_poll`. The lease is re-checked every `lease_check_interval` and
//! while idle; once lost, the relay stops publishing and stands by again.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{Channel, Connection, ConnectionProperties, PublisherConfirm};
use payorch_engine::bus::{LeaderLock, LeaseGuard};
use payorch_engine::store::{CheckpointStore, EventStore, Position, RecordedEvent};
use payorch_engine::wakeup::EventWakeup;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::topology::{self, EXCHANGE};
use crate::{Backoff, RabbitError};

/// First and last quick re-read after activity (see `pump`).
const SETTLE_FIRST: Duration = Duration::from_millis(5);
const SETTLE_LAST: Duration = Duration::from_secs(1);

/// Relay settings.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub amqp_url: String,
    /// Exchange to publish to (default `payorch.events`).
    pub exchange: String,
    /// Checkpoint and lease name (default `relay:<exchange>`).
    pub name: String,
    /// Most unconfirmed messages in flight (default 2048). When the host is
    /// saturated, confirms come back slowly (the broker gets little CPU),
    /// and a small window caps the relay below the append rate: at c64 of
    /// `payorch load` a 256 window fell 10,000+ events behind, 2048 7,600.
    pub window: usize,
    /// Events read per `read_all` call (default 512).
    pub read_batch: usize,
    /// Poll interval when the store has nothing new and no wake-up source
    /// is set (default 100 ms).
    pub idle_poll: Duration,
    /// With a wake-up source: the longest idle sleep without a wake-up
    /// (default 5 s; a lost notification costs at most this much latency).
    pub wakeup_fallback: Duration,
    /// How often a standby relay retries the lease (default 500 ms).
    pub standby_poll: Duration,
    /// How often an active relay checks that it still holds the lease
    /// (default 1 s).
    pub lease_check_interval: Duration,
    /// Longest wait for one publisher confirm (default 30 s).
    pub confirm_timeout: Duration,
    /// Confirmed events between checkpoint writes while busy (default 128).
    pub checkpoint_every: usize,
    /// Longest time a confirmed position waits for its checkpoint write
    /// once the pipeline has drained (default 200 ms). Under a trickle of
    /// appends the pipeline can drain after every few events, and a write
    /// each time would cost one Postgres transaction per burst. A crash
    /// loses at most this much checkpoint progress (those events are
    /// published again: delivery is at-least-once either way).
    pub checkpoint_interval: Duration,
    /// Shortest time between two reads once the relay has caught up (its
    /// last read returned less than it asked for; default 10 ms). Under a
    /// steady trickle of appends the relay otherwise read after every
    /// confirm, about one Postgres round trip per committed transaction;
    /// with the gap it reads at most 100 times a second and publishes what
    /// accumulated, for at most this much extra latency. A backlog is read
    /// back to back.
    pub read_gap: Duration,
    pub backoff: Backoff,
}

impl RelayConfig {
    pub fn new(amqp_url: impl Into<String>) -> Self {
        RelayConfig {
            amqp_url: amqp_url.into(),
            exchange: EXCHANGE.to_owned(),
            name: format!("relay:{EXCHANGE}"),
            window: 2048,
            read_batch: 512,
            idle_poll: Duration::from_millis(100),
            wakeup_fallback: Duration::from_secs(5),
            standby_poll: Duration::from_millis(500),
            lease_check_interval: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(30),
            checkpoint_every: 128,
            checkpoint_interval: Duration::from_millis(200),
            read_gap: Duration::from_millis(10),
            backoff: Backoff::default(),
        }
    }

    /// Publishes to `exchange`; the name becomes `relay:<exchange>`.
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self.name = format!("relay:{}", self.exchange);
        self
    }
}

/// What a relay is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayState {
    /// Waiting for the leader lease (another relay holds it).
    Standby,
    /// Holds the lease, (re)connecting to the broker.
    Connecting,
    /// Holds the lease and publishes.
    Active,
    /// Stopped on request.
    Stopped,
}

/// A relay's progress, observable through [`RelayHandle::status`].
#[derive(Clone, Copy, Debug)]
pub struct RelayStatus {
    pub state: RelayState,
    /// Highest position confirmed by the broker and checkpointed.
    pub checkpoint: Position,
    /// Messages published by this relay, republished ones included.
    pub published: u64,
    /// Sessions that ended in a failure (broker, store, nack).
    pub failures: u64,
}

/// Publishes the event store to RabbitMQ.
pub struct Relay {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    lock: Arc<dyn LeaderLock>,
    config: RelayConfig,
    wake: Arc<Notify>,
    wakeup: Option<Arc<dyn EventWakeup>>,
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    status: watch::Receiver<RelayStatus>,
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// The latest status.
    pub fn status(&self) -> RelayStatus {
        *self.status.borrow()
    }

    /// A receiver to wait on status changes.
    pub fn watch(&self) -> watch::Receiver<RelayStatus> {
        self.status.clone()
    }

    /// Waits until `pred` holds for the status, at most `timeout`; returns
    /// whether it did.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl FnMut(&RelayStatus) -> bool,
    ) -> bool {
        let mut rx = self.status.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(pred)).await,
            Ok(Ok(_))
        )
    }

    /// Stops after saving the confirmed checkpoint; waits for the task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Kills the relay at once (a crash: unconfirmed or unsaved progress is
    /// republished by the next relay).
    pub fn abort(&self) {
        self.task.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Why a session ended without an error to back off from.
enum SessionEnd {
    Stopped,
    LeaseLost,
}

impl Relay {
    pub fn new(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        lock: Arc<dyn LeaderLock>,
        config: RelayConfig,
    ) -> Self {
        Relay {
            store,
            checkpoints,
            lock,
            config,
            wake: Arc::new(Notify::new()),
            wakeup: None,
        }
    }

    /// Sleeps while idle until `wakeup` announces an append (or
    /// `wakeup_fallback` passes) instead of polling every `idle_poll`.
    pub fn with_wakeup(mut self, wakeup: Arc<dyn EventWakeup>) -> Self {
        self.wakeup = Some(wakeup);
        self
    }

    /// Uses `wake` to be woken at once after appends (instead of waiting for
    /// the idle poll). Call `wake.notify_one()` after each append.
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// Starts the relay task.
    pub fn spawn(self) -> RelayHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (status_tx, status_rx) = watch::channel(RelayStatus {
            state: RelayState::Standby,
            checkpoint: Position::START,
            published: 0,
            failures: 0,
        });
        let runner = Runner {
            relay: self,
            stop: stop_rx,
            status: status_tx,
        };
        RelayHandle {
            stop: stop_tx,
            status: status_rx,
            task: tokio::spawn(runner.run()),
        }
    }
}

struct Runner {
    relay: Relay,
    stop: watch::Receiver<bool>,
    status: watch::Sender<RelayStatus>,
}

impl Runner {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn set_state(&self, state: RelayState) {
        self.status.send_modify(|s| s.state = state);
    }

    /// Sleeps `d`; false if asked to stop meanwhile.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop.wait_for(|s| *s) => false,
        }
    }

    async fn run(mut self) {
        let name = self.relay.config.name.clone();
        loop {
            if self.stopping() {
                break;
            }
            self.set_state(RelayState::Standby);
            let guard = match self.relay.lock.try_acquire(&name).await {
                Ok(Some(guard)) => guard,
                Ok(None) => {
                    let d = self.relay.config.standby_poll;
                    if !self.pause(d).await {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(relay = %name, error = %e, "leader lock unavailable");
                    let d = self.relay.config.standby_poll;
                    if !self.pause(d).await {
                        break;
                    }
                    continue;
                }
            };
            tracing::info!(relay = %name, "leader lease acquired; relaying");
            match self.lead(guard.as_ref()).await {
                SessionEnd::Stopped => break,
                SessionEnd::LeaseLost => {
                    tracing::warn!(relay = %name, "leader lease lost; standing by");
                }
            }
        }
        self.set_state(RelayState::Stopped);
    }

    /// Connects and publishes while holding the lease, reconnecting with
    /// backoff after failures.
    async fn lead(&mut self, guard: &dyn LeaseGuard) -> SessionEnd {
        let mut backoff = self.relay.config.backoff.min;
        loop {
            if self.stopping() {
                return SessionEnd::Stopped;
            }
            if guard.is_lost().await {
                return SessionEnd::LeaseLost;
            }
            self.set_state(RelayState::Connecting);
            let before = self.status.borrow().checkpoint;
            match self.session(guard).await {
                Ok(end) => return end,
                Err(e) => {
                    self.status.send_modify(|s| s.failures += 1);
                    if self.status.borrow().checkpoint > before {
                        backoff = self.relay.config.backoff.min;
                    }
                    tracing::warn!(relay = %self.relay.config.name, error = %e, retry_in = ?backoff, "relay session failed; republishing from the checkpoint after backoff");
                    if !self.pause(backoff).await {
                        return SessionEnd::Stopped;
                    }
                    backoff = self.relay.config.backoff.next(backoff);
                }
            }
        }
    }

    async fn session(&mut self, guard: &dyn LeaseGuard) -> Result<SessionEnd, RabbitError> {
        let url = self.relay.config.amqp_url.clone();
        let name = self.relay.config.name.clone();
        let exchange = self.relay.config.exchange.clone();
        let conn = Connection::connect(
            &url,
            ConnectionProperties::default().with_connection_name(name.into()),
        )
        .await?;
        let result = async {
            let channel = conn.create_channel().await?;
            topology::declare_exchange(&channel, &exchange).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let end = self.pump(&channel, guard).await;
            if end.is_ok() {
                // A normal end (stop, lease lost): close the channel before
                // the connection. Dropping it open makes lapin close it
                // while the connection is already closing, which it logs
                // as a connection error ("invalid channel state: Closing").
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    channel.close(200, ShortString::from("relay session end")),
                )
                .await;
            }
            end
        }
        .await;
        // Best effort: the connection may already be gone.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            conn.close(200, ShortString::from("relay session end")),
        )
        .await;
        result
    }

    async fn load_checkpoint(&self) -> Result<Position, RabbitError> {
        Ok(self
            .relay
            .checkpoints
            .load_checkpoint(&self.relay.config.name)
            .await?
            .unwrap_or(Position::START))
    }

    async fn save_checkpoint(&self, position: Position) -> Result<(), RabbitError> {
        self.relay
            .checkpoints
            .save_checkpoint(&self.relay.config.name, position)
            .await?;
        self.status.send_modify(|s| s.checkpoint = position);
        Ok(())
    }

    async fn publish(
        &self,
        channel: &Channel,
        exchange: &ShortString,
        event: &RecordedEvent,
    ) -> Result<PublisherConfirm, RabbitError> {
        let (props, body) = topology::event_message(event)?;
        let confirm = channel
            .basic_publish(
                exchange.clone(),
                topology::routing_key_short(event),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await?;
        self.status.send_modify(|s| s.published += 1);
        Ok(confirm)
    }

    /// Publishes `events` in order and waits until all of them are written
    /// to the broker connection.
    ///
    /// Each `basic_publish` queues its frames (and takes its delivery tag)
    /// synchronously at its first poll, then waits for lapin's I/O thread
    /// to write them. Awaiting them one by one costs a wake-up of that
    /// thread and of this task per message: on a saturated host each one
    /// waits for a CPU, and the relay fell thousands of events behind the
    /// appends (`payorch load`, c64). Here every publish gets its first
    /// poll in `events` order (so the frames, and the delivery tags, keep
    /// the stream order) before any is awaited, and the I/O thread writes
    /// the batch in one go.
    async fn publish_batch<'e>(
        &self,
        channel: &Channel,
        exchange: &ShortString,
        events: &'e [RecordedEvent],
    ) -> Result<Vec<(&'e RecordedEvent, PublisherConfirm)>, RabbitError> {
        type Publish<'a> =
            Pin<Box<dyn Future<Output = Result<PublisherConfirm, RabbitError>> + Send + 'a>>;
        let mut pending: Vec<Publish<'_>> = events
            .iter()
            .map(|e| Box::pin(self.publish(channel, exchange, e)) as Publish<'_>)
            .collect();
        let mut done: Vec<Option<Result<PublisherConfirm, RabbitError>>> =
            events.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut all = true;
            // In index order, every time: the first poll of each publish
            // (where its frames are queued) follows the previous one's.
            for (publish, slot) in pending.iter_mut().zip(done.iter_mut()) {
                if slot.is_none() {
                    match publish.as_mut().poll(cx) {
                        Poll::Ready(r) => *slot = Some(r),
                        Poll::Pending => all = false,
                    }
                }
            }
            if all { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
        drop(pending);
        events
            .iter()
            .zip(done)
            .map(|(e, r)| match r {
                Some(r) => r.map(|c| (e, c)),
                None => unreachable!("poll_fn returns once every publish is done"),
            })
            .collect()
    }

    /// Publishes from the checkpoint until stopped, the lease is lost or
    /// something fails.
    async fn pump(
        &mut self,
        channel: &Channel,
        guard: &dyn LeaseGuard,
    ) -> Result<SessionEnd, RabbitError> {
        let window = self.relay.config.window.max(1);
        let read_batch = self.relay.config.read_batch.max(1);
        let low_water = window / 2;
        let exchange = topology::short(self.relay.config.exchange.clone())?;
        let confirm_timeout = self.relay.config.confirm_timeout;
        let lease_every = self.relay.config.lease_check_interval;
        let checkpoint_every = self.relay.config.checkpoint_every.max(1);
        let checkpoint_interval = self.relay.config.checkpoint_interval;
        let mut saved_at = Instant::now();
        let read_gap = self.relay.config.read_gap;
        let mut last_read: Option<Instant> = None;

        let mut checkpoint = self.load_checkpoint().await?;
        self.status.send_modify(|s| s.checkpoint = checkpoint);
        let mut next = checkpoint;
        let mut inflight: VecDeque<(Position, PublisherConfirm)> = VecDeque::new();
        let mut drained = false;
        let mut unsaved = false;
        let mut since_save = 0usize;
        let mut lease_checked = Instant::now();
        // After a wake-up or a publish: the next idle reads come quickly
        // (5 ms, doubling to 1 s) before the relay sleeps on the wake-up
        // source again. A notified event may not be readable yet: read_all
        // stops at the oldest transaction still running anywhere on the
        // server, and that one has sent no notification.
        let mut settle: Option<Duration> = Some(SETTLE_FIRST);
        self.set_state(RelayState::Active);

        loop {
            if self.stopping() {
                if unsaved {
                    self.save_checkpoint(checkpoint).await?;
                }
                return Ok(SessionEnd::Stopped);
            }
            if lease_checked.elapsed() >= lease_every {
                if guard.is_lost().await {
                    return Ok(SessionEnd::LeaseLost);
                }
                lease_checked = Instant::now();
            }

            // Keep the pipeline full.
            if !drained && inflight.len() <= low_water {
                if let Some(gap) = last_read.map(|at| read_gap.saturating_sub(at.elapsed()))
                    && !gap.is_zero()
                {
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(gap) => {}
                        _ = stop.wait_for(|s| *s) => continue,
                    }
                }
                let want = read_batch.min(window - inflight.len());
                let events = self.relay.store.read_all(next, want).await?;
                drained = events.len() < want;
                // Caught up: the next read waits for `read_gap`.
                last_read = drained.then(Instant::now);
                if !events.is_empty() {
                    settle = Some(SETTLE_FIRST);
                }
                for (event, confirm) in self.publish_batch(channel, &exchange, &events).await? {
                    inflight.push_back((event.global_position, confirm));
                    next = event.global_position;
                }
                if !events.is_empty() {
                    continue;
                }
            }

            // Settle the oldest message: confirms come in publish order.
            if let Some((position, confirm)) = inflight.pop_front() {
                let mut stop = self.stop.clone();
                let confirmation = tokio::select! {
                    c = tokio::time::timeout(confirm_timeout, confirm) => {
                        Some(c.map_err(|_| RabbitError::ConfirmTimeout(confirm_timeout))??)
                    }
                    _ = stop.wait_for(|s| *s) => None,
                };
                let Some(confirmation) = confirmation else {
                    if unsaved {
                        self.save_checkpoint(checkpoint).await?;
                    }
                    return Ok(SessionEnd::Stopped);
                };
                if confirmation.is_nack() {
                    if unsaved {
                        self.save_checkpoint(checkpoint).await?;
                    }
                    return Err(RabbitError::Nacked(position));
                }
                checkpoint = position;
                unsaved = true;
                since_save += 1;
                // Read again after a confirm only if the last read filled
                // its batch or `read_gap` has passed; otherwise settle the
                // remaining confirms first.
                if last_read.is_none_or(|at| at.elapsed() >= read_gap) {
                    drained = false;
                }
                if since_save >= checkpoint_every
                    || (inflight.is_empty() && saved_at.elapsed() >= checkpoint_interval)
                {
                    self.save_checkpoint(checkpoint).await?;
                    saved_at = Instant::now();
                    unsaved = false;
                    since_save = 0;
                }
                continue;
            }

            // Idle: nothing in flight, nothing new. The checkpoint is
            // written once `checkpoint_interval` has passed since the last
            // write (the sleep below is cut short for it). The lease is
            // checked at the top of the loop, at least every
            // `lease_check_interval` and before anything is published:
            // with `read_gap` the relay passes here after every read under
            // a steady trickle, and a `pg_locks` query each time would
            // cost a round trip per read.
            if unsaved && saved_at.elapsed() >= checkpoint_interval {
                self.save_checkpoint(checkpoint).await?;
                saved_at = Instant::now();
                unsaved = false;
                since_save = 0;
            }
            let save_due = unsaved.then(|| checkpoint_interval.saturating_sub(saved_at.elapsed()));
            let wake = self.relay.wake.clone();
            match self.relay.wakeup.clone() {
                Some(wakeup) => {
                    let (timeout, next) = match settle {
                        Some(d) => (d, (d * 2 <= SETTLE_LAST).then_some(d * 2)),
                        None => (self.relay.config.wakeup_fallback, None),
                    };
                    settle = next;
                    let timeout = save_due.map_or(timeout, |due| timeout.min(due));
                    tokio::select! {
                        woken = wakeup.wait(timeout) => {
                            if woken {
                                settle = Some(SETTLE_FIRST);
                            }
                        }
                        _ = wake.notified() => {}
                        _ = self.stop.wait_for(|s| *s) => {}
                    }
                }
                None => {
                    let idle = self.relay.config.idle_poll;
                    let idle = save_due.map_or(idle, |due| idle.min(due));
                    tokio::select! {
                        _ = tokio::time::sleep(idle) => {}
                        _ = wake.notified() => {}
                        _ = self.stop.wait_for(|s| *s) => {}
                    }
                }
            }
            drained = false;
        }
    }
}
