//! What udptee counts about itself, as plain values that know nothing of who reads them: the names
//! it counts under (`reason`), per-thread counter blocks with the accounting invariant (`counters`
//! for targets, `worker` for receive workers), their point-in-time `snapshot`, the kernel path's
//! counters (`kernel`, folded in by the registry), latency histograms and procfs readings.
//!
//! Floor 1 (plain data and leaves): imports nothing of udptee's outside itself. The Prometheus
//! rendering is `report::prometheus`.

mod cell;
pub mod counters;
pub mod histogram;
pub mod kernel;
pub mod proc;
pub mod reason;
pub mod reloads;
pub mod snapshot;
pub mod stream;
pub mod worker;
