//! A worker's inline send: the batch straight to a target whose backlog is empty, one
//! non-blocking `sendmmsg` (MSG_DONTWAIT) on its socket, the same work the simplest relay does,
//! with no thread hand-off. For a target that keeps origins (`preserve-source`), each copy goes
//! with its sender's credentials or from its client's address. What the kernel does not take at
//! once is the caller's to queue. Hot path: no allocation, one syscall.

use std::io;
use std::os::fd::AsFd;

use super::account::{count_send_error, count_sent};
use super::target::TargetCore;
use crate::metrics::counters::TargetCounters;
use crate::net::mmsg::{MmsgSend, RecvMeta};
use crate::net::origin::{Origin, OriginSend};
use crate::pool::{BufId, BufPool};

/// A worker's send state, for plain targets and for targets that keep origins.
pub(crate) struct Inline {
    pub(crate) plain: MmsgSend,
    pub(crate) kept: OriginSend,
}

impl Inline {
    /// State for batches of up to `batch` datagrams.
    pub(crate) fn new(batch: usize) -> Self {
        Self {
            plain: MmsgSend::new_nonblocking(batch),
            kept: OriginSend::new_nonblocking(batch),
        }
    }

    /// One non-blocking sendmmsg of `ids` to `target` (`meta`: what the kernel said of each, for
    /// its origin); returns how many the kernel took or refused, counted. The rest (EAGAIN, a
    /// short count) is for the caller to queue.
    pub(crate) fn send<'m>(
        &mut self,
        pool: &BufPool,
        target: &TargetCore,
        counters: &TargetCounters,
        ids: &[BufId],
        meta: impl Iterator<Item = &'m RecvMeta>,
        latency: bool,
    ) -> usize {
        let r = match &target.origin.way {
            Some(way) => {
                let origins = meta.map(Origin::of);
                self.kept
                    .send_slots(target.origin_fd(), way, pool, ids, origins)
            }
            None => self.plain.send_batch(target.socket.as_fd(), pool, ids),
        };
        match r {
            Ok(k) => {
                count_sent(counters, pool, &ids[..k], latency);
                k
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                // The first copy failed (sendmmsg(2)); count it and leave the rest to the sender.
                count_send_error(target, counters, &e);
                1
            }
        }
    }
}
