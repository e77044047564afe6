//! Conformance suite for the storage ports (feature `testkit`).
//!
//! Every store adapter runs these cases unchanged, so that the engine can
//! rely on the promises documented in [`super`] whatever the backend. Each
//! case is a plain `async fn` that takes a fresh, **empty** store behind an
//! `Arc` and panics (with a message naming the broken promise) when the store
//! misbehaves.
//!
//! Two ways to run them:
//!
//! * [`store_conformance_tests!`](crate::store_conformance_tests) expands to
//!   one `#[tokio::test]` per case (so failures are named), each calling an
//!   async factory that returns `Option<impl Fixture>` (`None` = skip, e.g.
//!   the database is unreachable):
//!
//!   ```ignore
//!   async fn fixture() -> Option<std::sync::Arc<InMemoryStore>> {
//!       Some(std::sync::Arc::new(InMemoryStore::new()))
//!   }
//!   payorch_engine::store_conformance_tests!(fixture);
//!   ```
//!
//! * [`run_all`] runs every case in sequence with a fresh fixture each.
//!
//! The calling crate needs `tokio` (features `macros`, `rt-multi-thread`) as
//! a dev-dependency for the macro.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AppendOutcome, AppendRequest, CheckpointStore, EventMetadata, EventStore, ExpectedVersion,
    IdempotencyCompletion, IdempotencyRecord, IdempotencyStore, IdempotencyWrite, NewEvent,
    Position, RecordedEvent, StoreError, StreamId, Version,
};

/// A store that implements all three storage ports.
pub trait TestStore: EventStore + IdempotencyStore + CheckpointStore + 'static {}
impl<T: EventStore + IdempotencyStore + CheckpointStore + 'static> TestStore for T {}

/// What a factory hands to a case: an empty store plus whatever must be
/// cleaned up after the case (a Postgres schema, a temp directory).
pub trait Fixture: Send + 'static {
    type Store: TestStore;
    /// The store under test (must be empty when the fixture is made).
    fn store(&self) -> Arc<Self::Store>;
    /// Called after a case that passed (not after a panic).
    fn teardown(self) -> impl Future<Output = ()> + Send;
}

impl<S: TestStore> Fixture for Arc<S> {
    type Store = S;
    fn store(&self) -> Arc<S> {
        Arc::clone(self)
    }
    async fn teardown(self) {}
}

/// How long a case waits for a condition (e.g. a tailer catching up)
/// before it fails. Generous: CI machines are slow and shared.
const DEADLINE: Duration = Duration::from_secs(60);

/// A fixed, microsecond-precision instant (what Postgres keeps) so that
/// every store round-trips `recorded_at` exactly.
pub fn test_instant(offset_ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        + time::Duration::milliseconds(offset_ms)
}

/// A new event with a fresh id and a small payload carrying `n`.
pub fn new_event(n: u64) -> NewEvent {
    let payload = format!(r#"{{"n":{n},"note":"conformance","nested":{{"a":[1,2,3],"b":null}}}}"#);
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: format!("test_event_{}", n % 3),
        schema_version: 1 + (n % 2) as u32,
        payload: raw(&payload),
        metadata: EventMetadata {
            correlation_id: Some(Uuid::now_v7()),
            causation_id: None,
            merchant_id: Some("m-1".into()),
            actor: if n.is_multiple_of(2) {
                Some("tester".into())
            } else {
                None
            },
        },
        recorded_at: test_instant(n as i64),
    }
}

/// `n` new events numbered `start..start+n`.
pub fn new_events(start: u64, n: u64) -> Vec<NewEvent> {
    (start..start + n).map(new_event).collect()
}

fn raw(json: &str) -> Box<RawValue> {
    match RawValue::from_string(json.to_owned()) {
        Ok(v) => v,
        Err(e) => panic!("testkit built invalid JSON {json:?}: {e}"),
    }
}

/// A unique stream id with a readable prefix.
pub fn stream(prefix: &str) -> StreamId {
    StreamId::new(format!("{prefix}-{}", Uuid::now_v7()))
}

