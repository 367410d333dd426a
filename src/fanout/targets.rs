//! The target registry: the one owner of the target set.
//!
//! It builds an immutable [`TargetTable`] and publishes it with `arc-swap`; each receive worker keeps
//! an `arc_swap::Cache` and loads it once per batch (one pointer comparison when nothing changed), so
//! nothing is looked up or locked per datagram. A change is built completely before it is published:
//! new targets get their socket connected, their backlog ring allocated and their sender started
//! first, so a failure changes nothing. Unchanged targets are carried over as the same `Arc`: their
//! socket, backlog, sender and counters are untouched. A removed target is simply absent from the next
//! table; when the last table that holds it is dropped (every worker has moved on), its
//! `ProducerGuard` closes its backlog, and its sender drains what is left, bounded by the drain
//! deadline set at removal, then exits. Counters belong to the target *name* and outlive any one
//! incarnation, so they survive an address change, a re-add, and stay reported after removal.
//! Not on the hot path, except [`TargetTable`], which workers read.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::ratelimit::SharedRateLimit;
use super::sender::TargetSender;
use super::threads::Threads;
use crate::config::{ConfigError, TargetSpec, validate_targets};
use crate::metrics::counters::{TargetCounterSet, TargetSnapshot};
use crate::net::socket;
use crate::pool::ring::ByteRing;

/// One incarnation of a target: its connected socket, backlog and sender. A new address or new queue
/// settings make a new incarnation under the same name (and the same counters).
#[derive(Debug)]
pub(crate) struct TargetCore {
    pub(crate) name: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) socket: UdpSocket,
    pub(crate) ring: ByteRing,
    pub(crate) counters: Arc<TargetCounterSet>,
    /// Send-error warnings for this target, shared by every call site (one warning per interval).
    pub(crate) errors: SharedRateLimit,
    /// Set when no producer can push any more: the sender drains the ring and exits.
    pub(crate) closed: AtomicBool,
    /// Set when the target is removed or the forwarder stops: after it, what is left is dropped as
    /// `drain_timeout`.
    pub(crate) drain_deadline: OnceLock<Instant>,
    /// Set when the target was removed (not at shutdown): its sender logs its final accounting.
    pub(crate) retired: AtomicBool,
    /// The sender thread, to wake it after a push.
    pub(crate) sender: OnceLock<Thread>,
    /// The sender thread is running.
    pub(crate) sender_alive: AtomicBool,
    /// The line filter of the published entry (none: send as received); the sender loads it per
    /// batch, so a change of line settings applies without a new incarnation.
    pub(crate) lines: arc_swap::ArcSwapOption<crate::statsd::filter::LineFilter>,
    /// Digest the lines sent (`parity`), for a target without line settings.
    pub(crate) parity: AtomicBool,
    /// A Unix datagram target's path: the watch thread connects its socket again while it is down
    /// (the receiver may start later, or restart and bind the path anew).
    pub(crate) unix: Option<std::path::PathBuf>,
}

impl TargetCore {
    /// Wakes the sender (after a push, or when closing).
    pub(crate) fn wake(&self) {
        if let Some(t) = self.sender.get() {
            t.unpark();
        }
    }

    /// No more pushes will come.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake();
    }
}

/// Closes a core's backlog when the last table holding it is gone: by then no worker can push.
#[derive(Debug)]
pub(crate) struct ProducerGuard(Arc<TargetCore>);

impl Drop for ProducerGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A target as one table publishes it.
#[derive(Debug)]
pub(crate) struct TargetEntry {
    pub(crate) core: Arc<TargetCore>,
    producers: Arc<ProducerGuard>,
    pub(crate) spec: TargetSpec,
    /// Every copy goes through the sender (line settings or parity): workers never send inline.
    pub(crate) via_sender: bool,
}

impl TargetEntry {
    fn new(core: Arc<TargetCore>, producers: Arc<ProducerGuard>, spec: TargetSpec) -> Self {
        let via_sender = !spec.lines.is_passthrough() || spec.parity;
        Self {
            core,
            producers,
            spec,
            via_sender,
        }
    }
}

