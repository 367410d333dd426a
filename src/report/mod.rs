//! Services that read the data path and say what it did: [`Stats`] (the shared report), the stats
//! line, the JSON of `/targets`, `/parity` and `/status.json`, the status page, and the Prometheus
//! rendering. They read snapshots; none of them is started by the data path, and none changes it.
//!
//! Floor 3 (services over the data path).

mod family;
pub mod json;
pub mod line;
pub mod prometheus;
mod prometheus_listeners;
mod prometheus_members;
mod prometheus_targets;
pub mod stats;
pub mod status;

pub use self::stats::Stats;
