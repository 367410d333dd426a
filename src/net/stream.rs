//! Stream listening sockets: TCP for statsd lines, a Unix stream socket for DogStatsD frames;
//! bound non-blocking, accepted connections non-blocking, each with who is at the other end.
//! Also the one rule for a Unix socket file found at a listener's path: a live socket of either
//! type is refused, saying which type it is, and only a stale one is replaced. Not on the hot path.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use super::mmsg::Cred;
use crate::config::{StreamListen, UnixListen};

/// Pending connections the kernel queues for a stream listener (the `listen(2)` backlog; the
/// kernel caps it at net.core.somaxconn).
const BACKLOG: i32 = 1024;

/// A bound stream listener.
#[derive(Debug)]
pub enum StreamSocket {
    /// statsd lines over TCP.
    Tcp(TcpListener),
    /// DogStatsD frames over a Unix stream socket.
    Unix(UnixListener),
}

/// A stream connection: one a listener accepted, or one a stream target made
/// (`net::link` connects it).
#[derive(Debug)]
pub enum Conn {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix stream socket.
    Unix(UnixStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(s) => s.as_fd(),
            Self::Unix(s) => s.as_fd(),
        }
    }
}

/// Who a connection is from: a TCP peer's address, a Unix peer's credentials (SO_PEERCRED).
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer {
    /// The TCP client's address and port.
    pub addr: Option<SocketAddr>,
    /// The Unix client's process, user and group when it connected.
    pub cred: Option<Cred>,
}

impl StreamSocket {
    /// Binds `spec`, non-blocking. A Unix socket file gets the mode and owner asked for.
    pub fn bind(spec: &StreamListen) -> io::Result<Self> {
        match spec {
            StreamListen::Tcp(addr) => {
                let s = Socket::new(
                    Domain::for_address(*addr),
                    Type::STREAM,
                    Some(Protocol::TCP),
                )?;
                s.set_reuse_address(true)?;
                if addr.is_ipv6() {
                    s.set_only_v6(true)?;
                }
                s.bind(&(*addr).into())?;
                s.listen(BACKLOG)?;
                s.set_nonblocking(true)?;
                Ok(Self::Tcp(s.into()))
            }
            StreamListen::Unix(u) => {
                let l = bind_unix_stream(u)?;
                l.set_nonblocking(true)?;
                Ok(Self::Unix(l))
            }
        }
    }

    /// A listening socket passed in (systemd, a takeover) for `spec`: checked to be a listening
    /// stream socket of the right family, made non-blocking.
    pub fn adopt(spec: &StreamListen, fd: std::os::fd::OwnedFd) -> io::Result<Self> {
        let s = Socket::from(fd);
        let listening = s.r#type()? == Type::STREAM
            && sys_accepts(&s)?
            && match spec {
                StreamListen::Tcp(_) => s.domain()? != Domain::UNIX,
                StreamListen::Unix(_) => s.domain()? == Domain::UNIX,
            };
        if !listening {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a passed descriptor is not a listening socket of this kind",
            ));
        }
        s.set_nonblocking(true)?;
        Ok(match spec {
            StreamListen::Tcp(_) => Self::Tcp(s.into()),
            StreamListen::Unix(_) => Self::Unix(UnixListener::from(std::os::fd::OwnedFd::from(s))),
        })
    }

    /// The bound TCP address (the real port when port 0 was asked for).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(_) => None,
        }
    }

    /// Accepts one pending connection, non-blocking (`WouldBlock` when none is waiting).
    pub fn accept(&self) -> io::Result<(Conn, Peer)> {
        match self {
            Self::Tcp(l) => {
                let (s, addr) = l.accept()?;
                s.set_nonblocking(true)?;
                Ok((
                    Conn::Tcp(s),
                    Peer {
                        addr: Some(addr),
                        cred: None,
                    },
                ))
            }
            Self::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(true)?;
                let cred =
                    nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
                        .ok()
                        .map(|c| Cred {
                            pid: c.pid(),
                            uid: c.uid(),
                            gid: c.gid(),
                        });
                Ok((Conn::Unix(s), Peer { addr: None, cred }))
            }
        }
    }
}

impl AsFd for StreamSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(l) => l.as_fd(),
            Self::Unix(l) => l.as_fd(),
        }
    }
}

/// Whether the socket listens (SO_ACCEPTCONN).
fn sys_accepts(s: &Socket) -> io::Result<bool> {
    nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::AcceptConn).map_err(io::Error::from)
}

fn bind_unix_stream(u: &UnixListen) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    replace_stale_socket(&u.path)?;
    let l = UnixListener::bind(&u.path)?;
    std::fs::set_permissions(&u.path, std::fs::Permissions::from_mode(u.mode))?;
    if let Some((uid, gid)) = u.owner {
        std::os::unix::fs::chown(&u.path, Some(uid), Some(gid))?;
    }
    Ok(l)
}

/// Makes way for a listener at `path`: nothing there, or a stale socket file (removed). A file
/// that is not a socket, or a socket someone still serves (of either type, named in the error),
/// is refused.
pub fn replace_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; refusing to replace it",
        ));
    }
    let live = |kind: &str| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another process serves this socket (a {kind} socket)"),
        )
    };
    // Connecting with the wrong type says EPROTOTYPE: the socket is live, of the other type.
    match UnixDatagram::unbound()?.connect(path) {
        Ok(()) => return Err(live("datagram")),
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            return match UnixStream::connect(path) {
                Ok(_) => Err(live("stream")),
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    std::fs::remove_file(path)
                }
                Err(e) => Err(e),
            };
        }
        Err(_) => {}
    }
    // Nobody behind it: a stale file from an earlier run.
    std::fs::remove_file(path)
}

/// A listener's socket file, known by its inode, so it is removed at stop only while it is still
/// the one this process bound (a successor may have replaced it).
#[derive(Debug)]
pub struct SocketFile {
    path: std::path::PathBuf,
    ino: u64,
}

impl SocketFile {
    /// The file at `path` as it is now, if there is one.
    pub fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| Self {
            path: path.to_owned(),
            ino: m.ino(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it is still this one.
    pub fn remove(self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove the listener's socket file (the next start replaces it)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_socket_of_either_type_is_refused_and_named_a_stale_one_replaced() {
        let dir = std::env::temp_dir().join(format!("udptee-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let dgram = UnixDatagram::bind(&path).unwrap();
        let e = replace_stale_socket(&path).unwrap_err().to_string();
        assert!(e.contains("datagram socket"), "{e}");
        drop(dgram);
        replace_stale_socket(&path).unwrap();
        assert!(!path.exists(), "the stale file is removed");
        let stream = UnixListener::bind(&path).unwrap();
        let e = replace_stale_socket(&path).unwrap_err().to_string();
        assert!(e.contains("stream socket"), "{e}");
        drop(stream);
        replace_stale_socket(&path).unwrap();
        std::fs::write(&path, b"data").unwrap();
        assert!(
            replace_stale_socket(&path).is_err(),
            "a plain file is never removed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
