//! What udptee reports about itself: counters with the accounting invariant, and procfs readings.

pub mod counters;
pub mod proc;
