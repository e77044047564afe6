//! The `open_work` table passes the engine's open-work conformance kit (and
//! the webhook delivery log its own), and
//! the reconciler's projector keeps it current over a real Postgres store.
//! Each test works in its own schema (dropped at the end). When Postgres is
//! unreachable the tests print SKIP and pass, unless PAYORCH_REQUIRE_SERVICES=1.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use payorch_engine::gateway::fake::{FakeGateway, Op, Step};
use payorch_engine::open_work::testkit::IndexFixture;
use payorch_engine::open_work::{OpenWorkIndex, WorkKind};
use payorch_engine::orchestrator::{
    CommandContext, Engine, EngineConfig, PlacePaymentRequest, order_stream,
};
use payorch_engine::order::Phase;
use payorch_engine::reconciler::{Reconciler, ReconcilerConfig};
use payorch_engine::testing::ManualClock;
use payorch_postgres::PostgresStore;
use payorch_schemas::events::{AuthorisationKind, CaptureMode, PaymentKind};
use payorch_schemas::paykka::PaymentRequest;
use payorch_schemas::{Currency, Money};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

fn database_url() -> String {
    std::env::var("PAYORCH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn services_required() -> bool {
    std::env::var("PAYORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

async fn admin() -> Result<PgConnection, sqlx::Error> {
    let opts = PgConnectOptions::from_str(&database_url())?;
    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

struct PgFixture {
    store: Arc<PostgresStore>,
    schema: String,
}

impl IndexFixture for PgFixture {
    type Index = PostgresStore;
    fn index(&self) -> Arc<PostgresStore> {
        Arc::clone(&self.store)
    }
    async fn teardown(self) {
        self.store.pool().close().await;
        if let Ok(mut admin) = admin().await {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    self.schema
                )))
                .await;
        }
    }
}

/// A migrated store in a fresh schema; `None` after a loud SKIP.
async fn fixture() -> Option<PgFixture> {
    let mut admin = match admin().await {
        Ok(c) => c,
        Err(e) => {
            if services_required() {
                panic!(
                    "Postgres at {} unreachable and PAYORCH_REQUIRE_SERVICES=1: {e}",
                    database_url()
                );
            }
            eprintln!(
                "\n*** SKIP: Postgres at {} unreachable ({e}); set PAYORCH_REQUIRE_SERVICES=1 to fail instead ***\n",
                database_url()
            );
            return None;
        }
    };
    let schema = format!("test_{}", Uuid::now_v7().simple());
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .expect("create schema");
    let path = schema.clone();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .after_connect(move |conn, _| {
            let sql = format!("SET search_path TO {path}");
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                Ok(())
            })
        })
        .connect_with(PostgresStore::connect_options(&database_url()).expect("url"))
        .await
        .expect("pool");
    let store = PostgresStore::from_pool(pool);
    store.migrate().await.expect("migrate");
    Some(PgFixture {
        store: Arc::new(store),
        schema,
    })
}

payorch_engine::open_work_conformance_tests!(fixture);

impl payorch_engine::webhook_out::testkit::LogFixture for PgFixture {
    type Log = PostgresStore;
    fn log(&self) -> Arc<PostgresStore> {
        Arc::clone(&self.store)
    }
    async fn teardown(self) {
        IndexFixture::teardown(self).await
    }
}

// The webhook delivery log (migration 0006) passes the engine's kit too.
payorch_engine::delivery_log_conformance_tests!(fixture);

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

