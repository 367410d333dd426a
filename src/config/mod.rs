//! Validated run-time configuration.
//!
//! `Config` is what the library takes: typed, checked, with no clap types and no strings left to parse.
//! Every default is a named constant with the reason for its value; docs/tuning.md explains each one and
//! the memory it costs. Nothing here is on the hot path.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::net::IoBackend;
use crate::net::uring::ring_entries;

pub mod file;

/// Datagrams per `recvmmsg`/`sendmmsg` call: 32, as quinn-udp's `BATCH_SIZE`; tune with `--batch`.
pub const DEFAULT_BATCH: usize = 32;
/// Largest batch accepted: the kernel caps `sendmmsg` at `UIO_MAXIOV` (1024) messages per call.
pub const MAX_BATCH: usize = 1024;
/// Datagrams queued per target: 4096 rides out a 40 ms sender stall at 100k datagrams/s.
pub const DEFAULT_QUEUE_DEPTH: usize = 4096;
/// Bytes of backlog per target: 4 MiB holds the 4096 datagrams of `DEFAULT_QUEUE_DEPTH` up to ~1 KiB
/// each (statsd lines are mostly under 64 bytes, DogStatsD's buffered datagrams near 1.4 KiB), so it
/// absorbs the same burst time as before for statsd-sized traffic at a tenth of the memory.
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;
/// Smallest `--queue-bytes`: one largest datagram must fit.
pub const MIN_QUEUE_BYTES: usize = 4096;
/// Largest `--queue-bytes` accepted per target (a typo guard): 4 GiB.
pub const MAX_QUEUE_BYTES: usize = 4 << 30;
/// How often host names in target addresses are looked up again.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// Upper bound on `--queue-depth`, so a typo cannot ask for terabytes of pool.
pub const MAX_QUEUE_DEPTH: usize = 1 << 22;
/// Receive buffer asked for per worker socket: 8 MiB. Measured with `scripts/bench-rcvbuf.sh`: the stock
/// 208 KiB loses datagrams at 25k/s on a VM with millisecond stalls; 8 MiB holds ~60 ms of 64-byte
/// datagrams at 100k/s (each costs ~1.2 KiB of kernel truesize).
pub const DEFAULT_RCVBUF_BYTES: usize = 8 << 20;
/// Largest datagram forwarded: every datagram UDP can carry (65,507 bytes over IPv4, 65,527 over IPv6)
/// and a Unix datagram up to 64 KiB. Only the workers' receive staging slots are this large (a few MiB
/// in all); backlogs hold bytes, not slots, so the default no longer costs memory per target.
pub const DEFAULT_MAX_DATAGRAM: usize = 65535;
/// Largest datagram the kernel can hand us over UDP (65535 minus the 8-byte UDP header, rounded up).
pub const MAX_DATAGRAM_LIMIT: usize = 65535;
/// How often a stats line is logged.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(10);
/// How long queued datagrams may take to drain at shutdown before they are counted as dropped.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Where the command line serves the admin endpoints unless told otherwise: loopback only, on a port
/// no neighbour of ours takes by default (statsd 8125/8126, DogStatsD 8125, statsd_exporter 9102 and
/// 9125, Prometheus 9090, node_exporter 9100, Pushgateway 9091, Alertmanager 9093).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:8135";
/// Longest `--stats-interval` accepted: a day (longer is almost certainly a typo).
pub const MAX_STATS_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest `--drain-timeout` accepted: an hour.
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most targets accepted: each costs a sender thread, a socket and its backlog bytes.
pub const MAX_TARGETS: usize = 256;
/// Longest target name: it is a metric label and a URL path segment.
pub const MAX_NAME_LEN: usize = 128;
/// Largest CPU number `--cpus` accepts; guards against a typo expanding to billions of entries.
pub const MAX_CPU_ID: u32 = 4095;

