//! The line filter's unit and property tests.

use super::*;

fn settings() -> LineSettings {
    LineSettings::default()
}

fn run(s: &LineSettings, datagram: &str) -> (Vec<String>, LineCounts) {
    let f = LineFilter::new(s, 65535).unwrap();
    let a = Applied::of(&f, [datagram.as_bytes()], &mut fastrand::Rng::with_seed(7));
    let texts = a
        .texts()
        .map(|t| String::from_utf8(t.to_vec()).unwrap())
        .collect();
    (texts, a.counts)
}

#[test]
fn include_and_exclude_match_names_exactly_and_exclude_wins() {
    let s = LineSettings {
        include: vec!["api.*".into(), "bench.s1".into()],
        exclude: vec!["api.debug.*".into()],
        ..settings()
    };
    let (out, c) = run(
        &s,
        "api.req:1|c\nbench.s10:1|c\nbench.s1:2|c\napi.debug.x:1|c\nweb.req:1|c\n",
    );
    assert_eq!(out, ["api.req:1|c\nbench.s1:2|c"]);
    assert_eq!(
        c,
        LineCounts {
            offered: 5,
            kept: 2,
            filtered: 3,
            ..LineCounts::default()
        }
    );
}

#[test]
fn tags_select_lines_and_events_match_by_title() {
    let s = LineSettings {
        tags_include: vec!["env:prod".into()],
        tags_exclude: vec!["noisy*".into()],
        ..settings()
    };
    let (out, _) = run(
        &s,
        "a:1|c|#env:prod\nb:1|c|#env:dev\nc:1|c|#env:prod,noisy:yes\n_e{2,1}:hi|x|#env:prod\nd:1|c",
    );
    assert_eq!(out, ["a:1|c|#env:prod\n_e{2,1}:hi|x|#env:prod"]);
    let s = LineSettings {
        include: vec!["deploy*".into(), "db.*".into()],
        ..settings()
    };
    let (out, _) = run(
        &s,
        "_e{9,1}:deploy v2|x\n_e{5,1}:other|x\n_sc|db.up|0\n_sc|web|0",
    );
    assert_eq!(out, ["_e{9,1}:deploy v2|x\n_sc|db.up|0"]);
}

#[test]
fn prefix_and_tags_rewrite_only_the_copy() {
    let s = LineSettings {
        add_tags: vec!["shadow:true".into()],
        prefix: "shadow.".into(),
        ..settings()
    };
    let (out, _) = run(
        &s,
        "a:1|c\nb:2|g|#env:prod|T123\n_sc|db|0|#x|m:msg | with bar\n_e{2,1}:hi|x",
    );
    assert_eq!(
        out,
        [
            "shadow.a:1|c|#shadow:true\nshadow.b:2|g|#env:prod,shadow:true|T123\n_sc|shadow.db|0|#x,shadow:true|m:msg | with bar\n_e{2,1}:hi|x|#shadow:true"
        ]
    );
    let s = LineSettings {
        add_tags: vec!["shadow:true".into()],
        ..settings()
    };
    let (out, _) = run(&s, "_sc|db|0|m:down");
    assert_eq!(
        out,
        ["_sc|db|0|#shadow:true|m:down"],
        "the message stays last"
    );
    for line in out[0].lines() {
        assert!(parse(line.as_bytes()).is_ok(), "{line}");
    }
}

#[test]
fn sampling_by_name_is_stable_and_complete() {
    let s = LineSettings {
        sample: Some(0.5),
        ..settings()
    };
    let names: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    let datagram: String = names
        .iter()
        .map(|n| format!("{n}:1|c\n{n}:2|c\n"))
        .collect();
    let (out, c) = run(&s, &datagram);
    let kept: Vec<&str> = out[0].lines().collect();
    assert_eq!(c.kept + c.sampled_out, 2000);
    assert!(
        (400..600).contains(&(c.kept / 2)),
        "about half the names: {c:?}"
    );
    for pair in kept.chunks(2) {
        let n = |l: &str| l.split(':').next().unwrap().to_owned();
        assert_eq!(
            n(pair[0]),
            n(pair[1]),
            "a name is kept whole: every line of it"
        );
    }
    assert_eq!(run(&s, &datagram).0, out, "the same names every time");
}

