//! statsd and DogStatsD lines, parsed in place.
//!
//! A datagram holds lines separated by `\n` (a trailing newline is allowed, empty lines are
//! skipped). Each line is one of (the DogStatsD datagram format, which extends statsd's):
//! - a metric: `name:value[:value...]|type[|@rate][|#tag,tag:v][|T1656581400][|c:container][|e:...]
//!   [|card:...]`, with `type` one of `c`, `g`, `ms`, `h`, `s`, `d`; fields it does not know are kept;
//! - an event: `_e{TITLE_LEN,TEXT_LEN}:title|text[|d:..|h:..|p:..|t:..|k:..|s:..|#tags]`, lengths
//!   in bytes;
//! - a service check: `_sc|name|status[|d:..|h:..|#tags|m:message]`, status 0-3.
//!
//! [`parse`] borrows the line and returns where its parts are; it never copies, allocates or panics,
//! and anything else is [`Malformed`] with the reason. [`filter`] applies a target's settings.
//!
//! Floor 1 (plain data and leaves): `filter` imports only the line settings from `config` and the
//! rate cap (`ratecap`) that `max-rate` in lines uses.

pub mod filter;
pub mod ring;
pub mod series;
pub mod shard;
pub mod stream;

use std::fmt;

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `c`
    Counter,
    /// `g`
    Gauge,
    /// `ms`
    Timer,
    /// `h`
    Histogram,
    /// `s`
    Set,
    /// `d`
    Distribution,
}

impl Kind {
    fn of(b: &[u8]) -> Option<Self> {
        Some(match b {
            b"c" => Self::Counter,
            b"g" => Self::Gauge,
            b"ms" => Self::Timer,
            b"h" => Self::Histogram,
            b"s" => Self::Set,
            b"d" => Self::Distribution,
            _ => return None,
        })
    }

    /// The type as a line writes it (`c`, `g`, `ms`, `h`, `s`, `d`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "c",
            Self::Gauge => "g",
            Self::Timer => "ms",
            Self::Histogram => "h",
            Self::Set => "s",
            Self::Distribution => "d",
        }
    }

    /// Counts and samples: a client that sampled them says so with `@rate`, and the receiver scales
    /// them back up by `1/rate`.
    pub fn is_sampled(self) -> bool {
        matches!(
            self,
            Self::Counter | Self::Timer | Self::Histogram | Self::Distribution
        )
    }
}

/// One parsed line; offsets are into the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The whole line, as received.
    pub bytes: &'a [u8],
    /// What it is.
    pub what: What<'a>,
    /// The tag list after `#`, without it (`a:b,c`), if the line has one.
    pub tags: Option<&'a [u8]>,
    /// Offset of the `|` that starts the tags field, if any.
    pub tags_at: Option<usize>,
    /// Offset where the optional fields start (a metric's after its type, an event's after its
    /// text, a service check's after its status): a `|`, or the end of the line.
    pub fields_at: usize,
}

/// The kind of a line and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What<'a> {
    /// A metric.
    Metric {
        /// The metric name.
        name: &'a [u8],
        /// Its type.
        kind: Kind,
        /// Offset just past the type (where `|@rate` goes if added).
        type_end: usize,
        /// The `@rate` field's value (without `@`) as a range of the line, if present.
        rate: Option<(usize, usize)>,
    },
    /// An event, by title.
    Event {
        /// The title.
        title: &'a [u8],
    },
    /// A service check, by name.
    ServiceCheck {
        /// The check's name.
        name: &'a [u8],
        /// Offset of the `|m:` message field, which must stay last, if any.
        message_at: Option<usize>,
    },
}

