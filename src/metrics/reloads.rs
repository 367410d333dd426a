//! How many reloads were applied and refused: written by the control verbs, read by the report.
//! Floor 1: imports nothing.

use std::sync::atomic::{AtomicU64, Ordering};

/// Reloads so far, by outcome.
#[derive(Debug, Default)]
pub struct ReloadCounters {
    ok: AtomicU64,
    error: AtomicU64,
}

impl ReloadCounters {
    /// Counts one reload: applied (`true`) or refused.
    pub fn count(&self, applied: bool) {
        let c = if applied { &self.ok } else { &self.error };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `(applied, refused)` so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.error.load(Ordering::Relaxed),
        )
    }
}