/// A receiver every datagram is copied to, with its own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    /// The target's name: the metric label and the admin API key (`--to NAME=ADDR`; by default the
    /// address as written).
    pub name: String,
    /// The address as written (a literal or `host:port`), looked up again every resolve interval
    /// when it names a host.
    pub addr: String,
    /// The resolved address the sender connects to.
    pub resolved: SocketAddr,
    /// `false`: kept in the set with its counters, nothing sent (counted `disabled`).
    pub enabled: bool,
    /// Most datagrams queued for this target.
    pub queue_depth: usize,
    /// Most bytes queued for this target.
    pub queue_bytes: usize,
    /// Send buffer asked for on the target socket; `None` keeps the kernel default.
    pub sndbuf_bytes: Option<usize>,
    /// Line settings (filters, sampling, rewrites); passthrough when none is set.
    pub lines: crate::statsd::filter::LineSettings,
    /// Digest what is sent for `GET /parity` even without line settings (those always do).
    pub parity: bool,
    /// A Unix datagram socket target (`unixgram:///path`); `resolved` is then a placeholder.
    pub unix: Option<PathBuf>,
}

/// The scheme of Unix datagram socket addresses: `unixgram:///var/run/datadog/dsd.socket`.
pub const UNIXGRAM: &str = "unixgram://";

/// The path of a `unixgram:///path` address, if it is one; the path must be absolute.
pub fn unixgram_path(addr: &str) -> Option<Result<PathBuf, ConfigError>> {
    let rest = addr.strip_prefix(UNIXGRAM)?;
    let path = PathBuf::from(rest);
    Some(
        if path.is_absolute() && path.file_name().is_some() && rest.len() < 108 {
            Ok(path)
        } else {
            Err(ConfigError::BadValue {
                what: "unixgram address",
                got: addr.chars().take(200).collect(),
                expected: "unixgram:///ABSOLUTE/PATH (under 108 bytes)",
            })
        },
    )
}

/// The default name of a Unix socket target: `unixgram:` and the path with `/` as `.`.
pub fn unixgram_name(path: &std::path::Path) -> String {
    let p = path.to_string_lossy();
    let name: String = p
        .trim_start_matches('/')
        .chars()
        .map(|c| if c == '/' { '.' } else { c })
        .collect();
    format!("unixgram:{name}")
}

impl TargetSpec {
    /// A target named `name` at the literal address `addr`, with default settings.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            name: name.into(),
            addr: addr.to_string(),
            resolved: addr,
            enabled: true,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            sndbuf_bytes: None,
            lines: crate::statsd::filter::LineSettings::default(),
            parity: false,
            unix: None,
        }
    }

    /// True when `other` can be served by the same socket, backlog and sender (it differs in
    /// `enabled`, line settings or `parity` at most).
    pub fn same_incarnation(&self, other: &Self) -> bool {
        self.name == other.name
            && self.resolved == other.resolved
            && self.queue_depth == other.queue_depth
            && self.queue_bytes == other.queue_bytes
            && self.sndbuf_bytes == other.sndbuf_bytes
            && self.unix == other.unix
    }

    /// True when the address names a host (looked up again every resolve interval).
    pub fn is_host_name(&self) -> bool {
        self.unix.is_none() && self.addr.parse::<SocketAddr>().is_err()
    }
}

/// Looks host names up; a seam so tests can change what a name resolves to.
pub trait Resolve: Send + Sync {
    /// The address `spec` (`host:port`) resolves to now.
    fn resolve(&self, spec: &str) -> Result<SocketAddr, ConfigError>;
}

/// The system resolver (getaddrinfo, through `ToSocketAddrs`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, spec: &str) -> Result<SocketAddr, ConfigError> {
        resolve(spec)
    }
}

/// The resolver a forwarder uses.
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn Resolve>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self(Arc::new(SystemResolver))
    }
}

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
    pub user: Option<crate::privileges::RunAs>,
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
    pub record: Option<crate::record::RecordSettings>,
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
    /// `--fast-path`: copy to local targets in the kernel.
    pub fast_path: crate::fastpath::Mode,
    /// `--fast-path-interfaces`: where to attach it (empty: where the listen address receives).
    pub fast_path_interfaces: Vec<String>,
}

