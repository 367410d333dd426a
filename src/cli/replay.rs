//! `udptee replay`: its flags, checked into a [`ReplayPlan`](crate::replay::ReplayPlan).

use std::path::PathBuf;

use crate::config::{self, ConfigError};

/// `udptee replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Capture files (pcap or pcapng; Ethernet, Linux cooked v1/v2, raw IP or loopback frames),
    /// replayed one after the other.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to send every datagram (repeat for several targets).
    #[arg(long = "to", required = true, value_name = "HOST:PORT")]
    pub to: Vec<String>,
    /// `max` (flat out), or a factor for the recorded timing (1 = as recorded, 2.5 = 2.5 times faster).
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    pub speed: ReplaySpeed,
    /// A fixed rate in datagrams per second instead of the recorded timing (10k, 1.5M).
    #[arg(long, value_name = "N", value_parser = parse_pps)]
    pub pps: Option<f64>,
    /// Times through all the files.
    #[arg(long = "loop", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub loops: u64,
    /// Only datagrams recorded with this destination port.
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
}

/// `--speed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplaySpeed {
    /// Flat out.
    Max,
    /// The recorded gaps divided by this.
    Factor(f64),
}

fn parse_speed(s: &str) -> Result<ReplaySpeed, String> {
    if s == "max" {
        return Ok(ReplaySpeed::Max);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 && f <= 1e6 => Ok(ReplaySpeed::Factor(f)),
        _ => Err(format!(
            "{s:?} is neither max nor a factor above 0 (1 = as recorded)"
        )),
    }
}

fn parse_pps(s: &str) -> Result<f64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1e3),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * mult <= 1e9 => Ok(v * mult),
        _ => Err(format!("{s:?} is not a rate above 0 (e.g. 10k, 1.5M)")),
    }
}

impl ReplayArgs {
    /// The plan, with targets resolved.
    pub fn plan(&self) -> Result<crate::replay::ReplayPlan, ConfigError> {
        let targets = self
            .to
            .iter()
            .map(|t| config::resolve(t))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(t) = targets.iter().find(|t| t.port() == 0) {
            return Err(ConfigError::PortZero {
                target: t.to_string(),
            });
        }
        Ok(crate::replay::ReplayPlan {
            files: self.files.clone(),
            targets,
            pace: match (self.pps, self.speed) {
                (Some(pps), _) => crate::replay::Pace::Pps(pps),
                (None, ReplaySpeed::Max) => crate::replay::Pace::Max,
                (None, ReplaySpeed::Factor(f)) => crate::replay::Pace::Speed(f),
            },
            loops: self.loops,
            port: self.port,
        })
    }
}
