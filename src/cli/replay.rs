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
    /// `max` (flat out), or a factor for the recorded timing from 0.001 to 1000000 (1 = as recorded,
    /// 2.5 = 2.5 times faster).
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    pub speed: ReplaySpeed,
    /// A fixed rate in datagrams per second instead of the recorded timing, from 0.01 to 1G (10k,
    /// 1.5M).
    #[arg(long, value_name = "N", value_parser = parse_pps)]
    pub pps: Option<f64>,
    /// Times through all the files.
    #[arg(long = "loop", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub loops: u64,
    /// Only datagrams recorded with this destination port.
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
    /// Send each datagram from its recorded source address and port, as the client sent it (a raw
    /// socket: needs CAP_NET_RAW). A datagram recorded from a Unix listener carries its sender's
    /// credentials instead (source fd75:6474::/32) and cannot keep them towards a UDP target: it is
    /// counted `origin lost` and not sent.
    #[arg(long)]
    pub preserve_source: bool,
}

/// `--speed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplaySpeed {
    /// Flat out.
    Max,
    /// The recorded gaps divided by this.
    Factor(f64),
}

/// Slowest `--speed`: a thousand times slower than recorded (a second's gap takes 17 minutes).
const MIN_SPEED: f64 = 1e-3;
/// Fastest `--speed` factor; beyond it, `max` says what is meant.
const MAX_SPEED: f64 = 1e6;
/// Lowest `--pps`: one datagram every 100 seconds.
const MIN_PPS: f64 = 1e-2;
/// Highest `--pps`: far beyond what one socket sends; `--speed max` says flat out.
const MAX_PPS: f64 = 1e9;

fn parse_speed(s: &str) -> Result<ReplaySpeed, String> {
    if s == "max" {
        return Ok(ReplaySpeed::Max);
    }
    match s.parse::<f64>() {
        Ok(f) if (MIN_SPEED..=MAX_SPEED).contains(&f) => Ok(ReplaySpeed::Factor(f)),
        _ => Err(format!(
            "{s:?}: expected max, or a factor from {MIN_SPEED} (1000 times slower) to {MAX_SPEED} (1 = as recorded)"
        )),
    }
}

fn parse_pps(s: &str) -> Result<f64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1e3),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    match num.parse::<f64>().map(|v| v * mult) {
        Ok(v) if (MIN_PPS..=MAX_PPS).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?}: expected datagrams per second from {MIN_PPS} to {MAX_PPS} (e.g. 10k, 1.5M)"
        )),
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
            preserve_source: self.preserve_source,
        })
    }
}
