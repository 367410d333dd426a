//! The parity ledger's windows: every target's counters at the start of the current window, and
//! what happened in the last complete one, so `GET /parity` compares what each target was sent over
//! the same span. Rotated by the watch thread; not on the hot path.

use std::time::{Duration, Instant};

use crate::metrics::counters::TargetSnapshot;

/// How long one window of the parity ledger lasts.
pub(crate) const PARITY_INTERVAL: Duration = Duration::from_secs(10);

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ParityWindow {
    started: Instant,
    at_start: Vec<(String, TargetSnapshot)>,
    last: Option<(Duration, Vec<(String, TargetSnapshot)>)>,
}

impl ParityWindow {
    /// A window starting now, with none complete.
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            at_start: Vec::new(),
            last: None,
        }
    }

    /// Whether the current window has lasted [`PARITY_INTERVAL`].
    pub(crate) fn due(&self) -> bool {
        self.started.elapsed() >= PARITY_INTERVAL
    }

    /// Closes the current window with every target's counters `now`, keeping what happened in it.
    pub(crate) fn rotate(&mut self, now: Vec<(String, TargetSnapshot)>) {
        let delta = now
            .iter()
            .map(|(name, s)| {
                let before = self
                    .at_start
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, b)| b);
                (
                    name.clone(),
                    before.map_or_else(|| s.clone(), |b| s.since(b)),
                )
            })
            .collect();
        self.last = Some((self.started.elapsed(), delta));
        self.at_start = now;
        self.started = Instant::now();
    }

    /// The last complete window: its length and what happened in it, per target.
    pub(crate) fn last(&self) -> Option<(Duration, Vec<(String, TargetSnapshot)>)> {
        self.last.clone()
    }
}
