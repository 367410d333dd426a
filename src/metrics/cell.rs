//! One counter cell's two operations, shared by every counter block: writers add with Release
//! (nothing when the batch added nothing), readers load with Acquire. See `TargetCounters` for why.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds `n` (a batch's worth) to `c`.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    if n != 0 {
        // Release (free on x86: the RMW is a locked instruction anyway): see `TargetCounters`.
        c.fetch_add(n, Ordering::Release);
    }
}

/// The value of `c`.
pub(crate) fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Acquire)
}
