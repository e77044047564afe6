//! The open-work index: the in-memory index passes the conformance kit; the
//! projector keeps it equal to a rebuild whatever the batch size; a
//! reconciler pass with nothing open reads no stream and lists none.
//! (`cargo test -p payorch-engine --features testkit --test open_work`)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use payorch_engine::gateway::fake::{FakeGateway, Op, Step};
use payorch_engine::open_work::{
    InMemoryOpenWorkIndex, OpenItem, OpenWorkIndex, OpenWorkProjector, WorkKind,
};
use payorch_engine::orchestrator::{
    CommandContext, Engine, EngineConfig, PlacePaymentRequest, order_stream,
};
use payorch_engine::order::Phase;
use payorch_engine::reconciler::{Reconciler, ReconcilerConfig};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{
    AppendOutcome, AppendRequest, CheckpointStore, Clock, EventStore, Position, RecordedEvent,
    StoreError, StreamId, Version,
};
use payorch_engine::testing::ManualClock;
use payorch_schemas::events::{AuthorisationKind, CaptureMode, PaymentKind};
use payorch_schemas::paykka::PaymentRequest;
use payorch_schemas::{Currency, Money};

async fn index() -> Option<Arc<InMemoryOpenWorkIndex>> {
    Some(Arc::new(InMemoryOpenWorkIndex::new()))
}

payorch_engine::open_work_conformance_tests!(index);

/// The in-memory store, counting the reads that grow with history.
#[derive(Default)]
struct CountingStore {
    inner: InMemoryStore,
    read_stream: AtomicUsize,
    list_streams: AtomicUsize,
}

#[async_trait]
impl EventStore for CountingStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.inner.append(request).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_stream.fetch_add(1, Ordering::SeqCst);
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
        self.list_streams.fetch_add(1, Ordering::SeqCst);
        self.inner.list_streams(stream_type, after, limit).await
    }
}

struct World {
    engine: Arc<Engine>,
    store: Arc<CountingStore>,
    gateway: Arc<FakeGateway>,
    clock: Arc<ManualClock>,
}

fn world() -> World {
    let store = Arc::new(CountingStore::default());
    let idem = Arc::new(InMemoryStore::new());
    let gateway = Arc::new(FakeGateway::new());
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let engine = Arc::new(Engine::new(
        store.clone(),
        idem,
        gateway.clone(),
        clock.clone(),
        EngineConfig {
            retry_backoff: Duration::from_millis(1),
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    ));
    World {
        engine,
        store,
        gateway,
        clock,
    }
}

fn ctx() -> CommandContext {
    CommandContext::new("18356675194960")
}

fn payment() -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount: Money::new(1000, Currency::EUR),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: CaptureMode::Manual,
        payment: PaymentRequest::card("4111111111111111", "07", "2031", "123"),
        store_token: None,
        return_url: None,
        browser: None,
    }
}

async fn rows(index: &dyn OpenWorkIndex) -> Vec<OpenItem> {
    let mut all = Vec::new();
    for kind in WorkKind::ALL {
        all.extend(index.list(kind, None, None, 100_000).await.unwrap());
    }
    all
}

/// Some settled orders (authorised, captured) and some with a call open
/// (initiate unknown, capture unknown), interleaved over time.
async fn mixed_history(w: &World) -> Vec<StreamId> {
    let mut open = Vec::new();
    for i in 0..12 {
        w.clock.advance(Duration::from_secs(1));
        if i % 3 == 0 {
            w.gateway.script(Op::Initiate, Step::ProcessThenTimeout);
            let o = w.engine.place_payment(&ctx(), payment()).await.unwrap();
            assert_eq!(o.status, Phase::AuthorisationUnknown);
            open.push(order_stream(o.order_id));
        } else {
            let o = w.engine.place_payment(&ctx(), payment()).await.unwrap();
            assert_eq!(o.status, Phase::Authorised);
            if i % 3 == 1 {
                w.gateway.script(Op::Capture, Step::ProcessThenTimeout);
                w.engine
                    .capture(&ctx(), o.order_id, None, true)
                    .await
                    .unwrap();
                open.push(order_stream(o.order_id));
            }
        }
    }
    open.sort();
    open
}

#[tokio::test]
async fn projection_lists_exactly_the_open_streams_whatever_the_batch() {
    let w = world();
    let open = mixed_history(&w).await;
    let mut reference: Option<Vec<OpenItem>> = None;
    for batch in [1, 2, 3, 7, 1000] {
        let index = Arc::new(InMemoryOpenWorkIndex::new());
        let checkpoints = Arc::new(InMemoryStore::new());
        let p = OpenWorkProjector::new(w.store.clone(), checkpoints.clone(), index.clone())
            .with_batch(batch);
        let r = p.catch_up().await.unwrap();
        assert!(r.events > 0 && r.errors == 0, "{r:?}");
        let got = rows(index.as_ref()).await;
        let streams: Vec<StreamId> = got.iter().map(|i| i.stream_id.clone()).collect();
        assert_eq!(streams, open, "batch {batch}: the open orders, no others");
        assert!(got.iter().all(|i| i.kind == WorkKind::OrderCall));
        assert!(got.iter().all(|i| i.since <= i.touched_at));
        match &reference {
            None => reference = Some(got.clone()),
            Some(r) => assert_eq!(&got, r, "batch {batch} gives the same rows"),
        }
        // Nothing new: no event read, nothing changed.
        let again = p.catch_up().await.unwrap();
        assert_eq!((again.events, again.opened, again.closed.len()), (0, 0, 0));
        // A rebuild from 0 gives the same rows.
        p.rebuild().await.unwrap();
        assert_eq!(&rows(index.as_ref()).await, reference.as_ref().unwrap());
        assert!(
            checkpoints
                .load_checkpoint(payorch_engine::open_work::OPEN_WORK_CHECKPOINT)
                .await
                .unwrap()
                .is_some()
        );
    }
}