/// The reconciler over the Postgres index: an unknown initiate shows up as
/// an open row, is resolved by query and its row goes; the projection's
/// checkpoint survives a new reconciler (no re-read from 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_keeps_the_postgres_index_current() {
    let Some(fx) = fixture().await else { return };
    let store = fx.store.clone();
    let gateway = Arc::new(FakeGateway::new());
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        gateway.clone(),
        clock.clone(),
        EngineConfig {
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    ));
    let ctx = CommandContext::new("18356675194960");
    let settled = engine.place_payment(&ctx, payment()).await.unwrap();
    assert_eq!(settled.status, Phase::Authorised);
    gateway.script(Op::Initiate, Step::ProcessThenTimeout);
    let open = engine.place_payment(&ctx, payment()).await.unwrap();
    assert_eq!(open.status, Phase::AuthorisationUnknown);

    let rec = Reconciler::with_open_work(
        engine.clone(),
        ReconcilerConfig::default(),
        store.clone(),
        store.clone(),
    );
    // read_all may hold back events while other tests' transactions are
    // open: wait (with a deadline) until the projection has seen them.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        rec.run_once().await.unwrap();
        if store.count(WorkKind::OrderCall).await.unwrap() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "open order never indexed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = store
        .list(WorkKind::OrderCall, None, None, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].stream_id, order_stream(open.order_id));

    clock.advance(Duration::from_secs(10));
    let r = rec.run_once().await.unwrap();
    assert_eq!((r.queried, r.resolved), (1, 1), "{r:?}");

    // A new reconciler (a restarted or standby node) continues from the
    // stored checkpoint and sees the row close.
    let rec2 = Reconciler::with_open_work(
        engine.clone(),
        ReconcilerConfig::default(),
        store.clone(),
        store.clone(),
    );
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    loop {
        let r = rec2.run_once().await.unwrap();
        assert!(
            (r.projected_events as i64) < total,
            "continued from the checkpoint, not from 0: {r:?}"
        );
        if store.count(WorkKind::OrderCall).await.unwrap() == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "resolved order never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fx.teardown().await;
}

/// LISTEN/NOTIFY wake-ups: an append wakes a waiting listener in another
/// process (the store's coalesced NOTIFY after the commit; other writers:
/// the `events` trigger of migration 0004); a listener not waiting at that
/// moment sees it on its next `wait`. In the appending process the store's
/// own signal wakes at once (`PgWakeup::start_with`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_wakes_a_listener_through_notify() {
    use payorch_engine::store::testkit::{new_events, request, stream};
    use payorch_engine::store::{EventStore, ExpectedVersion};
    use payorch_engine::wakeup::EventWakeup;

    let Some(fx) = fixture().await else { return };
    let store = fx.store.clone();
    let wakeup = payorch_postgres::wakeup::PgWakeup::start(store.pool());
    let listener = wakeup.signal().subscribe();
    // The task signals once when its LISTEN is in place.
    assert!(
        listener.wait(Duration::from_secs(60)).await,
        "LISTEN never started"
    );
    let waiter = {
        let l = wakeup.signal().subscribe();
        tokio::spawn(async move { l.wait(Duration::from_secs(60)).await })
    };
    let local = store.append_signal().subscribe();
    let s = stream("wake");
    store
        .append(request(&s, ExpectedVersion::NoStream, new_events(1, 3)))
        .await
        .expect("append");
    assert!(
        local.wait(Duration::from_secs(60)).await,
        "the appending process's signal"
    );
    assert!(waiter.await.expect("join"), "woken by the append's NOTIFY");
    assert!(
        listener.wait(Duration::from_secs(60)).await,
        "a listener that was not waiting still sees it"
    );
    drop(wakeup);
    fx.teardown().await;
}

