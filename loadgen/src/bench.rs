//! `bench`: one command that reproduces a drop rate. For each offered rate it starts `--fanout` sinks
//! and a fresh forwarder process (udptee by default, or any command line), sends for `--duration`,
//! waits for the tail to arrive, and measures per-target delivery and loss, the forwarder's CPU time per
//! datagram and RSS (from /proc), and one-way latency. It prints a table and writes JSON and an SVG plot.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::generator::{self, Limit, Progress, SendOpts, SendReport};
use crate::progress::ProgressLine;
use crate::sink::{self, SinkOpts};
pub use crate::stats::BenchRow;

/// Forwarder used when `--forwarder` is not given; `{udptee}` is the udptee binary next to this one.
pub const DEFAULT_FORWARDER: &str =
    "{udptee} --listen {listen} {to} --stats-interval 0 --admin 127.0.0.1:0";
/// How long the forwarder may take to bind its port.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The tail has arrived when no sink grew for this long.
const SETTLE_QUIET: Duration = Duration::from_millis(200);
/// Longest wait for the tail.
const SETTLE_MAX: Duration = Duration::from_secs(3);

/// What to sweep.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// Sinks (targets) per run.
    pub fanout: usize,
    /// Offered rates; `None` is "max".
    pub rates: Vec<Option<f64>>,
    /// How long (or how many datagrams) to send per rate.
    pub limit: Limit,
    /// Forwarder command template.
    pub forwarder: String,
    /// Generator settings (destination and limit are set per run).
    pub send: SendOpts,
    /// Sink receive buffer.
    pub sink_rcvbuf: usize,
    /// CPUs for the sinks; empty for none.
    pub sink_cpus: Vec<usize>,
    /// Where to write JSON, plot and forwarder logs.
    pub out_dir: PathBuf,
}

/// Expands a forwarder template: `{listen}`, `{targets}` (space-separated), `{targets_csv}`, `{to}`
/// (`--to A --to B`) and `{udptee}`.
pub fn expand(template: &str, listen: SocketAddr, targets: &[SocketAddr], udptee: &Path) -> String {
    let list: Vec<String> = targets.iter().map(ToString::to_string).collect();
    let to: Vec<String> = list.iter().map(|t| format!("--to {t}")).collect();
    template
        .replace("{listen}", &listen.to_string())
        .replace("{targets_csv}", &list.join(","))
        .replace("{targets}", &list.join(" "))
        .replace("{to}", &to.join(" "))
        .replace("{udptee}", &udptee.display().to_string())
}

/// The udptee binary beside this executable (cargo puts both in `target/<profile>/`), else `udptee`.
pub fn udptee_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("udptee")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("udptee"))
}

fn free_port() -> Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

fn port_bound(addr: SocketAddr) -> bool {
    procfs::net::udp().is_ok_and(|entries| {
        entries
            .iter()
            .any(|e| e.local_address.port() == addr.port())
    })
}

struct ForwarderProcess {
    child: Child,
}

