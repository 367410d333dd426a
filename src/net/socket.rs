//! Socket setup with socket2: the SO_REUSEPORT receive group and one connected socket per target.
//!
//! Everything here runs once at start-up. Receive sockets get a read timeout so workers notice shutdown
//! without signals, SO_RXQ_OVFL so each batch reports kernel drops, SO_TIMESTAMPNS so latency is
//! measured from the kernel's receive time, and on a wildcard address IP_PKTINFO so a recording knows
//! each datagram's destination.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::sys;

/// How long a blocked receive or send waits before its thread checks for shutdown.
pub const WAKE_INTERVAL: Duration = Duration::from_millis(100);

/// What the kernel granted a receive socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketState {
    /// `SO_RCVBUF` as read back (the kernel doubles the value set, for bookkeeping overhead).
    pub rcvbuf_granted: usize,
    /// Whether `SO_RCVBUFFORCE` was permitted (CAP_NET_ADMIN); otherwise net.core.rmem_max capped it.
    pub forced: bool,
}

fn new_udp(addr: SocketAddr) -> io::Result<Socket> {
    Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
}

/// Sets the receive buffer, forcing past net.core.rmem_max when the process may (socket(7)).
fn set_rcvbuf(socket: &Socket, bytes: usize) -> io::Result<SocketState> {
    let want = libc::c_int::try_from(bytes / 2).unwrap_or(libc::c_int::MAX / 2);
    // SO_RCVBUFFORCE doubles like SO_RCVBUF; ask for half so the granted size matches the request.
    let forced =
        sys::setsockopt_int(socket.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want).is_ok();
    if !forced {
        socket.set_recv_buffer_size(bytes / 2)?;
    }
    Ok(SocketState {
        rcvbuf_granted: socket.recv_buffer_size()?,
        forced,
    })
}

/// Checks that nobody already holds `addr`: SO_REUSEPORT would otherwise let a second udptee (same user)
/// silently share, and steal half of, the traffic.
fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    new_udp(addr)?.bind(&addr.into())
}

/// Sets what every receive socket needs once it is bound (or handed over): the receive buffer,
/// SO_RXQ_OVFL, SO_TIMESTAMPNS when `timestamps`, IP_PKTINFO on a wildcard address (`addr`; `None`
/// for a Unix socket), and the read timeout that lets workers notice shutdown.
fn configure_receive(
    socket: &Socket,
    addr: Option<SocketAddr>,
    rcvbuf_bytes: usize,
    timestamps: bool,
) -> io::Result<SocketState> {
    let granted = set_rcvbuf(socket, rcvbuf_bytes)?;
    sys::setsockopt_int(socket.as_fd(), libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
    if timestamps {
        sys::setsockopt_int(socket.as_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    }
    if let Some(addr) = addr.filter(|a| a.ip().is_unspecified()) {
        // A wildcard listener learns each datagram's destination address (recorded captures).
        let (level, name) = match addr {
            SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
            SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        };
        sys::setsockopt_int(socket.as_fd(), level, name, 1)?;
    }
    socket.set_read_timeout(Some(WAKE_INTERVAL))?;
    Ok(granted)
}

/// Binds `count` sockets to `addr` in one SO_REUSEPORT group. With port 0 the first socket picks the
/// port and the rest join it. `timestamps` turns on SO_TIMESTAMPNS (kernel receive time per datagram).
/// Returns the sockets, the bound address and the first socket's state.
pub fn bind_reuseport_group(
    addr: SocketAddr,
    count: usize,
    rcvbuf_bytes: usize,
    timestamps: bool,
) -> io::Result<(Vec<UdpSocket>, SocketAddr, SocketState)> {
    ensure_free(addr)?;
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    let mut state = None;
    for _ in 0..count {
        let socket = new_udp(addr)?;
        socket.set_reuse_port(true)?;
        let granted = configure_receive(&socket, Some(addr), rcvbuf_bytes, timestamps)?;
        state.get_or_insert(granted);
        socket.bind(&bound.into())?;
        if bound.port() == 0 {
            bound = socket.local_addr()?.as_socket().unwrap_or(addr);
        }
        sockets.push(socket.into());
    }
    let state = state.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no workers"))?;
    Ok((sockets, bound, state))
}

/// Binds the Unix datagram socket `u` (replacing a stale socket file from an earlier run, refusing
/// a live one or a file that is not a socket), sets its mode and owner, and returns it `count`
/// times (one descriptor per worker: they share its queue). A Unix socket has no IP address: the
/// address returned is a placeholder (`0.0.0.0:0`).
pub fn bind_unix_group(
    u: &crate::config::UnixListen,
    count: usize,
    rcvbuf_bytes: usize,
    timestamps: bool,
) -> io::Result<(Vec<UdpSocket>, SocketAddr, SocketState)> {
    use std::os::unix::fs::PermissionsExt;
    super::stream::replace_stale_socket(&u.path)?;
    let socket = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
    socket.bind(&socket2::SockAddr::unix(&u.path)?)?;
    std::fs::set_permissions(&u.path, std::fs::Permissions::from_mode(u.mode))?;
    if let Some((uid, gid)) = u.owner {
        std::os::unix::fs::chown(&u.path, Some(uid), Some(gid))?;
    }
    let state = configure_receive(&socket, None, rcvbuf_bytes, timestamps)?;
    // Each datagram's sender credentials, for targets that keep them (`preserve-source`).
    sys::setsockopt_int(socket.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
    let first = UdpSocket::from(std::os::fd::OwnedFd::from(socket));
    let mut sockets = Vec::with_capacity(count);
    for _ in 1..count {
        sockets.push(first.try_clone()?);
    }
    sockets.insert(0, first);
    Ok((sockets, SocketAddr::from(([0, 0, 0, 0], 0)), state))
}

/// True when `path` is a socket file (not followed if it is a link).
pub fn is_socket_file(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// True when a socket bound to `bound` serves the listen address `listen`: the same address in
/// either spelling (`::ffff:a.b.c.d` is a.b.c.d), and the same port unless `listen`'s is 0 (any).
/// Handed-over, inherited and requested sockets are all matched by this rule.
pub fn serves(bound: SocketAddr, listen: SocketAddr) -> bool {
    let (b, l) = (
        crate::config::canonical(bound),
        crate::config::canonical(listen),
    );
    b.ip() == l.ip() && (l.port() == 0 || b.port() == l.port())
}

/// Takes over receive sockets bound by someone else (a previous udptee, systemd's socket
/// activation or its file-descriptor store): each must be a UDP socket bound to `addr` (any port
/// when `addr`'s is 0, all the same), and is configured as [`bind_reuseport_group`] would have.
pub fn adopt_group(
    sockets: Vec<UdpSocket>,
    addr: SocketAddr,
    rcvbuf_bytes: usize,
    timestamps: bool,
) -> io::Result<(Vec<UdpSocket>, SocketAddr, SocketState)> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let mut bound: Option<SocketAddr> = None;
    let mut state = None;
    for s in &sockets {
        let socket = Socket::from(s.try_clone()?);
        if socket.r#type()? != Type::DGRAM
            || !matches!(socket.domain()?, d if d == Domain::IPV4 || d == Domain::IPV6)
        {
            return Err(invalid("a handed-over socket is not a UDP socket".into()));
        }
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| invalid("a handed-over socket has no address".into()))?;
        if !serves(local, addr) || bound.is_some_and(|b| b != local) {
            return Err(invalid(format!(
                "a handed-over socket is bound to {local}, not the listen address {addr}"
            )));
        }
        bound = Some(local);
        let granted = configure_receive(&socket, Some(local), rcvbuf_bytes, timestamps)?;
        state.get_or_insert(granted);
    }
    match (bound, state) {
        (Some(b), Some(st)) => Ok((sockets, b, st)),
        _ => Err(invalid("no socket was handed over".into())),
    }
}

/// A socket for a Unix datagram target at `path`, connected when something listens there (else
/// later: [`reconnect_unix`]). Sends on it block for at most [`WAKE_INTERVAL`], as for UDP: a Unix
/// receiver that does not read pushes back (it does not drop), which fills only this target's
/// backlog.
pub fn unix_target(path: &std::path::Path, sndbuf_bytes: Option<usize>) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
    // A name of our own, so that our listener knows a copy that comes back to it (a loop through
    // a link planted after every check) and drops it.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = sys::own_unix_prefix().to_vec();
    name.extend_from_slice(n.to_string().as_bytes());
    socket.bind(&socket2::SockAddr::unix(
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name),
    )?)?;
    if let Some(bytes) = sndbuf_bytes {
        socket.set_send_buffer_size(bytes / 2)?;
    }
    socket.set_write_timeout(Some(WAKE_INTERVAL))?;
    let s = UdpSocket::from(std::os::fd::OwnedFd::from(socket));
    let _ = reconnect_unix(&s, path);
    Ok(s)
}

