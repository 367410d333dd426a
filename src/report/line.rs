//! The stats line: rates over the interval, totals, and every nonzero drop, each labelled as a
//! rate (`/s`) or a total; and CPU per datagram as the final line gives it.

use std::fmt::Write as _;
use std::time::Duration;

use crate::metrics::counters::Snapshot;

/// CPU microseconds per datagram, or "-" when there were none.
pub fn micros_per(cpu: Duration, datagrams: u64) -> String {
    if datagrams == 0 {
        return "-".into();
    }
    format!("{:.2} us", cpu.as_secs_f64() * 1e6 / datagrams as f64)
}

/// One stats line: rates over the interval, totals, and every nonzero drop, each labelled as a rate
/// (`/s`) or a total.
pub fn stats_line(prev: &Snapshot, now: &Snapshot, elapsed: Duration, cpu: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rx = now.received().saturating_sub(prev.received());
    let mut line = format!(
        "rx {}/s, received total {}, truncated total {}, kernel_drops total {}, cpu {}/datagram",
        (rx as f64 / secs).round(),
        now.received(),
        now.truncated(),
        now.rcvbuf_overflow(),
        micros_per(cpu, rx)
    );
    for (t, s) in now.targets.iter().enumerate() {
        let name = &now.target_names[t];
        let before = prev.index_of(name).map_or(0, |p| prev.targets[p].forwarded);
        let fwd = s.forwarded.saturating_sub(before);
        let _ = write!(
            line,
            " | {name} fwd {}/s, dropped total {} (queue_full {}, send_error {}), queued {}",
            (fwd as f64 / secs).round(),
            s.dropped_total(),
            s.queue_full,
            s.send_errors_total(),
            s.queued()
        );
        if s.kernel_forwarded > 0 || s.backlog_full > 0 || s.clone_error > 0 {
            let _ = write!(
                line,
                ", kernel path: fwd total {}, backlog_full total {}, clone_error total {}",
                s.kernel_forwarded, s.backlog_full, s.clone_error
            );
        }
        if let Some(d) = s.receiver_drops {
            let _ = write!(line, ", receiver_drops total {d}");
        }
        if s.up == Some(false) {
            line.push_str(", DOWN");
        }
    }
    if let Some(k) = &now.kernel {
        let passed: u64 = k.passed.iter().map(|(_, n)| n).sum();
        let _ = write!(
            line,
            " | fast path: handled total {}, passed up unhandled total {passed}",
            k.handled
        );
    }
    line
}
