//! The status page's data: `GET /status.json`, and the page itself (`GET /`), compiled into the
//! binary (`assets/status.html`: no external script, font or stylesheet).
//!
//! A sampler on the admin runtime takes one snapshot of the counters a second into a fixed ring of
//! [`SAMPLES`] (five minutes): rates over the last second and minute and each target's sparkline
//! come from differences of those samples. Nothing is added to the data path: the snapshot reads
//! the same counters a scrape reads.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::metrics::counters::{DropReason, Snapshot};
use crate::report::Stats;

/// The page.
pub const PAGE: &str = include_str!("../../assets/status.html");
/// Its stylesheet.
pub const CSS: &str = include_str!("../../assets/status.css");
/// Its script.
pub const JS: &str = include_str!("../../assets/status.js");
/// Samples kept: one a second for five minutes, and the one before.
pub const SAMPLES: usize = 301;
/// How often the sampler runs.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One target's counters in a sample.
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    offered: u64,
    forwarded: u64,
    bytes: u64,
    dropped: u64,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    received: u64,
    received_bytes: u64,
    kernel_drops: u64,
    targets: Vec<(String, Point)>,
}

/// The last five minutes of samples.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

/// Per second, between two samples.
fn per_sec(now: u64, then: u64, secs: f64) -> f64 {
    now.saturating_sub(then) as f64 / secs.max(1e-3)
}

impl History {
    /// An empty history with room for [`SAMPLES`].
    pub fn new() -> Self {
        Self {
            samples: VecDeque::with_capacity(SAMPLES),
        }
    }

    /// Adds a sample of `snap`, dropping the oldest beyond [`SAMPLES`].
    pub fn record(&mut self, snap: &Snapshot, at: Instant) {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at,
            received: snap.received(),
            received_bytes: snap.received_bytes(),
            kernel_drops: snap.rcvbuf_overflow(),
            targets: snap
                .target_names
                .iter()
                .zip(&snap.targets)
                .map(|(n, t)| {
                    (
                        n.clone(),
                        Point {
                            offered: t.offered,
                            forwarded: t.forwarded,
                            bytes: t.bytes,
                            dropped: t.dropped_total(),
                        },
                    )
                })
                .collect(),
        });
    }

    /// The newest sample and the one closest to `ago` before it.
    fn pair(&self, ago: Duration) -> Option<(&Sample, &Sample)> {
        let last = self.samples.back()?;
        let first = self
            .samples
            .iter()
            .rev()
            .skip(1)
            .find(|s| last.at.duration_since(s.at) + Duration::from_millis(500) >= ago)
            .or_else(|| self.samples.front().filter(|f| f.at < last.at))?;
        Some((last, first))
    }

    fn point(s: &Sample, name: &str) -> Option<Point> {
        s.targets.iter().find(|(n, _)| n == name).map(|(_, p)| *p)
    }

    /// The listener's rates over `ago`: datagrams/s, bytes/s, kernel drops/s.
    fn listener(&self, ago: Duration) -> serde_json::Value {
        match self.pair(ago) {
            Some((last, first)) => {
                let secs = last.at.duration_since(first.at).as_secs_f64();
                json!({
                    "datagrams": per_sec(last.received, first.received, secs),
                    "bytes": per_sec(last.received_bytes, first.received_bytes, secs),
                    "kernel_drops": per_sec(last.kernel_drops, first.kernel_drops, secs),
                    "seconds": secs,
                })
            }
            None => serde_json::Value::Null,
        }
    }

    /// A target's rates over `ago`: offered (in), forwarded (out), bytes out, dropped, per second.
    fn target(&self, name: &str, ago: Duration) -> serde_json::Value {
        let Some((last, first)) = self.pair(ago) else {
            return serde_json::Value::Null;
        };
        let (Some(l), f) = (Self::point(last, name), Self::point(first, name)) else {
            return serde_json::Value::Null;
        };
        let f = f.unwrap_or_default();
        let secs = last.at.duration_since(first.at).as_secs_f64();
        json!({
            "in": per_sec(l.offered, f.offered, secs),
            "out": per_sec(l.forwarded, f.forwarded, secs),
            "bytes_out": per_sec(l.bytes, f.bytes, secs),
            "dropped": per_sec(l.dropped, f.dropped, secs),
            "seconds": secs,
        })
    }

    /// A target's forwarded datagrams/s between consecutive samples, oldest first (the sparkline).
    fn spark(&self, name: &str) -> Vec<f64> {
        let pts: Vec<(Instant, Option<Point>)> = self
            .samples
            .iter()
            .map(|s| (s.at, Self::point(s, name)))
            .collect();
        pts.windows(2)
            .map(|w| match (w[0].1, w[1].1) {
                (Some(a), Some(b)) => per_sec(
                    b.forwarded,
                    a.forwarded,
                    w[1].0.duration_since(w[0].0).as_secs_f64(),
                ),
                _ => 0.0,
            })
            .collect()
    }
}

