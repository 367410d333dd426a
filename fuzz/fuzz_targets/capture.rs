//! Any bytes as a capture file: the pcap/pcapng reader and the frame decoder must return an error
//! or datagrams, never panic or loop (`cargo +nightly fuzz run capture`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut skipped = Default::default();
    let mut n = 0u64;
    let _ = udptee::replay::capture::for_each_udp_in(data, &mut skipped, |d| {
        n += d.payload.len() as u64 + 1;
        Ok(())
    });
});
