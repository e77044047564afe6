//! Storage benches: the Postgres and SQLite event stores against plain
//! INSERTs of the same rows through the same pool (the raw reference, run
//! in the same process; the store/raw ratio is printed at the end).
//!
//! Run: `cargo bench -p payorch-benches --bench store`
//! (Postgres from PAYORCH_TEST_DATABASE_URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; its part is skipped with a
//! message when the server is unreachable.)
//!
//! * `pg_append/{store,raw}/c{1,8}/b{1,10}`: appends of 1 or 10 events per
//!   transaction from 1 or 8 concurrent writers (each on its own stream,
//!   with an exact expected version). Every sample of one kind is followed
//!   by the same number of batches of the other kind (same rows, same pool,
//!   raw = one multi-row `INSERT ... VALUES` per transaction), and the
//!   summary ratio is computed over these pairs, so store and raw are
//!   compared under the same machine load.
//! * `pg_read/read_stream_20`: one 20-event order stream.
//! * `pg_read/read_all_10k`: a 10,000-event scan in pages of 1,000.
//! * `sqlite_*`: the same for SQLite (one writer by design, so c1 only).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use payorch_engine::store::{
    AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, Position, StreamId,
    Version,
};
use payorch_postgres::PostgresStore;
use payorch_sqlite::SqliteStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, SqlitePool};
use tokio::runtime::Runtime;

/// (bench name) -> (total elapsed, total events), for the ratios.
type Totals = Arc<Mutex<BTreeMap<String, (Duration, u64)>>>;

fn runtime() -> Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    }
}

fn database_url() -> String {
    std::env::var("PAYORCH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn stream(prefix: &str) -> StreamId {
    StreamId::new(format!("{prefix}-{}", uuid::Uuid::now_v7()))
}

fn request(s: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        stream_id: s.clone(),
        stream_type: "order".into(),
        expected,
        events,
        idempotency: None,
    }
}

/// A realistic event: ~300 bytes of JSON payload.
fn bench_event(n: u64) -> NewEvent {
    let payload = format!(
        r#"{{"order_id":"ord-{n}","merchant_id":"18356675194960","amount":{{"minor":{},"currency":"EUR"}},"trans_id":"T{n:020}","card":{{"brand":"VISA","bin":"424242","last4":"4242","expiry":"12/30"}},"capture_id":"cap-{n}","note":"bench"}}"#,
        1000 + n
    );
    let payload = match serde_json::value::RawValue::from_string(payload) {
        Ok(p) => p,
        Err(err) => panic!("bench payload: {err}"),
    };
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "order.capture_requested".into(),
        schema_version: 1,
        payload,
        metadata: EventMetadata {
            correlation_id: Some(uuid::Uuid::now_v7()),
            causation_id: None,
            merchant_id: Some("18356675194960".into()),
            actor: Some("api".into()),
        },
        recorded_at: time::OffsetDateTime::now_utc(),
    }
}

// ---------------------------------------------------------------------------
// Postgres
// ---------------------------------------------------------------------------

struct Pg {
    store: Arc<PostgresStore>,
    schema: String,
}

async fn pg_setup() -> Option<Pg> {
    let opts = PgConnectOptions::from_str(&database_url()).ok()?;
    let mut admin =
        match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts)).await
        {
            Ok(Ok(c)) => c,
            _ => {
                eprintln!(
                    "*** SKIP: Postgres unreachable at {}: no pg benches ***",
                    database_url()
                );
                return None;
            }
        };
    for setting in [
        "shared_buffers",
        "synchronous_commit",
        "fsync",
        "wal_level",
        "commit_delay",
        "max_connections",
        "server_version",
    ] {
        let v: Result<String, _> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
                .fetch_one(&mut admin)
                .await;
        eprintln!(
            "postgres {setting} = {}",
            v.unwrap_or_else(|e| e.to_string())
        );
    }
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .ok()?;
    let path = schema.clone();
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .after_connect(move |conn, _| {
            let sql = format!("SET search_path TO {path}");
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                Ok(())
            })
        })
        .connect_with(PostgresStore::tune(opts))
        .await
        .ok()?;
    let store = PostgresStore::from_pool(pool);
    if let Err(e) = store.migrate().await {
        panic!("migrate: {e}");
    }
    // The raw reference is the plainest INSERT of the same rows: positions
    // from a sequence (as an identity column would give them), no version
    // check. The store writes its own positions (xid << 16 | ordinal), far
    // above the sequence's, so the two never collide.
    for sql in [
        "CREATE SEQUENCE raw_position",
        "ALTER TABLE events ALTER COLUMN global_position SET DEFAULT nextval('raw_position')",
    ] {
        if let Err(e) = store.pool().execute(sql).await {
            panic!("raw reference set-up: {e}");
        }
    }
    Some(Pg {
        store: Arc::new(store),
        schema,
    })
}

