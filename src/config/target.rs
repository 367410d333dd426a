//! A target as configured ([`TargetSpec`]) and the checks of a target set: names, sizes,
//! duplicates, the count, and loops back into the listen socket. The same words at start-up, on
//! reload and from the admin API. Floor 1.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use super::addr::{UNIXGRAM, unixgram_path};
use super::addr::{canonical, local_addresses};
use super::error::ConfigError;
use super::group::GroupSpec;
use super::limits::*;
use super::lines::LineSettings;
use super::listen::{Listening, Origins};
use super::parse::check_range;

/// A receiver every datagram is copied to, with its own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    /// The target's name: the metric label and the admin API key (`--to NAME=ADDR`; by default the
    /// address as written).
    pub name: String,
    /// The address as written (a literal or `host:port`), looked up again every resolve interval
    /// when it names a host.
    pub addr: String,
    /// The resolved address the sender connects to.
    pub resolved: SocketAddr,
    /// `false`: kept in the set with its counters, nothing sent (counted `disabled`).
    pub enabled: bool,
    /// Most datagrams queued for this target.
    pub queue_depth: usize,
    /// Most bytes queued for this target.
    pub queue_bytes: usize,
    /// Send buffer asked for on the target socket; `None` keeps the kernel default.
    pub sndbuf_bytes: Option<usize>,
    /// Line settings (filters, sampling, rewrites); passthrough when none is set.
    pub lines: LineSettings,
    /// Digest what is sent for `GET /parity` even without line settings (those always do).
    pub parity: bool,
    /// A Unix datagram socket target (`unixgram:///path`); `resolved` is then a placeholder.
    pub unix: Option<PathBuf>,
    /// A group: lines sharded over members on statsd's ring; `addr` is then empty and `resolved`
    /// a placeholder.
    pub group: Option<GroupSpec>,
    /// `preserve-source`: send each copy with its sender's origin; `None` is the default (on for
    /// a Unix target fed by a Unix listener when udptee may, off for UDP).
    pub preserve_source: Option<bool>,
    /// A TCP target (`tcp://HOST:PORT`): statsd lines over one persistent connection.
    pub tcp: bool,
    /// A Unix stream target (`unix:///PATH`): DogStatsD frames over one persistent connection;
    /// `resolved` is then a placeholder.
    pub stream_path: Option<PathBuf>,
    /// `max-rate`: what is over it is dropped as `rate_limited`.
    pub max_rate: Option<super::MaxRate>,
}

/// The default name of a Unix socket target: `unixgram:` and the path with `/` as `.`.
pub fn unixgram_name(path: &std::path::Path) -> String {
    let p = path.to_string_lossy();
    let name: String = p
        .trim_start_matches('/')
        .chars()
        .map(|c| if c == '/' { '.' } else { c })
        .collect();
    format!("unixgram:{name}")
}

impl TargetSpec {
    /// A target named `name` at the literal address `addr`, with default settings.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            name: name.into(),
            addr: addr.to_string(),
            resolved: addr,
            enabled: true,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            sndbuf_bytes: None,
            lines: LineSettings::default(),
            parity: false,
            unix: None,
            group: None,
            preserve_source: None,
            tcp: false,
            stream_path: None,
            max_rate: None,
        }
    }

    /// Whether it sends over a connection of its own (a TCP or Unix stream target).
    pub fn is_stream(&self) -> bool {
        self.tcp || self.stream_path.is_some()
    }

    /// A TCP target named `name` at the literal address `addr`, with default settings.
    pub fn new_tcp(name: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            addr: format!("{}{addr}", super::listen::TCP),
            tcp: true,
            ..Self::new(name, addr)
        }
    }

    /// The address as written without its `tcp://` scheme: what a name look-up takes.
    pub fn host_port(&self) -> &str {
        self.addr
            .strip_prefix(super::listen::TCP)
            .unwrap_or(&self.addr)
    }

    /// True when `other` can be served by the same socket, backlog and sender (it differs in
    /// `enabled`, line settings or `parity` at most).
    pub fn same_incarnation(&self, other: &Self) -> bool {
        self.name == other.name
            && self.resolved == other.resolved
            && self.queue_depth == other.queue_depth
            && self.queue_bytes == other.queue_bytes
            && self.sndbuf_bytes == other.sndbuf_bytes
            && self.unix == other.unix
            && self.group == other.group
            && self.preserve_source == other.preserve_source
            && self.tcp == other.tcp
            && self.stream_path == other.stream_path
    }

    /// True when the address names a host (looked up again every resolve interval).
    pub fn is_host_name(&self) -> bool {
        self.unix.is_none()
            && self.stream_path.is_none()
            && self.group.is_none()
            && self.host_port().parse::<SocketAddr>().is_err()
    }
}

