//! The Postgres store against the real server (PAYORCH_TEST_DATABASE_URL,
//! default `postgres://postgres@127.0.0.1:5432/postgres`). Each test works
//! in its own schema (`test_<uuid>`, set as `search_path` on every pool
//! connection, dropped at the end), so tests run in parallel. When the
//! server is unreachable the tests print SKIP and pass, unless
//! PAYORCH_REQUIRE_SERVICES=1.
//!
//! The server-restart test is `#[ignore]`d because it restarts the cluster
//! under every other test; run it alone with
//! `cargo test -p payorch-postgres -- --ignored --test-threads=1`.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use payorch_engine::store::testkit::{self, Fixture};
use payorch_engine::store::{
    AppendRequest, EventStore, ExpectedVersion, Position, StoreError, Version,
};
use payorch_postgres::{AdvisoryLock, PostgresStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(60);

fn database_url() -> String {
    std::env::var("PAYORCH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn services_required() -> bool {
    std::env::var("PAYORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A store in a fresh schema; `app` is the pool's application_name (to
/// find its backends).
struct PgFixture {
    store: Arc<PostgresStore>,
    schema: String,
    app: String,
}

impl Fixture for PgFixture {
    type Store = PostgresStore;
    fn store(&self) -> Arc<PostgresStore> {
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

impl PgFixture {
    /// A plain connection with the fixture's search_path.
    async fn connection(&self) -> PgConnection {
        let mut c = admin().await.expect("connect");
        c.execute(sqlx::AssertSqlSafe(format!(
            "SET search_path TO {}",
            self.schema
        )))
        .await
        .expect("search_path");
        c
    }
}

async fn admin() -> Result<PgConnection, sqlx::Error> {
    let opts = PgConnectOptions::from_str(&database_url())?;
    tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

/// A migrated store in a fresh schema; `None` (after a loud SKIP) when
/// Postgres is unreachable.
async fn fixture() -> Option<PgFixture> {
    let fx = bare_fixture().await?;
    fx.store.migrate().await.expect("migrate");
    Some(fx)
}

/// A fresh, empty schema (no migrations applied).
async fn bare_fixture() -> Option<PgFixture> {
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
    let app = format!("payorch-{schema}");
    let opts = PostgresStore::tune(
        PgConnectOptions::from_str(&database_url())
            .expect("url")
            .application_name(&app),
    );
    let path = schema.clone();
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _| {
            let sql = format!("SET search_path TO {path}");
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await
        .expect("pool");
    let store = PostgresStore::from_pool(pool);
    Some(PgFixture {
        store: Arc::new(store),
        schema,
        app,
    })
}

payorch_engine::store_conformance_tests!(fixture);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_one_stream_exactly_one_winner_per_version() {
    let Some(fx) = fixture().await else { return };
    testkit::one_stream_race(fx.store(), 16, 5).await;
    fx.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_distinct_streams_with_tailer() {
    let Some(fx) = fixture().await else { return };
    testkit::gap_free_with_writers(fx.store(), 16, 40).await;
    fx.teardown().await;
}

#[tokio::test]
async fn migrate_twice_is_a_no_op() {
    let Some(fx) = fixture().await else { return };
    fx.store.migrate().await.expect("second migrate");
    payorch_postgres::migrate(fx.store.pool())
        .await
        .expect("third migrate");
    fx.teardown().await;
}

/// Raw insert of one event, as a writer that bypasses the store would do
/// it (following the position rule of migration 0002), inside the
/// caller's (open) transaction. Returns its position.
async fn raw_insert(conn: &mut PgConnection, stream: &str, version: i64) -> (i64, Uuid) {
    let id = Uuid::now_v7();
    let pos: i64 = sqlx::query_scalar(
        "INSERT INTO events (global_position, stream_id, stream_type, version, event_id, \
         event_type, schema_version, payload, metadata, recorded_at) \
         VALUES ((pg_current_xact_id()::text::int8 << 16) | 1, $1, 'order', $2, $3, 'raw', 1, \
         '{}'::json, '{}'::json, now()) \
         RETURNING global_position",
    )
    .bind(stream)
    .bind(version)
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .expect("raw insert");
    (pos, id)
}

/// Follows read_all until at least `want` events are seen (other tests'
/// open transactions may hold the horizon back for a moment).
async fn drain_until(
    store: &PostgresStore,
    checkpoint: &mut Position,
    seen: &mut Vec<(Position, Uuid)>,
    want: usize,
) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        drain(store, checkpoint, seen).await;
        if seen.len() >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tailer saw {} of {want}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Follows read_all from `checkpoint` until nothing more is returned.
async fn drain(store: &PostgresStore, checkpoint: &mut Position, seen: &mut Vec<(Position, Uuid)>) {
    loop {
        let batch = store.read_all(*checkpoint, 100).await.expect("read_all");
        let Some(last) = batch.last() else { return };
        *checkpoint = last.global_position;
        seen.extend(batch.iter().map(|e| (e.global_position, e.event_id)));
    }
}

/// The gap-safety proof. Transaction A takes position p and stays open;
/// B commits p+1 through the store. A tailer must not move its checkpoint
/// past p (so it returns nothing, although B's row is committed and
/// visible); once A commits (or aborts), it sees every committed event
/// exactly once, in position order.
async fn hold_back_case(commit_a: bool) {
    let Some(fx) = fixture().await else { return };
    let store = fx.store();
    let early = testkit::stream("early");
    store
        .append(testkit::request(
            &early,
            ExpectedVersion::NoStream,
            testkit::new_events(0, 1),
        ))
        .await
        .expect("early append");
    let mut checkpoint = Position::START;
    let mut seen = Vec::new();
    drain_until(&store, &mut checkpoint, &mut seen, 1).await;
    assert_eq!(seen.len(), 1);

    let mut a = fx.connection().await;
    a.execute("BEGIN").await.expect("begin A");
    let (pos_a, id_a) = raw_insert(&mut a, "stream-a", 1).await;

    let b_stream = testkit::stream("b");
    let b = store
        .append(testkit::request(
            &b_stream,
            ExpectedVersion::NoStream,
            testkit::new_events(0, 1),
        ))
        .await
        .expect("append B");
    assert!(
        b.first_position.0 > u64::try_from(pos_a).expect("pos"),
        "B after A"
    );

    // B is committed and visible to a plain query...
    let mut probe = fx.connection().await;
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE global_position = $1")
        .bind(i64::try_from(b.first_position.0).expect("pos"))
        .fetch_one(&mut probe)
        .await
        .expect("probe");
    assert_eq!(visible, 1, "B is committed");
    // ...but the tailer is held back at A's position.
    for _ in 0..3 {
        drain(&store, &mut checkpoint, &mut seen).await;
        assert_eq!(
            seen.len(),
            1,
            "read_all must not pass the open transaction's position"
        );
        assert!(checkpoint.0 < u64::try_from(pos_a).expect("pos"));
    }

    a.execute(if commit_a { "COMMIT" } else { "ROLLBACK" })
        .await
        .expect("end A");
    let deadline = Instant::now() + DEADLINE;
    let want = if commit_a { 3 } else { 2 };
    while seen.len() < want {
        assert!(
            Instant::now() < deadline,
            "tailer did not catch up: {seen:?}"
        );
        drain(&store, &mut checkpoint, &mut seen).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ids: Vec<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "exactly once");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "position order");
    assert_eq!(ids.contains(&id_a), commit_a, "A's event iff A committed");
    assert_eq!(seen.last().map(|(p, _)| *p), Some(b.first_position));
    fx.teardown().await;
}

/// A database written under migration 0001 (positions from an identity
/// sequence) keeps its events, their positions and their order through
/// 0002: later appends (to old and new streams) land above every old
/// position and read_all returns all of them once, in order.
#[tokio::test]
async fn upgrade_from_sequence_positions_keeps_every_event_in_order() {
    let Some(fx) = bare_fixture().await else {
        return;
    };
    let store = fx.store();
    let mut first = sqlx::migrate!("./migrations");
    first.migrations = std::borrow::Cow::Owned(first.migrations[..1].to_vec());
    first.run(store.pool()).await.expect("migration 0001 alone");
    let mut old_ids = Vec::new();
    for version in 1..=3_i64 {
        let id = Uuid::now_v7();
        let pos: i64 = sqlx::query_scalar(
            "INSERT INTO events (stream_id, stream_type, version, event_id, event_type, \
             schema_version, payload, metadata, recorded_at) \
             VALUES ('order-old', 'order', $1, $2, 'raw', 1, '{}'::json, '{}'::json, now()) \
             RETURNING global_position",
        )
        .bind(version)
        .bind(id)
        .fetch_one(store.pool())
        .await
        .expect("a row written the 0001 way");
        assert_eq!(pos, version, "0001 positions come from the identity");
        old_ids.push(id);
    }
    store.migrate().await.expect("0002 over existing rows");

    let old_stream = payorch_engine::store::StreamId::new("order-old");
    let continued = store
        .append(testkit::request(
            &old_stream,
            ExpectedVersion::Exact(Version(3)),
            testkit::new_events(0, 1),
        ))
        .await
        .expect("append to a stream written before the upgrade");
    assert_eq!(continued.version, Version(4));
    let fresh = store
        .append(testkit::request(
            &testkit::stream("new"),
            ExpectedVersion::NoStream,
            testkit::new_events(0, 2),
        ))
        .await
        .expect("append to a new stream");
    assert!(continued.first_position > Position(3), "{continued:?}");
    assert!(fresh.first_position > continued.last_position, "{fresh:?}");
    assert_eq!(fresh.last_position.0, fresh.first_position.0 + 1);

    let mut checkpoint = Position::START;
    let mut seen = Vec::new();
    drain_until(&store, &mut checkpoint, &mut seen, 6).await;
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "position order");
    let positions: Vec<u64> = seen.iter().map(|(p, _)| p.0).collect();
    assert_eq!(&positions[..3], &[1, 2, 3]);
    let ids: Vec<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(&ids[..3], old_ids.as_slice());
    fx.teardown().await;
}

#[tokio::test]
async fn read_all_waits_for_open_transaction_then_sees_its_commit() {
    hold_back_case(true).await;
}

#[tokio::test]
async fn read_all_waits_for_open_transaction_then_skips_its_abort() {
    hold_back_case(false).await;
}

/// Waits until one of the pool's backends waits on a lock.
async fn wait_for_lock_wait(probe: &mut PgConnection, app: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND wait_event_type = 'Lock'",
        )
        .bind(app)
        .fetch_one(&mut *probe)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "append never blocked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The unique (stream_id, version) constraint is the arbiter: an append
/// that passed the version check loses to a transaction that inserted the
/// same version first, and gets a typed Conflict with the actual version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_detected_by_unique_constraint() {
    let Some(fx) = fixture().await else { return };
    let s = testkit::stream("race");
    let mut a = fx.connection().await;
    a.execute("BEGIN").await.expect("begin");
    raw_insert(&mut a, s.as_str(), 1).await;

    let store = fx.store();
    let req = testkit::request(&s, ExpectedVersion::NoStream, testkit::new_events(0, 1));
    let pending = tokio::spawn(async move { store.append(req).await });
    let mut probe = fx.connection().await;
    wait_for_lock_wait(&mut probe, &fx.app).await;
    a.execute("COMMIT").await.expect("commit");
    match pending.await.expect("task") {
        Err(StoreError::Conflict {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, s);
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual, Version(1));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The store stays usable after the conflict (nothing is left held).
    let o = fx
        .store
        .append(testkit::request(
            &s,
            ExpectedVersion::Exact(Version(1)),
            testkit::new_events(1, 1),
        ))
        .await
        .expect("append after conflict");
    assert_eq!(o.version, Version(2));
    fx.teardown().await;
}

async fn terminate_pool_backends(probe: &mut PgConnection, app: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(app)
    .fetch_one(&mut *probe)
    .await
    .expect("terminate")
}

/// Appends `request` until it is acknowledged, retrying `Unavailable`
/// with the same event ids (which is safe: a retry of an append that did
/// commit returns the stored outcome).
async fn append_until_acked(store: &PostgresStore, request: AppendRequest) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match store.append(request.clone()).await {
            Ok(_) => return,
            Err(StoreError::Unavailable(e)) => {
                assert!(Instant::now() < deadline, "store never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("append: {e}"),
        }
    }
}

/// Writers append while another connection repeatedly terminates the
/// store's backends: the pool reconnects, and every acknowledged event is
/// stored exactly once, streams stay contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_lose_nothing_acknowledged() {
    let Some(fx) = fixture().await else { return };
    let stop = Arc::new(AtomicBool::new(false));
    let writers = 8;
    let per_writer = 60u64;
    let mut handles = Vec::new();
    for w in 0..writers {
        let store = fx.store();
        handles.push(tokio::spawn(async move {
            let s = testkit::stream(&format!("kill{w}"));
            let mut acked = Vec::new();
            for i in 0..per_writer {
                let events = testkit::new_events(i, 1);
                let id = events[0].event_id;
                let req = testkit::request(&s, ExpectedVersion::Exact(Version(i)), events);
                append_until_acked(&store, req).await;
                acked.push(id);
            }
            (s, acked)
        }));
    }
    let killer = {
        let stop = Arc::clone(&stop);
        let app = fx.app.clone();
        let mut probe = fx.connection().await;
        tokio::spawn(async move {
            let mut kills = 0;
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) && rounds < 200 {
                rounds += 1;
                kills += terminate_pool_backends(&mut probe, &app).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            kills
        })
    };
    let mut all_acked = Vec::new();
    for h in handles {
        let (s, acked) = h.await.expect("writer");
        let stored = fx
            .store
            .read_stream(&s, Version(1), 1000)
            .await
            .expect("read");
        let ids: Vec<Uuid> = stored.iter().map(|e| e.event_id).collect();
        assert_eq!(
            ids, acked,
            "stream {s} holds exactly its acknowledged events, in order"
        );
        all_acked.extend(acked);
    }
    stop.store(true, Ordering::SeqCst);
    let kills = killer.await.expect("killer");
    assert!(kills > 0, "the test must actually kill connections");
    let mut checkpoint = Position::START;
    let mut seen = Vec::new();
    drain_until(&fx.store, &mut checkpoint, &mut seen, all_acked.len()).await;
    let seen_ids: Vec<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    let unique: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(
        seen_ids.len(),
        all_acked.len(),
        "no duplicates, nothing lost"
    );
    assert_eq!(unique, all_acked.iter().copied().collect::<HashSet<_>>());
    eprintln!("killed {kills} backends during the run");
    fx.teardown().await;
}

/// One holder per key; a holder whose session dies loses the lock and a
/// standby takes over; drop and release free it.
#[tokio::test]
async fn advisory_lock_single_holder_and_takeover() {
    let Some(fx) = fixture().await else { return };
    let pool = fx.store.pool();
    let key = AdvisoryLock::key_for(&format!("relay-{}", fx.schema));
    let mut holder = AdvisoryLock::try_acquire(pool, key)
        .await
        .expect("try")
        .expect("first acquire wins");
    assert!(holder.is_held().await);
    assert!(
        AdvisoryLock::try_acquire(pool, key)
            .await
            .expect("try")
            .is_none(),
        "second acquire must fail while held"
    );
    // Another key is independent.
    let other = AdvisoryLock::try_acquire(pool, key ^ 1).await.expect("try");
    assert!(other.is_some());

    // The holder dies.
    let pid = holder.backend_pid().await.expect("pid");
    let mut probe = fx.connection().await;
    let ok: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut probe)
        .await
        .expect("terminate");
    assert!(ok);
    let deadline = Instant::now() + DEADLINE;
    let mut standby = loop {
        if let Some(l) = AdvisoryLock::try_acquire(pool, key).await.expect("try") {
            break l;
        }
        assert!(Instant::now() < deadline, "standby never took over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        !holder.is_held().await,
        "the dead holder knows it lost the lock"
    );
    assert!(standby.is_held().await);
    standby.release().await;
    let again = AdvisoryLock::try_acquire(pool, key).await.expect("try");
    assert!(again.is_some(), "released lock is free");
    drop(again);
    // Dropping closes the session; the lock frees once the server notices.
    let deadline = Instant::now() + DEADLINE;
    while AdvisoryLock::try_acquire(pool, key)
        .await
        .expect("try")
        .is_none()
    {
        assert!(Instant::now() < deadline, "dropped lock never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fx.teardown().await;
}

/// Restarts the whole server while writers run. Ignored by default (it
/// disturbs every other test): run alone with
/// `cargo test -p payorch-postgres -- --ignored --test-threads=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "restarts the Postgres cluster; run alone with --ignored --test-threads=1"]
async fn server_restart_loses_nothing_acknowledged() {
    let Some(fx) = fixture().await else { return };
    let s = testkit::stream("restart");
    let store = fx.store();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..200u64 {
            let events = testkit::new_events(i, 1);
            let id = events[0].event_id;
            let req = testkit::request(&s, ExpectedVersion::Exact(Version(i)), events);
            append_until_acked(&store, req).await;
            acked.push(id);
        }
        (s, acked)
    });
    // Restart once some writes went through.
    let deadline = Instant::now() + DEADLINE;
    while fx
        .store
        .read_all(Position::START, 50)
        .await
        .map(|v| v.len())
        .unwrap_or(0)
        < 20
    {
        assert!(Instant::now() < deadline, "writer made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a cluster under /etc/postgresql");
    let status = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "restart failed");
    let (s, acked) = writer.await.expect("writer");
    let stored = fx
        .store
        .read_stream(&s, Version(1), 1000)
        .await
        .expect("read");
    let ids: Vec<Uuid> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, acked);
    fx.teardown().await;
}

/// The listing index (migration 0005) passes the engine's index suite.
#[tokio::test]
async fn resource_index_conformance() {
    let Some(fx) = fixture().await else { return };
    payorch_engine::listing::testkit::conformance(fx.store.as_ref()).await;
    fx.teardown().await;
}
