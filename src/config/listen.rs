//! Listen addresses and their kinds: UDP (`HOST:PORT`, or `udp://HOST:PORT`), Unix datagram
//! (`unixgram:///PATH`), statsd over TCP (`tcp://HOST:PORT`) and DogStatsD over a Unix stream
//! socket (`unix:///PATH`), with the stream listeners' bounds. Floor 1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::addr::{UnixListen, canonical};
use super::error::ConfigError;
use super::target::{UNIXGRAM, unixgram_path};

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
        if let Some(rest) = spec.strip_prefix(UNIX_STREAM) {
            return unixgram_path(&format!("{UNIXGRAM}{rest}"))
                .expect("a unixgram address")
                .map(Self::UnixStream)
                .map_err(|_| ConfigError::BadValue {
                    what: "unix listen address",
                    got: spec.chars().take(200).collect(),
                    expected: "unix:///ABSOLUTE/PATH (under 108 bytes)",
                });
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

/// The same listener named twice, or a stream listener on the datagram listener's socket file.
pub fn check_streams(
    datagram_unix: Option<&std::path::Path>,
    streams: &[StreamListen],
) -> Result<(), ConfigError> {
    for (i, s) in streams.iter().enumerate() {
        let twice = streams[..i].iter().any(|o| match (o, s) {
            (StreamListen::Tcp(a), StreamListen::Tcp(b)) => canonical(*a) == canonical(*b),
            _ => o.path().is_some() && o.path() == s.path(),
        });
        if twice || (s.path().is_some() && s.path() == datagram_unix) {
            return Err(ConfigError::BadValue {
                what: "listen",
                got: s.name(),
                expected: "each listener once (a socket file, or a TCP address, can have one)",
            });
        }
    }
    Ok(())
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
        let tcp = |s: &str| StreamListen::Tcp(s.parse().unwrap());
        let unix = |p: &str| {
            StreamListen::Unix(UnixListen {
                path: p.into(),
                mode: 0o660,
                owner: None,
            })
        };
        assert!(check_streams(None, &[tcp("127.0.0.1:1"), tcp("127.0.0.1:2")]).is_ok());
        assert!(check_streams(None, &[tcp("127.0.0.1:1"), tcp("[::ffff:127.0.0.1]:1")]).is_err());
        assert!(check_streams(None, &[unix("/a"), unix("/a")]).is_err());
        assert!(check_streams(Some("/a".as_ref()), &[unix("/a")]).is_err());
    }
}
