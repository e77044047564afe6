//! History analysis with payorch's replay module: for every order in a
//! store, fold it to each version and explain how it got to its current
//! phase; then rebuild the ready-made `OrderPhases` projection from
//! position 0 and count orders per phase.
//!
//! Run: `cargo run --example replay -- sqlite:///tmp/some.db`
//! (e.g. a store written by `payorch demo --store sqlite:///tmp/some.db`).

use payorch_engine::replay::{OrderPhases, ProjectionRunner, explain};
use payorch_engine::store::{EventStore, StreamId};
use payorch_schemas::events::ORDER_STREAM_TYPE;
use payorch_sqlite::SqliteStore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: replay <sqlite://FILE>"))?;
    let store = SqliteStore::open(&url).await?;
    store.migrate().await?;

    // Every order stream, explained event by event.
    let mut after: Option<StreamId> = None;
    loop {
        let page = store
            .list_streams(ORDER_STREAM_TYPE, after.as_ref(), 100)
            .await?;
        let Some((last, _)) = page.last().cloned() else {
            break;
        };
        for (stream, version) in &page {
            println!("{stream} ({} events)", version.0);
            for step in explain(&store, stream).await? {
                println!(
                    "  v{:<3} {:<28} -> {:?}",
                    step.version, step.event_type, step.phase_after
                );
            }
        }
        after = Some(last);
    }

    // A projection rebuilt from position 0 (checkpointed in the store).
    let mut phases = OrderPhases::default();
    let applied = ProjectionRunner::new(&store, &store)
        .rebuild(&mut phases)
        .await?;
    let mut counts = std::collections::BTreeMap::new();
    for state in phases.states.values() {
        *counts.entry(state.phase().to_string()).or_insert(0) += 1;
    }
    println!("order_phases rebuilt from {applied} events: {counts:?}");
    store.close().await;
    Ok(())
}