impl ForwarderProcess {
    fn spawn(cmd: &str, listen: SocketAddr, log: &Path) -> Result<Self> {
        let log = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting forwarder: {cmd}"))?;
        let mut p = Self { child };
        let start = Instant::now();
        while !port_bound(listen) {
            if let Some(status) = p.child.try_wait()? {
                bail!("forwarder exited ({status}) before binding {listen}: {cmd}");
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!("forwarder did not bind {listen} within {READY_TIMEOUT:?}: {cmd}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(p)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn rss_kib(&self) -> u64 {
        procfs::process::Process::new(self.pid())
            .and_then(|p| p.status())
            .ok()
            .and_then(|s| s.vmrss)
            .unwrap_or(0)
    }

    fn stop(mut self) {
        // SIGTERM, not Child::kill's SIGKILL: the forwarder drains and logs its final accounting.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--forwarder none`: the generator sends straight to the single sink (the machine's ceiling).
pub const NO_FORWARDER: &str = "none";

/// Runs one offered rate.
fn run_rate(
    o: &BenchOpts,
    rate: Option<f64>,
    index: usize,
    stop: &Arc<AtomicBool>,
) -> Result<BenchRow> {
    let sink_opts = SinkOpts {
        listen: "127.0.0.1:0".parse().expect("literal"),
        rcvbuf: o.sink_rcvbuf,
        duration: None,
        idle_timeout: None,
    };
    let sinks = std::thread::scope(|scope| {
        // Sinks inherit the CPU affinity of the thread that starts them.
        scope
            .spawn(|| {
                if let Some(&cpu) = o.sink_cpus.first() {
                    generator::pin(cpu);
                }
                (0..o.fanout)
                    .map(|_| sink::start(&sink_opts, Arc::clone(stop)))
                    .collect::<Result<Vec<_>>>()
            })
            .join()
            .expect("sink starter does not panic")
    })?;
    let targets: Vec<SocketAddr> = sinks.iter().map(|s| s.addr).collect();
    let (listen, fwd) = if o.forwarder == NO_FORWARDER {
        (targets[0], None)
    } else {
        let listen = free_port()?;
        let cmd = expand(&o.forwarder, listen, &targets, &udptee_path());
        let log = o.out_dir.join(format!("forwarder-{index}.log"));
        (listen, Some(ForwarderProcess::spawn(&cmd, listen, &log)?))
    };
    let cpu_of = |f: &Option<ForwarderProcess>| {
        f.as_ref()
            .and_then(|f| udptee::metrics::proc::process_cpu_time(f.pid()))
            .unwrap_or_default()
    };
    let cpu_before = cpu_of(&fwd);

    let send = SendOpts {
        to: listen,
        rate,
        limit: o.limit,
        ..o.send.clone()
    };
    let progress = Arc::new(Progress::default());
    let (p, lives) = (
        Arc::clone(&progress),
        sinks
            .iter()
            .map(|s| Arc::clone(&s.live))
            .collect::<Vec<_>>(),
    );
    let label = rate.map_or("max".to_string(), |r| format!("{r:.0}/s"));
    let line = ProgressLine::start(move |t| {
        let sent = p.sent.load(Ordering::Relaxed);
        let behind: Vec<String> = lives
            .iter()
            .map(|l| {
                format!(
                    "{:.2}%",
                    100.0 * sent.saturating_sub(l.datagrams.load(Ordering::Relaxed)) as f64
                        / sent.max(1) as f64
                )
            })
            .collect();
        format!(
            "offered {label}: sent {sent} ({:.0}/s), not (yet) delivered per target {}, {t:.0}s",
            sent as f64 / t.max(1e-9),
            behind.join(",")
        )
    });
    let report = generator::send(&send, stop, &progress);
    line.finish();
    let report: SendReport = report?;

    // Wait for the tail: until no sink has grown for SETTLE_QUIET.
    let settle_start = Instant::now();
    let mut last: Vec<u64> = sinks
        .iter()
        .map(|s| s.live.datagrams.load(Ordering::Relaxed))
        .collect();
    let mut quiet_since = Instant::now();
    while settle_start.elapsed() < SETTLE_MAX && quiet_since.elapsed() < SETTLE_QUIET {
        std::thread::sleep(Duration::from_millis(20));
        let now: Vec<u64> = sinks
            .iter()
            .map(|s| s.live.datagrams.load(Ordering::Relaxed))
            .collect();
        if now != last {
            quiet_since = Instant::now();
            last = now;
        }
    }
    let cpu = cpu_of(&fwd).saturating_sub(cpu_before);
    let rss_kib = fwd.as_ref().map_or(0, ForwarderProcess::rss_kib);
    if let Some(fwd) = fwd {
        fwd.stop();
    }
    let reports: Vec<_> = sinks.into_iter().map(sink::SinkHandle::finish).collect();

    let delivered: Vec<u64> = reports.iter().map(|r| r.datagrams - r.duplicates).collect();
    let sent = report.sent.max(1);
    let loss_pct = delivered
        .iter()
        .map(|&d| 100.0 * (sent as f64 - d as f64).max(0.0) / sent as f64)
        .collect();
    let latency_us = reports
        .iter()
        .map(|r| r.latency_us.clone())
        .max_by_key(|l| l.p99)
        .unwrap_or_default();
    Ok(BenchRow {
        offered_rate: rate,
        sent_rate: report.achieved_rate,
        sent: report.sent,
        rate_reached: report.rate_reached,
        delivered,
        loss_pct,
        sink_kernel_drops: reports.iter().map(|r| r.kernel_drops).sum(),
        cpu_us_per_datagram: cpu.as_secs_f64() * 1e6 / sent as f64,
        rss_kib,
        latency_us,
    })
}

/// Sweeps every rate; prints the table as it goes; writes `bench.json` and `bench.svg` in `out_dir`.
pub fn run(o: &BenchOpts, stop: &Arc<AtomicBool>) -> Result<Vec<BenchRow>> {
    anyhow::ensure!((1..=64).contains(&o.fanout), "--fanout must be 1 to 64");
    anyhow::ensure!(
        o.forwarder != NO_FORWARDER || o.fanout == 1,
        "--forwarder none sends straight to one sink: use --fanout 1"
    );
    generator::validate(&o.send)?;
    fs::create_dir_all(&o.out_dir).with_context(|| format!("creating {}", o.out_dir.display()))?;
    println!("{}", header());
    let mut rows = Vec::new();
    for (i, &rate) in o.rates.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let row = run_rate(o, rate, i, stop)?;
        println!("{}", format_row(&row));
        if !row.rate_reached {
            eprintln!(
                "WARNING: the generator reached only {:.0}/s of {:.0}/s: this row measures the generator, not the forwarder",
                row.sent_rate,
                rate.unwrap_or(0.0)
            );
        }
        rows.push(row);
    }
    let json = o.out_dir.join("bench.json");
    let doc = serde_json::json!({
        "forwarder": o.forwarder,
        "fanout": o.fanout,
        "limit": match o.limit { Limit::Duration(d) => format!("{d:?}"), Limit::Count(n) => format!("{n} datagrams") },
        "sizes": [o.send.sizes.0, o.send.sizes.1],
        "payload": o.send.format,
        "profile": o.send.profile,
        "rows": rows,
    });
    fs::write(&json, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = o.out_dir.join("bench.svg");
    crate::plot::delivered_vs_offered(&svg, &rows, o.fanout)?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(rows)
}

fn header() -> String {
    format!(
        "{:>10} {:>10} {:>24} {:>18} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "offered/s",
        "sent/s",
        "delivered/s per target",
        "loss % per target",
        "cpu us/dg",
        "rss KiB",
        "p50 us",
        "p99 us",
        "p99.9 us"
    )
}

fn format_row(r: &BenchRow) -> String {
    let secs = r.sent as f64 / r.sent_rate.max(1e-9);
    let delivered: Vec<String> = r
        .delivered
        .iter()
        .map(|d| format!("{:.0}", *d as f64 / secs.max(1e-9)))
        .collect();
    let loss: Vec<String> = r.loss_pct.iter().map(|l| format!("{l:.3}")).collect();
    format!(
        "{:>10} {:>10.0} {:>24} {:>18} {:>9.2} {:>9} {:>8} {:>8} {:>8}",
        r.offered_rate
            .map_or("max".to_string(), |x| format!("{x:.0}")),
        r.sent_rate,
        delivered.join(","),
        loss.join(","),
        r.cpu_us_per_datagram,
        r.rss_kib,
        r.latency_us.p50,
        r.latency_us.p99,
        r.latency_us.p999
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_every_placeholder() {
        let t: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let cmd = expand(
            "x {listen} {to} {targets} {targets_csv} {udptee}",
            "127.0.0.1:9".parse().unwrap(),
            &t,
            Path::new("/u"),
        );
        assert_eq!(
            cmd,
            "x 127.0.0.1:9 --to 127.0.0.1:1 --to 127.0.0.1:2 127.0.0.1:1 127.0.0.1:2 127.0.0.1:1,127.0.0.1:2 /u"
        );
    }
}
