//! A receive worker's counters: written only by that worker, a batch's worth at a time (one
//! relaxed add per counter per batch, never per datagram). Hot path.

use std::sync::atomic::{AtomicU64, Ordering};

use super::cell::{add, get};
use super::snapshot::WorkerSnapshot;

/// Counters of one receive worker; written only by that worker.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    received: AtomicU64,
    bytes: AtomicU64,
    truncated: AtomicU64,
    pool_exhausted: AtomicU64,
    source_denied: AtomicU64,
    looped: AtomicU64,
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
    /// Datagrams udptee itself sent to its own listener (a loop through a socket link).
    pub looped: u64,
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
        if d.looped > 0 {
            add(&self.looped, d.looped);
        }
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
        add(&self.looped, s.looped);
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
            looped: get(&self.looped),
            rcvbuf_overflow: get(&self.rcvbuf_overflow),
            recv_errors: get(&self.recv_errors),
            ring_empty: get(&self.ring_empty),
            kernel_marked: get(&self.kernel_marked),
        }
    }
}
