//! Command line of udptee-loadgen: clap derive, doc comments are the `--help` text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::bench::{self, BenchOpts};
use crate::generator::{self, Limit, Progress, SendOpts};
use crate::payload::{Format, Profile};
use crate::progress::{ProgressLine, delta};
use crate::relay::{self, RelayOpts};
use crate::sink::{self, SinkOpts};

/// udptee-loadgen: generate statsd/DogStatsD load, sink it, and sweep rates through a forwarder.
#[derive(Debug, Parser)]
#[command(name = "udptee-loadgen", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send paced, sequence-numbered datagrams; prints a JSON report.
    Send(SendArgs),
    /// Receive and account: loss, duplicates, reordering, latency; prints a JSON summary on exit.
    Sink(SinkArgs),
    /// Sweep offered rates through a forwarder into N sinks: table, JSON and SVG plot.
    Bench(BenchArgs),
    /// The baseline forwarder: one thread, recvmmsg then sendmmsg to each target, no queues.
    Relay(RelayArgs),
    /// A SCHED_IDLE busy loop (pin it with taskset): how much of its CPU nothing else wanted, for
    /// measuring what a core spends on work /proc does not show (softirq); prints a JSON report.
    Spin(SpinArgs),
    /// Writes the man pages (udptee-loadgen.1 and one per subcommand) into a directory.
    #[command(hide = true)]
    Manpages {
        /// The directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args, Clone)]
struct SpinArgs {
    /// How long to spin.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

#[derive(Debug, Args, Clone)]
struct Gen {
    /// Datagram size in bytes, or a range MIN-MAX for uniformly mixed sizes.
    #[arg(long, value_name = "N|MIN-MAX", default_value = "64", value_parser = parse_size_range)]
    size: (usize, usize),
    /// Content format.
    #[arg(long, value_enum, default_value_t = Format::Statsd)]
    payload: Format,
    /// fixed: one padded line; realistic: several varied lines per datagram.
    #[arg(long, value_enum, default_value_t = Profile::Fixed)]
    profile: Profile,
    /// Sending sockets, one stream each.
    #[arg(long, default_value_t = 1)]
    sockets: usize,
    /// Sending threads (at most --sockets).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Datagrams per sendmmsg call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// With --rate, hold datagrams until this many are due and send them together (at most
    /// --batch): traffic in bursts, as a NIC's interrupt coalescing or clients flushing on a timer
    /// deliver it. 1 sends each datagram as soon as it is due.
    #[arg(long, default_value_t = 1)]
    burst: usize,
    /// CPUs to pin the generator threads to, cpulist syntax (in bench, also the sinks unless --sink-cpus).
    #[arg(long, value_name = "LIST")]
    cpus: Option<String>,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Destination HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// Datagrams per second (50k, 1.5M) or max.
    #[arg(long, value_name = "PPS|max", value_parser = parse_rate)]
    rate: Rate,
    /// Send for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, required_unless_present = "count", conflicts_with = "count")]
    duration: Option<Duration>,
    /// Send this many datagrams.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    #[command(flatten)]
    generator: Gen,
}

#[derive(Debug, Args)]
struct SinkArgs {
    /// Address to receive on.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Stop after this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this long without a datagram.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// Receive buffer (forced past net.core.rmem_max when permitted).
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    rcvbuf: usize,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Number of targets (sinks).
    #[arg(long, default_value_t = 2)]
    fanout: usize,
    /// Offered rates, comma-separated (50k,100k,max).
    #[arg(long, value_name = "LIST", default_value = "50k,100k", value_delimiter = ',', value_parser = parse_rate)]
    rates: Vec<Rate>,
    /// Sending time per rate.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Send exactly this many datagrams per rate instead of --duration.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Forwarder command; placeholders {listen} {to} {targets} {targets_csv} {udptee}. "none" sends
    /// straight to one sink, to measure the machine's ceiling.
    #[arg(long, value_name = "CMD", default_value = bench::DEFAULT_FORWARDER)]
    forwarder: String,
    /// Directory for bench.json, bench.svg and forwarder logs.
    #[arg(long, value_name = "DIR", default_value = "bench-out")]
    out: PathBuf,
    /// Receive buffer of each sink.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    sink_rcvbuf: usize,
    /// CPUs for the sink threads (default: the generator's --cpus).
    #[arg(long, value_name = "LIST")]
    sink_cpus: Option<String>,
    #[command(flatten)]
    generator: Gen,
}

#[derive(Debug, Args)]
struct RelayArgs {
    /// Address to receive on.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Targets, repeat for each.
    #[arg(long = "to", value_name = "ADDR", required = true)]
    targets: Vec<String>,
    /// Datagrams per syscall.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Receive buffer (give the baseline the same as udptee when comparing).
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = parse_bytes)]
    rcvbuf: usize,
    /// Drop every Nth datagram on purpose (a lossy forwarder for tests); 0 drops none.
    #[arg(long, value_name = "N", default_value_t = 0)]
    drop_every: u64,
}

/// A rate: datagrams per second, or as fast as possible.
type Rate = Option<f64>;

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(None);
    }
    let n = parse_size::parse_size(s)
        .map_err(|e| format!("{e} (expected e.g. 50000, 50k, 1.5M or max)"))?;
    if n == 0 {
        return Err("a rate must be positive".into());
    }
    Ok(Some(n as f64))
}

