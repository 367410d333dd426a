//! One batch of received datagrams handed to every target: inline to a target whose backlog is
//! empty, copied into its ring otherwise, then to the observers; each datagram counted once for
//! the thread that received it. Shared by the datagram workers and the stream listeners, which
//! hand it datagrams packed from their connections. Hot path: no allocation, at most one send
//! syscall per target per batch.

use std::sync::Arc;

use super::inline::Inline;
use super::target::{TargetCore, TargetTable};
use crate::metrics::counters::{TargetCounters, WorkerCounters, WorkerDelta};
use crate::net::mmsg::RecvMeta;
use crate::net::origin::Origin;
use crate::pool::{BufId, BufPool};

/// The target bits the kernel fast path already served for one datagram (0 without it).
#[inline]
pub(crate) fn served_by_kernel(table: &TargetTable, m: &RecvMeta) -> u64 {
    table.kernel.as_ref().map_or(0, |b| b.served(m.mark, m.src))
}

/// Consecutive datagrams of one batch that the kernel served alike.
pub(crate) struct Run<'a> {
    pub(crate) ids: &'a [BufId],
    pub(crate) meta: &'a [RecvMeta],
    pub(crate) served: u64,
    pub(crate) scratch: BufId,
    pub(crate) local: std::net::SocketAddr,
}

/// A receive thread's dispatch state: who it counts as, and its send and scratch lists.
pub(crate) struct Dispatch {
    /// The thread's index in every target's per-thread counters.
    pub(crate) index: usize,
    pub(crate) pool: Arc<BufPool>,
    pub(crate) counters: Arc<WorkerCounters>,
    /// Record per-copy latency (`--latency`).
    pub(crate) latency: bool,
    /// Most datagrams per batch (and free slots a thread keeps).
    pub(crate) batch: usize,
    send: Inline,
    ready: Vec<BufId>,
    /// Where each of `ready` is in the batch, kept only while an observer needs its metadata.
    ready_at: Vec<usize>,
}

impl Dispatch {
    /// State for batches of up to `batch` datagrams.
    pub(crate) fn new(
        index: usize,
        pool: Arc<BufPool>,
        counters: Arc<WorkerCounters>,
        latency: bool,
        batch: usize,
    ) -> Self {
        Self {
            index,
            pool,
            counters,
            latency,
            batch,
            send: Inline::new(batch),
            ready: Vec::with_capacity(batch),
            ready_at: Vec::with_capacity(batch),
        }
    }

