//! A group's lines split over its members by [`ring`](super::ring), re-batched per member.
//!
//! Each datagram is split on `\n` exactly as proxy.js splits it (empty lines skipped, a `\r` kept
//! with its line, a datagram without a newline is one line), each line keyed and hashed. A
//! datagram whose lines all go to one member is passed on unchanged; otherwise each line is
//! appended to its member's pending datagram, lines joined by `\n`, never past `max_datagram`
//! bytes and never split (a longer line goes alone). Each member's lines keep their order.
//! [`Sharder::flush`] hands over what is pending: the caller does so at the end of every received
//! batch, so nothing waits for a timer. No allocation once warm.

use super::ring::{KeyHashes, Ring, key};

/// A member's datagram being filled.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    lines: u32,
    /// Receive time of its first line (for the latency histogram).
    rx_nanos: u64,
}

/// What became of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharded {
    /// Its lines (this many) went to members; `0` for a datagram of empty lines only.
    Placed(u32),
    /// No member is in the ring: its lines (this many) go nowhere.
    NoMember(u32),
}

/// One ready datagram: for member `member`, `lines` lines, received first at `rx_nanos`.
pub trait Emit {
    /// Takes one datagram for member `member`.
    fn emit(&mut self, member: usize, datagram: &[u8], lines: u32, rx_nanos: u64);
}

impl<F: FnMut(usize, &[u8], u32, u64)> Emit for F {
    fn emit(&mut self, member: usize, datagram: &[u8], lines: u32, rx_nanos: u64) {
        self(member, datagram, lines, rx_nanos)
    }
}

/// The lines of a datagram as the sharder splits it: the non-empty pieces between `\n`.
pub fn count_lines(datagram: &[u8]) -> u32 {
    let mut n = 0;
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', datagram).chain(std::iter::once(datagram.len())) {
        n += u32::from(end > start);
        start = end + 1;
    }
    n
}

/// The splitter of one group (one per sharding thread).
#[derive(Debug)]
pub struct Sharder {
    max_datagram: usize,
    pending: Vec<Pending>,
    /// The current datagram's lines: (member, start, end).
    marks: Vec<(u16, u32, u32)>,
    /// md5 of the keys seen lately.
    hashes: KeyHashes,
}

impl Sharder {
    /// A splitter for `members` members (indexes `0..members`), re-batching up to `max_datagram`.
    pub fn new(members: usize, max_datagram: usize) -> Self {
        Self {
            max_datagram,
            pending: (0..members)
                .map(|_| Pending {
                    buf: Vec::with_capacity(max_datagram),
                    ..Pending::default()
                })
                .collect(),
            marks: Vec::new(),
            hashes: KeyHashes::default(),
        }
    }

    /// Splits one datagram over the ring's members, handing ready datagrams to `out`.
    pub fn shard(
        &mut self,
        ring: &Ring,
        datagram: &[u8],
        rx_nanos: u64,
        out: &mut impl Emit,
    ) -> Sharded {
        if ring.is_empty() {
            return Sharded::NoMember(count_lines(datagram));
        }
        let lines = memchr::memchr_iter(b'\n', datagram);
        self.marks.clear();
        let mut start = 0;
        for end in lines.chain(std::iter::once(datagram.len())) {
            if end > start {
                let line = &datagram[start..end];
                // `locate` cannot miss on a ring with points.
                let member = ring
                    .locate(self.hashes.hash(key(line)))
                    .map_or(0, |(_, m)| m);
                self.marks.push((member as u16, start as u32, end as u32));
            }
            start = end + 1;
        }
        let Some(&(first, _, _)) = self.marks.first() else {
            return Sharded::Placed(0);
        };
        let n = self.marks.len() as u32;
        if self.marks.iter().all(|&(m, _, _)| m == first) {
            let m = usize::from(first);
            self.flush_one(m, out);
            out.emit(m, datagram, n, rx_nanos);
            return Sharded::Placed(n);
        }
        for i in 0..self.marks.len() {
            let (m, s, e) = self.marks[i];
            self.append(
                usize::from(m),
                &datagram[s as usize..e as usize],
                rx_nanos,
                out,
            );
        }
        Sharded::Placed(n)
    }

