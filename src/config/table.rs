//! A `[[target]]` table (or an API body) made a [`TargetSpec`], with the file's defaults for what
//! it omits: a plain target, a Unix socket target, or a group. Floor 1: above `file`, `group` and
//! `target`, whose types it fills.

use super::Config;
use super::error::ConfigError;
use super::file::{FileMember, FileTarget};
use super::group::{DEFAULT_GROUP_MAX_DATAGRAM, DEFAULT_HEALTH_INTERVAL, GroupSpec, MemberSpec};
use super::target::{TargetSpec, unixgram_name, unixgram_path};

/// A target from a `[[target]]` table or an API body, with `config`'s defaults for what it omits.
/// `name` (the API path) wins over the table's own name.
pub fn target_from_table(
    config: &Config,
    t: &FileTarget,
    name: Option<&str>,
) -> Result<TargetSpec, ConfigError> {
    if let Some(members) = &t.members {
        return group_from_table(config, t, members, name);
    }
    // How an error names this table: the API path's name, its own name, or its address.
    let shown = || {
        name.map(str::to_owned)
            .or(t.name.clone())
            .unwrap_or(t.addr.clone())
    };
    if t.addr.is_empty() {
        return Err(ConfigError::BadValue {
            what: "target",
            got: shown(),
            expected: "a table with `addr = \"HOST:PORT\"` (or `members`, for a group)",
        });
    }
    if t.health_interval.is_some() || t.max_datagram.is_some() {
        return Err(ConfigError::BadValue {
            what: "target",
            got: shown(),
            expected: "`health-interval` and `max-datagram` only on a group (a target with `members`)",
        });
    }
    let unix = unixgram_path(&t.addr).transpose()?;
    let tcp = t.addr.strip_prefix(super::listen::TCP);
    let stream_path = match super::ListenAddr::parse(&t.addr) {
        Ok(super::ListenAddr::UnixStream(p)) => Some(p),
        Err(e) if t.addr.starts_with(super::listen::UNIX_STREAM) => return Err(e),
        _ => None,
    };
    if t.addr.contains("://") && unix.is_none() && tcp.is_none() && stream_path.is_none() {
        return Err(ConfigError::BadValue {
            what: "target address",
            got: t.addr.chars().take(200).collect(),
            expected: "HOST:PORT (UDP), unixgram:///PATH, tcp://HOST:PORT or unix:///PATH",
        });
    }
    // A Unix target has no IP address; a placeholder that no rule about addresses applies to.
    let resolved = match (&unix, &stream_path) {
        (None, None) => config.resolver.0.resolve(tcp.unwrap_or(&t.addr))?,
        _ => std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    Ok(TargetSpec {
        name: name
            .map(str::to_owned)
            .or_else(|| t.name.clone())
            .unwrap_or_else(|| match (&unix, tcp, &stream_path) {
                (Some(path), _, _) => unixgram_name(path),
                // A name may not hold `/`: `tcp:HOST:PORT`, `unix:` and the path with `.`.
                (None, Some(host_port), _) => format!("tcp:{host_port}"),
                (None, None, Some(path)) => unixgram_name(path).replacen("unixgram:", "unix:", 1),
                (None, None, None) => t.addr.clone(),
            }),
        addr: t.addr.clone(),
        resolved,
        enabled: t.enabled.unwrap_or(true),
        queue_depth: t.queue_depth.unwrap_or(config.queue_depth),
        queue_bytes: t.queue_bytes.unwrap_or(config.queue_bytes),
        sndbuf_bytes: t.sndbuf.or(config.sndbuf_bytes),
        lines: t.line_settings(),
        parity: t.parity.unwrap_or(false),
        unix,
        group: None,
        preserve_source: t.preserve_source,
        tcp: tcp.is_some(),
        stream_path,
        max_rate: max_rate(t)?,
    })
}

/// A table's `max-rate`, read.
fn max_rate(t: &FileTarget) -> Result<Option<super::MaxRate>, ConfigError> {
    t.max_rate
        .as_deref()
        .map(|r| {
            r.parse().map_err(|_| ConfigError::BadValue {
                what: "max-rate",
                got: r.chars().take(200).collect(),
                expected: "N/s, N datagrams/s or N lines/s, N from 1 to 1000000000",
            })
        })
        .transpose()
}

/// A group target: its members resolved, its settings with their defaults. Its line and queue
/// settings are read as a target's.
fn group_from_table(
    config: &Config,
    t: &FileTarget,
    members: &[FileMember],
    name: Option<&str>,
) -> Result<TargetSpec, ConfigError> {
    let Some(name) = name.map(str::to_owned).or_else(|| t.name.clone()) else {
        return Err(ConfigError::BadValue {
            what: "target",
            got: "a group without a name".into(),
            expected: "`name` on every target with `members`",
        });
    };
    if !t.addr.is_empty() {
        return Err(ConfigError::Group {
            target: name,
            reason: "give `members` or `addr`, not both".into(),
        });
    }
    let members = members
        .iter()
        .map(|m| {
            Ok(MemberSpec {
                addr: m.addr.clone(),
                resolved: config.resolver.0.resolve(&m.addr)?,
                admin: m.admin.clone(),
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(TargetSpec {
        name,
        addr: String::new(),
        resolved: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        enabled: t.enabled.unwrap_or(true),
        queue_depth: t.queue_depth.unwrap_or(config.queue_depth),
        queue_bytes: t.queue_bytes.unwrap_or(config.queue_bytes),
        sndbuf_bytes: t.sndbuf.or(config.sndbuf_bytes),
        lines: t.line_settings(),
        parity: t.parity.unwrap_or(false),
        unix: None,
        group: Some(GroupSpec {
            members,
            health_interval: t.health_interval.map_or(DEFAULT_HEALTH_INTERVAL, |d| d.0),
            max_datagram: t.max_datagram.unwrap_or(DEFAULT_GROUP_MAX_DATAGRAM),
        }),
        preserve_source: t.preserve_source,
        tcp: false,
        stream_path: None,
        max_rate: max_rate(t)?,
    })
}
