//! The generator: `--threads` threads, each owning some of `--sockets` connected sockets (one stream
//! each), sending `sendmmsg` batches paced by a token bucket.
//!
//! Pacing: datagram k of a thread is due at `start + k / rate`. A thread sends whatever is due (at most
//! a batch per call), sleeps when it is more than `SPIN_BELOW` ahead and spins otherwise, so the rate
//! holds even with millisecond timer jitter. When it falls behind it catches up in full batches; if it
//! still ends short of the rate, the report says so loudly: the generator must never be the unnoticed
//! bottleneck.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use udptee::net::mmsg::MmsgSend;

use crate::payload::{self, Format, Header, Profile};

/// Below this much time to the next due datagram the thread spins instead of sleeping: a sleep can
/// overshoot by milliseconds on a busy VM.
const SPIN_BELOW: Duration = Duration::from_micros(200);
/// Below this fraction of the asked rate the report flags the run as generator-limited.
const RATE_TOLERANCE: f64 = 0.98;

/// How long to send.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// For this long.
    Duration(Duration),
    /// This many datagrams in total.
    Count(u64),
}

/// What to send.
#[derive(Debug, Clone)]
pub struct SendOpts {
    /// Destination.
    pub to: SocketAddr,
    /// Datagrams per second over all threads; `None` for as fast as possible.
    pub rate: Option<f64>,
    /// When to stop.
    pub limit: Limit,
    /// Datagram size range (inclusive); equal ends for a fixed size.
    pub sizes: (usize, usize),
    /// Wire format.
    pub format: Format,
    /// Content profile.
    pub profile: Profile,
    /// Sending sockets (streams).
    pub sockets: usize,
    /// Sending threads.
    pub threads: usize,
    /// Datagrams per sendmmsg.
    pub batch: usize,
    /// With a rate, datagrams held until due together (1..=batch).
    pub burst: usize,
    /// CPUs to pin sending threads to, round-robin; empty for none.
    pub cpus: Vec<usize>,
}

/// What the generator did.
#[derive(Debug, Clone, Serialize)]
pub struct SendReport {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Bytes the kernel accepted.
    pub bytes: u64,
    /// Datagrams refused by the kernel (each still used a sequence number).
    pub errors: u64,
    /// Sending time in seconds.
    pub elapsed_s: f64,
    /// Asked rate (datagrams/s), `null` for max.
    pub asked_rate: Option<f64>,
    /// Achieved rate.
    pub achieved_rate: f64,
    /// False when the achieved rate fell short of the asked rate by more than 2 %.
    pub rate_reached: bool,
    /// Datagrams sent per stream id (sequence numbers 0..n).
    pub per_stream: Vec<u64>,
}

/// Live counters, for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Datagrams sent so far.
    pub sent: AtomicU64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Checks options that clap cannot.
pub fn validate(o: &SendOpts) -> Result<()> {
    if o.sockets == 0 || o.threads == 0 || o.batch == 0 || o.batch > 1024 {
        bail!("--sockets and --threads must be at least 1, --batch 1 to 1024");
    }
    if o.burst == 0 || o.burst > o.batch {
        bail!("--burst must be 1 to --batch ({})", o.batch);
    }
    if o.threads > o.sockets {
        bail!(
            "--threads ({}) cannot exceed --sockets ({}): each thread needs a socket",
            o.threads,
            o.sockets
        );
    }
    if o.sizes.0 > o.sizes.1 || o.sizes.1 > 65507 {
        bail!("--size must be N or MIN-MAX with MIN <= MAX <= 65507");
    }
    if o.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number of datagrams per second, or max");
    }
    if o.profile == Profile::Realistic && o.format == Format::Raw {
        bail!("--profile realistic needs --payload statsd or dogstatsd");
    }
    Ok(())
}

