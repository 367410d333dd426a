//! Per-thread counters and the accounting they must satisfy.
//!
//! Each worker and each sender owns its counters and is their only writer (a worker also keeps its part
//! of every target's counters, for the copies it sends inline); it adds a batch's worth at once (one relaxed `fetch_add` per counter per batch, never per datagram). Readers (stats line,
//! admin endpoint, final summary) take a [`Snapshot`]. Once queues have drained, for every target:
//! `received = forwarded + Σ drops` ([`Snapshot::unaccounted`] is then zero).

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use super::histogram::LatencyRecorder;

/// Why a datagram (or one target's copy of it) was not forwarded. Used as the metrics label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The target's queue was full: the target is slower than the traffic.
    QueueFull,
    /// `sendmmsg` refused this copy (ECONNREFUSED, ENOBUFS, ...); see [`SendErrorKind`].
    SendError,
    /// Larger than `--max-datagram`: forwarded to no one, never cut.
    Truncated,
    /// No free pool slot; cannot happen with the pool sized by `Config::pool_slots`.
    PoolExhausted,
    /// Still queued when `--drain-timeout` expired at shutdown.
    DrainTimeout,
    /// Dropped by the kernel before udptee saw it (socket receive buffer full, SO_RXQ_OVFL). Not part of
    /// `received`: udptee never had it.
    RcvbufOverflow,
}

impl DropReason {
    /// Reasons that count against a target in the accounting invariant.
    pub const PER_TARGET: [Self; 5] = [
        Self::QueueFull,
        Self::SendError,
        Self::Truncated,
        Self::PoolExhausted,
        Self::DrainTimeout,
    ];

    /// The label value (`reason="queue_full"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::SendError => "send_error",
            Self::Truncated => "truncated",
            Self::PoolExhausted => "pool_exhausted",
            Self::DrainTimeout => "drain_timeout",
            Self::RcvbufOverflow => "rcvbuf_overflow",
        }
    }
}

/// The errno classes a target's send errors are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendErrorKind {
    /// ECONNREFUSED: an ICMP port unreachable came back; nothing listens on the target port.
    ConnRefused,
    /// ENOBUFS/ENOMEM: the local device queue or socket memory is exhausted.
    NoBuffers,
    /// EMSGSIZE: larger than the path allows.
    MessageSize,
    /// EHOSTUNREACH/ENETUNREACH/EPERM (route or firewall).
    Unreachable,
    /// Anything else.
    Other,
}

impl SendErrorKind {
    /// All kinds, in counter order.
    pub const ALL: [Self; 5] = [
        Self::ConnRefused,
        Self::NoBuffers,
        Self::MessageSize,
        Self::Unreachable,
        Self::Other,
    ];

    /// Classifies an error from `sendmmsg`.
    pub fn of(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => Self::ConnRefused,
            Some(libc::ENOBUFS | libc::ENOMEM) => Self::NoBuffers,
            Some(libc::EMSGSIZE) => Self::MessageSize,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EPERM | libc::EACCES) => {
                Self::Unreachable
            }
            _ => Self::Other,
        }
    }

    /// The label value (`error="conn_refused"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ConnRefused => "conn_refused",
            Self::NoBuffers => "no_buffers",
            Self::MessageSize => "message_size",
            Self::Unreachable => "unreachable",
            Self::Other => "other",
        }
    }
}

fn add(c: &AtomicU64, n: u64) {
    if n != 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// What happened to one target's copies, as seen by one thread. Each worker keeps one per target (its
/// inline sends and queue drops) and each sender keeps one (its backlog sends); a target's totals are
/// the sum over all of them. Only the owning thread writes.
#[derive(Debug, Default)]
pub struct TargetCounters {
    forwarded: AtomicU64,
    bytes: AtomicU64,
    send_errors: [AtomicU64; SendErrorKind::ALL.len()],
    queue_full: AtomicU64,
    drain_timeout: AtomicU64,
    latency: LatencyRecorder,
}

impl TargetCounters {
    /// This thread's latency samples for the target.
    pub fn latency(&self) -> &LatencyRecorder {
        &self.latency
    }

    /// Adds datagrams sent by one `sendmmsg` call.
    pub fn add_forwarded(&self, n: u64, bytes: u64) {
        add(&self.forwarded, n);
        add(&self.bytes, bytes);
    }

    /// Counts one copy refused by the kernel.
    pub fn add_send_error(&self, kind: SendErrorKind) {
        add(&self.send_errors[kind as usize], 1);
    }

    /// Counts copies dropped because the target's queue was full.
    pub fn add_queue_full(&self, n: u64) {
        add(&self.queue_full, n);
    }

    /// Counts copies abandoned at the drain deadline.
    pub fn add_drain_timeout(&self, n: u64) {
        add(&self.drain_timeout, n);
    }

    /// A copy for reporting.
    pub fn snapshot(&self) -> TargetSnapshot {
        TargetSnapshot {
            forwarded: get(&self.forwarded),
            bytes: get(&self.bytes),
            send_errors: std::array::from_fn(|i| get(&self.send_errors[i])),
            drain_timeout: get(&self.drain_timeout),
            queue_full: get(&self.queue_full),
        }
    }
}

/// Counters of one receive worker; written only by that worker.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    received: AtomicU64,
    bytes: AtomicU64,
    truncated: AtomicU64,
    pool_exhausted: AtomicU64,
    rcvbuf_overflow: AtomicU64,
    recv_errors: AtomicU64,
    ring_empty: AtomicU64,
    targets: Box<[TargetCounters]>,
}

