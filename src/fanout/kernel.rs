//! The registry's kernel path: the loaded fast path (if any), what it was last told, and the check
//! that its marks reach the workers. [`KernelPath`] is a value the registry owns under its lock; it
//! decides, from each published table, which targets the kernel serves (`sync`). Not on the hot
//! path: workers only read the [`Book`](crate::fastpath::Book) the table carries.

use std::net::SocketAddr;
use std::sync::Arc;

use super::target::TargetTable;
use crate::fastpath::{
    BookRecord, FastPath, KernelTarget, LocalAddrs, MAX_KERNEL_TARGETS, MAX_SLOTS, Plan, ineligible,
};
use crate::metrics::counters::{TargetCounterSet, WorkerCounters};
use crate::metrics::kernel::KernelSnapshot;

/// Names with their counters, in first-seen order: the registry's books, whose order gives each
/// name its row in the program's counters.
pub(crate) type Books = [(String, Arc<TargetCounterSet>)];

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct KernelPath {
    /// The kernel fast path, when loaded.
    fastpath: Option<Arc<FastPath>>,
    /// What the kernel was last told, and the names it serves.
    plan: Plan,
    /// The kernel path's counters when it was taken out (for the final accounting).
    last: Option<KernelSnapshot>,
    /// The sockets were handed to a new instance: the kernel path copies nothing any more.
    handed_over: bool,
    /// The marks check (see [`KernelPath::check_marks`]).
    marks: MarkCheck,
}

/// Whether the kernel path's marks reach the workers: a firewall rewriting packet marks between TC
/// ingress and the socket would make user space copy again what the kernel copied.
#[derive(Debug, Default)]
struct MarkCheck {
    workers: Vec<Arc<WorkerCounters>>,
    /// (originals the program passed up marked, datagrams the workers received, marked ones) at
    /// the last look.
    last: (u64, u64, u64),
    /// The marks were found missing: the kernel path is off for good.
    lost: bool,
}

/// What a published table asks of the kernel path, besides its targets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asks {
    /// The listen address (targets on its port are never served by the kernel).
    pub(crate) listen: SocketAddr,
    /// No more copies in the kernel: stopping (or handing over).
    pub(crate) stopping: bool,
    /// `--allow` is set: user space must see every datagram's sender.
    pub(crate) allow: bool,
    /// A recorder or a tap reads every datagram in user space.
    pub(crate) observed: bool,
}

impl KernelPath {
    /// The book workers read, when the kernel path is loaded.
    pub(crate) fn book(&self) -> Option<Arc<crate::fastpath::Book>> {
        self.fastpath.as_ref().map(|f| Arc::clone(f.book()))
    }

