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
    /// The target is disabled (`enabled = false`): kept in the set, nothing sent.
    Disabled,
    /// The sender's address is outside `--allow`: forwarded to no one.
    SourceDenied,
    /// Kernel fast path: the clone for this target was refused because the receive backlog
    /// (`net.core.netdev_max_backlog`) was full, as under bursts.
    BacklogFull,
    /// Kernel fast path: the clone or its rewrite failed for another reason.
    CloneError,
    /// Dropped by the kernel before udptee saw it (socket receive buffer full, SO_RXQ_OVFL). Not part of
    /// `received`: udptee never had it.
    RcvbufOverflow,
}

impl DropReason {
    /// Reasons that count against a target in the accounting invariant.
    pub const PER_TARGET: [Self; 9] = [
        Self::QueueFull,
        Self::SendError,
        Self::Truncated,
        Self::PoolExhausted,
        Self::DrainTimeout,
        Self::Disabled,
        Self::SourceDenied,
        Self::BacklogFull,
        Self::CloneError,
    ];

    /// The label value (`reason="queue_full"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::SendError => "send_error",
            Self::Truncated => "truncated",
            Self::PoolExhausted => "pool_exhausted",
            Self::DrainTimeout => "drain_timeout",
            Self::Disabled => "disabled",
            Self::SourceDenied => "source_denied",
            Self::BacklogFull => "backlog_full",
            Self::CloneError => "clone_error",
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
        // Release (free on x86: the RMW is a locked instruction anyway): see `TargetCounters`.
        c.fetch_add(n, Ordering::Release);
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Acquire)
}

/// What happened to one target's copies, as seen by one thread. Each target keeps one per receive
/// worker (its inline sends, queue drops and what it offered) and one for its sender (backlog sends);
/// a target's totals are the sum over all of them. Writers add with Release and readers load with
/// Acquire, and a copy is always counted `offered` before its outcome, so a reader that loads outcomes
/// first and `offered` last never sees more outcomes than offers.
#[derive(Debug, Default)]
pub struct TargetCounters {
    offered: AtomicU64,
    forwarded: AtomicU64,
    bytes: AtomicU64,
    send_errors: [AtomicU64; SendErrorKind::ALL.len()],
    queue_full: AtomicU64,
    drain_timeout: AtomicU64,
    truncated: AtomicU64,
    pool_exhausted: AtomicU64,
    disabled: AtomicU64,
    source_denied: AtomicU64,
    /// Datagrams all of whose lines the target's line settings removed (not sent, by design).
    filtered: AtomicU64,
    /// Kernel fast path outcomes carried from a previous instance (the live ones are read from the
    /// program at each snapshot).
    kernel_forwarded: AtomicU64,
    backlog_full: AtomicU64,
    clone_error: AtomicU64,
    lines: [AtomicU64; LineOutcome::ALL.len()],
    /// Wrapping sum of the 64-bit hashes of every line sent (the parity digest).
    digest: AtomicU64,
    latency: LatencyRecorder,
}

/// What became of a line, for targets whose sender reads lines (line settings or parity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOutcome {
    /// Lines in the datagrams the sender took (before its line settings).
    Offered,
    /// Lines sent.
    Sent,
    /// Removed by include/exclude/tags.
    Filtered,
    /// Removed by `sample`.
    SampledOut,
    /// Not statsd and dropped (`malformed = "drop"`).
    MalformedDropped,
    /// Kept, but in a datagram that could not be sent (send_error, drain_timeout).
    Dropped,
    /// Not statsd (forwarded or dropped): a tally beside the others, not an outcome.
    Malformed,
}

impl LineOutcome {
    /// All, in counter order.
    pub const ALL: [Self; 7] = [
        Self::Offered,
        Self::Sent,
        Self::Filtered,
        Self::SampledOut,
        Self::MalformedDropped,
        Self::Dropped,
        Self::Malformed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offered => "offered",
            Self::Sent => "sent",
            Self::Filtered => "filtered",
            Self::SampledOut => "sampled_out",
            Self::MalformedDropped => "malformed_dropped",
            Self::Dropped => "dropped",
            Self::Malformed => "malformed",
        }
    }
}

