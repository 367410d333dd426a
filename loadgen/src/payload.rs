//! Datagram contents: a tracking header (stream id, sequence number, send time) inside a valid line.
//!
//! - `raw`: `"UL"`, stream (u16 LE), sequence (u32 LE), send time in µs since the epoch (u64 LE), then
//!   `x` padding: 16 bytes at least.
//! - `statsd`: the gauge `ulg.<stream>:<seq:010>.<µs:016><zeros>|g`; the padding zeros sit in the
//!   fraction, so the value, the metric name and its cardinality (one series per stream) do not change.
//! - `dogstatsd`: the same line with `|#src:udptee-loadgen`.
//!
//! The `realistic` profile follows the tracking line with newline-separated lines of varied names, types
//! (c, g, ms, h, s, d), sample rates and (for DogStatsD) tags, as statsd hosts really receive.

use std::io::Write as _;

use clap::ValueEnum;

/// Wire format of generated datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Binary header and padding.
    Raw,
    /// A valid statsd line.
    Statsd,
    /// A valid DogStatsD line (with a tag).
    Dogstatsd,
}

/// What a datagram's content looks like beyond the tracking line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// One tracking line padded to the size.
    Fixed,
    /// Several varied metric lines per datagram (statsd/dogstatsd only).
    Realistic,
}

const RAW_HEADER: usize = 16;
const SEQ_DIGITS: usize = 10;
const TS_DIGITS: usize = 16;
const DOGSTATSD_TAG: &[u8] = b"|#src:udptee-loadgen";

/// The tracking fields of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Stream id: one per sending socket.
    pub stream: u32,
    /// Sequence number within the stream, from 0.
    pub seq: u64,
    /// Send time, µs since the Unix epoch.
    pub sent_us: u64,
}

