//! The target registry: the one owner of the target set. It builds an immutable [`TargetTable`]
//! and publishes it with `arc-swap`; each worker loads it once per batch (one pointer comparison
//! when nothing changed), so nothing is looked up or locked per datagram. A change is built whole
//! before it is published (new targets' sockets, backlogs and senders first), so a failure changes
//! nothing, and a change that changes nothing publishes nothing. Unchanged targets are carried over
//! as the same `Arc`. A removed target is absent from the next table; once no worker holds it, its
//! `ProducerGuard` closes its backlog and its sender drains the rest, bounded by the drain deadline,
//! then exits. Counters belong to the target *name* (`books`): they survive an address change and
//! a re-add, and stay reported for a while after removal. Not on the hot path, except the table.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::books::Books;
pub(crate) use super::change::SenderSettings;
pub use super::change::{Change, ChangeError};
use super::incarnation::{self, Started};
use super::kernel::{Asks, KernelPath};
pub(crate) use super::parity::PARITY_INTERVAL;
use super::parity::ParityWindow;
pub use super::target::TargetTable;
pub(crate) use super::target::{ProducerGuard, TargetEntry};
use super::threads::Threads;
use crate::config::{ConfigError, TargetSpec, validate_targets};
use crate::metrics::counters::{TargetCounterSet, TargetSnapshot};