/// An immutable target set. Workers load it once per batch.
#[derive(Debug, Default)]
pub struct TargetTable {
    /// Increases with every published change.
    pub generation: u64,
    pub(crate) targets: Box<[Arc<TargetEntry>]>,
    /// The recorder's and live taps' copies of every received datagram.
    pub(crate) observers: Box<[Arc<super::observe::Observer>]>,
    /// `--allow`: the senders forwarded for (`None`: everyone).
    pub(crate) allow: Option<Arc<crate::net::allow::AllowList>>,
    /// With the kernel fast path: which targets it served, by the mark of each datagram.
    pub(crate) kernel: Option<Arc<crate::fastpath::Book>>,
}

impl TargetTable {
    /// Names in table order.
    pub fn names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.spec.name.clone()).collect()
    }
}

/// What a change did, for the log, the API response and the reload counter.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Targets that joined.
    pub added: Vec<String>,
    /// Targets that left (their queues drain in the background).
    pub removed: Vec<String>,
    /// Targets whose address or queue settings changed (new socket and sender, same counters).
    pub replaced: Vec<String>,
    /// Targets whose `enabled` changed.
    pub toggled: Vec<String>,
    /// Targets left exactly as they were.
    pub unchanged: Vec<String>,
    /// The generation now published.
    pub generation: u64,
}

/// Why a change was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The new set is invalid (duplicate, loop, too many, bad value).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// A new target's socket could not be set up.
    #[error("connecting to target {name:?} ({addr}): {source}")]
    Connect {
        /// The target.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A backlog ring could not be allocated.
    #[error("target {name:?}: {reason}")]
    Memory {
        /// The target.
        name: String,
        /// What failed.
        reason: String,
    },
    /// A sender thread could not be started.
    #[error("starting the sender of target {name:?}: {source}")]
    Spawn {
        /// The target.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No target of that name.
    #[error("no target named {0:?}")]
    NotFound(String),
    /// The forwarder is stopping.
    #[error("udptee is shutting down")]
    Stopping,
}

/// Settings every target's sender shares; fixed at start-up.
#[derive(Debug, Clone)]
pub(crate) struct SenderSettings {
    pub(crate) listen: SocketAddr,
    /// `--listen unixgram://`: its path (a target there would be a loop).
    pub(crate) listen_unix: Option<std::path::PathBuf>,
    pub(crate) workers: usize,
    pub(crate) batch: usize,
    pub(crate) latency: bool,
    pub(crate) drain_timeout: Duration,
    pub(crate) sender_cpus: Vec<usize>,
    pub(crate) max_targets: usize,
    /// `--max-datagram`: a filtered copy is packed under it.
    pub(crate) max_datagram: usize,
}

struct RegistryState {
    generation: u64,
    /// Counters by name, in first-seen order; kept after removal (reported until restart).
    counters: Vec<(String, Arc<TargetCounterSet>)>,
    /// Failed look-ups per name (`--resolve-interval`).
    resolve_errors: HashMap<String, Arc<AtomicU64>>,
    /// Sender threads of every incarnation not yet joined.
    senders: Vec<JoinHandle<()>>,
    next_cpu: usize,
    stopping: bool,
    /// Published with every table.
    observers: Vec<Arc<super::observe::Observer>>,
    /// Published with every table.
    allow: Option<Arc<crate::net::allow::AllowList>>,
    /// The kernel fast path, when loaded.
    fastpath: Option<Arc<crate::fastpath::FastPath>>,
    /// What the kernel was last told, and the names it serves.
    plan: crate::fastpath::Plan,
    /// The kernel path's counters when it was taken out (for the final accounting).
    last_kernel: Option<crate::metrics::kernel::KernelSnapshot>,
    /// The sockets were handed to a new instance: the kernel path copies nothing any more.
    handed_over: bool,
    /// The marks check (see [`TargetRegistry::check_marks`]).
    marks: MarkCheck,
}

/// Whether the kernel path's marks reach the workers: a firewall rewriting packet marks between TC
/// ingress and the socket would make user space copy again what the kernel copied.
#[derive(Debug, Default)]
struct MarkCheck {
    workers: Vec<Arc<crate::metrics::counters::WorkerCounters>>,
    /// (originals the program passed up marked, datagrams the workers received, marked ones) at
    /// the last look.
    last: (u64, u64, u64),
    /// The marks were found missing: the kernel path is off for good.
    lost: bool,
}

/// The one owner of the target set. See the module docs.
pub struct TargetRegistry {
    table: Arc<ArcSwap<TargetTable>>,
    state: Mutex<RegistryState>,
    settings: SenderSettings,
    threads: Arc<Threads>,
    /// The watch thread, woken when targets join so it looks at their receivers at once.
    watcher: OnceLock<Thread>,
    /// The parity ledger's windows (rotated by the watch thread).
    parity: Mutex<ParityWindow>,
}

/// Every target's counters at the start of the current window, and what happened in the last
/// complete one.
#[derive(Debug)]
struct ParityWindow {
    started: Instant,
    at_start: Vec<(String, TargetSnapshot)>,
    last: Option<(Duration, Vec<(String, TargetSnapshot)>)>,
}

/// How long one window of the parity ledger lasts.
pub(crate) const PARITY_INTERVAL: Duration = Duration::from_secs(10);

impl std::fmt::Debug for TargetRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetRegistry")
            .field("generation", &self.table.load().generation)
            .finish_non_exhaustive()
    }
}