#[test]
fn sampling_by_line_scales_rates_of_counts_only() {
    let s = LineSettings {
        sample: Some(0.5),
        sample_by: SampleBy::Line,
        ..settings()
    };
    let datagram: String = (0..400).map(|_| "c:1|c|@0.5\ng:1|g\nt:3|ms\n").collect();
    let (out, c) = run(&s, &datagram);
    assert!(
        (500..700).contains(&c.kept),
        "about half of 1200 lines: {c:?}"
    );
    for line in out[0].lines() {
        match line.split(':').next().unwrap() {
            "c" => assert_eq!(line, "c:1|c|@0.25"),
            "g" => assert_eq!(line, "g:1|g", "gauges are not scaled"),
            "t" => assert_eq!(line, "t:3|ms|@0.5"),
            other => panic!("{other}"),
        }
    }
}

#[test]
fn over_a_series_budget_tags_are_stripped_and_added_tags_stay() {
    let s = LineSettings {
        max_series: Some(1),
        cardinality: crate::config::lines::Cardinality::StripTags,
        add_tags: vec!["shadow:1".into()],
        ..settings()
    };
    let f = LineFilter::new(&s, 65535).unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let a = Applied::of(
        &f,
        [
            &b"a:1|c|#x:1"[..],
            b"b:1|c|#y:2|c:abc",
            b"a:2|c|#x:1",
            b"c:1|g",
        ],
        &mut rng,
    );
    assert_eq!(
        a.texts().collect::<Vec<_>>(),
        vec![
            &b"a:1|c|#x:1,shadow:1"[..],
            b"b:1|c|#shadow:1|c:abc",
            b"a:2|c|#x:1,shadow:1",
            b"c:1|g|#shadow:1",
        ],
        "the first series whole and again; the others without their own tags"
    );
    assert_eq!((a.counts.tags_stripped, a.counts.kept), (2, 4));
}

#[test]
fn malformed_lines_follow_the_setting_and_are_counted() {
    let mut s = LineSettings {
        include: vec!["*".into()],
        ..settings()
    };
    let (out, c) = run(&s, "a:1|c\ngarbage\nb:1|x");
    assert_eq!(out, ["a:1|c\ngarbage\nb:1|x"]);
    assert_eq!((c.malformed, c.malformed_dropped, c.kept), (2, 0, 3));
    s.malformed = OnMalformed::Drop;
    let (out, c) = run(&s, "a:1|c\ngarbage\nb:1|x");
    assert_eq!(out, ["a:1|c"]);
    assert_eq!((c.malformed, c.malformed_dropped, c.kept), (2, 2, 1));
    let (out, _) = run(&s, "garbage");
    assert!(out.is_empty(), "nothing kept: nothing to send");
}

#[test]
fn a_grown_copy_is_cut_between_lines_under_max_datagram() {
    let s = LineSettings {
        prefix: "shadow.".into(),
        ..settings()
    };
    let f = LineFilter::new(&s, 40).unwrap();
    let datagram = "aaaa:1|c\nbbbb:1|c\ncccc:1|c\ndddd:1|c";
    let a = Applied::of(&f, [datagram.as_bytes()], &mut fastrand::Rng::new());
    let texts: Vec<&str> = a.texts().map(|t| std::str::from_utf8(t).unwrap()).collect();
    assert_eq!(
        texts,
        [
            "shadow.aaaa:1|c\nshadow.bbbb:1|c",
            "shadow.cccc:1|c\nshadow.dddd:1|c"
        ]
    );
    assert!(texts.iter().all(|t| t.len() <= 40));
    assert_eq!(a.parts.iter().map(|p| p.lines).sum::<u32>(), 4);
}