impl TargetCounters {
    /// This thread's latency samples for the target.
    pub fn latency(&self) -> &LatencyRecorder {
        &self.latency
    }

    /// Counts datagrams received while this target was in the set (before any outcome of theirs).
    pub fn add_offered(&self, n: u64) {
        add(&self.offered, n);
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

    /// Counts datagrams over `--max-datagram` received while this target was in the set.
    pub fn add_truncated(&self, n: u64) {
        add(&self.truncated, n);
    }

    /// Counts datagrams received with the pool dry while this target was in the set.
    pub fn add_pool_exhausted(&self, n: u64) {
        add(&self.pool_exhausted, n);
    }

    /// Counts datagrams not sent because the target is disabled.
    pub fn add_disabled(&self, n: u64) {
        add(&self.disabled, n);
    }

    /// Counts datagrams from senders outside `--allow` while this target was in the set.
    pub fn add_source_denied(&self, n: u64) {
        add(&self.source_denied, n);
    }

    /// Counts datagrams whose every line was removed by the line settings.
    pub fn add_filtered(&self, n: u64) {
        add(&self.filtered, n);
    }

    /// Counts `n` lines under `outcome`.
    pub fn add_lines(&self, outcome: LineOutcome, n: u64) {
        add(&self.lines[outcome as usize], n);
    }

    /// Adds everything `s` counted: a previous instance's totals after a takeover, so the totals
    /// stay continuous. Outcomes first, `offered` last, as everywhere.
    pub fn add_snapshot(&self, s: &TargetSnapshot) {
        add(&self.forwarded, s.forwarded);
        add(&self.bytes, s.bytes);
        for (c, v) in self.send_errors.iter().zip(s.send_errors) {
            add(c, v);
        }
        add(&self.queue_full, s.queue_full);
        add(&self.drain_timeout, s.drain_timeout);
        add(&self.truncated, s.truncated);
        add(&self.pool_exhausted, s.pool_exhausted);
        add(&self.disabled, s.disabled);
        add(&self.source_denied, s.source_denied);
        add(&self.filtered, s.filtered);
        add(&self.kernel_forwarded, s.kernel_forwarded);
        add(&self.backlog_full, s.backlog_full);
        add(&self.clone_error, s.clone_error);
        for (c, v) in self.lines.iter().zip(s.lines) {
            add(c, v);
        }
        self.add_digest(s.digest);
        add(&self.offered, s.offered);
    }

    /// Adds the hashes of lines sent to the parity digest.
    pub fn add_digest(&self, d: u64) {
        if d != 0 {
            self.digest.fetch_add(d, Ordering::Release);
        }
    }

    /// A copy for reporting: outcomes first, `offered` last (see the type's docs).
    pub fn snapshot(&self) -> TargetSnapshot {
        let mut s = TargetSnapshot {
            forwarded: get(&self.forwarded),
            bytes: get(&self.bytes),
            send_errors: std::array::from_fn(|i| get(&self.send_errors[i])),
            drain_timeout: get(&self.drain_timeout),
            queue_full: get(&self.queue_full),
            truncated: get(&self.truncated),
            pool_exhausted: get(&self.pool_exhausted),
            disabled: get(&self.disabled),
            source_denied: get(&self.source_denied),
            filtered: get(&self.filtered),
            kernel_forwarded: get(&self.kernel_forwarded),
            backlog_full: get(&self.backlog_full),
            clone_error: get(&self.clone_error),
            lines: std::array::from_fn(|i| get(&self.lines[i])),
            digest: get(&self.digest),
            ..TargetSnapshot::default()
        };
        s.offered = get(&self.offered);
        s
    }
}

/// Every counter block of one target: one per receive worker, then one for its senders. Created when
/// the target first joins and kept by name, so the counters survive an address change or a re-add.
#[derive(Debug)]
pub struct TargetCounterSet {
    parts: Box<[TargetCounters]>,
    receiver: ReceiverCounters,
    /// This name's row in the kernel fast path's counters (set once, when the name is first kept).
    slot: std::sync::OnceLock<u8>,
    /// The kernel fast path's totals for this name, refreshed at every snapshot.
    kernel: std::sync::Mutex<crate::metrics::kernel::KernelTargetCounts>,
}

/// What udptee sees of a target's receiving socket, written by the watch thread (see
/// `fanout::watch`): the kernel's drop count there and whether anything receives at all.
#[derive(Debug, Default)]
pub struct ReceiverCounters {
    drops: AtomicU64,
    /// 0: not looked at yet, 1: up, 2: down.
    up: std::sync::atomic::AtomicU8,
    /// The receiving socket is on this host, so `drops` is known.
    local: std::sync::atomic::AtomicBool,
}

impl ReceiverCounters {
    /// Adds datagrams the receiving socket dropped.
    pub fn add_drops(&self, n: u64) {
        add(&self.drops, n);
    }

