//! udptee: a Linux UDP datagram tee.
//!
//! Every datagram that arrives on the listen address is handed, byte for byte, to every target. The
//! data path is built so that one slow or dead target costs only its own copies:
//! - receive workers (one per `--workers`/`--cpus` entry, optionally pinned), each with its own
//!   SO_REUSEPORT socket, read batches with `recvmmsg` into slots of a pool allocated once at start-up;
//! - each datagram's slot is shared, not copied, by every target: its id goes into one bounded queue per
//!   target, and one sender thread per target sends batches with `sendmmsg` on a connected socket;
//! - a full queue, a send error, an oversized datagram or a drain timeout is a counted drop with a named
//!   [`metrics::counters::DropReason`]; nothing is lost silently, nothing waits on a target.
//!
//! Modules: [`config`] and [`cli`] (what to run), [`fanout`] (threads and the [`Forwarder`]), [`pool`]
//! (slots), [`net`] (sockets and the batch syscalls, the only `unsafe` code), [`metrics`] (counters,
//! latency, Prometheus) and `admin` (the HTTP listener).
#![deny(unsafe_code)]

mod admin;
pub mod cli;
pub mod config;
pub mod fanout;
pub mod metrics;
pub mod net;
pub mod pool;

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{never, select, tick};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

pub use config::Config;
pub use fanout::{Forwarder, StartError, Stats};
pub use metrics::counters::{DropReason, Snapshot};
use metrics::histogram::{LatencySummary, TargetHistograms, append_interval_log};
pub use net::{SocketState, socket_drops};

/// Runs the forwarder until SIGINT or SIGTERM, logging a stats line every `stats_interval`, then drains
/// and returns the final accounting.
pub fn run(config: &Config) -> Result<Snapshot, StartError> {
    let fwd = Forwarder::start(config)?;
    log_start(config, &fwd);

    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .map_err(|source| StartError::Signals { source })?;
    let (sig_tx, sig_rx) = crossbeam_channel::bounded(16);
    std::thread::Builder::new()
        .name("udptee-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if sig_tx.send(signal).is_err() {
                    break;
                }
            }
        })
        .map_err(|source| StartError::Spawn {
            name: "udptee-signals".into(),
            source,
        })?;

    let ticker = if config.stats_interval.is_zero() {
        never()
    } else {
        tick(config.stats_interval)
    };
    let mut last = (Instant::now(), fwd.snapshot(), fwd.cpu_time());
    let mut dumps = LatencyDumps::new();
    loop {
        select! {
            recv(sig_rx) -> signal => match signal {
                Ok(SIGUSR1) => dumps.dump(config, fwd.stats()),
                Ok(signal) => {
                    tracing::info!(signal, "stopping: draining queues for at most {:?}", config.drain_timeout);
                    break;
                }
                Err(_) => break,
            },
            recv(ticker) -> _ => {
                let now = (Instant::now(), fwd.snapshot(), fwd.cpu_time());
                tracing::info!("{}", stats_line(&last.1, &now.1, now.0 - last.0, now.2 - last.2));
                last = now;
            },
        }
    }
    let cpu = fwd.cpu_time();
    let summary = fwd.shutdown();
    for line in summary.to_string().lines() {
        tracing::info!("final: {line}");
    }
    tracing::info!(
        "final: forwarder CPU {:?} ({} per datagram received)",
        cpu,
        micros_per(cpu, summary.received())
    );
    Ok(summary)
}

/// CPU microseconds per datagram, or "-" when there were none.
fn micros_per(cpu: Duration, datagrams: u64) -> String {
    if datagrams == 0 {
        return "-".into();
    }
    format!("{:.2} us", cpu.as_secs_f64() * 1e6 / datagrams as f64)
}

fn log_start(config: &Config, fwd: &Forwarder) {
    let state = fwd.socket_state();
    tracing::info!(
        listen = %fwd.local_addr(),
        targets = ?config.targets.iter().map(|t| t.addr.to_string()).collect::<Vec<_>>(),
        workers = config.worker_cpus.len(),
        io = fwd.stats().backend(),
        batch = config.batch,
        queue_depth = config.queue_depth,
        pool_slots = fwd.pool().capacity(),
        pool_mib = config.pool_bytes() / (1 << 20),
        admin = %fwd.admin_addr().map_or("off".to_string(), |a| format!("http://{a}/metrics")),
        "udptee forwarding"
    );
    tracing::info!(
        asked = config.rcvbuf_bytes,
        granted = state.rcvbuf_granted,
        forced = state.forced,
        "receive buffer per worker socket"
    );
    if state.rcvbuf_granted < config.rcvbuf_bytes {
        tracing::warn!(
            asked = config.rcvbuf_bytes,
            granted = state.rcvbuf_granted,
            "receive buffer smaller than asked: SO_RCVBUFFORCE needs CAP_NET_ADMIN, else raise net.core.rmem_max"
        );
    }
}

/// SIGUSR1: logs each target's latency since start and, with `--histogram-log`, appends what was
/// recorded since the previous dump as one interval per target.
struct LatencyDumps {
    start: SystemTime,
    previous: Option<(SystemTime, TargetHistograms)>,
}

impl LatencyDumps {
    fn new() -> Self {
        Self {
            start: SystemTime::now(),
            previous: None,
        }
    }

    fn dump(&mut self, config: &Config, stats: &Stats) {
        if !config.latency {
            tracing::info!("SIGUSR1: latency recording is off (--latency off)");
            return;
        }
        let now = SystemTime::now();
        let cumulative = stats.latency();
        for (name, h) in &cumulative {
            let s = LatencySummary::of(name, h);
            tracing::info!(
                target_addr = %s.target, count = s.count, p50_us = s.p50, p90_us = s.p90, p99_us = s.p99,
                p999_us = s.p999, p9999_us = s.p9999, max_us = s.max,
                "latency since start (kernel receive to send)"
            );
        }
        if let Some(path) = &config.histogram_log {
            let (since, intervals) = match &self.previous {
                Some((at, before)) => {
                    let delta = cumulative
                        .iter()
                        .zip(before)
                        .map(|((name, now), (_, then))| {
                            let mut d = now.clone();
                            // `then` is an earlier state of the same histogram: never more counts.
                            let _ = d.subtract(then);
                            (name.clone(), d)
                        })
                        .collect();
                    (*at, delta)
                }
                None => (self.start, cumulative.clone()),
            };
            if let Err(e) = append_interval_log(path, self.start, since, &intervals) {
                tracing::warn!(path = %path.display(), error = %e, "could not append to --histogram-log");
            }
        }
        self.previous = Some((now, cumulative));
    }
}

/// One stats line: rates over the interval, totals, and every nonzero drop.
fn stats_line(prev: &Snapshot, now: &Snapshot, elapsed: Duration, cpu: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rx = now.received() - prev.received();
    let mut line = format!(
        "rx {}/s (total {}), truncated {}, kernel_drops {}, cpu {}/datagram",
        (rx as f64 / secs).round(),
        now.received(),
        now.truncated(),
        now.rcvbuf_overflow(),
        micros_per(cpu, rx)
    );
    for (t, s) in now.targets.iter().enumerate() {
        let fwd = s.forwarded - prev.targets[t].forwarded;
        let _ = write!(
            line,
            " | {} fwd {}/s dropped {} (queue_full {}, send_error {}) queued {}",
            now.target_names[t],
            (fwd as f64 / secs).round(),
            now.dropped_total(t),
            s.queue_full,
            s.send_errors_total(),
            now.unaccounted(t)
        );
    }
    line
}