/// The store's sessions mute the trigger's NOTIFY (migration 0008:
/// `payorch.append_notify = off`, set by `PostgresStore::tune`): a NOTIFY
/// inside the appending transaction serialises commits. A session without
/// the setting still notifies. Each session inserts a row between two
/// marker NOTIFYs of its own; notifications arrive in commit order and name
/// their backend, so what one session sent between its markers is exactly
/// what its insert sent, whatever other tests notify meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_sessions_mute_the_trigger_and_others_keep_it() {
    use sqlx::Row;
    use sqlx::postgres::PgListener;

    let Some(fx) = fixture().await else { return };
    let mut listener = PgListener::connect(&database_url())
        .await
        .expect("listener");
    listener
        .listen(payorch_postgres::wakeup::CHANNEL)
        .await
        .expect("LISTEN");

    // Notifications the insert of `conn` sent (between its two markers).
    async fn sent_by_insert(conn: &mut PgConnection, listener: &mut PgListener) -> usize {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .expect("pid");
        let marker = Uuid::now_v7().simple().to_string();
        let notify = |tag: &str| format!("NOTIFY payorch_events, '{tag}-{marker}'");
        conn.execute(sqlx::AssertSqlSafe(notify("before")))
            .await
            .expect("marker");
        sqlx::query(
            "INSERT INTO events (global_position, stream_id, stream_type, version, event_id, \
             event_type, schema_version, payload, metadata, recorded_at) \
             VALUES ((pg_current_xact_id()::text::int8 << 16) | 1, $1, 'test', 1, $2, 'created', \
             1, '{}', '{}', now())",
        )
        .bind(format!("mute-{marker}"))
        .bind(Uuid::now_v7())
        .execute(&mut *conn)
        .await
        .expect("insert");
        conn.execute(sqlx::AssertSqlSafe(notify("after")))
            .await
            .expect("marker");
        let (mut between, mut started) = (0, false);
        loop {
            let n = tokio::time::timeout(Duration::from_secs(60), listener.recv())
                .await
                .expect("notifications arrive")
                .expect("recv");
            if n.process_id() != pid as u32 {
                continue;
            }
            match n.payload() {
                p if p == format!("before-{marker}") => started = true,
                p if p == format!("after-{marker}") => return between,
                _ if started => between += 1,
                _ => {}
            }
        }
    }

    let mut tuned = fx.store.pool().acquire().await.expect("store session");
    let setting: Option<String> =
        sqlx::query("SELECT current_setting('payorch.append_notify', true)")
            .fetch_one(&mut *tuned)
            .await
            .expect("setting")
            .get(0);
    assert_eq!(
        setting.as_deref(),
        Some("off"),
        "PostgresStore::tune sets it"
    );
    assert_eq!(
        sent_by_insert(&mut tuned, &mut listener).await,
        0,
        "a store session's insert sends no NOTIFY"
    );
    drop(tuned);

    let mut plain = admin().await.expect("plain session");
    plain
        .execute(sqlx::AssertSqlSafe(format!(
            "SET search_path TO {}",
            fx.schema
        )))
        .await
        .expect("search_path");
    assert_eq!(
        sent_by_insert(&mut plain, &mut listener).await,
        1,
        "any other session's insert notifies from the trigger"
    );
    drop(plain);
    fx.teardown().await;
}

/// `payorch import`'s bulk path on Postgres passes the engine's bulk case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_import_is_idempotent_and_validated() {
    let Some(fx) = fixture().await else { return };
    payorch_engine::bulk::conformance(fx.store.clone()).await;
    fx.teardown().await;
}

/// The COPY path keeps every byte: payloads with whitespace (tabs,
/// newlines) between JSON tokens and backslash escapes, stream ids with
/// backslashes, and the microseconds of `recorded_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_import_keeps_payload_bytes_and_timestamps() {
    use payorch_engine::bulk::BulkImport;
    use payorch_engine::store::{
        EventMetadata, EventStore, Position, RecordedEvent, StreamId, Version,
    };
    let Some(fx) = fixture().await else { return };
    let payload = "{\"a\":\t\"x\\\\ty\\n\",\r\n \"b\": \"\\u00e9\u{e9}\"}";
    let recorded_at = time::OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_789)
        .expect("time")
        .to_offset(time::UtcOffset::from_hms(2, 0, 0).expect("offset"));
    let stream = StreamId::new(format!("order-\\tab\\{}", Uuid::now_v7()));
    let event = RecordedEvent {
        global_position: Position(1),
        stream_id: stream.clone(),
        stream_type: "order".into(),
        version: Version(1),
        event_id: Uuid::now_v7(),
        event_type: "placed\\x".into(),
        schema_version: 2,
        payload: serde_json::value::RawValue::from_string(payload.into()).expect("json"),
        metadata: EventMetadata {
            merchant_id: Some("m\t1".into()),
            ..Default::default()
        },
        recorded_at,
    };
    let o = fx
        .store
        .import_batch(std::slice::from_ref(&event))
        .await
        .expect("import");
    assert_eq!((o.imported, o.already_present), (1, 0));
    let back = fx
        .store
        .read_stream(&stream, Version(1), 10)
        .await
        .expect("read");
    assert_eq!(back.len(), 1);
    let b = &back[0];
    assert_eq!(b.payload.get(), payload, "payload bytes kept");
    assert_eq!(b.event_type, "placed\\x");
    assert_eq!(b.metadata.merchant_id.as_deref(), Some("m\t1"));
    assert_eq!(
        b.recorded_at.unix_timestamp_nanos(),
        1_764_000_000_123_456_000,
        "microseconds kept, nanoseconds truncated"
    );
    assert_eq!(b.schema_version, 2);
    fx.teardown().await;
}

