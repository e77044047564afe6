//! PayKKa-shaped identifiers: a two-letter prefix and 17 digits
//! (`GW…` orders, `RG…` refunds, `TK…` tokens, `CS…` sessions, `RA…`
//! agreements), unique within one sandbox.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub(crate) struct IdGen {
    next: AtomicU64,
}

impl IdGen {
    pub(crate) fn new() -> Self {
        IdGen {
            next: AtomicU64::new(10_000_000_000_000_001),
        }
    }

    pub(crate) fn next(&self, prefix: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{n:017}")
    }
}
