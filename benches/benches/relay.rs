//! Relay throughput against a raw lapin publisher, on the same broker in the
//! same run.
//!
//! * `relay`: an `InMemoryStore` pre-filled with N events; a relay with a
//!   fresh checkpoint publishes them all; timed from spawn until its
//!   checkpoint reaches N (every message confirmed and checkpointed).
//! * `raw_lapin`: the same N messages (same routing keys, properties and
//!   bodies, encoded beforehand) published by plain lapin with publisher
//!   confirms pipelined over the same window (256), timed from connect until
//!   the last confirm.
//!
//! Both publish persistent messages to a durable topic exchange bound to one
//! durable queue, purged between samples. Prints events/s of both and the
//! relay/raw ratio (target >= 0.8).
//!
//! Run: `cargo bench -p payorch-benches --bench relay` (RabbitMQ at
//! `PAYORCH_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`;
//! without a broker it prints SKIP).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use payorch_engine::bus::{InMemoryLeaderLock, routing_key};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::store::{
    AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, Position, StreamId,
};
use payorch_rabbitmq::topology::{declare_exchange, event_message};
use payorch_rabbitmq::{DEFAULT_AMQP_URL, Relay, RelayConfig};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

const N: u64 = 10_000;
const WINDOW: usize = 256;

fn url() -> String {
    std::env::var("PAYORCH_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into())
}

async fn filled_store() -> Arc<InMemoryStore> {
    let store = Arc::new(InMemoryStore::new());
    for i in 0..N {
        let payload = format!(
            r#"{{"order_id":"order-{i}","amount":{{"minor":{},"currency":"EUR"}},"capture_id":"{}"}}"#,
            1000 + i,
            Uuid::now_v7()
        );
        store
            .append(AppendRequest {
                stream_id: StreamId::new(format!("order-{}", i % 100)),
                stream_type: "order".into(),
                expected: ExpectedVersion::Any,
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "captured".into(),
                    schema_version: 1,
                    payload: RawValue::from_string(payload).expect("valid json"),
                    metadata: EventMetadata {
                        merchant_id: Some(format!("1835667519496{}", i % 10)),
                        correlation_id: Some(Uuid::now_v7()),
                        ..Default::default()
                    },
                    recorded_at: OffsetDateTime::now_utc(),
                }],
                idempotency: None,
            })
            .await
            .expect("append");
    }
    store
}

struct Broker {
    conn: Connection,
    channel: lapin::Channel,
    exchange: String,
    queue: String,
}

