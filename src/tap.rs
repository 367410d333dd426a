//! Live taps: `GET /tap` on the admin listener streams the datagrams flowing through, one line each
//! (`udptee tap` prints them), from a bounded sample so forwarding never waits for a reader.
//!
//! Each tap is an observer ring of [`TAP_BYTES`] published beside the targets: workers copy into it
//! and count what does not fit. The streaming task drains it every [`POLL`] into text lines; when the
//! client reads slower than traffic arrives, the HTTP body, then the ring, fill up, and the datagrams
//! that find no room are counted and announced in the stream (`# udptee tap: N datagrams not shown`)
//! instead of slowing anyone down. At most [`MAX_TAPS`] at once.
//!
//! Floor 3 (services over the data path): plugs in through `fanout::ObserverHub`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::fanout::ObserverHub;
use crate::fanout::observe::{Observed, Observer};
use crate::statsd::filter::{LineCounts, LineFilter, LineSettings, Part};

/// Most taps at once: each costs a copy of every datagram.
pub const MAX_TAPS: u64 = 4;
/// Bytes of datagrams one tap may hold before it counts drops.
pub const TAP_BYTES: usize = 1 << 20;
/// How often a tap's stream looks for datagrams.
pub const POLL: Duration = Duration::from_millis(50);
/// Longest payload shown per line, in bytes (the rest is elided and counted in the line).
const SHOW_BYTES: usize = 2048;

/// What a tap asks for (the query of `GET /tap`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TapQuery {
    /// Stop after this many datagrams.
    pub count: Option<u64>,
    /// Only lines whose metric name matches one of these globs.
    pub include: Vec<String>,
}

impl TapQuery {
    /// Parses `count=N&include=GLOB&include=GLOB` (URL-encoded); unknown keys are refused.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut q = Self::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "count" => {
                    let n: u64 = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| "count: expected a whole number above 0".to_owned())?;
                    q.count = Some(n);
                }
                "include" => q.include.push(v.into_owned()),
                _ => return Err("unknown query key; use count and include".into()),
            }
        }
        Ok(q)
    }
}

/// The taps of one forwarder, and their totals.
pub struct Taps {
    /// Where each tap's ring is published (and timestamps turned on at the first tap).
    hub: ObserverHub,
    clients: AtomicU64,
    shown: AtomicU64,
    dropped_done: AtomicU64,
    live: std::sync::Mutex<Vec<Arc<Observer>>>,
}

impl std::fmt::Debug for Taps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taps")
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

/// Tap totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TapCounts {
    /// Taps connected now.
    pub clients: u64,
    /// Datagrams written to tap streams.
    pub shown: u64,
    /// Datagrams taps could not take (their reader fell behind).
    pub dropped: u64,
}

/// Why a tap was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TapError {
    /// A bad query (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// Too many taps, or udptee is stopping (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

impl Taps {
    /// The taps' registry, publishing each tap's ring through `hub`.
    pub(crate) fn new(hub: ObserverHub) -> Self {
        Self {
            hub,
            clients: AtomicU64::new(0),
            shown: AtomicU64::new(0),
            dropped_done: AtomicU64::new(0),
            live: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Totals now.
    pub fn counts(&self) -> TapCounts {
        let live: u64 = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|o| o.dropped())
            .sum();
        TapCounts {
            clients: self.clients.load(Ordering::Relaxed),
            shown: self.shown.load(Ordering::Relaxed),
            dropped: self.dropped_done.load(Ordering::Relaxed) + live,
        }
    }

    /// Opens a tap: from now on every received datagram is offered to it.
    pub fn open(self: &Arc<Self>, q: &TapQuery) -> Result<Tap, TapError> {
        let filter = if q.include.is_empty() {
            None
        } else {
            let s = LineSettings {
                include: q.include.clone(),
                ..LineSettings::default()
            };
            Some(LineFilter::new(&s, self.hub.max_datagram()).map_err(TapError::Invalid)?)
        };
        if self.clients.fetch_add(1, Ordering::Relaxed) >= MAX_TAPS {
            self.clients.fetch_sub(1, Ordering::Relaxed);
            return Err(TapError::Unavailable(format!(
                "{MAX_TAPS} taps are open already; close one first"
            )));
        }
        let observer = match Observer::try_new("tap", TAP_BYTES) {
            Ok(o) => Arc::new(o),
            Err(e) => {
                self.clients.fetch_sub(1, Ordering::Relaxed);
                return Err(TapError::Unavailable(e));
            }
        };
        self.hub.enable_timestamps();
        if let Err(e) = self.hub.add(Arc::clone(&observer)) {
            self.clients.fetch_sub(1, Ordering::Relaxed);
            return Err(TapError::Unavailable(e.to_string()));
        }
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&observer));
        Ok(Tap {
            taps: Arc::clone(self),
            observer,
            filter,
            left: q.count,
            announced: 0,
            out: Vec::new(),
            parts: Vec::new(),
            rng: fastrand::Rng::new(),
        })
    }
}