/// What a worker adds after one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkerDelta {
    /// Datagrams received (including truncated ones).
    pub received: u64,
    /// Bytes of datagrams received (truncated ones not included).
    pub bytes: u64,
    /// Datagrams larger than `--max-datagram`.
    pub truncated: u64,
    /// Datagrams received while no pool slot was free.
    pub pool_exhausted: u64,
}

impl WorkerCounters {
    /// Counters for a worker feeding `targets` targets.
    pub fn new(targets: usize) -> Self {
        Self {
            targets: (0..targets).map(|_| TargetCounters::default()).collect(),
            ..Self::default()
        }
    }

    /// Adds one batch's totals.
    pub fn add_batch(&self, d: &WorkerDelta) {
        add(&self.received, d.received);
        add(&self.bytes, d.bytes);
        add(&self.truncated, d.truncated);
        add(&self.pool_exhausted, d.pool_exhausted);
    }

    /// This worker's counters for target `t` (inline sends, send errors, queue drops).
    pub fn target(&self, t: usize) -> &TargetCounters {
        &self.targets[t]
    }

    /// Records the socket's cumulative kernel drop count (SO_RXQ_OVFL / SO_MEMINFO); it only grows.
    pub fn set_rcvbuf_overflow(&self, total: u64) {
        self.rcvbuf_overflow.fetch_max(total, Ordering::Relaxed);
    }

    /// Records how often the worker's io_uring ran out of provided buffers (cumulative).
    pub fn set_ring_empty(&self, total: u64) {
        self.ring_empty.store(total, Ordering::Relaxed);
    }

    /// Counts a failed `recvmmsg` (other than timeouts and interrupts).
    pub fn add_recv_error(&self) {
        add(&self.recv_errors, 1);
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> WorkerSnapshot {
        WorkerSnapshot {
            received: get(&self.received),
            bytes: get(&self.bytes),
            truncated: get(&self.truncated),
            pool_exhausted: get(&self.pool_exhausted),
            rcvbuf_overflow: get(&self.rcvbuf_overflow),
            recv_errors: get(&self.recv_errors),
            ring_empty: get(&self.ring_empty),
            targets: self.targets.iter().map(TargetCounters::snapshot).collect(),
        }
    }
}

/// One worker's counters at a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Datagrams received.
    pub received: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Datagrams over `--max-datagram`.
    pub truncated: u64,
    /// Datagrams received with the pool dry.
    pub pool_exhausted: u64,
    /// Kernel drops on this worker's socket.
    pub rcvbuf_overflow: u64,
    /// Failed receive calls.
    pub recv_errors: u64,
    /// Times the io_uring ran out of provided buffers (receive pressure; 0 with recvmmsg).
    pub ring_empty: u64,
    /// This worker's part of each target's counters (inline sends, errors, queue drops).
    pub targets: Vec<TargetSnapshot>,
}

/// One target's counters at a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSnapshot {
    /// Copies sent.
    pub forwarded: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Copies refused by the kernel, by [`SendErrorKind`] (in `ALL` order).
    pub send_errors: [u64; SendErrorKind::ALL.len()],
    /// Copies abandoned at shutdown.
    pub drain_timeout: u64,
    /// Copies dropped because the queue was full.
    pub queue_full: u64,
}

impl TargetSnapshot {
    /// Adds another thread's counters for the same target.
    pub fn merge(&mut self, o: &Self) {
        self.forwarded += o.forwarded;
        self.bytes += o.bytes;
        for (a, b) in self.send_errors.iter_mut().zip(o.send_errors) {
            *a += b;
        }
        self.drain_timeout += o.drain_timeout;
        self.queue_full += o.queue_full;
    }

    /// All send errors together.
    pub fn send_errors_total(&self) -> u64 {
        self.send_errors.iter().sum()
    }
}

/// Every counter of the forwarder at a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per worker.
    pub workers: Vec<WorkerSnapshot>,
    /// Per target, in `--to` order.
    pub targets: Vec<TargetSnapshot>,
    /// Target names, in `--to` order.
    pub target_names: Vec<String>,
}

