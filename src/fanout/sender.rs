//! The target sender: one thread per target incarnation, sharing the target's connected socket, fed
//! by its backlog ring with whatever the workers could not send inline.
//!
//! It parks until a worker pushes, reads up to a batch of entries in place and sends them with a
//! blocking `sendmmsg` straight from the ring; only then does it consume them, so workers keep
//! queueing behind it until everything older is out (each flow keeps its order). Errors follow
//! quinn-udp: an error means the first message failed, so that copy is counted as a `send_error` by
//! errno class and skipped, and the rest retried; a short count resumes where the kernel stopped. A
//! send that times out (`EAGAIN` after the socket's send timeout) keeps the batch and retries, so a
//! slow target backs up its own ring only. Once the target is removed or the forwarder stops, what
//! is left after the drain deadline is counted `drain_timeout`. Hot path: no allocation, no lock,
//! one syscall per batch.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::count_send_error;
use super::targets::TargetCore;
use crate::metrics::histogram::now_nanos;
use crate::net::mmsg::MmsgSend;
use crate::net::socket::WAKE_INTERVAL;
use crate::pool::ring::Entry;

/// One target incarnation's sender.
pub(crate) struct TargetSender {
    pub(crate) core: Arc<TargetCore>,
    pub(crate) batch: usize,
    /// Record per-copy latency (`--latency`).
    pub(crate) latency: bool,
}

impl TargetSender {
    fn past_deadline(&self) -> bool {
        self.core
            .drain_deadline
            .get()
            .is_some_and(|d| Instant::now() >= *d)
    }

    /// Sends until the backlog is closed and empty (or its drain deadline has passed).
    pub(crate) fn run(self) {
        let mut send = MmsgSend::new(self.batch);
        let mut entries = vec![Entry::default(); self.batch];
        let mut pos = 0u64;
        let ring = &self.core.ring;
        loop {
            let n = ring.peek(pos, &mut entries);
            if n == 0 {
                // Acquire: pairs with the close after the last producer is gone; the ring is then final.
                if self.core.closed.load(Ordering::Acquire) && ring.peek(pos, &mut entries) == 0 {
                    break;
                }
                std::thread::park_timeout(WAKE_INTERVAL);
                continue;
            }
            if self.past_deadline() {
                self.core.counters.sender().add_drain_timeout(n as u64);
            } else {
                self.send_all(&mut send, &entries[..n]);
            }
            pos = entries[n - 1].next;
            ring.consume(pos, n);
        }
        self.core.sender_alive.store(false, Ordering::Relaxed);
        if self.core.retired.load(Ordering::Relaxed) {
            let s = self.core.counters.snapshot();
            tracing::info!(
                target_name = %self.core.name, addr = %self.core.addr, offered = s.offered,
                forwarded = s.forwarded, dropped = s.dropped_total(), drain_timeout = s.drain_timeout,
                "target removed: its queue is drained; totals under this name so far"
            );
        }
    }

    /// Sends `entries` in order, resuming after short counts and skipping copies the kernel refused.
    fn send_all(&self, send: &mut MmsgSend, entries: &[Entry]) {
        let counters = self.core.counters.sender();
        let mut start = 0;
        while start < entries.len() {
            match send.send_entries(self.core.socket.as_fd(), &entries[start..]) {
                Ok(0) => break,
                Ok(n) => {
                    let sent = &entries[start..start + n];
                    let bytes: usize = sent.iter().map(|e| e.len).sum();
                    counters.add_forwarded(n as u64, bytes as u64);
                    if self.latency {
                        counters
                            .latency()
                            .record_batch(now_nanos(), sent.iter().map(|e| e.rx_nanos));
                    }
                    start += n;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // The send buffer stayed full for WAKE_INTERVAL: the target path is slow. Keep the
                    // batch (the ring behind it fills and drops), unless its drain time is up.
                    if self.past_deadline() {
                        counters.add_drain_timeout((entries.len() - start) as u64);
                        return;
                    }
                }
                Err(e) => {
                    count_send_error(&self.core, counters, &e);
                    start += 1;
                }
            }
        }
    }
}
