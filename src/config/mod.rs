//! Validated run-time configuration.
//!
//! `Config` is what the library takes: typed, checked, with no clap types and no strings left to parse.
//! Every default is a named constant with the reason for its value; docs/tuning.md explains each one and
//! the memory it costs. Nothing here is on the hot path.

//!
//! Floor 1 of the house: it imports nothing of udptee's. Every setting the program has is defined
//! here (including the fast path's mode, the recording and the line settings) and imported by the
//! modules that act on it. `file` reads the TOML file; the command line's mapping is in `cli`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub mod addr;
pub mod error;
pub mod file;
pub mod group;
pub mod limits;
pub mod lines;
pub mod listen;
pub mod parse;
pub mod rate;
pub mod settings;
pub mod table;
pub mod target;

pub use self::addr::{
    Resolve, Resolver, SystemResolver, UnixListen, canonical, local_addresses, resolve,
};
pub use self::error::ConfigError;
pub use self::group::{GroupSpec, MemberSpec};
pub use self::limits::*;
pub use self::lines::LineSettings;
pub use self::listen::{
    DatagramListen, ListenAddr, Listening, MAX_CONNECTIONS, Origins, StreamListen, StreamSettings,
};
use self::parse::check_range;
pub use self::parse::{parse_bytes, parse_cpus, parse_duration};
pub use self::rate::{MaxRate, RateUnit};
pub use self::settings::{FastPathMode, IoBackend, RecordSettings, RunAs};
pub use self::target::{
    TargetSpec, UNIXGRAM, check_name, unixgram_name, unixgram_path, validate_targets,
};

/// Everything the forwarder needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every worker binds with `SO_REUSEPORT`. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Receivers, at least one, no duplicate names or addresses.
    pub targets: Vec<TargetSpec>,
    /// One entry per receive worker: the CPU it is pinned to, or `None` for no pinning.
    pub worker_cpus: Vec<Option<usize>>,
    /// CPUs for sender threads, assigned round-robin; empty for no pinning.
    pub sender_cpus: Vec<usize>,
    /// Datagrams per `recvmmsg`/`sendmmsg` call.
    pub batch: usize,
    /// Default for targets: datagrams queued before new copies are dropped as `queue_full`.
    pub queue_depth: usize,
    /// Default for targets: bytes queued before new copies are dropped as `queue_full`.
    pub queue_bytes: usize,
    /// Most targets the set may hold at once (start-up, reload and the admin API).
    pub max_targets: usize,
    /// How often host names in target addresses are looked up again; zero never.
    pub resolve_interval: Duration,
    /// The resolver for target host names.
    pub resolver: Resolver,
    /// Bearer token required for mutating admin requests (read from `--admin-token-file`).
    pub admin_token: Option<String>,
    /// The user to switch to once every socket is bound (`--user`).
    pub user: Option<RunAs>,
    /// Receive buffer asked for on each worker socket.
    pub rcvbuf_bytes: usize,
    /// Default for targets: send buffer; `None` keeps the kernel default.
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
    /// The recording settings (`--record*`, `[record]`); also the defaults of `POST /record/start`.
    pub record: Option<RecordSettings>,
    /// Start recording at start-up (and on reload) when `record` is set.
    pub record_start: bool,
    /// `--allow`: forward only for senders in these prefixes (empty: everyone).
    pub allow: Vec<ipnet::IpNet>,
    /// Where this instance answers a takeover (`--control-socket`); `None`: nowhere.
    pub control_socket: Option<PathBuf>,
    /// `--takeover`: take the listen sockets from the udptee on `control_socket` instead of binding.
    pub takeover: bool,
    /// `--listen unixgram:///path`: receive on a Unix datagram socket (`listen` is then unused).
    pub listen_unix: Option<UnixListen>,
    /// No UDP or unixgram listener at all, only `streams` (`listen` and `listen_unix` unused).
    pub streams_only: bool,
    /// Datagram listeners after the first (`listen` or `listen_unix`), each with its own workers.
    pub extra_listen: Vec<DatagramListen>,
    /// `--listen tcp://` and `--listen unix://`: stream listeners beside the datagram ones.
    pub streams: Vec<StreamListen>,
    /// The stream listeners' bounds (`--max-connections`, `--idle-timeout`, `--pack-size`).
    pub stream: StreamSettings,
    /// `--fast-path`: copy to local targets in the kernel.
    pub fast_path: FastPathMode,
    /// `--fast-path-interfaces`: where to attach it (empty: where the listen address receives).
    pub fast_path_interfaces: Vec<String>,
}