impl TargetRegistry {
    pub(crate) fn new(settings: SenderSettings, threads: Arc<Threads>) -> Self {
        Self {
            table: Arc::new(ArcSwap::from_pointee(TargetTable::default())),
            state: Mutex::new(RegistryState {
                generation: 0,
                counters: Vec::new(),
                resolve_errors: HashMap::new(),
                senders: Vec::new(),
                next_cpu: 0,
                stopping: false,
                observers: Vec::new(),
                allow: None,
                fastpath: None,
                plan: crate::fastpath::Plan::default(),
                last_kernel: None,
                handed_over: false,
                marks: MarkCheck::default(),
            }),
            settings,
            threads,
            watcher: OnceLock::new(),
            parity: Mutex::new(ParityWindow {
                started: Instant::now(),
                at_start: Vec::new(),
                last: None,
            }),
        }
    }

    /// Closes the parity window when [`PARITY_INTERVAL`] has passed, keeping what happened in it.
    pub(crate) fn rotate_parity(&self) {
        let mut w = self.parity.lock().unwrap_or_else(|p| p.into_inner());
        if w.started.elapsed() < PARITY_INTERVAL {
            return;
        }
        let now = self.snapshots();
        let delta = now
            .iter()
            .map(|(name, s)| {
                let before = w.at_start.iter().find(|(n, _)| n == name).map(|(_, b)| b);
                (
                    name.clone(),
                    before.map_or_else(|| s.clone(), |b| s.since(b)),
                )
            })
            .collect();
        w.last = Some((w.started.elapsed(), delta));
        w.at_start = now;
        w.started = Instant::now();
    }

    /// The last complete parity window: its length and what happened in it, per target.
    pub fn last_parity_window(&self) -> Option<(Duration, Vec<(String, TargetSnapshot)>)> {
        self.parity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .clone()
    }

    /// Names the watch thread to wake when targets join.
    pub(crate) fn set_watcher(&self, thread: Thread) {
        let _ = self.watcher.set(thread);
    }

    /// The published table, for workers' caches.
    pub(crate) fn swap(&self) -> Arc<ArcSwap<TargetTable>> {
        Arc::clone(&self.table)
    }

    /// The table published now.
    pub fn current(&self) -> Arc<TargetTable> {
        self.table.load_full()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The specs of the published set, in order.
    fn specs(&self) -> Vec<TargetSpec> {
        self.table
            .load()
            .targets
            .iter()
            .map(|t| t.spec.clone())
            .collect()
    }

    /// Replaces the whole set with `specs` (start-up and reload), applying only the difference.
    pub fn apply(&self, specs: Vec<TargetSpec>) -> Result<Change, ChangeError> {
        let mut state = self.lock();
        self.apply_locked(&mut state, specs)
    }

    /// Adds or replaces one target, leaving the others as they are.
    pub fn put(&self, spec: TargetSpec) -> Result<Change, ChangeError> {
        let mut state = self.lock();
        let mut specs = self.specs();
        match specs.iter_mut().find(|s| s.name == spec.name) {
            Some(s) => *s = spec,
            None => specs.push(spec),
        }
        self.apply_locked(&mut state, specs)
    }

    /// Removes one target; its queue drains in the background.
    pub fn remove(&self, name: &str) -> Result<Change, ChangeError> {
        let mut state = self.lock();
        let specs = self.specs();
        if !specs.iter().any(|s| s.name == name) {
            return Err(ChangeError::NotFound(name.to_owned()));
        }
        let rest = specs.into_iter().filter(|s| s.name != name).collect();
        self.apply_locked(&mut state, rest)
    }

    /// Enables or disables one target (a disabled target stays in the set and counts `disabled`).
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<Change, ChangeError> {
        let mut state = self.lock();
        let mut specs = self.specs();
        let spec = specs
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| ChangeError::NotFound(name.to_owned()))?;
        spec.enabled = enabled;
        self.apply_locked(&mut state, specs)
    }