#[test]
fn the_digest_is_the_same_whatever_the_order_and_packing() {
    let s = LineSettings {
        include: vec!["*".into()],
        ..settings()
    };
    let f = LineFilter::new(&s, 65535).unwrap();
    let digest = |d: &str| {
        let a = Applied::of(
            &f,
            d.split('/').map(str::as_bytes),
            &mut fastrand::Rng::new(),
        );
        a.parts.iter().fold(0u64, |x, p| x.wrapping_add(p.digest))
    };
    assert_eq!(digest("a:1|c\nb:2|g/c:3|ms"), digest("c:3|ms/b:2|g\na:1|c"));
    assert_ne!(digest("a:1|c"), digest("a:2|c"));
}

#[test]
fn bad_settings_name_the_key() {
    for (s, key) in [
        (
            LineSettings {
                include: vec!["[".into()],
                ..settings()
            },
            "include",
        ),
        (
            LineSettings {
                sample: Some(0.0),
                ..settings()
            },
            "sample",
        ),
        (
            LineSettings {
                sample: Some(1.5),
                ..settings()
            },
            "sample",
        ),
        (
            LineSettings {
                add_tags: vec!["a,b".into()],
                ..settings()
            },
            "add-tags",
        ),
        (
            LineSettings {
                prefix: "a:b".into(),
                ..settings()
            },
            "prefix",
        ),
    ] {
        let e = s.validate().unwrap_err();
        assert!(e.starts_with(key), "{e}");
    }
}

#[test]
fn a_crlf_line_is_rewritten_and_keeps_its_ending() {
    let s = LineSettings {
        prefix: "dark.".into(),
        add_tags: vec!["shadow:true".into()],
        malformed: OnMalformed::Drop,
        ..settings()
    };
    let (out, c) = run(&s, "api.crlf:1|c\r\napi.lf:2|c\n\r\nbad line\r\n");
    assert_eq!(
        out,
        ["dark.api.crlf:1|c|#shadow:true\r\ndark.api.lf:2|c|#shadow:true"],
        "the \\r stays the line's ending, after the rewrite; a bare \\r line is empty"
    );
    assert_eq!(
        c,
        LineCounts {
            offered: 3,
            kept: 2,
            malformed: 1,
            malformed_dropped: 1,
            ..LineCounts::default()
        },
        "a CRLF line is statsd, not malformed"
    );
}

proptest::proptest! {
    /// Sending the same lines with CRLF endings changes nothing but the endings: the same lines are
    /// kept, rewritten the same, each followed by the `\r` it came with.
    #[test]
    fn crlf_and_lf_datagrams_filter_alike(
        picks in proptest::collection::vec(0usize..6, 1..12),
    ) {
        const LINES: [&str; 6] = [
            "api.req:1|c", "web.x:2|g|#env:prod", "api.t:3|ms|@0.5", "_sc|api.up|0",
            "_e{2,2}:hi|yo", "not statsd",
        ];
        let s = LineSettings {
            include: vec!["api*".into()],
            prefix: "p.".into(),
            add_tags: vec!["t:1".into()],
            ..settings()
        };
        let lf: String = picks.iter().map(|&i| format!("{}\n", LINES[i])).collect();
        let crlf: String = picks.iter().map(|&i| format!("{}\r\n", LINES[i])).collect();
        let (a, ca) = run(&s, &lf);
        let (b, cb) = run(&s, &crlf);
        proptest::prop_assert_eq!(ca, cb);
        let with_cr: Vec<String> = a
            .iter()
            .map(|t| t.split('\n').map(|l| format!("{l}\r")).collect::<Vec<_>>().join("\n"))
            .collect();
        proptest::prop_assert_eq!(with_cr, b);
    }
}

