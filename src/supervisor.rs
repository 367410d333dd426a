//! The supervisor: runs one [`Forwarder`] under signals until SIGINT or SIGTERM — SIGHUP reloads,
//! SIGUSR1 dumps latency, a takeover hands over — with systemd's notify protocol, the stats line,
//! the resolver's tick and the health check, then stops it and logs the final accounting.
//!
//! Floor 5 (the edges): the top of the library; `main` calls [`run`].

use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{never, select, tick};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use crate::config::Config;
use crate::control::Loader;
use crate::daemon::Forwarder;
use crate::fanout::StartError;
use crate::metrics::counters::Snapshot;
use crate::metrics::histogram::{LatencySummary, TargetHistograms, append_interval_log};
use crate::report::Stats;
use crate::report::line::{micros_per, stats_line};
use crate::{handover, logging, notify, pool, privileges};

/// Runs the forwarder until SIGINT or SIGTERM, logging a stats line every `stats_interval`, then drains
/// and returns the final accounting. SIGHUP reloads through `loader` (refused and logged without
/// one); SIGUSR1 logs latency. A second SIGINT/SIGTERM during the drain exits at once with the
/// accounting so far. A data thread that dies makes it stop and return [`StartError::Died`].
pub fn run(config: &Config, loader: Option<Loader>) -> Result<Snapshot, StartError> {
    // Before anything is bound: a SIGTERM that arrives during start-up stops cleanly, never kills.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1, SIGHUP])
        .map_err(|source| StartError::Signals { source })?;
    let fwd = Forwarder::start_with(config, loader)?;
    if let Some(who) = &config.user {
        privileges::drop_to(who).map_err(StartError::Privileges)?;
        if who.uid == 0 {
            tracing::warn!(
                user = %who.name,
                "--user names root: every privilege is kept; name an unprivileged user to drop them"
            );
        } else {
            tracing::info!(
                user = %who.name, uid = who.uid, gid = who.gid,
                "every socket bound: running as this user from now on, with no capabilities"
            );
        }
    } else if nix::unistd::Uid::effective().is_root() {
        tracing::info!(
            "running as root: --user NAME drops every privilege once the sockets are bound"
        );
    }
    log_start(config, &fwd);

    let (sig_tx, sig_rx) = crossbeam_channel::bounded(16);
    let stats = std::sync::Arc::clone(fwd.stats());
    std::thread::Builder::new()
        .name("udptee-signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                if stopping && matches!(signal, SIGINT | SIGTERM) {
                    // The logging thread may not get to run again: write straight to stderr.
                    let snap = stats.snapshot();
                    let mut text =
                        format!("udptee: second signal {signal} during the drain: exiting now\n");
                    for line in snap.to_string().lines() {
                        text.push_str(&format!("udptee: at exit: {line}\n"));
                    }
                    logging::write_direct(&text);
                    std::process::exit(1);
                }
                stopping |= matches!(signal, SIGINT | SIGTERM);
                // The supervisor may be gone (draining): a full or closed channel is fine.
                let _ = sig_tx.try_send(signal);
            }
        })
        .map_err(|source| StartError::Spawn {
            name: "udptee-signals".into(),
            source,
        })?;

    let mut systemd = notify::Systemd::from_env();
    systemd.ready(&format!(
        "forwarding {} to {} targets",
        fwd.stats().listener_names().join(" "),
        fwd.stats().target_names().len()
    ));
    // Under systemd, the sockets outlive this process: a restart finds them with their queue.
    crate::net::fds::store_in_systemd(&fwd.systemd_fds());
    let handovers = fwd.handovers().clone();
    let mut handover = None;
    let watchdog = systemd.watchdog_interval().map_or_else(never, tick);
    let ticker = if config.stats_interval.is_zero() {
        never()
    } else {
        tick(config.stats_interval)
    };
    let resolver = if config.resolve_interval.is_zero() {
        never()
    } else {
        tick(config.resolve_interval)
    };
    let health = tick(Duration::from_secs(1));
    let mut failing_lookups = Vec::new();
    let mut last = (Instant::now(), fwd.snapshot(), fwd.cpu_time());
    let mut dumps = LatencyDumps::new();
    let mut died = Vec::new();
    loop {
        select! {
            recv(sig_rx) -> signal => match signal {
                Ok(SIGUSR1) => dumps.dump(config, fwd.stats()),
                Ok(SIGHUP) => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    systemd.reloading();
                    // Logged and counted inside; the running set is kept on error.
                    let outcome = match fwd.control().reload() {
                        Ok(_) => "reloaded",
                        Err(_) => "reload refused; the running set is kept",
                    };
                    systemd.reloaded(outcome);
                }
                Ok(signal) => {
                    tracing::info!(signal, "stopping: draining queues for at most {:?}", config.drain_timeout);
                    systemd.stopping();
                    break;
                }
                Err(_) => break,
            },
            recv(watchdog) -> _ => {
                let _ = systemd.watchdog(fwd.stats().worker_beats(), fwd.stats().ready());
            }
            recv(ticker) -> _ => {
                let now = (Instant::now(), fwd.snapshot(), fwd.cpu_time());
                let secs = (now.0 - last.0).as_secs_f64().max(1e-9);
                systemd.status(&format!(
                    "rx {:.0}/s to {} targets",
                    now.1.received().saturating_sub(last.1.received()) as f64 / secs,
                    fwd.stats().target_names().len()
                ));
                tracing::info!("{}", stats_line(&last.1, &now.1, now.0 - last.0, now.2 - last.2));
                last = now;
            },
            recv(resolver) -> _ => fwd.control().resolve_again(&mut failing_lookups),
            recv(handovers) -> h => if let Ok(h) = h {
                tracing::info!(pid = h.pid, "handing over to the new udptee: draining queues for at most {:?}", config.drain_timeout);
                systemd.stopping();
                fwd.hand_over();
                handover = Some(h);
                break;
            },
            recv(health) -> _ => {
                died = fwd.stats().died();
                if !died.is_empty() {
                    tracing::error!(threads = ?died, "a data thread died; stopping so the supervisor restarts udptee");
                    systemd.stopping();
                    break;
                }
            },
        }
    }
    let cpu = fwd.cpu_time();
    let recorder = std::sync::Arc::clone(fwd.stats().recorder());
    let summary = fwd.shutdown();
    for line in summary.to_string().lines() {
        tracing::info!("final: {line}");
    }
    if let Some(h) = handover {
        h.finish(&handover::Final::of(&summary));
    }
    let r = recorder.counts();
    if r.files > 0 {
        tracing::info!(
            "final: record: offered {}, recorded {} in {} files ({} bytes); filtered {}; dropped queue_full {}, write_error {}; not written at exit {}",
            r.offered,
            r.recorded,
            r.files,
            r.bytes,
            r.filtered,
            r.queue_full,
            r.write_error,
            r.pending()
        );
    }
    tracing::info!(
        "final: forwarder CPU {:?} ({} per datagram received)",
        cpu,
        micros_per(cpu, summary.received())
    );
    if died.is_empty() {
        Ok(summary)
    } else {
        Err(StartError::Died(died))
    }
}