impl Config {
    /// A configuration with documented defaults: one worker, no pinning, latency recorded, no admin
    /// listener (the command line turns it on by default, on loopback).
    pub fn new(listen: SocketAddr, targets: Vec<TargetSpec>) -> Self {
        Self {
            listen,
            targets,
            worker_cpus: vec![None],
            sender_cpus: Vec::new(),
            batch: DEFAULT_BATCH,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_targets: MAX_TARGETS,
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            resolver: Resolver::default(),
            admin_token: None,
            user: None,
            rcvbuf_bytes: DEFAULT_RCVBUF_BYTES,
            sndbuf_bytes: None,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            stats_interval: DEFAULT_STATS_INTERVAL,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            admin: None,
            latency: true,
            histogram_log: None,
            io_backend: IoBackend::Auto,
            record: None,
            record_start: true,
            allow: Vec::new(),
            control_socket: None,
            takeover: false,
            listen_unix: None,
            streams_only: false,
            extra_listen: Vec::new(),
            streams: Vec::new(),
            stream: StreamSettings::default(),
            fast_path: FastPathMode::Off,
            fast_path_interfaces: Vec::new(),
        }
    }

    /// Receive staging slots: each worker holds a batch armed for the kernel (or an io_uring's
    /// provided buffers), a batch of spares and one scratch slot. Targets hold no slots: their
    /// backlogs are copies in their own byte rings, so no target can starve the others of slots.
    pub fn pool_slots(&self, uring: bool) -> usize {
        let ring = if uring {
            usize::from(ring_entries(self.batch))
        } else {
            0
        };
        let datagram_listeners = usize::from(!self.streams_only) + self.extra_listen.len();
        datagram_listeners * self.worker_cpus.len() * (2 * self.batch + ring + 1)
            + self.streams.len() * (self.batch + 1)
    }

    /// Every listener's name, the first datagram one first (a UDP one as configured, before
    /// binding).
    pub fn listener_names(&self) -> Vec<String> {
        self.datagram_listeners()
            .iter()
            .map(DatagramListen::name)
            .chain(self.streams.iter().map(StreamListen::name))
            .collect()
    }

    /// The datagram listeners: the first (`listen` or `listen_unix`, none when `streams_only`),
    /// then `extra_listen`.
    pub fn datagram_listeners(&self) -> Vec<DatagramListen> {
        let first = match &self.listen_unix {
            _ if self.streams_only => None,
            Some(u) => Some(DatagramListen::Unixgram(u.clone())),
            None => Some(DatagramListen::Udp(self.listen)),
        };
        first
            .into_iter()
            .chain(self.extra_listen.iter().cloned())
            .collect()
    }

    /// Every address this configuration listens on (as configured, before binding).
    pub fn listening(&self) -> Listening {
        let mut l = Listening::default();
        for d in self.datagram_listeners() {
            match d {
                DatagramListen::Udp(a) => l.udp.push(a),
                DatagramListen::Unixgram(u) => l.unixgram.push(u.path),
            }
        }
        for s in &self.streams {
            match s {
                StreamListen::Tcp(a) => l.tcp.push(*a),
                StreamListen::Unix(u) => l.unix.push(u.path.clone()),
            }
        }
        l
    }