    fn apply_locked(
        &self,
        state: &mut RegistryState,
        specs: Vec<TargetSpec>,
    ) -> Result<Change, ChangeError> {
        if state.stopping {
            return Err(ChangeError::Stopping);
        }
        validate_targets(
            self.settings.listen,
            self.settings.listen_unix.as_deref(),
            &specs,
            self.settings.max_targets,
        )?;
        let old = self.table.load_full();
        let mut change = Change::default();
        let mut built: Vec<Arc<TargetEntry>> = Vec::with_capacity(specs.len());
        let mut started = Vec::new();
        for spec in specs {
            let prev = old.targets.iter().find(|t| t.spec.name == spec.name);
            let entry = match prev {
                Some(p) if p.spec == spec => {
                    change.unchanged.push(spec.name.clone());
                    Arc::clone(p)
                }
                Some(p) if p.spec.same_incarnation(&spec) => {
                    change.toggled.push(spec.name.clone());
                    Arc::new(TargetEntry::new(
                        Arc::clone(&p.core),
                        Arc::clone(&p.producers),
                        spec,
                    ))
                }
                _ => {
                    if prev.is_some() {
                        change.replaced.push(spec.name.clone());
                    } else {
                        change.added.push(spec.name.clone());
                    }
                    match self.start_core(state, &spec) {
                        Ok((core, handle)) => {
                            started.push(handle);
                            let producers = Arc::new(ProducerGuard(Arc::clone(&core)));
                            Arc::new(TargetEntry::new(core, producers, spec))
                        }
                        // Dropping what was built closes the new cores; their senders exit at once.
                        Err(e) => return Err(e),
                    }
                }
            };
            built.push(entry);
        }
        // Line filters compile now; a bad one refuses the whole change before anything is published.
        let mut filters = Vec::with_capacity(built.len());
        for b in &built {
            let filter = if b.spec.lines.is_passthrough() {
                None
            } else {
                let f = crate::statsd::filter::LineFilter::new(
                    &b.spec.lines,
                    self.settings.max_datagram,
                )
                .map_err(|reason| ConfigError::Lines {
                    target: b.spec.name.clone(),
                    reason,
                })?;
                Some(Arc::new(f))
            };
            filters.push(filter);
        }
        for (b, f) in built.iter().zip(filters) {
            b.core.lines.store(f);
            b.core.parity.store(b.spec.parity, Ordering::Relaxed);
        }
        for p in old.targets.iter() {
            let kept = built.iter().any(|b| Arc::ptr_eq(&b.core, &p.core));
            if !kept {
                let _ = p
                    .core
                    .drain_deadline
                    .set(Instant::now() + self.settings.drain_timeout);
                p.core.retired.store(true, Ordering::Relaxed);
                if !built.iter().any(|b| b.spec.name == p.spec.name) {
                    change.removed.push(p.spec.name.clone());
                }
            }
        }
        state.senders.extend(started);
        for t in &built {
            if !state.counters.iter().any(|(n, _)| *n == t.spec.name) {
                keep_counters(state, t.spec.name.clone(), Arc::clone(&t.core.counters));
            }
        }
        state.senders.retain(|h| !h.is_finished());
        state.generation += 1;
        change.generation = state.generation;
        self.table.store(Arc::new(TargetTable {
            generation: state.generation,
            targets: built.into(),
            observers: state.observers.clone().into(),
            allow: state.allow.clone(),
            kernel: state.fastpath.as_ref().map(|f| Arc::clone(f.book())),
        }));
        self.sync_kernel(state);
        if !change.added.is_empty() || !change.replaced.is_empty() {
            if let Some(w) = self.watcher.get() {
                w.unpark();
            }
        }
        Ok(change)
    }