#[test]
fn strip_fields_removes_origin_fields_and_keeps_the_rest_byte_exact() {
    let s = LineSettings {
        strip_fields: vec!["c".into(), "e".into(), "card".into()],
        ..settings()
    };
    let (out, counts) = run(
        &s,
        "a:1|c|#env:prod,b:2|c:ci-123|T99|e:it-false,cn-x|card:high\n\
         b:2|g|c:only\n\
         c:3|ms|@0.5|#x|card:low|c:x\n\
         plain:1|c|#c:keeps-a-tag-called-c\n\
         _sc|db|0|c:cid|#x|m:msg |c: stays in the message\n\
         _e{2,1}:hi|x|c:cid|#t\n\
         not statsd|c:kept",
    );
    assert_eq!(
        out,
        [
            "a:1|c|#env:prod,b:2|T99\nb:2|g\nc:3|ms|@0.5|#x\nplain:1|c|#c:keeps-a-tag-called-c\n\
          _sc|db|0|#x|m:msg |c: stays in the message\n_e{2,1}:hi|x|#t\nnot statsd|c:kept"
        ]
    );
    assert_eq!((counts.offered, counts.kept, counts.malformed), (7, 7, 1));
    // With the other rewrites: tags go after the existing list, the prefix before the name.
    let s = LineSettings {
        strip_fields: vec!["c".into()],
        add_tags: vec!["shadow:true".into()],
        prefix: "s.".into(),
        sample: Some(0.999_999),
        sample_by: SampleBy::Line,
        ..settings()
    };
    let (out, _) = run(&s, "a:1|c|c:x|#env:prod|c:y\r\nb:1|c|c:x");
    assert_eq!(
        out,
        ["s.a:1|c|@0.999999|#env:prod,shadow:true\r\ns.b:1|c|@0.999999|#shadow:true"]
    );
}

#[test]
fn strip_fields_names_only_origin_fields() {
    for bad in ["#", "m", "", "C"] {
        let s = LineSettings {
            strip_fields: vec![bad.into()],
            ..settings()
        };
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("strip-fields") && e.contains("card"),
            "{bad}: {e}"
        );
    }
    assert!(
        !LineSettings {
            strip_fields: vec!["card".into()],
            ..settings()
        }
        .is_passthrough(),
        "stripping is a line setting: the copy goes through the filter"
    );
}

proptest::proptest! {
    /// Stripping removes exactly the origin fields: the copy equals the line rebuilt without them,
    /// and parses to the same name, tags and kind.
    #[test]
    fn strip_fields_is_removal_of_exactly_those_fields(
        fields in proptest::collection::vec(0usize..7, 0..6),
    ) {
        const FIELDS: [&str; 7] = ["|c:ci", "|e:it-x", "|card:low", "|T12", "|#a:b,c", "|@0.5", "|k:v"];
        let mut tags = 0;
        let mut rate = 0;
        let picked: Vec<&str> = fields
            .iter()
            .map(|&i| FIELDS[i])
            .filter(|f| match *f {
                "|#a:b,c" => { tags += 1; tags == 1 }
                "|@0.5" => { rate += 1; rate == 1 }
                _ => true,
            })
            .collect();
        let line = format!("m.x:1|c{}", picked.concat());
        let want = format!(
            "m.x:1|c{}",
            picked.iter().filter(|f| !(f.starts_with("|c:") || f.starts_with("|e:") || f.starts_with("|card:"))).copied().collect::<String>()
        );
        let s = LineSettings {
            strip_fields: vec!["c".into(), "e".into(), "card".into()],
            ..settings()
        };
        let (out, counts) = run(&s, &line);
        proptest::prop_assert_eq!(counts.kept, 1);
        proptest::prop_assert_eq!(&out, &vec![want.clone()]);
        let a = parse(want.as_bytes()).unwrap();
        let b = parse(line.as_bytes()).unwrap();
        proptest::prop_assert_eq!(a.name(), b.name());
        proptest::prop_assert_eq!(a.tags, b.tags);
    }
}
