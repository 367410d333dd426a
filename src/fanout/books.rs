//! The registry's books: every target name's counters, in first-seen order, kept across its
//! incarnations (an address change, a re-add) and for a while after its removal, and the failed
//! look-ups of its host. The first [`MAX_SLOTS`] names get a row in the kernel path's counters,
//! for good. Not on the hot path.
//!
//! A removed name is remembered (reported as `removed`, with its counters) for [`REMEMBER_FOR`],
//! and at most [`REMEMBER_REMOVED`] removed names at once, the oldest going first; a name is never
//! forgotten while copies of it are still queued. A forgotten name's counters are added to one row,
//! [`FORGOTTEN`], so every total still adds up, and what it held (a counter set with a latency
//! histogram per worker, ~100 KiB each) is freed. Canary names that come and go do not grow memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::fastpath::MAX_SLOTS;
use crate::metrics::counters::{TargetCounterSet, TargetSnapshot};

/// Most removed names remembered at once.
pub(crate) const REMEMBER_REMOVED: usize = 32;
/// How long a removed name is remembered.
pub(crate) const REMEMBER_FOR: Duration = Duration::from_secs(3600);
/// The row holding the counters of every forgotten removed name (not a valid target name, so it
/// never meets one).
pub(crate) const FORGOTTEN: &str = "(removed)";

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Books {
    /// Counters by name, in first-seen order; removed ones until they are forgotten.
    names: Vec<(String, Arc<TargetCounterSet>)>,
    /// When each remembered name left the set.
    removed: HashMap<String, Instant>,
    /// The next kernel counter row to give (rows are never given twice).
    next_slot: usize,
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

    /// Keeps `name`'s counters, giving the name a row in the kernel path's counters while there
    /// are rows left.
    pub(crate) fn keep(&mut self, name: String, set: Arc<TargetCounterSet>) {
        if self.next_slot < MAX_SLOTS {
            if let Ok(slot) = u8::try_from(self.next_slot) {
                set.set_slot(slot);
                self.next_slot += 1;
            }
        }
        self.names.push((name, set));
    }

    /// After a change is published (or at a report): keeps the counters of names new in the set
    /// (`current`), notes which names left it, and forgets the removed names past their time or
    /// over the count (see the module docs), folding their counters into [`FORGOTTEN`].
    pub(crate) fn published<'a>(
        &mut self,
        current: impl Iterator<Item = (&'a str, &'a Arc<TargetCounterSet>)> + Clone,
        now: Instant,
    ) {
        for (name, set) in current.clone() {
            if !self.has(name) {
                self.keep(name.to_owned(), Arc::clone(set));
            }
        }
        for (name, _) in &self.names {
            if current.clone().any(|(c, _)| c == name) {
                self.removed.remove(name);
            } else if name != FORGOTTEN {
                self.removed.entry(name.clone()).or_insert(now);
            }
        }
        let mut old: Vec<(Instant, String)> = self
            .removed
            .iter()
            .map(|(n, at)| (*at, n.clone()))
            .collect();
        old.sort();
        let over = old.len().saturating_sub(REMEMBER_REMOVED);
        for (i, (at, name)) in old.into_iter().enumerate() {
            if i >= over && now.saturating_duration_since(at) < REMEMBER_FOR {
                break;
            }
            let Some(pos) = self.names.iter().position(|(n, _)| *n == name) else {
                self.removed.remove(&name);
                continue;
            };
            let snap = self.names[pos].1.snapshot();
            if snap.queued() > 0 {
                continue; // still draining: its books are not final yet
            }
            self.forgotten().worker(0).add_snapshot(&snap);
            self.names.remove(pos);
            self.removed.remove(&name);
            self.resolve_errors.remove(&name);
        }
    }

    /// The row of forgotten names, made when the first one is forgotten.
    fn forgotten(&mut self) -> Arc<TargetCounterSet> {
        if let Some((_, set)) = self.names.iter().find(|(n, _)| n == FORGOTTEN) {
            return Arc::clone(set);
        }
        let set = Arc::new(TargetCounterSet::new(1));
        self.names.push((FORGOTTEN.to_owned(), Arc::clone(&set)));
        set
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

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(set: &TargetCounterSet, n: u64) {
        set.worker(0).add_snapshot(&TargetSnapshot {
            offered: n,
            forwarded: n,
            ..TargetSnapshot::default()
        });
    }

    #[test]
    fn removed_names_are_forgotten_by_count_and_age_into_one_row_that_keeps_the_totals() {
        let mut books = Books::default();
        let t0 = Instant::now();
        let sets: Vec<(String, Arc<TargetCounterSet>)> = (0..40)
            .map(|i| (format!("canary-{i}"), Arc::new(TargetCounterSet::new(2))))
            .collect();
        for (i, (_, set)) in sets.iter().enumerate() {
            offered(set, i as u64 + 1);
        }
        let all = || sets.iter().map(|(n, s)| (n.as_str(), s));
        books.published(all(), t0);
        assert_eq!(books.all().len(), 40);
        // One still queues a copy: it is not forgotten until it drains.
        sets[0].1.worker(0).add_snapshot(&TargetSnapshot {
            offered: 1,
            ..TargetSnapshot::default()
        });
        // All but the last leave, one a second.
        for i in 0..39 {
            let now = t0 + Duration::from_secs(i + 1);
            books.published(all().skip(i as usize + 1), now);
        }
        let names: Vec<&str> = books.all().iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&FORGOTTEN), "{names:?}");
        assert!(names.contains(&"canary-0"), "still draining: {names:?}");
        assert!(names.contains(&"canary-39"), "current");
        assert_eq!(books.removed.len(), REMEMBER_REMOVED + 1, "{names:?}");
        let total = |b: &Books| -> (u64, u64) {
            b.all().iter().fold((0, 0), |(o, f), (_, s)| {
                let snap = s.snapshot();
                (o + snap.offered, f + snap.forwarded)
            })
        };
        let expected_forwarded: u64 = (1..=40).sum();
        assert_eq!(total(&books), (expected_forwarded + 1, expected_forwarded));
        // An hour later every drained removed name is gone; the totals stay.
        books.published(all().skip(39), t0 + REMEMBER_FOR + Duration::from_secs(60));
        let names: Vec<&str> = books.all().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["canary-0", "canary-39", FORGOTTEN]);
        assert_eq!(total(&books), (expected_forwarded + 1, expected_forwarded));
        // The first 40 names took kernel rows 0..39; a new name takes the next, never a used one.
        let late = Arc::new(TargetCounterSet::new(1));
        books.published(std::iter::once(("late", &late)), t0 + REMEMBER_FOR * 2);
        assert_eq!(late.slot(), Some(40));
    }
}