    /// Takes `fastpath` in; `seed`: the generations of the instance these sockets came from, whose
    /// marks may still be queued in them. The caller publishes and syncs next.
    pub(crate) fn set(&mut self, fastpath: Arc<FastPath>, seed: &[BookRecord], books: &Books) {
        let slots = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| books.iter().find(|(c, _)| c == n))
                .filter_map(|(_, set)| set.slot())
                .fold(0u64, |m, s| m | 1 << s)
        };
        let entries: Vec<(u32, u64, u64)> = seed
            .iter()
            .map(|r| (r.generation, slots(&r.v4), slots(&r.v6)))
            .collect();
        fastpath.seed(&entries);
        self.fastpath = Some(fastpath);
    }

    /// Around a hand-over: `true` stops every kernel copy (once synced), `false` resumes.
    pub(crate) fn set_handed_over(&mut self, handing: bool) {
        self.handed_over = handing;
    }

    /// The book by name, for the instance taking over.
    pub(crate) fn records(&self, books: &Books) -> Vec<BookRecord> {
        let Some(fp) = &self.fastpath else {
            return Vec::new();
        };
        let names = |mask: u64| -> Vec<String> {
            books
                .iter()
                .filter(|(_, set)| set.slot_bit() & mask != 0)
                .map(|(n, _)| n.clone())
                .collect()
        };
        fp.book()
            .entries()
            .into_iter()
            .map(|(generation, v4, v6)| BookRecord {
                generation,
                v4: names(v4),
                v6: names(v6),
            })
            .collect()
    }

    /// Tells the kernel path what the published `table` asks of it: each eligible target (up to
    /// [`MAX_KERNEL_TARGETS`]) is served there, and the original goes up to user space while
    /// anything else needs it. Once stopping, nothing.
    pub(crate) fn sync(&mut self, table: &TargetTable, asks: Asks) {
        let Some(fastpath) = self.fastpath.clone() else {
            return;
        };
        let mut plan = Plan::default();
        let mut user: Vec<(String, &'static str)> = Vec::new();
        if asks.stopping || self.handed_over || self.marks.lost {
            plan.pass_v4 = true;
            plan.pass_v6 = true;
        } else {
            let local = LocalAddrs::read();
            let mut ipv4_ready = None;
            for t in table.targets.iter() {
                let why = if asks.allow {
                    Some("--allow is set")
                } else {
                    ineligible(&t.spec, t.via_sender, asks.listen, &local)
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
            let served = |v4: bool| {
                plan.targets
                    .iter()
                    .filter(|k| k.addr.is_ipv4() == v4)
                    .count()
            };
            plan.pass_v4 = asks.observed || served(true) < table.targets.len();
            plan.pass_v6 = asks.observed || served(false) < table.targets.len();
        }
        if plan == self.plan {
            return;
        }
        let before: Vec<String> = self.plan.targets.iter().map(|k| k.name.clone()).collect();
        match fastpath.publish(&plan) {
            Ok(()) => {
                for k in plan.targets.iter().filter(|k| !before.contains(&k.name)) {
                    tracing::info!(target = %k.name, addr = %k.addr, "served by the kernel fast path");
                }
                for (name, why) in user.iter().filter(|(n, _)| before.contains(n)) {
                    tracing::info!(target = %name, reason = why, "served from user space");
                }
                self.plan = plan;
            }
            Err(_) => self.plan = Plan::default(),
        }
    }

    /// Takes the kernel path out, after keeping its last counts: dropping it detaches the program.
    pub(crate) fn take(&mut self, books: &Books) -> Option<Arc<FastPath>> {
        self.fold(books);
        self.plan = Plan::default();
        self.last = self.fastpath.as_ref().map(|f| f.snapshot());
        self.fastpath.take()
    }

    /// The workers whose receipts [`check_marks`](Self::check_marks) compares.
    pub(crate) fn watch_marks(&mut self, workers: Vec<Arc<WorkerCounters>>) {
        self.marks.workers = workers;
    }

    /// Once a second (the watch thread): if, since the last look, the program passed at least
    /// 5,000 originals up marked and the workers received at least half as many datagrams, yet
    /// under a quarter of those carried a handled mark, something between TC ingress and the
    /// socket rewrites packet marks and user space is copying again what the kernel copied: the
    /// kernel path is turned off (every target served from user space), with an error in the log.
    /// Returns true when it was: the caller syncs.
    pub(crate) fn check_marks(&mut self, stopping: bool) -> bool {
        let Some(fp) = self.fastpath.clone() else {
            return false;
        };
        if self.marks.lost || self.handed_over || stopping {
            return false;
        }
        let k = fp.snapshot();
        let passed_up = k.handled.saturating_sub(k.consumed);
        let (received, marked) = self.marks.workers.iter().fold((0, 0), |(r, m), w| {
            let s = w.snapshot();
            (r + s.received, m + s.kernel_marked)
        });
        let (p0, r0, m0) = std::mem::replace(&mut self.marks.last, (passed_up, received, marked));
        let (dp, dr, dm) = (
            passed_up.saturating_sub(p0),
            received.saturating_sub(r0),
            marked.saturating_sub(m0),
        );
        if dp >= 5_000 && dr * 2 >= dp && dm * 4 < dr.min(dp) {
            self.marks.lost = true;
            tracing::error!(
                passed_up_marked = dp,
                received = dr,
                marked = dm,
                "the kernel fast path's packet marks do not reach udptee's socket (a firewall rule rewriting marks?): its targets were being copied twice; the kernel path is off, every target is served from user space (docs/operations.md, Privileges)"
            );
            return true;
        }
        false
    }

    /// `kernel` or `user`: which path serves `name` now.
    pub(crate) fn path_of(&self, name: &str) -> &'static str {
        if self.plan.targets.iter().any(|k| k.name == name) {
            "kernel"
        } else {
            "user"
        }
    }

    /// The loaded fast path.
    pub(crate) fn fastpath(&self) -> Option<Arc<FastPath>> {
        self.fastpath.clone()
    }

    /// The kernel path's own counters, when it is loaded (or its last ones, once taken out).
    pub(crate) fn snapshot(&self) -> Option<KernelSnapshot> {
        let mut k = match &self.fastpath {
            Some(fp) => Some(fp.snapshot()),
            None => self.last.clone(),
        }?;
        if self.marks.lost {
            k.off = Some("marks_lost");
        }
        Some(k)
    }

    /// Reads the kernel path's per-target counters into each name's counters (by its row).
    pub(crate) fn fold(&self, books: &Books) {
        let Some(fp) = &self.fastpath else {
            return;
        };
        let counts = fp.target_counts(MAX_SLOTS);
        for (_, set) in books {
            if let Some(k) = set.slot().and_then(|s| counts.get(usize::from(s))) {
                if *k != Default::default() {
                    set.set_kernel(*k);
                }
            }
        }
    }
}
