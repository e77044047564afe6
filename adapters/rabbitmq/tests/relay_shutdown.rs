//! A relay stopped normally (the service shutting down) logs no error:
//! lapin used to log "Connection error: invalid channel state: Closing"
//! because the relay dropped its channel open and closed the connection
//! at once, so lapin closed the channel while the connection was already
//! closing. Its own test binary: it installs a global tracing subscriber
//! that counts ERROR events.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use payorch_engine::bus::InMemoryLeaderLock;
use payorch_engine::store::Position;
use payorch_engine::store::memory::InMemoryStore;
use payorch_rabbitmq::{Relay, RelayState};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};

const WAIT: Duration = Duration::from_secs(60);

/// Counts ERROR events (any target) and keeps their text.
#[derive(Clone, Default)]
struct Errors {
    count: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Errors {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            self.count.fetch_add(1, Ordering::SeqCst);
            struct Text<'a>(&'a mut String);
            impl tracing::field::Visit for Text<'_> {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={v:?} ", f.name()));
                }
            }
            let mut text = format!("{}: ", event.metadata().target());
            event.record(&mut Text(&mut text));
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(text);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_relay_stop_logs_no_error() {
    let errors = Errors::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(errors.clone()))
        .expect("the only subscriber of this binary");
    let Some(url) = amqp_url("relay_shutdown").await else {
        return;
    };
    let (exchange, queue) = names("shutdown");
    let store = Arc::new(InMemoryStore::new());
    let lock = InMemoryLeaderLock::new();
    fill(&store, 20, 3, |i| format!("e{i}")).await;
    // Several stop/start rounds: the race showed up on some stops only.
    for round in 0..5 {
        let relay = Relay::new(
            store.clone(),
            store.clone(),
            Arc::new(lock.clone()),
            relay_config(&url, &exchange),
        )
        .spawn();
        assert!(
            relay
                .wait_for(WAIT, |s| s.state == RelayState::Active
                    && s.checkpoint == Position(20))
                .await,
            "round {round}: the relay publishes everything"
        );
        relay.stop().await;
    }
    // lapin finishes closing on its own tasks: give them a moment to log.
    // (Not a synchronisation: the assertion holds at any time after.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = errors.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        errors.count.load(Ordering::SeqCst),
        0,
        "errors logged: {seen:#?}"
    );
    cleanup(&url, &exchange, &queue).await;
}
