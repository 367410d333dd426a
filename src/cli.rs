//! Command line: a clap derive whose doc comments are the `--help` text.
//!
//! `Args` is converted into a validated [`Config`]; the rest of the library never sees clap types.
//! Sizes take suffixes (`8M`, `512KiB`), durations take units (`10s`, `250ms`), CPU lists the kernel's
//! cpulist syntax (`0-3,6`).

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::config::file::{Dur, FileTarget, Loaded, Size, target_from_table};
use crate::config::{self, Config, ConfigError, TargetSpec, parse_bytes, parse_duration};

/// udptee: copies every UDP datagram that arrives on one address, unchanged, to several receivers.
///
/// Each target gets its own sender and bounded queue: a slow or dead target loses only its own copies,
/// and every datagram is either forwarded or counted as dropped with a reason.
///
/// Example: udptee --listen 0.0.0.0:8125 --to statsd=127.0.0.1:8126 --to new=127.0.0.1:8127
///
/// Or with a file (every flag has a key of the same name; flags given here override it):
/// udptee --config /etc/udptee/udptee.toml. SIGHUP (systemctl reload) re-reads the file and applies
/// the difference without touching unchanged targets.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "udptee",
    version,
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// What to do besides forwarding (default: forward).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML configuration file: top-level keys named like the flags, targets as `[[target]]` tables
    /// (see dist/udptee.toml). Re-read on SIGHUP and POST /-/reload.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address to receive on (HOST:PORT: IPv4, IPv6 as `[::1]:8125`, a host name, or `:PORT` for
    /// every IPv4 address), or a Unix datagram socket, `unixgram:///var/run/datadog/dsd.socket`
    /// (a stale socket file is replaced, a live one refused; see --unix-mode).
    #[arg(long, short = 'l', value_name = "ADDR")]
    pub listen: Option<String>,

    /// A receiver to copy every datagram to: [NAME=]HOST:PORT, or [NAME=]unixgram:///PATH for a
    /// Unix datagram socket (the name, used in metrics and the admin API, defaults to the address
    /// as written). Repeat for each target. Replaces the file's
    /// `[[target]]` tables when given.
    #[arg(long = "to", short = 't', value_name = "[NAME=]ADDR")]
    pub targets: Vec<String>,

    /// Number of receive threads, each with its own SO_REUSEPORT socket, not pinned.
    #[arg(long, short = 'w', value_name = "N", default_value_t = 1, conflicts_with = "cpus",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// One receive thread per listed CPU, pinned to it (cpulist syntax, e.g. 0-3,6).
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,

    /// CPUs to pin the sender threads to, one target each, round-robin (cpulist syntax).
    #[arg(long, value_name = "LIST")]
    pub sender_cpus: Option<String>,

    /// Datagrams per recvmmsg/sendmmsg call (1-1024).
    #[arg(long, short = 'b', value_name = "N", default_value_t = config::DEFAULT_BATCH)]
    pub batch: usize,

    /// Datagrams queued per target for its sender (what the kernel did not take at once); when full,
    /// that target's new copies are dropped (queue_full). A target's table may override it.
    #[arg(long, short = 'q', value_name = "N", default_value_t = config::DEFAULT_QUEUE_DEPTH)]
    pub queue_depth: usize,

    /// Bytes queued per target, allocated when the target is added; when full, that target's new
    /// copies are dropped (queue_full). Memory: targets x this, plus the receive staging (logged).
    #[arg(long, value_name = "BYTES", default_value = "4MiB", value_parser = parse_bytes)]
    pub queue_bytes: usize,

    /// Most targets the set may hold (start-up, reload and the admin API).
    #[arg(long, value_name = "N", default_value_t = config::MAX_TARGETS)]
    pub max_targets: usize,

    /// How often host names in target addresses are looked up again (0: never). A changed address
    /// moves that target's socket; a failed look-up keeps the last address.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub resolve_interval: Duration,

    /// Receive buffer per worker socket, 64KiB to 1GiB (SO_RCVBUFFORCE when permitted, else capped
    /// by net.core.rmem_max). The size granted is logged.
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = parse_bytes)]
    pub rcvbuf: usize,

    /// Send buffer per target socket; the kernel default when unset.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub sndbuf: Option<usize>,

    /// Largest datagram forwarded (up to 65535: every UDP datagram); larger ones are counted as
    /// truncated and sent nowhere. Sets the size of the workers' receive slots only.
    #[arg(long, value_name = "BYTES", default_value = "65535", value_parser = parse_bytes)]
    pub max_datagram: usize,

    /// Period of the stats log line (0 disables it; at least 100ms otherwise).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// At SIGINT/SIGTERM, how long queued datagrams may take to go out before they are counted as
    /// dropped (drain_timeout).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Admin HTTP listener for /metrics (Prometheus), /latency, /healthz, /readyz and the target API
    /// (/targets, /-/reload), or "off".
    #[arg(long, value_name = "ADDR|off", default_value = config::DEFAULT_ADMIN)]
    pub admin: String,

    /// File holding the bearer token that mutating admin requests (PUT, DELETE, POST) must present
    /// (`Authorization: Bearer TOKEN`). Without it, they are accepted only on a loopback listener.
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,

    /// After binding every socket, switch to this user (name or uid) and its group for good, keeping
    /// no capability. Needs to start as root; the config file and --histogram-log must be readable
    /// and writable by that user for reloads and dumps.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Record per-target latency (kernel receive to send) for SIGUSR1, /latency and --histogram-log.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub latency: bool,

    /// On SIGUSR1, also append each target's latency since the last dump to this file, in
    /// HdrHistogram's interval-log format.
    #[arg(long, value_name = "PATH")]
    pub histogram_log: Option<PathBuf>,

    /// Receive backend: auto (probe io_uring at start-up and use the backend that measured faster,
    /// recvmmsg on the kernels we measured; the choice and why are logged once), uring (io_uring
    /// multishot recvmsg, or fail) or mmsg.
    #[arg(long = "io", value_name = "BACKEND", value_enum, default_value_t = IoArg::Auto)]
    pub io: IoArg,

    /// With `--listen unixgram://`: the socket file's permission bits, in octal (who may send).
    #[arg(long, value_name = "MODE", default_value = "0666", value_parser = parse_mode)]
    pub unix_mode: u32,

    /// With `--listen unixgram://`: the socket file's owner, USER (and that user's group).
    #[arg(long, value_name = "USER")]
    pub unix_owner: Option<String>,

    /// Forward only datagrams from these senders (CIDR prefixes or addresses, comma-separated or
    /// repeated: 10.0.0.0/8,127.0.0.1); the rest are counted source_denied and sent nowhere.
    #[arg(long, value_name = "CIDR[,CIDR]")]
    pub allow: Vec<String>,

    /// Kernel fast path: copy datagrams to local targets without line settings inside the kernel
    /// (a TC ingress program; needs CAP_BPF and CAP_NET_ADMIN), serving the rest from user space.
    /// auto: use it when it loads, else say why once and serve everything from user space; on: or
    /// refuse to start. Set at start-up. See docs/tuning.md.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = crate::fastpath::Mode::Off)]
    pub fast_path: crate::fastpath::Mode,

    /// Interfaces to attach the fast path to (comma-separated or repeated). Default: lo for a
    /// loopback listen address, the interfaces holding a specific one, all with an address for a
    /// wildcard.
    #[arg(long, value_name = "IFACE[,IFACE]", value_delimiter = ',')]
    pub fast_path_interfaces: Vec<String>,

    /// Where this udptee answers `udptee --takeover` (a Unix stream socket, mode 0600), or "off".
    /// Default: $RUNTIME_DIRECTORY/control.sock, else /run/udptee/control.sock when /run/udptee
    /// exists, else off.
    #[arg(long, value_name = "PATH|off")]
    pub control_socket: Option<String>,

    /// Zero-loss upgrade: take the listen sockets (and their queued datagrams) from the udptee
    /// answering on --control-socket, start forwarding from them, then let that one drain and exit.
    /// The same flags or config are expected; another listen address is refused and the old one
    /// keeps running. With nobody answering, starts normally.
    #[arg(long)]
    pub takeover: bool,

    /// Record every received datagram into this pcap file (tcpdump and Wireshark read it): original
    /// addresses and ports, kernel receive time in ns. With rotation, files are PATH's STEM.NNNNNN.EXT.
    /// The recorder never slows forwarding: what it cannot keep up with is counted. Also
    /// POST /record/start and /record/stop.
    #[arg(long, value_name = "PATH", help_heading = "Recording")]
    pub record: Option<PathBuf>,

    /// With --record: on (start recording at start-up) or off (only when POST /record/start asks).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off,
          action = clap::ArgAction::Set, help_heading = "Recording")]
    pub record_start: bool,

    /// Start a new file before one would exceed this size (at least 128KiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes, help_heading = "Recording")]
    pub record_max_bytes: Option<usize>,

    /// Start a new file when the current one is this old (e.g. 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Recording")]
    pub record_rotate: Option<Duration>,

    /// Keep at most N rotated files, deleting the oldest (needs rotation).
    #[arg(long, value_name = "N", help_heading = "Recording")]
    pub record_keep: Option<usize>,

    /// Record only the lines whose metric name matches one of these globs (repeat).
    #[arg(long, value_name = "GLOB", help_heading = "Recording")]
    pub record_include: Vec<String>,

    /// Record no line whose metric name matches one of these globs (repeat).
    #[arg(long, value_name = "GLOB", help_heading = "Recording")]
    pub record_exclude: Vec<String>,

    /// How far the recorder may fall behind, in bytes, before it counts record drops (queue_full).
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = parse_bytes,
          help_heading = "Recording")]
    pub record_queue_bytes: usize,

    /// Log verbosity: error, warn, info, debug or trace (or a tracing filter such as udptee=debug).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Validates a configuration file and exits 0 (valid) or 1 (the errors, one per line), like
    /// `nginx -t`.
    Check {
        /// The file to check.
        #[arg(long, short = 'c', value_name = "PATH")]
        config: PathBuf,
    },
    /// Sends the UDP datagrams of pcap/pcapng captures (tcpdump, tshark, editcap) to targets,
    /// keeping the recorded gaps (scaled by --speed), at a fixed --pps, or flat out; prints a summary.
    Replay(ReplayArgs),
    /// Prints the datagrams flowing through a running udptee, live, one per line (time, source,
    /// destination, length, payload), from its admin listener's GET /tap. A bounded sample: when
    /// this reader is slower than the traffic, the datagrams it misses are counted and announced,
    /// and forwarding never waits.
    Tap(TapArgs),
}

