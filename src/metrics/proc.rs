//! The kernel's view, read from procfs: per-thread CPU time and the host's UDP error counters.
//!
//! Read on demand by the stats line, the admin endpoint and the final summary; never on the hot path.

use std::time::Duration;

/// CPU time of thread `tid` of this process in ns, from `/proc/self/task/TID/schedstat` (the
/// scheduler's nanosecond run time, not tick-sampled like `stat`), or `None` if it has exited.
pub fn thread_cpu_nanos(tid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// CPU time (user + system) of process `pid`, all threads, or `None` if it is gone.
pub fn process_cpu_time(pid: i32) -> Option<Duration> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some(ticks(stat.utime + stat.stime))
}

fn ticks(n: u64) -> Duration {
    Duration::from_nanos(n.saturating_mul(1_000_000_000) / procfs::ticks_per_second().max(1))
}
