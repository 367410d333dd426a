//! The receive worker: one thread per SO_REUSEPORT socket, optionally pinned to a CPU.
//!
//! Each loop receives one batch, with `recvmmsg` into `batch` armed pool slots or from the worker's
//! io_uring (multishot recvmsg into pool slots it provided), loads the published target table once
//! (an `arc_swap::Cache`: one pointer comparison when nothing changed) and hands the batch to every
//! target in it. A target with an empty backlog gets it inline: one non-blocking `sendmmsg`
//! (MSG_DONTWAIT) on its connected socket, the same work the simplest relay does, with no thread
//! hand-off. Whatever the kernel does not take at once (EAGAIN, an error, a short count), and
//! everything for a target that already has a backlog, is *copied* into that target's backlog ring
//! for its sender thread; what does not fit is that target's `queue_full`. The slots are then free
//! again at once, so the pool is only the worker's receive staging, whatever the targets do. The
//! worker never waits for a target. A datagram over `--max-datagram` is counted `truncated` and its
//! slot reused; with the pool dry it lands in a scratch slot and is counted `pool_exhausted`. Hot
//! path: no allocation, one receive syscall per batch and at most one send syscall per target per
//! batch; the backlog lock is taken once per batch, and only for a target that has a backlog.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::dispatch::{Dispatch, Run, served_by_kernel};
use super::ratelimit::RateLimit;
use super::target::TargetTable;
use crate::metrics::counters::WorkerCounters;
use crate::net::mmsg::{MmsgRecv, RecvMeta};
use crate::net::socket::{self, WAKE_INTERVAL};
use crate::net::uring::UringRecv;
use crate::pool::{BufId, BufPool};

/// Pause after an unexpected receive error, so a persistent one cannot spin a CPU.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// At stop, how long a worker may keep reading what the kernel queued before SIGTERM.
const STOP_DRAIN: Duration = Duration::from_secs(1);

/// One receive thread's state.
pub(crate) struct RecvWorker {
    pub(crate) index: usize,
    pub(crate) socket: UdpSocket,
    pub(crate) pool: Arc<BufPool>,
    /// The registry's published table.
    pub(crate) table: Arc<ArcSwap<TargetTable>>,
    pub(crate) counters: Arc<WorkerCounters>,
    pub(crate) running: Arc<AtomicBool>,
    pub(crate) batch: usize,
    /// Record per-copy latency (`--latency`).
    pub(crate) latency: bool,
    /// The io_uring receive state, set up at start-up, when that backend is in use.
    pub(crate) uring: Option<UringRecv>,
    /// At stop, read what the socket holds first (false once it was handed over).
    pub(crate) drain_socket: Arc<AtomicBool>,
}

/// The receive backend of one worker, dispatched once per batch.
enum Backend {
    Mmsg(MmsgRecv),
    Uring(Box<UringRecv>),
}

