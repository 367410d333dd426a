//! The fuzz corpus (fuzz/corpus/statsd_lines) through the fuzz target's own check, on stable, plus
//! a property test of the same check on arbitrary bytes: the parser and every kind of line filter
//! never panic and count every line under exactly one outcome; the group sharder's and the top
//! talkers' tally's checks the same way.

use std::path::Path;

#[test]
fn every_corpus_input_passes_the_fuzz_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/statsd_lines");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus folder exists") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        udptee::statsd::filter::check_datagram(&data);
        udptee::statsd::shard::check_shard(&data);
        udptee::statsd::stream::check_stream(&data);
        udptee::top::tally::check_tally(&data);
        n += 1;
    }
    assert!(n >= 10, "the corpus has its seeds: {n} files");
}

proptest::proptest! {
    #[test]
    fn arbitrary_datagrams_pass_the_fuzz_check(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        udptee::statsd::filter::check_datagram(&data);
    }

    #[test]
    fn arbitrary_streams_pass_the_framing_check(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        udptee::statsd::stream::check_stream(&data);
    }

    #[test]
    fn statsd_like_streams_pass_the_framing_check(knob in proptest::num::u8::ANY, data in "([a-z.]{0,9}:[0-9]{1,3}\\|c\r?\n{0,2}){0,20}") {
        let mut input = vec![knob];
        input.extend_from_slice(data.as_bytes());
        udptee::statsd::stream::check_stream(&input);
    }

    #[test]
    fn arbitrary_group_traffic_passes_the_shard_check(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        udptee::statsd::shard::check_shard(&data);
    }

    #[test]
    fn statsd_like_datagrams_pass_the_fuzz_check(data in "([a-z.]{0,6}(:[0-9]{0,3}){0,2}(\\|[a-z@#:,.0-9]{0,6}){0,4}\n?){0,8}") {
        udptee::statsd::filter::check_datagram(data.as_bytes());
        udptee::top::tally::check_tally(data.as_bytes());
    }
}

/// The capture reader's fuzz target on stable: its corpus (the tests/data fixtures and what a fuzzer
/// added), the fixtures cut at every length and with bytes flipped: an error or datagrams, never a
/// panic or a hang.
#[test]
fn capture_files_of_any_shape_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for entry in std::fs::read_dir(root.join("fuzz/corpus/capture")).expect("the corpus exists") {
        inputs.push(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let fixture = std::fs::read(root.join("tests/data/lo.pcapng")).unwrap();
    for cut in (0..fixture.len()).step_by(97) {
        inputs.push(fixture[..cut].to_vec());
    }
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..300 {
        let mut m = fixture.clone();
        for _ in 0..rng.usize(1..8) {
            let i = rng.usize(..m.len());
            m[i] = rng.u8(..);
        }
        inputs.push(m);
    }
    for input in &inputs {
        let mut skipped = Default::default();
        let _ = udptee::replay::capture::for_each_udp_in(&input[..], &mut skipped, |_| Ok(()));
    }
    assert!(inputs.len() > 300);
}

proptest::proptest! {
    #[test]
    fn arbitrary_capture_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
        let mut skipped = Default::default();
        let _ = udptee::replay::capture::for_each_udp_in(&data[..], &mut skipped, |_| Ok(()));
    }
}

/// The admin-inputs fuzz target's corpus on stable: the tap query and `--allow` parsers return a
/// value or an error for each, never panic.
#[test]
fn admin_inputs_of_any_shape_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/admin_inputs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus exists") {
        let text =
            String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()).into_owned();
        if let Ok(q) = udptee::tap::TapQuery::parse(&text) {
            assert_ne!(q.count, Some(0));
        }
        let _ = udptee::net::allow::parse_cidrs(&text);
        n += 1;
    }
    assert!(n >= 2, "the seeds are there: {n}");
}
