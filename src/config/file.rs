//! The TOML configuration file (`--config PATH`): every flag has a key of the same name, and targets
//! are `[[target]]` tables with their own settings.
//!
//! Parsed with serde and the `toml` crate; unknown keys and wrong types are errors that name the file,
//! line, column and key. Values are checked by the same parsers as the flags (sizes take suffixes,
//! durations units). Nothing here is on the hot path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A size: an integer of bytes, or a string with a suffix (`"4MiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => usize::try_from(n)
                .map(Size)
                .map_err(|_| serde::de::Error::custom("too large")),
            Raw::Text(s) => super::parse_bytes(&s)
                .map(Size)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written with a unit (`"10s"`, `"250ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// A key that takes one value or a list (`listen = "..."` or `listen = ["...", "..."]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// The file's top level: the flags' keys, and the targets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(missing_docs)]
pub struct FileConfig {
    pub listen: Option<OneOrMany>,
    pub max_connections: Option<usize>,
    pub idle_timeout: Option<Dur>,
    pub pack_size: Option<Size>,
    pub admin: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub user: Option<String>,
    pub workers: Option<u16>,
    pub cpus: Option<String>,
    pub sender_cpus: Option<String>,
    pub batch: Option<usize>,
    pub queue_depth: Option<usize>,
    pub queue_bytes: Option<Size>,
    pub max_targets: Option<usize>,
    pub rcvbuf: Option<Size>,
    pub sndbuf: Option<Size>,
    pub max_datagram: Option<Size>,
    pub stats_interval: Option<Dur>,
    pub drain_timeout: Option<Dur>,
    pub resolve_interval: Option<Dur>,
    pub latency: Option<bool>,
    pub histogram_log: Option<PathBuf>,
    pub io: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub allow: Option<Vec<String>>,
    pub fast_path: Option<String>,
    pub fast_path_interfaces: Option<Vec<String>>,
    pub control_socket: Option<String>,
    pub unix_mode: Option<String>,
    pub unix_owner: Option<String>,
    /// `[[target]]` tables.
    #[serde(rename = "target")]
    pub targets: Option<Vec<FileTarget>>,
    /// The `[record]` table.
    pub record: Option<FileRecord>,
}

/// The `[record]` table: the `--record*` flags without their prefix.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(missing_docs)]
pub struct FileRecord {
    pub path: Option<PathBuf>,
    pub start: Option<bool>,
    pub max_bytes: Option<Size>,
    pub rotate: Option<Dur>,
    pub keep: Option<usize>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub queue_bytes: Option<Size>,
}

/// One `[[target]]` table, or the body of `PUT /targets/{name}`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileTarget {
    /// The name (defaults to `addr` as written; in the API, the path names it).
    pub name: Option<String>,
    /// `HOST:PORT` (or `unixgram:///path`); empty for a group, which has `members`.
    #[serde(default)]
    pub addr: String,
    /// `false`: kept in the set, nothing sent, counted `disabled`.
    pub enabled: Option<bool>,
    /// Per-target `queue-depth`.
    pub queue_depth: Option<usize>,
    /// Per-target `queue-bytes` (bytes, or a string with a suffix).
    #[serde(default, deserialize_with = "opt_size", serialize_with = "ser_size")]
    pub queue_bytes: Option<usize>,
    /// Per-target `sndbuf`.
    #[serde(default, deserialize_with = "opt_size", serialize_with = "ser_size")]
    pub sndbuf: Option<usize>,
    /// Metric-name globs to keep.
    pub include: Option<Vec<String>>,
    /// Metric-name globs to drop (wins over `include`).
    pub exclude: Option<Vec<String>>,
    /// Tag globs of which a line must carry one.
    pub tags_include: Option<Vec<String>>,
    /// Tag globs of which a line must carry none.
    pub tags_exclude: Option<Vec<String>>,
    /// Fraction of names (or lines) kept.
    pub sample: Option<f64>,
    /// `name` or `line`.
    pub sample_by: Option<super::lines::SampleBy>,
    /// Tags added to this target's copy.
    pub add_tags: Option<Vec<String>>,
    /// Prefix added to this target's metric names.
    pub prefix: Option<String>,
    /// DogStatsD origin fields removed from this target's copy.
    pub strip_fields: Option<Vec<String>>,
    /// `forward` or `drop` lines that are not statsd.
    pub malformed: Option<super::lines::OnMalformed>,
    /// Digest what is sent for `GET /parity`.
    pub parity: Option<bool>,
    /// Send each copy with its sender's origin (credentials, or address and port).
    pub preserve_source: Option<bool>,
    /// `N/s` or `N lines/s`: the most this target is sent; the rest is `rate_limited`.
    pub max_rate: Option<String>,
    /// The most distinct series this target sees in `series-window`.
    pub max_series: Option<u64>,
    /// How long a series counts against `max-series` (default 1h).
    pub series_window: Option<Dur>,
    /// `drop` or `strip-tags`: a line of a new series over the budget.
    pub cardinality: Option<super::lines::Cardinality>,
    /// A group: lines sharded over these members on statsd's ring (instead of `addr`).
    pub members: Option<Vec<FileMember>>,
    /// A group's health check interval.
    pub health_interval: Option<Dur>,
    /// A group's largest re-batched datagram.
    #[serde(default, deserialize_with = "opt_size", serialize_with = "ser_size")]
    pub max_datagram: Option<usize>,
}