    /// Bytes the stream listeners may hold at most: each connection's unfinished line or frame.
    pub fn stream_bytes(&self) -> usize {
        self.streams.len() * self.stream.max_connections * (self.max_datagram + 4)
    }

    /// Bytes of datagram memory the pool allocates (and touches) at start-up.
    pub fn pool_bytes(&self, uring: bool) -> usize {
        self.pool_slots(uring) * (HEADROOM + self.max_datagram)
    }

    /// Bytes allocated (and touched) for target backlogs: the sum of each target's `queue_bytes`,
    /// and of its series budget's tables.
    pub fn backlog_bytes(&self) -> usize {
        self.targets
            .iter()
            .map(|t| t.queue_bytes + t.lines.series_bytes())
            .sum()
    }

    /// Checks the cross-field rules; `Args` conversion and library users both go through it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.worker_cpus.is_empty() {
            return Err(ConfigError::Range {
                what: "--workers",
                min: 1,
                max: 1024,
                got: 0,
            });
        }
        check_range("--batch", self.batch, 1, MAX_BATCH)?;
        check_range("--queue-depth", self.queue_depth, 1, MAX_QUEUE_DEPTH)?;
        check_range(
            "--queue-bytes",
            self.queue_bytes,
            MIN_QUEUE_BYTES,
            MAX_QUEUE_BYTES,
        )?;
        check_range("--max-targets", self.max_targets, 1, MAX_TARGETS)?;
        check_range("--max-datagram", self.max_datagram, 1, MAX_DATAGRAM_LIMIT)?;
        check_range(
            "--rcvbuf",
            self.rcvbuf_bytes,
            MIN_RCVBUF_BYTES,
            MAX_RCVBUF_BYTES,
        )?;
        for (what, got, max) in [
            ("--stats-interval", self.stats_interval, MAX_STATS_INTERVAL),
            ("--drain-timeout", self.drain_timeout, MAX_DRAIN_TIMEOUT),
            (
                "--resolve-interval",
                self.resolve_interval,
                MAX_STATS_INTERVAL,
            ),
        ] {
            if got > max {
                return Err(ConfigError::Duration { what, got, max });
            }
        }
        for (what, got) in [
            ("--stats-interval", self.stats_interval),
            ("--resolve-interval", self.resolve_interval),
        ] {
            if !got.is_zero() && got < MIN_INTERVAL {
                return Err(ConfigError::TooShort {
                    what,
                    got,
                    min: MIN_INTERVAL,
                });
            }
        }
        if u32::try_from(self.pool_slots(true)).is_err() {
            return Err(ConfigError::PoolTooLarge {
                slots: self.pool_slots(true),
                bytes: self.pool_bytes(true),
            });
        }
        if let Some(r) = &self.record {
            r.validate().map_err(ConfigError::Record)?;
        }
        let listening = self.listening();
        listening.check()?;
        if self.streams_only && (self.streams.is_empty() || !self.extra_listen.is_empty()) {
            return Err(ConfigError::NoListen);
        }
        if self.streams_only && self.fast_path == FastPathMode::On {
            return Err(ConfigError::BadValue {
                what: "fast-path",
                got: "on".into(),
                expected: "off or auto with only tcp:// and unix:// listeners (the kernel fast path serves a UDP listener)",
            });
        }
        if listening.origins() != Origins::Addresses && !self.allow.is_empty() {
            return Err(ConfigError::Allow(
                "filters senders by address; a unixgram or unix:// listener's senders have none (use --unix-mode and --unix-owner)".into(),
            ));
        }
        check_range(
            "--max-connections",
            self.stream.max_connections,
            1,
            MAX_CONNECTIONS,
        )?;
        check_range("--pack-size", self.stream.pack_bytes, 1, MAX_DATAGRAM_LIMIT)?;
        if self.targets.is_empty() {
            return Err(ConfigError::NoTargets);
        }
        validate_targets(&listening, &self.targets, self.max_targets)
    }
}

#[cfg(test)]
mod tests;
