//! Validated run-time configuration.
//!
//! `Config` is what the library takes: typed, checked, with no clap types and no strings left to parse.
//! Every default is a named constant with the reason for its value; docs/tuning.md explains each one and
//! the memory it costs. Nothing here is on the hot path.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::net::IoBackend;
use crate::net::uring::ring_entries;

/// Datagrams per `recvmmsg`/`sendmmsg` call: 32, as quinn-udp's `BATCH_SIZE`; tune with `--batch`.
pub const DEFAULT_BATCH: usize = 32;
/// Largest batch accepted: the kernel caps `sendmmsg` at `UIO_MAXIOV` (1024) messages per call.
pub const MAX_BATCH: usize = 1024;
/// Datagrams queued per target: 4096 rides out a 40 ms sender stall at 100k datagrams/s.
pub const DEFAULT_QUEUE_DEPTH: usize = 4096;
/// Upper bound on `--queue-depth`, so a typo cannot ask for terabytes of pool.
pub const MAX_QUEUE_DEPTH: usize = 1 << 22;
/// Receive buffer asked for per worker socket: 8 MiB. Measured with `scripts/bench-rcvbuf.sh`: the stock
/// 208 KiB loses datagrams at 25k/s on a VM with millisecond stalls; 8 MiB holds ~60 ms of 64-byte
/// datagrams at 100k/s (each costs ~1.2 KiB of kernel truesize).
pub const DEFAULT_RCVBUF_BYTES: usize = 8 << 20;
/// Largest datagram forwarded: 9216 bytes carries DogStatsD's 8 KiB payloads and anything a 9000-byte
/// jumbo frame can hold (8972 bytes of UDP payload over IPv4).
pub const DEFAULT_MAX_DATAGRAM: usize = 9216;
/// Largest UDP payload the kernel can hand us (65535 minus the 8-byte UDP header, rounded up).
pub const MAX_DATAGRAM_LIMIT: usize = 65535;
/// How often a stats line is logged.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(10);
/// How long queued datagrams may take to drain at shutdown before they are counted as dropped.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Where the command line serves the admin endpoints unless told otherwise: loopback only.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9125";
/// Longest `--stats-interval` accepted: a day (longer is almost certainly a typo).
pub const MAX_STATS_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest `--drain-timeout` accepted: an hour.
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most targets accepted: each costs a sender thread, a socket and a queue's worth of pool.
pub const MAX_TARGETS: usize = 256;
/// Largest CPU number `--cpus` accepts; guards against a typo expanding to billions of entries.
pub const MAX_CPU_ID: u32 = 4095;

/// A receiver every datagram is copied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address as the user wrote it (host name or literal), for logs and metrics labels.
    pub name: String,
    /// The resolved address the sender connects to.
    pub addr: SocketAddr,
}

/// Everything the forwarder needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every worker binds with `SO_REUSEPORT`. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Receivers, at least one, no duplicates.
    pub targets: Vec<Target>,
    /// One entry per receive worker: the CPU it is pinned to, or `None` for no pinning.
    pub worker_cpus: Vec<Option<usize>>,
    /// CPUs for sender threads, assigned round-robin; empty for no pinning.
    pub sender_cpus: Vec<usize>,
    /// Datagrams per `recvmmsg`/`sendmmsg` call.
    pub batch: usize,
    /// Datagrams queued per target before new copies for it are dropped as `queue_full`.
    pub queue_depth: usize,
    /// Receive buffer asked for on each worker socket.
    pub rcvbuf_bytes: usize,
    /// Send buffer asked for on each target socket; `None` keeps the kernel default.
    pub sndbuf_bytes: Option<usize>,
    /// Largest datagram forwarded; larger ones are counted as `truncated` and go nowhere.
    pub max_datagram: usize,
    /// Period of the stats log line; zero disables it.
    pub stats_interval: Duration,
    /// Longest wait for queues to drain at shutdown.
    pub drain_timeout: Duration,
    /// Admin HTTP listener (`/metrics`, `/latency`, `/healthz`, `/readyz`); `None` disables it.
    pub admin: Option<SocketAddr>,
    /// Record per-target latency histograms (one clock read and one uncontended lock per sent batch).
    pub latency: bool,
    /// On SIGUSR1, also append the interval's histograms to this HdrHistogram interval log.
    pub histogram_log: Option<PathBuf>,
    /// Receive backend.
    pub io_backend: IoBackend,
}

impl Config {
    /// A configuration with documented defaults: one worker, no pinning, latency recorded, no admin
    /// listener (the command line turns it on by default, on loopback).
    pub fn new(listen: SocketAddr, targets: Vec<Target>) -> Self {
        Self {
            listen,
            targets,
            worker_cpus: vec![None],
            sender_cpus: Vec::new(),
            batch: DEFAULT_BATCH,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            rcvbuf_bytes: DEFAULT_RCVBUF_BYTES,
            sndbuf_bytes: None,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            stats_interval: DEFAULT_STATS_INTERVAL,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            admin: None,
            latency: true,
            histogram_log: None,
            io_backend: IoBackend::Auto,
        }
    }

