//! Listen addresses and their kinds: UDP (`HOST:PORT`, or `udp://HOST:PORT`), Unix datagram
//! (`unixgram:///PATH`), statsd over TCP (`tcp://HOST:PORT`) and DogStatsD over a Unix stream
//! socket (`unix:///PATH`), with the stream listeners' bounds. Floor 1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::addr::{UNIXGRAM, UnixListen, canonical, socket_path, unixgram_path};
use super::error::ConfigError;

/// The scheme of a TCP listener.
pub const TCP: &str = "tcp://";
/// The scheme of a Unix stream listener.
pub const UNIX_STREAM: &str = "unix://";
/// The optional scheme of a UDP listener.
pub const UDP: &str = "udp://";

/// Connections a stream listener holds at once; 1024, four times Telegraf's
/// `max_tcp_connections` default (250), for hosts with many short-lived clients.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// A stream connection that sends nothing for this long is closed: 5 minutes, long past any
/// statsd client's flush interval (10 s for Etsy statsd's clients, 2 s for DogStatsD's).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Lines from a stream are packed into datagrams of up to 1432 bytes, what DogStatsD clients fill
/// (a 1500-byte MTU less IPv6 and UDP headers).
pub const DEFAULT_PACK_BYTES: usize = 1432;
/// The most connections `--max-connections` may allow per listener: 65536 (each may hold up to
/// `--max-datagram` bytes of an unfinished line, counted in the memory check at start).
pub const MAX_CONNECTIONS: usize = 1 << 16;

/// One `--listen` value, by kind, before binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// UDP `HOST:PORT` (not yet resolved).
    Udp(String),
    /// A Unix datagram socket file.
    Unixgram(PathBuf),
    /// statsd lines over TCP, `HOST:PORT` (not yet resolved).
    Tcp(String),
    /// DogStatsD frames over a Unix stream socket file.
    UnixStream(PathBuf),
}

impl ListenAddr {
    /// Reads one `--listen` value; an unknown scheme is an error that lists the known ones.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        if let Some(path) = unixgram_path(spec) {
            return path.map(Self::Unixgram);
        }
        let stream_path = socket_path(
            spec,
            UNIX_STREAM,
            "unix listen address",
            "unix:///ABSOLUTE/PATH (under 108 bytes)",
        );
        if let Some(path) = stream_path {
            return path.map(Self::UnixStream);
        }
        if let Some(rest) = spec.strip_prefix(TCP) {
            return Ok(Self::Tcp(rest.to_owned()));
        }
        if let Some(rest) = spec.strip_prefix(UDP) {
            return Ok(Self::Udp(rest.to_owned()));
        }
        if spec.contains("://") {
            return Err(ConfigError::BadValue {
                what: "listen address",
                got: spec.chars().take(200).collect(),
                expected: "HOST:PORT (UDP), udp://HOST:PORT, unixgram:///PATH, tcp://HOST:PORT or unix:///PATH",
            });
        }
        Ok(Self::Udp(spec.to_owned()))
    }

    /// Whether this listener receives datagrams (UDP or unixgram).
    pub fn is_datagram(&self) -> bool {
        matches!(self, Self::Udp(_) | Self::Unixgram(_))
    }
}

/// A stream listener, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamListen {
    /// statsd lines over TCP.
    Tcp(SocketAddr),
    /// DogStatsD frames over a Unix stream socket (mode and owner as for unixgram).
    Unix(UnixListen),
}

impl StreamListen {
    /// The listener's name in metrics and logs: its address with its scheme.
    pub fn name(&self) -> String {
        match self {
            Self::Tcp(a) => format!("{TCP}{a}"),
            Self::Unix(u) => format!("{UNIX_STREAM}{}", u.path.display()),
        }
    }

    /// The socket file of a Unix listener.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Tcp(_) => None,
            Self::Unix(u) => Some(&u.path),
        }
    }
}

/// The bounds every stream listener keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// `--max-connections`: open connections per listener; more are closed at once, counted.
    pub max_connections: usize,
    /// `--idle-timeout`: a connection quiet for this long is closed, counted.
    pub idle_timeout: Duration,
    /// `--pack-size`: lines from TCP are packed into datagrams of up to this many bytes (at most
    /// `--max-datagram`: a larger value is taken as it).
    pub pack_bytes: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            pack_bytes: DEFAULT_PACK_BYTES,
        }
    }
}

/// A datagram listener after the first (which is `Config::listen` or `Config::listen_unix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramListen {
    /// UDP.
    Udp(SocketAddr),
    /// A Unix datagram socket file.
    Unixgram(UnixListen),
}

impl DatagramListen {
    /// The listener's name in metrics and logs.
    pub fn name(&self) -> String {
        match self {
            Self::Udp(a) => a.to_string(),
            Self::Unixgram(u) => format!("{UNIXGRAM}{}", u.path.display()),
        }
    }