/// One open tap; closing it (drop) unpublishes its ring.
pub struct Tap {
    taps: Arc<Taps>,
    observer: Arc<Observer>,
    filter: Option<LineFilter>,
    left: Option<u64>,
    announced: u64,
    out: Vec<u8>,
    parts: Vec<Part>,
    rng: fastrand::Rng,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl Tap {
    /// True once `count` datagrams were shown.
    pub fn done(&self) -> bool {
        self.left == Some(0)
    }

    /// Appends what is queued (up to a few hundred datagrams) to `text` as lines, preceded by a
    /// notice when datagrams were dropped since the last one. Returns the datagrams taken.
    pub fn fill(&mut self, text: &mut String) -> usize {
        let dropped = self.observer.dropped();
        if dropped > self.announced {
            let _ = writeln!(
                text,
                "# udptee tap: {} datagrams not shown (this reader fell behind; forwarding did not wait)",
                dropped - self.announced
            );
            self.announced = dropped;
        }
        let Self {
            observer,
            filter,
            left,
            out,
            parts,
            rng,
            taps,
            ..
        } = self;
        let mut shown = 0u64;
        let n = observer.drain(crate::fanout::observe::DRAIN_MAX, |o| {
            if *left == Some(0) {
                return;
            }
            let payload = match filter {
                None => o.payload,
                Some(f) => {
                    out.clear();
                    parts.clear();
                    f.apply(o.payload, out, parts, &mut LineCounts::default(), rng);
                    if parts.is_empty() {
                        return;
                    }
                    // The kept lines, one datagram's worth (packing keeps them in one part).
                    &out[..parts.last().map_or(0, |p| p.end)]
                }
            };
            format_line(text, o, payload);
            shown += 1;
            if let Some(l) = left {
                *l -= 1;
            }
        });
        taps.shown.fetch_add(shown, Ordering::Relaxed);
        n
    }

    /// The final line of a stream: what this tap showed and dropped.
    pub fn summary(&self) -> String {
        format!(
            "# udptee tap: end; {} datagrams offered, {} not shown\n",
            self.observer.offered(),
            self.observer.dropped()
        )
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.taps.hub.remove(&self.observer);
        self.taps
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|o| !Arc::ptr_eq(o, &self.observer));
        self.taps
            .dropped_done
            .fetch_add(self.observer.dropped(), Ordering::Relaxed);
        self.taps.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One datagram as a line: receive time (UTC, µs), source, destination, length, then the payload
/// with newlines as `\n` and other unprintable bytes as `\xNN`.
pub(crate) fn format_line(text: &mut String, o: &Observed<'_>, payload: &[u8]) {
    let t = if o.rx_nanos == 0 {
        SystemTime::now()
    } else {
        UNIX_EPOCH + Duration::from_nanos(o.rx_nanos)
    };
    // A Unix sender is shown by its credentials (they travel as a documented address).
    let src = match o.src {
        None => "unnamed".to_owned(),
        Some(s) => match crate::net::origin::cred_of_address(s.ip()) {
            Some(c) => format!("pid={},uid={},gid={}", c.pid, c.uid, c.gid),
            None => s.to_string(),
        },
    };
    let _ = write!(
        text,
        "{} {src} > {} {}B ",
        humantime::format_rfc3339_micros(t),
        o.dst,
        payload.len()
    );
    let shown = &payload[..payload.len().min(SHOW_BYTES)];
    for &b in shown {
        match b {
            b'\n' => text.push_str("\\n"),
            b'\\' => text.push_str("\\\\"),
            0x20..=0x7e => text.push(char::from(b)),
            _ => {
                let _ = write!(text, "\\x{b:02x}");
            }
        }
    }
    if payload.len() > shown.len() {
        let _ = write!(text, " [{} more bytes]", payload.len() - shown.len());
    }
    text.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_escape_what_would_break_them() {
        let o = Observed {
            src: Some("10.0.0.1:5000".parse().unwrap()),
            dst: "127.0.0.1:8125".parse().unwrap(),
            rx_nanos: 1_700_000_000_123_456_789,
            payload: b"",
        };
        let mut t = String::new();
        format_line(&mut t, &o, b"a:1|c\nb:2|g\x00\\");
        assert_eq!(
            t,
            "2023-11-14T22:13:20.123456Z 10.0.0.1:5000 > 127.0.0.1:8125 13B a:1|c\\nb:2|g\\x00\\\\\n"
        );
        let mut t = String::new();
        format_line(&mut t, &o, &[b'x'; 3000]);
        assert!(t.ends_with(" [952 more bytes]\n"), "{t}");
    }

    proptest::proptest! {
        /// Any query string parses or is refused with a message; it never panics.
        #[test]
        fn any_query_parses_or_is_refused(q in "\\PC{0,80}") {
            let _ = TapQuery::parse(&q);
        }
    }

    #[test]
    fn queries_parse_or_say_why() {
        assert_eq!(
            TapQuery::parse("count=5&include=api.%2A&include=b").unwrap(),
            TapQuery {
                count: Some(5),
                include: vec!["api.*".into(), "b".into()]
            }
        );
        assert!(TapQuery::parse("count=0").is_err());
        assert!(TapQuery::parse("count=x").is_err());
        assert!(TapQuery::parse("bogus=1").is_err());
        assert_eq!(TapQuery::parse("").unwrap(), TapQuery::default());
    }
}