/// Connects a Unix datagram target's socket to `path` (again): true when something listens there.
pub fn reconnect_unix(socket: &UdpSocket, path: &std::path::Path) -> io::Result<()> {
    let addr = socket2::SockAddr::unix(path)?;
    socket2::SockRef::from(socket).connect(&addr)
}

/// Turns on SO_TIMESTAMPNS (the kernel receive time of each datagram) on a receive socket.
pub fn enable_timestamps(socket: &UdpSocket) -> io::Result<()> {
    sys::setsockopt_int(socket.as_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Turns on SO_RCVMARK (Linux 5.19+): each datagram carries its packet mark, which the kernel fast
/// path sets on the originals it passes up.
pub fn enable_rcvmark(socket: &UdpSocket) -> io::Result<()> {
    sys::setsockopt_int(socket.as_fd(), libc::SOL_SOCKET, libc::SO_RCVMARK, 1)
}

/// A socket connected to `target`, so sends need no address and ICMP errors come back as ECONNREFUSED.
/// Sends block for at most [`WAKE_INTERVAL`] when the send buffer is full.
pub fn connect_target(target: SocketAddr, sndbuf_bytes: Option<usize>) -> io::Result<UdpSocket> {
    let socket = new_udp(target)?;
    if let Some(bytes) = sndbuf_bytes {
        let want = libc::c_int::try_from(bytes / 2).unwrap_or(libc::c_int::MAX / 2);
        if sys::setsockopt_int(socket.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want)
            .is_err()
        {
            socket.set_send_buffer_size(bytes / 2)?;
        }
    }
    socket.set_write_timeout(Some(WAKE_INTERVAL))?;
    socket.connect(&target.into())?;
    Ok(socket.into())
}

/// An unbound, unconnected UDP socket that is never used to send: a group target's place holder
/// (its members have the real sockets).
pub fn placeholder() -> io::Result<UdpSocket> {
    Ok(Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?.into())
}

/// The kernel's cumulative drop count for a UDP socket: datagrams it discarded, mostly because the
/// receive buffer was full (SO_MEMINFO, available since Linux 4.6).
pub fn socket_drops(socket: &UdpSocket) -> io::Result<u64> {
    sys::socket_drops(socket.as_fd())
}

/// A blocking socket call that gave up for now because its timeout passed (`EAGAIN` or
/// `ETIMEDOUT` after `SO_RCVTIMEO`/`SO_SNDTIMEO`): nothing is wrong, try again.
pub fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