// ---------------------------------------------------------------------------
// Bulk load (one transaction, indexes re-created): `payorch import` into an
// empty store.
// ---------------------------------------------------------------------------

/// Export-like events of `streams` streams with `per_stream` events each,
/// interleaved (version 1 of every stream, then version 2, ...), so each
/// stream spans several batches.
fn history(streams: usize, per_stream: u64) -> Vec<payorch_engine::store::RecordedEvent> {
    use payorch_engine::store::{EventMetadata, Position, RecordedEvent, StreamId, Version};
    let ids: Vec<StreamId> = (0..streams)
        .map(|i| StreamId::new(format!("order-{i:03}-{}", Uuid::now_v7())))
        .collect();
    let mut out = Vec::new();
    for v in 1..=per_stream {
        for s in &ids {
            out.push(RecordedEvent {
                global_position: Position(out.len() as u64 + 1),
                stream_id: s.clone(),
                stream_type: "order".into(),
                version: Version(v),
                event_id: Uuid::now_v7(),
                event_type: format!("step{v}"),
                schema_version: 1,
                payload: serde_json::value::RawValue::from_string(format!(
                    "{{\"n\": {v}, \"s\": \"{s}\"}}"
                ))
                .expect("json"),
                metadata: EventMetadata {
                    merchant_id: Some("18356675194960".into()),
                    ..Default::default()
                },
                recorded_at: time::OffsetDateTime::from_unix_timestamp(1_764_000_000 + v as i64)
                    .expect("time"),
            });
        }
    }
    out
}

/// The indexes and constraints of `events` in the fixture's schema, with
/// the schema name taken out (so two schemas compare).
async fn events_schema(store: &PostgresStore) -> Vec<String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, replace(indexdef, schemaname || '.', '') FROM pg_indexes \
         WHERE schemaname = current_schema() AND tablename = 'events' \
         UNION ALL \
         SELECT conname::text, contype::text || ' ' || pg_get_constraintdef(oid) \
         FROM pg_constraint WHERE conrelid = 'events'::regclass \
         ORDER BY 1, 2",
    )
    .fetch_all(store.pool())
    .await
    .expect("catalog");
    rows.into_iter().map(|(a, b)| format!("{a}: {b}")).collect()
}

async fn event_count(store: &PostgresStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await
        .expect("count")
}

