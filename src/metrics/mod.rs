//! What udptee reports about itself: counters with the accounting invariant, latency histograms, the
//! Prometheus rendering of both, and procfs readings.

pub mod counters;
pub mod histogram;
pub mod kernel;
pub mod proc;
