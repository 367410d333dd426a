//! Any bytes as the untrusted text the admin listener and the flags parse besides JSON: a tap's and
//! a top look's query strings and an `--allow` list. Each returns a value or an error, never panics
//! (`cargo +nightly fuzz run admin_inputs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(q) = udptee::tap::TapQuery::parse(&text) {
        assert!(q.count != Some(0), "a count of 0 is refused");
    }
    if let Ok(q) = udptee::top::TopQuery::parse(&text) {
        assert!((1..=udptee::top::MAX_ROWS).contains(&q.n));
        assert!(q.window.as_secs() >= 1 && q.window <= udptee::top::MAX_WINDOW);
    }
    if let Ok(nets) = udptee::net::allow::parse_cidrs(&text) {
        for n in nets {
            assert!(n.contains(&n.network()));
        }
    }
});
