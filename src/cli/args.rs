//! The command line's flags: a clap derive whose doc comments are the `--help` text, with the value
//! parsers they need. Sizes take suffixes (`8M`, `512KiB`), durations take units (`10s`, `250ms`),
//! CPU lists the kernel's cpulist syntax (`0-3,6`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use super::replay::ReplayArgs;
use super::tap::TapArgs;
use super::top::TopArgs;
use crate::config::{self, parse_bytes, parse_duration};

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

    /// Where to receive; repeat for several listeners at once. A UDP HOST:PORT (IPv4, IPv6 as
    /// `[::1]:8125`, a host name, or `:PORT` for every IPv4 address; `udp://` may be written), a
    /// Unix datagram socket `unixgram:///var/run/datadog/dsd.socket` (a stale socket file is
    /// replaced, a live one refused; see --unix-mode), statsd lines over TCP `tcp://HOST:PORT`
    /// (newline-delimited; a trailing `\r` is kept as data), or DogStatsD over a Unix stream socket
    /// `unix:///PATH` (each message a 4-byte little-endian length, then the payload). Any mix; all
    /// go to the same targets; --fast-path serves the first listener when it is UDP.
    #[arg(long, short = 'l', value_name = "ADDR")]
    pub listen: Vec<String>,

    /// A receiver to copy every datagram to: [NAME=]HOST:PORT (UDP), [NAME=]unixgram:///PATH (a
    /// Unix datagram socket), [NAME=]tcp://HOST:PORT (statsd lines over one TCP connection) or
    /// [NAME=]unix:///PATH (DogStatsD frames over a Unix stream socket). The name, used in metrics
    /// and the admin API, defaults to the address as written (`tcp:HOST:PORT`, `unixgram:` or
    /// `unix:` and the path with `.` for `/`, for the others). Repeat for each target. Replaces
    /// the file's `[[target]]` tables when given.
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

    /// tcp:// and unix:// listeners: most connections open at once, per listener; more are closed
    /// at accept (nothing written to them) and counted.
    #[arg(long, value_name = "N", default_value_t = config::listen::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// tcp:// and unix:// listeners: a connection that sends nothing for this long is closed and
    /// counted.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// tcp:// listeners: complete lines are packed into datagrams of up to this size (never
    /// splitting a line; a longer line goes alone), at the end of each read: no timer.
    #[arg(long, value_name = "BYTES", default_value = "1432", value_parser = parse_bytes)]
    pub pack_size: usize,

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
    /// (`Authorization: Bearer TOKEN`). Without it, they are accepted only on a loopback listener,
    /// from root or udptee's own user.
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
    #[arg(long, value_name = "MODE", value_enum, default_value_t = config::FastPathMode::Off)]
    pub fast_path: config::FastPathMode,

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
    /// Says which member of a group (a target with `members`) each key goes to on statsd's ring,
    /// offline with every member up: `GROUP<TAB>KEY<TAB>MEMBER<TAB>HASH` per line. Keys are metric
    /// names (a line's text before its first `:`), as arguments or one per line on standard input.
    Ring(super::ring::RingArgs),
    /// Prints the datagrams flowing through a running udptee, live, one per line (time, source,
    /// destination, length, payload), from its admin listener's GET /tap. A bounded sample: when
    /// this reader is slower than the traffic, the datagrams it misses are counted and announced,
    /// and forwarding never waits.
    Tap(TapArgs),
    /// Shows which metric names, senders or series bring the most traffic to a running udptee,
    /// live and refreshed every second in the style of top (keys: q quits, n/s/e rank by name,
    /// sender or series): their share of the lines, line, datagram and byte rates. From its admin
    /// listener's GET /top, over a bounded sample that starts at the first look and stops 15 s after
    /// the last. --once prints one sample, --json GET /top's answer; exit 1 when udptee cannot be
    /// asked.
    Top(TopArgs),
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell) to standard output.
    Completions(CompletionsArgs),
    /// Writes the man pages (udptee.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Manpages(ManpagesArgs),
}

/// `udptee completions`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `udptee manpages`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManpagesArgs {
    /// The directory to write `udptee.1` and one page per subcommand into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
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

/// Parses an octal permission mode (`0660`, `666`).
pub(crate) fn parse_mode(s: &str) -> Result<u32, String> {
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
