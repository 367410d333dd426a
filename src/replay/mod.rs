//! `udptee replay`: send the UDP datagrams of pcap/pcapng captures to one or more targets, keeping
//! the recorded gaps scaled by `--speed`, at a fixed `--pps`, or flat out, with `sendmmsg` batches
//! on one connected socket per target; with `--preserve-source`, from each datagram's recorded
//! source address and port, on a raw socket per target (`net::origin`).
//!
//! Floor 2 (the data path): a second user of `net`'s batch send; imports `net`, and `metrics` for
//! the send-error classes.

pub mod capture;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::counters::SendErrorKind;
use crate::net::mmsg::MmsgSend;
use crate::net::origin::{self, Origin, OriginSend, Way};
use capture::{Skip, Skipped};

/// Datagrams per `sendmmsg`.
const BATCH: usize = 32;

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the sockets take them.
    Max,
    /// The recorded gaps divided by this factor (1 = real time).
    Speed(f64),
    /// A fixed rate, datagrams per second, whatever was recorded.
    Pps(f64),
}

/// What to replay, where.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    /// Capture files, replayed one after the other.
    pub files: Vec<PathBuf>,
    /// Every datagram goes to each of these.
    pub targets: Vec<SocketAddr>,
    /// Timing.
    pub pace: Pace,
    /// Times through all the files (at least 1).
    pub loops: u64,
    /// Only datagrams recorded with this destination port.
    pub port: Option<u16>,
    /// Send each datagram from its recorded source address and port (a raw socket).
    pub preserve_source: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Datagrams taken from the captures (per loop, counted once per pass).
    pub datagrams: u64,
    /// Payload bytes of those.
    pub bytes: u64,
    /// Copies sent (datagrams × targets, less send errors).
    pub sent: u64,
    /// Copies the kernel refused (e.g. ECONNREFUSED: nothing listens at a target).
    pub send_errors: u64,
    /// With `--preserve-source`: copies not sent because their recorded origin cannot be a UDP
    /// source (a Unix sender's credentials, or another address family than the target's).
    pub origin_lost: u64,
    /// Frames skipped, by [`Skip`].
    pub skipped: Skipped,
    /// Datagrams left out by `--port`.
    pub other_port: u64,
    /// Wall time of the sending.
    pub elapsed: Duration,
    /// Stopped before the end by a signal (SIGINT, SIGTERM): what is above was sent.
    pub interrupted: bool,
}

impl ReplayReport {
    /// Datagrams per second achieved.
    pub fn rate(&self) -> f64 {
        self.datagrams as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replayed {} datagrams ({} bytes) in {:.3} s, {:.0}/s; {} copies sent, {} send errors, {} origin lost; skipped",
            self.datagrams,
            self.bytes,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.sent,
            self.send_errors,
            self.origin_lost
        )?;
        for s in Skip::ALL {
            write!(f, " {} {}", s.as_str(), self.skipped[s as usize])?;
        }
        write!(f, ", other_port {}", self.other_port)?;
        if self.interrupted {
            write!(f, "; stopped early by a signal")?;
        }
        Ok(())
    }
}

/// Why a replay stopped early; `report` says what was sent before.
#[derive(Debug)]
pub struct ReplayError {
    /// The file (or target) it concerns and what went wrong.
    pub message: String,
    /// What was done before.
    pub report: Box<ReplayReport>,
}

/// A batch being built: payloads copied out of the capture reader's buffer, with their recorded
/// sources.
struct Batch {
    bufs: Vec<Vec<u8>>,
    srcs: Vec<SocketAddr>,
    len: usize,
}

impl Batch {
    fn push(&mut self, payload: &[u8], src: SocketAddr) {
        if self.len == self.bufs.len() {
            self.bufs.push(Vec::new());
            self.srcs.push(src);
        }
        let b = &mut self.bufs[self.len];
        b.clear();
        b.extend_from_slice(payload);
        self.srcs[self.len] = src;
        self.len += 1;
    }
}

/// How the copies leave: one connected socket per target, or (`--preserve-source`) one raw socket
/// per target, each copy from its recorded source.
enum Senders {
    Plain(MmsgSend, Vec<UdpSocket>),
    Kept(OriginSend, Vec<(std::os::fd::OwnedFd, SocketAddr)>),
}

