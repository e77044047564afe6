//! The in-memory store passes the storage conformance suite
//! (`cargo test -p payorch-engine --features testkit`).

use std::sync::Arc;

use payorch_engine::store::memory::InMemoryStore;

async fn fixture() -> Option<Arc<InMemoryStore>> {
    Some(Arc::new(InMemoryStore::new()))
}

payorch_engine::store_conformance_tests!(fixture);

#[tokio::test]
async fn run_all_entry_point() {
    assert!(payorch_engine::store::testkit::run_all(fixture).await);
}