    /// Records whether the target can receive (`up`) and whether its socket is on this host.
    pub fn set_state(&self, up: bool, local: bool) {
        self.local.store(local, Ordering::Relaxed);
        self.up.store(if up { 1 } else { 2 }, Ordering::Relaxed);
    }

    /// Up (`Some(true)`), down, or not looked at yet.
    pub fn up(&self) -> Option<bool> {
        match self.up.load(Ordering::Relaxed) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    /// Receiver-side drops, when the receiving socket is on this host.
    pub fn drops(&self) -> Option<u64> {
        self.local.load(Ordering::Relaxed).then(|| get(&self.drops))
    }
}

impl TargetCounterSet {
    /// Blocks for `workers` receive workers and the senders.
    pub fn new(workers: usize) -> Self {
        Self {
            parts: (0..=workers).map(|_| TargetCounters::default()).collect(),
            receiver: ReceiverCounters::default(),
            slot: std::sync::OnceLock::new(),
            kernel: std::sync::Mutex::new(Default::default()),
        }
    }

    /// Gives this name its row in the kernel path's counters (the first call wins).
    pub(crate) fn set_slot(&self, slot: u8) {
        let _ = self.slot.set(slot);
    }

    /// This name's row in the kernel path's counters, if it has one.
    pub(crate) fn slot(&self) -> Option<u8> {
        self.slot.get().copied()
    }

    /// This name's bit in the kernel path's book (0: none).
    #[inline]
    pub(crate) fn slot_bit(&self) -> u64 {
        self.slot.get().map_or(0, |&s| 1 << s)
    }

    /// Stores the kernel path's totals for this name (they only grow).
    pub(crate) fn set_kernel(&self, k: crate::metrics::kernel::KernelTargetCounts) {
        *self.kernel.lock().unwrap_or_else(|p| p.into_inner()) = k;
    }

    /// The receiving socket's view (watch thread).
    pub fn receiver(&self) -> &ReceiverCounters {
        &self.receiver
    }

    /// Worker `w`'s block (only that worker writes it).
    pub fn worker(&self, w: usize) -> &TargetCounters {
        &self.parts[w.min(self.parts.len() - 1)]
    }

    /// The senders' block.
    pub fn sender(&self) -> &TargetCounters {
        &self.parts[self.parts.len() - 1]
    }

    /// Every block.
    pub fn parts(&self) -> &[TargetCounters] {
        &self.parts
    }

