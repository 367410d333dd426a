//! The string parsers shared by the flags and the file: byte sizes with units, durations, CPU
//! lists, and the range check every numeric setting goes through. Floor 1.

use std::time::Duration;

use super::error::ConfigError;
use super::limits::MAX_CPU_ID;

/// Parses `8MiB`, `512k`, `4096` into bytes (binary multiples: `k` = 1024). A fraction is accepted
/// only where it makes whole bytes (`1.5KiB`), never `1.5`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let n = parse_size::Config::new()
        .with_binary()
        .parse_size(t)
        .map_err(|e| format!("{e} (expected a size such as 4096, 512KiB or 8MiB)"))?;
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    if t[..digits].contains('.') {
        let unit = parse_size::Config::new()
            .with_binary()
            .parse_size(format!("1{}", &t[digits..]))
            .unwrap_or(1);
        let exact = t[..digits].replace('_', "").parse::<f64>().unwrap_or(0.5) * unit as f64;
        if exact.fract() != 0.0 {
            return Err(format!("{s:?} is not a whole number of bytes"));
        }
    }
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= 1 << 40)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses `10s`, `250ms`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 10s or 250ms)"))
}

/// Parses a Linux cpulist (`0-3,6`, as in `/sys/devices/system/cpu/online`) and checks every CPU exists.
pub fn parse_cpus(flag: &'static str, list: &str) -> Result<Vec<usize>, ConfigError> {
    let bad = |problem: String| ConfigError::Cpus {
        flag,
        list: list.to_owned(),
        problem,
    };
    // The cpulist crate expands ranges eagerly: bound the numbers first so `0-4000000000` is an error,
    // not a 16 GB allocation.
    if list.split([',', '-', ':']).any(|n| {
        n.trim()
            .parse::<u64>()
            .is_ok_and(|n| n > u64::from(MAX_CPU_ID))
    }) {
        return Err(bad(format!(
            "CPU numbers above {MAX_CPU_ID} are not supported"
        )));
    }
    let cpus = cpulist::parse(list.trim()).map_err(|e| {
        let e = e.to_string();
        bad(e
            .lines()
            .next()
            .unwrap_or("not a CPU list")
            .trim()
            .to_owned())
    })?;
    if cpus.is_empty() {
        return Err(bad("the list is empty".into()));
    }
    let online: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect();
    let cpus: Vec<usize> = cpus.into_iter().map(|c| c as usize).collect();
    if let Some(missing) = cpus.iter().find(|c| !online.contains(c)) {
        return Err(bad(format!(
            "CPU {missing} is not available to this process (allowed: {online:?})"
        )));
    }
    Ok(cpus)
}

/// `got` within `min..=max`, or a range error naming `what`.
pub(crate) fn check_range(
    what: &'static str,
    got: usize,
    min: usize,
    max: usize,
) -> Result<(), ConfigError> {
    if got < min || got > max {
        return Err(ConfigError::Range {
            what,
            min,
            max,
            got,
        });
    }
    Ok(())
}
