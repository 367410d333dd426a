//! A target's line settings as configured (`include`, `exclude`, `tags-*`, `sample`, `sample-by`,
//! `add-tags`, `prefix`, `strip-fields`, `malformed`) and their check. The filter that applies them is
//! `statsd::filter`; it imports these, never the other way round. Floor 1.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;

use globset::{Glob, GlobSet, GlobSetBuilder};

/// `sample-by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SampleBy {
    /// Keep a fixed set of names, chosen by a stable hash: complete series for a subset.
    #[default]
    Name,
    /// Keep each line at random, scaling up `@rate` of counts and samples so totals stay unbiased.
    Line,
}

/// `malformed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMalformed {
    /// Forward it unchanged (and count it).
    #[default]
    Forward,
    /// Drop it (and count it).
    Drop,
}

/// `cardinality`: what becomes of a line of a new series once `max-series` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cardinality {
    /// Drop it (and count it `series_limited`).
    #[default]
    Drop,
    /// Keep it without its tags (and count it `series_limited`): the name's totals stay right.
    StripTags,
}

/// The window a series budget counts distinct series in, by default: an hour.
pub const DEFAULT_SERIES_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);
/// The largest `max-series`: ten million (each costs about 32 bytes).
pub const MAX_SERIES: u64 = 10_000_000;

/// Slots in each of a series budget's two tables: a power of two at least twice the budget.
pub fn series_slots(budget: u64) -> usize {
    usize::try_from(budget.saturating_mul(2))
        .unwrap_or(usize::MAX / 2)
        .next_power_of_two()
        .max(16)
}

impl LineSettings {
    /// Bytes the series budget holds (none without one).
    pub fn series_bytes(&self) -> usize {
        self.max_series
            .map_or(0, |n| 2 * series_slots(n) * size_of::<u64>())
    }
}

fn ser_window<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// A target's line settings, as configured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LineSettings {
    /// Name globs to keep (none: every name).
    pub include: Vec<String>,
    /// Name globs to drop; wins over `include`.
    pub exclude: Vec<String>,
    /// Tag globs of which a line must carry one (none: any line).
    pub tags_include: Vec<String>,
    /// Tag globs of which a line must carry none.
    pub tags_exclude: Vec<String>,
    /// Fraction kept, in (0, 1].
    pub sample: Option<f64>,
    /// How the fraction is chosen.
    pub sample_by: SampleBy,
    /// Tags added to every line of this target's copy.
    pub add_tags: Vec<String>,
    /// Prefix added to every metric and service check name of this target's copy.
    pub prefix: String,
    /// DogStatsD origin fields removed from every line of this target's copy (`c`, `e`, `card`).
    pub strip_fields: Vec<String>,
    /// What to do with lines that are not statsd.
    pub malformed: OnMalformed,
    /// `max-series`: the most distinct series (name, type, tag set) this target sees in a window.
    pub max_series: Option<u64>,
    /// `series-window`: how long a series counts against the budget (two halves; see the filter).
    #[serde(serialize_with = "ser_window")]
    pub series_window: std::time::Duration,
    /// `cardinality`: a line of a new series over the budget is dropped or stripped of its tags.
    pub cardinality: Cardinality,
}

impl Default for LineSettings {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: Vec::new(),
            tags_include: Vec::new(),
            tags_exclude: Vec::new(),
            sample: None,
            sample_by: SampleBy::default(),
            add_tags: Vec::new(),
            prefix: String::new(),
            strip_fields: Vec::new(),
            malformed: OnMalformed::default(),
            max_series: None,
            series_window: DEFAULT_SERIES_WINDOW,
            cardinality: Cardinality::default(),
        }
    }
}

/// The fields `strip-fields` may name: DogStatsD's in-band origin (`|c:` container, protocol
/// v1.2; `|e:` external data, v1.5; `|card:` cardinality, v1.6).
pub const STRIPPABLE: [&str; 3] = ["c", "e", "card"];

impl LineSettings {
    /// No line setting at all: the target gets every datagram as received, unparsed.
    pub fn is_passthrough(&self) -> bool {
        self.include.is_empty()
            && self.exclude.is_empty()
            && self.tags_include.is_empty()
            && self.tags_exclude.is_empty()
            && self.sample.is_none()
            && self.add_tags.is_empty()
            && self.prefix.is_empty()
            && self.strip_fields.is_empty()
            && self.max_series.is_none()
    }

    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, globs) in [
            ("include", &self.include),
            ("exclude", &self.exclude),
            ("tags-include", &self.tags_include),
            ("tags-exclude", &self.tags_exclude),
        ] {
            glob_set(globs).map_err(|e| format!("{key}: {e}"))?;
        }
        if let Some(s) = self.sample {
            if !(s > 0.0 && s <= 1.0) {
                return Err(format!("sample {s}: expected a fraction in (0, 1]"));
            }
        }
        for t in &self.add_tags {
            if t.is_empty() || t.bytes().any(|b| matches!(b, b',' | b'|' | b'\n' | b'#')) {
                return Err(format!(
                    "add-tags {t:?}: a tag is non-empty, without ',', '|', '#' or newline"
                ));
            }
        }
        if let Some(f) = self
            .strip_fields
            .iter()
            .find(|f| !STRIPPABLE.contains(&f.as_str()))
        {
            return Err(format!(
                "strip-fields {f:?}: expected some of \"c\", \"e\", \"card\" (DogStatsD's origin fields)"
            ));
        }
        if let Some(n) = self.max_series {
            if n == 0 || n > MAX_SERIES {
                return Err(format!("max-series {n}: expected 1 to {MAX_SERIES}"));
            }
        }
        if self.series_window < std::time::Duration::from_secs(2) {
            return Err(format!(
                "series-window {}: expected at least 2s",
                humantime::format_duration(self.series_window)
            ));
        }
        if self
            .prefix
            .bytes()
            .any(|b| matches!(b, b':' | b'|' | b'\n' | b'@' | b'#'))
        {
            return Err(format!(
                "prefix {:?}: no ':', '|', '@', '#' or newline",
                self.prefix
            ));
        }
        Ok(())
    }
}

/// Compiles globs into one set; `None` for no globs.
pub(crate) fn glob_set(globs: &[String]) -> Result<Option<GlobSet>, String> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| format!("{g:?}: {e}"))?);
    }
    b.build().map(Some).map_err(|e| e.to_string())
}

/// Whether a glob set matches these bytes (a name or a tag, not necessarily UTF-8).
pub(crate) fn matches(set: &GlobSet, bytes: &[u8]) -> bool {
    set.is_match(OsStr::from_bytes(bytes))
}
