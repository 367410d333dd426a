//! The sink: `recvmmsg` on a socket with a large forced receive buffer, counting datagrams, bytes,
//! per-stream loss, duplicates and reordering, one-way latency (kernel receive timestamp minus the send
//! time in the datagram, same-host clock) and the kernel's drops on its own socket.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;
use udptee::net::mmsg::{MmsgRecv, RecvMeta};
use udptee::pool::{BufId, BufPool};

use crate::payload;
use crate::stats::{Latency, StreamReport, Tracker, new_histogram};

/// Datagrams per recvmmsg in the sink.
const SINK_BATCH: usize = 64;
/// Slot size: any UDP datagram fits.
const SINK_SLOT: usize = 65536;

/// Where and how long to listen.
#[derive(Debug, Clone)]
pub struct SinkOpts {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Receive buffer to force.
    pub rcvbuf: usize,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop when nothing arrived for this long.
    pub idle_timeout: Option<Duration>,
}

/// The sink's JSON summary.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    /// Bound address.
    pub listen: SocketAddr,
    /// Datagrams received (all, tracked or not, duplicates included).
    pub datagrams: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Seconds from the first to the last datagram.
    pub elapsed_s: f64,
    /// Datagrams per second over that time.
    pub rate: f64,
    /// Datagrams without a loadgen header.
    pub untracked: u64,
    /// Sum of per-stream loss (gaps in sequence numbers; a lost tail is invisible here).
    pub lost: u64,
    /// Sum of per-stream duplicates.
    pub duplicates: u64,
    /// Sum of per-stream reordered datagrams.
    pub reordered: u64,
    /// The kernel's drops on the sink's own socket (SO_MEMINFO): loss the sink itself caused.
    pub kernel_drops: u64,
    /// Per stream.
    pub streams: Vec<StreamReport>,
    /// One-way latency in µs.
    pub latency_us: Latency,
}

/// Live counters of a running sink.
#[derive(Debug, Default)]
pub struct SinkLive {
    /// Datagrams so far.
    pub datagrams: AtomicU64,
    /// Sequence gaps so far.
    pub lost: AtomicU64,
}

/// A sink running on its own thread.
#[derive(Debug)]
pub struct SinkHandle {
    /// Bound address.
    pub addr: SocketAddr,
    /// Live counters.
    pub live: Arc<SinkLive>,
    finish: Arc<AtomicBool>,
    thread: JoinHandle<SinkReport>,
}

impl SinkHandle {
    /// Stops the sink now and returns its report.
    pub fn finish(self) -> SinkReport {
        self.finish.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits for the sink to stop by itself (duration, idle timeout or the process-wide stop flag).
    pub fn join(self) -> SinkReport {
        self.thread.join().expect("sink thread does not panic")
    }
}

/// Binds and starts a sink; `stop` (shared with signal handlers) ends it early, as does `finish`.
pub fn start(opts: &SinkOpts, stop: Arc<AtomicBool>) -> Result<SinkHandle> {
    let (mut sockets, addr, state) =
        udptee::net::socket::bind_reuseport_group(opts.listen, 1, opts.rcvbuf, true)
            .with_context(|| format!("binding sink to {}", opts.listen))?;
    if state.rcvbuf_granted < opts.rcvbuf {
        eprintln!(
            "warning: sink receive buffer is {} bytes, asked {}: the sink may drop",
            state.rcvbuf_granted, opts.rcvbuf
        );
    }
    let socket = sockets.pop().context("no socket")?;
    let live = Arc::new(SinkLive::default());
    let finish = Arc::new(AtomicBool::new(false));
    let (live2, finish2, opts) = (Arc::clone(&live), Arc::clone(&finish), opts.clone());
    let thread = std::thread::Builder::new()
        .name("loadgen-sink".into())
        .spawn(move || run(&socket, addr, &opts, &[&stop, &finish2], &live2))
        .context("starting sink thread")?;
    Ok(SinkHandle {
        addr,
        live,
        finish,
        thread,
    })
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn run(
    socket: &std::net::UdpSocket,
    addr: SocketAddr,
    opts: &SinkOpts,
    stops: &[&AtomicBool],
    live: &SinkLive,
) -> SinkReport {
    let pool = BufPool::new(SINK_BATCH, SINK_SLOT);
    let ids: Vec<BufId> = std::iter::from_fn(|| pool.try_take()).collect();
    let mut recv = MmsgRecv::new(SINK_BATCH);
    let mut meta = vec![RecvMeta::default(); SINK_BATCH];
    let mut header = [0u8; 64];
    let mut tracker = Tracker::default();
    let mut latency = new_histogram();
    let (mut datagrams, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last = started;
    loop {
        if stops.iter().any(|s| s.load(Ordering::Relaxed))
            || opts.duration.is_some_and(|d| started.elapsed() >= d)
            || opts.idle_timeout.is_some_and(|d| last.elapsed() >= d)
        {
            break;
        }
        let Ok(n) = recv.recv_batch(socket.as_fd(), &pool, &ids, &mut meta) else {
            continue;
        };
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        let wall = now_nanos();
        for (&id, m) in ids.iter().zip(&meta[..n]) {
            datagrams += 1;
            bytes += m.len as u64;
            pool.set_meta(id, m.len, m.rx_nanos);
            let got = pool.read_into(id, &mut header);
            if let Some(h) = payload::decode(&header[..got]) {
                tracker.record(h.stream, h.seq);
                let rx = if m.rx_nanos > 0 { m.rx_nanos } else { wall };
                let _ = latency.record((rx / 1000).saturating_sub(h.sent_us).max(1));
            } else {
                tracker.untracked += 1;
            }
        }
        live.datagrams.store(datagrams, Ordering::Relaxed);
        live.lost.store(tracker.lost_so_far(), Ordering::Relaxed);
    }
    let streams = tracker.report();
    let elapsed_s = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    SinkReport {
        listen: addr,
        datagrams,
        bytes,
        elapsed_s,
        rate: if elapsed_s > 0.0 {
            datagrams as f64 / elapsed_s
        } else {
            0.0
        },
        untracked: tracker.untracked,
        lost: streams.iter().map(|s| s.lost).sum(),
        duplicates: streams.iter().map(|s| s.duplicates).sum(),
        reordered: streams.iter().map(|s| s.reordered).sum(),
        kernel_drops: udptee::socket_drops(socket).unwrap_or(0),
        streams,
        latency_us: Latency::of(&latency),
    }
}