    /// The target's totals: every block's outcomes first, then every block's offers, so the cut is
    /// consistent (forwarded + dropped never exceeds offered).
    pub fn snapshot(&self) -> TargetSnapshot {
        let mut total = TargetSnapshot::default();
        for p in self.parts.iter() {
            let mut s = p.snapshot();
            s.offered = 0;
            total.merge(&s);
        }
        let k = *self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        total.forwarded += k.copies;
        total.bytes += k.bytes;
        total.kernel_forwarded += k.copies;
        total.backlog_full += k.backlog;
        total.clone_error += k.error;
        total.offered += k.copies + k.backlog + k.error;
        for p in self.parts.iter() {
            total.offered += get(&p.offered);
        }
        total.receiver_drops = self.receiver.drops();
        total.up = self.receiver.up();
        total
    }
}

/// Counters of one receive worker; written only by that worker.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    received: AtomicU64,
    bytes: AtomicU64,
    truncated: AtomicU64,
    pool_exhausted: AtomicU64,
    source_denied: AtomicU64,
    rcvbuf_overflow: AtomicU64,
    recv_errors: AtomicU64,
    ring_empty: AtomicU64,
    /// Datagrams that carried the kernel fast path's handled mark.
    kernel_marked: AtomicU64,
    /// Loop iterations: a worker goes round at least every read timeout, idle or not, so a value
    /// that stops moving means a stuck worker (the systemd watchdog withholds its ping).
    beats: AtomicU64,
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
    /// Datagrams from senders outside `--allow`.
    pub source_denied: u64,
    /// Datagrams that carried the kernel fast path's handled mark.
    pub kernel_marked: u64,
}

impl WorkerCounters {
    /// Counters for one worker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one batch's totals.
    pub fn add_batch(&self, d: &WorkerDelta) {
        add(&self.received, d.received);
        add(&self.bytes, d.bytes);
        add(&self.truncated, d.truncated);
        add(&self.pool_exhausted, d.pool_exhausted);
        add(&self.source_denied, d.source_denied);
        if d.kernel_marked > 0 {
            add(&self.kernel_marked, d.kernel_marked);
        }
    }