/// Sends until the limit or until `stop` is set; returns what was sent.
pub fn send(o: &SendOpts, stop: &AtomicBool, progress: &Progress) -> Result<SendReport> {
    validate(o)?;
    let min = payload::min_size(o.format, o.sockets as u32);
    if o.sizes.0 < min {
        eprintln!(
            "note: {:?} datagrams need at least {min} bytes for their header; smaller sizes are sent as {min}",
            o.format
        );
    }
    let sockets: Vec<UdpSocket> = (0..o.sockets)
        .map(|_| {
            let bind: SocketAddr = if o.to.is_ipv6() {
                "[::]:0".parse()?
            } else {
                "0.0.0.0:0".parse()?
            };
            let s = UdpSocket::bind(bind)?;
            s.connect(o.to)?;
            Ok(s)
        })
        .collect::<Result<_>>()
        .with_context(|| format!("connecting sockets to {}", o.to))?;
    let mut per_thread: Vec<Vec<(u32, UdpSocket)>> = (0..o.threads).map(|_| Vec::new()).collect();
    for (i, s) in sockets.into_iter().enumerate() {
        per_thread[i % o.threads].push((i as u32, s));
    }
    let start = Instant::now();
    let results: Vec<ThreadResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = per_thread
            .into_iter()
            .enumerate()
            .map(|(t, socks)| {
                let cpu = (!o.cpus.is_empty()).then(|| o.cpus[t % o.cpus.len()]);
                let share = |total: f64| total / o.threads as f64;
                let limit = match o.limit {
                    Limit::Count(n) => Limit::Count(
                        n / o.threads as u64 + u64::from((t as u64) < n % o.threads as u64),
                    ),
                    d => d,
                };
                let rate = o.rate.map(share);
                scope.spawn(move || {
                    if let Some(id) = cpu {
                        pin(id);
                    }
                    run_thread(o, socks, rate, limit, start, stop, progress)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("generator thread"))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut per_stream = vec![0; o.sockets];
    let (mut sent, mut bytes, mut errors) = (0, 0, 0);
    for r in results {
        sent += r.sent;
        bytes += r.bytes;
        errors += r.errors;
        for (stream, n) in r.per_stream {
            per_stream[stream as usize] = n;
        }
    }
    let achieved_rate = sent as f64 / elapsed.max(1e-9);
    let rate_reached = o.rate.is_none_or(|r| achieved_rate >= r * RATE_TOLERANCE);
    Ok(SendReport {
        sent,
        bytes,
        errors,
        elapsed_s: elapsed,
        asked_rate: o.rate,
        achieved_rate,
        rate_reached,
        per_stream,
    })
}

/// Pins the calling thread to `cpu`, warning if the kernel refuses.
pub fn pin(cpu: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        eprintln!("warning: could not pin thread to CPU {cpu}");
    }
}

struct ThreadResult {
    sent: u64,
    bytes: u64,
    errors: u64,
    per_stream: Vec<(u32, u64)>,
}

fn run_thread(
    o: &SendOpts,
    socks: Vec<(u32, UdpSocket)>,
    rate: Option<f64>,
    limit: Limit,
    start: Instant,
    stop: &AtomicBool,
    progress: &Progress,
) -> ThreadResult {
    let mut mmsg = MmsgSend::new(o.batch);
    let mut rng = fastrand::Rng::new();
    let mut bufs: Vec<Vec<u8>> = (0..o.batch)
        .map(|_| Vec::with_capacity(o.sizes.1.max(64)))
        .collect();
    let mut seqs = vec![0u64; socks.len()];
    let (mut sent, mut bytes, mut errors, mut attempted) = (0u64, 0u64, 0u64, 0u64);
    let mut next_sock = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let remaining = match limit {
            Limit::Count(n) => n - attempted,
            Limit::Duration(d) => {
                if start.elapsed() >= d {
                    break;
                }
                u64::MAX
            }
        };
        if remaining == 0 {
            break;
        }
        let due = match rate {
            Some(r) => {
                let allowed = (start.elapsed().as_secs_f64() * r) as u64;
                let due = allowed.saturating_sub(attempted);
                let want = (o.burst as u64).min(remaining);
                if due < want {
                    let next = start + Duration::from_secs_f64((attempted + want) as f64 / r);
                    let wait = next.saturating_duration_since(Instant::now());
                    if wait > SPIN_BELOW {
                        std::thread::sleep(wait - SPIN_BELOW / 2);
                    } else {
                        std::hint::spin_loop();
                    }
                    continue;
                }
                due
            }
            None => o.batch as u64,
        };
        let n = due.min(o.batch as u64).min(remaining) as usize;
        let (stream, socket) = &socks[next_sock];
        let ts = now_us();
        for buf in &mut bufs[..n] {
            let size = if o.sizes.0 == o.sizes.1 {
                o.sizes.0
            } else {
                rng.usize(o.sizes.0..=o.sizes.1)
            };
            let h = Header {
                stream: *stream,
                seq: seqs[next_sock],
                sent_us: ts,
            };
            payload::encode(o.format, o.profile, h, size, &mut rng, buf);
            seqs[next_sock] += 1;
        }
        let mut at = 0;
        while at < n {
            match mmsg.send_slices(socket.as_fd(), &bufs[at..n]) {
                Ok(k) => {
                    bytes += bufs[at..at + k].iter().map(|s| s.len() as u64).sum::<u64>();
                    sent += k as u64;
                    at += k.max(1);
                }
                Err(_) => {
                    errors += 1;
                    at += 1;
                }
            }
        }
        attempted += n as u64;
        progress.sent.fetch_add(n as u64, Ordering::Relaxed);
        next_sock = (next_sock + 1) % socks.len();
    }
    ThreadResult {
        sent,
        bytes,
        errors,
        per_stream: socks.iter().map(|(s, _)| *s).zip(seqs).collect(),
    }
}

/// Shared stop flag set by SIGINT/SIGTERM.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    Ok(stop)
}
