//! Scale: what a reconciler pass costs on a store with a large history and
//! nothing open (issue 14), against the same pass on an empty store.
//!
//! Run: `cargo bench -p payorch-benches --bench scale`
//! (Postgres from PAYORCH_TEST_DATABASE_URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; skipped with a message
//! when unreachable). PAYORCH_BENCH_SCALE_ORDERS sets the number of orders
//! (default 100,000; ~10 events each).
//!
//! Set-up (once; kept between runs): database `payorch_bench_scale` holds N
//! settled orders (authorised, captured, refunded twice: 10 events each),
//! bulk-inserted by one `INSERT ... SELECT` per 10,000 orders that copies
//! the events of one real order (made by the engine against the fake
//! gateway) under new stream and event ids. Not through the engine one by
//! one: that would take an hour. Then the open-work projection is built
//! from position 0 (its time is printed: what the first start of a
//! reconciler on an existing store costs). Database
//! `payorch_bench_scale_empty` is the empty store.
//!
//! * `scale/reconciler_pass_idle/<N>_orders` and `.../empty`: one
//!   `Reconciler::run_once` (open-work catch-up + index lists) with nothing
//!   open and nothing new. Target: < 50 ms with 100k orders.
//! * Printed reference: listing every order stream (`list_streams`, what
//!   each pass did before the index, before reading each stream).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use payorch_engine::gateway::fake::FakeGateway;
use payorch_engine::orchestrator::{CommandContext, Engine, EngineConfig, PlacePaymentRequest};
use payorch_engine::reconciler::{Reconciler, ReconcilerConfig};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{EventStore, Position, RecordedEvent, StreamId};
use payorch_engine::testing::ManualClock;
use payorch_postgres::PostgresStore;
use payorch_schemas::events::{AuthorisationKind, CaptureMode, PaymentKind};
use payorch_schemas::paykka::PaymentRequest;
use payorch_schemas::{Currency, Money};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};
use tokio::runtime::Runtime;

const BIG_DB: &str = "payorch_bench_scale";
const EMPTY_DB: &str = "payorch_bench_scale_empty";
const SEED_BATCH: i64 = 10_000;

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

fn orders_wanted() -> i64 {
    std::env::var("PAYORCH_BENCH_SCALE_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn payment() -> PlacePaymentRequest {
    PlacePaymentRequest {
        amount: Money::new(10_000, Currency::EUR),
        payment_type: PaymentKind::Purchase,
        authorisation_type: AuthorisationKind::FinalAuth,
        capture_method: CaptureMode::Manual,
        payment: PaymentRequest::card("4111111111111111", "07", "2031", "123"),
        store_token: None,
        return_url: None,
        browser: None,
    }
}

/// The events of one settled order: placed, authorised, captured,
/// refunded twice.
async fn sample_order() -> Vec<RecordedEvent> {
    let store = Arc::new(InMemoryStore::new());
    let engine = Engine::new(
        store.clone(),
        store.clone(),
        Arc::new(FakeGateway::new()),
        Arc::new(ManualClock::at_epoch_2026()),
        EngineConfig {
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    );
    let ctx = CommandContext::new("18356675194960");
    let o = engine.place_payment(&ctx, payment()).await.expect("place");
    engine
        .capture(&ctx, o.order_id, None, true)
        .await
        .expect("capture");
    for _ in 0..2 {
        engine
            .refund(&ctx, o.order_id, Money::new(1_000, Currency::EUR), None)
            .await
            .expect("refund");
    }
    store.read_all(Position::START, 1_000).await.expect("read")
}

async fn admin() -> Option<PgConnection> {
    let opts = PgConnectOptions::from_str(&database_url()).ok()?;
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts)).await {
        Ok(Ok(c)) => Some(c),
        _ => None,
    }
}

/// A store on database `name` (created and migrated when missing).
async fn store_on(admin: &mut PgConnection, name: &str) -> PostgresStore {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *admin)
            .await
            .expect("pg_database");
    if !exists {
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create database");
    }
    let opts = PostgresStore::tune(
        PgConnectOptions::from_str(&database_url())
            .expect("url")
            .database(name),
    );
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .expect("pool");
    let store = PostgresStore::from_pool(pool);
    store.migrate().await.expect("migrate");
    store
}

