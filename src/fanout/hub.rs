//! [`ObserverHub`]: where readers of every received datagram (the recorder, live taps) plug into the
//! data path: the registry publishes their rings beside the targets, and kernel receive times are
//! turned on at the first one. Not on the hot path.

use std::sync::Arc;

use super::change::ChangeError;
use super::observe::Observer;
use super::targets::TargetRegistry;

/// See the module docs. Each reader holds its own; they share the registry and the switch.
pub struct ObserverHub {
    registry: Arc<TargetRegistry>,
    max_datagram: usize,
    enable_timestamps: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for ObserverHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserverHub")
            .field("max_datagram", &self.max_datagram)
            .finish_non_exhaustive()
    }
}

impl ObserverHub {
    pub(crate) fn new(
        registry: Arc<TargetRegistry>,
        max_datagram: usize,
        enable_timestamps: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            registry,
            max_datagram,
            enable_timestamps,
        }
    }

    /// `--max-datagram`: what a reader's line filter packs under.
    pub(crate) fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Turns kernel receive timestamps on for good (one control message per datagram from then on).
    pub(crate) fn enable_timestamps(&self) {
        (self.enable_timestamps)();
    }

    /// Publishes `observer` beside the targets: workers copy every received datagram into it from
    /// their next batch on. Refused once stopping.
    pub(crate) fn add(&self, observer: Arc<Observer>) -> Result<(), ChangeError> {
        self.registry.add_observer(observer)
    }

    /// Unpublishes `observer`; workers stop copying into it once they load the next table.
    pub(crate) fn remove(&self, observer: &Arc<Observer>) {
        self.registry.remove_observer(observer);
    }
}
