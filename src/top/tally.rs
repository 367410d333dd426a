//! One second of sampled datagrams tallied three ways — by metric name, by sender, by series — and
//! the ranking of a window of such seconds. Pure: the sampler (`top/mod.rs`) feeds it what it
//! drains from its observer, and a look ranks what it kept.
//!
//! A datagram counts once for its sender (all its lines and bytes) and once for each name and series
//! among its lines (the lines and bytes of those lines). A line that is not statsd counts under
//! [`NOT_STATSD`]. Each table keeps at most [`MAX_KEYS`] keys a second, each label cut to
//! [`LABEL_MAX`] bytes: what a new key brings once the table is full counts under "(other)", so the
//! memory of a second is bounded whatever the cardinality (about 3 x 512 x 250 bytes).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64;

use crate::statsd::{self, Line, What};

/// Most keys one table keeps in a second.
pub const MAX_KEYS: usize = 512;
/// Longest label kept, in bytes (a longer one is cut at a character boundary and ends in `…`).
pub const LABEL_MAX: usize = 160;
/// The label of lines that are not statsd.
pub const NOT_STATSD: &str = "(not statsd)";
/// The key of lines that are not statsd (a name hashing to it is merged with them: 1 in 2^64).
const NOT_STATSD_KEY: u64 = 0x6e6f_745f_7374_6174;

/// What a ranking groups by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// The metric name (an event's title, a service check's name).
    #[default]
    Name,
    /// Who sent the datagram: its address and port, or the process of a Unix sender.
    Sender,
    /// The series: name, type and tag set.
    Series,
}

impl By {
    /// Every grouping, in the order the live view cycles through them.
    pub const ALL: [Self; 3] = [Self::Name, Self::Sender, Self::Series];

    /// As `?by=` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Sender => "sender",
            Self::Series => "series",
        }
    }

    /// Reads `name`, `sender` or `series`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

/// Datagrams, lines and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Datagrams (for a name or series: those holding at least one of its lines).
    pub datagrams: u64,
    /// Lines.
    pub lines: u64,
    /// Bytes (for a name or series: of its lines).
    pub bytes: u64,
}

impl Counts {
    fn add(&mut self, o: &Self) {
        self.datagrams += o.datagrams;
        self.lines += o.lines;
        self.bytes += o.bytes;
    }
}

#[derive(Debug)]
struct Row {
    label: Box<str>,
    counts: Counts,
    /// The last datagram counted (numbered from 1 within the second).
    counted_in: u64,
}

/// One grouping's keys in one second.
#[derive(Debug, Default)]
struct Table {
    rows: HashMap<u64, Row>,
    other: Counts,
    other_counted_in: u64,
}

impl Table {
    fn add(&mut self, key: u64, label: impl FnOnce() -> Box<str>, datagram: u64, n: Counts) {
        let full = self.rows.len() >= MAX_KEYS;
        let (counts, counted_in) = match self.rows.entry(key) {
            Entry::Occupied(e) => {
                let r = e.into_mut();
                (&mut r.counts, &mut r.counted_in)
            }
            Entry::Vacant(_) if full => (&mut self.other, &mut self.other_counted_in),
            Entry::Vacant(e) => {
                let r = e.insert(Row {
                    label: label(),
                    counts: Counts::default(),
                    counted_in: 0,
                });
                (&mut r.counts, &mut r.counted_in)
            }
        };
        if *counted_in != datagram {
            *counted_in = datagram;
            counts.datagrams += 1;
        }
        counts.lines += n.lines;
        counts.bytes += n.bytes;
    }
}

/// One second of the sample.
#[derive(Debug, Default)]
pub struct Second {
    /// How long it lasted (about a second: the sampler closes it on its first poll after one).
    pub span: Duration,
    /// Datagrams the workers offered to the sampler in it (those the sample missed included).
    pub offered: u64,
    /// What the sample holds.
    pub sampled: Counts,
    names: Table,
    senders: Table,
    series: Table,
}