/// `udptee tap`.
#[derive(Debug, Clone, clap::Args)]
pub struct TapArgs {
    /// The running udptee's admin listener.
    #[arg(long, value_name = "ADDR", default_value = config::DEFAULT_ADMIN)]
    pub admin: String,
    /// Stop after N datagrams.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Only lines whose metric name matches this glob (repeat for several).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// File holding the admin bearer token (needed when the admin listener is not on loopback).
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
}

impl TapArgs {
    /// Connects to the tap; the reader yields its lines as they come.
    pub fn connect(&self) -> Result<Box<dyn std::io::BufRead>, String> {
        let addr = config::resolve(&self.admin).map_err(|e| e.to_string())?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(n) = self.count {
            query.append_pair("count", &n.to_string());
        }
        for g in &self.include {
            query.append_pair("include", g);
        }
        let url = format!("http://{addr}/tap?{}", query.finish());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(path) = &self.admin_token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?;
            req = req.header("authorization", &format!("Bearer {}", token.trim()));
        }
        let resp = req
            .call()
            .map_err(|e| format!("connecting to the admin listener at {addr}: {e}"))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let text = body
                .with_config()
                .limit(64 << 10)
                .read_to_string()
                .unwrap_or_default();
            let why = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(format!("{addr} answered {status}: {}", why.trim()));
        }
        Ok(Box::new(std::io::BufReader::new(
            body.into_with_config().limit(u64::MAX).reader(),
        )))
    }
}