impl Snapshot {
    /// Builds a snapshot from the senders' counters, adding each worker's part of every target.
    pub fn new(
        workers: Vec<WorkerSnapshot>,
        mut targets: Vec<TargetSnapshot>,
        target_names: Vec<String>,
    ) -> Self {
        for (t, snap) in targets.iter_mut().enumerate() {
            for part in workers.iter().filter_map(|w| w.targets.get(t)) {
                snap.merge(part);
            }
        }
        Self {
            workers,
            targets,
            target_names,
        }
    }

    fn sum(&self, f: impl Fn(&WorkerSnapshot) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }

    /// Datagrams received over all workers.
    pub fn received(&self) -> u64 {
        self.sum(|w| w.received)
    }

    /// Bytes received over all workers.
    pub fn received_bytes(&self) -> u64 {
        self.sum(|w| w.bytes)
    }

    /// Datagrams over `--max-datagram`, all workers.
    pub fn truncated(&self) -> u64 {
        self.sum(|w| w.truncated)
    }

    /// Datagrams received with the pool dry, all workers.
    pub fn pool_exhausted(&self) -> u64 {
        self.sum(|w| w.pool_exhausted)
    }

    /// Kernel receive-buffer drops over all worker sockets.
    pub fn rcvbuf_overflow(&self) -> u64 {
        self.sum(|w| w.rcvbuf_overflow)
    }

    /// Copies of datagrams for target `t` dropped for `reason`.
    pub fn dropped(&self, t: usize, reason: DropReason) -> u64 {
        let s = &self.targets[t];
        match reason {
            DropReason::QueueFull => s.queue_full,
            DropReason::SendError => s.send_errors_total(),
            DropReason::Truncated => self.truncated(),
            DropReason::PoolExhausted => self.pool_exhausted(),
            DropReason::DrainTimeout => s.drain_timeout,
            DropReason::RcvbufOverflow => 0,
        }
    }

    /// All dropped copies for target `t` (reasons in [`DropReason::PER_TARGET`]).
    pub fn dropped_total(&self, t: usize) -> u64 {
        DropReason::PER_TARGET
            .iter()
            .map(|&r| self.dropped(t, r))
            .sum()
    }

    /// Copies received but neither forwarded nor dropped yet for target `t`: queued or in flight while
    /// running, and zero once the forwarder has stopped.
    pub fn unaccounted(&self, t: usize) -> i128 {
        i128::from(self.received())
            - i128::from(self.targets[t].forwarded)
            - i128::from(self.dropped_total(t))
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "received {} datagrams ({} bytes); truncated {}; pool_exhausted {}; kernel rcvbuf_overflow {} (never received)",
            self.received(),
            self.received_bytes(),
            self.truncated(),
            self.pool_exhausted(),
            self.rcvbuf_overflow()
        )?;
        for (t, s) in self.targets.iter().enumerate() {
            write!(
                f,
                "target {}: forwarded {} ({} bytes); dropped queue_full {}, send_error {}",
                self.target_names.get(t).map_or("?", String::as_str),
                s.forwarded,
                s.bytes,
                s.queue_full,
                s.send_errors_total()
            )?;
            let kinds: Vec<String> = SendErrorKind::ALL
                .iter()
                .zip(s.send_errors)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{}={n}", k.as_str()))
                .collect();
            if !kinds.is_empty() {
                write!(f, " ({})", kinds.join(" "))?;
            }
            writeln!(
                f,
                ", drain_timeout {}; unaccounted {}",
                s.drain_timeout,
                self.unaccounted(t)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_drops_fold_into_targets_and_balance() {
        let w = WorkerCounters::new(2);
        w.add_batch(&WorkerDelta {
            received: 10,
            bytes: 100,
            truncated: 1,
            pool_exhausted: 0,
        });
        w.target(1).add_queue_full(3);
        w.target(0).add_forwarded(5, 50);
        let t0 = TargetCounters::default();
        t0.add_forwarded(3, 30);
        t0.add_send_error(SendErrorKind::ConnRefused);
        let t1 = TargetCounters::default();
        t1.add_forwarded(6, 60);
        let s = Snapshot::new(
            vec![w.snapshot()],
            vec![t0.snapshot(), t1.snapshot()],
            vec!["a".into(), "b".into()],
        );
        assert_eq!(s.targets[0].forwarded, 8, "inline and sender sends add up");
        assert_eq!(
            s.unaccounted(0),
            0,
            "10 = 8 forwarded + 1 send_error + 1 truncated"
        );
        assert_eq!(
            s.unaccounted(1),
            0,
            "10 = 6 forwarded + 3 queue_full + 1 truncated"
        );
        assert!(s.to_string().contains("conn_refused=1"), "{s}");
    }

    #[test]
    fn errno_classes() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(SendErrorKind::of(&e), SendErrorKind::ConnRefused);
        let e = io::Error::from_raw_os_error(libc::ENOBUFS);
        assert_eq!(SendErrorKind::of(&e), SendErrorKind::NoBuffers);
    }
}
