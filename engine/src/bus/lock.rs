//! Leader-lock port: one active relay per store (ARCHITECTURE.md §4).
//!
//! A relay calls [`LeaderLock::try_acquire`] with its name; while it holds
//! the returned [`LeaseGuard`] it publishes, and it polls
//! [`LeaseGuard::is_lost`] between batches so that it stops when the lease
//! went away (e.g. the Postgres session holding an advisory lock died).
//! Dropping the guard releases the lease; other relays stand by, retrying
//! `try_acquire`, and take over.
//!
//! [`InMemoryLeaderLock`] serves a single process (tests, embedded use);
//! `payorch-postgres` implements the port with an advisory lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::store::StoreError;

/// Held while a lease is owned; dropping it releases the lease.
#[async_trait]
pub trait LeaseGuard: Send + Sync {
    /// True once the lease can no longer be trusted (the backing session
    /// died or the lease was revoked). The holder must stop work and drop
    /// the guard.
    async fn is_lost(&self) -> bool;
}

/// A named, exclusive lease.
#[async_trait]
pub trait LeaderLock: Send + Sync {
    /// Takes the lease `name` if nobody holds it. `Ok(None)`: someone else
    /// holds it, try again later. `Err`: the lock backend is unreachable
    /// (retry with backoff).
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn LeaseGuard>>, StoreError>;
}

#[derive(Debug)]
struct Holder {
    token: u64,
    lost: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Shared {
    held: Mutex<HashMap<String, Holder>>,
    next: AtomicU64,
}

/// A process-local [`LeaderLock`]. Clones share the same leases.
#[derive(Clone, Debug, Default)]
pub struct InMemoryLeaderLock {
    shared: Arc<Shared>,
}

impl InMemoryLeaderLock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes the lease `name` (simulates a lost session): its guard
    /// reports `is_lost`, and the lease is free for another holder.
    pub fn revoke(&self, name: &str) {
        if let Ok(mut held) = self.shared.held.lock()
            && let Some(holder) = held.remove(name)
        {
            holder.lost.store(true, Ordering::SeqCst);
        }
    }

    /// Whether someone holds `name`.
    pub fn is_held(&self, name: &str) -> bool {
        self.shared
            .held
            .lock()
            .map(|h| h.contains_key(name))
            .unwrap_or(false)
    }
}

struct InMemoryGuard {
    shared: Arc<Shared>,
    name: String,
    token: u64,
    lost: Arc<AtomicBool>,
}

#[async_trait]
impl LeaseGuard for InMemoryGuard {
    async fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for InMemoryGuard {
    fn drop(&mut self) {
        if let Ok(mut held) = self.shared.held.lock()
            && held.get(&self.name).map(|h| h.token) == Some(self.token)
        {
            held.remove(&self.name);
        }
    }
}

#[async_trait]
impl LeaderLock for InMemoryLeaderLock {
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn LeaseGuard>>, StoreError> {
        let mut held = self
            .shared
            .held
            .lock()
            .map_err(|_| StoreError::Unavailable("leader lock mutex poisoned".into()))?;
        if held.contains_key(name) {
            return Ok(None);
        }
        let token = self.shared.next.fetch_add(1, Ordering::SeqCst);
        let lost = Arc::new(AtomicBool::new(false));
        held.insert(
            name.to_owned(),
            Holder {
                token,
                lost: lost.clone(),
            },
        );
        Ok(Some(Box::new(InMemoryGuard {
            shared: self.shared.clone(),
            name: name.to_owned(),
            token,
            lost,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exclusive_until_dropped() {
        let lock = InMemoryLeaderLock::new();
        let g = lock.try_acquire("relay").await.expect("ok").expect("free");
        assert!(lock.try_acquire("relay").await.expect("ok").is_none());
        assert!(lock.try_acquire("other").await.expect("ok").is_some());
        assert!(!g.is_lost().await);
        drop(g);
        assert!(lock.try_acquire("relay").await.expect("ok").is_some());
    }

    #[tokio::test]
    async fn revoke_marks_lost_and_frees() {
        let lock = InMemoryLeaderLock::new();
        let g = lock.try_acquire("relay").await.expect("ok").expect("free");
        lock.revoke("relay");
        assert!(g.is_lost().await);
        let g2 = lock.try_acquire("relay").await.expect("ok").expect("free");
        drop(g); // the stale guard must not release the new holder's lease
        assert!(lock.is_held("relay"));
        drop(g2);
        assert!(!lock.is_held("relay"));
    }
}