/// Logs what runs: the listen address, targets, workers, backend, memory and receive buffer.
fn log_start(config: &Config, fwd: &Forwarder) {
    let state = fwd.socket_state();
    let uring = fwd.stats().backend() == "uring";
    tracing::info!(
        listen = %fwd.stats().listener_names().join(" "),
        targets = ?config.targets.iter().map(|t| match &t.unix {
            Some(p) => format!("{}=unixgram://{}", t.name, p.display()),
            None => format!("{}={}", t.name, t.resolved),
        }).collect::<Vec<_>>(),
        workers = config.worker_cpus.len(),
        io = fwd.stats().backend(),
        batch = config.batch,
        admin = %fwd.admin_addr().map_or("off".to_string(), |a| format!("http://{a}/metrics")),
        "udptee forwarding"
    );
    if !config.streams.is_empty() {
        tracing::info!(
            stream_bytes = config.stream_bytes(),
            max_connections = config.stream.max_connections,
            idle_timeout = ?config.stream.idle_timeout,
            pack_size = config.stream.pack_bytes,
            "stream listeners: each connection holds at most one unfinished line or frame (max-datagram); the most they can hold is counted in the memory check"
        );
    }
    tracing::info!(
        staging_bytes = config.pool_bytes(uring),
        staging_slots = fwd.pool().capacity(),
        backlog_bytes = config.backlog_bytes(),
        total_bytes = config.pool_bytes(uring) + config.backlog_bytes(),
        "memory: receive staging = workers x (2 x batch{} + 1) x ({} + max-datagram); backlogs = sum of each target's queue-bytes",
        if uring { " + ring" } else { "" },
        pool::HEADROOM,
    );
    if config.streams_only {
        return; // no datagram socket: no receive buffer to speak of
    }
    tracing::info!(
        asked = config.rcvbuf_bytes,
        granted = state.rcvbuf_granted,
        forced = state.forced,
        "receive buffer per worker socket"
    );
    if state.rcvbuf_granted < config.rcvbuf_bytes {
        if state.forced {
            tracing::warn!(
                asked = config.rcvbuf_bytes,
                granted = state.rcvbuf_granted,
                "receive buffer smaller than asked although SO_RCVBUFFORCE was permitted: the kernel capped it"
            );
        } else {
            tracing::warn!(
                asked = config.rcvbuf_bytes,
                granted = state.rcvbuf_granted,
                "receive buffer smaller than asked: SO_RCVBUFFORCE needs CAP_NET_ADMIN, else raise net.core.rmem_max"
            );
        }
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