async fn pg_teardown(pg: Pg) {
    pg.store.pool().close().await;
    if let Ok(opts) = PgConnectOptions::from_str(&database_url())
        && let Ok(mut admin) = PgConnection::connect_with(&opts).await
    {
        let _ = admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                pg.schema
            )))
            .await;
    }
}

fn pg_raw_sql(batch: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (stream_id, stream_type, version, event_id, event_type, \
         schema_version, payload, metadata, recorded_at) VALUES ",
    );
    for i in 0..batch {
        let b = i * 9;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${}::json, ${}::json, ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7,
            b + 8,
            b + 9
        ));
    }
    sql
}

/// A plain autocommit INSERT of `events` as versions from..from+n.
async fn pg_raw_insert(pool: &PgPool, sql: &str, s: &StreamId, from: u64, events: &[NewEvent]) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for (i, e) in events.iter().enumerate() {
        q = q
            .bind(s.as_str())
            .bind("order")
            .bind((from + i as u64 + 1) as i64)
            .bind(e.event_id)
            .bind(e.event_type.as_str())
            .bind(e.schema_version as i32)
            .bind(e.payload.get())
            .bind(serde_json::to_string(&e.metadata).unwrap_or_default())
            .bind(e.recorded_at);
    }
    if let Err(e) = q.execute(pool).await {
        panic!("raw insert: {e}");
    }
}

/// Runs `iters` batches split over `writers` tasks; returns the elapsed
/// time. `raw` selects the reference INSERT instead of the store.
async fn pg_append_run(
    store: Arc<PostgresStore>,
    writers: usize,
    batch: usize,
    iters: u64,
    raw: bool,
) -> Duration {
    let per_writer = iters.div_ceil(writers as u64);
    let sql = Arc::new(pg_raw_sql(batch));
    // Build the events before the clock starts.
    let work: Vec<(StreamId, Vec<Vec<NewEvent>>)> = (0..writers)
        .map(|_| {
            let batches = (0..per_writer)
                .map(|i| (0..batch as u64).map(|j| bench_event(i * 10 + j)).collect())
                .collect();
            (stream("bench"), batches)
        })
        .collect();
    let start = Instant::now();
    let mut handles = Vec::new();
    for (s, batches) in work {
        let store = Arc::clone(&store);
        let sql = Arc::clone(&sql);
        handles.push(tokio::spawn(async move {
            let mut version = 0u64;
            for events in batches {
                let n = events.len() as u64;
                if raw {
                    pg_raw_insert(store.pool(), &sql, &s, version, &events).await;
                } else {
                    let r = store
                        .append(request(
                            &s,
                            ExpectedVersion::Exact(Version(version)),
                            events,
                        ))
                        .await;
                    if let Err(e) = r {
                        panic!("append: {e}");
                    }
                }
                version += n;
            }
        }));
    }
    for h in handles {
        if let Err(e) = h.await {
            panic!("writer: {e}");
        }
    }
    let elapsed = start.elapsed();
    // Normalise to `iters` batches (per_writer * writers may exceed it).
    elapsed.mul_f64(iters as f64 / (per_writer * writers as u64) as f64)
}