/// An append request for stream type `order` without idempotency record.
pub fn request(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendRequest {
    AppendRequest {
        stream_id: stream.clone(),
        stream_type: "order".into(),
        expected,
        events,
        idempotency: None,
    }
}

/// An idempotency record for `(scope, key)`.
pub fn idempotency_record(scope: &str, key: &str, stream: Option<&StreamId>) -> IdempotencyRecord {
    IdempotencyRecord {
        scope: scope.into(),
        key: key.into(),
        fingerprint: format!("fp-{key}"),
        response: Some(raw(
            r#"{"status":201,"body":{"id":"ord-1","amount":{"minor":1000,"currency":"EUR"}}}"#,
        )),
        stream_id: stream.cloned(),
        created_at: test_instant(42),
    }
}

fn json_value(raw: &RawValue) -> serde_json::Value {
    match serde_json::from_str(raw.get()) {
        Ok(v) => v,
        Err(e) => panic!("store returned invalid JSON {:?}: {e}", raw.get()),
    }
}

/// Asserts that `got` is `sent` as stored at `version` of `stream`.
fn assert_same_event(got: &RecordedEvent, sent: &NewEvent, stream: &StreamId, version: Version) {
    assert_eq!(got.event_id, sent.event_id, "event id round trip");
    assert_eq!(&got.stream_id, stream, "stream id round trip");
    assert_eq!(got.version, version, "version of event {}", sent.event_id);
    assert_eq!(got.event_type, sent.event_type, "event type round trip");
    assert_eq!(
        got.schema_version, sent.schema_version,
        "schema version round trip"
    );
    assert_eq!(
        json_value(&got.payload),
        json_value(&sent.payload),
        "payload round trip (semantic JSON equality)"
    );
    assert_eq!(got.metadata, sent.metadata, "metadata round trip");
    assert_eq!(got.recorded_at, sent.recorded_at, "recorded_at round trip");
}

async fn must_append<S: TestStore + ?Sized>(store: &S, request: AppendRequest) -> AppendOutcome {
    let stream = request.stream_id.clone();
    match store.append(request).await {
        Ok(o) => o,
        Err(e) => panic!("append to {stream} failed: {e}"),
    }
}

async fn must_read_stream<S: TestStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    from: Version,
    limit: usize,
) -> Vec<RecordedEvent> {
    match store.read_stream(stream, from, limit).await {
        Ok(v) => v,
        Err(e) => panic!("read_stream {stream} failed: {e}"),
    }
}

async fn must_read_all<S: TestStore + ?Sized>(
    store: &S,
    after: Position,
    limit: usize,
) -> Vec<RecordedEvent> {
    match store.read_all(after, limit).await {
        Ok(v) => v,
        Err(e) => panic!("read_all after {after} failed: {e}"),
    }
}

/// Reads the whole store from the start, in pages of `page`, expecting
/// `expected` events. A store may hold back its tail while transactions it
/// cannot see yet are open (e.g. other tests' writers on the same
/// database: see `EventStore::read_all`), so an empty page before
/// `expected` events is retried until the deadline; after that, an empty
/// page ends the read (more events than expected fail the caller's check).
async fn read_everything<S: TestStore + ?Sized>(
    store: &S,
    page: usize,
    expected: usize,
) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + DEADLINE;
    let mut out: Vec<RecordedEvent> = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = must_read_all(store, after, page).await;
        if batch.is_empty() {
            if out.len() >= expected {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "read_all returned {} of {expected} committed events before the deadline",
                out.len()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        assert!(batch.len() <= page, "read_all returned more than its limit");
        after = batch[batch.len() - 1].global_position;
        out.extend(batch);
    }
}

