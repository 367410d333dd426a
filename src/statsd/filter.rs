//! A target's line settings: which lines it gets (include/exclude by name, tags-include/-exclude),
//! which share (sample by name or line), and how its copy is rewritten (prefix, add-tags,
//! strip-fields).
//!
//! [`LineFilter::apply`] turns one received datagram into this target's copy: the kept lines, in
//! their order, rewritten, packed into as few datagrams as `max-datagram` allows (a rewrite can only
//! grow a line by the prefix and the tags; a datagram is cut only between lines). It counts every
//! line under one outcome, and adds a 64-bit hash of each line it keeps into an order-independent
//! digest for the parity ledger.

use globset::GlobSet;
use xxhash_rust::xxh3::xxh3_64;

use super::{What, ending, lines, parse};
pub use crate::config::lines::{LineSettings, OnMalformed, SampleBy};
use crate::config::lines::{glob_set, matches};

/// What happened to the lines of the datagrams a filter saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounts {
    /// Lines seen.
    pub offered: u64,
    /// Lines kept (put in this target's copy).
    pub kept: u64,
    /// Lines removed by include/exclude/tags.
    pub filtered: u64,
    /// Lines removed by `sample`.
    pub sampled_out: u64,
    /// Lines that are not statsd (forwarded or dropped, by `malformed`).
    pub malformed: u64,
    /// Malformed lines dropped (`malformed = "drop"`).
    pub malformed_dropped: u64,
    /// Lines over the target's `max-rate` in lines.
    pub rate_limited: u64,
    /// Lines of a new series over `max-series`, dropped.
    pub series_limited: u64,
    /// Lines of a new series over `max-series`, kept without their tags (they are also `kept`).
    pub tags_stripped: u64,
}

/// A target's compiled line settings.
#[derive(Debug)]
pub struct LineFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    tags_include: Option<GlobSet>,
    tags_exclude: Option<GlobSet>,
    /// Keep a name when its hash is below this (sample-by name).
    name_threshold: Option<u64>,
    /// Keep a line with this probability (sample-by line).
    line_fraction: Option<f64>,
    add_tags: Vec<u8>,
    prefix: Vec<u8>,
    /// Fields removed, as their starts (`c:`, `e:`, `card:`).
    strip: Vec<Vec<u8>>,
    drop_malformed: bool,
    max_datagram: usize,
    /// `max-rate` in lines: a line over it is dropped.
    line_cap: Option<crate::ratecap::RateCap>,
    /// `max-series`: its budget (the target's sender is its one user; the lock is uncontended).
    series: Option<std::sync::Mutex<super::series::SeriesBudget>>,
    strip_over_budget: bool,
}

/// A datagram of this target's copy: a range of the output buffer, its lines and their digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Start in the output buffer.
    pub start: usize,
    /// End in the output buffer.
    pub end: usize,
    /// Lines in it.
    pub lines: u32,
    /// Sum of the 64-bit hashes of its lines.
    pub digest: u64,
}

/// A filter's output for some datagrams, in fresh buffers (the fuzz check and the tests).
struct Applied {
    out: Vec<u8>,
    parts: Vec<Part>,
    counts: LineCounts,
}

impl Applied {
    fn of<'a>(
        f: &LineFilter,
        datagrams: impl IntoIterator<Item = &'a [u8]>,
        rng: &mut fastrand::Rng,
    ) -> Self {
        let mut a = Self {
            out: Vec::new(),
            parts: Vec::new(),
            counts: LineCounts::default(),
        };
        for d in datagrams {
            f.apply(d, &mut a.out, &mut a.parts, &mut a.counts, rng);
        }
        a
    }

    /// Each part's bytes.
    fn texts(&self) -> impl Iterator<Item = &[u8]> {
        self.parts.iter().map(|p| &self.out[p.start..p.end])
    }
}

impl Part {
    fn empty(at: usize) -> Self {
        Self {
            start: at,
            end: at,
            lines: 0,
            digest: 0,
        }
    }
}

impl LineFilter {
    /// Compiles `s` (already validated) for datagrams of at most `max_datagram` bytes.
    pub fn new(s: &LineSettings, max_datagram: usize) -> Result<Self, String> {
        s.validate()?;
        Ok(Self {
            include: glob_set(&s.include)?,
            exclude: glob_set(&s.exclude)?,
            tags_include: glob_set(&s.tags_include)?,
            tags_exclude: glob_set(&s.tags_exclude)?,
            name_threshold: match (s.sample, s.sample_by) {
                (Some(f), SampleBy::Name) if f < 1.0 => Some((f * u64::MAX as f64) as u64),
                _ => None,
            },
            line_fraction: match (s.sample, s.sample_by) {
                (Some(f), SampleBy::Line) if f < 1.0 => Some(f),
                _ => None,
            },
            add_tags: s.add_tags.join(",").into_bytes(),
            prefix: s.prefix.clone().into_bytes(),
            strip: s
                .strip_fields
                .iter()
                .map(|f| format!("{f}:").into_bytes())
                .collect(),
            drop_malformed: s.malformed == OnMalformed::Drop,
            max_datagram,
            line_cap: None,
            series: s.max_series.map(|n| {
                std::sync::Mutex::new(super::series::SeriesBudget::new(n, s.series_window))
            }),
            strip_over_budget: s.cardinality == crate::config::lines::Cardinality::StripTags,
        })
    }

