//! Any bytes as a group's traffic: the sharder must place every line on the member its key names,
//! once and in order, within the size limit (`cargo +nightly fuzz run group_shard`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    udptee::statsd::shard::check_shard(data);
});
