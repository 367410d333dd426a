//! Top talkers: `GET /top?by=name|sender|series&n=N&window=10s` on the admin listener answers which
//! metric names, senders or series bring the most lines, from a bounded sample of the traffic
//! (`udptee top` shows it live, the status page its first ten names).
//!
//! The first look starts a sampler: an observer ring of [`TOP_BYTES`] published beside the targets
//! (the taps' mechanism: workers copy each batch into it and never wait; what finds no room is only
//! counted) and a thread that drains it every [`POLL`] into one [`tally::Second`] a second, keeping
//! the last [`MAX_WINDOW`] of them. A look ranks the seconds of its window; rates are the sample's
//! counts scaled by the datagrams offered over those sampled, so they hold when the sample is
//! partial. [`IDLE`] after the last look the sampler unpublishes its ring and ends: when nobody looks,
//! the data path carries nothing of it. A look that starts the sampler waits for its first second.
//!
//! Floor 3 (services over the data path): plugs in through `fanout::ObserverHub`.

pub mod tally;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use self::tally::{By, Counts, Second};
use crate::fanout::ObserverHub;
use crate::fanout::observe::{DRAIN_MAX, Observer};

/// Bytes of datagrams the sampler's ring holds between two polls: what the sample can take is
/// about 20 times this a second (5 MiB/s), whatever the traffic.
pub const TOP_BYTES: usize = 256 << 10;
/// How often the sampler drains its ring.
pub const POLL: Duration = Duration::from_millis(50);
/// How long the sampler runs after the last look.
pub const IDLE: Duration = Duration::from_secs(15);
/// The longest window a look may ask for (the seconds the sampler keeps).
pub const MAX_WINDOW: Duration = Duration::from_secs(60);
/// Most rows a look may ask for.
pub const MAX_ROWS: usize = 100;
/// The longest a look that started the sampler waits for its first second.
const FIRST_SECOND: Duration = Duration::from_secs(3);

/// What a look asks for (the query of `GET /top`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopQuery {
    /// The grouping.
    pub by: By,
    /// Rows wanted.
    pub n: usize,
    /// Whole seconds to rank, at most [`MAX_WINDOW`].
    pub window: Duration,
}

impl Default for TopQuery {
    fn default() -> Self {
        Self {
            by: By::Name,
            n: 10,
            window: Duration::from_secs(10),
        }
    }
}

impl TopQuery {
    /// Parses `by=name|sender|series&n=N&window=10s` (each at most once; any may be left out).
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut q = Self::default();
        let mut seen = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if seen.contains(&k) {
                return Err(format!("{k} given twice"));
            }
            match &*k {
                "by" => {
                    q.by = By::parse(&v)
                        .ok_or_else(|| "by: expected name, sender or series".to_owned())?;
                }
                "n" => {
                    q.n = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_ROWS).contains(n))
                        .ok_or_else(|| {
                            format!("n: expected a whole number from 1 to {MAX_ROWS}")
                        })?;
                }
                "window" => {
                    q.window = crate::config::parse_duration(&v)
                        .ok()
                        .filter(|w| {
                            w.subsec_nanos() == 0
                                && *w >= Duration::from_secs(1)
                                && *w <= MAX_WINDOW
                        })
                        .ok_or_else(|| {
                            format!(
                                "window: expected whole seconds from 1s to {}s, such as 10s",
                                MAX_WINDOW.as_secs()
                            )
                        })?;
                }
                _ => return Err("unknown query key; use by, n and window".into()),
            }
            seen.push(k);
        }
        Ok(q)
    }
}

/// Per-second rates of one row, and its share of the lines.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopRow {
    /// The name, sender or series (`(other)` for the rest).
    pub key: String,
    /// Datagrams a second (for a name or series: those holding one of its lines).
    pub datagrams_per_s: f64,
    /// Lines a second.
    pub lines_per_s: f64,
    /// Bytes a second (for a name or series: of its lines).
    pub bytes_per_s: f64,
    /// Its share of the lines, 0 to 1.
    pub share: f64,
}