/// A Unix datagram listen socket (DogStatsD's `dsd.socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixListen {
    /// The socket file; a stale one from an earlier run is replaced, a live one refused.
    pub path: PathBuf,
    /// Its permission bits (`--unix-mode`, octal): who may send.
    pub mode: u32,
    /// Its owner, when set (`--unix-owner`).
    pub owner: Option<(u32, u32)>,
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
            fast_path: crate::fastpath::Mode::Off,
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
        self.worker_cpus.len() * (2 * self.batch + ring + 1)
    }

    /// Bytes of datagram memory the pool allocates (and touches) at start-up.
    pub fn pool_bytes(&self, uring: bool) -> usize {
        self.pool_slots(uring) * (crate::pool::HEADROOM + self.max_datagram)
    }

    /// Bytes allocated (and touched) for target backlogs: the sum of each target's `queue_bytes`.
    pub fn backlog_bytes(&self) -> usize {
        self.targets.iter().map(|t| t.queue_bytes).sum()
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
        if self.listen_unix.is_some() && !self.allow.is_empty() {
            return Err(ConfigError::Allow(
                "filters UDP senders by address; a unixgram listener's senders have none (use --unix-mode and --unix-owner)".into(),
            ));
        }
        if self.targets.is_empty() {
            return Err(ConfigError::NoTargets);
        }
        validate_targets(
            self.listen,
            self.listen_unix.as_ref().map(|u| u.path.as_path()),
            &self.targets,
            self.max_targets,
        )
    }
}

/// Shortest `--stats-interval` and `--resolve-interval` (other than 0, off): a typo such as `1ns`
/// must not print a line per microsecond.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Checks a target set on its own: names, sizes, duplicates, loops, and the count. Used at start-up,
/// on reload and by the admin API, so each refuses the same things with the same words.
pub fn validate_targets(
    listen: SocketAddr,
    listen_unix: Option<&std::path::Path>,
    targets: &[TargetSpec],
    max_targets: usize,
) -> Result<(), ConfigError> {
    if targets.len() > max_targets {
        return Err(ConfigError::Range {
            what: "the number of targets (--max-targets)",
            min: 0,
            max: max_targets,
            got: targets.len(),
        });
    }
    let locals = local_addresses();
    for (i, a) in targets.iter().enumerate() {
        check_name(&a.name)?;
        a.lines.validate().map_err(|reason| ConfigError::Lines {
            target: a.name.clone(),
            reason,
        })?;
        check_range("queue-depth", a.queue_depth, 1, MAX_QUEUE_DEPTH)?;
        check_range(
            "queue-bytes",
            a.queue_bytes,
            MIN_QUEUE_BYTES,
            MAX_QUEUE_BYTES,
        )?;
        if let Some(path) = &a.unix {
            if let Some(b) = targets[..i].iter().find(|b| b.name == a.name) {
                return Err(ConfigError::DuplicateName {
                    name: b.name.clone(),
                });
            }
            if let Some(b) = targets[..i].iter().find(|b| b.unix.as_ref() == Some(path)) {
                return Err(ConfigError::DuplicateName {
                    name: format!("{} and {} (both {})", b.name, a.name, path.display()),
                });
            }
            if listen_unix == Some(path.as_path()) {
                return Err(ConfigError::Loop {
                    target: a.name.clone(),
                    listen,
                });
            }
            continue;
        }
        if a.resolved.port() == 0 {
            return Err(ConfigError::PortZero {
                target: a.name.clone(),
            });
        }
        if let Some(b) = targets[..i]
            .iter()
            .find(|b| canonical(b.resolved) == canonical(a.resolved))
        {
            return Err(ConfigError::DuplicateTarget {
                a: b.name.clone(),
                b: a.name.clone(),
                addr: a.resolved,
            });
        }
        if let Some(b) = targets[..i].iter().find(|b| b.name == a.name) {
            return Err(ConfigError::DuplicateName {
                name: b.name.clone(),
            });
        }
        if forwards_to_itself(listen, a.resolved, &locals) {
            return Err(ConfigError::Loop {
                target: a.name.clone(),
                listen,
            });
        }
    }
    Ok(())
}

/// Names are metric labels and URL path segments: letters, digits and `._:-[]`, 1 to 128 bytes.
pub fn check_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Name {
            name: name.chars().take(MAX_NAME_LEN).collect(),
        })
    }
}

/// The address with an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) turned into plain IPv4, so two
/// spellings of one socket compare equal.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Every address configured on this host's interfaces (getifaddrs), plus the loopback ranges.
pub(crate) fn local_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            if let Some(v4) = sa.as_sockaddr_in() {
                out.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                out.push(IpAddr::V6(v6.ip()));
            }
        }
    }
    out
}

