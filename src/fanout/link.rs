//! A stream target's sender: statsd lines over a TCP connection, or DogStatsD frames over a Unix
//! stream socket, one persistent connection fed by the target's ring like any sender (workers
//! never write to it inline), so the memory bound and `queue_full` hold as for UDP. While
//! disconnected nothing is consumed: the ring fills, then drops, and a dead target costs the
//! others nothing. Connects again with backoff (100 ms doubling to 5 s, ±25 % jitter).
//!
//! Each batch is one write (TCP: a `\n` added after a datagram whose last line has none; Unix: each
//! datagram behind its little-endian length): the write is the batch's flush. A copy is
//! `forwarded` once the peer has taken its last byte (TCP: acknowledged, `tcpi_bytes_acked`; Unix:
//! read, `SIOCOUTQ`); written and not taken when the connection is lost, it is `connection_lost`,
//! never written again (it may have reached the receiver), and what was not written at all goes
//! to the next connection. At removal or stop the ring is drained, the connection shut down for
//! writing and what it holds awaited until the drain deadline. Hot path for stream targets: no
//! allocation once warm, one write and one syscall to read what was taken per batch.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::ratelimit::RateLimit;
use super::target::{StreamLink, TargetCore};
use crate::metrics::histogram::now_nanos;
use crate::net::link::Endpoint;
use crate::net::socket::WAKE_INTERVAL;
use crate::net::stream::Conn as StreamConn;
use crate::pool::ring::Entry;

/// First wait before connecting again.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often acknowledgements are read while copies wait for them and nothing else happens.
const SETTLE_INTERVAL: Duration = Duration::from_millis(10);
/// Most copies written and not yet acknowledged: past it the sender waits for acknowledgements
/// before writing more (bounds the memory of the book of what is in flight).
const MAX_IN_FLIGHT: usize = 1 << 16;

/// A switch: the connection of a stream target's next incarnation, opened while the current one
/// (`prev`) still sends, so it moves over only to a receiver that accepted it. Nothing to open
/// when the current one is not connected (it loses nothing by moving).
pub(crate) fn open_first(
    prev: Option<&TargetCore>,
    spec: &crate::config::TargetSpec,
) -> Result<Option<StreamConn>, super::change::ChangeError> {
    let connected = prev
        .and_then(|p| p.link.as_ref())
        .is_some_and(|l| l.connected.load(Ordering::Relaxed));
    if !spec.is_stream() || !connected {
        return Ok(None);
    }
    let endpoint = Endpoint::of(spec.stream_path.as_deref(), spec.resolved);
    StreamConn::connect(&endpoint, spec.sndbuf_bytes, WAKE_INTERVAL)
        .map(Some)
        .map_err(|source| super::change::ChangeError::Switch {
            name: spec.name.clone(),
            to: spec.addr.clone(),
            source,
        })
}

/// Gives the connection [`open_first`] opened to the new incarnation's sender.
pub(crate) fn hand_over(core: &TargetCore, first: Option<StreamConn>) {
    if let (Some(stream), Some(link)) = (first, &core.link) {
        if let Ok(mut h) = link.handoff.lock() {
            *h = Some(stream);
        }
        core.wake();
    }
}

/// One copy written and not yet acknowledged.
struct Flight {
    /// Its end in the connection's byte stream.
    end: u64,
    /// Its payload length (what `forwarded` bytes count).
    bytes: u32,
    rx_nanos: u64,
}

/// A live connection and the copies it has not had acknowledged.
struct Conn {
    stream: StreamConn,
    written: u64,
    flight: VecDeque<Flight>,
}

impl Conn {
    /// Counts what the peer acknowledged since the last look as forwarded.
    fn settle(&mut self, core: &TargetCore, latency: bool) {
        let Ok(acked) = self.stream.taken(self.written) else {
            return;
        };
        let counters = core.counters.sender();
        let (mut n, mut bytes) = (0u64, 0u64);
        let now = if latency { now_nanos() } else { 0 };
        while self.flight.front().is_some_and(|f| f.end <= acked) {
            let f = self.flight.pop_front().expect("a front");
            n += 1;
            bytes += u64::from(f.bytes);
            if latency {
                counters
                    .latency()
                    .record_batch(now, std::iter::once(f.rx_nanos));
            }
        }
        if n > 0 {
            counters.add_forwarded(n, bytes);
        }
    }