/// One member of a group: `{ addr = "HOST:PORT", admin = "HOST:PORT" }`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileMember {
    /// Where its lines go; its identity on the ring, as written.
    pub addr: String,
    /// statsd's admin port, checked with `health`.
    pub admin: Option<String>,
}

impl FileTarget {
    /// The line settings this table gives.
    pub fn line_settings(&self) -> super::lines::LineSettings {
        super::lines::LineSettings {
            include: self.include.clone().unwrap_or_default(),
            exclude: self.exclude.clone().unwrap_or_default(),
            tags_include: self.tags_include.clone().unwrap_or_default(),
            tags_exclude: self.tags_exclude.clone().unwrap_or_default(),
            sample: self.sample,
            sample_by: self.sample_by.unwrap_or_default(),
            add_tags: self.add_tags.clone().unwrap_or_default(),
            prefix: self.prefix.clone().unwrap_or_default(),
            strip_fields: self.strip_fields.clone().unwrap_or_default(),
            malformed: self.malformed.unwrap_or_default(),
            max_series: self.max_series,
            series_window: self
                .series_window
                .map_or(super::lines::DEFAULT_SERIES_WINDOW, |d| d.0),
            cardinality: self.cardinality.unwrap_or_default(),
        }
    }
}

fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    Ok(Option::<Size>::deserialize(d)?.map(|s| s.0))
}

fn ser_size<S: serde::Serializer>(v: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.serialize_u64(*n as u64),
        None => s.serialize_none(),
    }
}

/// A file read and parsed, with its text kept to point at the line of a later validation error.
#[derive(Debug)]
pub struct Loaded {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// What it says.
    pub config: FileConfig,
}

impl Loaded {
    /// Reads and parses `path`. The error names the file, and for a parse error the line, column and
    /// key.
    pub fn read(path: &Path) -> Result<Self, String> {
        match Self::read_all(path) {
            (Some(loaded), errors) if errors.is_empty() => Ok(loaded),
            (_, mut errors) => Err(errors.remove(0)),
        }
    }

