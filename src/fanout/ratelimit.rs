//! Rate-limited logging for per-datagram errors: at most one event per interval per site, carrying how
//! many occurrences it stands for (quinn's `IO_ERROR_LOG_INTERVAL`, vector's `internal_log_rate_limit`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One event per this interval at most, per call site.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts occurrences and says when one should be logged.
#[derive(Debug)]
pub(crate) struct RateLimit {
    last: Option<Instant>,
    pending: u64,
}

impl RateLimit {
    pub(crate) const fn new() -> Self {
        Self {
            last: None,
            pending: 0,
        }
    }

    /// Records `n` occurrences; returns how many to report if an event is due now.
    pub(crate) fn hit(&mut self, n: u64) -> Option<u64> {
        self.pending += n;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < LOG_INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// A [`RateLimit`] shared by every thread that reports the same condition (one target's send errors
/// from the workers' inline sends and from its sender), so the condition is logged once per interval,
/// not once per call site, with the true count of what it stands for. Taken only on an error.
#[derive(Debug)]
pub(crate) struct SharedRateLimit(Mutex<RateLimit>);

impl SharedRateLimit {
    pub(crate) const fn new() -> Self {
        Self(Mutex::new(RateLimit::new()))
    }

    /// Records `n` occurrences; returns how many to report if an event is due now.
    pub(crate) fn hit(&self, n: u64) -> Option<u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).hit(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_hit_logs_then_suppresses() {
        let mut r = RateLimit::new();
        assert_eq!(r.hit(1), Some(1), "the first occurrence is logged at once");
        assert_eq!(r.hit(5), None, "within the interval nothing is logged");
        assert_eq!(
            r.pending, 5,
            "suppressed occurrences are carried to the next event"
        );
    }

    #[test]
    fn a_shared_limit_counts_every_site() {
        let r = SharedRateLimit::new();
        assert_eq!(r.hit(1), Some(1));
        assert_eq!(r.hit(2), None, "a second call site is suppressed too");
        assert_eq!(r.hit(3), None);
        assert_eq!(
            r.0.lock().unwrap().pending,
            5,
            "and its occurrences are carried, not lost"
        );
    }
}