    /// The counters kept for `name`, or a new set; a new one is kept (by the caller) only once the
    /// change that made it is published, so a refused change leaves no name behind.
    fn counters_for(&self, state: &RegistryState, name: &str) -> Arc<TargetCounterSet> {
        state.counters.iter().find(|(n, _)| n == name).map_or_else(
            || Arc::new(TargetCounterSet::new(self.settings.workers)),
            |(_, c)| Arc::clone(c),
        )
    }

    fn start_core(
        &self,
        state: &mut RegistryState,
        spec: &TargetSpec,
    ) -> Result<(Arc<TargetCore>, JoinHandle<()>), ChangeError> {
        let socket = match &spec.unix {
            Some(path) => socket::unix_target(path, spec.sndbuf_bytes),
            None => socket::connect_target(spec.resolved, spec.sndbuf_bytes),
        }
        .map_err(|source| ChangeError::Connect {
            name: spec.name.clone(),
            addr: spec.resolved,
            source,
        })?;
        let ring = ByteRing::try_new(spec.queue_bytes, spec.queue_depth).map_err(|reason| {
            ChangeError::Memory {
                name: spec.name.clone(),
                reason,
            }
        })?;
        let core = Arc::new(TargetCore {
            name: spec.name.as_str().into(),
            addr: spec.resolved,
            socket,
            ring,
            counters: self.counters_for(state, &spec.name),
            errors: SharedRateLimit::new(),
            closed: AtomicBool::new(false),
            drain_deadline: OnceLock::new(),
            retired: AtomicBool::new(false),
            sender: OnceLock::new(),
            sender_alive: AtomicBool::new(true),
            lines: arc_swap::ArcSwapOption::empty(),
            parity: AtomicBool::new(false),
            unix: spec.unix.clone(),
        });
        let cpu = (!self.settings.sender_cpus.is_empty()).then(|| {
            state.next_cpu += 1;
            self.settings.sender_cpus[(state.next_cpu - 1) % self.settings.sender_cpus.len()]
        });
        let sender = TargetSender {
            core: Arc::clone(&core),
            batch: self.settings.batch,
            latency: self.settings.latency,
        };
        let handle = self
            .threads
            .spawn(sender_thread_name(&spec.name), cpu, move || sender.run())
            .map_err(|source| ChangeError::Spawn {
                name: spec.name.clone(),
                source,
            })?;
        let _ = core.sender.set(handle.thread().clone());
        Ok((core, handle))
    }

    /// Every target's counters: the current set in table order, then removed names.
    pub fn snapshots(&self) -> Vec<(String, TargetSnapshot)> {
        let table = self.table.load_full();
        let state = self.lock();
        self.fold_kernel(&state);
        let mut out: Vec<(String, TargetSnapshot)> = table
            .targets
            .iter()
            .map(|t| (t.spec.name.clone(), t.core.counters.snapshot()))
            .collect();
        for (name, c) in &state.counters {
            if !table.targets.iter().any(|t| &t.spec.name == name) {
                out.push((name.clone(), c.snapshot()));
            }
        }
        out
    }

    /// Names with their counters, in first-seen order (current and removed).
    pub(crate) fn all_counters(&self) -> Vec<(String, Arc<TargetCounterSet>)> {
        self.lock().counters.clone()
    }

