//! Shared set-up of the engine's integration tests: an engine over the
//! in-memory store, the scripted fake gateway and a manual clock.

use std::sync::Arc;
use std::time::Duration;

use payorch_engine::gateway::fake::FakeGateway;
use payorch_engine::orchestrator::{CommandContext, Engine, EngineConfig};
use payorch_engine::store::memory::InMemoryStore;
use payorch_engine::testing::ManualClock;

pub struct World {
    pub engine: Arc<Engine>,
    pub store: Arc<InMemoryStore>,
    pub gateway: Arc<FakeGateway>,
    pub clock: Arc<ManualClock>,
}

pub fn world() -> World {
    let store = Arc::new(InMemoryStore::new());
    let gateway = Arc::new(FakeGateway::new());
    let clock = Arc::new(ManualClock::at_epoch_2026());
    let engine = Arc::new(Engine::new(
        store.clone(),
        store.clone(),
        gateway.clone(),
        clock.clone(),
        EngineConfig {
            retry_backoff: Duration::from_millis(1),
            idempotency_wait: Duration::from_secs(2),
            default_return_url: Some("https://shop.example/return".into()),
            ..EngineConfig::default()
        },
    ));
    World {
        engine,
        store,
        gateway,
        clock,
    }
}

pub fn ctx() -> CommandContext {
    CommandContext::new("18356675194960")
}
