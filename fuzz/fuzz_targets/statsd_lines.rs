//! Any bytes as a received datagram: the statsd parser, every kind of line filter and the top
//! talkers' tally must never panic, and must account for every line (`cargo +nightly fuzz run
//! statsd_lines`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    udptee::statsd::filter::check_datagram(data);
    udptee::top::tally::check_tally(data);
});