/// The answer of `GET /top`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopReport {
    /// The grouping.
    pub by: By,
    /// The window asked for, in seconds.
    pub window_s: u64,
    /// The seconds it covers (fewer while the sampler is new).
    pub seconds: f64,
    /// Datagrams the sample holds over the window.
    pub sampled: u64,
    /// Datagrams received over the window (sampled or not).
    pub offered: u64,
    /// Distinct keys seen over the window.
    pub keys: usize,
    /// All traffic over the window, as a row (`key` is `total`, `share` 1).
    pub total: TopRow,
    /// The first `n` keys by lines.
    pub top: Vec<TopRow>,
    /// The other keys together.
    pub other: TopRow,
}

/// The sampler's totals, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopCounts {
    /// The sampler runs now.
    pub sampling: bool,
    /// Datagrams it tallied.
    pub sampled: u64,
    /// Datagrams it missed (its ring was full): the rates are scaled up for them.
    pub missed: u64,
}

/// Why a look was refused (HTTP 503): udptee is stopping, or the sampler could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TopError(String);

/// The top talkers' sampler of one forwarder.
pub struct Top {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Top {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Top")
            .field("sampling", &self.sampling())
            .finish_non_exhaustive()
    }
}

struct Shared {
    hub: ObserverHub,
    /// Datagrams tallied, and those the sample missed (its ring was full), since start.
    sampled: AtomicU64,
    missed: AtomicU64,
    state: Mutex<State>,
    /// Signalled at each finished second.
    second: Condvar,
}

