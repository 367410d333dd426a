//! [`DataView`]: what the data path shows of itself for reporting — the counters of every worker
//! and target, latency, CPU time, readiness — read from shared handles, never from the threads.
//! Not on the hot path.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::group::{MemberView, Placement};
use super::targets::TargetRegistry;
use super::threads::Threads;
use crate::metrics::counters::{Snapshot, WorkerCounters};
use crate::metrics::histogram::{LatencySummary, TargetHistograms, new_histogram};
use crate::metrics::snapshot::ListenerSnapshot;
use crate::metrics::stream::StreamCounters;
use crate::net::socket;
use crate::pool::BufPool;

/// One listener, as reports show it.
#[derive(Debug, Clone)]
pub(crate) struct ListenerView {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    /// Its threads' indexes in the worker counters.
    pub(crate) workers: std::ops::Range<usize>,
    /// A stream listener's connection counters.
    pub(crate) stream: Option<Arc<StreamCounters>>,
}

impl ListenerView {
    /// A datagram listener whose workers are `workers`.
    pub(crate) fn datagram(
        name: String,
        kind: &'static str,
        workers: std::ops::Range<usize>,
    ) -> Self {
        Self {
            name,
            kind,
            workers,
            stream: None,
        }
    }
}

/// The data path's shared view for reporting: the stats line, the admin endpoint and SIGUSR1 all
/// read through it (by way of `report::Stats`). Nothing here is touched by the hot path except the
/// counters it reads.
#[derive(Debug, Clone)]
pub struct DataView {
    pub(crate) backend: &'static str,
    pub(crate) pool: Arc<BufPool>,
    /// A second descriptor of each listen socket (the workers own the first): for the kernel drop
    /// counts, turning timestamps on, the fd store and a hand-over.
    pub(crate) worker_sockets: Arc<[UdpSocket]>,
    /// How many of `worker_sockets` are the first listener's.
    pub(crate) first: usize,
    pub(crate) worker_counters: Vec<Arc<WorkerCounters>>,
    pub(crate) registry: Arc<TargetRegistry>,
    /// Each listener and the receive threads that count for it.
    pub(crate) listeners: Vec<ListenerView>,
    pub(crate) workers_expected: usize,
    pub(crate) workers_running: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) threads: Arc<Threads>,
}

impl DataView {
    /// Each listener's name (its address with its scheme; a TCP one with its bound port).
    pub fn listener_names(&self) -> Vec<String> {
        self.listeners.iter().map(|l| l.name.clone()).collect()
    }

    /// Names of the current targets, in table order.
    pub fn target_names(&self) -> Vec<String> {
        self.registry.current().names()
    }

    /// The target registry (current set, counters by name, changes).
    pub fn registry(&self) -> &Arc<TargetRegistry> {
        &self.registry
    }

    /// Every group in the current set, in table order: its name and its members' state and books.
    pub fn groups(&self) -> Vec<(String, Vec<MemberView>)> {
        let table = self.registry.current();
        table
            .targets
            .iter()
            .filter_map(|t| Some((t.spec.name.clone(), t.core.group.as_ref()?.members())))
            .collect()
    }

    /// Where `key` goes in the group `name` now; `None` when no current target of that name is a
    /// group.
    pub fn locate(&self, name: &str, key: &[u8]) -> Option<Placement> {
        let table = self.registry.current();
        let t = table.targets.iter().find(|t| t.spec.name == name)?;
        Some(t.core.group.as_ref()?.locate(key))
    }

    /// The receive backend in use (`uring` or `mmsg`).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The first listener's sockets (a second descriptor of each; the workers own the first).
    pub fn listen_sockets(&self) -> &[UdpSocket] {
        &self.worker_sockets[..self.first]
    }

    /// The datagram pool (capacity and occupancy, for gauges).
    pub fn pool(&self) -> &BufPool {
        &self.pool
    }

    /// Every counter now: current targets in table order, then removed ones. Kernel drops are
    /// refreshed from SO_MEMINFO, which also sees drops after the last datagram received (SO_RXQ_OVFL
    /// only reports them with the next one).
    pub fn snapshot(&self) -> Snapshot {
        for (socket, counters) in self.worker_sockets.iter().zip(&self.worker_counters) {
            if let Ok(drops) = socket::socket_drops(socket) {
                counters.set_rcvbuf_overflow(drops);
            }
        }
        let kernel = self.registry.kernel_snapshot();
        let (target_names, targets) = self.registry.snapshots().into_iter().unzip();
        Snapshot {
            workers: self.worker_counters.iter().map(|c| c.snapshot()).collect(),
            targets,
            target_names,
            kernel,
            listeners: self
                .listeners
                .iter()
                .map(|l| ListenerSnapshot {
                    name: l.name.clone(),
                    kind: l.kind,
                    workers: l.workers.clone(),
                    stream: l.stream.as_ref().map(|c| c.snapshot()),
                })
                .collect(),
        }
    }

    /// Latency of each target since start (current, then removed), merged over every thread that
    /// sends to it.
    pub fn latency(&self) -> TargetHistograms {
        let current = self.target_names();
        let mut all = self.registry.all_counters();
        all.sort_by_key(|(n, _)| current.iter().position(|c| c == n).unwrap_or(usize::MAX));
        all.into_iter()
            .map(|(name, set)| {
                let mut h = new_histogram();
                for part in set.parts() {
                    part.latency().merge_into(&mut h);
                }
                (name, h)
            })
            .collect()
    }

    /// Latency percentiles per target (SIGUSR1 and `/latency`).
    pub fn latency_summaries(&self) -> Vec<LatencySummary> {
        self.latency()
            .iter()
            .map(|(name, h)| LatencySummary::of(name, h))
            .collect()
    }

    /// CPU time used so far by the forwarder's data threads (the kernel's nanosecond clocks).
    pub fn cpu_time(&self) -> Duration {
        self.threads.cpu_time()
    }

    /// Ready when every worker and every current target's sender runs, and no data thread died.
    pub fn ready(&self) -> Result<(), String> {
        let died = self.threads.died();
        if !died.is_empty() {
            return Err(format!("data thread(s) died: {}", died.join(", ")));
        }
        let running = self.workers_running.load(Ordering::Relaxed);
        if running != self.workers_expected {
            return Err(format!(
                "{running} of {} receive workers running",
                self.workers_expected
            ));
        }
        let stopped = self.registry.not_running();
        if !stopped.is_empty() {
            return Err(format!("senders not running: {}", stopped.join(", ")));
        }
        Ok(())
    }

    /// Each receive worker's loop turns so far (they move at least every read timeout while the
    /// worker lives).
    pub fn worker_beats(&self) -> Vec<u64> {
        self.worker_counters.iter().map(|c| c.beats()).collect()
    }

    /// Names of data threads that died (a panic): the process must exit so a supervisor restarts it.
    pub fn died(&self) -> Vec<String> {
        self.threads.died()
    }
}
