//! Per-stream sequence tracking (loss, duplicates, reordering) and latency summaries for the sink.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest sequence number tracked per stream: a junk datagram claiming seq 4e9 must not make the sink
/// allocate a 512 MiB bitmap. 2^28 datagrams per stream (32 MiB of bitmap) is hours at 100k/s.
const MAX_TRACKED_SEQ: u64 = 1 << 28;

#[derive(Debug, Default)]
struct Stream {
    seen: Vec<u64>,
    received: u64,
    max_seq: Option<u64>,
    duplicates: u64,
    reordered: u64,
}

/// What the sink learned about one stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StreamReport {
    /// Stream id.
    pub stream: u32,
    /// Distinct datagrams received.
    pub received: u64,
    /// Highest sequence number + 1: what should have arrived, as far as the sink can tell.
    pub expected: u64,
    /// `expected - received`.
    pub lost: u64,
    /// Datagrams seen more than once.
    pub duplicates: u64,
    /// Datagrams that arrived after a higher sequence number.
    pub reordered: u64,
}

/// Tracks every stream seen.
#[derive(Debug, Default)]
pub struct Tracker {
    streams: HashMap<u32, Stream>,
    received: u64,
    expected: u64,
    /// Datagrams with a header whose sequence number is beyond what is tracked.
    pub untracked: u64,
}

impl Tracker {
    /// Records one datagram.
    pub fn record(&mut self, stream: u32, seq: u64) {
        if seq >= MAX_TRACKED_SEQ {
            self.untracked += 1;
            return;
        }
        let s = self.streams.entry(stream).or_default();
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= s.seen.len() {
            s.seen.resize((word + 1).next_power_of_two(), 0);
        }
        if s.seen[word] & (1 << bit) != 0 {
            s.duplicates += 1;
            return;
        }
        s.seen[word] |= 1 << bit;
        s.received += 1;
        self.received += 1;
        match s.max_seq {
            Some(m) if seq < m => s.reordered += 1,
            Some(m) => self.expected += seq - m,
            None => self.expected += seq + 1,
        }
        s.max_seq = Some(s.max_seq.map_or(seq, |m| m.max(seq)));
    }

    /// Gaps so far over all streams (kept incrementally, for the progress line).
    pub fn lost_so_far(&self) -> u64 {
        self.expected - self.received
    }

    /// Reports per stream, by stream id.
    pub fn report(&self) -> Vec<StreamReport> {
        let mut out: Vec<StreamReport> = self
            .streams
            .iter()
            .map(|(&stream, s)| {
                let expected = s.max_seq.map_or(0, |m| m + 1);
                StreamReport {
                    stream,
                    received: s.received,
                    expected,
                    lost: expected - s.received,
                    duplicates: s.duplicates,
                    reordered: s.reordered,
                }
            })
            .collect();
        out.sort_by_key(|r| r.stream);
        out
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

/// A histogram of 1 µs to 1 h at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

impl Latency {
    /// Summarises a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One offered rate's results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Asked rate (`null` = max).
    pub offered_rate: Option<f64>,
    /// What the generator achieved.
    pub sent_rate: f64,
    /// Datagrams sent.
    pub sent: u64,
    /// The generator reached the asked rate (within 2 %).
    pub rate_reached: bool,
    /// Distinct datagrams delivered, per target.
    pub delivered: Vec<u64>,
    /// Loss per target, percent of sent.
    pub loss_pct: Vec<f64>,
    /// Kernel drops on the sinks' own sockets (sink-caused loss; should be 0).
    pub sink_kernel_drops: u64,
    /// Forwarder CPU time (user+sys, all threads) per datagram sent, µs.
    pub cpu_us_per_datagram: f64,
    /// Forwarder resident set size at the end of the run, KiB.
    pub rss_kib: u64,
    /// One-way latency over all targets (worst target by p99), µs.
    pub latency_us: Latency,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_duplicates_and_reordering_are_told_apart() {
        let mut t = Tracker::default();
        for seq in [0, 1, 3, 2, 2, 5] {
            t.record(9, seq);
        }
        let r = &t.report()[0];
        assert_eq!(
            (r.received, r.expected, r.lost),
            (5, 6, 1),
            "seq 4 is missing"
        );
        assert_eq!(r.duplicates, 1, "seq 2 twice");
        assert_eq!(r.reordered, 1, "seq 2 after 3");
        assert_eq!(
            t.lost_so_far(),
            1,
            "the running total agrees with the report"
        );
    }

    #[test]
    fn absurd_sequence_numbers_are_not_tracked() {
        let mut t = Tracker::default();
        t.record(0, u64::from(u32::MAX));
        assert_eq!(t.untracked, 1);
        assert!(t.report().is_empty(), "no bitmap allocated for junk");
    }
}