/// `udptee replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng; Ethernet, Linux cooked v1/v2, raw IP or loopback frames),
    /// replayed one after the other.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to send every datagram (repeat for several targets).
    #[arg(long = "to", required = true, value_name = "HOST:PORT")]
    pub to: Vec<String>,
    /// `max` (flat out), or a factor for the recorded timing (1 = as recorded, 2.5 = 2.5 times faster).
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    pub speed: ReplaySpeed,
    /// A fixed rate in datagrams per second instead of the recorded timing (10k, 1.5M).
    #[arg(long, value_name = "N", value_parser = parse_pps)]
    pub pps: Option<f64>,
    /// Times through all the files.
    #[arg(long = "loop", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub loops: u64,
    /// Only datagrams recorded with this destination port.
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
}

/// `--speed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplaySpeed {
    /// Flat out.
    Max,
    /// The recorded gaps divided by this.
    Factor(f64),
}

fn parse_speed(s: &str) -> Result<ReplaySpeed, String> {
    if s == "max" {
        return Ok(ReplaySpeed::Max);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && f <= 1e6 => Ok(ReplaySpeed::Factor(f)),
        _ => Err(format!(
            "{s:?} is neither max nor a factor above 0 (1 = as recorded)"
        )),
    }
}

fn parse_pps(s: &str) -> Result<f64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1e3),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * mult <= 1e9 => Ok(v * mult),
        _ => Err(format!("{s:?} is not a rate above 0 (e.g. 10k, 1.5M)")),
    }
}

