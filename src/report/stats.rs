//! [`Stats`]: the one report every reader shares — the stats line, `/metrics`, `/status.json`, the
//! status page and SIGUSR1 — the data path's view plus the recorder, the taps and the top talkers. Nothing here is
//! on the hot path.

use std::ops::Deref;
use std::sync::Arc;

use crate::fanout::DataView;
use crate::metrics::reloads::ReloadCounters;
use crate::record::Recorder;
use crate::tap::Taps;
use crate::top::Top;

/// See the module docs. Dereferences to the data path's [`DataView`] (counters, latency, readiness).
#[derive(Debug)]
pub struct Stats {
    data: DataView,
    recorder: Arc<Recorder>,
    taps: Arc<Taps>,
    top: Top,
    reloads: Arc<ReloadCounters>,
}

impl Stats {
    /// The report over `data`, with the recorder and the live taps beside it.
    pub fn new(
        data: DataView,
        recorder: Arc<Recorder>,
        taps: Arc<Taps>,
        top: Top,
        reloads: Arc<ReloadCounters>,
    ) -> Self {
        Self {
            data,
            recorder,
            taps,
            top,
            reloads,
        }
    }

    /// The recorder (`--record`, `POST /record/start`).
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Reloads so far, applied and refused.
    pub fn reloads(&self) -> &ReloadCounters {
        &self.reloads
    }

    /// The live taps (`GET /tap`).
    pub fn taps(&self) -> &Arc<Taps> {
        &self.taps
    }

    /// The top talkers' sampler (`GET /top`).
    pub fn top(&self) -> &Top {
        &self.top
    }
}

impl Deref for Stats {
    type Target = DataView;

    fn deref(&self) -> &DataView {
        &self.data
    }
}
