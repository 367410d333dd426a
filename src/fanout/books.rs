//! The registry's books: every target name's counters, in first-seen order, kept across its
//! incarnations (an address change, a re-add) and after its removal, and the failed look-ups of its
//! host. A name's place in the order is its row in the kernel path's counters. Not on the hot path.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fastpath::MAX_SLOTS;
use crate::metrics::counters::{TargetCounterSet, TargetSnapshot};

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Books {
    /// Counters by name, in first-seen order; kept after removal (reported until restart).
    names: Vec<(String, Arc<TargetCounterSet>)>,
    /// Failed look-ups per name (`--resolve-interval`).
    resolve_errors: HashMap<String, Arc<AtomicU64>>,
}

impl Books {
    /// Every name with its counters, in first-seen order.
    pub(crate) fn all(&self) -> &[(String, Arc<TargetCounterSet>)] {
        &self.names
    }

    /// Whether `name` has counters kept.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.names.iter().any(|(n, _)| n == name)
    }

    /// The counters kept for `name`, or a new set for `workers` writers; a new one is kept (by the
    /// caller, with [`keep`](Self::keep)) only once the change that made it is published, so a
    /// refused change leaves no name behind.
    pub(crate) fn counters_for(&self, name: &str, workers: usize) -> Arc<TargetCounterSet> {
        self.names.iter().find(|(n, _)| n == name).map_or_else(
            || Arc::new(TargetCounterSet::new(workers)),
            |(_, c)| Arc::clone(c),
        )
    }

    /// Keeps `name`'s counters for good, giving the name its row in the kernel path's counters.
    pub(crate) fn keep(&mut self, name: String, set: Arc<TargetCounterSet>) {
        if let Ok(slot) = u8::try_from(self.names.len()) {
            if usize::from(slot) < MAX_SLOTS {
                set.set_slot(slot);
            }
        }
        self.names.push((name, set));
    }

    /// Adds a previous instance's final counters to those of the same names; names not kept yet
    /// are kept (as removed targets, until they join).
    pub(crate) fn carry(&mut self, targets: &[(String, TargetSnapshot)], workers: usize) {
        for (name, snap) in targets {
            let set = self.counters_for(name, workers);
            set.worker(0).add_snapshot(snap);
            if !self.has(name) {
                self.keep(name.clone(), set);
            }
        }
    }

    /// Counts a failed look-up of `name`'s host.
    pub(crate) fn resolve_error(&mut self, name: &str) {
        self.resolve_errors
            .entry(name.to_owned())
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Failed look-ups per name, sorted.
    pub(crate) fn resolve_errors(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .resolve_errors
            .iter()
            .map(|(n, c)| (n.clone(), c.load(Ordering::Relaxed)))
            .collect();
        v.sort();
        v
    }
}