/// Everything of the store in global order, once all `n` events are
/// readable (other tests' open transactions may hold `read_all` back).
async fn read_everything(
    store: &PostgresStore,
    n: usize,
) -> Vec<payorch_engine::store::RecordedEvent> {
    use payorch_engine::store::{EventStore, Position};
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = store
            .read_all(Position::START, n + 10)
            .await
            .expect("read_all");
        assert!(all.len() <= n, "more events than imported");
        if all.len() == n {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "imported events never became readable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What an import must keep of each event (not its position).
fn kept(e: &payorch_engine::store::RecordedEvent) -> String {
    format!(
        "{} {} {} {} {} {} {} {}",
        e.event_id,
        e.stream_id,
        e.stream_type,
        e.version.0,
        e.event_type,
        e.schema_version,
        e.payload.get(),
        serde_json::to_string(&e.metadata).expect("metadata"),
    ) + &e.recorded_at.unix_timestamp_nanos().to_string()
}

/// An import into an empty store in one transaction gives the same events,
/// versions and order as the per-batch import, positions that later
/// appends stay above, and the same indexes and constraints as a freshly
/// migrated store; importing again stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_load_matches_the_per_batch_import_and_keeps_the_schema() {
    use payorch_engine::bulk::BulkImport;
    use payorch_engine::store::testkit::{new_events, request};
    use payorch_engine::store::{EventStore, ExpectedVersion, StreamId};
    let Some(a) = fixture().await else { return };
    let Some(b) = fixture().await else { return };
    let schema = events_schema(&a.store).await;
    assert!(
        schema.len() >= 8,
        "4 indexes, 3 constraints, 1 check: {schema:?}"
    );
    assert_eq!(schema, events_schema(&b.store).await);

    let events = history(7, 30); // 210 events in batches of 32: 7 subtransactions
    let mut load = a
        .store
        .begin_bulk_load()
        .await
        .expect("begin")
        .expect("an empty store takes a bulk load");
    for chunk in events.chunks(32) {
        assert_eq!(load.load(chunk).await.expect("load"), chunk.len() as u64);
    }
    assert_eq!(load.finish().await.expect("finish"), events.len() as u64);
    for chunk in events.chunks(32) {
        b.store.import_batch(chunk).await.expect("per batch");
    }

    let got = read_everything(&a.store, events.len()).await;
    let want = read_everything(&b.store, events.len()).await;
    let source: Vec<String> = events.iter().map(kept).collect();
    assert_eq!(
        got.iter().map(kept).collect::<Vec<_>>(),
        source,
        "events and order kept"
    );
    assert_eq!(want.iter().map(kept).collect::<Vec<_>>(), source);
    assert!(
        got.windows(2)
            .all(|w| w[0].global_position < w[1].global_position),
        "positions increase in file order"
    );
    let xids: std::collections::BTreeSet<u64> =
        got.iter().map(|e| e.global_position.0 >> 16).collect();
    assert_eq!(xids.len(), 7, "one transaction id per batch: {xids:?}");
    assert_eq!(
        events_schema(&a.store).await,
        schema,
        "indexes and constraints re-created as they were"
    );

    // A later append lands after every imported event.
    let s = StreamId::new(format!("order-after-{}", Uuid::now_v7()));
    let o = a
        .store
        .append(request(&s, ExpectedVersion::NoStream, new_events(1, 1)))
        .await
        .expect("append");
    assert!(o.first_position > got.last().expect("events").global_position);
    // ... and a stream continues at its imported version.
    let head = got[0].stream_id.clone();
    assert!(matches!(
        a.store
            .append(request(&head, ExpectedVersion::NoStream, new_events(2, 1)))
            .await,
        Err(payorch_engine::store::StoreError::Conflict { .. })
    ));

    // The store is no longer empty: a second import goes per batch and
    // stores nothing.
    assert!(
        a.store.begin_bulk_load().await.expect("begin").is_none(),
        "no bulk load into a store with events"
    );
    let o = a.store.import_batch(&events[..100]).await.expect("again");
    assert_eq!((o.imported, o.already_present), (0, 100));
    assert_eq!(event_count(&a.store).await, events.len() as i64 + 1);
    a.teardown().await;
    b.teardown().await;
}

/// A file with an event id twice, or a version gap, is refused whole: the
/// store stays empty with every index and constraint in place. So does a
/// load that is abandoned, or whose connection goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_abandoned_bulk_load_leaves_the_store_empty_and_constrained() {
    use payorch_engine::store::StoreError;
    let Some(fx) = fixture().await else { return };
    let store = &fx.store;
    let schema = events_schema(store).await;
    let events = history(5, 20);

    // The same event id at two places, in different batches: only the
    // re-created unique constraint can see it.
    let mut dup = events.clone();
    let reused = dup[3].event_id;
    dup[90].event_id = reused;
    let mut load = store
        .begin_bulk_load()
        .await
        .expect("begin")
        .expect("empty");
    for chunk in dup.chunks(25) {
        load.load(chunk).await.expect("each batch is consistent");
    }
    match load.finish().await {
        Err(StoreError::EventIdReused { event_id }) => assert_eq!(event_id, reused),
        other => panic!("expected EventIdReused, got {other:?}"),
    }
    assert_eq!(event_count(store).await, 0, "nothing stored");
    assert_eq!(events_schema(store).await, schema, "constraints in place");

    // A version gap in a later batch.
    let mut gap = events.clone();
    gap.remove(60); // a stream's version 13 goes missing
    let mut load = store
        .begin_bulk_load()
        .await
        .expect("begin")
        .expect("empty");
    let mut refused = None;
    for chunk in gap.chunks(25) {
        if let Err(e) = load.load(chunk).await {
            refused = Some(e);
            break;
        }
    }
    assert!(
        matches!(refused, Some(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    assert!(load.finish().await.is_err(), "a failed load cannot commit");
    assert_eq!(event_count(store).await, 0, "nothing stored");
    assert_eq!(events_schema(store).await, schema, "constraints in place");

    // A stream that does not start at version 1.
    let mut load = store
        .begin_bulk_load()
        .await
        .expect("begin")
        .expect("empty");
    assert!(matches!(
        load.load(&events[5..]).await,
        Err(StoreError::Conflict { .. })
    ));
    load.abort().await.expect("abort");
    assert_eq!(events_schema(store).await, schema, "constraints in place");

    // Abandoned after two batches (the importing process dies): its
    // connection closes, the server rolls the transaction back.
    let side = PostgresStore::from_pool(
        PgPoolOptions::new()
            .max_connections(1)
            .after_connect({
                let schema = fx.schema.clone();
                move |conn, _| {
                    let sql = format!("SET search_path TO {schema}");
                    Box::pin(async move {
                        conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                        Ok(())
                    })
                }
            })
            .connect_with(PostgresStore::connect_options(&database_url()).expect("url"))
            .await
            .expect("pool"),
    );
    let mut load = side.begin_bulk_load().await.expect("begin").expect("empty");
    load.load(&events[..25]).await.expect("load");
    load.load(&events[25..50]).await.expect("load");
    drop(load);
    side.pool().close().await;
    assert_eq!(event_count(store).await, 0, "nothing stored");
    assert_eq!(events_schema(store).await, schema, "constraints in place");

    // After all that, a good load goes through.
    let mut load = store
        .begin_bulk_load()
        .await
        .expect("begin")
        .expect("empty");
    load.load(&events).await.expect("load");
    assert_eq!(load.finish().await.expect("finish"), events.len() as u64);
    assert_eq!(event_count(store).await, events.len() as i64);
    fx.teardown().await;
}

/// An imported store serves listings and the reconciler's open work: both
/// checkpointed projections catch up over the imported events and agree
/// with the same projections over the source store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_store_serves_listings_and_open_work() {
    use payorch_engine::listing::{Indexer, ListQuery, ResourceIndex, ResourceKind};
    let Some(src) = fixture().await else { return };
    let Some(dst) = fixture().await else { return };
    let gateway = Arc::new(FakeGateway::new());
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let engine_over = |store: &Arc<PostgresStore>| {
        Arc::new(Engine::new(
            store.clone(),
            store.clone(),
            gateway.clone(),
            clock.clone(),
            EngineConfig {
                default_return_url: Some("https://shop.example/return".into()),
                ..EngineConfig::default()
            },
        ))
    };
    let engine = engine_over(&src.store);
    let ctx = CommandContext::new("18356675194960");
    for _ in 0..3 {
        let done = engine.place_payment(&ctx, payment()).await.unwrap();
        assert_eq!(done.status, Phase::Authorised);
    }
    gateway.script(Op::Initiate, Step::ProcessThenTimeout);
    let open = engine.place_payment(&ctx, payment()).await.unwrap();
    assert_eq!(open.status, Phase::AuthorisationUnknown);

    let n = event_count(&src.store).await as usize;
    let exported = read_everything(&src.store, n).await;
    let mut load = dst
        .store
        .begin_bulk_load()
        .await
        .expect("begin")
        .expect("empty");
    load.load(&exported).await.expect("load");
    load.finish().await.expect("finish");
    read_everything(&dst.store, n).await;

    let mut listings = Vec::new();
    let mut open_rows = Vec::new();
    for store in [&src.store, &dst.store] {
        let indexer = Indexer::new(store.clone(), store.clone(), store.clone());
        assert_eq!(
            indexer.catch_up().await.expect("index"),
            n,
            "every event indexed"
        );
        let page = ResourceIndex::list(
            store.as_ref(),
            &ListQuery::new(ResourceKind::Payment, "18356675194960"),
        )
        .await
        .expect("list");
        assert_eq!(page.ids.len(), 4, "every payment listed");
        listings.push(page.ids);

        let rec = Reconciler::with_open_work(
            engine_over(store),
            ReconcilerConfig::default(),
            store.clone(),
            store.clone(),
        );
        rec.run_once().await.expect("pass");
        let rows = OpenWorkIndex::list(store.as_ref(), WorkKind::OrderCall, None, None, 10)
            .await
            .expect("open work");
        open_rows.push(rows.iter().map(|r| r.stream_id.clone()).collect::<Vec<_>>());
    }
    assert_eq!(listings[0], listings[1], "same listing, same order");
    assert_eq!(open_rows[0], vec![order_stream(open.order_id)]);
    assert_eq!(open_rows[0], open_rows[1], "same open work");
    src.teardown().await;
    dst.teardown().await;
}
