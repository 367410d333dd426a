//! `udptee-loadgen spin`: an idle-priority busy loop that counts how much of its CPU nothing else
//! wanted. Pinned to the forwarder's core, its rate under load against its rate alone is the share
//! of that core everything else took, softirq work included, which the kernel's tick-based CPU
//! accounting (without IRQ time) mostly does not show in /proc.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// What one spin measured.
#[derive(Debug, serde::Serialize)]
pub struct SpinReport {
    /// Loop iterations per second of wall time.
    pub iterations_per_sec: f64,
    /// Seconds spun.
    pub seconds: f64,
}

/// Spins for `duration` at SCHED_IDLE (it runs only when nothing else on its CPU wants to).
pub fn spin(duration: Duration) -> Result<SpinReport> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on this thread (pid 0) with a valid, initialised parameter.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setting SCHED_IDLE");
    }
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < duration {
        // A fixed amount of work between clock reads.
        for _ in 0..1000 {
            n = black_box(n.wrapping_add(1));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(SpinReport {
        iterations_per_sec: n as f64 / secs,
        seconds: secs,
    })
}
