//! In-memory store: the reference implementation of the storage ports, for
//! tests and for embedding without persistence. One mutex serialises
//! writers, so positions commit in order and `read_all` can never skip.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    AppendOutcome, AppendRequest, CheckpointStore, EventStore, ExpectedVersion,
    IdempotencyCompletion, IdempotencyRecord, IdempotencyStore, IdempotencyWrite, Position,
    RecordedEvent, StoreError, StreamId, Version,
};

#[derive(Default)]
struct Inner {
    events: Vec<RecordedEvent>,
    streams: BTreeMap<StreamId, (String, Vec<usize>)>,
    by_id: HashMap<Uuid, usize>,
    idempotency: HashMap<(String, String), IdempotencyRecord>,
    checkpoints: HashMap<String, Position>,
}

/// An in-memory event, idempotency and checkpoint store.
#[derive(Default)]
pub struct InMemoryStore {
    inner: Mutex<Inner>,
}

impl InMemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("in-memory store mutex poisoned".into()))
    }
}

fn same_event(stored: &RecordedEvent, new: &super::NewEvent, stream: &StreamId) -> bool {
    stored.stream_id == *stream
        && stored.event_type == new.event_type
        && stored.schema_version == new.schema_version
        && json_eq(stored.payload.get(), new.payload.get())
}

/// Semantic JSON equality (key order and whitespace do not matter), so that
/// stores that normalise JSON (jsonb) agree with those that keep the text.
pub(crate) fn json_eq(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[async_trait]
impl EventStore for InMemoryStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::Invalid("append of an empty batch".into()));
        }
        let mut inner = self.lock()?;

        // Idempotent re-append: every id already stored, same content.
        let known: Vec<Option<usize>> = request
            .events
            .iter()
            .map(|e| inner.by_id.get(&e.event_id).copied())
            .collect();
        if known.iter().any(Option::is_some) {
            for (event, idx) in request.events.iter().zip(&known) {
                match idx {
                    Some(i) if same_event(&inner.events[*i], event, &request.stream_id) => {}
                    _ => {
                        return Err(StoreError::EventIdReused {
                            event_id: event.event_id,
                        });
                    }
                }
            }
            let first = &inner.events[known[0].unwrap_or_default()];
            let last = &inner.events[known[known.len() - 1].unwrap_or_default()];
            return Ok(AppendOutcome {
                version: last.version,
                first_position: first.global_position,
                last_position: last.global_position,
                already_stored: true,
            });
        }

        let actual = inner
            .streams
            .get(&request.stream_id)
            .map(|(_, idx)| Version(idx.len() as u64))
            .unwrap_or(Version::NONE);
        let ok = match request.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == Version::NONE,
            ExpectedVersion::Exact(v) => actual == v,
        };
        if !ok {
            return Err(StoreError::Conflict {
                stream: request.stream_id,
                expected: request.expected,
                actual,
            });
        }
        if let Some(IdempotencyWrite::Begin(rec)) = &request.idempotency {
            let k = (rec.scope.clone(), rec.key.clone());
            if inner.idempotency.contains_key(&k) {
                return Err(StoreError::IdempotencyKeyTaken {
                    scope: k.0,
                    key: k.1,
                });
            }
        }

        let mut version = actual;
        let first_position = Position(inner.events.len() as u64 + 1);
        for event in request.events {
            version = version.next();
            let idx = inner.events.len();
            let recorded = RecordedEvent {
                global_position: Position(idx as u64 + 1),
                stream_id: request.stream_id.clone(),
                stream_type: request.stream_type.clone(),
                version,
                event_id: event.event_id,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.payload,
                metadata: event.metadata,
                recorded_at: event.recorded_at,
            };
            inner.by_id.insert(recorded.event_id, idx);
            inner.events.push(recorded);
            inner
                .streams
                .entry(request.stream_id.clone())
                .or_insert_with(|| (request.stream_type.clone(), Vec::new()))
                .1
                .push(idx);
        }
        match request.idempotency {
            Some(IdempotencyWrite::Begin(rec)) => {
                inner
                    .idempotency
                    .insert((rec.scope.clone(), rec.key.clone()), rec);
            }
            Some(IdempotencyWrite::Complete(c)) => {
                complete(&mut inner, c);
            }
            Some(IdempotencyWrite::Release { scope, key }) => {
                let k = (scope, key);
                if inner
                    .idempotency
                    .get(&k)
                    .is_some_and(|r| r.response.is_none())
                {
                    inner.idempotency.remove(&k);
                }
            }
            None => {}
        }
        Ok(AppendOutcome {
            version,
            first_position,
            last_position: Position(inner.events.len() as u64),
            already_stored: false,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock()?;
        let Some((_, idx)) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from.0.saturating_sub(1) as usize;
        Ok(idx
            .iter()
            .skip(skip)
            .take(limit)
            .map(|&i| inner.events[i].clone())
            .collect())
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock()?;
        let start = usize::try_from(after.0).unwrap_or(usize::MAX);
        Ok(inner
            .events
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .streams
            .get(stream)
            .map(|(_, idx)| Version(idx.len() as u64))
            .unwrap_or(Version::NONE))
    }

    async fn list_streams(
        &self,
        stream_type: &str,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, Version)>, StoreError> {
        let inner = self.lock()?;
        let iter: Box<dyn Iterator<Item = (&StreamId, &(String, Vec<usize>))>> =
            match after {
                Some(a) => Box::new(inner.streams.range::<StreamId, _>((
                    std::ops::Bound::Excluded(a),
                    std::ops::Bound::Unbounded,
                ))),
                None => Box::new(inner.streams.iter()),
            };
        Ok(iter
            .filter(|(_, (t, _))| t == stream_type)
            .take(limit)
            .map(|(id, (_, idx))| (id.clone(), Version(idx.len() as u64)))
            .collect())
    }
}

#[async_trait]
impl IdempotencyStore for InMemoryStore {
    async fn get_idempotency(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .idempotency
            .get(&(scope.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn put_idempotency(&self, record: IdempotencyRecord) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let k = (record.scope.clone(), record.key.clone());
        if inner.idempotency.contains_key(&k) {
            return Err(StoreError::IdempotencyKeyTaken {
                scope: k.0,
                key: k.1,
            });
        }
        inner.idempotency.insert(k, record);
        Ok(())
    }

    async fn complete_idempotency(
        &self,
        completion: IdempotencyCompletion,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        Ok(complete(&mut inner, completion))
    }

    async fn release_idempotency(&self, scope: &str, key: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        let k = (scope.to_owned(), key.to_owned());
        match inner.idempotency.get(&k) {
            Some(rec) if rec.response.is_none() => {
                inner.idempotency.remove(&k);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Stores the response of an in-progress record; `false` when the record
/// is missing or already completed.
fn complete(inner: &mut Inner, c: IdempotencyCompletion) -> bool {
    match inner.idempotency.get_mut(&(c.scope, c.key)) {
        Some(rec) if rec.response.is_none() => {
            rec.response = Some(c.response);
            true
        }
        _ => false,
    }
}

#[async_trait]
impl CheckpointStore for InMemoryStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        Ok(self.lock()?.checkpoints.get(name).copied())
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        self.lock()?.checkpoints.insert(name.to_owned(), position);
        Ok(())
    }
}