    /// Buffer slots in the pool: enough that every target queue can be full while every worker holds
    /// its receive slots (a batch of spares, an io_uring's provided buffers, one scratch slot) and every
    /// sender has a batch in flight, so a slow target can never starve the others of buffers
    /// (`pool_exhausted` then only happens if this invariant is broken).
    pub fn pool_slots(&self) -> usize {
        let workers = self.worker_cpus.len();
        let targets = self.targets.len();
        workers * (self.batch + usize::from(ring_entries(self.batch)) + 1)
            + targets * (self.queue_depth + self.batch)
    }

    /// Bytes of datagram memory the pool allocates (and touches) at start-up.
    pub fn pool_bytes(&self) -> usize {
        self.pool_slots() * (crate::pool::HEADROOM + self.max_datagram)
    }

    /// Checks the cross-field rules; `Args` conversion and library users both go through it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.targets.is_empty() {
            return Err(ConfigError::NoTargets);
        }
        if self.worker_cpus.is_empty() {
            return Err(ConfigError::Range {
                what: "--workers",
                min: 1,
                max: 1024,
                got: 0,
            });
        }
        check_range(
            "--to (number of targets)",
            self.targets.len(),
            1,
            MAX_TARGETS,
        )?;
        check_range("--batch", self.batch, 1, MAX_BATCH)?;
        check_range("--queue-depth", self.queue_depth, 1, MAX_QUEUE_DEPTH)?;
        check_range("--max-datagram", self.max_datagram, 1, MAX_DATAGRAM_LIMIT)?;
        for (what, got, max) in [
            ("--stats-interval", self.stats_interval, MAX_STATS_INTERVAL),
            ("--drain-timeout", self.drain_timeout, MAX_DRAIN_TIMEOUT),
        ] {
            if got > max {
                return Err(ConfigError::Duration { what, got, max });
            }
        }
        if u32::try_from(self.pool_slots()).is_err() {
            return Err(ConfigError::PoolTooLarge {
                slots: self.pool_slots(),
                bytes: self.pool_bytes(),
            });
        }
        for (i, a) in self.targets.iter().enumerate() {
            if let Some(b) = self.targets[..i].iter().find(|b| b.addr == a.addr) {
                return Err(ConfigError::DuplicateTarget {
                    a: b.name.clone(),
                    b: a.name.clone(),
                    addr: a.addr,
                });
            }
            if forwards_to_itself(self.listen, a.addr) {
                return Err(ConfigError::Loop {
                    target: a.name.clone(),
                    listen: self.listen,
                });
            }
        }
        Ok(())
    }
}

/// True when `target` is, as far as we can tell without asking the kernel, the listen socket itself:
/// forwarding there would multiply every datagram forever.
fn forwards_to_itself(listen: SocketAddr, target: SocketAddr) -> bool {
    if listen.port() == 0 || listen.port() != target.port() {
        return false;
    }
    let l = listen.ip();
    let t = target.ip();
    l == t
        || (l.is_unspecified() && (t.is_loopback() || t.is_unspecified()))
        || (l.is_loopback() && t.is_unspecified())
}

fn check_range(what: &'static str, got: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if got < min || got > max {
        return Err(ConfigError::Range {
            what,
            min,
            max,
            got,
        });
    }
    Ok(())
}

/// Resolves `host:port` (IPv4, `[IPv6]`, or a host name) to the first address the resolver returns.
pub fn resolve(spec: &str) -> Result<SocketAddr, ConfigError> {
    let mut addrs = spec
        .to_socket_addrs()
        .map_err(|source| ConfigError::Resolve {
            spec: spec.to_owned(),
            source,
        })?;
    addrs.next().ok_or_else(|| ConfigError::Resolve {
        spec: spec.to_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"),
    })
}

/// Parses a Linux cpulist (`0-3,6`, as in `/sys/devices/system/cpu/online`) and checks every CPU exists.
pub fn parse_cpus(flag: &'static str, list: &str) -> Result<Vec<usize>, ConfigError> {
    let bad = |problem: String| ConfigError::Cpus {
        flag,
        list: list.to_owned(),
        problem,
    };
    // The cpulist crate expands ranges eagerly: bound the numbers first so `0-4000000000` is an error,
    // not a 16 GB allocation.
    if list.split([',', '-', ':']).any(|n| {
        n.trim()
            .parse::<u64>()
            .is_ok_and(|n| n > u64::from(MAX_CPU_ID))
    }) {
        return Err(bad(format!(
            "CPU numbers above {MAX_CPU_ID} are not supported"
        )));
    }
    let cpus = cpulist::parse(list.trim()).map_err(|e| bad(e.to_string()))?;
    if cpus.is_empty() {
        return Err(bad("the list is empty".into()));
    }
    let online: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect();
    let cpus: Vec<usize> = cpus.into_iter().map(|c| c as usize).collect();
    if let Some(missing) = cpus.iter().find(|c| !online.contains(c)) {
        return Err(bad(format!(
            "CPU {missing} is not available to this process (allowed: {online:?})"
        )));
    }
    Ok(cpus)
}