    /// The series budget's window: series seen, the budget, the names with the most series.
    pub fn series_report(&self, n: usize) -> Option<super::series::SeriesReport> {
        let b = self.series.as_ref()?.lock().ok()?;
        Some(b.report(n))
    }

    /// The filter, with lines over `per_second` dropped and counted `rate_limited` (a burst of 1%
    /// of a second's worth, at least one line).
    pub fn with_line_cap(mut self, per_second: u64) -> Self {
        let burst = usize::try_from(per_second / 100)
            .unwrap_or(usize::MAX)
            .max(1);
        self.line_cap = Some(crate::ratecap::RateCap::new(per_second, burst));
        self
    }

    /// True when a name is in the sampled share (sample-by name): the same names everywhere, always.
    pub fn name_kept(&self, name: &[u8]) -> bool {
        self.name_threshold.is_none_or(|t| xxh3_64(name) < t)
    }

    /// Filters and rewrites one datagram into `out`, appending its parts to `parts` (none when
    /// every line is removed) and counting its lines into `counts`.
    pub fn apply(
        &self,
        datagram: &[u8],
        out: &mut Vec<u8>,
        parts: &mut Vec<Part>,
        counts: &mut LineCounts,
        rng: &mut fastrand::Rng,
    ) {
        let mut part = Part::empty(out.len());
        // Once per datagram, not per line: the clock the budget and the cap read, and the
        // budget's lock (the target's sender is its one user: it is never waited for).
        let now = (self.series.is_some() || self.line_cap.is_some()).then(std::time::Instant::now);
        let mut budget = self
            .series
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for raw in lines(datagram) {
            counts.offered += 1;
            // A `\r` before the `\n` is the line's ending, not its text: given back after it.
            let (text, end) = ending(raw);
            // What to write for this line: it as received (malformed, forwarded), or rewritten.
            let keep = match parse(text) {
                Err(_) => {
                    counts.malformed += 1;
                    if self.drop_malformed {
                        counts.malformed_dropped += 1;
                        continue;
                    }
                    None
                }
                Ok(line) => {
                    let name = line.name();
                    if self.include.as_ref().is_some_and(|s| !matches(s, name))
                        || self.exclude.as_ref().is_some_and(|s| matches(s, name))
                        || self
                            .tags_include
                            .as_ref()
                            .is_some_and(|s| !line.tag_iter().any(|t| matches(s, t)))
                        || self
                            .tags_exclude
                            .as_ref()
                            .is_some_and(|s| line.tag_iter().any(|t| matches(s, t)))
                    {
                        counts.filtered += 1;
                        continue;
                    }
                    if !self.name_kept(name) {
                        counts.sampled_out += 1;
                        continue;
                    }
                    let mut scale = None;
                    if let Some(f) = self.line_fraction {
                        if rng.f64() >= f {
                            counts.sampled_out += 1;
                            continue;
                        }
                        scale = Some(f);
                    }
                    let mut strip_tags = false;
                    if let (Some(b), Some(now)) = (budget.as_mut(), now) {
                        let within = b.admit(super::series::series_of(&line), line.name(), now);
                        if !within && !self.strip_over_budget {
                            counts.series_limited += 1;
                            continue;
                        }
                        strip_tags = !within;
                    }
                    Some((line, scale, strip_tags))
                }
            };
            let capped = match (&self.line_cap, now) {
                (Some(cap), Some(now)) => cap.take_at_instant(1, now) == 0,
                _ => false,
            };
            if capped {
                counts.rate_limited += 1;
                continue;
            }
            counts.kept += 1;
            if matches!(keep, Some((_, _, true))) {
                counts.tags_stripped += 1;
            }
            let sep = part.lines > 0;
            if sep {
                out.push(b'\n');
            }
            let mut body = out.len();
            match keep {
                None => out.extend_from_slice(raw),
                Some((line, scale, strip_tags)) => {
                    self.rewrite(&line, scale, strip_tags, out);
                    out.extend_from_slice(end);
                }
            }
            if sep && out.len() - part.start > self.max_datagram {
                // It does not fit after the others: it starts the next datagram, without the
                // separator (part.end still marks where the previous line ended).
                out.remove(body - 1);
                body -= 1;
                parts.push(part);
                part = Part::empty(body);
            }
            part.digest = part.digest.wrapping_add(xxh3_64(&out[body..]));
            part.lines += 1;
            part.end = out.len();
        }
        if part.lines > 0 {
            parts.push(part);
        }
    }