    fn append(&mut self, m: usize, line: &[u8], rx_nanos: u64, out: &mut impl Emit) {
        let p = &self.pending[m];
        if !p.buf.is_empty() && p.buf.len() + 1 + line.len() > self.max_datagram {
            self.flush_one(m, out);
        }
        let p = &mut self.pending[m];
        if p.buf.is_empty() {
            p.rx_nanos = rx_nanos;
        } else {
            p.buf.push(b'\n');
        }
        p.buf.extend_from_slice(line);
        p.lines += 1;
    }

    fn flush_one(&mut self, m: usize, out: &mut impl Emit) {
        let p = &mut self.pending[m];
        if !p.buf.is_empty() {
            out.emit(m, &p.buf, p.lines, p.rx_nanos);
            p.buf.clear();
            p.lines = 0;
        }
    }

    /// Hands over every member's pending datagram.
    pub fn flush(&mut self, out: &mut impl Emit) {
        for m in 0..self.pending.len() {
            self.flush_one(m, out);
        }
    }
}

/// The fuzz target's check (`cargo +nightly fuzz run group_shard`), usable on stable: `data`'s
/// first byte picks a size limit, the rest is datagrams separated by `\0`, sharded over a 3-member
/// ring (and an empty one). Panics unless every non-empty line reaches the member its key names,
/// once and in order, and no re-batched datagram passes the limit unless it is one line.
pub fn check_shard(data: &[u8]) {
    let (max, rest) = match data.split_first() {
        Some((&m, rest)) => (usize::from(m).max(1), rest),
        None => (1, data),
    };
    let ring = Ring::new([
        (0, "10.0.0.1:8125"),
        (1, "10.0.0.2:8125"),
        (2, "10.0.0.3:8125"),
    ]);
    let datagrams: Vec<&[u8]> = rest.split(|&b| b == 0).collect();
    let mut sharder = Sharder::new(3, max);
    let mut got: Vec<Vec<&[u8]>> = vec![Vec::new(); 3];
    let mut sent: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut out = |m: usize, d: &[u8], n: u32, _: u64| {
        let lines = d.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
        assert_eq!(lines, n as usize, "a datagram's line count");
        sent.push((m, d.to_vec()));
    };
    let mut total = 0;
    for d in &datagrams {
        match sharder.shard(&ring, d, 0, &mut out) {
            Sharded::Placed(n) => total += n as usize,
            Sharded::NoMember(_) => panic!("a ring with members places every line"),
        }
    }
    sharder.flush(&mut out);
    for (m, d) in &sent {
        let lines: Vec<&[u8]> = d.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        let whole = datagrams.iter().any(|x| x == &d.as_slice());
        assert!(
            whole || d.len() <= max || lines.len() == 1,
            "re-batched within the limit"
        );
        got[*m].extend(lines);
    }
    for (m, lines) in got.iter().enumerate() {
        let want: Vec<&[u8]> = datagrams
            .iter()
            .flat_map(|d| d.split(|&b| b == b'\n'))
            .filter(|l| !l.is_empty() && ring.member_of(key(l)) == Some(m))
            .collect();
        assert_eq!(lines, &want, "member {m}: its lines once, in order");
    }
    assert_eq!(got.iter().map(Vec::len).sum::<usize>(), total);
    fn never(_: usize, _: &[u8], _: u32, _: u64) {
        panic!("nothing is sent without members");
    }
    let empty = Ring::new(std::iter::empty());
    for d in &datagrams {
        let r = sharder.shard(&empty, d, 0, &mut never);
        assert!(matches!(r, Sharded::NoMember(_)), "{r:?}");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ring3() -> Ring {
        Ring::new([
            (0, "127.0.0.1:8127"),
            (1, "127.0.0.1:8129"),
            (2, "127.0.0.1:8131"),
        ])
    }

    type Sent = Vec<(usize, Vec<u8>, u32)>;

    fn run(ring: &Ring, max: usize, datagrams: &[&[u8]]) -> (Sent, Vec<Sharded>) {
        let mut s = Sharder::new(3, max);
        let mut sent = Vec::new();
        let mut out = |m: usize, d: &[u8], n: u32, _rx: u64| sent.push((m, d.to_vec(), n));
        let r = datagrams
            .iter()
            .map(|d| s.shard(ring, d, 0, &mut out))
            .collect();
        s.flush(&mut out);
        (sent, r)
    }

    #[test]
    fn a_datagram_for_one_member_goes_unchanged() {
        let (sent, r) = run(&ring3(), 1432, &[b"gorets:1|c\nfoo:2|c\n"]);
        assert_eq!(sent, vec![(0, b"gorets:1|c\nfoo:2|c\n".to_vec(), 2)]);
        assert_eq!(r, vec![Sharded::Placed(2)]);
    }

    #[test]
    fn lines_are_split_per_member_and_rebatched_in_order() {
        let (sent, r) = run(
            &ring3(),
            1432,
            &[
                b"page.views:1|c\ngorets:1|c\napi.latency:3|ms|#a:b",
                b"users.online:2|g\n\nfoo:1|c\r\n",
            ],
        );
        assert_eq!(r, vec![Sharded::Placed(3), Sharded::Placed(2)]);
        let of = |m: usize| -> Vec<Vec<u8>> {
            sent.iter()
                .filter(|s| s.0 == m)
                .map(|s| s.1.clone())
                .collect()
        };
        assert_eq!(of(0), vec![b"gorets:1|c\nfoo:1|c\r".to_vec()]);
        assert_eq!(of(1), vec![b"page.views:1|c\nusers.online:2|g".to_vec()]);
        assert_eq!(of(2), vec![b"api.latency:3|ms|#a:b".to_vec()]);
    }

    #[test]
    fn no_member_means_every_line_is_counted_and_nothing_sent() {
        let empty = Ring::new(std::iter::empty());
        let (sent, r) = run(&empty, 1432, &[b"a:1|c\n\nb:1|c", b"\n"]);
        assert!(sent.is_empty());
        assert_eq!(r, vec![Sharded::NoMember(2), Sharded::NoMember(0)]);
    }

    proptest! {
        /// Whatever the datagrams and the size limit: every non-empty line reaches the member the
        /// ring names, once, in order; no datagram made here passes the limit unless it is one line.
        #[test]
        fn every_line_reaches_its_member_once_in_order(
            datagrams in prop::collection::vec(
                prop::collection::vec(prop::sample::select(b"ab:.\n|c\r".to_vec()), 0..80), 0..12),
            max in 1usize..64,
        ) {
            let ring = ring3();
            let refs: Vec<&[u8]> = datagrams.iter().map(|d| d.as_slice()).collect();
            let (sent, _) = run(&ring, max, &refs);
            for m in 0..3 {
                let want: Vec<&[u8]> = datagrams
                    .iter()
                    .flat_map(|d| d.split(|&b| b == b'\n'))
                    .filter(|l| !l.is_empty() && ring.member_of(key(l)) == Some(m))
                    .collect();
                let mut got: Vec<Vec<u8>> = Vec::new();
                for (mm, d, n) in &sent {
                    if *mm != m { continue; }
                    let lines: Vec<&[u8]> = d.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
                    prop_assert_eq!(lines.len() as u32, *n);
                    let rebatched = !datagrams.iter().any(|x| x == d);
                    prop_assert!(!rebatched || d.len() <= max || lines.len() == 1);
                    got.extend(lines.iter().map(|l| l.to_vec()));
                }
                let want: Vec<Vec<u8>> = want.iter().map(|l| l.to_vec()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
