//! Test helpers other crates may reuse: a manual clock.

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use crate::store::Clock;

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    /// 2026-01-01T00:00:00Z.
    pub fn at_epoch_2026() -> Self {
        Self::new(
            OffsetDateTime::from_unix_timestamp(1_767_225_600)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
    }

    pub fn advance(&self, by: Duration) {
        let mut g = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *g += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}