fn bench_pg(c: &mut Criterion, rt: &Runtime, totals: &Totals) {
    let Some(pg) = rt.block_on(pg_setup()) else {
        return;
    };
    let mut group = c.benchmark_group("pg_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for writers in [1usize, 8] {
        for batch in [1usize, 10] {
            group.throughput(Throughput::Elements(batch as u64));
            for raw in [false, true] {
                let name = if raw { "raw" } else { "store" };
                let id = BenchmarkId::new(name, format!("c{writers}/b{batch}"));
                let key = format!("pg c{writers} b{batch} {name}");
                let other = format!(
                    "pg c{writers} b{batch} {}",
                    if raw { "store" } else { "raw" }
                );
                group.bench_function(id, |b| {
                    b.to_async(rt).iter_custom(|iters| {
                        let store = Arc::clone(&pg.store);
                        let totals = Arc::clone(totals);
                        let key = key.clone();
                        let other = other.clone();
                        async move {
                            // Paired: the same number of batches of the other
                            // kind runs right after (not counted by criterion),
                            // so the summary ratio compares store and raw
                            // under the same load, in alternating order.
                            let d =
                                pg_append_run(Arc::clone(&store), writers, batch, iters, raw).await;
                            let o = pg_append_run(store, writers, batch, iters, !raw).await;
                            if let Ok(mut t) = totals.lock() {
                                let e = t.entry(key).or_default();
                                e.0 += d;
                                e.1 += iters * batch as u64;
                                let e = t.entry(other).or_default();
                                e.0 += o;
                                e.1 += iters * batch as u64;
                            }
                            d
                        }
                    })
                });
            }
        }
    }
    group.finish();

    // Reads.
    let order = stream("order");
    rt.block_on(async {
        let events: Vec<NewEvent> = (0..20).map(bench_event).collect();
        if let Err(e) = pg
            .store
            .append(request(&order, ExpectedVersion::NoStream, events))
            .await
        {
            panic!("seed: {e}");
        }
        // Make sure there are at least 10,000 events to scan.
        let have = count_pg(&pg.store).await;
        let s = stream("seed");
        let mut v = 0u64;
        while have + v < 10_000 {
            let events: Vec<NewEvent> = (0..100).map(|i| bench_event(v + i)).collect();
            if let Err(e) = pg
                .store
                .append(request(&s, ExpectedVersion::Exact(Version(v)), events))
                .await
            {
                panic!("seed: {e}");
            }
            v += 100;
        }
    });
    let mut group = c.benchmark_group("pg_read");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(20));
    group.bench_function("read_stream_20", |b| {
        b.to_async(rt).iter(|| async {
            match pg.store.read_stream(&order, Version(1), 100).await {
                Ok(v) => assert_eq!(v.len(), 20),
                Err(e) => panic!("read_stream: {e}"),
            }
        })
    });
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("read_all_10k", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = Arc::clone(&pg.store);
            let totals = Arc::clone(totals);
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    scan(&*store, 10_000).await;
                }
                let d = start.elapsed();
                if let Ok(mut t) = totals.lock() {
                    let e = t.entry("pg read_all".into()).or_default();
                    e.0 += d;
                    e.1 += iters * 10_000;
                }
                d
            }
        })
    });
    group.finish();
    rt.block_on(pg_teardown(pg));
}

async fn count_pg(store: &PostgresStore) -> u64 {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap_or(0);
    n as u64
}