/// `GET /status.json`: everything the page shows. `primary` names the target the others are
/// compared with (the first one by default).
pub(crate) fn status_json(
    stats: &Stats,
    history: &History,
    primary: Option<&str>,
) -> serde_json::Value {
    let snap = stats.snapshot();
    let table = stats.registry().current();
    let latency = stats.latency_summaries();
    let primary = primary
        .map(str::to_owned)
        .or_else(|| table.targets.first().map(|t| t.spec.name.clone()));
    let parity = primary
        .as_deref()
        .and_then(|p| crate::report::json::parity_json(stats, Some(p)).ok());
    let targets: Vec<serde_json::Value> = table
        .targets
        .iter()
        .map(|t| {
            let name = &t.spec.name;
            let s = snap
                .index_of(name)
                .map(|i| snap.targets[i].clone())
                .unwrap_or_default();
            let dropped: serde_json::Map<String, serde_json::Value> = DropReason::PER_TARGET
                .iter()
                .map(|r| (r.as_str().to_owned(), json!(s.dropped(*r))))
                .collect();
            let lat = latency.iter().find(|l| &l.target == name);
            let versus = parity
                .as_ref()
                .and_then(|p| p["targets"].as_array())
                .and_then(|a| a.iter().find(|x| x["name"] == json!(name)))
                .and_then(|x| x.get("versus_primary").cloned());
            json!({
                "name": name,
                "addr": t.spec.addr,
                "path": stats.registry().path_of(name),
                "enabled": t.spec.enabled,
                "up": s.up,
                "rate_1s": history.target(name, Duration::from_secs(1)),
                "rate_60s": history.target(name, Duration::from_secs(60)),
                "offered": s.offered,
                "forwarded": s.forwarded,
                "kernel_forwarded": s.kernel_forwarded,
                "dropped": dropped,
                "dropped_total": s.dropped_total(),
                "receiver_drops": s.receiver_drops,
                "queue": {
                    "datagrams": s.queued(),
                    "bytes": t.core.ring.used_bytes(),
                    "capacity_bytes": t.core.ring.capacity(),
                    "fill": t.core.ring.used_bytes() as f64 / t.core.ring.capacity().max(1) as f64,
                },
                "latency_us": lat.map(|l| json!({"p50": l.p50, "p99": l.p99, "count": l.count})),
                "versus_primary": versus,
                "parity_tracked": t.spec.parity || !t.spec.lines.is_passthrough(),
                "spark": history.spark(name),
                "members": t.core.group.as_ref().map(|g| g.members().iter().map(|m| json!({
                    "addr": m.addr,
                    "up": m.up,
                    "share": m.share,
                    "last_check": m.last_check,
                    "forwarded": m.books.forwarded,
                    "dropped": m.books.dropped_total(),
                })).collect::<Vec<_>>()),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "backend": stats.backend(),
        "ready": stats.ready().is_ok(),
        "received": snap.received(),
        "kernel_drops": snap.rcvbuf_overflow(),
        "listener_1s": history.listener(Duration::from_secs(1)),
        "listener_60s": history.listener(Duration::from_secs(60)),
        "workers": snap.workers.iter().map(|w| json!({
            "received": w.received,
            "kernel_drops": w.rcvbuf_overflow,
            "truncated": w.truncated,
        })).collect::<Vec<_>>(),
        "primary": primary,
        "targets": targets,
        "fast_path": snap.kernel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::counters::TargetSnapshot;

    fn snap(forwarded: u64) -> Snapshot {
        Snapshot {
            workers: Vec::new(),
            targets: vec![TargetSnapshot {
                offered: forwarded,
                forwarded,
                ..TargetSnapshot::default()
            }],
            target_names: vec!["t".into()],
            kernel: None,
            listeners: Vec::new(),
        }
    }

    #[test]
    fn rates_and_sparklines_come_from_a_fixed_ring() {
        let mut h = History::new();
        let t0 = Instant::now();
        for i in 0..400u64 {
            h.record(&snap(i * 100), t0 + Duration::from_secs(i));
        }
        assert_eq!(h.samples.len(), SAMPLES, "never more than the ring holds");
        let r = h.target("t", Duration::from_secs(60));
        assert_eq!(r["out"], json!(100.0));
        assert_eq!(r["seconds"], json!(60.0));
        let spark = h.spark("t");
        assert_eq!(spark.len(), SAMPLES - 1);
        assert!(spark.iter().all(|&v| v == 100.0));
        assert!(h.target("nobody", Duration::from_secs(1)).is_null());
        assert!(History::new().target("t", Duration::from_secs(1)).is_null());
    }
}