#[derive(Default)]
struct State {
    sampling: bool,
    last_look: Option<Instant>,
    seconds: VecDeque<Second>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Top {
    /// The sampler, publishing its ring through `hub` while someone looks.
    pub(crate) fn new(hub: ObserverHub) -> Self {
        Self {
            shared: Arc::new(Shared {
                hub,
                sampled: AtomicU64::new(0),
                missed: AtomicU64::new(0),
                state: Mutex::new(State::default()),
                second: Condvar::new(),
            }),
        }
    }

    /// True while the sampler runs (someone looked in the last [`IDLE`]).
    pub fn sampling(&self) -> bool {
        self.shared.lock().sampling
    }

    /// The sampler's totals.
    pub fn counts(&self) -> TopCounts {
        TopCounts {
            sampling: self.sampling(),
            sampled: self.shared.sampled.load(Ordering::Relaxed),
            missed: self.shared.missed.load(Ordering::Relaxed),
        }
    }

    /// Ranks the last `q.window` of the sample, starting the sampler (and waiting for its first
    /// second) when nobody looked for [`IDLE`].
    pub fn look(&self, q: &TopQuery) -> Result<TopReport, TopError> {
        let mut st = self.shared.lock();
        st.last_look = Some(Instant::now());
        if !st.sampling {
            self.start()?;
            st.sampling = true;
            st.seconds.clear();
        }
        let deadline = Instant::now() + FIRST_SECOND;
        while st.seconds.is_empty() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            st = self
                .shared
                .second
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let k = usize::try_from(q.window.as_secs()).unwrap_or(usize::MAX);
        let skip = st.seconds.len().saturating_sub(k);
        let ranked = tally::rank(st.seconds.iter().skip(skip), q.by, q.n);
        drop(st);
        Ok(report(q, &ranked))
    }

    fn start(&self) -> Result<(), TopError> {
        let observer = Arc::new(Observer::try_new("top", TOP_BYTES).map_err(TopError)?);
        self.shared
            .hub
            .add(Arc::clone(&observer))
            .map_err(|e| TopError(e.to_string()))?;
        let shared = Arc::downgrade(&self.shared);
        let o = Arc::clone(&observer);
        if let Err(e) = std::thread::Builder::new()
            .name("udptee-top".into())
            .spawn(move || sample(&shared, &o))
        {
            self.shared.hub.remove(&observer);
            return Err(TopError(format!("starting the sampler: {e}")));
        }
        Ok(())
    }
}

/// The sampler thread: drains `observer` every [`POLL`] into the current second; ends [`IDLE`]
/// after the last look, or when the forwarder is gone.
fn sample(shared: &Weak<Shared>, observer: &Arc<Observer>) {
    let mut second = Second::default();
    let mut began = Instant::now();
    let (mut offered, mut dropped) = (0, 0);
    loop {
        std::thread::sleep(POLL);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        while observer.drain(DRAIN_MAX, |o| second.add(o.src, o.payload)) == DRAIN_MAX {}
        let now = Instant::now();
        if now.duration_since(began) < Duration::from_secs(1) {
            continue;
        }
        let (o, d) = (observer.offered(), observer.dropped());
        second.offered = o - offered;
        second.span = now.duration_since(began);
        shared
            .sampled
            .fetch_add(second.sampled.datagrams, Ordering::Relaxed);
        shared.missed.fetch_add(d - dropped, Ordering::Relaxed);
        (offered, dropped, began) = (o, d, now);
        let mut st = shared.lock();
        st.seconds.push_back(std::mem::take(&mut second));
        if st.seconds.len() > MAX_WINDOW.as_secs() as usize {
            st.seconds.pop_front();
        }
        shared.second.notify_all();
        if st.last_look.is_none_or(|l| now.duration_since(l) > IDLE) {
            st.sampling = false;
            st.seconds.clear();
            drop(st);
            shared.hub.remove(observer);
            return;
        }
    }
}

/// Rates from a ranking: counts scaled by offered over sampled, over the window's span.
fn report(q: &TopQuery, r: &tally::Ranked) -> TopReport {
    let secs = r.span.as_secs_f64();
    let scale = if r.sampled.datagrams == 0 || secs == 0.0 {
        0.0
    } else {
        r.offered as f64 / r.sampled.datagrams as f64 / secs
    };
    let all_lines = r.sampled.lines;
    let row = |key: &str, c: &Counts| TopRow {
        key: key.to_owned(),
        datagrams_per_s: round(c.datagrams as f64 * scale, 1),
        lines_per_s: round(c.lines as f64 * scale, 1),
        bytes_per_s: round(c.bytes as f64 * scale, 1),
        share: if all_lines == 0 {
            0.0
        } else {
            round(c.lines as f64 / all_lines as f64, 4)
        },
    };
    TopReport {
        by: q.by,
        window_s: q.window.as_secs(),
        seconds: round(secs, 2),
        sampled: r.sampled.datagrams,
        offered: r.offered,
        keys: r.keys,
        total: row("total", &r.sampled),
        top: r.rows.iter().map(|(k, c)| row(k, c)).collect(),
        other: row("(other)", &r.rest),
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_or_say_why() {
        assert_eq!(TopQuery::parse("").unwrap(), TopQuery::default());
        assert_eq!(
            TopQuery::parse("by=sender&n=3&window=1m").unwrap(),
            TopQuery {
                by: By::Sender,
                n: 3,
                window: Duration::from_secs(60)
            }
        );
        for bad in [
            "by=host",
            "n=0",
            "n=101",
            "n=x",
            "window=0s",
            "window=61s",
            "window=1500ms",
            "window=soon",
            "by=name&by=series",
            "what=1",
        ] {
            assert!(TopQuery::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Any query string parses or is refused with a message; it never panics.
        #[test]
        fn any_query_parses_or_is_refused(q in "\\PC{0,80}") {
            let _ = TopQuery::parse(&q);
        }
    }

    #[test]
    fn rates_scale_the_sample_to_what_was_offered() {
        let mut s = Second::default();
        (s.span, s.offered) = (Duration::from_secs(2), 400);
        for _ in 0..3 {
            s.add(None, b"a:1|c");
        }
        s.add(None, b"b:1|c");
        let q = TopQuery {
            n: 1,
            ..TopQuery::default()
        };
        let r = report(&q, &tally::rank([&s], By::Name, 1));
        // 4 sampled of 400 offered over 2 s: each sampled datagram is 50 a second.
        assert_eq!((r.top[0].key.as_str(), r.top[0].lines_per_s), ("a", 150.0));
        assert_eq!(
            (r.top[0].share, r.other.share, r.total.lines_per_s),
            (0.75, 0.25, 200.0)
        );
        assert_eq!((r.sampled, r.offered, r.seconds), (4, 400, 2.0));
        let empty = report(&q, &tally::rank([], By::Name, 1));
        assert_eq!((empty.total.lines_per_s, empty.total.share), (0.0, 0.0));
    }
}