/// True when `target` reaches the listen socket itself, in any spelling: the same address, an
/// IPv4-mapped IPv6 form of it, any loopback address (the whole 127/8 range) or any of this host's
/// own addresses when listening on a wildcard, or the wildcard itself. Forwarding there would
/// multiply every datagram forever.
fn forwards_to_itself(listen: SocketAddr, target: SocketAddr, locals: &[IpAddr]) -> bool {
    let (l, t) = (canonical(listen), canonical(target));
    if l.port() == 0 || l.port() != t.port() {
        return false;
    }
    let (l, t) = (l.ip(), t.ip());
    let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified() || locals.contains(&ip);
    if l.is_unspecified() {
        // A wildcard listener receives on every local address of its family (and an IPv6 wildcard,
        // dual-stack by default, on IPv4 ones too).
        return local(t) && (l.is_ipv6() || t.is_ipv4());
    }
    // A specific address receives only what is sent to it; an unspecified destination means this host.
    l == t || t.is_unspecified()
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
    // `:8125` (the form Go tools and statsd_exporter take) means every IPv4 address.
    let wildcard;
    let spec_for_lookup = match spec.strip_prefix(':') {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            wildcard = format!("0.0.0.0:{port}");
            wildcard.as_str()
        }
        _ => spec,
    };
    let mut addrs = spec_for_lookup
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

/// Largest `--rcvbuf`: the kernel keeps socket buffer sizes in an int, doubled (socket(7)), so 1 GiB is
/// the most that can be granted as asked.
pub const MAX_RCVBUF_BYTES: usize = 1 << 30;
/// Smallest `--rcvbuf`: below 64 KiB a socket drops datagrams at any real rate.
pub const MIN_RCVBUF_BYTES: usize = 64 << 10;

/// Parses `8MiB`, `512k`, `4096` into bytes (binary multiples: `k` = 1024). A fraction is accepted
/// only where it makes whole bytes (`1.5KiB`), never `1.5`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let n = parse_size::Config::new()
        .with_binary()
        .parse_size(t)
        .map_err(|e| format!("{e} (expected a size such as 4096, 512KiB or 8MiB)"))?;
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    if t[..digits].contains('.') {
        let unit = parse_size::Config::new()
            .with_binary()
            .parse_size(format!("1{}", &t[digits..]))
            .unwrap_or(1);
        let exact = t[..digits].replace('_', "").parse::<f64>().unwrap_or(0.5) * unit as f64;
        if exact.fract() != 0.0 {
            return Err(format!("{s:?} is not a whole number of bytes"));
        }
    }
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= 1 << 40)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses `10s`, `250ms`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 10s or 250ms)"))
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
    let cpus = cpulist::parse(list.trim()).map_err(|e| {
        let e = e.to_string();
        bad(e
            .lines()
            .next()
            .unwrap_or("not a CPU list")
            .trim()
            .to_owned())
    })?;
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
    #[error("no targets: give at least one --to HOST:PORT (or a [[target]] table in --config)")]
    NoTargets,
    /// No `--listen` was given.
    #[error("no listen address: give --listen HOST:PORT (or `listen` in --config)")]
    NoListen,
    /// The recording settings are invalid.
    #[error("{0}")]
    Record(String),
    /// An `--allow` entry does not parse.
    #[error("--allow {0}")]
    Allow(String),
    /// A value outside its set of choices.
    #[error("{what} {got:?}: expected {expected}")]
    BadValue {
        /// The flag or key.
        what: &'static str,
        /// What was given.
        got: String,
        /// What is accepted.
        expected: &'static str,
    },
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
        "workers x --batch need {slots} pool slots ({bytes} bytes); lower --workers, --batch or --max-datagram"
    )]
    PoolTooLarge {
        /// Slots needed.
        slots: usize,
        /// Bytes needed.
        bytes: usize,
    },
    /// Two targets share a name.
    #[error("two targets are named {name:?}: names must be unique")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A name that is not a valid label and path segment.
    #[error("target name {name:?} is not valid: use 1 to 128 letters, digits and . _ : - [ ]")]
    Name {
        /// What was given.
        name: String,
    },
    /// A target with port 0.
    #[error("target {target:?} has port 0, which no receiver can listen on")]
    PortZero {
        /// The offending target.
        target: String,
    },
    /// An interval below its sane minimum.
    #[error("{what} must be 0 (off) or at least {min:?}, got {got:?}")]
    TooShort {
        /// The flag.
        what: &'static str,
        /// What was given.
        got: Duration,
        /// The smallest accepted.
        min: Duration,
    },
    /// A configuration file could not be read or parsed.
    #[error("{0}")]
    File(String),
    /// A target is the listen address itself.
    #[error(
        "target {target:?} reaches the listen address {listen}: udptee would forward to itself forever"
    )]
    Loop {
        /// The offending target.
        target: String,
        /// The listen address.
        listen: SocketAddr,
    },
    /// `--user` names no user.
    #[error("--user: {0}")]
    User(String),
    /// A target's line settings are invalid.
    #[error("target {target:?}: {reason}")]
    Lines {
        /// The target.
        target: String,
        /// Which key and why.
        reason: String,
    },
}