impl RecvWorker {
    /// Receives and dispatches until `running` turns false; then returns its slots to the pool and
    /// drops its table, which lets removed targets' senders finish.
    pub(crate) fn run(mut self) {
        let Some(scratch) = self.pool.try_take() else {
            tracing::error!(
                worker = self.index,
                "pool has no slot for this worker; it cannot receive"
            );
            return;
        };
        let mut backend = match self.uring.take() {
            Some(uring) => Backend::Uring(Box::new(uring)),
            None => Backend::Mmsg(MmsgRecv::new(self.batch)),
        };
        let mut table = arc_swap::Cache::new(Arc::clone(&self.table));
        let mut dispatch = Dispatch::new(
            self.index,
            Arc::clone(&self.pool),
            Arc::clone(&self.counters),
            self.latency,
            self.batch,
        );
        // Free slots this worker holds: armed for recvmmsg, or waiting to be provided to the io_uring.
        let mut spare: Vec<BufId> = Vec::with_capacity(self.batch);
        let mut ids: Vec<BufId> = vec![scratch; self.batch];
        let mut meta = vec![RecvMeta::default(); self.batch];
        let mut recv_errors = RateLimit::new();
        // A recorded datagram's destination when the kernel does not say (a non-wildcard listener).
        let local = self
            .socket
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));

        // Once told to stop, read what the kernel already queued on the socket (it would be lost
        // at close, uncounted), for at most STOP_DRAIN, then exit.
        let mut stop_by: Option<std::time::Instant> = None;
        loop {
            self.counters.beat();
            if stop_by.is_none() && !self.running.load(Ordering::Relaxed) {
                if !self.drain_socket.load(Ordering::Relaxed) {
                    break; // handed over: the new udptee reads the socket now
                }
                stop_by = Some(std::time::Instant::now() + STOP_DRAIN);
                let _ = self.socket.set_nonblocking(true);
            }
            if stop_by.is_some_and(|d| std::time::Instant::now() >= d) {
                break;
            }
            // One dispatch per batch. Afterwards ids[..n] are the slots the kernel filled (the scratch
            // slot where recvmmsg found the pool dry) and meta[..n] what it said about them.
            let received = match &mut backend {
                Backend::Mmsg(recv) => {
                    while spare.len() < self.batch {
                        match self.pool.try_take() {
                            Some(id) => spare.push(id),
                            None => break,
                        }
                    }
                    let used = spare.len();
                    ids[..used].copy_from_slice(&spare);
                    ids[used..].fill(scratch);
                    let r = recv.recv_batch(self.socket.as_fd(), &self.pool, &ids, &mut meta);
                    if let Ok(n) = r {
                        spare.drain(..n.min(used));
                    }
                    r
                }
                Backend::Uring(recv) => {
                    recv.provide(&self.pool, &mut spare);
                    let r = recv.recv_batch(
                        self.socket.as_fd(),
                        &self.pool,
                        &mut ids,
                        &mut meta,
                        WAKE_INTERVAL,
                    );
                    self.counters.set_ring_empty(recv.ring_empty());
                    r
                }
            };
            let n = match received {
                Ok(n) => n,
                Err(e) if socket::timed_out(&e) => {
                    if stop_by.is_some() {
                        break; // the socket is empty
                    }
                    // Idle: still pick up a new table, so a removed target's sender can finish.
                    table.load();
                    continue;
                }
                Err(e) => {
                    self.counters.add_recv_error();
                    if let Some(count) = recv_errors.hit(1) {
                        tracing::warn!(worker = self.index, error = %e, count, "receive failed");
                    }
                    std::thread::sleep(ERROR_BACKOFF);
                    continue;
                }
            };
            if n == 0 && stop_by.is_some() {
                break;
            }

            let current = table.load();
            // With the kernel fast path, a datagram's mark says which targets the kernel already
            // served; the batch is dispatched in runs of datagrams that agree (one run, nearly always).
            let mut kernel_drops = None;
            let mut at = 0;
            while at < n {
                let served = served_by_kernel(current, &meta[at]);
                let mut end = at + 1;
                if current.kernel.is_some() {
                    while end < n && served_by_kernel(current, &meta[end]) == served {
                        end += 1;
                    }
                } else {
                    end = n;
                }
                let drops = dispatch.run(
                    current,
                    Run {
                        ids: &ids[at..end],
                        meta: &meta[at..end],
                        served,
                        scratch,
                        local,
                    },
                    &mut spare,
                );
                kernel_drops = drops.or(kernel_drops);
                at = end;
            }
            if let Some(total) = kernel_drops {
                self.counters.set_rcvbuf_overflow(u64::from(total));
            }
        }

        let ring_slots = match backend {
            Backend::Uring(recv) => recv.into_slots(),
            Backend::Mmsg(_) => Vec::new(),
        };
        for id in spare
            .into_iter()
            .chain(ring_slots)
            .chain(std::iter::once(scratch))
        {
            self.pool.put_back(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::TargetSpec;
    use crate::fanout::Threads;
    use crate::fanout::targets::{SenderSettings, TargetRegistry};

    /// With the pool dry (only the scratch slot), every datagram is received, counted
    /// `pool_exhausted` and forwarded to no one: no stall, no allocation, nothing unaccounted.
    #[test]
    fn a_dry_pool_is_a_counted_drop_not_a_stall() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let target = UdpSocket::bind("127.0.0.1:0").unwrap();
        let registry = TargetRegistry::new(
            SenderSettings {
                listen: rx.local_addr().unwrap(),
                own: crate::config::Listening {
                    udp: vec![rx.local_addr().unwrap()],
                    ..Default::default()
                },
                workers: 1,
                batch: 8,
                latency: false,
                drain_timeout: Duration::from_millis(100),
                sender_cpus: Vec::new(),
                max_targets: 4,
                max_datagram: 65535,
                gives_up_privileges: false,
            },
            Arc::new(Threads::default()),
        );
        registry
            .apply(vec![TargetSpec::new("t", target.local_addr().unwrap())])
            .unwrap();
        let counters = Arc::new(WorkerCounters::new());
        let running = Arc::new(AtomicBool::new(true));
        let worker = RecvWorker {
            index: 0,
            socket: rx.try_clone().unwrap(),
            pool: Arc::new(BufPool::new(1, 64)),
            table: registry.swap(),
            counters: Arc::clone(&counters),
            running: Arc::clone(&running),
            batch: 8,
            latency: false,
            uring: None,
            drain_socket: Arc::new(AtomicBool::new(true)),
        };
        let thread = std::thread::spawn(move || worker.run());
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..100 {
            client
                .send_to(b"dropped for lack of a slot", rx.local_addr().unwrap())
                .unwrap();
        }
        let start = Instant::now();
        while counters.snapshot().received < 100 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the worker stalled with a dry pool"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        running.store(false, Ordering::Relaxed);
        thread.join().unwrap();
        let s = counters.snapshot();
        assert_eq!(
            (s.received, s.pool_exhausted),
            (100, 100),
            "every datagram counted pool_exhausted"
        );
        registry.shutdown(Instant::now());
        let t = &registry.snapshots()[0].1;
        assert_eq!(t.forwarded, 0, "and forwarded to no one");
        assert_eq!(
            (t.offered, t.pool_exhausted),
            (100, 100),
            "the target's books say so too"
        );
    }
}
