//! Addresses: resolving `host:port`, the one spelling of an address ([`canonical`]), this host's
//! own addresses, and a Unix datagram listen socket's settings. Floor 1.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use super::error::ConfigError;

/// Looks host names up; a seam so tests can change what a name resolves to.
pub trait Resolve: Send + Sync {
    /// The address `spec` (`host:port`) resolves to now.
    fn resolve(&self, spec: &str) -> Result<SocketAddr, ConfigError>;
}

/// The system resolver (getaddrinfo, through `ToSocketAddrs`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, spec: &str) -> Result<SocketAddr, ConfigError> {
        resolve(spec)
    }
}

/// The resolver a forwarder uses.
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn Resolve>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self(Arc::new(SystemResolver))
    }
}

/// The scheme of Unix datagram socket addresses: `unixgram:///var/run/datadog/dsd.socket`.
pub const UNIXGRAM: &str = "unixgram://";

/// The path of a `unixgram:///path` address, if it is one; the path must be absolute.
pub fn unixgram_path(addr: &str) -> Option<Result<PathBuf, ConfigError>> {
    socket_path(
        addr,
        UNIXGRAM,
        "unixgram address",
        "unixgram:///ABSOLUTE/PATH (under 108 bytes)",
    )
}

/// The path of an address with `scheme` followed by a socket file's path, if it is one: an
/// absolute path that fits a `sockaddr_un` (under 108 bytes), else the error `what` and `expected`.
pub(crate) fn socket_path(
    addr: &str,
    scheme: &str,
    what: &'static str,
    expected: &'static str,
) -> Option<Result<PathBuf, ConfigError>> {
    let rest = addr.strip_prefix(scheme)?;
    let path = PathBuf::from(rest);
    Some(
        if path.is_absolute() && path.file_name().is_some() && rest.len() < 108 {
            Ok(path)
        } else {
            Err(ConfigError::BadValue {
                what,
                got: addr.chars().take(200).collect(),
                expected,
            })
        },
    )
}

/// A Unix datagram listen socket (DogStatsD's `dsd.socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixListen {
    /// The socket file; a stale one from an earlier run is replaced, a live one refused.
    pub path: PathBuf,
    /// Its permission bits (`--unix-mode`, octal): who may send.
    pub mode: u32,
    /// Its owner, when set (`--unix-owner`).
    pub owner: Option<(u32, u32)>,
}

/// The address with an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) turned into plain IPv4, so two
/// spellings of one socket compare equal.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Every address configured on this host's interfaces (getifaddrs), plus the loopback ranges.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(sa) = a.address else { continue };
            if let Some(v4) = sa.as_sockaddr_in() {
                out.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                out.push(IpAddr::V6(v6.ip()));
            }
        }
    }
    out
}

/// Resolves `host:port` (IPv4, `[IPv6]`, or a host name) to the first address the resolver returns.
pub fn resolve(spec: &str) -> Result<SocketAddr, ConfigError> {
    // `:8125` (the form Go tools and statsd_exporter take) means every IPv4 address.
    let wildcard;
    let spec_for_lookup = match spec.strip_prefix(':') {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            wildcard = format!("0.0.0.0:{port}");
            wildcard.as_str()
        }
        _ => spec,
    };
    let mut addrs = spec_for_lookup
        .to_socket_addrs()
        .map_err(|source| ConfigError::Resolve {
            spec: spec.to_owned(),
            source,
        })?;
    addrs.next().ok_or_else(|| ConfigError::Resolve {
        spec: spec.to_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"),
    })
}
