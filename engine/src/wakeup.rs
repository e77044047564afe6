//! Wake-up port: lets a tailer of `read_all` (the relay, the in-process
//! bus) sleep until events may have been appended, instead of polling.
//!
//! A wake-up is a hint, never data: the woken tailer reads from its
//! checkpoint as before, so a lost or spurious wake-up costs latency or one
//! empty read, never an event. Tailers therefore keep a long fallback poll
//! (`wait` returns after its timeout).
//!
//! * [`WakeupSignal`]: an in-process signal; [`WakeupSignal::notify`] after
//!   an append (or from a Postgres `LISTEN` task: payorch-postgres), and
//!   each tailer waits on its own [`WakeupListener`]. A notification sent
//!   between a tailer's read and its next `wait` is not lost: that `wait`
//!   returns at once.
//! * [`WakingStore`]: an [`EventStore`] decorator that signals after every
//!   successful append (SQLite, in-memory: one process).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, watch};

use crate::store::{
    AppendOutcome, AppendRequest, EventStore, Position, RecordedEvent, StoreError, StreamId,
    Version,
};

/// Waits for "events may have been appended".
#[async_trait]
pub trait EventWakeup: Send + Sync {
    /// Returns `true` when woken by an append notification since the last
    /// call, `false` after `timeout` without one.
    async fn wait(&self, timeout: Duration) -> bool;
}

/// An in-process wake-up signal; clones share it.
#[derive(Clone, Debug)]
pub struct WakeupSignal {
    tx: Arc<watch::Sender<u64>>,
}

impl Default for WakeupSignal {
    fn default() -> Self {
        WakeupSignal {
            tx: Arc::new(watch::channel(0).0),
        }
    }
}

impl WakeupSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every listener (and the next `wait` of a listener not waiting
    /// right now).
    pub fn notify(&self) {
        self.tx.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// A listener that sees notifications from now on.
    pub fn subscribe(&self) -> WakeupListener {
        let mut rx = self.tx.subscribe();
        rx.mark_unchanged();
        WakeupListener { rx: Mutex::new(rx) }
    }
}

/// One tailer's view of a [`WakeupSignal`].
#[derive(Debug)]
pub struct WakeupListener {
    rx: Mutex<watch::Receiver<u64>>,
}

#[async_trait]
impl EventWakeup for WakeupListener {
    async fn wait(&self, timeout: Duration) -> bool {
        let mut rx = self.rx.lock().await;
        match tokio::time::timeout(timeout, rx.changed()).await {
            Ok(Ok(())) => true,
            // Timed out, or the signal is gone (cannot happen while a
            // listener holds the sender's Arc... but never spin on it).
            Ok(Err(_)) => {
                drop(rx);
                tokio::time::sleep(timeout).await;
                false
            }
            Err(_) => false,
        }
    }
}

/// An [`EventStore`] that signals after every successful append. It
/// shares the inner store (`Arc`), so the store's other ports (checkpoints,
/// idempotency, indexes) stay on the same value.
pub struct WakingStore<S: ?Sized> {
    inner: Arc<S>,
    signal: WakeupSignal,
}

impl<S: ?Sized> WakingStore<S> {
    pub fn new(inner: Arc<S>, signal: WakeupSignal) -> Self {
        WakingStore { inner, signal }
    }

    pub fn signal(&self) -> &WakeupSignal {
        &self.signal
    }
}

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for WakingStore<S> {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let out = self.inner.append(request).await?;
        if !out.already_stored {
            self.signal.notify();
        }
        Ok(out)
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        self.inner.stream_version(stream).await
    }
    async fn list_streams(
        &self,
        stream_type: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, Version)>, StoreError> {
        self.inner.list_streams(stream_type, after, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::InMemoryStore;
    use crate::store::{EventMetadata, ExpectedVersion, NewEvent};

    #[tokio::test]
    async fn a_notification_before_wait_is_not_lost() {
        let signal = WakeupSignal::new();
        let a = signal.subscribe();
        let b = signal.subscribe();
        assert!(!a.wait(Duration::from_millis(5)).await, "nothing yet");
        signal.notify();
        // Neither was waiting when it came; both see it.
        assert!(a.wait(Duration::from_secs(30)).await);
        assert!(b.wait(Duration::from_secs(30)).await);
        assert!(!a.wait(Duration::from_millis(5)).await, "seen once");
    }

    #[tokio::test]
    async fn a_waiting_listener_wakes_on_append() {
        let signal = WakeupSignal::new();
        let store = Arc::new(WakingStore::new(
            Arc::new(InMemoryStore::new()),
            signal.clone(),
        ));
        let listener = signal.subscribe();
        let waiter = tokio::spawn(async move { listener.wait(Duration::from_secs(30)).await });
        let event = NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "test".into(),
            schema_version: 1,
            payload: serde_json::value::RawValue::from_string("{}".into()).expect("json"),
            metadata: EventMetadata::default(),
            recorded_at: time::OffsetDateTime::now_utc(),
        };
        store
            .append(AppendRequest {
                stream_id: StreamId::new("s-1"),
                stream_type: "test".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![event],
                idempotency: None,
            })
            .await
            .expect("append");
        assert!(waiter.await.expect("join"), "woken by the append");
    }
}