    /// Like [`read`](Self::read), with every bad `key = value` line rather than the first (`udptee
    /// check`): each one found is set aside and the rest parsed again, while what remains is still
    /// valid TOML; the file without them comes back too when it parses, so that its values can be
    /// checked in turn. A syntax error stops the search. Without a file, the errors are not empty.
    pub fn read_all(path: &Path) -> (Option<Self>, Vec<String>) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return (None, vec![format!("{}: cannot read: {e}", path.display())]),
        };
        let mut errors = Vec::new();
        let mut rest = text.clone();
        // Each round sets one line aside; a file has only so many.
        for _ in 0..=rest.lines().count() {
            let e = match toml::from_str::<FileConfig>(&rest) {
                Ok(config) => {
                    let loaded = Self {
                        path: path.to_owned(),
                        text,
                        config,
                    };
                    return (Some(loaded), errors);
                }
                Err(e) => e,
            };
            let place = e
                .span()
                .map(|s| position(&rest, s.start))
                .map_or(String::new(), |(l, c)| format!(":{l}:{c}"));
            let key = e.span().and_then(|s| key_at(&rest, s.start));
            errors.push(format!(
                "{}{place}:{} {}",
                path.display(),
                key.as_ref()
                    .map_or(String::new(), |k| format!(" key `{k}`:")),
                e.message().trim().replace('\n', "; ")
            ));
            // Set the line aside (keeping every line's number) and go on if the rest still parses.
            let (Some(span), Some(_)) = (e.span(), key) else {
                break;
            };
            let (line, _) = position(&rest, span.start);
            let next: Vec<&str> = rest
                .split('\n')
                .enumerate()
                .map(|(i, l)| if i + 1 == line { "" } else { l })
                .collect();
            let next = next.join("\n");
            if next.parse::<toml::Table>().is_err() {
                break;
            }
            rest = next;
        }
        (None, errors)
    }

    /// Prefixes `message` with the file and, when found, the line and column of `key` (top-level) or
    /// of a line holding the quoted `value`.
    pub fn locate(&self, key: Option<&str>, value: Option<&str>, message: &str) -> String {
        let found = key
            .and_then(|k| find_key(&self.text, k))
            .or_else(|| value.and_then(|v| find_value(&self.text, v)));
        match found {
            Some((line, col, k)) => {
                format!("{}:{line}:{col}: key `{k}`: {message}", self.path.display())
            }
            None => format!("{}: {message}", self.path.display()),
        }
    }
}

/// 1-based line and column of byte `offset`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The key of the `key = value` line holding byte `offset`, if it is one.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let (line, _) = position(text, offset);
    let l = text.lines().nth(line - 1)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('[')).then(|| k.to_owned())
}

/// Line, column and key of the first `key = ...` line for `key`.
fn find_key(text: &str, key: &str) -> Option<(usize, usize, String)> {
    text.lines().enumerate().find_map(|(i, l)| {
        let (k, _) = l.split_once('=')?;
        (k.trim() == key).then(|| (i + 1, l.len() - l.trim_start().len() + 1, key.to_owned()))
    })
}

/// Line, column and key of the first line whose value is the quoted `value`.
fn find_value(text: &str, value: &str) -> Option<(usize, usize, String)> {
    let quoted = format!("\"{value}\"");
    text.lines().enumerate().find_map(|(i, l)| {
        let col = l.find(&quoted)?;
        let key = l.split_once('=').map_or("", |(k, _)| k).trim().to_owned();
        Some((i + 1, col + 1, key))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, String> {
        let dir = std::env::temp_dir().join(format!("udptee-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("t{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        let r = Loaded::read(&path).map(|l| l.config);
        let _ = std::fs::remove_file(&path);
        r
    }

    #[test]
    fn every_key_and_target_tables_parse() {
        let c = parse(
            r#"
listen = "0.0.0.0:8125"
queue-bytes = "2MiB"
rcvbuf = 1048576
stats-interval = "5s"
[[target]]
name = "statsd"
addr = "127.0.0.1:8126"
[[target]]
addr = "127.0.0.1:8127"
enabled = false
queue-depth = 10
"#,
        )
        .unwrap();
        assert_eq!(c.queue_bytes, Some(Size(2 << 20)), "sizes take suffixes");
        assert_eq!(c.rcvbuf, Some(Size(1 << 20)), "or plain integers");
        assert_eq!(c.stats_interval, Some(Dur(Duration::from_secs(5))));
        let t = c.targets.unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].enabled, Some(false));
        assert_eq!(t[1].queue_depth, Some(10));
    }

    #[test]
    fn errors_name_line_column_and_key() {
        let e = parse("listen = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(e.contains(":2:1:") && e.contains("bogus"), "{e}");
        let e = parse("listen = \"127.0.0.1:1\"\nbatch = \"many\"\n").unwrap_err();
        assert!(e.contains(":2:") && e.contains("key `batch`"), "{e}");
        let e = parse("rcvbuf = \"lots\"\n").unwrap_err();
        assert!(e.contains(":1:") && e.contains("rcvbuf"), "{e}");
        let e = parse("[[target]]\naddr = \"x:1\"\nport = 3\n").unwrap_err();
        assert!(e.contains(":3:") && e.contains("port"), "{e}");
        let e = parse("listen = [").unwrap_err();
        assert!(e.contains(":1:"), "a syntax error has a place too: {e}");
    }
}