impl ReplayArgs {
    /// The plan, with targets resolved.
    pub fn plan(&self) -> Result<crate::replay::ReplayPlan, ConfigError> {
        let targets = self
            .to
            .iter()
            .map(|t| config::resolve(t))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(t) = targets.iter().find(|t| t.port() == 0) {
            return Err(ConfigError::PortZero {
                target: t.to_string(),
            });
        }
        Ok(crate::replay::ReplayPlan {
            files: self.files.clone(),
            targets,
            pace: match (self.pps, self.speed) {
                (Some(pps), _) => crate::replay::Pace::Pps(pps),
                (None, ReplaySpeed::Max) => crate::replay::Pace::Max,
                (None, ReplaySpeed::Factor(f)) => crate::replay::Pace::Speed(f),
            },
            loops: self.loops,
            port: self.port,
        })
    }
}

/// `--io` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoArg {
    /// io_uring when available and faster here, else recvmmsg.
    Auto,
    /// io_uring multishot recvmsg, or fail.
    Uring,
    /// recvmmsg.
    Mmsg,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parsed flags with where each came from, so a configuration file can fill in what the command line
/// did not say. Re-used at every reload.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The flags, defaults included.
    pub args: Args,
    given: Vec<String>,
}

impl Invocation {
    /// Parses the process's command line (exits with clap's message on a usage error).
    pub fn from_env() -> Self {
        Self::from_matches(Args::command().get_matches())
    }