    /// Counts a failed look-up of `name`'s host.
    pub(crate) fn resolve_error(&self, name: &str) {
        self.lock()
            .resolve_errors
            .entry(name.to_owned())
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Failed look-ups per name.
    pub fn resolve_errors(&self) -> Vec<(String, u64)> {
        let state = self.lock();
        let mut v: Vec<(String, u64)> = state
            .resolve_errors
            .iter()
            .map(|(n, c)| (n.clone(), c.load(Ordering::Relaxed)))
            .collect();
        v.sort();
        v
    }

    /// Stops accepting changes, unpublishes every target (workers must have stopped), sets every
    /// drain deadline to `deadline` and joins every sender.
    pub(crate) fn shutdown(&self, deadline: Instant) {
        let old = {
            let mut state = self.lock();
            state.stopping = true;
            state.observers.clear();
            self.sync_kernel(&mut state);
            self.table.swap(Arc::new(TargetTable {
                generation: state.generation + 1,
                targets: Box::new([]),
                observers: Box::new([]),
                allow: None,
                kernel: state.fastpath.as_ref().map(|f| Arc::clone(f.book())),
            }))
        };
        for t in old.targets.iter() {
            let _ = t.core.drain_deadline.set(deadline);
        }
        drop(old);
        let senders = std::mem::take(&mut self.lock().senders);
        for h in senders {
            if h.join().is_err() {
                tracing::error!("a target sender panicked");
            }
        }
    }

    /// Publishes `observer` beside the targets: workers copy every received datagram into it from
    /// their next batch on. Refused once stopping.
    pub(crate) fn add_observer(
        &self,
        observer: Arc<super::observe::Observer>,
    ) -> Result<(), ChangeError> {
        let mut state = self.lock();
        if state.stopping {
            return Err(ChangeError::Stopping);
        }
        state.observers.push(observer);
        self.republish(&mut state);
        Ok(())
    }

    /// Adds a previous instance's final counters (a takeover) to the counters of the same names, so
    /// totals stay continuous; names not in the set are kept as removed targets.
    pub(crate) fn carry(&self, targets: &[(String, TargetSnapshot)]) {
        let mut state = self.lock();
        for (name, snap) in targets {
            let set = self.counters_for(&state, name);
            set.worker(0).add_snapshot(snap);
            if !state.counters.iter().any(|(n, _)| n == name) {
                keep_counters(&mut state, name.clone(), set);
            }
        }
    }

    /// Publishes the senders to forward for (`None`: everyone), from the next batch on.
    pub(crate) fn set_allow(&self, allow: Option<crate::net::allow::AllowList>) {
        let mut state = self.lock();
        if state.allow.as_deref() == allow.as_ref() {
            return;
        }
        state.allow = allow.map(Arc::new);
        if !state.stopping {
            self.republish(&mut state);
        }
    }

    /// Unpublishes `observer`; workers stop copying into it once they load the next table.
    pub(crate) fn remove_observer(&self, observer: &Arc<super::observe::Observer>) {
        let mut state = self.lock();
        let before = state.observers.len();
        state.observers.retain(|o| !Arc::ptr_eq(o, observer));
        if state.observers.len() != before && !state.stopping {
            self.republish(&mut state);
        }
    }

    /// The same targets with the current observers (no target change, same generation).
    fn republish(&self, state: &mut RegistryState) {
        let old = self.table.load_full();
        self.table.store(Arc::new(TargetTable {
            generation: old.generation,
            targets: old.targets.clone(),
            observers: state.observers.clone().into(),
            allow: state.allow.clone(),
            kernel: state.fastpath.as_ref().map(|f| Arc::clone(f.book())),
        }));
        self.sync_kernel(state);
    }

    /// Hands the target set to the kernel fast path from now on. `seed`: the generations of the
    /// instance these sockets came from, whose marks may still be queued in them.
    pub(crate) fn set_fastpath(
        &self,
        fastpath: Arc<crate::fastpath::FastPath>,
        seed: &[crate::fastpath::BookRecord],
    ) {
        let mut state = self.lock();
        let slots = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| state.counters.iter().find(|(c, _)| c == n))
                .filter_map(|(_, set)| set.slot())
                .fold(0u64, |m, s| m | 1 << s)
        };
        let entries: Vec<(u32, u64, u64)> = seed
            .iter()
            .map(|r| (r.generation, slots(&r.v4), slots(&r.v6)))
            .collect();
        fastpath.seed(&entries);
        state.fastpath = Some(fastpath);
        self.republish(&mut state);
    }

    /// Around a hand-over: `true` stops every kernel copy (user space serves every target, until
    /// the sockets are gone) and returns the book by name; `false` (the new instance did not
    /// start) resumes.
    pub(crate) fn kernel_handover(&self, handing: bool) -> Vec<crate::fastpath::BookRecord> {
        let mut state = self.lock();
        state.handed_over = handing;
        self.sync_kernel(&mut state);
        let Some(fp) = &state.fastpath else {
            return Vec::new();
        };
        let names = |mask: u64| -> Vec<String> {
            state
                .counters
                .iter()
                .filter(|(_, set)| set.slot_bit() & mask != 0)
                .map(|(n, _)| n.clone())
                .collect()
        };
        fp.book()
            .entries()
            .into_iter()
            .map(|(generation, v4, v6)| crate::fastpath::BookRecord {
                generation,
                v4: names(v4),
                v6: names(v6),
            })
            .collect()
    }

    /// Tells the kernel path what the published table asks of it: each eligible target (up to
    /// [`MAX_KERNEL_TARGETS`](crate::fastpath::MAX_KERNEL_TARGETS)) is served there, and the
    /// original goes up to user space while anything else needs it. Once stopping, nothing.
    fn sync_kernel(&self, state: &mut RegistryState) {
        use crate::fastpath::{KernelTarget, LocalAddrs, MAX_KERNEL_TARGETS, Plan, ineligible};
        let Some(fastpath) = state.fastpath.clone() else {
            return;
        };
        let table = self.table.load_full();
        let mut plan = Plan::default();
        let mut user: Vec<(String, &'static str)> = Vec::new();
        if state.stopping || state.handed_over || state.marks.lost {
            plan.pass_v4 = true;
            plan.pass_v6 = true;
        } else {
            let local = LocalAddrs::read();
            let mut ipv4_ready = None;
            for t in table.targets.iter() {
                let why = if state.allow.is_some() {
                    Some("--allow is set")
                } else {
                    ineligible(&t.spec, t.via_sender, self.settings.listen, &local)
                };
                let why = why.or_else(|| {
                    let v4 = t.spec.resolved.is_ipv4();
                    (v4 && !*ipv4_ready.get_or_insert_with(|| fastpath.ipv4_ready()))
                        .then_some("lo's route_localnet and accept_local cannot be set")
                });
                let why = why.or_else(|| {
                    if t.core.counters.slot().is_none() {
                        Some("more names than the kernel path counts")
                    } else if plan.targets.len() >= MAX_KERNEL_TARGETS {
                        Some("more eligible targets than the kernel path serves")
                    } else {
                        None
                    }
                });
                match (why, t.core.counters.slot()) {
                    (None, Some(slot)) => plan.targets.push(KernelTarget {
                        name: t.spec.name.clone(),
                        slot,
                        addr: t.spec.resolved,
                        home: local.home_of(t.spec.resolved.ip()),
                    }),
                    (why, _) => user.push((t.spec.name.clone(), why.unwrap_or("no slot"))),
                }
            }
            let observed = !state.observers.is_empty();
            let served = |v4: bool| {
                plan.targets
                    .iter()
                    .filter(|k| k.addr.is_ipv4() == v4)
                    .count()
            };
            plan.pass_v4 = observed || served(true) < table.targets.len();
            plan.pass_v6 = observed || served(false) < table.targets.len();
        }
        if plan == state.plan {
            return;
        }
        let before: Vec<String> = state.plan.targets.iter().map(|k| k.name.clone()).collect();
        match fastpath.publish(&plan) {
            Ok(()) => {
                for k in plan.targets.iter().filter(|k| !before.contains(&k.name)) {
                    tracing::info!(target = %k.name, addr = %k.addr, "served by the kernel fast path");
                }
                for (name, why) in user.iter().filter(|(n, _)| before.contains(n)) {
                    tracing::info!(target = %name, reason = why, "served from user space");
                }
                state.plan = plan;
            }
            Err(_) => state.plan = Plan::default(),
        }
    }

    /// Has the kernel path pass every datagram up (user space serves every target), for good.
    pub(crate) fn kernel_pass_all(&self) {
        let mut state = self.lock();
        state.stopping = true;
        self.sync_kernel(&mut state);
    }

    /// Takes the kernel path out, after keeping its last counts: dropping it detaches the program.
    pub(crate) fn take_fastpath(&self) -> Option<Arc<crate::fastpath::FastPath>> {
        let mut state = self.lock();
        self.fold_kernel(&state);
        state.plan = crate::fastpath::Plan::default();
        state.last_kernel = state.fastpath.as_ref().map(|f| f.snapshot());
        state.fastpath.take()
    }

    /// The workers whose receipts [`check_marks`](Self::check_marks) compares.
    pub(crate) fn watch_marks(&self, workers: Vec<Arc<crate::metrics::counters::WorkerCounters>>) {
        self.lock().marks.workers = workers;
    }

    /// Once a second (the watch thread): if, since the last look, the program passed at least
    /// 5,000 originals up marked and the workers received at least half as many datagrams, yet
    /// under a quarter of those carried a handled mark, something between TC ingress and the
    /// socket rewrites packet marks and user space is copying again what the kernel copied: the
    /// kernel path is turned off (every target served from user space), with an error in the log.
    pub(crate) fn check_marks(&self) {
        let mut state = self.lock();
        let Some(fp) = state.fastpath.clone() else {
            return;
        };
        if state.marks.lost || state.handed_over || state.stopping {
            return;
        }
        let k = fp.snapshot();
        let passed_up = k.handled.saturating_sub(k.consumed);
        let (received, marked) = state.marks.workers.iter().fold((0, 0), |(r, m), w| {
            let s = w.snapshot();
            (r + s.received, m + s.kernel_marked)
        });
        let (p0, r0, m0) = std::mem::replace(&mut state.marks.last, (passed_up, received, marked));
        let (dp, dr, dm) = (
            passed_up.saturating_sub(p0),
            received.saturating_sub(r0),
            marked.saturating_sub(m0),
        );
        if dp >= 5_000 && dr * 2 >= dp && dm * 4 < dr.min(dp) {
            state.marks.lost = true;
            tracing::error!(
                passed_up_marked = dp,
                received = dr,
                marked = dm,
                "the kernel fast path's packet marks do not reach udptee's socket (a firewall rule rewriting marks?): its targets were being copied twice; the kernel path is off, every target is served from user space (docs/operations.md, Privileges)"
            );
            self.sync_kernel(&mut state);
        }
    }

    /// `kernel` or `user`: which path serves `name` now.
    pub fn path_of(&self, name: &str) -> &'static str {
        if self.lock().plan.targets.iter().any(|k| k.name == name) {
            "kernel"
        } else {
            "user"
        }
    }

    /// The kernel path, when it is loaded (tests run its program on made-up packets).
    #[doc(hidden)]
    pub fn fastpath(&self) -> Option<Arc<crate::fastpath::FastPath>> {
        self.lock().fastpath.clone()
    }

    /// The kernel path's own counters, when it is loaded.
    pub fn kernel_snapshot(&self) -> Option<crate::metrics::kernel::KernelSnapshot> {
        let state = self.lock();
        let mut k = match &state.fastpath {
            Some(fp) => Some(fp.snapshot()),
            None => state.last_kernel.clone(),
        }?;
        if state.marks.lost {
            k.off = Some("marks_lost");
        }
        Some(k)
    }

    /// Reads the kernel path's per-target counters into each name's counters.
    fn fold_kernel(&self, state: &RegistryState) {
        let Some(fp) = &state.fastpath else {
            return;
        };
        let counts = fp.target_counts(state.counters.len());
        for ((_, set), k) in state.counters.iter().zip(counts) {
            if k != Default::default() {
                set.set_kernel(k);
            }
        }
    }

    /// Ready when every current target's sender runs.
    pub(crate) fn not_running(&self) -> Vec<String> {
        self.table
            .load()
            .targets
            .iter()
            .filter(|t| !t.core.sender_alive.load(Ordering::Relaxed))
            .map(|t| t.spec.name.clone())
            .collect()
    }
}

/// Keeps `name`'s counters for good, giving the name its row in the kernel path's counters.
fn keep_counters(state: &mut RegistryState, name: String, set: Arc<TargetCounterSet>) {
    if let Ok(slot) = u8::try_from(state.counters.len()) {
        if usize::from(slot) < crate::fastpath::MAX_SLOTS {
            set.set_slot(slot);
        }
    }
    state.counters.push((name, set));
}

/// `udptee-tx:NAME`, cut to the kernel's 15 bytes.
fn sender_thread_name(name: &str) -> String {
    let mut n = format!("udptee-tx:{name}");
    while n.len() > 15 {
        n.pop();
    }
    n
}