    /// Adds a previous instance's totals after a takeover (its kernel drop count needs nothing:
    /// the socket, and so its count, carried over).
    pub fn add_snapshot(&self, s: &WorkerSnapshot) {
        add(&self.received, s.received);
        add(&self.bytes, s.bytes);
        add(&self.truncated, s.truncated);
        add(&self.pool_exhausted, s.pool_exhausted);
        add(&self.source_denied, s.source_denied);
        add(&self.recv_errors, s.recv_errors);
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

    /// One more turn of the worker's loop.
    pub fn beat(&self) {
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// Turns of the worker's loop so far.
    pub fn beats(&self) -> u64 {
        self.beats.load(Ordering::Relaxed)
    }

    /// A copy for reporting.
    pub fn snapshot(&self) -> WorkerSnapshot {
        WorkerSnapshot {
            received: get(&self.received),
            bytes: get(&self.bytes),
            truncated: get(&self.truncated),
            pool_exhausted: get(&self.pool_exhausted),
            source_denied: get(&self.source_denied),
            rcvbuf_overflow: get(&self.rcvbuf_overflow),
            recv_errors: get(&self.recv_errors),
            ring_empty: get(&self.ring_empty),
            kernel_marked: get(&self.kernel_marked),
        }
    }
}

/// One worker's counters at a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerSnapshot {
    /// Datagrams received.
    pub received: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Datagrams over `--max-datagram`.
    pub truncated: u64,
    /// Datagrams received with the pool dry.
    pub pool_exhausted: u64,
    /// Datagrams from senders outside `--allow`.
    pub source_denied: u64,
    /// Kernel drops on this worker's socket.
    pub rcvbuf_overflow: u64,
    /// Failed receive calls.
    pub recv_errors: u64,
    /// Times the io_uring ran out of provided buffers (receive pressure; 0 with recvmmsg).
    pub ring_empty: u64,
    /// Datagrams that carried the kernel fast path's handled mark.
    #[serde(default)]
    pub kernel_marked: u64,
}

/// One target's counters at a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetSnapshot {
    /// Datagrams received while the target was in the set (since it joined).
    pub offered: u64,
    /// Copies sent.
    pub forwarded: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Copies refused by the kernel, by [`SendErrorKind`] (in `ALL` order).
    pub send_errors: [u64; SendErrorKind::ALL.len()],
    /// Copies abandoned at shutdown or removal.
    pub drain_timeout: u64,
    /// Copies dropped because the queue was full.
    pub queue_full: u64,
    /// Datagrams over `--max-datagram` offered to this target.
    pub truncated: u64,
    /// Datagrams received with the pool dry while this target was in the set.
    pub pool_exhausted: u64,
    /// Datagrams not sent because the target was disabled.
    pub disabled: u64,
    /// Datagrams from senders outside `--allow`.
    pub source_denied: u64,
    /// Datagrams all of whose lines the line settings removed (not sent, by design).
    pub filtered: u64,
    /// Of `forwarded`, the copies the kernel fast path made.
    pub kernel_forwarded: u64,
    /// Kernel fast path clones refused by a full receive backlog.
    pub backlog_full: u64,
    /// Kernel fast path clones that failed otherwise.
    pub clone_error: u64,
    /// Lines by [`LineOutcome`] (in `ALL` order); all zero for a passthrough target.
    pub lines: [u64; LineOutcome::ALL.len()],
    /// Parity digest: the wrapping sum of the hashes of every line sent.
    pub digest: u64,
    /// Copies the target's own socket dropped after udptee handed them to the kernel (its receive
    /// buffer was full), when that socket is on this host; `None` for remote targets.
    pub receiver_drops: Option<u64>,
    /// Whether the target can receive: for a target on this host, a socket is bound at its address;
    /// for a remote one, its last sends met no error. `None` until first looked at.
    pub up: Option<bool>,
}

impl TargetSnapshot {
    /// Adds another thread's counters for the same target.
    pub fn merge(&mut self, o: &Self) {
        self.offered += o.offered;
        self.forwarded += o.forwarded;
        self.bytes += o.bytes;
        for (a, b) in self.send_errors.iter_mut().zip(o.send_errors) {
            *a += b;
        }
        self.drain_timeout += o.drain_timeout;
        self.queue_full += o.queue_full;
        self.truncated += o.truncated;
        self.pool_exhausted += o.pool_exhausted;
        self.disabled += o.disabled;
        self.source_denied += o.source_denied;
        self.filtered += o.filtered;
        self.kernel_forwarded += o.kernel_forwarded;
        self.backlog_full += o.backlog_full;
        self.clone_error += o.clone_error;
        for (a, b) in self.lines.iter_mut().zip(o.lines) {
            *a += b;
        }
        self.digest = self.digest.wrapping_add(o.digest);
    }

    /// What happened between `before` (an earlier snapshot of the same target) and this one.
    pub fn since(&self, before: &Self) -> Self {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            offered: d(self.offered, before.offered),
            forwarded: d(self.forwarded, before.forwarded),
            bytes: d(self.bytes, before.bytes),
            send_errors: std::array::from_fn(|i| d(self.send_errors[i], before.send_errors[i])),
            drain_timeout: d(self.drain_timeout, before.drain_timeout),
            queue_full: d(self.queue_full, before.queue_full),
            truncated: d(self.truncated, before.truncated),
            pool_exhausted: d(self.pool_exhausted, before.pool_exhausted),
            disabled: d(self.disabled, before.disabled),
            source_denied: d(self.source_denied, before.source_denied),
            filtered: d(self.filtered, before.filtered),
            kernel_forwarded: d(self.kernel_forwarded, before.kernel_forwarded),
            backlog_full: d(self.backlog_full, before.backlog_full),
            clone_error: d(self.clone_error, before.clone_error),
            lines: std::array::from_fn(|i| d(self.lines[i], before.lines[i])),
            digest: self.digest.wrapping_sub(before.digest),
            receiver_drops: self
                .receiver_drops
                .map(|r| d(r, before.receiver_drops.unwrap_or(0))),
            up: self.up,
        }
    }