/// Smallest datagram that carries a header in `format` for this stream id.
pub fn min_size(format: Format, stream: u32) -> usize {
    let text = 4 + digits(u64::from(stream)) + 1 + SEQ_DIGITS + 1 + TS_DIGITS + 2;
    match format {
        Format::Raw => RAW_HEADER,
        Format::Statsd => text,
        Format::Dogstatsd => text + DOGSTATSD_TAG.len(),
    }
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Writes one datagram of `size` bytes (or the format's minimum, if larger) into `buf`.
pub fn encode(
    format: Format,
    profile: Profile,
    h: Header,
    size: usize,
    rng: &mut fastrand::Rng,
    buf: &mut Vec<u8>,
) {
    buf.clear();
    let size = size.max(min_size(format, h.stream));
    match format {
        Format::Raw => {
            buf.extend_from_slice(b"UL");
            buf.extend_from_slice(&(h.stream as u16).to_le_bytes());
            buf.extend_from_slice(&(h.seq as u32).to_le_bytes());
            buf.extend_from_slice(&h.sent_us.to_le_bytes());
            buf.resize(size, b'x');
        }
        Format::Statsd | Format::Dogstatsd => {
            let suffix: &[u8] = if format == Format::Dogstatsd {
                DOGSTATSD_TAG
            } else {
                b""
            };
            let extra = if profile == Profile::Realistic {
                realistic_lines(format, size, rng)
            } else {
                Vec::new()
            };
            let _ = write!(
                buf,
                "ulg.{}:{:010}.{:016}",
                h.stream,
                h.seq % 10_000_000_000,
                h.sent_us % 10_u64.pow(16)
            );
            let pad = size.saturating_sub(buf.len() + 2 + suffix.len() + extra.len());
            buf.resize(buf.len() + pad, b'0');
            buf.extend_from_slice(b"|g");
            buf.extend_from_slice(suffix);
            buf.extend_from_slice(&extra);
        }
    }
}

const NAMES: [&str; 8] = [
    "api.requests",
    "api.latency",
    "db.query.time",
    "cache.hits",
    "queue.depth",
    "jobs.processed",
    "users.unique",
    "payload.size",
];
const TYPES: [&str; 6] = ["c", "g", "ms", "h", "s", "d"];
const TAGS: [&str; 4] = [
    "env:prod,service:api",
    "env:staging,az:b",
    "host:web-12,role:frontend",
    "version:1.4.2",
];

/// Extra newline-prefixed lines taking at most `size` minus the tracking line's minimum.
fn realistic_lines(format: Format, size: usize, rng: &mut fastrand::Rng) -> Vec<u8> {
    let room = size.saturating_sub(min_size(format, 999) + 4);
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let _ = write!(
            line,
            "\n{}.{}:{}|{}",
            NAMES[rng.usize(..NAMES.len())],
            rng.u8(..16),
            rng.u32(..100_000),
            TYPES[rng.usize(..TYPES.len())]
        );
        if rng.u8(..4) == 0 {
            let _ = write!(line, "|@0.{}", rng.u8(1..10));
        }
        if format == Format::Dogstatsd {
            let _ = write!(line, "|#{}", TAGS[rng.usize(..TAGS.len())]);
        }
        if out.len() + line.len() > room {
            return out;
        }
        out.extend_from_slice(&line);
    }
}

/// Reads the tracking header of a datagram, or `None` if it carries none.
pub fn decode(d: &[u8]) -> Option<Header> {
    if d.len() >= RAW_HEADER && d.starts_with(b"UL") {
        return Some(Header {
            stream: u32::from(u16::from_le_bytes([d[2], d[3]])),
            seq: u64::from(u32::from_le_bytes(d[4..8].try_into().ok()?)),
            sent_us: u64::from_le_bytes(d[8..16].try_into().ok()?),
        });
    }
    let rest = d.strip_prefix(b"ulg.")?;
    let colon = rest.iter().take(11).position(|&b| b == b':')?;
    let stream = number(&rest[..colon])?;
    let rest = &rest[colon + 1..];
    let seq = number(rest.get(..SEQ_DIGITS)?)?;
    let sent_us = number(rest.get(SEQ_DIGITS + 1..SEQ_DIGITS + 1 + TS_DIGITS)?)?;
    (rest[SEQ_DIGITS] == b'.').then_some(Header {
        stream: u32::try_from(stream).ok()?,
        seq,
        sent_us,
    })
}

fn number(digits: &[u8]) -> Option<u64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_round_trips_at_every_size() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut buf = Vec::new();
        for format in [Format::Raw, Format::Statsd, Format::Dogstatsd] {
            for profile in [Profile::Fixed, Profile::Realistic] {
                for size in [0, 20, 64, 300, 1400] {
                    let h = Header {
                        stream: 12,
                        seq: 123_456,
                        sent_us: 1_763_000_000_123_456,
                    };
                    encode(format, profile, h, size, &mut rng, &mut buf);
                    assert_eq!(
                        buf.len(),
                        size.max(min_size(format, 12)),
                        "{format:?} {profile:?} {size}: exact size"
                    );
                    assert_eq!(
                        decode(&buf),
                        Some(h),
                        "{format:?} {profile:?} {size}: header survives"
                    );
                }
            }
        }
    }

    #[test]
    fn statsd_lines_are_valid() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut buf = Vec::new();
        encode(
            Format::Dogstatsd,
            Profile::Realistic,
            Header {
                stream: 0,
                seq: 1,
                sent_us: 2,
            },
            600,
            &mut rng,
            &mut buf,
        );
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.lines().count() > 3,
            "realistic datagrams carry several lines: {text}"
        );
        for line in text.lines() {
            let (name, rest) = line.split_once(':').expect("name:value");
            assert!(!name.is_empty());
            let mut fields = rest.split('|');
            assert!(
                fields.next().unwrap().parse::<f64>().is_ok(),
                "value is a number: {line}"
            );
            assert!(
                TYPES.contains(&fields.next().unwrap()),
                "known type: {line}"
            );
            for f in fields {
                assert!(
                    f.starts_with('@') || f.starts_with('#'),
                    "only sample rates and tags follow: {line}"
                );
            }
        }
    }

    #[test]
    fn junk_is_not_a_header() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"ulg.x:abc"), None);
        assert_eq!(decode(b"foo:1|c"), None);
        assert_eq!(decode(b"ulg.1:12345"), None, "truncated header");
    }
}
