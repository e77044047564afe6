//! Commit -> broker-confirm latency of the relay on Postgres, woken by
//! LISTEN/NOTIFY (issue 14, "idle is idle"), against the same relay
//! polling every 100 ms (the default without a wake-up source).
//!
//! Run: `cargo bench -p payorch-benches --bench relay_wakeup`
//! (Postgres from PAYORCH_TEST_DATABASE_URL, RabbitMQ from
//! PAYORCH_TEST_AMQP_URL; skipped with a message when either is down).
//!
//! Each sample: one event appended by `PostgresStore::append` (returns
//! after COMMIT), then the time until the relay's checkpoint covers it,
//! i.e. the broker confirmed it and the relay recorded that. Samples are
//! 25 ms apart so that every append finds the relay idle (the case the
//! wake-up exists for). Prints p50 / p99 / max per mode.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use payorch_engine::bus::InMemoryLeaderLock;
use payorch_engine::store::{
    AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, StreamId,
};
use payorch_postgres::PostgresStore;
use payorch_postgres::wakeup::PgWakeup;
use payorch_rabbitmq::{Relay, RelayConfig};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};

const DB: &str = "payorch_bench_wakeup";
const SAMPLES: usize = 400;

fn database_url() -> String {
    std::env::var("PAYORCH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn amqp_url() -> String {
    std::env::var("PAYORCH_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn store() -> Option<PostgresStore> {
    let opts = PgConnectOptions::from_str(&database_url()).ok()?;
    let mut admin = PgConnection::connect_with(&opts).await.ok()?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DB)
            .fetch_one(&mut admin)
            .await
            .ok()?;
    if !exists {
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DB}")))
            .await
            .ok()?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(PostgresStore::tune(opts.database(DB)))
        .await
        .ok()?;
    let store = PostgresStore::from_pool(pool);
    store.migrate().await.ok()?;
    Some(store)
}

fn stream(prefix: &str) -> StreamId {
    StreamId::new(format!("{prefix}-{}", uuid::Uuid::now_v7()))
}

/// One small event appended to a new stream.
fn request(s: &StreamId, _expected: ExpectedVersion, n: u64) -> AppendRequest {
    AppendRequest {
        stream_id: s.clone(),
        stream_type: "order".into(),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "bench".into(),
            schema_version: 1,
            payload: serde_json::value::RawValue::from_string(format!(r#"{{"n":{n}}}"#))
                .expect("json"),
            metadata: EventMetadata::default(),
            recorded_at: time::OffsetDateTime::now_utc(),
        }],
        idempotency: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(store: &Arc<PostgresStore>, woken: bool) -> Vec<Duration> {
    let exchange = format!("bench.wakeup.{}", uuid::Uuid::now_v7().simple());
    // The sample ends when the checkpoint covers the event: write it as
    // soon as the pipeline drains (the default waits up to 200 ms, which
    // would measure that interval instead of the wake-up).
    let mut config = RelayConfig::new(amqp_url()).with_exchange(exchange);
    config.checkpoint_interval = Duration::ZERO;
    let mut relay = Relay::new(
        store.clone(),
        store.clone(),
        Arc::new(InMemoryLeaderLock::new()),
        config,
    );
    let wakeup = woken.then(|| PgWakeup::start(store.pool()));
    if let Some(w) = &wakeup {
        relay = relay.with_wakeup(Arc::new(w.signal().subscribe()));
    }
    let relay = relay.spawn();
    let mut out = Vec::with_capacity(SAMPLES);
    // Warm-up: the relay catches up with earlier runs' events.
    let s = stream("warm");
    let o = store
        .append(request(&s, ExpectedVersion::NoStream, 1))
        .await
        .expect("append");
    assert!(
        relay
            .wait_for(Duration::from_secs(120), |st| st.checkpoint
                >= o.last_position)
            .await
    );
    for i in 0..SAMPLES {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let s = stream("lat");
        let o = store
            .append(request(&s, ExpectedVersion::NoStream, i as u64))
            .await
            .expect("append");
        let t0 = Instant::now();
        assert!(
            relay
                .wait_for(Duration::from_secs(30), |st| st.checkpoint
                    >= o.last_position)
                .await,
            "event never confirmed"
        );
        out.push(t0.elapsed());
    }
    relay.stop().await;
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let Some(store) = store().await else {
            eprintln!("*** SKIP relay_wakeup bench: Postgres unreachable ***");
            return;
        };
        let store = Arc::new(store);
        for woken in [true, false] {
            let mut lat = run(&store, woken).await;
            lat.sort();
            println!(
                "relay_wakeup/{}: {} samples commit->confirm p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                if woken { "listen_notify" } else { "poll_100ms" },
                lat.len(),
                percentile(&lat, 0.5).as_secs_f64() * 1e3,
                percentile(&lat, 0.99).as_secs_f64() * 1e3,
                lat[lat.len() - 1].as_secs_f64() * 1e3,
            );
        }
    });
}