/// Bulk-inserts copies of `sample` until the store holds `wanted` orders.
async fn seed(store: &PostgresStore, sample: &[RecordedEvent], wanted: i64) {
    let have: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT stream_id) FROM events WHERE version = 1")
            .fetch_one(store.pool())
            .await
            .expect("count");
    if have >= wanted {
        return;
    }
    let versions: Vec<i64> = sample.iter().map(|e| e.version.0 as i64).collect();
    let types: Vec<String> = sample.iter().map(|e| e.event_type.clone()).collect();
    let schemas: Vec<i32> = sample.iter().map(|e| e.schema_version as i32).collect();
    let payloads: Vec<String> = sample.iter().map(|e| e.payload.get().to_owned()).collect();
    let metadata: Vec<String> = sample
        .iter()
        .map(|e| serde_json::to_string(&e.metadata).expect("metadata"))
        .collect();
    let times: Vec<time::OffsetDateTime> = sample.iter().map(|e| e.recorded_at).collect();
    let started = Instant::now();
    let mut n = have;
    while n < wanted {
        let to = (n + SEED_BATCH).min(wanted);
        // Positions n*16+version: below every xid-derived position.
        sqlx::query(
            "INSERT INTO events (global_position, stream_id, stream_type, version, event_id, \
             event_type, schema_version, payload, metadata, recorded_at) \
             SELECT g.n * 16 + s.version, 'order-bench-' || lpad(g.n::text, 9, '0'), 'order', \
                    s.version, gen_random_uuid(), s.event_type, s.schema_version, \
                    s.payload::json, s.metadata::json, s.recorded_at \
             FROM generate_series($1::int8, $2::int8) AS g(n), \
                  UNNEST($3::int8[], $4::text[], $5::int4[], $6::text[], $7::text[], \
                         $8::timestamptz[]) AS s(version, event_type, schema_version, payload, \
                                                 metadata, recorded_at) \
             ORDER BY 1",
        )
        .bind(n + 1)
        .bind(to)
        .bind(&versions)
        .bind(&types)
        .bind(&schemas)
        .bind(&payloads)
        .bind(&metadata)
        .bind(&times)
        .execute(store.pool())
        .await
        .expect("seed insert");
        n = to;
    }
    let _ = store.pool().execute("VACUUM ANALYZE events").await;
    let events = (wanted - have) * sample.len() as i64;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "scale: seeded {} orders ({events} events) in {secs:.1} s ({:.0} events/s)",
        wanted - have,
        events as f64 / secs
    );
}

fn reconciler_on(store: Arc<PostgresStore>) -> Reconciler {
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        Arc::new(FakeGateway::new()),
        Arc::new(payorch_engine::store::SystemClock),
        EngineConfig {
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    ));
    Reconciler::with_open_work(engine, ReconcilerConfig::default(), store.clone(), store)
}

fn bench_scale(c: &mut Criterion) {
    let rt = runtime();
    let Some(mut admin) = rt.block_on(admin()) else {
        eprintln!(
            "*** SKIP scale bench: Postgres at {} unreachable ***",
            database_url()
        );
        return;
    };
    let wanted = orders_wanted();
    let big = Arc::new(rt.block_on(store_on(&mut admin, BIG_DB)));
    let empty = Arc::new(rt.block_on(store_on(&mut admin, EMPTY_DB)));
    let sample = rt.block_on(sample_order());
    rt.block_on(seed(&big, &sample, wanted));

    let big_rec = reconciler_on(big.clone());
    let empty_rec = reconciler_on(empty.clone());
    // First pass: projects whatever the checkpoint has not seen (the whole
    // history on the first run).
    let t = Instant::now();
    let first = rt.block_on(big_rec.run_once()).expect("first pass");
    println!(
        "scale: first pass projected {} events in {:.1} s ({:.0} events/s); open after it: {}",
        first.projected_events,
        t.elapsed().as_secs_f64(),
        first.projected_events as f64 / t.elapsed().as_secs_f64().max(1e-9),
        first.scanned
    );
    rt.block_on(empty_rec.run_once()).expect("empty pass");

    // Reference: listing every order stream, as each pass did before.
    let t = Instant::now();
    let mut after: Option<StreamId> = None;
    let mut listed = 0usize;
    loop {
        let page = rt
            .block_on(big.list_streams("order", after.as_ref(), 500))
            .expect("list");
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        listed += page.len();
    }
    println!(
        "scale: reference: listing {listed} order streams (no reads) took {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let mut g = c.benchmark_group("scale/reconciler_pass_idle");
    g.bench_function(format!("{wanted}_orders"), |b| {
        b.iter(|| {
            let r = rt.block_on(big_rec.run_once()).expect("pass");
            assert_eq!(r.queried, 0, "nothing open");
        })
    });
    g.bench_function("empty", |b| {
        b.iter(|| rt.block_on(empty_rec.run_once()).expect("pass"))
    });
    g.finish();
}

criterion_group!(benches, bench_scale);
criterion_main!(benches);
