//! In-memory [`OpenWorkIndex`]: the reference implementation, for tests and
//! for a reconciler without a persistent index (it is rebuilt from position
//! 0 when the process starts).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{OpenItem, OpenWorkIndex, WorkKind};
use crate::store::{StoreError, StreamId};

/// See the module docs.
#[derive(Debug, Default)]
pub struct InMemoryOpenWorkIndex {
    rows: Mutex<BTreeMap<StreamId, OpenItem>>,
}

impl InMemoryOpenWorkIndex {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<StreamId, OpenItem>>, StoreError> {
        self.rows
            .lock()
            .map_err(|_| StoreError::Unavailable("open-work index mutex poisoned".into()))
    }
}

#[async_trait]
impl OpenWorkIndex for InMemoryOpenWorkIndex {
    async fn apply(&self, open: &[OpenItem], closed: &[StreamId]) -> Result<(), StoreError> {
        let mut rows = self.lock()?;
        for item in open {
            rows.insert(item.stream_id.clone(), item.clone());
        }
        for stream in closed {
            rows.remove(stream);
        }
        Ok(())
    }

    async fn list(
        &self,
        kind: WorkKind,
        touched_before: Option<OffsetDateTime>,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<OpenItem>, StoreError> {
        let rows = self.lock()?;
        let range = match after {
            Some(a) => rows
                .range::<StreamId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => rows.range::<StreamId, _>(..),
        };
        Ok(range
            .map(|(_, item)| item)
            .filter(|i| i.kind == kind && touched_before.is_none_or(|t| i.touched_at <= t))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn count(&self, kind: WorkKind) -> Result<u64, StoreError> {
        Ok(self.lock()?.values().filter(|i| i.kind == kind).count() as u64)
    }

    async fn clear(&self) -> Result<(), StoreError> {
        self.lock()?.clear();
        Ok(())
    }
}
