//! Latency: per (thread, target) hdrhistograms of the time from the kernel's receive timestamp
//! (SO_TIMESTAMPNS) to the return of the `sendmmsg` that sent the copy.
//!
//! Each histogram has one writer, which takes its mutex once per sent *batch* (uncontended except
//! while a reader merges); readers merge them off the hot path for SIGUSR1, `/latency` and the
//! interval log. One clock read per batch.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2Serializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde::Serialize;

/// One latency histogram per target, in `--to` order, with the target's name.
pub type TargetHistograms = Vec<(String, Histogram<u64>)>;

/// Highest latency tracked, µs (10 s); larger values are recorded as this.
const MAX_MICROS: u64 = 10_000_000;

/// A new, empty latency histogram: 1 µs to 10 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant bounds are valid")
}

/// Nanoseconds since the Unix epoch now (the clock SO_TIMESTAMPNS uses).
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One thread's latency samples for one target.
#[derive(Debug)]
pub struct LatencyRecorder(Mutex<Histogram<u64>>);

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self(Mutex::new(new_histogram()))
    }
}

impl LatencyRecorder {
    /// Records one sent batch: `sent_nanos` is when sendmmsg returned, `rx_nanos` each copy's kernel
    /// receive time (0 when unknown: not recorded).
    pub fn record_batch(&self, sent_nanos: u64, rx_nanos: impl Iterator<Item = u64>) {
        let Ok(mut h) = self.0.lock() else { return };
        for rx in rx_nanos.filter(|&rx| rx > 0) {
            h.saturating_record((sent_nanos.saturating_sub(rx) / 1000).max(1));
        }
    }

    /// Adds these samples to `into`.
    pub fn merge_into(&self, into: &mut Histogram<u64>) {
        if let Ok(h) = self.0.lock() {
            // Same bounds on both sides, so adding cannot fail.
            let _ = into.add(&*h);
        }
    }
}

/// Percentiles of one target's latency, µs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Target as written.
    pub target: String,
    /// Copies sent (samples).
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest.
    pub max: u64,
}

impl LatencySummary {
    /// Summarises one target's histogram.
    pub fn of(target: &str, h: &Histogram<u64>) -> Self {
        Self {
            target: target.to_owned(),
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// Appends one interval per target to an HdrHistogram interval log (the format HdrHistogram's own
/// tools plot), writing the header first if the file is new.
pub fn append_interval_log(
    path: &Path,
    process_start: SystemTime,
    interval_start: SystemTime,
    intervals: &[(String, Histogram<u64>)],
) -> io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let fresh = file.metadata()?.len() == 0;
    let mut builder = IntervalLogWriterBuilder::new();
    if fresh {
        builder.add_comment(
            "udptee latency: kernel receive to sendmmsg return, microseconds, tagged by target",
        );
        builder.with_start_time(process_start);
    }
    let mut serializer = V2Serializer::new();
    let mut log = builder.begin_log_with(&mut file, &mut serializer)?;
    let now = SystemTime::now();
    let offset = interval_start
        .duration_since(process_start)
        .unwrap_or(Duration::ZERO);
    let length = now.duration_since(interval_start).unwrap_or(Duration::ZERO);
    for (target, h) in intervals {
        log.write_histogram(
            h,
            offset,
            length,
            Tag::new(&target.replace([',', ' '], "_")),
        )
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_record_receive_to_send_in_micros() {
        let r = LatencyRecorder::default();
        r.record_batch(10_000_000, [9_000_000, 9_990_000, 0].into_iter());
        let mut h = new_histogram();
        r.merge_into(&mut h);
        assert_eq!(
            h.len(),
            2,
            "copies without a receive timestamp are not samples"
        );
        assert_eq!(h.max(), h.highest_equivalent(1000), "1 ms");
        assert_eq!(h.min(), 10, "10 µs");
    }

    #[test]
    fn interval_log_is_readable_by_hdrhistogram() {
        let dir = std::env::temp_dir().join(format!("udptee-hlog-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let mut h = new_histogram();
        h.record(42).unwrap();
        let start = SystemTime::now();
        append_interval_log(&dir, start, start, &[("127.0.0.1:8126".into(), h.clone())]).unwrap();
        append_interval_log(&dir, start, start, &[("127.0.0.1:8126".into(), h)]).unwrap();
        let text = std::fs::read(&dir).unwrap();
        let mut n = 0;
        for entry in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&text) {
            if let Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(i)) = entry {
                assert_eq!(
                    i.tag().map(|t| t.as_str().to_owned()),
                    Some("127.0.0.1:8126".to_owned())
                );
                n += 1;
            }
        }
        assert_eq!(n, 2, "appending adds intervals, the header is written once");
        let _ = std::fs::remove_file(&dir);
    }
}
