//! Command line: a clap derive whose doc comments are the `--help` text.
//!
//! `Args` is converted into a validated [`Config`]; the rest of the library never sees clap types.
//! Sizes take suffixes (`8M`, `512KiB`), durations take units (`10s`, `250ms`), CPU lists the kernel's
//! cpulist syntax (`0-3,6`).

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::config::{self, Config, ConfigError, Target};

/// udptee: copies every UDP datagram that arrives on one address, unchanged, to several receivers.
///
/// Each target gets its own sender and bounded queue: a slow or dead target loses only its own copies,
/// and every datagram is either forwarded or counted as dropped with a reason.
///
/// Example: udptee --listen 0.0.0.0:8125 --to 127.0.0.1:8126 --to 127.0.0.1:8127
#[derive(Debug, Parser)]
#[command(name = "udptee", version, max_term_width = 100)]
pub struct Args {
    /// Address to receive on (HOST:PORT: IPv4, IPv6 as `[::1]:8125`, or a host name).
    #[arg(long, short = 'l', value_name = "ADDR")]
    pub listen: String,

    /// A receiver to copy every datagram to (HOST:PORT). Repeat for each target.
    #[arg(long = "to", short = 't', value_name = "ADDR", required = true)]
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

    /// Datagrams queued per target; when full, that target's new copies are dropped (queue_full).
    #[arg(long, short = 'q', value_name = "N", default_value_t = config::DEFAULT_QUEUE_DEPTH)]
    pub queue_depth: usize,

    /// Receive buffer per worker socket (SO_RCVBUFFORCE when permitted, else capped by
    /// net.core.rmem_max). The size granted is logged.
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = parse_bytes)]
    pub rcvbuf: usize,

    /// Send buffer per target socket; the kernel default when unset.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub sndbuf: Option<usize>,

    /// Largest datagram forwarded; larger ones are counted as truncated and sent nowhere. Sets the
    /// size of every pool slot: memory = slots x this (logged at start-up).
    #[arg(long, value_name = "BYTES", default_value = "9216", value_parser = parse_bytes)]
    pub max_datagram: usize,

    /// Period of the stats log line (0 disables it).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// At SIGINT/SIGTERM, how long queued datagrams may take to go out before they are counted as
    /// dropped (drain_timeout).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Admin HTTP listener for /metrics (Prometheus), /latency, /healthz and /readyz, or "off".
    #[arg(long, value_name = "ADDR|off", default_value = config::DEFAULT_ADMIN)]
    pub admin: String,

    /// Record per-target latency (kernel receive to send) for SIGUSR1, /latency and --histogram-log.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub latency: bool,

    /// On SIGUSR1, also append each target's latency since the last dump to this file, in
    /// HdrHistogram's interval-log format.
    #[arg(long, value_name = "PATH")]
    pub histogram_log: Option<std::path::PathBuf>,

    /// Receive backend: auto (probe io_uring at start-up and use the backend that measured faster,
    /// recvmmsg on the kernels we measured; the choice and why are logged once), uring (io_uring
    /// multishot recvmsg, or fail) or mmsg.
    #[arg(long = "io", value_name = "BACKEND", value_enum, default_value_t = IoArg::Auto)]
    pub io: IoArg,

    /// Log verbosity: error, warn, info, debug or trace (or a tracing filter such as udptee=debug).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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

impl TryFrom<&Args> for Config {
    type Error = ConfigError;

    fn try_from(args: &Args) -> Result<Self, ConfigError> {
        let listen = config::resolve(&args.listen)?;
        let targets = args
            .targets
            .iter()
            .map(|spec| {
                Ok(Target {
                    name: spec.clone(),
                    addr: config::resolve(spec)?,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let mut config = Self::new(listen, targets);
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
        config.rcvbuf_bytes = args.rcvbuf;
        config.sndbuf_bytes = args.sndbuf;
        config.max_datagram = args.max_datagram;
        config.stats_interval = args.stats_interval;
        config.drain_timeout = args.drain_timeout;
        config.admin = match args.admin.as_str() {
            "off" => None,
            spec => Some(config::resolve(spec)?),
        };
        config.latency = args.latency;
        config.io_backend = match args.io {
            IoArg::Auto => config::IoBackend::Auto,
            IoArg::Uring => config::IoBackend::Uring,
            IoArg::Mmsg => config::IoBackend::Mmsg,
        };
        config.histogram_log = args.histogram_log.clone();
        config.validate()?;
        Ok(config)
    }
}

/// Parses `8MiB`, `512k`, `4096` into bytes (binary multiples: `k` = 1024).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let n = parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| format!("{e} (expected a size such as 4096, 512KiB or 8MiB)"))?;
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= 1 << 40)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses `on`/`off` (and `true`/`false`).
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

/// Parses `10s`, `250ms`, `1m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected a duration such as 10s or 250ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = Args::try_parse_from(std::iter::once("udptee").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::try_from(&args).map_err(|e| e.to_string())
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