    /// Hands one run of received datagrams to every target the kernel did not already serve
    /// (`run.served`), then to the observers; returns the last SO_RXQ_OVFL count seen.
    pub(crate) fn run(
        &mut self,
        current: &TargetTable,
        run: Run<'_>,
        spare: &mut Vec<BufId>,
    ) -> Option<u32> {
        let mut delta = WorkerDelta::default();
        let mut kernel_drops = None;
        self.ready.clear();
        self.ready_at.clear();
        // Where each kept datagram is in the run: for the observers, and for targets that keep
        // origins (their ring entries carry each datagram's sender).
        let keeps = current.targets.iter().any(|t| t.core.origin.way.is_some());
        let locate = !current.observers.is_empty() || keeps;
        for (i, (&id, m)) in run.ids.iter().zip(run.meta).enumerate() {
            delta.received += 1;
            kernel_drops = m.kernel_drops.or(kernel_drops);
            if id == run.scratch {
                delta.pool_exhausted += 1;
            } else if m.truncated {
                delta.truncated += 1;
                self.keep_spare(id, spare);
            } else if current.allow.as_ref().is_some_and(|a| !a.permits(m.src)) {
                delta.source_denied += 1;
                self.keep_spare(id, spare);
            } else if m.looped {
                // Sent by this process to its own listener: a loop. Denied to every target.
                delta.looped += 1;
                delta.source_denied += 1;
                self.keep_spare(id, spare);
            } else {
                delta.bytes += m.len as u64;
                self.pool.set_meta(id, m.len, m.rx_nanos);
                self.ready.push(id);
                if locate {
                    self.ready_at.push(i);
                }
            }
        }

        for target in current.targets.iter() {
            if run.served & target.core.counters.slot_bit() != 0 {
                continue; // the kernel made (and counted) this target's copies
            }
            let counters = target.core.counters.worker(self.index);
            // Offered first, outcomes after: a reader's cut never shows more outcomes than offers.
            counters.add_offered(delta.received);
            counters.add_truncated(delta.truncated);
            counters.add_pool_exhausted(delta.pool_exhausted);
            counters.add_source_denied(delta.source_denied);
            if self.ready.is_empty() {
                continue;
            }
            if !target.spec.enabled {
                counters.add_disabled(self.ready.len() as u64);
                continue;
            }
            // Over the target's rate cap: the tail of the batch is not sent to it.
            let allowed = match &target.rate {
                Some(cap) => {
                    let k = cap.take(self.ready.len());
                    counters.add_rate_limited((self.ready.len() - k) as u64);
                    k
                }
                None => self.ready.len(),
            };
            if allowed == 0 {
                continue;
            }
            // An empty ring (Acquire) means every earlier copy for this target has been handed
            // to the kernel, so sending inline now keeps each flow's order. A target with line
            // settings or parity gets everything through its sender, which does that work.
            let done = if !target.via_sender && target.core.ring.is_empty() {
                let meta = self.ready_at.iter().map(|&i| &run.meta[i]);
                self.send.send(
                    &self.pool,
                    &target.core,
                    counters,
                    &self.ready[..allowed],
                    meta,
                    self.latency,
                )
            } else {
                0
            };
            let rest = &self.ready[done..allowed];
            if rest.is_empty() {
                continue;
            }
            if target.core.origin.way.is_some() {
                // Each entry with its sender's origin in front, for the sender to send with it.
                let origins = self.ready_at[done..allowed]
                    .iter()
                    .map(|&i| Origin::of(&run.meta[i]).encode());
                self.enqueue(&target.core, counters, rest, origins);
            } else {
                self.enqueue(&target.core, counters, rest, std::iter::repeat([]));
            }
        }
        // The recorder and taps get their copies last: nothing waits for them.
        if !self.ready_at.is_empty() {
            for observer in current.observers.iter() {
                let batch = self.ready_at.iter().map(|&i| (run.ids[i], &run.meta[i]));
                observer.push_batch(&self.pool, batch, run.local);
            }
        }
        for &id in self.ready.iter() {
            self.keep_spare(id, spare);
        }
        if run.served != 0 {
            delta.kernel_marked = delta.received;
        }
        self.counters.add_batch(&delta);
        kernel_drops
    }

    /// Keeps a free slot this worker owns for its next receive (cache-warm), or returns it to the
    /// pool if it has enough.
    pub(crate) fn keep_spare(&self, id: BufId, spare: &mut Vec<BufId>) {
        if spare.len() < self.batch {
            spare.push(id);
        } else {
            self.pool.put_back(id);
        }
    }

    /// Copies `ids` into the target's backlog, each behind its prefix (an origin, or nothing);
    /// copies that do not fit are dropped as `queue_full`.
    fn enqueue<const N: usize>(
        &self,
        target: &TargetCore,
        counters: &TargetCounters,
        ids: &[BufId],
        prefixes: impl Iterator<Item = [u8; N]>,
    ) {
        let mut full = 0;
        {
            let mut ring = target.ring.producer();
            for (&id, prefix) in ids.iter().zip(prefixes) {
                if !ring.push_slot_with(&prefix, &self.pool, id) {
                    full += 1;
                }
            }
        }
        counters.add_queue_full(full);
        if full < ids.len() as u64 {
            target.wake();
        }
    }
}