/// Checks a target set on its own: names, sizes, duplicates, loops, and the count. Used at start-up,
/// on reload and by the admin API, so each refuses the same things with the same words.
pub fn validate_targets(
    own: &Listening,
    targets: &[TargetSpec],
    max_targets: usize,
) -> Result<(), ConfigError> {
    if targets.len() > max_targets {
        return Err(ConfigError::Range {
            what: "the number of targets (--max-targets)",
            min: 0,
            max: max_targets,
            got: targets.len(),
        });
    }
    let locals = local_addresses();
    for (i, a) in targets.iter().enumerate() {
        check_name(&a.name)?;
        a.lines.validate().map_err(|reason| ConfigError::Lines {
            target: a.name.clone(),
            reason,
        })?;
        check_range("queue-depth", a.queue_depth, 1, MAX_QUEUE_DEPTH)?;
        check_range(
            "queue-bytes",
            a.queue_bytes,
            MIN_QUEUE_BYTES,
            MAX_QUEUE_BYTES,
        )?;
        check_origin(a, own.origins())?;
        check_rate(a)?;
        check_series(a)?;
        if let Some(group) = &a.group {
            if let Some(b) = targets[..i].iter().find(|b| b.name == a.name) {
                return Err(ConfigError::DuplicateName {
                    name: b.name.clone(),
                });
            }
            group.validate(&a.name)?;
            if a.parity {
                return Err(ConfigError::Group {
                    target: a.name.clone(),
                    reason: "`parity` is for a plain target, not a group".into(),
                });
            }
            for listen in &own.udp {
                if let Some(m) = group
                    .members
                    .iter()
                    .find(|m| forwards_to_itself(*listen, m.resolved, &locals))
                {
                    return Err(ConfigError::Loop {
                        target: format!("{} (member {})", a.name, m.addr),
                        listen: *listen,
                    });
                }
            }
            continue;
        }
        if let Some(path) = a.unix.as_ref().or(a.stream_path.as_ref()) {
            if a.stream_path.is_some() {
                check_stream_target(a)?;
            }
            if let Some(b) = targets[..i].iter().find(|b| b.name == a.name) {
                return Err(ConfigError::DuplicateName {
                    name: b.name.clone(),
                });
            }
            let same = |b: &TargetSpec| b.unix.as_ref().or(b.stream_path.as_ref()) == Some(path);
            if let Some(b) = targets[..i].iter().find(|b| same(b)) {
                return Err(ConfigError::DuplicateName {
                    name: format!("{} and {} (both {})", b.name, a.name, path.display()),
                });
            }
            // Any of udptee's own socket files: a unixgram one is a loop, a stream one a target
            // that could never be sent to.
            if let Some(l) = own
                .unixgram
                .iter()
                .chain(&own.unix)
                .find(|l| same_socket(l, path))
            {
                return Err(ConfigError::UnixLoop {
                    target: a.name.clone(),
                    path: path.clone(),
                    listen: l.to_path_buf(),
                    link: l != path.as_path(),
                });
            }
            continue;
        }
        if a.tcp {
            check_stream_target(a)?;
        }
        if a.resolved.port() == 0 {
            return Err(ConfigError::PortZero {
                target: a.name.clone(),
            });
        }
        if let Some(b) = targets[..i]
            .iter()
            .find(|b| b.tcp == a.tcp && canonical(b.resolved) == canonical(a.resolved))
        {
            return Err(ConfigError::DuplicateTarget {
                a: b.name.clone(),
                b: a.name.clone(),
                addr: a.resolved,
            });
        }
        if let Some(b) = targets[..i].iter().find(|b| b.name == a.name) {
            return Err(ConfigError::DuplicateName {
                name: b.name.clone(),
            });
        }
        let same_kind = if a.tcp { &own.tcp } else { &own.udp };
        if let Some(l) = same_kind
            .iter()
            .find(|l| forwards_to_itself(**l, a.resolved, &locals))
        {
            return Err(ConfigError::Loop {
                target: a.name.clone(),
                listen: *l,
            });
        }
    }
    Ok(())
}

