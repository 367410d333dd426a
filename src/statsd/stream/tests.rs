//! Lines, frames and packing: split anywhere, bounded, property-tested.

use proptest::prelude::*;

use super::*;

fn lines_of(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Fed) {
    let mut l = Lines::new(max);
    let mut out = Vec::new();
    let mut fed = Fed::default();
    for c in chunks {
        let f = l.feed(c, |x| out.push(x.to_vec()));
        fed.lines += f.lines;
        fed.too_long += f.too_long;
    }
    let f = l.finish(|x| out.push(x.to_vec()));
    fed.lines += f.lines;
    fed.too_long += f.too_long;
    (out, fed)
}

#[test]
fn lines_split_anywhere_are_joined_and_cr_is_data() {
    let (out, fed) = lines_of(&[b"a:1|c\nb:", b"2|g\r", b"\n\nc:3", b"|ms"], 100);
    assert_eq!(
        out,
        vec![b"a:1|c".to_vec(), b"b:2|g\r".to_vec(), b"c:3|ms".to_vec()]
    );
    assert_eq!(
        fed,
        Fed {
            lines: 3,
            too_long: 0
        }
    );
}

#[test]
fn an_overlong_line_is_counted_and_the_stream_goes_on() {
    // Over the bound within one read, across reads, and as the last (unterminated) line.
    let (out, fed) = lines_of(
        &[
            b"ok:1|c\n0123456789\nok:2|c\n01234",
            b"56789",
            b"0\nok:3|c\n",
        ],
        8,
    );
    assert_eq!(
        out,
        vec![b"ok:1|c".to_vec(), b"ok:2|c".to_vec(), b"ok:3|c".to_vec()]
    );
    assert_eq!(
        fed,
        Fed {
            lines: 3,
            too_long: 2
        }
    );
    let (out, fed) = lines_of(&[b"a:1|c\n0123456789"], 8);
    assert_eq!((out.len(), fed.too_long), (1, 1));
}

#[test]
fn a_held_line_never_grows_past_the_bound() {
    let mut l = Lines::new(16);
    for _ in 0..1000 {
        l.feed(b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", |_| {
            panic!("no line ends")
        });
        assert!(l.pending() <= 16);
    }
}

#[test]
fn packed_datagrams_hold_whole_lines_up_to_the_limit() {
    let mut p = Packer::new(12);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for line in [
        &b"a:1|c"[..],
        b"b:1|c",
        b"c:1|c",
        b"a-very-long:1|c",
        b"d:1|c",
    ] {
        p.push(line, |d| out.push(d.to_vec()));
    }
    p.flush(|d| out.push(d.to_vec()));
    let expect: Vec<&[u8]> = vec![b"a:1|c\nb:1|c", b"c:1|c", b"a-very-long:1|c", b"d:1|c"];
    assert_eq!(out, expect);
}

#[test]
fn frames_split_anywhere_come_out_whole() {
    let mut wire = Vec::new();
    for m in [&b"a:1|c"[..], b"", b"b:2|c\nc:3|c"] {
        wire.extend_from_slice(&(m.len() as u32).to_le_bytes());
        wire.extend_from_slice(m);
    }
    for cut in 0..wire.len() {
        let mut f = Frames::new(64);
        let mut out = Vec::new();
        let (a, b) = wire.split_at(cut);
        let n = f.feed(a, |x| out.push(x.to_vec())).unwrap()
            + f.feed(b, |x| out.push(x.to_vec())).unwrap();
        assert_eq!(n, 2, "cut at {cut}");
        assert_eq!(out, vec![b"a:1|c".to_vec(), b"b:2|c\nc:3|c".to_vec()]);
        assert_eq!(f.pending(), 0);
    }
}

#[test]
fn an_overlong_frame_is_an_error_before_any_byte_of_it_is_held() {
    let mut f = Frames::new(8);
    let mut wire = 9u32.to_le_bytes().to_vec();
    wire.extend_from_slice(b"123456789");
    assert_eq!(
        f.feed(&wire[..2], |_| ())
            .and_then(|_| f.feed(&wire[2..], |_| ())),
        Err(FrameTooLong {
            len: 9,
            max: 8,
            handed_on: 0
        })
    );
    assert!(f.pending() <= PREFIX + 8);
    let mut f = Frames::new(8);
    assert!(f.feed(&u32::MAX.to_le_bytes(), |_| ()).is_err());
}

proptest! {
    /// However a stream of lines is cut, the same lines come out, each within the bound.
    #[test]
    fn lines_do_not_depend_on_where_reads_end(
        lines in proptest::collection::vec("[a-z:|0-9\r]{0,20}", 0..20),
        cuts in proptest::collection::vec(0usize..400, 0..8),
        max in 1usize..24,
    ) {
        let mut wire = Vec::new();
        for l in &lines {
            wire.extend_from_slice(l.as_bytes());
            wire.push(b'\n');
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        for c in cuts {
            chunks.push(&wire[at..c]);
            at = c;
        }
        chunks.push(&wire[at..]);
        let (out, fed) = lines_of(&chunks, max);
        let expect: Vec<Vec<u8>> = lines.iter().filter(|l| !l.is_empty() && l.len() <= max)
            .map(|l| l.as_bytes().to_vec()).collect();
        let too_long = lines.iter().filter(|l| l.len() > max).count() as u64;
        prop_assert_eq!(out, expect);
        prop_assert_eq!(fed.too_long, too_long);
    }

    /// Arbitrary bytes never panic nor hold more than a frame.
    #[test]
    fn frames_of_any_bytes_are_bounded(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut f = Frames::new(32);
        for c in data.chunks(7) {
            if f.feed(c, |p| assert!(!p.is_empty() && p.len() <= 32)).is_err() {
                break;
            }
            prop_assert!(f.pending() <= PREFIX + 32);
        }
    }

    /// Packing keeps every line, whole, in order, and fills datagrams up to the limit.
    #[test]
    fn packing_keeps_lines(lines in proptest::collection::vec("[a-z:|0-9]{1,30}", 0..40), limit in 1usize..64) {
        let mut p = Packer::new(limit);
        let mut out: Vec<Vec<u8>> = Vec::new();
        for l in &lines {
            p.push(l.as_bytes(), |d| out.push(d.to_vec()));
        }
        p.flush(|d| out.push(d.to_vec()));
        let back: Vec<String> = out.iter()
            .flat_map(|d| String::from_utf8(d.clone()).unwrap().split('\n').map(str::to_owned).collect::<Vec<_>>())
            .collect();
        prop_assert_eq!(&back, &lines);
        for d in &out {
            prop_assert!(d.len() <= limit || !d.contains(&b'\n'));
            prop_assert!(!d.ends_with(b"\n"));
        }
    }
}