#[tokio::test]
async fn a_pass_with_nothing_open_reads_no_stream_and_lists_none() {
    let w = world();
    let open = mixed_history(&w).await;
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());
    w.clock.advance(Duration::from_secs(10));
    // Resolve what is open (the fake PayKKa now answers the queries).
    let r = rec.run_once().await.unwrap();
    assert_eq!(r.due_orders, open.len(), "{r:?}");
    assert_eq!(r.queried, open.len(), "{r:?}");
    assert_eq!(r.resolved, open.len(), "{r:?}");

    // The next pass projects the answers and closes the rows.
    w.clock.advance(Duration::from_secs(3600));
    let r = rec.run_once().await.unwrap();
    assert!(r.projected_events > 0);
    assert_eq!((r.scanned, r.candidates, r.queried), (0, 0, 0), "{r:?}");
    assert!(rows(rec.open_work().index().as_ref()).await.is_empty());

    // Now a pass touches nothing that grows with history.
    let (reads, lists) = (
        w.store.read_stream.load(Ordering::SeqCst),
        w.store.list_streams.load(Ordering::SeqCst),
    );
    let r = rec.run_once().await.unwrap();
    assert_eq!(r, Default::default(), "an idle pass does nothing");
    assert_eq!(
        w.store.read_stream.load(Ordering::SeqCst),
        reads,
        "no stream read"
    );
    assert_eq!(
        w.store.list_streams.load(Ordering::SeqCst),
        lists,
        "no stream listed"
    );
    assert_eq!(lists, 0, "the reconciler never lists streams");
}

#[tokio::test]
async fn fresh_open_work_is_listed_but_not_read_until_the_threshold() {
    let w = world();
    w.gateway.script(Op::Initiate, Step::ProcessThenTimeout);
    let o = w.engine.place_payment(&ctx(), payment()).await.unwrap();
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());
    let reads = w.store.read_stream.load(Ordering::SeqCst);
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.scanned, r.due_orders, r.queried), (1, 0, 0), "{r:?}");
    assert_eq!(
        w.store.read_stream.load(Ordering::SeqCst),
        reads,
        "a fresh row is not read"
    );
    let item = &rows(rec.open_work().index().as_ref()).await[0];
    assert_eq!(item.stream_id, order_stream(o.order_id));
    assert_eq!(item.touched_at, w.clock.now());
}

/// A lease that reports lost from its `lost_at`-th check on.
struct FlakyLease {
    checks: AtomicUsize,
    lost_at: usize,
}

#[async_trait]
impl payorch_engine::bus::LeaseGuard for FlakyLease {
    async fn is_lost(&self) -> bool {
        self.checks.fetch_add(1, Ordering::SeqCst) + 1 >= self.lost_at
    }
}

#[tokio::test]
async fn a_leased_pass_stops_at_the_first_check_after_the_lease_is_lost() {
    let w = world();
    for _ in 0..3 {
        w.gateway.script(Op::Initiate, Step::ProcessThenTimeout);
        w.engine.place_payment(&ctx(), payment()).await.unwrap();
    }
    w.clock.advance(Duration::from_secs(10));
    let rec = Reconciler::new(w.engine.clone(), ReconcilerConfig::default());

    // Lost before the pass: nothing at all.
    let gone = FlakyLease {
        checks: AtomicUsize::new(0),
        lost_at: 1,
    };
    let r = rec.run_once_leased(&gone).await.unwrap();
    assert!(r.lease_lost);
    assert_eq!((r.projected_events, r.queried), (0, 0), "{r:?}");

    // Lost after the first query: the second stream is not touched.
    let flaky = FlakyLease {
        checks: AtomicUsize::new(0),
        lost_at: 3,
    };
    let r = rec.run_once_leased(&flaky).await.unwrap();
    assert!(r.lease_lost, "{r:?}");
    assert_eq!(
        r.queried, 1,
        "one call made under the lease, none after: {r:?}"
    );

    // Held throughout: the rest is done.
    let held = FlakyLease {
        checks: AtomicUsize::new(0),
        lost_at: usize::MAX,
    };
    let r = rec.run_once_leased(&held).await.unwrap();
    assert!(!r.lease_lost);
    assert_eq!(r.queried, 2, "{r:?}");
}
