//! A TCP target's connection: connected with a bounded wait, TCP keepalive and a user timeout
//! (a dead peer is noticed in seconds, not the kernel's 15 minutes of retransmission), a send
//! timeout so its thread keeps checking deadlines, and what the peer acknowledged so far. Not on
//! the hot path except [`acked`] (one getsockopt per batch).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

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

/// Connects to a TCP target: blocking writes that give up after `send_timeout` (so the caller can
/// check its deadlines), Nagle off (each batch is one write: its flush), keepalive on.
pub fn connect(
    addr: SocketAddr,
    sndbuf_bytes: Option<usize>,
    send_timeout: Duration,
) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
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
    s.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
    s.set_write_timeout(Some(send_timeout))?;
    Ok(s.into())
}

/// Data bytes the peer acknowledged so far (a FIN acknowledged counts one more).
pub fn acked(stream: &TcpStream) -> io::Result<u64> {
    sys::tcp_bytes_acked(stream.as_fd())
}

/// Whether the peer has closed its side (or reset): a receiver restarting, most often. Reads
/// nothing a receiver sent (it is left queued); never blocks.
pub fn peer_closed(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    match nix::sys::socket::recv(
        std::os::fd::AsRawFd::as_raw_fd(stream),
        &mut b,
        nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e != nix::errno::Errno::EAGAIN && e != nix::errno::Errno::EINTR,
    }
}
