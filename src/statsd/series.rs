//! A target's series budget (`max-series`): the distinct series (name, type and tag set, tags
//! in any order) it has seen in a sliding window, kept as 64-bit hashes in two fixed-size sets,
//! the current half window and the one before. A series seen in either counts; at each half
//! window the older set is dropped, so a series is remembered between one half and a whole
//! window after it was last seen. Memory is fixed by the budget: two open-addressing tables of
//! at least twice the budget in 8-byte slots (32 to 64 bytes a series), written through when the
//! budget is made and counted in the start-up memory check. Two series merge only if
//! their 64-bit hashes collide: with a budget of N, about N²/2^65 (3 in 10^10 at 100,000).
//! Floor 1; hot for a target with a budget (one lookup per line).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::xxh3_64;

use super::{Line, What};

/// The hash of a line's series: its name, its type, and its tags as a set (their order and
/// repeats do not change it). Events and service checks are their own kinds.
pub fn series_of(line: &Line<'_>) -> u64 {
    let kind: u64 = match line.what {
        What::Metric { kind, .. } => kind as u64 + 1,
        What::Event { .. } => 100,
        What::ServiceCheck { .. } => 101,
    };
    let mut tags = 0u64;
    for t in line.tag_iter() {
        // A commutative mix: the set, whatever the order.
        tags = tags.wrapping_add(xxh3_64(t).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    }
    let h = xxh3_64(line.name()) ^ kind.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ tags.rotate_left(17);
    h.min(EMPTY - 1)
}

/// An empty slot. Not 0: a table filled with it is written through at creation, so every page is
/// resident before the first line (as the pool and the rings are), not faulted in on the hot path.
const EMPTY: u64 = u64::MAX;

/// One half window's set of series hashes.
#[derive(Debug)]
struct Set {
    slots: Box<[u64]>,
    len: usize,
}

impl Set {
    fn new(slots: usize) -> Self {
        Self {
            slots: vec![EMPTY; slots].into_boxed_slice(),
            len: 0,
        }
    }

    fn find(&self, h: u64) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = (h as usize) & mask;
        loop {
            match self.slots[i] {
                EMPTY => return Err(i),
                x if x == h => return Ok(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn contains(&self, h: u64) -> bool {
        self.find(h).is_ok()
    }

    fn insert(&mut self, h: u64) {
        if let Err(i) = self.find(h) {
            self.slots[i] = h;
            self.len += 1;
        }
    }

    fn clear(&mut self) {
        self.slots.fill(EMPTY);
        self.len = 0;
    }
}

/// Series by name, for the report: the names with the most series in the current half window.
/// Most names a budget counts series for in a half window: a name cardinality explosion (a
/// request id in the name) counts the rest under [`OTHER_NAMES`], so this table stays bounded
/// (about 250 KiB) whatever the traffic.
pub const MAX_NAMES: usize = 1024;
/// Longest name kept for the report, in bytes.
pub const NAME_MAX: usize = 160;
/// The report's name for the series of the names over [`MAX_NAMES`].
pub const OTHER_NAMES: &str = "(other names)";

/// New series per name in the current half window.
#[derive(Debug, Default)]
struct Names {
    counted: HashMap<u64, (String, u64)>,
    other: u64,
}

impl Names {
    fn count(&mut self, name: &[u8]) {
        let key = xxh3_64(name);
        let full = self.counted.len() >= MAX_NAMES;
        match self.counted.entry(key) {
            Entry::Occupied(e) => e.into_mut().1 += 1,
            Entry::Vacant(_) if full => self.other += 1,
            Entry::Vacant(e) => {
                e.insert((super::label(name, NAME_MAX), 1));
            }
        }
    }

    fn clear(&mut self) {
        self.counted.clear();
        self.other = 0;
    }
}

/// A target's series budget.
#[derive(Debug)]
pub struct SeriesBudget {
    budget: u64,
    half: Duration,
    current: Set,
    previous: Set,
    /// Series in `previous` not (yet) seen again in `current`.
    previous_only: u64,
    turns_at: Instant,
    names: Names,
}

/// What a budget says of its window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeriesReport {
    /// Distinct series counted against the budget now.
    pub seen: u64,
    /// The budget.
    pub budget: u64,
    /// The names with the most series in the current half window, most first, with that count.
    pub top_names: Vec<(String, u64)>,
}

impl SeriesBudget {
    /// A budget of `budget` series over `window`, its first half starting now.
    pub fn new(budget: u64, window: Duration) -> Self {
        Self::starting(budget, window, Instant::now())
    }

    /// A budget whose first half window starts at `start`.
    fn starting(budget: u64, window: Duration, start: Instant) -> Self {
        let slots = crate::config::lines::series_slots(budget);
        Self {
            budget,
            half: window / 2,
            current: Set::new(slots),
            previous: Set::new(slots),
            previous_only: 0,
            turns_at: start + window / 2,
            names: Names::default(),
        }
    }

    /// Distinct series counted now.
    pub fn seen(&self) -> u64 {
        self.current.len as u64 + self.previous_only
    }

    /// Whether a line of series `h` (named `name`) is within the budget at `now`: a series
    /// already counted always is; a new one while there is room, which it then takes.
    pub fn admit(&mut self, h: u64, name: &[u8], now: Instant) -> bool {
        while now >= self.turns_at {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
            self.previous_only = self.previous.len as u64;
            self.turns_at += self.half;
            self.names.clear();
        }
        if self.current.contains(h) {
            return true;
        }
        if self.previous.contains(h) {
            self.previous_only -= 1;
        } else if self.seen() >= self.budget {
            return false;
        }
        self.current.insert(h);
        self.names.count(name);
        true
    }

    /// The window as it stands, with the `n` names with the most series.
    pub fn report(&self, n: usize) -> SeriesReport {
        let mut top: Vec<(String, u64)> = self.names.counted.values().cloned().collect();
        if self.names.other > 0 {
            top.push((OTHER_NAMES.to_owned(), self.names.other));
        }
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(n);
        SeriesReport {
            seen: self.seen(),
            budget: self.budget,
            top_names: top,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::parse;

    fn h(line: &str) -> u64 {
        series_of(&parse(line.as_bytes()).unwrap())
    }

    #[test]
    fn a_series_is_its_name_type_and_tag_set() {
        assert_eq!(
            h("a:1|c|#x:1,y:2"),
            h("a:5|c|@0.5|#y:2,x:1"),
            "tags in any order, value and rate aside"
        );
        assert_ne!(h("a:1|c|#x:1"), h("a:1|g|#x:1"), "the type counts");
        assert_ne!(h("a:1|c|#x:1"), h("a:1|c|#x:2"));
        assert_ne!(h("a:1|c"), h("b:1|c"));
        assert_ne!(h("a:1|c|#x:1,y:2"), h("a:1|c|#x:1"));
    }

    #[test]
    fn the_budget_holds_and_a_window_later_there_is_room_again() {
        let t0 = Instant::now();
        let mut b = SeriesBudget::starting(100, Duration::from_secs(10), t0);
        let admitted = (0..500u64).filter(|i| b.admit(i + 1, b"m", t0)).count();
        assert_eq!(admitted, 100);
        assert!(b.admit(5, b"m", t0), "one counted is always admitted");
        assert_eq!(b.seen(), 100);
        // Half a window on: the first 100 are remembered, so still no room for new ones.
        let t1 = t0 + Duration::from_secs(5);
        assert!(!b.admit(1000, b"m", t1));
        assert!(
            b.admit(7, b"m", t1),
            "seen again: moved to the current half"
        );
        // A whole window on without them: forgotten, except the one seen again.
        let t2 = t0 + Duration::from_secs(10);
        assert_eq!(b.seen(), 100);
        assert!(b.admit(2000, b"m", t2));
        assert_eq!(b.seen(), 2, "series 7 and the new one");
        assert_eq!(b.report(5).top_names, vec![("m".to_owned(), 1)]);
    }

    #[test]
    fn the_names_table_is_bounded_whatever_the_names() {
        let t0 = Instant::now();
        let mut b = SeriesBudget::starting(10_000, Duration::from_secs(10), t0);
        for i in 0..5000u64 {
            assert!(b.admit(i + 1, format!("req.{i}.latency").as_bytes(), t0));
        }
        assert!(b.admit(9999, "x".repeat(1000).as_bytes(), t0));
        assert_eq!(b.names.counted.len(), MAX_NAMES);
        let top = b.report(1).top_names;
        assert_eq!(top, vec![(OTHER_NAMES.to_owned(), 5001 - MAX_NAMES as u64)]);
        let mut b = SeriesBudget::starting(10, Duration::from_secs(10), t0);
        assert!(b.admit(1, "é".repeat(200).as_bytes(), t0));
        let name = &b.report(1).top_names[0].0;
        assert!(name.len() <= NAME_MAX + '…'.len_utf8() && name.ends_with('…'));
    }
}
