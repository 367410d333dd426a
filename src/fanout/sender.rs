//! The target sender: one thread per target, sharing the target's connected socket, fed by a bounded
//! queue with whatever the workers could not send inline (the target's backlog).
//!
//! It blocks for the first queued datagram, takes up to a batch more without waiting, and sends them
//! with a blocking `sendmmsg`; only then does it lower the backlog count, so workers keep queueing
//! behind it until everything older is out. Errors follow quinn-udp: an error means the first message failed, so that copy is
//! counted as a `send_error` by errno class and skipped, and the rest retried; a short count resumes
//! where the kernel stopped. A send that times out (`EAGAIN` after the socket's send timeout) keeps the
//! batch and retries, so a slow target backs up its own queue only. Each slot is released after its
//! copy is sent or dropped. Hot path: no allocation, no lock, one syscall per batch.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::ratelimit::RateLimit;
use super::{count_send_error, count_sent};
use crate::metrics::counters::TargetCounters;
use crate::net::mmsg::MmsgSend;
use crate::net::socket::WAKE_INTERVAL;
use crate::pool::{BufId, BufPool};

/// One target's sender state.
pub(crate) struct TargetSender {
    pub(crate) name: String,
    pub(crate) socket: Arc<UdpSocket>,
    /// Shared with the workers: copies queued or in flight here (see `TargetLink::backlog`).
    pub(crate) backlog: Arc<AtomicUsize>,
    pub(crate) pool: Arc<BufPool>,
    pub(crate) queue: Receiver<BufId>,
    pub(crate) counters: Arc<TargetCounters>,
    /// Set once at shutdown: after it, whatever cannot be sent is counted `drain_timeout`.
    pub(crate) drain_deadline: Arc<OnceLock<Instant>>,
    pub(crate) batch: usize,
    /// Record per-copy latency (`--latency`).
    pub(crate) latency: bool,
}

impl TargetSender {
    fn past_deadline(&self) -> bool {
        self.drain_deadline
            .get()
            .is_some_and(|d| Instant::now() >= *d)
    }

    /// Sends until every worker has dropped its queue handle and the queue is empty.
    pub(crate) fn run(self) {
        let mut send = MmsgSend::new(self.batch);
        let mut ids: Vec<BufId> = Vec::with_capacity(self.batch);
        let mut errors = RateLimit::new();
        loop {
            ids.clear();
            match self.queue.recv_timeout(WAKE_INTERVAL) {
                Ok(id) => ids.push(id),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while ids.len() < self.batch {
                match self.queue.try_recv() {
                    Ok(id) => ids.push(id),
                    Err(_) => break,
                }
            }
            if self.past_deadline() {
                self.counters.add_drain_timeout(ids.len() as u64);
            } else {
                self.send_all(&mut send, &ids, &mut errors);
            }
            for &id in &ids {
                self.pool.release(id);
            }
            // Release: the workers' Acquire load of zero then sees these sends completed.
            self.backlog.fetch_sub(ids.len(), Ordering::Release);
        }
    }

    /// Sends `ids` in order, resuming after short counts and skipping copies the kernel refused.
    fn send_all(&self, send: &mut MmsgSend, ids: &[BufId], errors: &mut RateLimit) {
        let mut start = 0;
        while start < ids.len() {
            match send.send_batch(self.socket.as_fd(), &self.pool, &ids[start..]) {
                Ok(0) => break,
                Ok(n) => {
                    count_sent(
                        &self.counters,
                        &self.pool,
                        &ids[start..start + n],
                        self.latency,
                    );
                    start += n;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // The send buffer stayed full for WAKE_INTERVAL: the target path is slow. Keep the
                    // batch (the queue behind it fills and drops), unless shutdown has run out of time.
                    if self.past_deadline() {
                        self.counters.add_drain_timeout((ids.len() - start) as u64);
                        return;
                    }
                }
                Err(e) => {
                    count_send_error(&self.counters, &self.name, &e, errors);
                    start += 1;
                }
            }
        }
    }
}