    /// `udp` or `unixgram`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Udp(_) => "udp",
            Self::Unixgram(_) => "unixgram",
        }
    }

    /// A unixgram listener's socket file.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Udp(_) => None,
            Self::Unixgram(u) => Some(&u.path),
        }
    }
}

/// Every address udptee itself listens on, for the rules that look at them all: loops,
/// duplicates, and which origin a copy can keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listening {
    /// UDP listeners.
    pub udp: Vec<SocketAddr>,
    /// Unix datagram socket files.
    pub unixgram: Vec<PathBuf>,
    /// TCP listeners.
    pub tcp: Vec<SocketAddr>,
    /// Unix stream socket files.
    pub unix: Vec<PathBuf>,
}

/// How the senders of what udptee receives are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origins {
    /// By address and port (UDP, TCP listeners only).
    Addresses,
    /// By process credentials (unixgram and unix stream listeners only).
    Credentials,
    /// Both: a copy's origin could not always be kept.
    Mixed,
}

impl Listening {
    /// How senders are known, over every listener.
    pub fn origins(&self) -> Origins {
        let addresses = !self.udp.is_empty() || !self.tcp.is_empty();
        let credentials = !self.unixgram.is_empty() || !self.unix.is_empty();
        match (addresses, credentials) {
            (true, true) => Origins::Mixed,
            (false, true) => Origins::Credentials,
            _ => Origins::Addresses,
        }
    }

    /// Each listener once: no socket file twice (of either type), no TCP address twice, and no two
    /// UDP listeners on one port where one is the other's address or a wildcard (their sockets
    /// would share the port's traffic).
    pub fn check(&self) -> Result<(), ConfigError> {
        let twice = |got: String| ConfigError::BadValue {
            what: "listen",
            got,
            expected: "each listener once (a socket file, a TCP address, or a UDP address and port, can have one; a wildcard UDP listener covers every address of its port)",
        };
        let files: Vec<&PathBuf> = self.unixgram.iter().chain(&self.unix).collect();
        for (i, f) in files.iter().enumerate() {
            if files[..i].contains(f) {
                return Err(twice(f.display().to_string()));
            }
        }
        for (i, a) in self.tcp.iter().enumerate() {
            if self.tcp[..i].iter().any(|b| canonical(*a) == canonical(*b)) {
                return Err(twice(format!("{TCP}{a}")));
            }
        }
        for (i, a) in self.udp.iter().enumerate() {
            let (a, overlap) = (canonical(*a), |b: &SocketAddr| {
                let b = canonical(*b);
                b.port() == a.port()
                    && a.port() != 0
                    && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
            });
            if self.udp[..i].iter().any(overlap) {
                return Err(twice(a.to_string()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_is_its_kind_and_an_unknown_one_is_an_error() {
        let kinds = [
            ("127.0.0.1:8125", ListenAddr::Udp("127.0.0.1:8125".into())),
            ("udp://[::1]:8125", ListenAddr::Udp("[::1]:8125".into())),
            ("tcp://:8125", ListenAddr::Tcp(":8125".into())),
            (
                "unix:///run/dsd.sock",
                ListenAddr::UnixStream("/run/dsd.sock".into()),
            ),
            (
                "unixgram:///run/dsd.sock",
                ListenAddr::Unixgram("/run/dsd.sock".into()),
            ),
        ];
        for (spec, kind) in kinds {
            assert_eq!(ListenAddr::parse(spec).unwrap(), kind, "{spec}");
        }
        for bad in ["http://x:1", "unix://relative", "sctp://1.2.3.4:5"] {
            let e = ListenAddr::parse(bad).unwrap_err().to_string();
            assert!(e.contains("unix:///"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_listener_given_twice_is_refused() {
        let addrs = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<SocketAddr>>()
        };
        let tcp = |v: &[&str]| Listening {
            tcp: addrs(v),
            ..Listening::default()
        };
        let udp = |v: &[&str]| Listening {
            udp: addrs(v),
            ..Listening::default()
        };
        assert!(tcp(&["127.0.0.1:1", "127.0.0.1:2"]).check().is_ok());
        assert!(
            tcp(&["127.0.0.1:1", "[::ffff:127.0.0.1]:1"])
                .check()
                .is_err()
        );
        assert!(
            udp(&["127.0.0.1:1", "127.0.0.2:1", "[::1]:1"])
                .check()
                .is_ok()
        );
        assert!(
            udp(&["127.0.0.1:1", "0.0.0.0:1"]).check().is_err(),
            "a wildcard covers it"
        );
        assert!(udp(&["127.0.0.1:1", "127.0.0.1:1"]).check().is_err());
        let files = Listening {
            unixgram: vec!["/a".into()],
            unix: vec!["/a".into()],
            ..Listening::default()
        };
        assert!(files.check().is_err(), "one socket file, one listener");
        assert_eq!(files.origins(), Origins::Credentials);
        assert_eq!(
            Listening {
                tcp: addrs(&["127.0.0.1:1"]),
                ..files
            }
            .origins(),
            Origins::Mixed
        );
    }
}
