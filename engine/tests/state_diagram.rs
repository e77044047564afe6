//! The order's transition table, the `decide` match and the committed
//! diagram agree.
//!
//! When this fails after a deliberate change to `decide`, regenerate with
//! `UPDATE_STATE_DIAGRAM=1 cargo test -p payorch-engine --test state_diagram`
//! (it rewrites `docs/state-machine.md`) and update `TRANSITIONS` in
//! `engine/src/order/table.rs` from the printed list.

use std::collections::BTreeSet;
use std::path::PathBuf;

use payorch_engine::order::{TRANSITIONS, explore, mermaid};

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/state-machine.md")
}

fn render() -> String {
    format!(
        "# Order state machine\n\n\
         Generated from `TRANSITIONS` in `engine/src/order/table.rs`, which a test\n\
         checks against the `decide` match by running a representative command\n\
         alphabet from every reachable state. Do not edit by hand: run\n\
         `UPDATE_STATE_DIAGRAM=1 cargo test -p payorch-engine --test state_diagram`.\n\n\
         Terminal states (Refunded, Declined, Voided) absorb every late observation\n\
         or call outcome without new events. Self-loops are commands that emit\n\
         events without changing the phase (e.g. a capture request; the capture in\n\
         flight is tracked on the state).\n\n\
         ```mermaid\n{}```\n",
        mermaid()
    )
}

#[test]
fn transition_table_matches_decide() {
    let found = explore().unwrap_or_else(|e| panic!("exploration broke an invariant: {e}"));
    let table: BTreeSet<_> = TRANSITIONS.iter().copied().collect();
    if found != table {
        let listing: Vec<String> = found
            .iter()
            .map(|(f, k, t)| format!("    (P::{f:?}, K::{k:?}, P::{t:?}),"))
            .collect();
        panic!(
            "TRANSITIONS differs from decide.\n missing from table: {:?}\n not reachable: {:?}\n\
             full list for engine/src/order/table.rs:\n{}",
            found.difference(&table).collect::<Vec<_>>(),
            table.difference(&found).collect::<Vec<_>>(),
            listing.join("\n")
        );
    }
}

#[test]
fn state_diagram_doc_is_fresh() {
    let want = render();
    let path = doc_path();
    if std::env::var_os("UPDATE_STATE_DIAGRAM").is_some() {
        std::fs::write(&path, &want).expect("write docs/state-machine.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/state-machine.md is stale: run \
         `UPDATE_STATE_DIAGRAM=1 cargo test -p payorch-engine --test state_diagram`"
    );
}
