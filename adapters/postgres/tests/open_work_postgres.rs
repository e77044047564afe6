//! The `open_work` table passes the engine's open-work conformance kit, and
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