/// Why a configuration was rejected. Each message names the flag and the value at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No `--to` was given.
    #[error("no targets: give at least one --to HOST:PORT")]
    NoTargets,
    /// An address did not resolve.
    #[error(
        "cannot resolve {spec:?} (expected HOST:PORT, e.g. 127.0.0.1:8126 or [::1]:8126): {source}"
    )]
    Resolve {
        /// What the user wrote.
        spec: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// A number outside its allowed range.
    #[error("{what} must be between {min} and {max}, got {got}")]
    Range {
        /// The flag.
        what: &'static str,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
        /// What was given.
        got: usize,
    },
    /// A malformed or unavailable CPU list.
    #[error("{flag} {list:?}: {problem}")]
    Cpus {
        /// The flag.
        flag: &'static str,
        /// What the user wrote.
        list: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Two targets resolve to the same address: every datagram would be sent there twice.
    #[error(
        "targets {a:?} and {b:?} are the same address {addr}: each datagram would be sent twice"
    )]
    DuplicateTarget {
        /// First spelling.
        a: String,
        /// Second spelling.
        b: String,
        /// The shared address.
        addr: SocketAddr,
    },
    /// A duration beyond its sane maximum.
    #[error("{what} must be at most {max:?}, got {got:?}")]
    Duration {
        /// The flag.
        what: &'static str,
        /// What was given.
        got: Duration,
        /// The largest accepted.
        max: Duration,
    },
    /// The pool these settings need has more slots than a slot id can name.
    #[error(
        "targets x --queue-depth need {slots} pool slots ({bytes} bytes); lower --queue-depth or --max-datagram"
    )]
    PoolTooLarge {
        /// Slots needed.
        slots: usize,
        /// Bytes needed.
        bytes: usize,
    },
    /// A target is the listen address itself.
    #[error(
        "target {target:?} is the listen address {listen}: udptee would forward to itself forever"
    )]
    Loop {
        /// The offending target.
        target: String,
        /// The listen address.
        listen: SocketAddr,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Target {
        Target {
            name: s.into(),
            addr: s.parse().unwrap(),
        }
    }

    #[test]
    fn pool_covers_every_full_queue_plus_batches_in_flight() {
        let mut c = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            vec![target("127.0.0.1:1"), target("127.0.0.1:2")],
        );
        c.queue_depth = 100;
        c.batch = 8;
        c.worker_cpus = vec![None; 3];
        assert_eq!(
            c.pool_slots(),
            3 * (8 + 64 + 1) + 2 * (100 + 8),
            "pool must cover W*(B+R+1) + T*(D+B), R = io_uring provided buffers per worker"
        );
    }

    #[test]
    fn rejects_self_loop_and_duplicates() {
        let c = Config::new(
            "0.0.0.0:8125".parse().unwrap(),
            vec![target("127.0.0.1:8125")],
        );
        assert!(
            matches!(c.validate(), Err(ConfigError::Loop { .. })),
            "unspecified listen + loopback target on the same port loops"
        );
        let c = Config::new(
            "0.0.0.0:8125".parse().unwrap(),
            vec![target("127.0.0.1:8126"), target("127.0.0.1:8126")],
        );
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DuplicateTarget { .. })
        ));
        let c = Config::new(
            "0.0.0.0:8125".parse().unwrap(),
            vec![target("127.0.0.1:8126")],
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn the_largest_valid_pool_still_fits_a_slot_id() {
        let mut c = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            (1..=MAX_TARGETS)
                .map(|p| target(&format!("127.0.0.1:{p}")))
                .collect(),
        );
        c.queue_depth = MAX_QUEUE_DEPTH;
        c.batch = MAX_BATCH;
        c.worker_cpus = vec![None; 1024];
        assert!(
            u32::try_from(c.pool_slots()).is_ok(),
            "BufId is a u32: every valid config must fit"
        );
        assert!(
            c.validate().is_ok(),
            "and such a config validates (memory is checked at start-up)"
        );
        c.targets.push(target("127.0.0.1:60000"));
        assert!(
            matches!(c.validate(), Err(ConfigError::Range { .. })),
            "more than MAX_TARGETS targets is refused"
        );
    }

    #[test]
    fn cpu_lists_are_bounded_and_checked() {
        assert!(parse_cpus("--cpus", "0").is_ok(), "CPU 0 always exists");
        assert!(
            parse_cpus("--cpus", "0-4000000000").is_err(),
            "huge ranges are refused before expansion"
        );
        assert!(
            parse_cpus("--cpus", "4000").is_err(),
            "CPUs this host lacks are refused"
        );
        assert!(parse_cpus("--cpus", "a-b").is_err());
        assert!(
            parse_cpus("--cpus", "").is_err(),
            "an empty list pins nothing and is refused"
        );
    }

    #[test]
    fn unresolvable_names_are_errors() {
        assert!(resolve("no-such-host.invalid:8125").is_err());
        assert!(resolve("127.0.0.1").is_err(), "a port is required");
        assert_eq!(resolve("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
    }
}
