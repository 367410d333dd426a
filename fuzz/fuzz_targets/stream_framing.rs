//! Any bytes as a TCP or Unix stream connection's traffic: lines and DogStatsD frames come out
//! the same however the reads cut them, bounded, and packing keeps every line
//! (`cargo +nightly fuzz run stream_framing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    udptee::statsd::stream::check_stream(data);
});