/// `read_all(after, limit)` once at least `expected` events are past the
/// store's horizon (see [`read_everything`]).
async fn read_all_settled<S: TestStore + ?Sized>(
    store: &S,
    after: Position,
    limit: usize,
    expected: usize,
) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let batch = must_read_all(store, after, limit).await;
        if batch.len() >= expected {
            return batch;
        }
        assert!(
            Instant::now() < deadline,
            "read_all returned {} of {expected} committed events before the deadline",
            batch.len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn assert_positions_increase(events: &[RecordedEvent]) {
    for w in events.windows(2) {
        assert!(
            w[0].global_position < w[1].global_position,
            "read_all positions must strictly increase: {} then {}",
            w[0].global_position,
            w[1].global_position
        );
    }
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

/// Appending a batch and reading it back gives the same events, versions
/// 1..n, consecutive positions within the batch, and a correct outcome.
pub async fn append_read_round_trip<S: TestStore>(store: Arc<S>) {
    let s = stream("order");
    let events = new_events(0, 3);
    let outcome = must_append(
        &*store,
        request(&s, ExpectedVersion::NoStream, events.clone()),
    )
    .await;
    assert_eq!(outcome.version, Version(3));
    assert!(!outcome.already_stored);
    assert!(outcome.first_position >= Position(1));
    assert_eq!(outcome.last_position.0, outcome.first_position.0 + 2);

    let read = must_read_stream(&*store, &s, Version(1), 100).await;
    assert_eq!(read.len(), 3);
    for (i, (got, sent)) in read.iter().zip(&events).enumerate() {
        assert_same_event(got, sent, &s, Version(i as u64 + 1));
        assert_eq!(got.stream_type, "order");
        assert_eq!(got.global_position.0, outcome.first_position.0 + i as u64);
    }
    assert_eq!(store.stream_version(&s).await.ok(), Some(Version(3)));

    let all = read_all_settled(&*store, Position::START, 100, 3).await;
    assert_eq!(all.len(), 3, "read_all sees the batch");
    for (got, sent) in all.iter().zip(&events) {
        assert_eq!(got.event_id, sent.event_id);
    }
    // An unknown stream reads as empty at version 0.
    let unknown = stream("nothing");
    assert!(
        must_read_stream(&*store, &unknown, Version(1), 10)
            .await
            .is_empty()
    );
    assert_eq!(
        store.stream_version(&unknown).await.ok(),
        Some(Version::NONE)
    );
}

fn assert_conflict(
    result: Result<AppendOutcome, StoreError>,
    s: &StreamId,
    expected: ExpectedVersion,
    actual: Version,
) {
    match result {
        Err(StoreError::Conflict {
            stream,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(&stream, s, "conflict names the stream");
            assert_eq!(e, expected, "conflict carries the expected version");
            assert_eq!(a, actual, "conflict carries the actual version");
        }
        other => panic!("expected Conflict(expected {expected:?}, actual {actual}), got {other:?}"),
    }
}

/// `Any`, `NoStream` and `Exact` are checked; a mismatch is a typed
/// `Conflict` with expected and actual, and writes nothing.
pub async fn expected_version_checks<S: TestStore>(store: Arc<S>) {
    let s = stream("order");
    // Exact(0) == NoStream on an empty stream.
    let o = must_append(
        &*store,
        request(&s, ExpectedVersion::Exact(Version(0)), new_events(0, 1)),
    )
    .await;
    assert_eq!(o.version, Version(1));

    let r = store
        .append(request(&s, ExpectedVersion::NoStream, new_events(1, 1)))
        .await;
    assert_conflict(r, &s, ExpectedVersion::NoStream, Version(1));

    let r = store
        .append(request(
            &s,
            ExpectedVersion::Exact(Version(0)),
            new_events(1, 1),
        ))
        .await;
    assert_conflict(r, &s, ExpectedVersion::Exact(Version(0)), Version(1));

    let r = store
        .append(request(
            &s,
            ExpectedVersion::Exact(Version(5)),
            new_events(1, 2),
        ))
        .await;
    assert_conflict(r, &s, ExpectedVersion::Exact(Version(5)), Version(1));

    let o = must_append(
        &*store,
        request(&s, ExpectedVersion::Exact(Version(1)), new_events(1, 2)),
    )
    .await;
    assert_eq!(o.version, Version(3));
    let o = must_append(&*store, request(&s, ExpectedVersion::Any, new_events(3, 1))).await;
    assert_eq!(o.version, Version(4));

    // Any on a new stream starts at 1.
    let t = stream("order");
    let o = must_append(&*store, request(&t, ExpectedVersion::Any, new_events(0, 2))).await;
    assert_eq!(o.version, Version(2));

    // Failed appends wrote nothing.
    let read = must_read_stream(&*store, &s, Version(1), 100).await;
    assert_eq!(read.len(), 4, "conflicting appends must not write");
    let versions: Vec<u64> = read.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    assert_eq!(read_everything(&*store, 100, 6).await.len(), 6);
}

/// An empty batch is `Invalid` and writes nothing.
pub async fn empty_batch_is_invalid<S: TestStore>(store: Arc<S>) {
    let s = stream("order");
    let r = store
        .append(request(&s, ExpectedVersion::Any, Vec::new()))
        .await;
    assert!(
        matches!(r, Err(StoreError::Invalid(_))),
        "empty batch: got {r:?}"
    );
    assert_eq!(store.stream_version(&s).await.ok(), Some(Version::NONE));
    assert!(must_read_all(&*store, Position::START, 10).await.is_empty());
}

/// Re-appending stored event ids returns the stored outcome and duplicates
/// nothing (even when the expected version would now conflict); the same
/// id with other content, or a mix of stored and new ids, is
/// `EventIdReused`.
pub async fn idempotent_reappend_and_event_id_reuse<S: TestStore>(store: Arc<S>) {
    let s = stream("order");
    must_append(
        &*store,
        request(&s, ExpectedVersion::NoStream, new_events(0, 1)),
    )
    .await;
    let batch = new_events(1, 2);
    let first = must_append(
        &*store,
        request(&s, ExpectedVersion::Exact(Version(1)), batch.clone()),
    )
    .await;
    assert!(!first.already_stored);
    must_append(
        &*store,
        request(&s, ExpectedVersion::Exact(Version(3)), new_events(3, 1)),
    )
    .await;

    let again = must_append(
        &*store,
        request(&s, ExpectedVersion::Exact(Version(1)), batch.clone()),
    )
    .await;
    assert!(again.already_stored, "re-append must report already_stored");
    assert_eq!(
        again.version, first.version,
        "re-append returns the stored version"
    );
    assert_eq!(again.first_position, first.first_position);
    assert_eq!(again.last_position, first.last_position);
    assert_eq!(
        must_read_stream(&*store, &s, Version(1), 100).await.len(),
        4,
        "no duplicates"
    );

    // Same id, different payload.
    let mut changed = batch[0].clone();
    changed.payload = raw(r#"{"n":999}"#);
    let r = store
        .append(request(&s, ExpectedVersion::Any, vec![changed.clone()]))
        .await;
    match r {
        Err(StoreError::EventIdReused { event_id }) => assert_eq!(event_id, changed.event_id),
        other => panic!("changed payload: expected EventIdReused, got {other:?}"),
    }
    // Same id, other stream.
    let other = stream("order");
    let r = store
        .append(request(
            &other,
            ExpectedVersion::Any,
            vec![batch[0].clone()],
        ))
        .await;
    assert!(
        matches!(r, Err(StoreError::EventIdReused { .. })),
        "other stream: got {r:?}"
    );
    // Stored id beside a new one.
    let mixed = vec![batch[1].clone(), new_event(50)];
    let r = store.append(request(&s, ExpectedVersion::Any, mixed)).await;
    assert!(
        matches!(r, Err(StoreError::EventIdReused { .. })),
        "mixed batch: got {r:?}"
    );

    assert_eq!(
        must_read_stream(&*store, &s, Version(1), 100).await.len(),
        4
    );
    assert_eq!(store.stream_version(&other).await.ok(), Some(Version::NONE));
    assert_eq!(read_everything(&*store, 100, 4).await.len(), 4);
}

/// `read_stream` honours `from` and `limit` and returns version order.
pub async fn read_stream_from_and_limit<S: TestStore>(store: Arc<S>) {
    let s = stream("order");
    let other = stream("order");
    let mut expected = ExpectedVersion::NoStream;
    for i in 0..5u64 {
        // Interleave another stream so positions and versions differ.
        must_append(
            &*store,
            request(&other, ExpectedVersion::Any, new_events(100 + i, 1)),
        )
        .await;
        let o = must_append(&*store, request(&s, expected, new_events(i * 2, 2))).await;
        expected = ExpectedVersion::Exact(o.version);
    }
    let all = must_read_stream(&*store, &s, Version(1), 1000).await;
    assert_eq!(all.len(), 10);
    let versions: Vec<u64> = all.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
    assert!(all.iter().all(|e| e.stream_id == s));

    let mid = must_read_stream(&*store, &s, Version(4), 3).await;
    let versions: Vec<u64> = mid.iter().map(|e| e.version.0).collect();
    assert_eq!(versions, vec![4, 5, 6]);
    let tail = must_read_stream(&*store, &s, Version(9), 100).await;
    assert_eq!(
        tail.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        vec![9, 10]
    );
    assert!(
        must_read_stream(&*store, &s, Version(11), 100)
            .await
            .is_empty()
    );
    // Version(0) reads from the start.
    assert_eq!(must_read_stream(&*store, &s, Version(0), 2).await.len(), 2);
    assert!(
        must_read_stream(&*store, &s, Version(1), 0)
            .await
            .is_empty()
    );
}

/// `read_all` returns events in position order, pages by `after` and
/// `limit`, and an `after` past the end is empty.
pub async fn read_all_order_and_paging<S: TestStore>(store: Arc<S>) {
    let streams: Vec<StreamId> = (0..3).map(|_| stream("order")).collect();
    let mut sent = Vec::new();
    for round in 0..4u64 {
        for s in &streams {
            let events = new_events(round * 10, 2);
            sent.extend(events.iter().map(|e| e.event_id));
            must_append(&*store, request(s, ExpectedVersion::Any, events)).await;
        }
    }
    let all = read_all_settled(&*store, Position::START, 1000, 24).await;
    assert_eq!(all.len(), 24);
    assert_positions_increase(&all);
    let ids: Vec<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, sent, "read_all returns commit order");

    for page in [1usize, 5, 7, 24, 100] {
        let paged = read_everything(&*store, page, 24).await;
        let paged_ids: Vec<Uuid> = paged.iter().map(|e| e.event_id).collect();
        assert_eq!(paged_ids, sent, "paging by {page}");
    }
    let from_mid = must_read_all(&*store, all[9].global_position, 5).await;
    assert_eq!(
        from_mid.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        sent[10..15].to_vec()
    );
    let last = all[all.len() - 1].global_position;
    assert!(must_read_all(&*store, last, 10).await.is_empty());
    assert!(
        must_read_all(&*store, Position(last.0 + 1000), 10)
            .await
            .is_empty()
    );
    assert!(must_read_all(&*store, Position::START, 0).await.is_empty());
}

/// `writers` tasks append `per_writer` single-event batches to distinct
/// streams while a tailer follows `read_all` from its checkpoint: the
/// tailer sees every event exactly once, in strictly increasing position
/// order, and a final full read agrees.
pub async fn read_all_gap_free_with_concurrent_writers<S: TestStore>(store: Arc<S>) {
    gap_free_with_writers(store, 8, 25).await;
}

/// The body of [`read_all_gap_free_with_concurrent_writers`] with its sizes
/// as parameters, for adapters' heavier runs.
pub async fn gap_free_with_writers<S: TestStore>(store: Arc<S>, writers: usize, per_writer: usize) {
    let total = writers * per_writer;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tailer = {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::with_capacity(total);
            let mut checkpoint = Position::START;
            let deadline = Instant::now() + DEADLINE;
            loop {
                let writers_done = done.load(std::sync::atomic::Ordering::SeqCst);
                let batch = must_read_all(&*store, checkpoint, 7).await;
                if let Some(last) = batch.last() {
                    checkpoint = last.global_position;
                }
                let empty = batch.is_empty();
                seen.extend(batch);
                if writers_done && empty && seen.len() >= total {
                    // Every writer was acknowledged and a read after that
                    // came back empty. (A store may hold back its tail
                    // while unrelated transactions are open, so an empty
                    // read alone does not end the wait.)
                    return seen;
                }
                assert!(
                    Instant::now() < deadline,
                    "tailer saw {} of {total} events before the deadline",
                    seen.len()
                );
                if empty {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let mut handles = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let s = stream(&format!("writer{w}"));
            let mut ids = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let e = new_event(i as u64);
                ids.push(e.event_id);
                let expected = ExpectedVersion::Exact(Version(i as u64));
                must_append(&*store, request(&s, expected, vec![e])).await;
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for h in handles {
        match h.await {
            Ok(ids) => written.extend(ids),
            Err(e) => panic!("writer task failed: {e}"),
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = match tailer.await {
        Ok(s) => s,
        Err(e) => panic!("tailer task failed: {e}"),
    };
    assert_eq!(seen.len(), total, "tailer saw each event exactly once");
    assert_positions_increase(&seen);
    let seen_ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(seen_ids.len(), total, "no duplicates");
    assert_eq!(
        seen_ids, written,
        "tailer saw exactly the acknowledged events"
    );
    let full = read_everything(&*store, 1000, total).await;
    let full_ids: Vec<Uuid> = full.iter().map(|e| e.event_id).collect();
    let tail_ids: Vec<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(
        full_ids, tail_ids,
        "the tail equals a full read after the fact"
    );
}

/// `writers` tasks race to append version 1, 2, ... of one stream with
/// `Exact` expectations, retrying on `Conflict`: every version has exactly
/// one winner, losers get typed conflicts, and the stream is contiguous.
pub async fn concurrent_writers_one_stream<S: TestStore>(store: Arc<S>) {
    one_stream_race(store, 8, 4).await;
}

/// The body of [`concurrent_writers_one_stream`] with its sizes as
/// parameters: `writers` writers each win `wins_each` appends.
pub async fn one_stream_race<S: TestStore>(store: Arc<S>, writers: usize, wins_each: usize) {
    let s = stream("contended");
    let mut handles = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            let mut conflicts = 0usize;
            let deadline = Instant::now() + DEADLINE;
            while wins.len() < wins_each {
                assert!(Instant::now() < deadline, "writer {w} starved");
                let current = match store.stream_version(&s).await {
                    Ok(v) => v,
                    Err(e) => panic!("stream_version: {e}"),
                };
                let e = new_event(w as u64);
                let id = e.event_id;
                match store
                    .append(request(&s, ExpectedVersion::Exact(current), vec![e]))
                    .await
                {
                    Ok(o) => {
                        assert_eq!(o.version, current.next());
                        wins.push((o.version, id));
                    }
                    Err(StoreError::Conflict {
                        expected, actual, ..
                    }) => {
                        assert_eq!(expected, ExpectedVersion::Exact(current));
                        assert!(
                            actual > current,
                            "conflict actual {actual} must be past {current}"
                        );
                        conflicts += 1;
                    }
                    Err(e) => panic!("writer {w}: unexpected error {e}"),
                }
            }
            (wins, conflicts)
        }));
    }
    let mut by_version = std::collections::BTreeMap::new();
    for h in handles {
        let (wins, _conflicts) = match h.await {
            Ok(x) => x,
            Err(e) => panic!("writer task failed: {e}"),
        };
        for (v, id) in wins {
            assert!(
                by_version.insert(v, id).is_none(),
                "two winners for version {v}"
            );
        }
    }
    let total = writers * wins_each;
    assert_eq!(by_version.len(), total);
    let read = must_read_stream(&*store, &s, Version(1), total + 10).await;
    assert_eq!(read.len(), total, "stream holds exactly the winners");
    for (i, e) in read.iter().enumerate() {
        assert_eq!(e.version, Version(i as u64 + 1));
        assert_eq!(
            by_version.get(&e.version),
            Some(&e.event_id),
            "winner of {}",
            e.version
        );
    }
}

/// `list_streams` filters by type, orders by id, pages with `after` and
/// reports current versions.
pub async fn list_streams_by_type<S: TestStore>(store: Arc<S>) {
    let mut orders: Vec<StreamId> = (0..5)
        .map(|i| StreamId::new(format!("order-{i:02}")))
        .collect();
    orders.sort();
    for (i, s) in orders.iter().enumerate() {
        must_append(
            &*store,
            request(s, ExpectedVersion::NoStream, new_events(0, i as u64 + 1)),
        )
        .await;
    }
    let session = StreamId::new("checkout-01");
    let mut req = request(&session, ExpectedVersion::NoStream, new_events(0, 1));
    req.stream_type = "checkout_session".into();
    must_append(&*store, req).await;

    let listed = match store.list_streams("order", None, 100).await {
        Ok(v) => v,
        Err(e) => panic!("list_streams: {e}"),
    };
    let expected: Vec<(StreamId, Version)> = orders
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), Version(i as u64 + 1)))
        .collect();
    assert_eq!(listed, expected);
    let page = store.list_streams("order", Some(&orders[1]), 2).await.ok();
    assert_eq!(page, Some(expected[2..4].to_vec()));
    let sessions = store.list_streams("checkout_session", None, 10).await.ok();
    assert_eq!(sessions, Some(vec![(session, Version(1))]));
    let none = store
        .list_streams("recurring_agreement", None, 10)
        .await
        .ok();
    assert_eq!(none, Some(Vec::new()));
}

/// An idempotency record given to `append` is stored with the events; a
/// conflicting append stores neither; a taken key is
/// `IdempotencyKeyTaken` (and then the events are not stored either);
/// `put_idempotency` works alone.
pub async fn idempotency_records<S: TestStore>(store: Arc<S>) {
    let s = stream("order");
    assert!(matches!(store.get_idempotency("m-1", "k1").await, Ok(None)));

    let mut req = request(&s, ExpectedVersion::NoStream, new_events(0, 1));
    req.idempotency = Some(begin("m-1", "k1", Some(&s)));
    must_append(&*store, req).await;
    let rec = match store.get_idempotency("m-1", "k1").await {
        Ok(Some(r)) => r,
        other => panic!("record stored with the append: got {other:?}"),
    };
    assert_eq!(rec.fingerprint, "fp-k1");
    assert_eq!(rec.stream_id.as_ref(), Some(&s));
    assert_eq!(rec.created_at, test_instant(42));
    let sent = idempotency_record("m-1", "k1", Some(&s));
    assert_eq!(
        rec.response.as_deref().map(json_value),
        sent.response.as_deref().map(json_value)
    );
    // Other scope, same key: independent.
    assert!(matches!(store.get_idempotency("m-2", "k1").await, Ok(None)));

    // A conflicting append stores no record.
    let mut req = request(&s, ExpectedVersion::NoStream, new_events(1, 1));
    req.idempotency = Some(begin("m-1", "k2", Some(&s)));
    let r = store.append(req).await;
    assert!(matches!(r, Err(StoreError::Conflict { .. })), "got {r:?}");
    assert!(
        matches!(store.get_idempotency("m-1", "k2").await, Ok(None)),
        "a failed append must not store its idempotency record"
    );

    // A taken key fails the append atomically: no events either.
    let mut req = request(&s, ExpectedVersion::Exact(Version(1)), new_events(2, 2));
    req.idempotency = Some(begin("m-1", "k1", Some(&s)));
    match store.append(req).await {
        Err(StoreError::IdempotencyKeyTaken { scope, key }) => {
            assert_eq!((scope.as_str(), key.as_str()), ("m-1", "k1"));
        }
        other => panic!("taken key: expected IdempotencyKeyTaken, got {other:?}"),
    }
    assert_eq!(
        store.stream_version(&s).await.ok(),
        Some(Version(1)),
        "no events for a taken key"
    );

    // On its own.
    let alone = idempotency_record("m-2", "k1", None);
    if let Err(e) = store.put_idempotency(alone).await {
        panic!("put_idempotency: {e}");
    }
    match store.get_idempotency("m-2", "k1").await {
        Ok(Some(r)) => assert_eq!(r.stream_id, None),
        other => panic!("put then get: {other:?}"),
    }
    let r = store
        .put_idempotency(idempotency_record("m-2", "k1", None))
        .await;
    assert!(
        matches!(r, Err(StoreError::IdempotencyKeyTaken { .. })),
        "got {r:?}"
    );
    let r = store
        .put_idempotency(idempotency_record("m-1", "k1", None))
        .await;
    assert!(
        matches!(r, Err(StoreError::IdempotencyKeyTaken { .. })),
        "got {r:?}"
    );
}

/// An idempotency write that begins `idempotency_record(scope, key, stream)`.
pub fn begin(scope: &str, key: &str, stream: Option<&StreamId>) -> IdempotencyWrite {
    IdempotencyWrite::Begin(idempotency_record(scope, key, stream))
}

fn completion(scope: &str, key: &str, json: &str) -> IdempotencyCompletion {
    IdempotencyCompletion {
        scope: scope.into(),
        key: key.into(),
        response: raw(json),
    }
}

/// An in-progress record (no response) is begun with a command's first
/// events and completed with its outcome events, atomically: a conflicting
/// outcome append completes nothing; a completed record keeps its first
/// response (a second completion, with events or alone, changes nothing and
/// says so); completing alone works once.
pub async fn idempotency_begin_and_complete<S: TestStore>(store: Arc<S>) {
    let s = stream("order");
    let mut rec = idempotency_record("m-9", "k-run", Some(&s));
    rec.response = None;
    let mut req = request(&s, ExpectedVersion::NoStream, new_events(0, 1));
    req.idempotency = Some(IdempotencyWrite::Begin(rec));
    must_append(&*store, req).await;
    match store.get_idempotency("m-9", "k-run").await {
        Ok(Some(r)) => {
            assert!(!r.is_completed(), "begun, not completed: {r:?}");
            assert_eq!(r.stream_id.as_ref(), Some(&s));
        }
        other => panic!("begun record: {other:?}"),
    }

    // A conflicting outcome append neither writes nor completes.
    let mut req = request(&s, ExpectedVersion::Exact(Version(0)), new_events(1, 1));
    req.idempotency = Some(IdempotencyWrite::Complete(completion(
        "m-9",
        "k-run",
        r#"{"lost":true}"#,
    )));
    let r = store.append(req).await;
    assert!(matches!(r, Err(StoreError::Conflict { .. })), "got {r:?}");
    match store.get_idempotency("m-9", "k-run").await {
        Ok(Some(r)) => assert!(!r.is_completed(), "a failed append completed {r:?}"),
        other => panic!("{other:?}"),
    }

    // The outcome append completes it.
    let mut req = request(&s, ExpectedVersion::Exact(Version(1)), new_events(1, 2));
    req.idempotency = Some(IdempotencyWrite::Complete(completion(
        "m-9",
        "k-run",
        r#"{"status":"captured","version":3}"#,
    )));
    must_append(&*store, req).await;
    let first = serde_json::json!({"status": "captured", "version": 3});
    match store.get_idempotency("m-9", "k-run").await {
        Ok(Some(r)) => assert_eq!(r.response.as_deref().map(json_value), Some(first.clone())),
        other => panic!("{other:?}"),
    }

    // Completed records keep their first response, with events or alone.
    let mut req = request(&s, ExpectedVersion::Exact(Version(3)), new_events(3, 1));
    req.idempotency = Some(IdempotencyWrite::Complete(completion(
        "m-9",
        "k-run",
        r#"{"second":true}"#,
    )));
    must_append(&*store, req).await;
    let again = store
        .complete_idempotency(completion("m-9", "k-run", r#"{"third":true}"#))
        .await;
    assert!(matches!(again, Ok(false)), "got {again:?}");
    match store.get_idempotency("m-9", "k-run").await {
        Ok(Some(r)) => assert_eq!(r.response.as_deref().map(json_value), Some(first)),
        other => panic!("{other:?}"),
    }

    // Begun alone, completed alone, once.
    let mut alone = idempotency_record("m-9", "k-alone", None);
    alone.response = None;
    if let Err(e) = store.put_idempotency(alone).await {
        panic!("put_idempotency: {e}");
    }
    let done = store
        .complete_idempotency(completion("m-9", "k-alone", r#"{"n":1}"#))
        .await;
    assert!(matches!(done, Ok(true)), "got {done:?}");
    let twice = store
        .complete_idempotency(completion("m-9", "k-alone", r#"{"n":2}"#))
        .await;
    assert!(matches!(twice, Ok(false)), "got {twice:?}");
    match store.get_idempotency("m-9", "k-alone").await {
        Ok(Some(r)) => assert_eq!(
            r.response.as_deref().map(json_value),
            Some(serde_json::json!({"n": 1}))
        ),
        other => panic!("{other:?}"),
    }
    let missing = store
        .complete_idempotency(completion("m-9", "k-none", r#"{}"#))
        .await;
    assert!(matches!(missing, Ok(false)), "got {missing:?}");
}

/// An in-progress record is released (deleted) with the events of an
/// append ([`IdempotencyWrite::Release`]), atomically: a conflicting append
/// releases nothing; a completed record stands; the key can be begun again
/// afterwards.
pub async fn idempotency_release_with_events<S: TestStore>(store: Arc<S>) {
    let s = stream("order");
    let in_progress = || {
        let mut rec = idempotency_record("m-7", "k-rel", Some(&s));
        rec.response = None;
        IdempotencyWrite::Begin(rec)
    };
    let mut req = request(&s, ExpectedVersion::NoStream, new_events(0, 1));
    req.idempotency = Some(in_progress());
    must_append(&*store, req).await;
    let release = || IdempotencyWrite::Release {
        scope: "m-7".into(),
        key: "k-rel".into(),
    };

    // A conflicting append releases nothing.
    let mut req = request(&s, ExpectedVersion::Exact(Version(0)), new_events(1, 1));
    req.idempotency = Some(release());
    let r = store.append(req).await;
    assert!(matches!(r, Err(StoreError::Conflict { .. })), "got {r:?}");
    match store.get_idempotency("m-7", "k-rel").await {
        Ok(Some(r)) => assert!(!r.is_completed(), "still begun: {r:?}"),
        other => panic!("a failed append released the record: {other:?}"),
    }

    // The append releases it with its events.
    let mut req = request(&s, ExpectedVersion::Exact(Version(1)), new_events(1, 1));
    req.idempotency = Some(release());
    must_append(&*store, req).await;
    match store.get_idempotency("m-7", "k-rel").await {
        Ok(None) => {}
        other => panic!("released record still there: {other:?}"),
    }
    // The key executes again.
    let mut req = request(&s, ExpectedVersion::Exact(Version(2)), new_events(2, 1));
    req.idempotency = Some(in_progress());
    must_append(&*store, req).await;

    // A completed record stands; the events are written anyway.
    let mut req = request(&s, ExpectedVersion::Exact(Version(3)), new_events(3, 1));
    req.idempotency = Some(IdempotencyWrite::Complete(completion(
        "m-7",
        "k-rel",
        r#"{"done":true}"#,
    )));
    must_append(&*store, req).await;
    let mut req = request(&s, ExpectedVersion::Exact(Version(4)), new_events(4, 1));
    req.idempotency = Some(release());
    must_append(&*store, req).await;
    match store.get_idempotency("m-7", "k-rel").await {
        Ok(Some(r)) => assert_eq!(
            r.response.as_deref().map(json_value),
            Some(serde_json::json!({"done": true}))
        ),
        other => panic!("a completed record was released: {other:?}"),
    }
    match store.stream_version(&s).await {
        Ok(v) => assert_eq!(v, Version(5)),
        Err(e) => panic!("stream_version: {e}"),
    }
}

/// Checkpoints: unknown is `None`, save then load, overwrite (also
/// backwards, for rebuilds), names are independent.
pub async fn checkpoints<S: TestStore>(store: Arc<S>) {
    assert!(matches!(store.load_checkpoint("relay").await, Ok(None)));
    for (name, pos) in [("relay", 5u64), ("projection.orders", 7)] {
        if let Err(e) = store.save_checkpoint(name, Position(pos)).await {
            panic!("save_checkpoint: {e}");
        }
    }
    assert_eq!(
        store.load_checkpoint("relay").await.ok(),
        Some(Some(Position(5)))
    );
    assert_eq!(
        store.load_checkpoint("projection.orders").await.ok(),
        Some(Some(Position(7)))
    );
    for pos in [9u64, 3] {
        if let Err(e) = store.save_checkpoint("relay", Position(pos)).await {
            panic!("save_checkpoint: {e}");
        }
        assert_eq!(
            store.load_checkpoint("relay").await.ok(),
            Some(Some(Position(pos)))
        );
    }
    assert_eq!(
        store.load_checkpoint("projection.orders").await.ok(),
        Some(Some(Position(7)))
    );
}

/// Runs every case in sequence, each on a fresh fixture from `factory`.
/// Returns `false` (after printing a SKIP line) when the factory returned
/// `None`.
pub async fn run_all<F, Fut, X>(factory: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<X>>,
    X: Fixture,
{
    macro_rules! case {
        ($name:ident) => {{
            let Some(fx) = factory().await else {
                eprintln!("SKIP: store conformance suite: no store available");
                return false;
            };
            $name(fx.store()).await;
            fx.teardown().await;
        }};
    }
    case!(append_read_round_trip);
    case!(expected_version_checks);
    case!(empty_batch_is_invalid);
    case!(idempotent_reappend_and_event_id_reuse);
    case!(read_stream_from_and_limit);
    case!(read_all_order_and_paging);
    case!(read_all_gap_free_with_concurrent_writers);
    case!(concurrent_writers_one_stream);
    case!(list_streams_by_type);
    case!(idempotency_records);
    case!(idempotency_begin_and_complete);
    case!(idempotency_release_with_events);
    case!(checkpoints);
    true
}

/// Expands to one `#[tokio::test]` per conformance case, in a module
/// `conformance`. The argument is the name of an `async fn() ->
/// Option<impl Fixture>` visible from the calling module; `None` skips.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:ident) => {
        mod conformance {
            $crate::store_conformance_tests!(@cases $factory;
                append_read_round_trip,
                expected_version_checks,
                empty_batch_is_invalid,
                idempotent_reappend_and_event_id_reuse,
                read_stream_from_and_limit,
                read_all_order_and_paging,
                read_all_gap_free_with_concurrent_writers,
                concurrent_writers_one_stream,
                list_streams_by_type,
                idempotency_records,
                idempotency_begin_and_complete,
                idempotency_release_with_events,
                checkpoints,
            );
        }
    };
    (@cases $factory:ident; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                use $crate::store::testkit::Fixture as _;
                let Some(fx) = super::$factory().await else {
                    eprintln!(concat!("SKIP: conformance case ", stringify!($case), ": no store"));
                    return;
                };
                $crate::store::testkit::$case(fx.store()).await;
                fx.teardown().await;
            }
        )*
    };
}