/// Reads `n` events from the start in pages of 1,000.
async fn scan<S: EventStore>(store: &S, n: usize) {
    let mut after = Position::START;
    let mut got = 0;
    while got < n {
        match store.read_all(after, 1000.min(n - got)).await {
            Ok(v) if v.is_empty() => panic!("scan: only {got} of {n} events"),
            Ok(v) => {
                got += v.len();
                after = v[v.len() - 1].global_position;
            }
            Err(e) => panic!("read_all: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------

async fn sqlite_raw_insert(pool: &SqlitePool, s: &StreamId, from: u64, events: &[NewEvent]) {
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(t) => t,
        Err(e) => panic!("begin: {e}"),
    };
    for (i, e) in events.iter().enumerate() {
        let r = sqlx::query(
            "INSERT INTO events (stream_id, stream_type, version, event_id, event_type, \
             schema_version, payload, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.as_str())
        .bind("order")
        .bind((from + i as u64 + 1) as i64)
        .bind(e.event_id.to_string())
        .bind(e.event_type.as_str())
        .bind(i64::from(e.schema_version))
        .bind(e.payload.get())
        .bind(serde_json::to_string(&e.metadata).unwrap_or_default())
        .bind("2026-01-01T00:00:00Z")
        .execute(&mut *tx)
        .await;
        if let Err(e) = r {
            panic!("raw insert: {e}");
        }
    }
    if let Err(e) = tx.commit().await {
        panic!("commit: {e}");
    }
}

/// `iters` batches of `batch` events to a new stream, through the store or
/// (`raw`) the plain INSERTs; returns the elapsed time.
async fn sqlite_append_run(store: &SqliteStore, batch: usize, iters: u64, raw: bool) -> Duration {
    let s = stream("bench");
    let batches: Vec<Vec<NewEvent>> = (0..iters)
        .map(|i| (0..batch as u64).map(|j| bench_event(i * 10 + j)).collect())
        .collect();
    let start = Instant::now();
    let mut version = 0u64;
    for events in batches {
        let n = events.len() as u64;
        if raw {
            sqlite_raw_insert(store.write_pool(), &s, version, &events).await;
        } else if let Err(e) = store
            .append(request(
                &s,
                ExpectedVersion::Exact(Version(version)),
                events,
            ))
            .await
        {
            panic!("append: {e}");
        }
        version += n;
    }
    start.elapsed()
}

fn bench_sqlite(c: &mut Criterion, rt: &Runtime, totals: &Totals) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let store = rt.block_on(async {
        let store = match SqliteStore::open(&url).await {
            Ok(s) => s,
            Err(e) => panic!("open: {e}"),
        };
        if let Err(e) = store.migrate().await {
            panic!("migrate: {e}");
        }
        Arc::new(store)
    });
    let mut group = c.benchmark_group("sqlite_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for batch in [1usize, 10] {
        group.throughput(Throughput::Elements(batch as u64));
        for raw in [false, true] {
            let name = if raw { "raw" } else { "store" };
            let key = format!("sqlite c1 b{batch} {name}");
            let other = format!("sqlite c1 b{batch} {}", if raw { "store" } else { "raw" });
            group.bench_function(BenchmarkId::new(name, format!("c1/b{batch}")), |b| {
                b.to_async(rt).iter_custom(|iters| {
                    let store = Arc::clone(&store);
                    let totals = Arc::clone(totals);
                    let key = key.clone();
                    let other = other.clone();
                    async move {
                        // Paired as in the Postgres bench: the other kind
                        // runs the same number of batches right after.
                        let d = sqlite_append_run(&store, batch, iters, raw).await;
                        let o = sqlite_append_run(&store, batch, iters, !raw).await;
                        if let Ok(mut t) = totals.lock() {
                            let e = t.entry(key).or_default();
                            e.0 += d;
                            e.1 += iters * batch as u64;
                            let e = t.entry(other).or_default();
                            e.0 += o;
                            e.1 += iters * batch as u64;
                        }
                        d
                    }
                })
            });
        }
    }
    group.finish();

    let order = stream("order");
    rt.block_on(async {
        let events: Vec<NewEvent> = (0..20).map(bench_event).collect();
        if let Err(e) = store
            .append(request(&order, ExpectedVersion::NoStream, events))
            .await
        {
            panic!("seed: {e}");
        }
        let s = stream("seed");
        for k in 0..100u64 {
            let events: Vec<NewEvent> = (0..100).map(|i| bench_event(k * 100 + i)).collect();
            if let Err(e) = store
                .append(request(
                    &s,
                    ExpectedVersion::Exact(Version(k * 100)),
                    events,
                ))
                .await
            {
                panic!("seed: {e}");
            }
        }
    });
    let mut group = c.benchmark_group("sqlite_read");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(20));
    group.bench_function("read_stream_20", |b| {
        b.to_async(rt).iter(|| async {
            match store.read_stream(&order, Version(1), 100).await {
                Ok(v) => assert_eq!(v.len(), 20),
                Err(e) => panic!("read_stream: {e}"),
            }
        })
    });
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("read_all_10k", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = Arc::clone(&store);
            let totals = Arc::clone(totals);
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    scan(&*store, 10_000).await;
                }
                let d = start.elapsed();
                if let Ok(mut t) = totals.lock() {
                    let e = t.entry("sqlite read_all".into()).or_default();
                    e.0 += d;
                    e.1 += iters * 10_000;
                }
                d
            }
        })
    });
    group.finish();
    rt.block_on(store.close());
}

fn report(totals: &Totals) {
    let Ok(t) = totals.lock() else { return };
    let rate = |k: &str| {
        t.get(k)
            .filter(|(d, _)| !d.is_zero())
            .map(|(d, n)| *n as f64 / d.as_secs_f64())
    };
    eprintln!("\n== storage summary (events/s over all samples) ==");
    for db in ["pg", "sqlite"] {
        for c in [1, 8] {
            for b in [1, 10] {
                let store = rate(&format!("{db} c{c} b{b} store"));
                let raw = rate(&format!("{db} c{c} b{b} raw"));
                if let (Some(s), Some(r)) = (store, raw) {
                    eprintln!(
                        "{db} append c{c} b{b}: store {s:>9.0} ev/s  raw INSERT {r:>9.0} ev/s  ratio {:.2}",
                        s / r
                    );
                }
            }
        }
        if let Some(r) = rate(&format!("{db} read_all")) {
            eprintln!("{db} read_all scan: {r:.0} ev/s");
        }
    }
}

fn storage(c: &mut Criterion) {
    let rt = runtime();
    let totals: Totals = Arc::default();
    bench_pg(c, &rt, &totals);
    bench_sqlite(c, &rt, &totals);
    report(&totals);
}

criterion_group!(benches, storage);
criterion_main!(benches);