impl ConfigError {
    /// Where in a configuration file this error points: a top-level key, or a value as written.
    pub fn place(&self) -> (Option<String>, Option<String>) {
        let key = |what: &str| Some(what.trim_start_matches('-').to_owned());
        match self {
            Self::Range { what, .. }
            | Self::Duration { what, .. }
            | Self::TooShort { what, .. }
            | Self::BadValue { what, .. } => (key(what), None),
            Self::Cpus { flag, list, .. } => (key(flag), Some(list.clone())),
            Self::Resolve { spec, .. } => (None, Some(spec.clone())),
            Self::DuplicateTarget { b, .. } => (None, Some(b.clone())),
            Self::DuplicateName { name } | Self::Name { name } => (None, Some(name.clone())),
            Self::PortZero { target } | Self::Loop { target, .. } => (None, Some(target.clone())),
            Self::NoListen => (key("listen"), None),
            Self::User(_) => (key("user"), None),
            Self::Allow(_) => (key("allow"), None),
            Self::Lines { reason, .. } => (
                reason
                    .split(' ')
                    .next()
                    .map(|k| k.trim_end_matches(':').to_owned()),
                None,
            ),
            _ => (None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> TargetSpec {
        TargetSpec::new(s, s.parse().unwrap())
    }

    #[test]
    fn the_pool_is_receive_staging_only() {
        let mut c = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            vec![target("127.0.0.1:1"), target("127.0.0.1:2")],
        );
        c.batch = 8;
        c.worker_cpus = vec![None; 3];
        assert_eq!(
            c.pool_slots(false),
            3 * (2 * 8 + 1),
            "W*(2B+1): armed, spares, scratch; targets hold none"
        );
        assert_eq!(
            c.pool_slots(true),
            3 * (2 * 8 + 64 + 1),
            "plus the io_uring ring"
        );
        assert_eq!(c.backlog_bytes(), 2 * DEFAULT_QUEUE_BYTES);
    }

    #[test]
    fn rejects_self_loops_in_every_spelling() {
        let loops = [
            ("0.0.0.0:8125", "127.0.0.1:8125"),
            ("0.0.0.0:8125", "127.0.0.2:8125"),
            ("127.0.0.1:8125", "[::ffff:127.0.0.1]:8125"),
            ("127.0.0.1:8125", "127.0.0.1:8125"),
            ("127.0.0.1:8125", "0.0.0.0:8125"),
            ("[::]:8125", "127.0.0.1:8125"),
            ("[::]:8125", "[::1]:8125"),
            ("[::1]:8125", "[::1]:8125"),
        ];
        for (listen, to) in loops {
            let c = Config::new(listen.parse().unwrap(), vec![target(to)]);
            assert!(
                matches!(c.validate(), Err(ConfigError::Loop { .. })),
                "{to} reaches {listen}"
            );
        }
        // A local interface address on a wildcard listener loops too.
        for ip in local_addresses() {
            let c = Config::new(
                "[::]:8125".parse().unwrap(),
                vec![TargetSpec::new("t", SocketAddr::new(ip, 8125))],
            );
            assert!(
                matches!(c.validate(), Err(ConfigError::Loop { .. })),
                "{ip} is this host's"
            );
        }
        let c = Config::new(
            "127.0.0.1:8125".parse().unwrap(),
            vec![target("127.0.0.1:8126")],
        );
        assert!(c.validate().is_ok(), "another port is not a loop");
    }

    #[test]
    fn rejects_duplicates_port_zero_and_bad_names() {
        let listen: SocketAddr = "0.0.0.0:8125".parse().unwrap();
        let c = Config::new(
            listen,
            vec![
                target("127.0.0.1:8126"),
                TargetSpec::new("b", "[::ffff:127.0.0.1]:8126".parse().unwrap()),
            ],
        );
        assert!(
            matches!(c.validate(), Err(ConfigError::DuplicateTarget { .. })),
            "one socket spelled twice"
        );
        let c = Config::new(
            listen,
            vec![
                TargetSpec::new("a", "127.0.0.1:1".parse().unwrap()),
                TargetSpec::new("a", "127.0.0.1:2".parse().unwrap()),
            ],
        );
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DuplicateName { .. })
        ));
        let c = Config::new(listen, vec![target("127.0.0.1:0")]);
        assert!(matches!(c.validate(), Err(ConfigError::PortZero { .. })));
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?} is refused");
        }
        assert!(
            check_name("[::1]:8126").is_ok(),
            "an address as written is a fine name"
        );
    }

    #[test]
    fn the_largest_valid_pool_still_fits_a_slot_id() {
        let mut c = Config::new(
            "127.0.0.1:0".parse().unwrap(),
            (1..=MAX_TARGETS)
                .map(|p| target(&format!("127.0.0.1:{p}")))
                .collect(),
        );
        c.batch = MAX_BATCH;
        c.worker_cpus = vec![None; 1024];
        assert!(u32::try_from(c.pool_slots(true)).is_ok(), "BufId is a u32");
        assert!(c.validate().is_ok());
        c.targets.push(target("127.0.0.1:60000"));
        assert!(
            matches!(c.validate(), Err(ConfigError::Range { .. })),
            "more than --max-targets targets is refused"
        );
    }

    #[test]
    fn intervals_are_bounded_below() {
        let mut c = Config::new("127.0.0.1:0".parse().unwrap(), vec![target("127.0.0.1:1")]);
        c.stats_interval = Duration::from_nanos(1);
        assert!(matches!(c.validate(), Err(ConfigError::TooShort { .. })));
        c.stats_interval = Duration::ZERO;
        assert!(c.validate().is_ok(), "0 turns the stats line off");
    }

    #[test]
    fn the_default_admin_port_collides_with_no_neighbour() {
        let port: SocketAddr = DEFAULT_ADMIN.parse().unwrap();
        // statsd (8125, its admin 8126), DogStatsD (8125), statsd_exporter (9125 statsd, 9102 web),
        // Prometheus (9090), Alertmanager (9093), node_exporter (9100), Grafana (3000), the Datadog
        // agent (5000-5002, 8126 APM).
        for taken in [
            8125, 8126, 9125, 9102, 9090, 9091, 9093, 9100, 3000, 5000, 5001, 5002,
        ] {
            assert_ne!(port.port(), taken);
        }
        assert!(
            port.ip().is_loopback(),
            "the admin API is loopback-only by default"
        );
    }

    #[test]
    fn sizes_are_whole_bytes() {
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
        assert!(parse_bytes("1.5").is_err(), "1.5 bytes is not a size");
        assert_eq!(parse_bytes("8MiB"), Ok(8 << 20));
        assert!(parse_bytes("lots").is_err());
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
        let e = parse_cpus("--cpus", "a").unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        assert!(
            parse_cpus("--cpus", "").is_err(),
            "an empty list pins nothing and is refused"
        );
    }

    #[test]
    fn addresses_resolve_in_every_accepted_form() {
        assert!(resolve("no-such-host.invalid:8125").is_err());
        assert!(resolve("127.0.0.1").is_err(), "a port is required");
        assert_eq!(resolve("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            resolve(":8125").unwrap(),
            "0.0.0.0:8125".parse().unwrap(),
            "the Go form means every address"
        );
    }
}
