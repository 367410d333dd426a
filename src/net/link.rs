//! A stream target's connection: TCP (statsd lines) or a Unix stream socket (DogStatsD frames).
//! Connected with a bounded wait; TCP with keepalive and a user timeout (a dead peer is noticed in
//! seconds, not the kernel's 15 minutes of retransmission); a send timeout so its thread keeps
//! checking deadlines; and what the peer has taken so far. Not on the hot path except
//! [`Conn::taken`] (one syscall per batch).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

use super::stream::Conn;
use super::sys;

/// Longest wait for a connection to be accepted: 2 s, many round trips to any receiver a
/// statsd relay feeds, short enough that a reconnect loop stays responsive.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Keepalive: first probe after 30 s idle, then every 10 s, 3 unanswered close it (about 60 s).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;
/// Unacknowledged data older than 30 s closes the connection (TCP_USER_TIMEOUT, RFC 5482).
const USER_TIMEOUT_MS: libc::c_int = 30_000;

/// Where a stream target's receiver is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A TCP receiver.
    Tcp(SocketAddr),
    /// A Unix stream socket file.
    Unix(&'a Path),
}

impl<'a> Endpoint<'a> {
    /// The socket file `path` when there is one, else the TCP address `addr`.
    pub fn of(path: Option<&'a Path>, addr: SocketAddr) -> Self {
        path.map_or(Self::Tcp(addr), Self::Unix)
    }
}

impl Conn {
    /// Connects: blocking writes that give up after `send_timeout` (so the caller can check its
    /// deadlines). TCP: Nagle off (each batch is one write: its flush), keepalive on.
    pub fn connect(
        peer: &Endpoint<'_>,
        sndbuf_bytes: Option<usize>,
        send_timeout: Duration,
    ) -> io::Result<Self> {
        match peer {
            Endpoint::Tcp(addr) => {
                let s = Socket::new(
                    Domain::for_address(*addr),
                    Type::STREAM,
                    Some(Protocol::TCP),
                )?;
                if let Some(bytes) = sndbuf_bytes {
                    s.set_send_buffer_size(bytes)?;
                }
                s.set_tcp_keepalive(
                    &TcpKeepalive::new()
                        .with_time(KEEPALIVE_IDLE)
                        .with_interval(KEEPALIVE_INTERVAL)
                        .with_retries(KEEPALIVE_PROBES),
                )?;
                sys::setsockopt_int(
                    s.as_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_USER_TIMEOUT,
                    USER_TIMEOUT_MS,
                )?;
                s.set_tcp_nodelay(true)?;
                s.connect_timeout(&(*addr).into(), CONNECT_TIMEOUT)?;
                s.set_write_timeout(Some(send_timeout))?;
                Ok(Self::Tcp(s.into()))
            }
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path).map_err(|e| match e.raw_os_error() {
                    Some(libc::EPROTOTYPE) => io::Error::new(
                        e.kind(),
                        "the path is a datagram socket (use unixgram:// for it)",
                    ),
                    _ => e,
                })?;
                if let Some(bytes) = sndbuf_bytes {
                    socket2::SockRef::from(&s).set_send_buffer_size(bytes)?;
                }
                s.set_write_timeout(Some(send_timeout))?;
                Ok(Self::Unix(s))
            }
        }
    }

    /// Bytes of the `written` so far the peer has taken: for TCP what it acknowledged
    /// (`tcpi_bytes_acked`, still readable after a reset, when `SIOCOUTQ` already reads 0); for a
    /// Unix socket what it read (`SIOCOUTQ` counts what it has not, with the kernel's overhead,
    /// so this errs low until it has read everything).
    pub fn taken(&self, written: u64) -> io::Result<u64> {
        match self {
            Self::Tcp(s) => sys::tcp_bytes_acked(s.as_fd()).map(|a| a.min(written)),
            Self::Unix(s) => sys::outq_bytes(s.as_fd()).map(|q| written.saturating_sub(q as u64)),
        }
    }

    /// Whether the peer has closed its side (or reset): a receiver restarting, most often. Reads
    /// nothing a receiver sent (it is left queued); never blocks.
    pub fn peer_closed(&self) -> bool {
        let fd = match self {
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Unix(s) => s.as_raw_fd(),
        };
        let mut b = [0u8; 1];
        use nix::sys::socket::MsgFlags;
        match nix::sys::socket::recv(fd, &mut b, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e != nix::errno::Errno::EAGAIN && e != nix::errno::Errno::EINTR,
        }
    }

    /// Ends the sending side: the peer reads to the end, then sees it closed.
    pub fn shutdown_write(&self) {
        let _ = match self {
            Self::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Self::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}