    /// The connection is gone: what the peer acknowledged is forwarded, the rest lost with it.
    fn lose(mut self, core: &TargetCore, latency: bool) -> u64 {
        self.settle(core, latency);
        let lost = self.flight.len() as u64;
        core.counters.sender().add_connection_lost(lost);
        lost
    }
}

/// The sender's view of its target: connection, backoff and log limits.
struct Link<'c> {
    core: &'c TargetCore,
    latency: bool,
    conn: Option<Conn>,
    next_attempt: Instant,
    backoff: Duration,
    rng: fastrand::Rng,
    warned: RateLimit,
}

impl<'c> Link<'c> {
    fn new(core: &'c TargetCore, latency: bool) -> Self {
        Self {
            core,
            latency,
            conn: None,
            next_attempt: Instant::now(),
            backoff: BACKOFF_MIN,
            rng: fastrand::Rng::new(),
            warned: RateLimit::new(),
        }
    }

    fn state(&self) -> &StreamLink {
        self.core.link.as_ref().expect("a stream target")
    }

    /// Connects when it is time to try; whether a connection is up.
    fn ensure(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        let handed = self.state().handoff.lock().ok().and_then(|mut h| h.take());
        if handed.is_none() && Instant::now() < self.next_attempt {
            return false;
        }
        let attempt = match handed {
            Some(stream) => Ok(stream),
            None => StreamConn::connect(
                &self.state().endpoint(self.core.addr),
                self.state().sndbuf_bytes,
                WAKE_INTERVAL,
            ),
        };
        match attempt {
            Ok(stream) => {
                tracing::info!(target_name = %self.core.name, peer = ?self.state().endpoint(self.core.addr), "stream target connected");
                self.conn = Some(Conn {
                    stream,
                    written: 0,
                    flight: VecDeque::new(),
                });
                self.backoff = BACKOFF_MIN;
                let s = self.state();
                s.connects.fetch_add(1, Ordering::Relaxed);
                s.connected.store(true, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.state().failed.fetch_add(1, Ordering::Relaxed);
                if let Some(count) = self.warned.hit(1) {
                    tracing::warn!(target_name = %self.core.name, peer = ?self.state().endpoint(self.core.addr), error = %e, count,
                        "stream target: cannot connect; its queue fills, then drops as queue_full");
                }
                self.wait_longer();
                false
            }
        }
    }

    fn wait_longer(&mut self) {
        let jitter = 0.75 + self.rng.f64() * 0.5;
        self.next_attempt = Instant::now() + self.backoff.mul_f64(jitter);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// The connection is gone (`why`): counts what went with it and plans the next attempt.
    fn lost(&mut self, why: &str) {
        if let Some(conn) = self.conn.take() {
            let lost = conn.lose(self.core, self.latency);
            let s = self.state();
            s.lost.fetch_add(1, Ordering::Relaxed);
            s.connected.store(false, Ordering::Relaxed);
            tracing::warn!(target_name = %self.core.name, peer = ?self.state().endpoint(self.core.addr), why, connection_lost = lost,
                "stream target: connection lost; connecting again");
            self.next_attempt = Instant::now();
            self.wait_longer();
        }
    }

    /// Shuts the connection down for writing and waits for its acknowledgements until `deadline`;
    /// what is still unacknowledged then is `drain_timeout`.
    fn close(&mut self, deadline: Instant) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        conn.stream.shutdown_write();
        loop {
            conn.settle(self.core, self.latency);
            if conn.flight.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(SETTLE_INTERVAL);
        }
        let left = conn.flight.len() as u64;
        self.core.counters.sender().add_drain_timeout(left);
        self.state().connected.store(false, Ordering::Relaxed);
    }
}

/// What one batch's write did.
enum Wrote {
    /// Everything.
    All,
    /// The connection failed after `0` bytes of the batch.
    Lost(usize, io::Error),
    /// The drain deadline passed after `0` bytes of the batch.
    Abandoned(usize),
}

/// Writes `buf` whole, settling acknowledgements while the peer is slow.
fn write_batch(
    conn: &mut Conn,
    buf: &[u8],
    core: &TargetCore,
    latency: bool,
    past_deadline: impl Fn() -> bool,
) -> Wrote {
    let mut at = 0;
    while at < buf.len() {
        match conn.stream.write(&buf[at..]) {
            Ok(0) => return Wrote::Lost(at, io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                at += n;
                conn.written += n as u64;
            }
            Err(e) if crate::net::socket::timed_out(&e) => {
                conn.settle(core, latency);
                if past_deadline() {
                    return Wrote::Abandoned(at);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Wrote::Lost(at, e),
        }
    }
    Wrote::All
}

/// Runs a stream target's sender until its ring is closed and drained (see the module docs).
pub(crate) fn run(core: &TargetCore, batch: usize, latency: bool) {
    let mut link = Link::new(core, latency);
    let mut entries = vec![Entry::default(); batch];
    let mut buf: Vec<u8> = Vec::new();
    let mut ends: Vec<usize> = Vec::with_capacity(batch);
    let mut pos = 0u64;
    let ring = &core.ring;
    let frames = core.link.as_ref().is_some_and(|l| l.path.is_some());
    let past_deadline = || {
        core.drain_deadline
            .get()
            .is_some_and(|d| Instant::now() >= *d)
    };
    loop {
        if let Some(conn) = link.conn.as_mut() {
            conn.settle(core, latency);
        }
        let n = ring.peek(pos, &mut entries);
        if n == 0 {
            // Acquire: pairs with the close after the last producer is gone; the ring is then final.
            if core.closed.load(Ordering::Acquire) && ring.peek(pos, &mut entries) == 0 {
                break;
            }
            if link.conn.as_ref().is_some_and(|c| c.stream.peer_closed()) {
                link.lost("the receiver closed the connection");
            }
            if link.conn.is_none() && !core.closed.load(Ordering::Relaxed) {
                link.ensure(); // connected before the first copy, when the receiver is up
            }
            let waiting = link.conn.as_ref().is_some_and(|c| !c.flight.is_empty());
            std::thread::park_timeout(if waiting {
                SETTLE_INTERVAL
            } else {
                WAKE_INTERVAL
            });
            continue;
        }
        if past_deadline() {
            core.counters.sender().add_drain_timeout(n as u64);
            pos = entries[n - 1].next;
            ring.consume(pos, n);
            continue;
        }
        let full = link
            .conn
            .as_ref()
            .is_some_and(|c| c.flight.len() >= MAX_IN_FLIGHT);
        if !link.ensure() || full {
            // Nothing is consumed: the ring holds the copies for the next connection (or until
            // acknowledgements make room).
            let wait = link.next_attempt.saturating_duration_since(Instant::now());
            std::thread::park_timeout(wait.clamp(SETTLE_INTERVAL, WAKE_INTERVAL));
            continue;
        }
        buf.clear();
        ends.clear();
        for e in &entries[..n] {
            let p = core.payload(e);
            if frames {
                // DogStatsD's stream framing: a little-endian length, then the datagram.
                if !p.is_empty() {
                    buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
                    buf.extend_from_slice(p);
                }
            } else {
                buf.extend_from_slice(p);
                if !p.is_empty() && !p.ends_with(b"\n") {
                    buf.push(b'\n');
                }
            }
            ends.push(buf.len());
        }
        let conn = link.conn.as_mut().expect("connected");
        let start = conn.written;
        let wrote = write_batch(conn, &buf, core, latency, past_deadline);
        let done = match &wrote {
            Wrote::All => buf.len(),
            Wrote::Lost(at, _) | Wrote::Abandoned(at) => *at,
        };
        // Copies written whole are in flight; one cut short is never written again.
        let whole = ends.iter().take_while(|&&end| end <= done).count();
        for (e, &end) in entries[..whole].iter().zip(&ends) {
            conn.flight.push_back(Flight {
                end: start + end as u64,
                bytes: core.payload(e).len() as u32,
                rx_nanos: e.rx_nanos,
            });
        }
        let written_before = if whole == 0 { 0 } else { ends[whole - 1] };
        let cut = usize::from(whole < n && done > written_before);
        let taken = match wrote {
            Wrote::All => n,
            Wrote::Lost(_, e) => {
                core.counters.sender().add_connection_lost(cut as u64);
                link.lost(&e.to_string());
                whole + cut
            }
            Wrote::Abandoned(_) => {
                core.counters.sender().add_drain_timeout((n - whole) as u64);
                n
            }
        };
        if taken > 0 {
            pos = entries[taken - 1].next;
            ring.consume(pos, taken);
        }
    }
    let deadline = core.drain_deadline.get().copied();
    link.close(deadline.unwrap_or_else(|| Instant::now() + WAKE_INTERVAL * 20));
}