impl Broker {
    async fn setup(url: &str) -> Option<Broker> {
        let conn = match tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(url, ConnectionProperties::default()),
        )
        .await
        {
            Ok(Ok(c)) => c,
            _ => return None,
        };
        let channel = conn.create_channel().await.ok()?;
        let id = Uuid::now_v7().simple().to_string();
        let exchange = format!("payorch.events.bench.{id}");
        let queue = format!("payorch.bench.{id}");
        declare_exchange(&channel, &exchange).await.ok()?;
        channel
            .queue_declare(
                queue.clone().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        channel
            .queue_bind(
                queue.clone().into(),
                exchange.clone().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .ok()?;
        Some(Broker {
            conn,
            channel,
            exchange,
            queue,
        })
    }

    async fn purge(&self) {
        let _ = self
            .channel
            .queue_purge(self.queue.clone().into(), QueuePurgeOptions::default())
            .await;
    }

    async fn teardown(self) {
        let _ = self
            .channel
            .queue_delete(self.queue.clone().into(), QueueDeleteOptions::default())
            .await;
        let _ = self
            .channel
            .exchange_delete(self.exchange.clone().into(), Default::default())
            .await;
        let _ = self.conn.close(200, "bench done".into()).await;
    }
}

/// One relay run over the whole store with a fresh checkpoint.
async fn relay_run(store: &Arc<InMemoryStore>, url: &str, exchange: &str) -> Duration {
    let mut config = RelayConfig::new(url).with_exchange(exchange);
    config.name = format!("relay:bench:{}", Uuid::now_v7());
    config.window = WINDOW;
    config.read_batch = WINDOW;
    let start = Instant::now();
    let relay = Relay::new(
        store.clone(),
        store.clone(),
        Arc::new(InMemoryLeaderLock::new()),
        config,
    )
    .spawn();
    let done = relay
        .wait_for(Duration::from_secs(300), |s| s.checkpoint == Position(N))
        .await;
    let elapsed = start.elapsed();
    assert!(done, "relay did not confirm {N} events");
    relay.stop().await;
    elapsed
}

type Message = (lapin::types::ShortString, BasicProperties, Vec<u8>);

/// The same messages published by plain lapin, pipelined confirms.
async fn raw_run(messages: &[Message], url: &str, exchange: &str) -> Duration {
    let start = Instant::now();
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm_select");
    let exchange: lapin::types::ShortString = exchange.to_owned().into();
    let mut inflight = VecDeque::with_capacity(WINDOW);
    for (key, props, body) in messages {
        if inflight.len() >= WINDOW {
            let confirm: lapin::PublisherConfirm = inflight.pop_front().expect("non-empty");
            assert!(confirm.await.expect("confirm").is_ack());
        }
        inflight.push_back(
            channel
                .basic_publish(
                    exchange.clone(),
                    key.clone(),
                    BasicPublishOptions::default(),
                    body,
                    props.clone(),
                )
                .await
                .expect("publish"),
        );
    }
    for confirm in inflight {
        assert!(confirm.await.expect("confirm").is_ack());
    }
    let elapsed = start.elapsed();
    let _ = conn.close(200, "raw done".into()).await;
    elapsed
}

fn median_rate(samples: &Mutex<Vec<f64>>) -> f64 {
    let mut v = samples.lock().map(|s| s.clone()).unwrap_or_default();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench_relay(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url = url();
    let Some(broker) = rt.block_on(Broker::setup(&url)) else {
        eprintln!(
            "\n**************** SKIP relay bench: RabbitMQ unreachable at {url} ****************\n"
        );
        return;
    };
    let store = rt.block_on(filled_store());
    let events = rt
        .block_on(store.read_all(Position::START, N as usize))
        .expect("read_all");
    let messages: Vec<Message> = events
        .iter()
        .map(|e| {
            let (props, body) = event_message(e).expect("encode");
            (routing_key(e).into(), props, body)
        })
        .collect();
    let broker = Arc::new(broker);
    let relay_rates = Arc::new(Mutex::new(Vec::new()));
    let raw_rates = Arc::new(Mutex::new(Vec::new()));

    let mut group = c.benchmark_group("relay");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(N));
    group.bench_function("raw_lapin", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (broker, messages, url, rates) =
                (broker.clone(), &messages, url.clone(), raw_rates.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let d = raw_run(messages, &url, &broker.exchange).await;
                    broker.purge().await;
                    if let Ok(mut r) = rates.lock() {
                        r.push(N as f64 / d.as_secs_f64());
                    }
                    total += d;
                }
                total
            }
        })
    });
    group.bench_function("relay", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (broker, store, url, rates) = (
                broker.clone(),
                store.clone(),
                url.clone(),
                relay_rates.clone(),
            );
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let d = relay_run(&store, &url, &broker.exchange).await;
                    broker.purge().await;
                    if let Ok(mut r) = rates.lock() {
                        r.push(N as f64 / d.as_secs_f64());
                    }
                    total += d;
                }
                total
            }
        })
    });
    group.finish();

    let relay = median_rate(&relay_rates);
    let raw = median_rate(&raw_rates);
    println!(
        "\nrelay: {relay:.0} events/s, raw lapin: {raw:.0} events/s, relay/raw = {:.2} (target >= 0.80), N = {N}, window = {WINDOW}\n",
        if raw > 0.0 { relay / raw } else { 0.0 }
    );
    if let Ok(broker) = Arc::try_unwrap(broker) {
        rt.block_on(broker.teardown());
    }
}

criterion_group!(benches, bench_relay);
criterion_main!(benches);