    /// Parses `argv` (the first item is the program name).
    pub fn try_from_iter<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Ok(Self::from_matches(
            Args::command().try_get_matches_from(argv)?,
        ))
    }

    fn from_matches(m: ArgMatches) -> Self {
        let args = match Args::from_arg_matches(&m) {
            Ok(a) => a,
            Err(e) => e.exit(),
        };
        let given = m
            .ids()
            .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.as_str().to_owned())
            .collect();
        Self { args, given }
    }

    fn given(&self, id: &str) -> bool {
        self.given.iter().any(|g| g == id)
    }

    /// The configuration: the file (if any) under the flags given on the command line, validated.
    /// Errors that come from the file name its line and key.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.load_all().map(|(config, _)| config)
    }

    /// Like [`load`](Self::load), also returning the effective flags (the file's values filled in),
    /// for the settings outside [`Config`]: logging.
    pub fn load_all(&self) -> Result<(Config, Args), ConfigError> {
        let file = match &self.args.config {
            Some(path) => Some(Loaded::read(path).map_err(ConfigError::File)?),
            None => None,
        };
        self.load_with(file.as_ref()).map_err(|e| match &file {
            Some(f) => locate(f, e),
            None => e,
        })
    }

    fn load_with(&self, file: Option<&Loaded>) -> Result<(Config, Args), ConfigError> {
        let mut a = self.args.clone();
        let mut file_targets = None;
        if let Some(f) = file {
            let c = &f.config;
            // Each key fills its flag unless the command line gave that flag.
            macro_rules! fill {
                ($($field:ident => $value:expr),* $(,)?) => {$(
                    if let Some(v) = c.$field.clone() {
                        if !self.given(stringify!($field)) {
                            a.$field = ($value)(v)?;
                        }
                    }
                )*};
            }
            fill!(
                batch => same, queue_depth => same, max_targets => same, admin => same,
                latency => same, log_level => same,
                listen => some, sender_cpus => some, histogram_log => some, allow => same,
                control_socket => some, unix_owner => some,
                unix_mode => |v: String| parse_mode(&v).map_err(|_| ConfigError::BadValue {
                    what: "unix-mode", got: v, expected: "octal permission bits such as 0660",
                }),
                admin_token_file => some, user => some,
                queue_bytes => |v: Size| Ok(v.0), rcvbuf => |v: Size| Ok(v.0),
                max_datagram => |v: Size| Ok(v.0), sndbuf => |v: Size| Ok(Some(v.0)),
                stats_interval => |v: Dur| Ok(v.0), drain_timeout => |v: Dur| Ok(v.0),
                resolve_interval => |v: Dur| Ok(v.0),
                io => |v: String| IoArg::from_str(&v, true).map_err(|_| ConfigError::BadValue {
                    what: "io", got: v, expected: "auto, uring or mmsg",
                }),
                fast_path => |v: String| crate::fastpath::Mode::from_str(&v, true).map_err(|_| ConfigError::BadValue {
                    what: "fast-path", got: v, expected: "off, auto or on",
                }),
                fast_path_interfaces => same,
                log_format => |v: String| LogFormat::from_str(&v, true).map_err(|_| ConfigError::BadValue {
                    what: "log-format", got: v, expected: "text or json",
                }),
            );
            // `workers` and `cpus` choose the receive threads together: a command line that names
            // either overrides both; in the file they exclude each other, as the flags do.
            if !self.given("workers") && !self.given("cpus") {
                if c.workers.is_some() && c.cpus.is_some() {
                    return Err(ConfigError::BadValue {
                        what: "workers",
                        got: "set together with cpus".into(),
                        expected: "either workers (unpinned threads) or cpus (one pinned per CPU)",
                    });
                }
                if let Some(w) = c.workers {
                    a.workers = w;
                }
                if let Some(cpus) = &c.cpus {
                    a.cpus = Some(cpus.clone());
                }
            }
            if !self.given("targets") {
                file_targets = c.targets.clone();
            }
            if let Some(r) = &c.record {
                macro_rules! fill_record {
                    ($($key:ident => $flag:ident: $value:expr),* $(,)?) => {$(
                        if let Some(v) = r.$key.clone() {
                            if !self.given(stringify!($flag)) {
                                a.$flag = ($value)(v);
                            }
                        }
                    )*};
                }
                fill_record!(
                    path => record: Some, start => record_start: |v| v,
                    max_bytes => record_max_bytes: |v: Size| Some(v.0),
                    rotate => record_rotate: |v: Dur| Some(v.0),
                    keep => record_keep: Some,
                    include => record_include: |v| v, exclude => record_exclude: |v| v,
                    queue_bytes => record_queue_bytes: |v: Size| v.0,
                );
            }
        }
        check_log_level(&a.log_level)?;
        let mut config = Config::try_from(&a)?;
        if let Some(targets) = file_targets {
            config.targets = targets
                .iter()
                .map(|t| target_from_table(&config, t, None))
                .collect::<Result<_, _>>()?;
        }
        config.validate()?;
        Ok((config, a))
    }
}

/// A file value taken as it is.
fn same<T>(v: T) -> Result<T, ConfigError> {
    Ok(v)
}