    /// Lines with `outcome`.
    pub fn lines(&self, outcome: LineOutcome) -> u64 {
        self.lines[outcome as usize]
    }

    /// All send errors together.
    pub fn send_errors_total(&self) -> u64 {
        self.send_errors.iter().sum()
    }

    /// Copies dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::QueueFull => self.queue_full,
            DropReason::SendError => self.send_errors_total(),
            DropReason::Truncated => self.truncated,
            DropReason::PoolExhausted => self.pool_exhausted,
            DropReason::DrainTimeout => self.drain_timeout,
            DropReason::Disabled => self.disabled,
            DropReason::SourceDenied => self.source_denied,
            DropReason::BacklogFull => self.backlog_full,
            DropReason::CloneError => self.clone_error,
            DropReason::RcvbufOverflow => 0,
        }
    }

    /// All dropped copies (reasons in [`DropReason::PER_TARGET`]).
    pub fn dropped_total(&self) -> u64 {
        DropReason::PER_TARGET
            .iter()
            .map(|&r| self.dropped(r))
            .sum()
    }

    /// Copies offered but neither forwarded nor dropped yet: queued or in flight while running, and
    /// zero once the forwarder has stopped. Never negative (see [`TargetCounterSet::snapshot`]).
    pub fn queued(&self) -> u64 {
        self.offered
            .saturating_sub(self.forwarded)
            .saturating_sub(self.dropped_total())
            .saturating_sub(self.filtered)
    }
}

/// Every counter of the forwarder at a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per worker.
    pub workers: Vec<WorkerSnapshot>,
    /// Per target: the current set in order, then removed targets.
    pub targets: Vec<TargetSnapshot>,
    /// Target names, parallel to `targets`.
    pub target_names: Vec<String>,
    /// The kernel fast path's own counters, when it is loaded.
    pub kernel: Option<crate::metrics::kernel::KernelSnapshot>,
}

impl Snapshot {
    fn sum(&self, f: impl Fn(&WorkerSnapshot) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }

    /// Datagrams received: over all workers, plus those the kernel fast path served whose original
    /// never reached user space (it became the last copy).
    pub fn received(&self) -> u64 {
        self.sum(|w| w.received) + self.kernel.as_ref().map_or(0, |k| k.consumed)
    }

    /// Bytes received: over all workers, plus the payloads of the datagrams the kernel fast path
    /// served whose original never reached user space.
    pub fn received_bytes(&self) -> u64 {
        self.sum(|w| w.bytes) + self.kernel.as_ref().map_or(0, |k| k.consumed_bytes)
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

    /// Index of the target named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.target_names.iter().position(|n| n == name)
    }

    /// Copies of datagrams for target `t` dropped for `reason`.
    pub fn dropped(&self, t: usize, reason: DropReason) -> u64 {
        self.targets[t].dropped(reason)
    }

    /// All dropped copies for target `t` (reasons in [`DropReason::PER_TARGET`]).
    pub fn dropped_total(&self, t: usize) -> u64 {
        self.targets[t].dropped_total()
    }