/// A series budget is for a plain target's sender, which parses the lines: not a group (whose
/// sharder does), nor a stream target (which has no line settings yet).
fn check_series(a: &TargetSpec) -> Result<(), ConfigError> {
    if a.lines.max_series.is_some() && (a.group.is_some() || a.is_stream()) {
        return Err(ConfigError::BadValue {
            what: "max-series",
            got: a.name.clone(),
            expected: "a plain UDP or unixgram target (not a group or a stream target, yet)",
        });
    }
    Ok(())
}

/// A rate in lines needs the lines parsed: a target with line settings, not a group (whose
/// sharder parses them on its own).
fn check_rate(a: &TargetSpec) -> Result<(), ConfigError> {
    let Some(rate) = a.max_rate.filter(|r| r.unit == super::RateUnit::Lines) else {
        return Ok(());
    };
    if a.lines.is_passthrough() || a.group.is_some() || a.is_stream() {
        return Err(ConfigError::BadValue {
            what: "max-rate",
            got: format!("{} on {}", rate, a.name),
            expected: "N/s (datagrams) here: N lines/s counts lines, which only a plain target with line settings parses",
        });
    }
    Ok(())
}

/// What a stream target (TCP or Unix) does not do (yet): line settings, `parity`, keeping
/// origins. Its lines go out as received.
fn check_stream_target(a: &TargetSpec) -> Result<(), ConfigError> {
    let what = if !a.lines.is_passthrough() {
        "line settings"
    } else if a.parity {
        "`parity`"
    } else if a.preserve_source == Some(true) {
        "`preserve-source` (a stream has no per-line origin)"
    } else {
        return Ok(());
    };
    Err(ConfigError::BadValue {
        what: "tcp:// or unix:// target",
        got: format!("{} with {what}", a.name),
        expected: "a stream target without line settings, parity or preserve-source (not supported on streams yet)",
    })
}

/// `preserve-source = true` where the origin cannot be kept: a Unix sender's credentials mean
/// nothing to a UDP receiver, and a UDP client's address cannot be a Unix sender's; with
/// listeners of both kinds some copies could keep it and others not; a group re-batches the
/// lines of many senders into one datagram.
fn check_origin(a: &TargetSpec, origins: Origins) -> Result<(), ConfigError> {
    if a.preserve_source != Some(true) {
        return Ok(());
    }
    let reason = match (a.group.is_some(), origins, a.unix.is_some()) {
        (true, _, _) => "a group packs lines of many senders into one datagram",
        (_, Origins::Mixed, _) => {
            "udptee listens for senders known by address (UDP, TCP) and by credentials (Unix):              some copies could not keep theirs"
        }
        (_, Origins::Credentials, false) => {
            "a Unix listener's senders have credentials, not an address a UDP target could see"
        }
        (_, Origins::Addresses, true) => {
            "a UDP client's address cannot be a Unix sender's credentials"
        }
        _ => return Ok(()),
    };
    Err(ConfigError::Origin {
        target: a.name.clone(),
        reason: reason.into(),
    })
}

/// Names are metric labels and URL path segments: letters, digits and `._:-[]`, 1 to 128 bytes,
/// and not `.` or `..` (a path segment that means this or the parent resource).
pub fn check_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Name {
            name: name.chars().take(MAX_NAME_LEN).collect(),
        })
    }
}

/// True when `target` reaches the listen socket itself, in any spelling: the same address, an
/// IPv4-mapped IPv6 form of it, any loopback address (the whole 127/8 range) or any of this host's
/// own addresses when listening on a wildcard, or the wildcard itself. Forwarding there would
/// multiply every datagram forever.
fn forwards_to_itself(listen: SocketAddr, target: SocketAddr, locals: &[IpAddr]) -> bool {
    let (l, t) = (canonical(listen), canonical(target));
    if l.port() == 0 || l.port() != t.port() {
        return false;
    }
    let (l, t) = (l.ip(), t.ip());
    let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified() || locals.contains(&ip);
    if l.is_unspecified() {
        // A wildcard listener receives on every local address of its family (and an IPv6 wildcard,
        // dual-stack by default, on IPv4 ones too).
        return local(t) && (l.is_ipv6() || t.is_ipv4());
    }
    // A specific address receives only what is sent to it; an unspecified destination means this host.
    l == t || t.is_unspecified()
}

/// Whether two socket paths name one socket: the same path, or (a symbolic or hard link) the same
/// inode on the same device. A socket's identity is its inode, not its spelling.
pub fn same_socket(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