impl<'a> Line<'a> {
    /// The name filters match: a metric's name, an event's title, a service check's name.
    pub fn name(&self) -> &'a [u8] {
        match self.what {
            What::Metric { name, .. } | What::ServiceCheck { name, .. } => name,
            What::Event { title } => title,
        }
    }

    /// The optional fields as (offset of the field's `|`, the field without it), in order; a
    /// service check's message, which may itself hold `|`, is not among them.
    pub fn fields(&self) -> impl Iterator<Item = (usize, &'a [u8])> {
        let end = match self.what {
            What::ServiceCheck {
                message_at: Some(m),
                ..
            } => m,
            _ => self.bytes.len(),
        };
        fields(&self.bytes[..end], self.fields_at)
    }

    /// The line's tags, one by one.
    pub fn tag_iter(&self) -> impl Iterator<Item = &'a [u8]> {
        self.tags
            .into_iter()
            .flat_map(|t| t.split(|&b| b == b','))
            .filter(|t| !t.is_empty())
    }
}

/// Why a line is not statsd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// No `:` before the first `|`, or an empty name.
    NoName,
    /// No value, or an empty one among several.
    NoValue,
    /// No `|type`, or a type that is none of c, g, ms, h, s, d.
    BadType,
    /// An empty field (`||`) or a `@rate` that is not a positive number.
    BadField,
    /// An event whose header or lengths do not match its title and text.
    BadEvent,
    /// A service check without name or with a status other than 0-3.
    BadServiceCheck,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoName => "no metric name",
            Self::NoValue => "no value",
            Self::BadType => "no or unknown metric type",
            Self::BadField => "an empty field or a bad sample rate",
            Self::BadEvent => "an event header that does not match its title and text",
            Self::BadServiceCheck => "a service check without name or with a status not 0-3",
        })
    }
}

/// Bytes (a name, a series) as text for a report: lossy UTF-8, cut at a character boundary to at
/// most `max` bytes and then marked with `…`.
pub fn label(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= max {
        return s.into_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The lines of a datagram: split on `\n`, empty lines skipped. A `\r` before the `\n` is part of
/// the line ending, as Etsy statsd takes it: each line keeps it ([`ending`] splits it off), and a
/// line of nothing but `\r` is empty.
pub fn lines(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    datagram
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && *l != b"\r")
}

/// A line (as [`lines`] yields it) split into its text and its ending: `\r` when it came with
/// `\r\n`, else nothing.
pub fn ending(line: &[u8]) -> (&[u8], &[u8]) {
    match line.strip_suffix(b"\r") {
        Some(text) => (text, &line[text.len()..]),
        None => (line, &[]),
    }
}

fn find(hay: &[u8], from: usize, b: u8) -> Option<usize> {
    hay.get(from..)?
        .iter()
        .position(|&c| c == b)
        .map(|p| p + from)
}

/// Parses one line (without its `\n`).
pub fn parse(line: &[u8]) -> Result<Line<'_>, Malformed> {
    if line.starts_with(b"_e{") {
        return parse_event(line);
    }
    if line.starts_with(b"_sc|") {
        return parse_service_check(line);
    }
    let colon = find(line, 0, b':').ok_or(Malformed::NoName)?;
    let first_bar = find(line, 0, b'|').ok_or(Malformed::BadType)?;
    if colon == 0 || first_bar < colon {
        return Err(Malformed::NoName);
    }
    let name = &line[..colon];
    let values = &line[colon + 1..first_bar];
    if values.is_empty() || values.split(|&b| b == b':').any(<[u8]>::is_empty) {
        return Err(Malformed::NoValue);
    }
    let type_start = first_bar + 1;
    let type_end = find(line, type_start, b'|').unwrap_or(line.len());
    let kind = Kind::of(&line[type_start..type_end]).ok_or(Malformed::BadType)?;
    let mut parsed = Line {
        bytes: line,
        what: What::Metric {
            name,
            kind,
            type_end,
            rate: None,
        },
        tags: None,
        tags_at: None,
        fields_at: type_end,
    };
    let mut rate = None;
    for (at, field) in fields(line, type_end) {
        match field.first() {
            None => return Err(Malformed::BadField),
            Some(b'@') => {
                let ok = std::str::from_utf8(&field[1..])
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .is_some_and(|r| r.is_finite() && r > 0.0);
                if !ok || rate.is_some() {
                    return Err(Malformed::BadField);
                }
                rate = Some((at + 2, at + 1 + field.len()));
            }
            Some(b'#') => tags_field(&mut parsed, at, field)?,
            // T (timestamp), c: (container), e: (external data), card: and anything newer: kept.
            Some(_) => {}
        }
    }
    if let What::Metric { rate: r, .. } = &mut parsed.what {
        *r = rate;
    }
    Ok(parsed)
}

