//! The same handler, subscribed with the same call, sees the same events on
//! the in-process bus and on RabbitMQ (the subscriber API is one).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use payorch_engine::bus::{
    EventBus, InMemoryLeaderLock, InProcessBus, SubscriptionOptions, subscribe,
};
use payorch_engine::store::memory::InMemoryStore;
use payorch_rabbitmq::{RabbitBus, Relay};

async fn run_on<B: EventBus>(bus: &B, name: &str, seen_n: usize) -> Arc<Seen> {
    let (handler, seen) = Recorder::new();
    let opts = SubscriptionOptions::new(name, ["order.*.m1", "order.poison.#"])
        .with_max_retries(1)
        .with_retry_delay(Duration::from_millis(10));
    let sub = subscribe(bus, opts, handler).await.expect("subscribe");
    wait_until("the matching events", Duration::from_secs(60), || {
        seen.unique() == seen_n && seen.attempts("poison") == 2
    })
    .await;
    sub.stop().await;
    seen
}

#[tokio::test]
async fn same_handler_same_events_on_both_transports() {
    let Some(url) = amqp_url("parity").await else {
        return;
    };
    let (exchange, queue) = names("parity");
    let store = Arc::new(InMemoryStore::new());
    // Merchants rotate m0, m1, m2: 30 events, 10 for m1, one of them poison.
    let kind = |i: usize| {
        if i == 4 {
            "poison".to_owned()
        } else {
            format!("e{i}")
        }
    };

    let rabbit = RabbitBus::new(bus_config(&url, &exchange));
    let rabbit_seen = {
        let (handler, seen) = Recorder::new();
        let opts = SubscriptionOptions::new(&queue, ["order.*.m1", "order.poison.#"])
            .with_max_retries(1)
            .with_retry_delay(Duration::from_millis(10));
        let sub = subscribe(&rabbit, opts, handler).await.expect("subscribe");
        fill(&store, 30, 3, kind).await;
        let relay = Relay::new(
            store.clone(),
            store.clone(),
            Arc::new(InMemoryLeaderLock::new()),
            relay_config(&url, &exchange),
        )
        .spawn();
        wait_until("rabbit deliveries", Duration::from_secs(60), || {
            seen.unique() == 9 && seen.attempts("poison") == 2
        })
        .await;
        relay.stop().await;
        sub.stop().await;
        seen
    };
    let local = InProcessBus::new(store.clone(), store.clone())
        .with_poll_interval(Duration::from_millis(10));
    let local_seen = run_on(&local, "parity-local", 9).await;
    assert_eq!(local.dead_letters("parity-local").len(), 1);

    let a = rabbit_seen.streams.lock().expect("lock").clone();
    let b = local_seen.streams.lock().expect("lock").clone();
    assert_eq!(
        a, b,
        "both transports delivered the same events in the same stream order"
    );
    cleanup(&url, &exchange, &queue).await;
}
