//! How a sent batch and a refused copy are counted, shared by the workers' inline sends and the
//! senders so both count the same way. Hot path: one call per batch, no allocation.

use std::io;

use super::target::TargetCore;
use crate::metrics::counters::{SendErrorKind, TargetCounters};
use crate::metrics::histogram::now_nanos;
use crate::net::socket;
use crate::pool::{BufId, BufPool};

/// Counts copies one `sendmmsg` accepted, and their latency when recorded. Shared by the workers'
/// inline sends and the senders, so both count the same way.
pub(crate) fn count_sent(counters: &TargetCounters, pool: &BufPool, sent: &[BufId], latency: bool) {
    let bytes: usize = sent.iter().map(|&id| pool.len(id)).sum();
    counters.add_forwarded(sent.len() as u64, bytes as u64);
    if latency {
        counters
            .latency()
            .record_batch(now_nanos(), sent.iter().map(|&id| pool.rx_nanos(id)));
    }
}

/// Counts one copy the kernel refused (the first of a sendmmsg batch), logging at most once per
/// interval per target, whichever thread hit it, with how many copies the warning stands for.
pub(crate) fn count_send_error(target: &TargetCore, counters: &TargetCounters, e: &io::Error) {
    let kind = SendErrorKind::of(e);
    counters.add_send_error(kind);
    if let Some(path) = &target.unix {
        // The receiver went away or restarted on a new socket: connect to whatever is there now,
        // so the next copy finds it (the watch thread also does, once a second).
        let _ = socket::reconnect_unix(&target.socket, path);
    }
    if let Some(count) = target.errors.hit(1) {
        tracing::warn!(target_name = %target.name, addr = %target.addr, error = %e, reason = kind.as_str(), count,
            "send to target failed; copies dropped (send_error), count since the last such warning");
    }
}