fn parse_bytes(s: &str) -> Result<usize, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map(|n| n as usize)
        .map_err(|e| format!("{e} (expected e.g. 64MiB)"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 5s or 250ms)"))
}

fn parse_size_range(s: &str) -> Result<(usize, usize), String> {
    let one = |p: &str| {
        p.trim()
            .parse::<usize>()
            .map_err(|e| format!("{p:?}: {e} (expected N or MIN-MAX, e.g. 20-1400)"))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => (one(s)?, one(s)?),
    };
    if lo > hi || hi > 65507 {
        return Err(format!("{s:?}: need MIN <= MAX <= 65507"));
    }
    Ok((lo, hi))
}

fn resolve(spec: &str) -> Result<SocketAddr> {
    Ok(udptee::config::resolve(spec)?)
}

fn cpus(list: Option<&String>) -> Result<Vec<usize>> {
    list.map_or(Ok(Vec::new()), |l| {
        Ok(udptee::config::parse_cpus("--cpus", l)?)
    })
}

fn send_opts(to: SocketAddr, rate: Rate, limit: Limit, g: &Gen) -> Result<SendOpts> {
    Ok(SendOpts {
        to,
        rate,
        limit,
        sizes: g.size,
        format: g.payload,
        profile: g.profile,
        sockets: g.sockets,
        threads: g.threads,
        batch: g.batch,
        burst: g.burst,
        cpus: cpus(g.cpus.as_ref())?,
    })
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> Result<()> {
        if let Cmd::Manpages { dir } = &self.command {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(<Self as clap::CommandFactory>::command(), dir)?;
            return Ok(());
        }
        let stop = generator::stop_on_signals()?;
        match self.command {
            Cmd::Send(a) => {
                let limit = match (a.duration, a.count) {
                    (Some(d), _) => Limit::Duration(d),
                    (None, Some(n)) => Limit::Count(n),
                    (None, None) => bail!("give --duration or --count"),
                };
                let opts = send_opts(resolve(&a.to)?, a.rate, limit, &a.generator)?;
                generator::validate(&opts)?;
                let progress = Arc::new(Progress::default());
                let (p, last) = (Arc::clone(&progress), AtomicU64::new(0));
                let line = ProgressLine::start(move |t| {
                    format!(
                        "sending: {}/s, {} sent, {t:.0}s",
                        delta(&p.sent, &last),
                        p.sent.load(Ordering::Relaxed)
                    )
                });
                let report = generator::send(&opts, &stop, &progress);
                line.finish();
                let report = report?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                if !report.rate_reached {
                    eprintln!(
                        "WARNING: asked for {:.0}/s but sent {:.0}/s: the generator is the bottleneck (add --threads/--sockets, pin with --cpus)",
                        report.asked_rate.unwrap_or(0.0),
                        report.achieved_rate
                    );
                }
            }
            Cmd::Sink(a) => {
                let opts = SinkOpts {
                    listen: resolve(&a.listen)?,
                    rcvbuf: a.rcvbuf,
                    duration: a.duration,
                    idle_timeout: a.idle_timeout,
                };
                let handle = sink::start(&opts, Arc::clone(&stop))?;
                eprintln!("sink listening on {}", handle.addr);
                let (live, last) = (Arc::clone(&handle.live), AtomicU64::new(0));
                let line = ProgressLine::start(move |t| {
                    format!(
                        "sink: {}/s, {} received, {} lost so far, {t:.0}s",
                        delta(&live.datagrams, &last),
                        live.datagrams.load(Ordering::Relaxed),
                        live.lost.load(Ordering::Relaxed)
                    )
                });
                let report = handle.join();
                line.finish();
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Cmd::Bench(a) => {
                let limit = a.count.map_or(Limit::Duration(a.duration), Limit::Count);
                let send = send_opts("127.0.0.1:9".parse()?, None, limit, &a.generator)?;
                let sink_cpus = if a.sink_cpus.is_some() {
                    cpus(a.sink_cpus.as_ref())?
                } else {
                    send.cpus.clone()
                };
                let opts = BenchOpts {
                    fanout: a.fanout,
                    rates: a.rates,
                    limit,
                    forwarder: a.forwarder,
                    send,
                    sink_rcvbuf: a.sink_rcvbuf,
                    sink_cpus,
                    out_dir: a.out,
                };
                bench::run(&opts, &stop)?;
            }
            Cmd::Spin(a) => {
                let report = crate::spin::spin(a.duration)?;
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Cmd::Manpages { .. } => {}
            Cmd::Relay(a) => {
                let targets = a
                    .targets
                    .iter()
                    .map(|t| resolve(t))
                    .collect::<Result<Vec<_>>>()?;
                let opts = RelayOpts {
                    listen: resolve(&a.listen)?,
                    targets,
                    batch: a.batch,
                    rcvbuf: a.rcvbuf,
                    drop_every: a.drop_every,
                };
                let report = relay::run(&opts, &stop).context("relay")?;
                eprintln!("{}", serde_json::to_string(&report)?);
            }
        }
        Ok(())
    }
}
