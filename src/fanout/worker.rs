//! The receive worker: one thread per SO_REUSEPORT socket, optionally pinned to a CPU.
//!
//! Each loop: keep `batch` pool slots armed, `recvmmsg` into them, then hand every good datagram to
//! every target queue with `try_send` (never waiting). A full queue drops that target's copy
//! (`queue_full`); a datagram over `--max-datagram` is counted `truncated` and its slot reused; with the
//! pool dry the datagram lands in a scratch slot and is counted `pool_exhausted`. Counters are added once
//! per batch. Hot path: no allocation, no lock, one syscall per batch.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::ratelimit::RateLimit;
use crate::metrics::counters::{WorkerCounters, WorkerDelta};
use crate::net::mmsg::{MmsgRecv, RecvMeta};
use crate::pool::{BufId, BufPool};

/// Pause after an unexpected receive error, so a persistent one cannot spin a CPU.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// One receive thread's state.
pub(crate) struct RecvWorker {
    pub(crate) index: usize,
    pub(crate) socket: UdpSocket,
    pub(crate) pool: Arc<BufPool>,
    pub(crate) queues: Vec<Sender<BufId>>,
    pub(crate) counters: Arc<WorkerCounters>,
    pub(crate) running: Arc<AtomicBool>,
    pub(crate) batch: usize,
}

impl RecvWorker {
    /// Receives and dispatches until `running` turns false; then returns its slots to the pool and drops
    /// its queue handles, which lets the senders drain and finish.
    pub(crate) fn run(self) {
        let Some(scratch) = self.pool.try_take() else {
            tracing::error!(
                worker = self.index,
                "pool has no slot for this worker; it cannot receive"
            );
            return;
        };
        let mut recv = MmsgRecv::new(self.batch);
        let mut armed: Vec<BufId> = Vec::with_capacity(self.batch);
        let mut ids: Vec<BufId> = vec![scratch; self.batch];
        let mut meta = vec![RecvMeta::default(); self.batch];
        let mut queue_full = vec![0u64; self.queues.len()];
        let mut errors = RateLimit::new();
        let holders = self.queues.len() as u32;

        while self.running.load(Ordering::Relaxed) {
            while armed.len() < self.batch {
                match self.pool.try_take() {
                    Some(id) => armed.push(id),
                    None => break,
                }
            }
            ids[..armed.len()].copy_from_slice(&armed);
            ids[armed.len()..].fill(scratch);

            let n = match recv.recv_batch(self.socket.as_fd(), &self.pool, &ids, &mut meta) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    self.counters.add_recv_error();
                    if let Some(count) = errors.hit(1) {
                        tracing::warn!(worker = self.index, error = %e, count, "recvmmsg failed");
                    }
                    std::thread::sleep(ERROR_BACKOFF);
                    continue;
                }
            };

            let mut delta = WorkerDelta::default();
            let mut kernel_drops = None;
            let armed_len = armed.len();
            let mut kept = 0;
            for (i, m) in meta[..n].iter().enumerate() {
                delta.received += 1;
                kernel_drops = m.kernel_drops.or(kernel_drops);
                if i >= armed_len {
                    delta.pool_exhausted += 1;
                    continue;
                }
                let id = ids[i];
                if m.truncated {
                    delta.truncated += 1;
                    armed[kept] = id;
                    kept += 1;
                    continue;
                }
                delta.bytes += m.len as u64;
                self.pool.set_meta(id, m.len, m.rx_nanos);
                self.pool.share(id, holders);
                for (t, queue) in self.queues.iter().enumerate() {
                    // Full (slow target) or, by construction never, disconnected: this copy is dropped.
                    if queue.try_send(id).is_err() {
                        queue_full[t] += 1;
                        self.pool.release(id);
                    }
                }
            }
            // Slots the kernel did not fill this time stay armed, after the truncated ones kept above.
            armed.copy_within(n.min(armed_len)..armed_len, kept);
            armed.truncate(kept + armed_len.saturating_sub(n));

            self.counters.add_batch(&delta);
            for (t, q) in queue_full.iter_mut().enumerate() {
                self.counters.add_queue_full(t, std::mem::take(q));
            }
            if let Some(total) = kernel_drops {
                self.counters.set_rcvbuf_overflow(u64::from(total));
            }
        }

        for id in armed.into_iter().chain(std::iter::once(scratch)) {
            self.pool.share(id, 1);
            self.pool.release(id);
        }
    }
}
