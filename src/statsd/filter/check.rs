//! The fuzzers' and the corpus test's check of the line filter, kept beside it.

use super::{Applied, LineFilter, LineSettings, OnMalformed, SampleBy, lines};
use crate::statsd::{ending, parse};

/// The fuzzers' and the corpus test's check: `datagram` through the parser and through filters of
/// every kind. Panics only if an invariant breaks: every line counted under exactly one outcome,
/// every part within `max-datagram` unless it is one line, and every part of well-formed lines
/// parsing again.
#[doc(hidden)]
pub fn check_datagram(datagram: &[u8]) {
    for line in lines(datagram) {
        let _ = parse(ending(line).0);
    }
    // Compiled once: the fuzzer calls this millions of times.
    static FILTERS: std::sync::OnceLock<Vec<(usize, usize, LineFilter)>> =
        std::sync::OnceLock::new();
    let filters = FILTERS.get_or_init(|| {
        let all = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let kinds = [
            LineSettings {
                include: all(&["a*", "*.b"]),
                exclude: all(&["a.x*"]),
                ..LineSettings::default()
            },
            LineSettings {
                tags_include: all(&["env:*"]),
                tags_exclude: all(&["noisy"]),
                malformed: OnMalformed::Drop,
                strip_fields: all(&["c", "e", "card"]),
                ..LineSettings::default()
            },
            LineSettings {
                sample: Some(0.5),
                ..LineSettings::default()
            },
            // A budget of one series: every other line takes the tag-stripping rewrite.
            LineSettings {
                max_series: Some(1),
                cardinality: crate::config::lines::Cardinality::StripTags,
                add_tags: all(&["shadow:true"]),
                ..LineSettings::default()
            },
            LineSettings {
                sample: Some(0.5),
                sample_by: SampleBy::Line,
                add_tags: all(&["shadow:true"]),
                prefix: "shadow.".into(),
                ..LineSettings::default()
            },
        ];
        let mut v = Vec::new();
        for (k, settings) in kinds.iter().enumerate() {
            for max in [64, 65535] {
                let f =
                    LineFilter::new(settings, max).unwrap_or_else(|e| panic!("settings {k}: {e}"));
                v.push((k, max, f));
            }
        }
        v
    });
    for (k, max, f) in filters {
        let a = Applied::of(f, [datagram], &mut fastrand::Rng::with_seed(*k as u64));
        let c = a.counts;
        assert_eq!(
            c.offered,
            lines(datagram).count() as u64,
            "every line is offered"
        );
        assert_eq!(
            c.offered,
            c.kept
                + c.filtered
                + c.sampled_out
                + c.malformed_dropped
                + c.rate_limited
                + c.series_limited,
            "every line under one outcome: {c:?}"
        );
        let in_parts: u64 = a.parts.iter().map(|p| u64::from(p.lines)).sum();
        assert_eq!(in_parts, c.kept, "every kept line is in a part");
        for (p, bytes) in a.parts.iter().zip(a.texts()) {
            assert!(
                bytes.len() <= *max || p.lines == 1,
                "part over max-datagram"
            );
            assert_eq!(lines(bytes).count(), p.lines as usize, "a part's lines");
            if f.drop_malformed {
                // Only well-formed lines are kept: rewritten (tags, prefix, fields stripped), each
                // still parses.
                for line in lines(bytes) {
                    assert!(parse(ending(line).0).is_ok(), "a rewritten line parses");
                }
            }
        }
    }
}
