//! `max-rate`: a per-target cap on what it is sent, in datagrams per second (`"2000/s"`) or, for a
//! target with line settings, in statsd lines per second (`"50000 lines/s"`). Floor 1.

use std::fmt;
use std::str::FromStr;

/// What a rate counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    /// Datagrams (copies) per second.
    Datagrams,
    /// statsd lines per second (a target with line settings: its sender parses them).
    Lines,
}

/// A target's `max-rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxRate {
    /// How many per second.
    pub per_second: u64,
    /// Of what.
    pub unit: RateUnit,
}

/// The most a rate may be: a billion a second, past any receiver.
pub const MAX_RATE: u64 = 1_000_000_000;

impl FromStr for MaxRate {
    type Err = String;

    /// `N/s`, `N datagrams/s` or `N lines/s` (`N` a whole number, 1 to a billion; `_` may group
    /// its digits).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?}: expected N/s, N datagrams/s or N lines/s, N from 1 to {MAX_RATE}");
        let body = s.trim().strip_suffix("/s").ok_or_else(bad)?;
        let (n, unit) = match body.trim().split_once(char::is_whitespace) {
            None => (body.trim(), RateUnit::Datagrams),
            Some((n, "datagrams" | "datagram")) => (n, RateUnit::Datagrams),
            Some((n, "lines" | "line")) => (n, RateUnit::Lines),
            Some(_) => return Err(bad()),
        };
        let per_second: u64 = n.replace('_', "").parse().map_err(|_| bad())?;
        if per_second == 0 || per_second > MAX_RATE {
            return Err(bad());
        }
        Ok(Self { per_second, unit })
    }
}

impl fmt::Display for MaxRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit {
            RateUnit::Datagrams => write!(f, "{}/s", self.per_second),
            RateUnit::Lines => write!(f, "{} lines/s", self.per_second),
        }
    }
}

impl serde::Serialize for MaxRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_unit_and_bad_ones_are_refused() {
        let r = |s: &str| s.parse::<MaxRate>();
        assert_eq!(
            r("2000/s"),
            Ok(MaxRate {
                per_second: 2000,
                unit: RateUnit::Datagrams
            })
        );
        assert_eq!(r("50_000 lines/s").unwrap().unit, RateUnit::Lines);
        assert_eq!(r(" 7 datagrams/s ").unwrap().per_second, 7);
        for bad in [
            "0/s",
            "2000",
            "2000/m",
            "-1/s",
            "1.5/s",
            "10 bytes/s",
            "",
            "/s",
        ] {
            assert!(r(bad).is_err(), "{bad}");
        }
        assert_eq!(r("50000 lines/s").unwrap().to_string(), "50000 lines/s");
    }
}