impl Second {
    /// Tallies one sampled datagram from `src`.
    pub fn add(&mut self, src: Option<SocketAddr>, payload: &[u8]) {
        self.sampled.datagrams += 1;
        let dg = self.sampled.datagrams;
        let mut lines = 0u64;
        for line in statsd::lines(payload) {
            lines += 1;
            let one = Counts {
                datagrams: 0,
                lines: 1,
                bytes: line.len() as u64,
            };
            match statsd::parse(statsd::ending(line).0) {
                Ok(l) => {
                    let name = l.name();
                    self.names.add(xxh3_64(name), || label(name), dg, one);
                    let s = statsd::series::series_of(&l);
                    self.series.add(s, || series_label(&l), dg, one);
                }
                Err(_) => {
                    self.names
                        .add(NOT_STATSD_KEY, || NOT_STATSD.into(), dg, one);
                    self.series
                        .add(NOT_STATSD_KEY, || NOT_STATSD.into(), dg, one);
                }
            }
        }
        let all = Counts {
            datagrams: 0,
            lines,
            bytes: payload.len() as u64,
        };
        self.sampled.lines += lines;
        self.sampled.bytes += all.bytes;
        self.senders
            .add(sender_key(src), || sender_label(src).into(), dg, all);
    }

    fn table(&self, by: By) -> &Table {
        match by {
            By::Name => &self.names,
            By::Sender => &self.senders,
            By::Series => &self.series,
        }
    }
}

/// A window of seconds ranked by one grouping.
#[derive(Debug, Default, PartialEq)]
pub struct Ranked {
    /// The first keys by lines (then bytes, then label), with their counts.
    pub rows: Vec<(String, Counts)>,
    /// Every other key, and what came once a second's table was full.
    pub rest: Counts,
    /// What the sample holds over the window.
    pub sampled: Counts,
    /// Datagrams offered over the window.
    pub offered: u64,
    /// The window's length: the seconds' spans added up.
    pub span: Duration,
    /// Distinct keys seen (each second's table holds at most [`MAX_KEYS`]).
    pub keys: usize,
}

