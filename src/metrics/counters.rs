//! Per-thread counters and the accounting they must satisfy.
//!
//! Each worker and each sender owns its counters and is their only writer (a worker also keeps its part
//! of every target's counters, for the copies it sends inline); it adds a batch's worth at once (one relaxed `fetch_add` per counter per batch, never per datagram). Readers (stats line,
//! admin endpoint, final summary) take a [`Snapshot`]. Once queues have drained, for every target:
//! `received = forwarded + Σ drops` ([`Snapshot::unaccounted`] is then zero).

use std::sync::atomic::{AtomicU64, Ordering};

use super::cell::{add, get};
use super::histogram::LatencyRecorder;
use super::kernel::KernelTargetCounts;
pub use super::reason::{DropReason, LineOutcome, SendErrorKind};
pub use super::snapshot::{Snapshot, TargetSnapshot, WorkerSnapshot};
pub use super::worker::{WorkerCounters, WorkerDelta};

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
    connection_lost: AtomicU64,
    rate_limited: AtomicU64,
    series_limited: AtomicU64,
    truncated: AtomicU64,
    pool_exhausted: AtomicU64,
    disabled: AtomicU64,
    source_denied: AtomicU64,
    no_member: AtomicU64,
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

    /// Counts copies over the target's `max-rate`.
    pub fn add_rate_limited(&self, n: u64) {
        if n > 0 {
            add(&self.rate_limited, n);
        }
    }

    /// Counts datagrams a series budget emptied.
    pub fn add_series_limited(&self, n: u64) {
        if n > 0 {
            add(&self.series_limited, n);
        }
    }

    /// Counts copies lost with a TCP target's connection (written, not acknowledged).
    pub fn add_connection_lost(&self, n: u64) {
        add(&self.connection_lost, n);
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

    /// Counts a group's datagrams that found no member in its ring.
    pub fn add_no_member(&self, n: u64) {
        add(&self.no_member, n);
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
        add(&self.connection_lost, s.connection_lost);
        add(&self.rate_limited, s.rate_limited);
        add(&self.series_limited, s.series_limited);
        add(&self.truncated, s.truncated);
        add(&self.pool_exhausted, s.pool_exhausted);
        add(&self.disabled, s.disabled);
        add(&self.source_denied, s.source_denied);
        add(&self.no_member, s.no_member);
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
            connection_lost: get(&self.connection_lost),
            rate_limited: get(&self.rate_limited),
            series_limited: get(&self.series_limited),
            queue_full: get(&self.queue_full),
            truncated: get(&self.truncated),
            pool_exhausted: get(&self.pool_exhausted),
            disabled: get(&self.disabled),
            source_denied: get(&self.source_denied),
            no_member: get(&self.no_member),
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
    kernel: std::sync::Mutex<KernelTargetCounts>,
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
    pub(crate) fn set_kernel(&self, k: KernelTargetCounts) {
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

#[cfg(test)]
mod tests {
    use std::io;

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
            listeners: Vec::new(),
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
