//! Dedupe for handlers that are not idempotent. Delivery is at-least-once
//! (a relay may republish after a crash, a broker may redeliver), so a
//! handler with side effects that must not repeat wraps itself in
//! [`Deduplicated`], which skips message ids it has already handled.
//!
//! The id is remembered only after the handler succeeded: a failed attempt
//! is retried, a crash between success and remembering repeats once.
//! [`LruSeenSet`] forgets the oldest ids beyond its capacity; a persistent
//! [`SeenSet`] can replace it behind the same trait.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use super::{DeliveryContext, EventEnvelope, EventHandler, HandlerError};

/// A set of handled message ids.
#[async_trait]
pub trait SeenSet: Send + Sync {
    /// Whether `id` was recorded. An error is reported to the bus as a
    /// transient handler failure (retried).
    async fn contains(&self, id: Uuid) -> Result<bool, HandlerError>;
    /// Records `id` as handled.
    async fn insert(&self, id: Uuid) -> Result<(), HandlerError>;
}

#[async_trait]
impl<S: SeenSet + ?Sized> SeenSet for std::sync::Arc<S> {
    async fn contains(&self, id: Uuid) -> Result<bool, HandlerError> {
        (**self).contains(id).await
    }
    async fn insert(&self, id: Uuid) -> Result<(), HandlerError> {
        (**self).insert(id).await
    }
}

/// In-memory, bounded: keeps the `capacity` most recently used ids.
#[derive(Debug)]
pub struct LruSeenSet {
    capacity: usize,
    inner: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    tick: u64,
    /// id -> tick of its last use.
    last_use: HashMap<Uuid, u64>,
    /// (tick, id) in use order; stale entries (id used again since) are
    /// skipped on eviction.
    order: VecDeque<(u64, Uuid)>,
}

impl LruSeenSet {
    /// A set remembering at most `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        LruSeenSet {
            capacity: capacity.max(1),
            inner: Mutex::new(Lru::default()),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|l| l.last_use.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Lru>, HandlerError> {
        self.inner
            .lock()
            .map_err(|_| HandlerError::Transient("dedupe set mutex poisoned".into()))
    }
}

impl Lru {
    fn touch(&mut self, id: Uuid) {
        self.tick += 1;
        self.last_use.insert(id, self.tick);
        self.order.push_back((self.tick, id));
    }

    fn evict_to(&mut self, capacity: usize) {
        while self.last_use.len() > capacity {
            let Some((tick, id)) = self.order.pop_front() else {
                break;
            };
            if self.last_use.get(&id) == Some(&tick) {
                self.last_use.remove(&id);
            }
        }
        // Keep the queue from growing with stale entries of hot ids.
        if self.order.len() > 4 * capacity.max(16) {
            let live = &self.last_use;
            self.order.retain(|(t, id)| live.get(id) == Some(t));
        }
    }
}

#[async_trait]
impl SeenSet for LruSeenSet {
    async fn contains(&self, id: Uuid) -> Result<bool, HandlerError> {
        let mut lru = self.lock()?;
        if lru.last_use.contains_key(&id) {
            lru.touch(id);
            let cap = self.capacity;
            lru.evict_to(cap);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn insert(&self, id: Uuid) -> Result<(), HandlerError> {
        let mut lru = self.lock()?;
        lru.touch(id);
        let cap = self.capacity;
        lru.evict_to(cap);
        Ok(())
    }
}

/// A handler that skips message ids its [`SeenSet`] already holds.
pub struct Deduplicated<H, S> {
    inner: H,
    seen: S,
}

impl<H, S> Deduplicated<H, S> {
    pub fn new(inner: H, seen: S) -> Self {
        Deduplicated { inner, seen }
    }
}

#[async_trait]
impl<P, H, S> EventHandler<P> for Deduplicated<H, S>
where
    P: Send + 'static,
    H: EventHandler<P>,
    S: SeenSet,
{
    async fn handle(
        &self,
        event: EventEnvelope<P>,
        ctx: &DeliveryContext,
    ) -> Result<(), HandlerError> {
        if self.seen.contains(ctx.message_id).await? {
            tracing::debug!(message_id = %ctx.message_id, "duplicate delivery skipped");
            return Ok(());
        }
        self.inner.handle(event, ctx).await?;
        self.seen.insert(ctx.message_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lru_bounds_and_keeps_recent() {
        let set = LruSeenSet::new(2);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        set.insert(a).await.expect("insert");
        set.insert(b).await.expect("insert");
        assert!(set.contains(a).await.expect("contains")); // a is now most recent
        set.insert(c).await.expect("insert"); // evicts b
        assert!(set.contains(a).await.expect("contains"));
        assert!(set.contains(c).await.expect("contains"));
        assert!(!set.contains(b).await.expect("contains"));
        assert_eq!(set.len(), 2);
    }

    #[tokio::test]
    async fn hot_ids_do_not_grow_the_queue() {
        let set = LruSeenSet::new(4);
        let a = Uuid::now_v7();
        for _ in 0..1000 {
            set.insert(a).await.expect("insert");
        }
        assert_eq!(set.len(), 1);
        let len = set
            .inner
            .lock()
            .map(|l| l.order.len())
            .unwrap_or(usize::MAX);
        assert!(len <= 4 * 16 + 1, "{len}");
    }
}
