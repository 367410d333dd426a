//! udptee-loadgen: the load generator, sink, baseline relay and rate-sweep bench bundled with udptee.
//!
//! Users run it to reproduce in staging the drop rates they see in production and to tune udptee's
//! flags; we run it to prove every figure we publish. `send` and `sink` carry a stream id, sequence
//! number and send time in every datagram (inside a valid statsd/DogStatsD line), so loss, duplicates,
//! reordering and latency are measured, not guessed. `relay` is the kernel-bound baseline forwarder.

pub mod bench;
pub mod cli;
pub mod generator;
pub mod payload;
pub mod plot;
pub mod progress;
pub mod relay;
pub mod sink;
pub mod spin;
pub mod stats;