/// A file value for an optional flag.
fn some<T>(v: T) -> Result<Option<T>, ConfigError> {
    Ok(Some(v))
}

/// Accepts a level (`error` … `trace`, `off`) or a tracing directive list (`udptee=debug,info`);
/// anything else would silently log nothing, the final summary included.
pub fn check_log_level(level: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let ok = level.split(',').all(|d| {
        let d = d.trim();
        match d.rsplit_once('=') {
            Some((target, lvl)) => {
                !target.is_empty() && LEVELS.contains(&lvl.to_ascii_lowercase().as_str())
            }
            None => LEVELS.contains(&d.to_ascii_lowercase().as_str()),
        }
    });
    if ok && tracing_subscriber::EnvFilter::try_new(level).is_ok() {
        Ok(())
    } else {
        Err(ConfigError::BadValue {
            what: "--log-level",
            got: level.to_owned(),
            expected: "error, warn, info, debug, trace, off, or directives such as udptee=debug",
        })
    }
}

/// Points a validation error at the file line it came from.
fn locate(file: &Loaded, e: ConfigError) -> ConfigError {
    let (key, value) = e.place();
    if key.is_none() && value.is_none() {
        return e;
    }
    ConfigError::File(file.locate(key.as_deref(), value.as_deref(), &e.to_string()))
}

/// `--to [NAME=]HOST:PORT`.
fn parse_to(config: &Config, spec: &str) -> Result<TargetSpec, ConfigError> {
    let (name, addr) = match spec.split_once('=') {
        Some((name, addr)) => (Some(name), addr),
        None => (None, spec),
    };
    target_from_table(
        config,
        &FileTarget {
            addr: addr.to_owned(),
            ..FileTarget::default()
        },
        name,
    )
}

impl TryFrom<&Args> for Config {
    type Error = ConfigError;

    fn try_from(args: &Args) -> Result<Self, ConfigError> {
        let listen = args.listen.as_deref().ok_or(ConfigError::NoListen)?;
        let unix = config::unixgram_path(listen).transpose()?;
        let listen = match &unix {
            Some(_) => std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            None => config::resolve(listen)?,
        };
        let mut config = Self::new(listen, Vec::new());
        if let Some(path) = unix {
            let owner = args
                .unix_owner
                .as_deref()
                .map(crate::privileges::RunAs::lookup)
                .transpose()
                .map_err(ConfigError::User)?
                .map(|r| (r.uid, r.gid));
            config.listen_unix = Some(config::UnixListen {
                path,
                mode: args.unix_mode,
                owner,
            });
        }
        config.worker_cpus = match &args.cpus {
            Some(list) => config::parse_cpus("--cpus", list)?
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![None; usize::from(args.workers)],
        };
        if let Some(list) = &args.sender_cpus {
            config.sender_cpus = config::parse_cpus("--sender-cpus", list)?;
        }
        config.batch = args.batch;
        config.queue_depth = args.queue_depth;
        config.queue_bytes = args.queue_bytes;
        config.max_targets = args.max_targets;
        config.resolve_interval = args.resolve_interval;
        config.rcvbuf_bytes = args.rcvbuf;
        config.sndbuf_bytes = args.sndbuf;
        config.max_datagram = args.max_datagram;
        config.stats_interval = args.stats_interval;
        config.drain_timeout = args.drain_timeout;
        config.admin = match args.admin.as_str() {
            "off" => None,
            spec => Some(config::resolve(spec)?),
        };
        if let Some(path) = &args.admin_token_file {
            let token = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::File(format!("--admin-token-file {}: {e}", path.display()))
            })?;
            let token = token.trim().to_owned();
            if token.len() < 16 {
                return Err(ConfigError::File(format!(
                    "--admin-token-file {}: the token must be at least 16 characters",
                    path.display()
                )));
            }
            config.admin_token = Some(token);
        }
        config.user = args
            .user
            .as_deref()
            .map(crate::privileges::RunAs::lookup)
            .transpose()
            .map_err(ConfigError::User)?;
        config.latency = args.latency;
        config.io_backend = match args.io {
            IoArg::Auto => config::IoBackend::Auto,
            IoArg::Uring => config::IoBackend::Uring,
            IoArg::Mmsg => config::IoBackend::Mmsg,
        };
        config.histogram_log = args.histogram_log.clone();
        config.record = args.record.as_ref().map(|path| {
            let mut r = crate::record::RecordSettings::new(path);
            r.max_bytes = args.record_max_bytes.map(|b| b as u64);
            r.rotate = args.record_rotate;
            r.keep = args.record_keep;
            r.include = args.record_include.clone();
            r.exclude = args.record_exclude.clone();
            r.queue_bytes = args.record_queue_bytes;
            r
        });
        config.record_start = args.record_start;
        config.takeover = args.takeover;
        config.fast_path = args.fast_path;
        config.fast_path_interfaces = args.fast_path_interfaces.clone();
        config.control_socket = match args.control_socket.as_deref() {
            Some("off") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => config::settings::default_control_socket(),
        };
        for list in &args.allow {
            config
                .allow
                .extend(crate::net::allow::parse_cidrs(list).map_err(ConfigError::Allow)?);
        }
        config.targets = args
            .targets
            .iter()
            .map(|spec| parse_to(&config, spec))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(config)
    }
}