    /// Appends `line` to `out` with this target's prefix and tags, and `@rate` scaled by `scale`
    /// for counts and samples (sample-by line).
    fn rewrite(
        &self,
        line: &super::Line<'_>,
        scale: Option<f64>,
        strip_tags: bool,
        out: &mut Vec<u8>,
    ) {
        let b = line.bytes;
        // Edits as (position, bytes replaced from there, what goes in), applied in position order.
        let mut edits: [(usize, usize, Edit); 3] = [(0, 0, Edit::None); 3];
        if !self.prefix.is_empty() {
            match line.what {
                What::Metric { .. } => edits[0] = (0, 0, Edit::Prefix),
                // After `_sc|`.
                What::ServiceCheck { .. } => edits[0] = (4, 0, Edit::Prefix),
                What::Event { .. } => {}
            }
        }
        if let (
            What::Metric {
                kind,
                type_end,
                rate,
                ..
            },
            Some(f),
        ) = (line.what, scale)
        {
            if kind.is_sampled() {
                let old = rate
                    .and_then(|(s, e)| std::str::from_utf8(&b[s..e]).ok()?.parse::<f64>().ok())
                    .unwrap_or(1.0);
                edits[1] = match rate {
                    Some((s, e)) => (s, e - s, Edit::Rate(old * f, false)),
                    None => (type_end, 0, Edit::Rate(f, true)),
                };
            }
        }
        if !self.add_tags.is_empty() {
            edits[2] = match (line.tags_at, line.tags, line.what) {
                // Where the removed list was: a field of its own.
                (Some(t), Some(tags), _) if strip_tags => {
                    (t + 2 + tags.len(), 0, Edit::Tags(false, true))
                }
                // After the existing list.
                (Some(t), Some(tags), _) => {
                    (t + 2 + tags.len(), 0, Edit::Tags(!tags.is_empty(), false))
                }
                // Before a service check's message, which must stay last.
                (
                    _,
                    _,
                    What::ServiceCheck {
                        message_at: Some(m),
                        ..
                    },
                ) => (m, 0, Edit::Tags(false, true)),
                _ => (b.len(), 0, Edit::Tags(false, true)),
            };
        }
        edits.sort_by_key(|e| e.0);
        // The fields to remove, in order; at one position an insertion goes first.
        let mut strips = line
            .fields()
            .filter(|(_, f)| {
                self.strip.iter().any(|s| f.starts_with(s)) || (strip_tags && f.starts_with(b"#"))
            })
            .map(|(pos, f)| (pos, f.len() + 1, Edit::None))
            .peekable();
        let mut fixed = edits
            .into_iter()
            .filter(|e| !matches!(e.2, Edit::None))
            .peekable();
        let mut at = 0;
        loop {
            let next = match (fixed.peek(), strips.peek()) {
                (Some(f), Some(s)) if s.0 < f.0 => strips.next(),
                (Some(_), _) => fixed.next(),
                (None, _) => strips.next(),
            };
            let Some((pos, replaced, edit)) = next else {
                break;
            };
            out.extend_from_slice(&b[at..pos]);
            match edit {
                Edit::None => {}
                Edit::Prefix => out.extend_from_slice(&self.prefix),
                Edit::Rate(r, new_field) => {
                    if new_field {
                        out.extend_from_slice(b"|@");
                    }
                    write_rate(out, r);
                }
                Edit::Tags(comma, new_field) => {
                    if new_field {
                        out.extend_from_slice(b"|#");
                    } else if comma {
                        out.push(b',');
                    }
                    out.extend_from_slice(&self.add_tags);
                }
            }
            at = pos + replaced;
        }
        out.extend_from_slice(&b[at..]);
    }
}

/// One change [`LineFilter::rewrite`] makes to a line.
#[derive(Debug, Clone, Copy)]
enum Edit {
    /// Nothing in (with a length replaced: a field removed).
    None,
    Prefix,
    /// The new rate, and whether the `|@` field is new.
    Rate(f64, bool),
    /// Whether a comma separates the new tags from existing ones, and whether the `|#` is new.
    Tags(bool, bool),
}

/// Appends a sample rate with enough digits to be exact for what clients send, without trailing
/// zeros, straight into the copy (no allocation per line).
fn write_rate(out: &mut Vec<u8>, r: f64) {
    use std::io::Write as _;
    let start = out.len();
    let _ = write!(out, "{r:.6}");
    while out.len() > start && out[out.len() - 1] == b'0' {
        out.pop();
    }
    if out.last() == Some(&b'.') {
        out.pop();
    }
    if out[start..].is_empty() || out[start..] == *b"0" {
        out.truncate(start);
        out.extend_from_slice(b"0.000001");
    }
}

mod check;
#[doc(hidden)]
pub use self::check::check_datagram;

#[cfg(test)]
mod tests;