struct RegistryState {
    generation: u64,
    /// Counters and failed look-ups by name, kept after removal.
    books: Books,
    /// Sender threads of every incarnation not yet joined.
    senders: Vec<JoinHandle<()>>,
    next_cpu: usize,
    stopping: bool,
    /// Published with every table.
    observers: Vec<Arc<super::observe::Observer>>,
    /// Published with every table.
    allow: Option<Arc<crate::net::allow::AllowList>>,
    /// The kernel fast path and what it serves.
    kernel: KernelPath,
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
                books: Books::default(),
                senders: Vec::new(),
                next_cpu: 0,
                stopping: false,
                observers: Vec::new(),
                allow: None,
                kernel: KernelPath::default(),
            }),
            settings,
            threads,
            watcher: OnceLock::new(),
            parity: Mutex::new(ParityWindow::new()),
        }
    }

    /// Closes the parity window when [`PARITY_INTERVAL`] has passed, keeping what happened in it.
    pub(crate) fn rotate_parity(&self) {
        let mut w = self.parity.lock().unwrap_or_else(|p| p.into_inner());
        if w.due() {
            w.rotate(self.snapshots());
        }
    }

    /// The last complete parity window: its length and what happened in it, per target.
    pub fn last_parity_window(&self) -> Option<(Duration, Vec<(String, TargetSnapshot)>)> {
        self.parity.lock().unwrap_or_else(|p| p.into_inner()).last()
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
        validate_targets(&self.settings.own, &specs, self.settings.max_targets)?;
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
                    let (core, producers) = (Arc::clone(&p.core), Arc::clone(&p.producers));
                    Arc::new(TargetEntry::new(core, producers, spec, self.settings.batch))
                }
                _ => {
                    if prev.is_some() {
                        change.replaced.push(spec.name.clone());
                    } else {
                        change.added.push(spec.name.clone());
                    }
                    let previous = prev.and_then(|p| p.core.group.clone());
                    let first = super::link::open_first(prev.map(|p| &*p.core), &spec)?;
                    match self.start_core(state, &spec, previous.as_deref()) {
                        Ok(Started { core, handles }) => {
                            super::link::hand_over(&core, first);
                            started.extend(handles);
                            let producers = Arc::new(ProducerGuard(Arc::clone(&core)));
                            let batch = self.settings.batch;
                            Arc::new(TargetEntry::new(core, producers, spec, batch))
                        }
                        // Dropping what was built closes the new cores; their senders exit at once.
                        Err(e) => return Err(e),
                    }
                }
            };
            built.push(entry);
        }
        // Nothing changed (a reload of the same file): nothing to publish, the generation stays.
        if old.holds_exactly(&built) {
            change.generation = state.generation;
            return Ok(change);
        }
        // Line filters compile now; a bad one refuses the whole change before anything is published.
        let filters = built
            .iter()
            .map(|b| b.compile_lines(self.settings.max_datagram))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        for (b, f) in built.iter().zip(filters) {
            b.install(f);
        }
        for p in old.targets.iter() {
            let kept = built.iter().any(|b| Arc::ptr_eq(&b.core, &p.core));
            if !kept {
                p.core.retire(Instant::now() + self.settings.drain_timeout);
                if !built.iter().any(|b| b.spec.name == p.spec.name) {
                    change.removed.push(p.spec.name.clone());
                }
            }
        }
        state.senders.extend(started);
        let set = built
            .iter()
            .map(|t| (t.spec.name.as_str(), &t.core.counters));
        state.books.published(set, Instant::now());
        state.senders.retain(|h| !h.is_finished());
        state.generation += 1;
        change.generation = state.generation;
        self.table.store(Arc::new(TargetTable {
            generation: state.generation,
            targets: built.into(),
            observers: state.observers.clone().into(),
            allow: state.allow.clone(),
            kernel: state.kernel.book(),
        }));
        self.sync_kernel(state);
        if !change.added.is_empty() || !change.replaced.is_empty() {
            if let Some(w) = self.watcher.get() {
                w.unpark();
            }
        }
        Ok(change)
    }

    /// Starts one incarnation of `spec` (socket, backlog, sender), with the counters kept for its
    /// name and the next sender CPU.
    fn start_core(
        &self,
        state: &mut RegistryState,
        spec: &TargetSpec,
        previous: Option<&super::target::Group>,
    ) -> Result<Started, ChangeError> {
        let books = state.books.counters_for(&spec.name, self.settings.workers);
        let cpus = &self.settings.sender_cpus;
        let next = &mut state.next_cpu;
        let cpu = || {
            *next += 1;
            (!cpus.is_empty()).then(|| cpus[(*next - 1) % cpus.len()])
        };
        incarnation::start(spec, books, &self.settings, &self.threads, cpu, previous)
    }

    /// Every target's counters: the current set in table order, then removed names.
    pub fn snapshots(&self) -> Vec<(String, TargetSnapshot)> {
        let mut state = self.lock();
        let table = self.table.load_full();
        state.kernel.fold(state.books.all());
        // Removed names past their time go now (their drains end while nothing changes).
        state.books.published(table.counters(), Instant::now());
        let mut out: Vec<(String, TargetSnapshot)> = table
            .targets
            .iter()
            .map(|t| (t.spec.name.clone(), t.core.counters.snapshot()))
            .collect();
        for (name, c) in state.books.all() {
            if !table.targets.iter().any(|t| &t.spec.name == name) {
                out.push((name.clone(), c.snapshot()));
            }
        }
        out
    }

    /// Names with their counters, in first-seen order (current and removed).
    pub(crate) fn all_counters(&self) -> Vec<(String, Arc<TargetCounterSet>)> {
        self.lock().books.all().to_vec()
    }

    /// Counts a failed look-up of `name`'s host.
    pub(crate) fn resolve_error(&self, name: &str) {
        self.lock().books.resolve_error(name);
    }

    /// Failed look-ups per name.
    pub fn resolve_errors(&self) -> Vec<(String, u64)> {
        self.lock().books.resolve_errors()
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
                kernel: state.kernel.book(),
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
        self.lock().books.carry(targets, self.settings.workers);
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
            kernel: state.kernel.book(),
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
        let state = &mut *state;
        state.kernel.set(fastpath, seed, state.books.all());
        self.republish(state);
    }

    /// Around a hand-over: `true` stops every kernel copy (user space serves every target, until
    /// the sockets are gone) and returns the book by name; `false` (the new instance did not
    /// start) resumes.
    pub(crate) fn kernel_handover(&self, handing: bool) -> Vec<crate::fastpath::BookRecord> {
        let mut state = self.lock();
        state.kernel.set_handed_over(handing);
        self.sync_kernel(&mut state);
        state.kernel.records(state.books.all())
    }

    /// Tells the kernel path what the published table asks of it (see [`KernelPath::sync`]).
    fn sync_kernel(&self, state: &mut RegistryState) {
        let table = self.table.load_full();
        let asks = Asks {
            listen: self.settings.listen,
            stopping: state.stopping,
            allow: state.allow.is_some(),
            observed: !state.observers.is_empty(),
        };
        state.kernel.sync(&table, asks);
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
        let state = &mut *state;
        state.kernel.take(state.books.all())
    }

    /// The workers whose receipts [`check_marks`](Self::check_marks) compares.
    pub(crate) fn watch_marks(&self, workers: Vec<Arc<crate::metrics::counters::WorkerCounters>>) {
        self.lock().kernel.watch_marks(workers);
    }

    /// Once a second (the watch thread): turns the kernel path off when its marks do not reach
    /// the workers (see [`KernelPath::check_marks`]).
    pub(crate) fn check_marks(&self) {
        let mut state = self.lock();
        let stopping = state.stopping;
        if state.kernel.check_marks(stopping) {
            self.sync_kernel(&mut state);
        }
    }

    /// `kernel` or `user`: which path serves `name` now.
    pub fn path_of(&self, name: &str) -> &'static str {
        self.lock().kernel.path_of(name)
    }

    /// The kernel path, when it is loaded (tests run its program on made-up packets).
    #[doc(hidden)]
    pub fn fastpath(&self) -> Option<Arc<crate::fastpath::FastPath>> {
        self.lock().kernel.fastpath()
    }

    /// The kernel path's own counters, when it is loaded.
    pub fn kernel_snapshot(&self) -> Option<crate::metrics::kernel::KernelSnapshot> {
        self.lock().kernel.snapshot()
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