/// Ranks `seconds` by `by`, keeping the first `n` keys.
pub fn rank<'a>(seconds: impl IntoIterator<Item = &'a Second>, by: By, n: usize) -> Ranked {
    let mut merged: HashMap<u64, (&'a str, Counts)> = HashMap::new();
    let mut r = Ranked::default();
    for s in seconds {
        r.sampled.add(&s.sampled);
        r.offered += s.offered;
        r.span += s.span;
        let t = s.table(by);
        r.rest.add(&t.other);
        for (k, row) in &t.rows {
            merged
                .entry(*k)
                .or_insert((&row.label, Counts::default()))
                .1
                .add(&row.counts);
        }
    }
    r.keys = merged.len();
    let mut all: Vec<(&str, Counts)> = merged.into_values().collect();
    all.sort_unstable_by(|a, b| {
        (b.1.lines, b.1.bytes)
            .cmp(&(a.1.lines, a.1.bytes))
            .then_with(|| a.0.cmp(b.0))
    });
    for (i, (label, counts)) in all.into_iter().enumerate() {
        if i < n {
            r.rows.push((label.to_owned(), counts));
        } else {
            r.rest.add(&counts);
        }
    }
    r
}

/// Bytes as text, cut to [`LABEL_MAX`].
fn label(b: &[u8]) -> Box<str> {
    statsd::label(b, LABEL_MAX).into()
}

/// `name|type|#tag,tag` with the tags sorted and each once (the series' identity, as
/// [`statsd::series::series_of`] hashes it); `_e{title}` for an event, `_sc|name` for a check.
fn series_label(l: &Line<'_>) -> Box<str> {
    let mut tags: Vec<&[u8]> = l.tag_iter().collect();
    tags.sort_unstable();
    tags.dedup();
    let mut out: Vec<u8> = match l.what {
        What::Metric { name, kind, .. } => [name, b"|", kind.as_str().as_bytes()].concat(),
        What::Event { title } => [b"_e{", title, b"}"].concat(),
        What::ServiceCheck { name, .. } => [b"_sc|", name].concat(),
    };
    if !tags.is_empty() {
        out.extend_from_slice(b"|#");
        out.extend_from_slice(&tags.join(&b","[..]));
    }
    label(&out)
}

fn sender_key(src: Option<SocketAddr>) -> u64 {
    let Some(s) = src else { return 0 };
    let ip = match s.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut b = [0u8; 18];
    b[..16].copy_from_slice(&ip.octets());
    b[16..].copy_from_slice(&s.port().to_be_bytes());
    xxh3_64(&b)
}

/// Address and port; a Unix sender's process (`pid=N,uid=U`, from its credentials); `unnamed`.
pub fn sender_label(src: Option<SocketAddr>) -> String {
    match src {
        None => "unnamed".to_owned(),
        Some(s) => match crate::net::origin::cred_of_address(s.ip()) {
            Some(c) => format!("pid={},uid={}", c.pid, c.uid),
            None => s.to_string(),
        },
    }
}

/// The fuzz targets' check (`statsd_lines`): any bytes, tallied as a datagram, are ranked under
/// every grouping without a panic, and each ranking accounts for every line once.
pub fn check_tally(data: &[u8]) {
    let mut s = Second::default();
    s.add(Some(SocketAddr::from(([127, 0, 0, 1], 1))), data);
    s.add(None, data);
    for by in By::ALL {
        let r = rank([&s], by, 3);
        let lines: u64 = r.rows.iter().map(|(_, c)| c.lines).sum::<u64>() + r.rest.lines;
        assert_eq!(lines, s.sampled.lines, "every line ranked once by {by:?}");
        assert!(
            r.rows
                .iter()
                .all(|(k, _)| k.len() <= LABEL_MAX + '…'.len_utf8())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(r: &Ranked) -> Vec<(&str, u64, u64, u64)> {
        r.rows
            .iter()
            .map(|(k, c)| (k.as_str(), c.datagrams, c.lines, c.bytes))
            .collect()
    }

    #[test]
    fn a_datagram_counts_once_per_sender_name_and_series() {
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:6000".parse().unwrap();
        let mut s = Second::default();
        s.add(Some(a), b"x:1|c|#b:2,a:1\nx:2|c|#a:1,b:2\ny:1|g");
        s.add(Some(b), b"x:1|c\nnot statsd\n\n");
        s.add(None, b"");
        let names = rank([&s], By::Name, 10);
        assert_eq!(
            keys(&names),
            vec![("x", 2, 3, 33), ("(not statsd)", 1, 1, 10), ("y", 1, 1, 5)]
        );
        assert_eq!(
            names.sampled,
            Counts {
                datagrams: 3,
                lines: 5,
                bytes: 53
            }
        );
        let series = rank([&s], By::Series, 10);
        assert_eq!(series.rows[0].0, "x|c|#a:1,b:2");
        assert_eq!(series.rows[0].1.lines, 2);
        let senders = rank([&s], By::Sender, 10);
        assert_eq!(
            keys(&senders),
            vec![
                ("10.0.0.1:5000", 1, 3, 35),
                ("[2001:db8::1]:6000", 1, 2, 18),
                ("unnamed", 1, 0, 0)
            ]
        );
    }

    #[test]
    fn a_window_adds_its_seconds_and_the_rest_is_counted() {
        let mut one = Second {
            span: Duration::from_secs(1),
            offered: 10,
            ..Second::default()
        };
        let mut two = Second {
            span: Duration::from_secs(1),
            offered: 30,
            ..Second::default()
        };
        for _ in 0..3 {
            one.add(None, b"a:1|c");
        }
        two.add(None, b"b:1|c");
        two.add(None, b"a:1|c\nc:1|c");
        let r = rank([&one, &two], By::Name, 1);
        assert_eq!(keys(&r), vec![("a", 4, 4, 20)]);
        assert_eq!(
            r.rest,
            Counts {
                datagrams: 2,
                lines: 2,
                bytes: 10
            }
        );
        assert_eq!((r.offered, r.span, r.keys), (40, Duration::from_secs(2), 3));
    }

    #[test]
    fn a_full_table_counts_new_keys_as_other_and_labels_are_cut() {
        let mut s = Second::default();
        for i in 0..MAX_KEYS + 10 {
            s.add(None, format!("m{i}:1|c").as_bytes());
        }
        let r = rank([&s], By::Name, MAX_KEYS + 100);
        assert_eq!((r.keys, r.rest.lines), (MAX_KEYS, 10));
        let long = format!("{}:1|c", "é".repeat(200));
        let mut s = Second::default();
        s.add(None, long.as_bytes());
        let r = rank([&s], By::Name, 1);
        assert!(r.rows[0].0.len() <= LABEL_MAX + 3 && r.rows[0].0.ends_with('…'));
    }

    #[test]
    fn a_unix_sender_is_its_process() {
        let c = crate::net::mmsg::Cred {
            pid: 42,
            uid: 1000,
            gid: 1000,
        };
        let ip = crate::net::origin::cred_address(c);
        assert_eq!(
            sender_label(Some(SocketAddr::new(ip.into(), 0))),
            "pid=42,uid=1000"
        );
    }

    proptest::proptest! {
        /// Any bytes from anyone are tallied without a panic, and the books add up.
        #[test]
        fn any_datagram_is_tallied(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            check_tally(&d);
        }
    }
}