/// The `|`-separated fields of `line` after `from` (where a `|` is or the line ends), with the
/// offset of each field's `|`.
fn fields(line: &[u8], from: usize) -> impl Iterator<Item = (usize, &[u8])> {
    let rest = line.get(from..).unwrap_or_default();
    let rest = rest.strip_prefix(b"|").unwrap_or(rest);
    let mut at = from;
    rest.split(|&b| b == b'|')
        .filter(move |_| from < line.len())
        .map(move |f| {
            let here = at;
            at += f.len() + 1;
            (here, f)
        })
}

fn tags_field<'a>(parsed: &mut Line<'a>, at: usize, field: &'a [u8]) -> Result<(), Malformed> {
    if parsed.tags.is_some() {
        return Err(Malformed::BadField);
    }
    parsed.tags = Some(&field[1..]);
    parsed.tags_at = Some(at);
    Ok(())
}

fn parse_event(line: &[u8]) -> Result<Line<'_>, Malformed> {
    let bad = Malformed::BadEvent;
    let close = find(line, 3, b'}').ok_or(bad)?;
    let header = std::str::from_utf8(&line[3..close]).map_err(|_| bad)?;
    let (a, b) = header.split_once(',').ok_or(bad)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return Err(bad);
    }
    let (title_len, text_len): (usize, usize) =
        (a.parse().map_err(|_| bad)?, b.parse().map_err(|_| bad)?);
    if line.get(close + 1) != Some(&b':') || title_len == 0 {
        return Err(bad);
    }
    let title_start = close + 2;
    let title_end = title_start.checked_add(title_len).ok_or(bad)?;
    let text_end = title_end
        .checked_add(1)
        .and_then(|t| t.checked_add(text_len))
        .ok_or(bad)?;
    if text_end > line.len() || line[title_end] != b'|' {
        return Err(bad);
    }
    if text_end < line.len() && line[text_end] != b'|' {
        return Err(bad);
    }
    let mut parsed = Line {
        bytes: line,
        what: What::Event {
            title: &line[title_start..title_end],
        },
        tags: None,
        tags_at: None,
        fields_at: text_end,
    };
    for (at, field) in fields(line, text_end) {
        match field.first() {
            None => return Err(bad),
            Some(b'#') => tags_field(&mut parsed, at, field).map_err(|_| bad)?,
            Some(_) => {}
        }
    }
    Ok(parsed)
}

fn parse_service_check(line: &[u8]) -> Result<Line<'_>, Malformed> {
    let bad = Malformed::BadServiceCheck;
    let name_end = find(line, 4, b'|').ok_or(bad)?;
    let name = &line[4..name_end];
    let status_end = find(line, name_end + 1, b'|').unwrap_or(line.len());
    if name.is_empty() || !matches!(&line[name_end + 1..status_end], b"0" | b"1" | b"2" | b"3") {
        return Err(bad);
    }
    let mut parsed = Line {
        bytes: line,
        what: What::ServiceCheck {
            name,
            message_at: None,
        },
        tags: None,
        tags_at: None,
        fields_at: status_end,
    };
    let mut message_at = None;
    for (at, field) in fields(line, status_end) {
        if message_at.is_some() {
            // The message is the last field and may itself contain `|`.
            break;
        }
        match field.first() {
            None => return Err(bad),
            Some(b'#') => tags_field(&mut parsed, at, field).map_err(|_| bad)?,
            Some(b'm') if field.starts_with(b"m:") => message_at = Some(at),
            Some(_) => {}
        }
    }
    if let What::ServiceCheck { message_at: m, .. } = &mut parsed.what {
        *m = message_at;
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests;
