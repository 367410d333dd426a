//! [`Stats`]: the one report every reader shares — the stats line, `/metrics`, `/status.json`, the
//! status page and SIGUSR1 — the data path's view plus the recorder and the taps. Nothing here is
//! on the hot path.

use std::ops::Deref;
use std::sync::Arc;

use crate::fanout::DataView;
use crate::record::Recorder;
use crate::tap::Taps;

/// See the module docs. Dereferences to the data path's [`DataView`] (counters, latency, readiness).
#[derive(Debug)]
pub struct Stats {
    data: DataView,
    recorder: Arc<Recorder>,
    taps: Arc<Taps>,
}

impl Stats {
    /// The report over `data`, with the recorder and the live taps beside it.
    pub fn new(data: DataView, recorder: Arc<Recorder>, taps: Arc<Taps>) -> Self {
        Self {
            data,
            recorder,
            taps,
        }
    }

    /// The recorder (`--record`, `POST /record/start`).
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// The live taps (`GET /tap`).
    pub fn taps(&self) -> &Arc<Taps> {
        &self.taps
    }
}

impl Deref for Stats {
    type Target = DataView;

    fn deref(&self) -> &DataView {
        &self.data
    }
}