/// Parses an octal permission mode (`0660`, `666`).
fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?}: expected octal permission bits such as 0660"))
}

/// Parses `on`/`off` (and `true`/`false`).
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        Invocation::try_from_iter(std::iter::once("udptee").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?
            .load()
            .map_err(|e| e.to_string())
    }

    fn file(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "udptee-cli-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn names_come_from_to_or_default_to_the_address() {
        let c = parse(&[
            "-l",
            "127.0.0.1:0",
            "--to",
            "statsd=127.0.0.1:9",
            "--to",
            "127.0.0.1:10",
        ])
        .unwrap();
        assert_eq!(c.targets[0].name, "statsd");
        assert_eq!(c.targets[1].name, "127.0.0.1:10", "the address as written");
    }

    #[test]
    fn the_file_fills_in_and_flags_override_it() {
        let path = file(
            "listen = \"127.0.0.1:0\"\nbatch = 8\nqueue-depth = 100\n[[target]]\nname = \"a\"\naddr = \"127.0.0.1:9\"\nqueue-depth = 5\n[[target]]\naddr = \"127.0.0.1:10\"\nenabled = false\n",
        );
        let p = path.to_str().unwrap();
        let c = parse(&["--config", p, "--batch", "16"]).unwrap();
        assert_eq!(c.batch, 16, "the command line wins");
        assert_eq!(c.queue_depth, 100, "the file fills in");
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[0].queue_depth, 5, "a target's own setting wins");
        assert_eq!(c.targets[1].queue_depth, 100, "else the default");
        assert!(!c.targets[1].enabled);
        let c = parse(&["--config", p, "--to", "127.0.0.1:11"]).unwrap();
        assert_eq!(c.targets.len(), 1, "--to replaces the file's targets");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn logging_and_worker_keys_follow_the_same_rules() {
        let path = file(
            "listen = \"127.0.0.1:0\"\nlog-level = \"warn\"\nlog-format = \"json\"\nworkers = 2\n[[target]]\naddr = \"127.0.0.1:9\"\n",
        );
        let p = path.to_str().unwrap();
        let inv = Invocation::try_from_iter(["udptee", "--config", p]).unwrap();
        let (c, a) = inv.load_all().unwrap();
        assert_eq!(a.log_level, "warn", "the file's log-level is the one used");
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(c.worker_cpus.len(), 2);
        let c = parse(&["--config", p, "--cpus", "0"]).unwrap();
        assert_eq!(
            c.worker_cpus,
            [Some(0)],
            "--cpus on the command line overrides the file's workers"
        );
        let _ = std::fs::remove_file(path);
        let path = file(
            "listen = \"127.0.0.1:0\"\nworkers = 2\ncpus = \"0\"\n[[target]]\naddr = \"127.0.0.1:9\"\n",
        );
        let e = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(e.contains(".toml:2:") && e.contains("workers"), "{e}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn the_fast_path_keys_are_read_and_checked() {
        let path = file(
            "listen = \"127.0.0.1:0\"\nfast-path = \"auto\"\nfast-path-interfaces = [\"lo\", \"eth0\"]\n[[target]]\naddr = \"127.0.0.1:9\"\n",
        );
        let p = path.to_str().unwrap();
        let c = parse(&["--config", p]).unwrap();
        assert_eq!(c.fast_path, crate::fastpath::Mode::Auto);
        assert_eq!(c.fast_path_interfaces, ["lo", "eth0"]);
        let c = parse(&["--config", p, "--fast-path", "off"]).unwrap();
        assert_eq!(c.fast_path, crate::fastpath::Mode::Off, "the flag wins");
        let c = parse(&["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"]).unwrap();
        assert_eq!(c.fast_path, crate::fastpath::Mode::Off, "off by default");
        let _ = std::fs::remove_file(path);
        let path = file(
            "listen = \"127.0.0.1:0\"\nfast-path = \"yes\"\n[[target]]\naddr = \"127.0.0.1:9\"\n",
        );
        let e = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(
            e.contains(":2:") && e.contains("fast-path") && e.contains("off, auto or on"),
            "{e}"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn file_value_errors_name_line_and_key() {
        let path =
            file("listen = \"127.0.0.1:0\"\n\nbatch = 0\n[[target]]\naddr = \"127.0.0.1:9\"\n");
        let e = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(e.contains(":3:1: key `batch`"), "{e}");
        let _ = std::fs::remove_file(path);
        let path = file("listen = \"127.0.0.1:0\"\n[[target]]\naddr = \"nowhere.invalid:9\"\n");
        let e = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(e.contains(":3:") && e.contains("addr"), "{e}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn flag_edges_are_refused() {
        for (flag, value) in [
            ("--max-datagram", "1.5"),
            ("--rcvbuf", "0"),
            ("--stats-interval", "1ns"),
            ("--log-level", "nonsense"),
            ("--cpus", "a"),
        ] {
            let e = parse(&["-l", "127.0.0.1:0", "--to", "127.0.0.1:9", flag, value]).unwrap_err();
            let lines: Vec<&str> = e
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("For more information"))
                .collect();
            assert_eq!(lines.len(), 1, "{flag} {value}: one line: {e}");
            assert!(lines[0].contains(flag), "{flag} is named: {e}");
        }
    }

    #[test]
    fn sizes_and_durations_take_units() {
        let c = parse(&[
            "-l",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--rcvbuf",
            "4MiB",
            "--max-datagram",
            "1k",
            "--stats-interval",
            "250ms",
        ])
        .unwrap();
        assert_eq!(c.rcvbuf_bytes, 4 << 20);
        assert_eq!(c.max_datagram, 1024, "k is binary");
        assert_eq!(c.stats_interval, Duration::from_millis(250));
        assert!(c.latency, "latency is recorded by default");
        let c = parse(&[
            "-l",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--latency",
            "off",
            "--admin",
            "off",
        ])
        .unwrap();
        assert!(!c.latency && c.admin.is_none(), "on/off flags take a value");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = parse(&["-l", "127.0.0.1:0", "--to", "127.0.0.1:9", "--batch", "0"]).unwrap_err();
        assert!(e.contains("--batch"), "{e}");
        let e = parse(&[
            "-l",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--rcvbuf",
            "lots",
        ])
        .unwrap_err();
        assert!(e.contains("--rcvbuf"), "{e}");
        let e = parse(&["-l", "nonsense", "--to", "127.0.0.1:9"]).unwrap_err();
        assert!(e.contains("nonsense"), "{e}");
        let e = parse(&["-l", "127.0.0.1:0"]).unwrap_err();
        assert!(e.contains("--to"), "{e}");
        let e = parse(&["--to", "127.0.0.1:9"]).unwrap_err();
        assert!(e.contains("--listen"), "{e}");
        let e = parse(&[
            "-l",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--workers",
            "2",
            "--cpus",
            "0",
        ])
        .unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
    }
}
