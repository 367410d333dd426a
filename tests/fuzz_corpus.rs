//! The fuzz corpus (fuzz/corpus/statsd_lines) through the fuzz target's own check, on stable, plus
//! a property test of the same check on arbitrary bytes: the parser and every kind of line filter
//! never panic and count every line under exactly one outcome.

use std::path::Path;

#[test]
fn every_corpus_input_passes_the_fuzz_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/statsd_lines");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus folder exists") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        udptee::statsd::filter::check_datagram(&data);
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
    fn statsd_like_datagrams_pass_the_fuzz_check(data in "([a-z.]{0,6}(:[0-9]{0,3}){0,2}(\\|[a-z@#:,.0-9]{0,6}){0,4}\n?){0,8}") {
        udptee::statsd::filter::check_datagram(data.as_bytes());
    }
}