    /// Copies offered to target `t` but neither forwarded nor dropped yet: queued or in flight while
    /// running, zero once stopped; negative only if the books were broken.
    pub fn unaccounted(&self, t: usize) -> i128 {
        let s = &self.targets[t];
        i128::from(s.offered)
            - i128::from(s.forwarded)
            - i128::from(s.dropped_total())
            - i128::from(s.filtered)
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "received {} datagrams ({} bytes); truncated {}; pool_exhausted {}; source_denied {}; kernel rcvbuf_overflow {} (never received)",
            self.received(),
            self.received_bytes(),
            self.truncated(),
            self.pool_exhausted(),
            self.sum(|w| w.source_denied),
            self.rcvbuf_overflow()
        )?;
        if let Some(k) = &self.kernel {
            let passed: Vec<String> = k.passed.iter().map(|(r, n)| format!("{r} {n}")).collect();
            writeln!(
                f,
                "kernel fast path ({} on {}): handled {} ({} never reached user space); passed up unhandled: {}",
                k.attach,
                k.interfaces.join(","),
                k.handled,
                k.consumed,
                passed.join(", ")
            )?;
            if let Some(off) = k.off {
                writeln!(f, "kernel fast path turned off while running: {off}")?;
            }
        }
        for (t, s) in self.targets.iter().enumerate() {
            write!(
                f,
                "target {}: offered {}, forwarded {} ({} bytes); dropped queue_full {}, send_error {}",
                self.target_names.get(t).map_or("?", String::as_str),
                s.offered,
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
            if s.source_denied > 0 {
                write!(f, ", source_denied {}", s.source_denied)?;
            }
            if s.disabled > 0 {
                write!(f, ", disabled {}", s.disabled)?;
            }
            if s.kernel_forwarded > 0 || s.backlog_full > 0 || s.clone_error > 0 {
                write!(
                    f,
                    ", backlog_full {}, clone_error {} (kernel path: {} of the forwarded)",
                    s.backlog_full, s.clone_error, s.kernel_forwarded
                )?;
            }
            write!(
                f,
                ", drain_timeout {}; unaccounted {}",
                s.drain_timeout,
                self.unaccounted(t)
            )?;
            if s.filtered > 0 || s.lines(LineOutcome::Offered) > 0 {
                write!(f, "; filtered {} (every line removed)", s.filtered)?;
                let lines: Vec<String> = LineOutcome::ALL
                    .iter()
                    .map(|o| format!("{} {}", o.as_str(), s.lines(*o)))
                    .collect();
                write!(f, "; lines {}", lines.join(", "))?;
            }
            if let Some(d) = s.receiver_drops {
                write!(f, "; receiver_drops {d} (forwarded, lost at the receiver)")?;
            }
            if s.up == Some(false) {
                write!(f, "; receiver down")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_fold_into_one_target_and_balance() {
        let set = TargetCounterSet::new(2);
        set.worker(0).add_offered(6);
        set.worker(1).add_offered(4);
        set.worker(0).add_forwarded(5, 50);
        set.worker(1).add_truncated(1);
        set.worker(1).add_queue_full(1);
        set.sender().add_forwarded(2, 20);
        set.sender().add_send_error(SendErrorKind::ConnRefused);
        let t = set.snapshot();
        assert_eq!((t.offered, t.forwarded), (10, 7), "every part adds up");
        assert_eq!(t.dropped_total(), 3);
        assert_eq!(
            t.queued(),
            0,
            "10 = 7 forwarded + 1 truncated + 1 queue_full + 1 send_error"
        );
        let s = Snapshot {
            workers: vec![WorkerSnapshot::default()],
            targets: vec![t],
            target_names: vec!["a".into()],
            kernel: None,
        };
        assert_eq!(s.unaccounted(0), 0);
        assert!(s.to_string().contains("conn_refused=1"), "{s}");
    }

    #[test]
    fn a_cut_taken_while_counting_never_shows_more_outcomes_than_offers() {
        let set = std::sync::Arc::new(TargetCounterSet::new(1));
        let writer = {
            let set = std::sync::Arc::clone(&set);
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    set.worker(0).add_offered(1);
                    set.sender().add_forwarded(1, 1);
                }
            })
        };
        while !writer.is_finished() {
            let s = set.snapshot();
            assert!(
                s.forwarded + s.dropped_total() <= s.offered,
                "outcomes are read before offers: {s:?}"
            );
        }
        writer.join().unwrap();
        assert_eq!(set.snapshot().queued(), 0);
    }

    #[test]
    fn errno_classes() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(SendErrorKind::of(&e), SendErrorKind::ConnRefused);
        let e = io::Error::from_raw_os_error(libc::ENOBUFS);
        assert_eq!(SendErrorKind::of(&e), SendErrorKind::NoBuffers);
    }
}
