//! An idle relay with a wake-up source sleeps until an append is
//! announced: with the fallback and the idle poll at an hour, events
//! appended while the relay is known to be waiting are published promptly
//! because the append is announced (`WakeupSignal`), not polled.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use payorch_engine::bus::{InMemoryLeaderLock, SubscriptionOptions, subscribe};
use payorch_engine::store::Position;
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::wakeup::{EventWakeup, WakeupListener, WakeupSignal};
use payorch_rabbitmq::{RabbitBus, Relay, RelayState};

const WAIT: Duration = Duration::from_secs(60);
const FALLBACK: Duration = Duration::from_secs(3600);

/// A listener that counts how often the relay started its long sleep
/// (a wait of the full fallback, not a quick re-read after activity).
struct Observed {
    inner: WakeupListener,
    waits: Arc<AtomicUsize>,
}

#[async_trait]
impl EventWakeup for Observed {
    async fn wait(&self, timeout: Duration) -> bool {
        if timeout >= FALLBACK {
            self.waits.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.wait(timeout).await
    }
}

#[tokio::test]
async fn an_idle_relay_wakes_on_an_announced_append_not_on_a_poll() {
    let Some(url) = amqp_url("relay_wakeup").await else {
        return;
    };
    let (exchange, queue) = names("wakeup");
    let inner = Arc::new(InMemoryStore::new());
    let signal = WakeupSignal::new();
    let bus = RabbitBus::new(bus_config(&url, &exchange));
    let (handler, seen) = Recorder::new();
    let sub = subscribe(&bus, SubscriptionOptions::new(&queue, ["order.#"]), handler)
        .await
        .expect("subscribe");

    let mut config = relay_config(&url, &exchange);
    config.idle_poll = Duration::from_secs(3600);
    config.wakeup_fallback = FALLBACK;
    let waits = Arc::new(AtomicUsize::new(0));
    let relay = Relay::new(
        inner.clone(),
        inner.clone(),
        Arc::new(InMemoryLeaderLock::new()),
        config,
    )
    .with_wakeup(Arc::new(Observed {
        inner: signal.subscribe(),
        waits: waits.clone(),
    }))
    .spawn();
    assert!(
        relay
            .wait_for(WAIT, |s| s.state == RelayState::Active)
            .await,
        "relay active"
    );
    for round in 1..=2usize {
        // The relay is asleep (it only waits once nothing is left to
        // read; it was woken round - 1 times so far).
        wait_until("relay waiting for a wake-up", WAIT, || {
            waits.load(Ordering::SeqCst) >= round
        })
        .await;
        fill(&inner, 10, 3, |i| format!("e{i}")).await;
        signal.notify();
        wait_until("events published after the wake-up", WAIT, || {
            seen.unique() == 10 * round
        })
        .await;
        assert!(
            relay
                .wait_for(WAIT, |s| s.checkpoint == Position(10 * round as u64))
                .await
        );
    }
    relay.stop().await;
    sub.stop().await;
    cleanup(&url, &exchange, &queue).await;
}
