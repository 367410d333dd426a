//! The line parser's tests: every kind of line, every way one is malformed, and any bytes.

use super::*;

fn metric(line: &str) -> (String, Kind, Option<String>, Option<String>) {
    let l = parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
    let What::Metric {
        name, kind, rate, ..
    } = l.what
    else {
        panic!("{line}: not a metric")
    };
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    (
        s(name),
        kind,
        rate.map(|(a, b)| s(&l.bytes[a..b])),
        l.tags.map(s),
    )
}

#[test]
fn metrics_of_every_type_and_field() {
    assert_eq!(
        metric("page.views:1|c"),
        ("page.views".into(), Kind::Counter, None, None)
    );
    assert_eq!(
        metric("fuel.level:0.5|g|#env:prod,shadow"),
        (
            "fuel.level".into(),
            Kind::Gauge,
            None,
            Some("env:prod,shadow".into())
        )
    );
    assert_eq!(
        metric("song.length:240|h|@0.5|#genre:rock|T1656581400|c:abc123|e:it-false|card:low|x9"),
        (
            "song.length".into(),
            Kind::Histogram,
            Some("0.5".into()),
            Some("genre:rock".into())
        )
    );
    assert_eq!(metric("users.uniques:1234|s").1, Kind::Set);
    assert_eq!(metric("req.time:12:13:14|ms").1, Kind::Timer);
    assert_eq!(metric("latency:1.5|d|@1").1, Kind::Distribution);
}

#[test]
fn events_and_service_checks_by_title_and_name() {
    let e = parse(b"_e{5,4}:Hello|text|p:low|#env:prod").unwrap();
    assert_eq!(e.what, What::Event { title: b"Hello" });
    assert_eq!(e.tags, Some(&b"env:prod"[..]));
    let e = parse(b"_e{3,6}:a|b|c|d|ef").unwrap();
    assert_eq!(
        e.name(),
        b"a|b",
        "lengths, not separators, delimit the title"
    );
    let sc = parse(b"_sc|db.up|0|d:1|#env:prod|m:it is | fine").unwrap();
    assert_eq!(sc.name(), b"db.up");
    assert!(matches!(
        sc.what,
        What::ServiceCheck {
            message_at: Some(_),
            ..
        }
    ));
}

#[test]
fn malformed_lines_say_why() {
    for (line, why) in [
        (&b"no-colon|c"[..], Malformed::NoName),
        (b":1|c", Malformed::NoName),
        (b"a|b:1|c", Malformed::NoName),
        (b"a:|c", Malformed::NoValue),
        (b"a:1::2|c", Malformed::NoValue),
        (b"a:1", Malformed::BadType),
        (b"a:1|x", Malformed::BadType),
        (b"a:1|c||#t", Malformed::BadField),
        (b"a:1|c|@zero", Malformed::BadField),
        (b"a:1|c|@-1", Malformed::BadField),
        (b"a:1|c|@0.5|@0.5", Malformed::BadField),
        (b"_e{5,4}:Hi|text", Malformed::BadEvent),
        (b"_e{99999999999999999999,1}:a|b", Malformed::BadEvent),
        (b"_e{2,2}:ab|cdef", Malformed::BadEvent),
        (b"_sc|name|7", Malformed::BadServiceCheck),
        (b"_sc||0", Malformed::BadServiceCheck),
    ] {
        assert_eq!(parse(line), Err(why), "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn lines_split_on_newlines_and_skip_empty_ones() {
    let d = b"a:1|c\nb:2|g\n\nc:3|ms\n";
    let v: Vec<&[u8]> = lines(d).collect();
    assert_eq!(v, [&b"a:1|c"[..], b"b:2|g", b"c:3|ms"]);
}

proptest::proptest! {
    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        for line in lines(&bytes) {
            let _ = parse(line);
        }
    }

    #[test]
    fn valid_lines_keep_their_bytes_and_parts(
        name in "[a-z][a-z0-9._]{0,20}",
        value in "[0-9]{1,5}(\\.[0-9]{1,3})?",
        kind in proptest::sample::select(vec!["c", "g", "ms", "h", "s", "d"]),
        rate in proptest::option::of("0\\.[1-9]"),
        tags in proptest::option::of("[a-z]{1,5}:[a-z0-9]{1,5}(,[a-z]{1,5})?"),
    ) {
        let mut line = format!("{name}:{value}|{kind}");
        if let Some(r) = &rate { line.push_str(&format!("|@{r}")); }
        if let Some(t) = &tags { line.push_str(&format!("|#{t}")); }
        let parsed = parse(line.as_bytes()).unwrap();
        proptest::prop_assert_eq!(parsed.bytes, line.as_bytes());
        proptest::prop_assert_eq!(parsed.name(), name.as_bytes());
        proptest::prop_assert_eq!(parsed.tags, tags.as_deref().map(str::as_bytes));
        if let What::Metric { rate: r, .. } = parsed.what {
            proptest::prop_assert_eq!(r.map(|(a, b)| &line.as_bytes()[a..b]), rate.as_deref().map(str::as_bytes));
        }
    }
}
