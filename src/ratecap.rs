//! A target's `max-rate`: the generic cell rate algorithm (GCRA, a token bucket kept as one
//! "theoretical arrival time") on a single atomic, shared by every thread that sends to it: one
//! clock read and one compare-and-swap per batch (datagrams, taken by the workers) or per line
//! (lines, taken by the target's line filter), no lock, no timer thread. The burst is one batch's
//! worth, so over any second a target gets at most its rate plus one batch. Floor 1; hot path for
//! capped targets only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A rate cap shared by the workers that send to one target.
#[derive(Debug)]
pub struct RateCap {
    base: Instant,
    /// Nanoseconds between two copies at the rate.
    interval_ns: u64,
    /// How far ahead of now the schedule may run: the burst, less one copy.
    tolerance_ns: u64,
    /// When the next copy would be due if sent at exactly the rate (ns since `base`).
    tat: AtomicU64,
}

impl RateCap {
    /// `per_second` copies a second, in bursts of at most `burst`.
    pub fn new(per_second: u64, burst: usize) -> Self {
        let interval_ns = (1_000_000_000 / per_second.max(1)).max(1);
        Self {
            base: Instant::now(),
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(burst.max(1) as u64 - 1),
            tat: AtomicU64::new(0),
        }
    }

    /// How many of `n` copies may go now; the rest are over the cap.
    pub fn take(&self, n: usize) -> usize {
        self.take_at_instant(n, Instant::now())
    }

    /// How many of `n` copies may go at `now` (a clock read the caller shares with other work).
    pub fn take_at_instant(&self, n: usize, now: Instant) -> usize {
        self.take_at(
            n,
            now.saturating_duration_since(self.base).as_nanos() as u64,
        )
    }

    fn take_at(&self, n: usize, now: u64) -> usize {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            let room = (now + self.tolerance_ns + self.interval_ns).saturating_sub(start);
            let k = (room / self.interval_ns).min(n as u64);
            if k == 0 {
                return 0;
            }
            let next = start + k * self.interval_ns;
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return k as usize,
                Err(seen) => tat = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_never_more_over_any_second() {
        let cap = RateCap::new(1000, 32);
        // A burst of one batch at once, then nothing until time passes.
        assert_eq!(cap.take_at(100, 0), 32);
        assert_eq!(cap.take_at(100, 0), 0);
        assert_eq!(cap.take_at(100, 1_000_000), 1, "one more each millisecond");
        // Offered 10x the rate in batches of 32 every 3.2 ms for 5 s: about the rate passes.
        let cap = RateCap::new(2000, 32);
        let (mut sent, mut t) = (0usize, 0u64);
        let mut per_second = vec![0usize; 5];
        while t < 5_000_000_000 {
            let k = cap.take_at(64, t);
            sent += k;
            per_second[(t / 1_000_000_000) as usize] += k;
            t += 1_600_000;
        }
        assert!((9_968..=10_032).contains(&sent), "{sent}");
        for s in per_second {
            assert!(s <= 2000 + 32, "{s} in one second");
        }
    }

    #[test]
    fn workers_sharing_a_cap_never_take_more_than_it_allows() {
        let cap = std::sync::Arc::new(RateCap::new(10_000, 32));
        let start = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let cap = std::sync::Arc::clone(&cap);
                std::thread::spawn(move || {
                    let mut got = 0;
                    while start.elapsed().as_millis() < 300 {
                        got += cap.take(8);
                    }
                    got
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let elapsed = start.elapsed().as_secs_f64();
        let most = (elapsed * 10_000.0) as usize + 32 + 1;
        assert!(total <= most, "{total} > {most}");
        assert!(total >= 2000, "{total}");
    }
}