impl Senders {
    fn open(plan: &ReplayPlan) -> Result<Self, String> {
        if plan.preserve_source {
            let raws = plan
                .targets
                .iter()
                .map(|&t| {
                    origin::raw_socket(t).map(|s| (s, t)).map_err(|e| {
                        format!(
                            "target {t}: --preserve-source needs a raw socket (CAP_NET_RAW): {e}"
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            return Ok(Self::Kept(OriginSend::new(BATCH), raws));
        }
        let sockets = plan
            .targets
            .iter()
            .map(|&t| {
                crate::net::socket::connect_target(t, None).map_err(|e| format!("target {t}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::Plain(MmsgSend::new(BATCH), sockets))
    }
}

/// A recorded source as an origin: a Unix sender's credentials (`origin::cred_address`), or an
/// address and port.
fn recorded_origin(src: SocketAddr) -> Origin {
    match origin::cred_of_address(src.ip()) {
        Some(c) => Origin::Process(c),
        None => Origin::Ip(src),
    }
}

/// Runs the plan; `progress` is called after every batch with the datagrams sent so far.
pub fn replay(plan: &ReplayPlan, progress: impl FnMut(u64)) -> Result<ReplayReport, ReplayError> {
    replay_until(plan, progress, &AtomicBool::new(false))
}

/// [`replay`], stopping early (with what was sent so far, `interrupted` set) once `stop` is set:
/// checked before every datagram and at least every [`STOP_CHECK`] while waiting.
pub fn replay_until(
    plan: &ReplayPlan,
    mut progress: impl FnMut(u64),
    stop: &AtomicBool,
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    let fail = |message: String, report: &ReplayReport| ReplayError {
        message,
        report: Box::new(report.clone()),
    };
    let mut senders = Senders::open(plan).map_err(|e| fail(e, &report))?;
    let mut batch = Batch {
        bufs: Vec::with_capacity(BATCH),
        srcs: Vec::with_capacity(BATCH),
        len: 0,
    };
    let start = Instant::now();
    // Timeline: the first datagram's capture time maps to `base`; every later one to
    // base + (ts - first) / speed. Each loop and each file continues where the previous ended.
    let mut base = start;
    let mut n_pps: u64 = 0;
    for _ in 0..plan.loops.max(1) {
        for path in &plan.files {
            let mut first: Option<u64> = None;
            let mut last_due = base;
            let mut each = |d: capture::Udp<'_>| -> Result<(), String> {
                if stop.load(Ordering::Relaxed) {
                    return Err(STOPPED.into());
                }
                if plan.port.is_some_and(|p| p != d.dst.port()) {
                    report.other_port += 1;
                    return Ok(());
                }
                let due = match plan.pace {
                    Pace::Max => None,
                    Pace::Pps(pps) => {
                        n_pps += 1;
                        Some(after(start, n_pps as f64 / pps)?)
                    }
                    Pace::Speed(speed) => match d.ts_nanos {
                        Some(ts) => {
                            if first.is_none() && report.datagrams == 0 {
                                // The schedule starts with the first datagram, not with opening
                                // the file.
                                base = Instant::now();
                            }
                            let t0 = *first.get_or_insert(ts);
                            let gap = ts.saturating_sub(t0) as f64 / 1e9;
                            Some(after(base, gap / speed)?)
                        }
                        None => None,
                    },
                };
                if let Some(due) = due {
                    last_due = last_due.max(due);
                    if due > Instant::now() {
                        flush(&mut senders, &mut batch, &mut report);
                        progress(report.datagrams);
                        if !wait_until(due, stop) {
                            return Err(STOPPED.into());
                        }
                    }
                }
                batch.push(d.payload, d.src);
                report.datagrams += 1;
                report.bytes += d.payload.len() as u64;
                if batch.len == BATCH {
                    flush(&mut senders, &mut batch, &mut report);
                    progress(report.datagrams);
                }
                Ok(())
            };
            let mut skipped = Skipped::default();
            let r = capture::for_each_udp(path, &mut skipped, &mut each);
            for (a, b) in report.skipped.iter_mut().zip(skipped) {
                *a += b;
            }
            flush(&mut senders, &mut batch, &mut report);
            progress(report.datagrams);
            if let Err(e) = r {
                report.elapsed = start.elapsed();
                if stop.load(Ordering::Relaxed) {
                    report.interrupted = true;
                    return Ok(report);
                }
                return Err(fail(format!("{}: {e}", path.display()), &report));
            }
            base = last_due.max(Instant::now());
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// How often a wait looks at the stop flag.
pub const STOP_CHECK: Duration = Duration::from_millis(100);

/// What the per-datagram callback returns when stopped (not a capture error).
const STOPPED: &str = "stopped";

/// `from` plus `secs` seconds, or an error when the schedule leaves what a clock can hold (a capture
/// whose timestamps span centuries at a slow `--speed`).
fn after(from: Instant, secs: f64) -> Result<Instant, String> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| from.checked_add(d))
        .ok_or_else(|| format!("the schedule reaches {secs:.0} s from now: a capture timestamp out of range for this pace"))
}

/// Sleeps until `due`, the last stretch spinning, since timer wake-ups are late by up to
/// milliseconds here; false when `stop` was set first.
fn wait_until(due: Instant, stop: &AtomicBool) -> bool {
    const SPIN: Duration = Duration::from_micros(200);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        let left = due - now;
        if left > SPIN {
            std::thread::sleep((left - SPIN).min(STOP_CHECK));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Sends the batch to every target: a short count resumes, a refused copy is counted and skipped
/// (a copy whose origin cannot be sent as `origin_lost`).
fn flush(senders: &mut Senders, batch: &mut Batch, report: &mut ReplayReport) {
    let bufs = &batch.bufs[..batch.len];
    let srcs = &batch.srcs[..batch.len];
    let targets = match senders {
        Senders::Plain(_, sockets) => sockets.len(),
        Senders::Kept(_, raws) => raws.len(),
    };
    for t in 0..targets {
        let mut start = 0;
        while start < bufs.len() {
            let r = match senders {
                Senders::Plain(send, sockets) => {
                    send.send_slices(sockets[t].as_fd(), &bufs[start..])
                }
                Senders::Kept(send, raws) => {
                    let copies = bufs[start..]
                        .iter()
                        .zip(&srcs[start..])
                        .map(|(b, &s)| (b.as_slice(), recorded_origin(s)));
                    send.send(raws[t].0.as_fd(), &Way::Raw(raws[t].1), copies)
                }
            };
            match r {
                Ok(0) => break,
                Ok(n) => {
                    report.sent += n as u64;
                    start += n;
                }
                Err(e) if crate::net::socket::timed_out(&e) => {}
                Err(e) => {
                    // Classified as the forwarder's books classify it.
                    match SendErrorKind::of(&e) {
                        SendErrorKind::OriginLost => report.origin_lost += 1,
                        _ => report.send_errors += 1,
                    }
                    start += 1;
                }
            }
        }
    }
    batch.len = 0;
}
