//! One udptee per listen port, atomically, across processes.
//!
//! The listen sockets use SO_REUSEPORT, so the kernel lets a second process of the same user join
//! the group and silently take part of the traffic. Checking that the port is free first (a plain
//! bind) leaves a window: two instances started at the same moment both find it free. The check is
//! made atomic with locks that are names in the abstract Unix socket namespace: binding a name is
//! atomic, the name is released by the kernel when the process dies (even on `kill -9`), it needs no
//! file system, and it is scoped to the network namespace, exactly as the port is.
//!
//! Keys, for port P: `udptee/udp/P/*` serialises every start on P and is kept for life by a wildcard
//! listener (`0.0.0.0` or `::` overlap every address); `udptee/udp/P/ADDR` is kept for life by a
//! listener on one address. So two listeners on one address, or a wildcard and a specific one, never
//! both start, while listeners on different addresses of one port still can. The held sockets are
//! plain file descriptors: a deliberate hand-over passes them on with the listen sockets.

use std::io;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// How long a start waits for another start on the same port to finish binding.
const WAIT: Duration = Duration::from_secs(2);

/// The locks of one listen address, held until dropped.
#[derive(Debug)]
pub struct ListenLock {
    held: Vec<UnixDatagram>,
}

impl ListenLock {
    /// The lock sockets, to hand over with the listen sockets (`--takeover`).
    pub fn sockets(&self) -> &[UnixDatagram] {
        &self.held
    }

    /// Locks handed over by a previous udptee: holding their sockets is holding the locks.
    pub fn from_sockets(held: Vec<UnixDatagram>) -> Self {
        Self { held }
    }

    /// Holds `other`'s locks too (another listener's).
    pub fn join(&mut self, other: Self) {
        self.held.extend(other.held);
    }
}

fn name(port: u16, which: &str) -> String {
    format!("udptee/udp/{port}/{which}")
}

fn try_hold(name: &str) -> io::Result<Option<UnixDatagram>> {
    let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
    match UnixDatagram::bind_addr(&addr) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => Err(e),
    }
}

fn in_use(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::AddrInUse, what)
}

/// Runs `bind` while holding the locks for `listen`, and keeps the ones it must keep for life.
/// Fails with `AddrInUse` when another udptee serves the address (or, for a wildcard, the port).
/// Port 0 takes no lock: the kernel picks a port no one holds.
pub fn bind_locked<T>(
    listen: SocketAddr,
    bind: impl FnOnce() -> io::Result<T>,
) -> io::Result<(ListenLock, T)> {
    let port = listen.port();
    if port == 0 {
        return Ok((ListenLock { held: Vec::new() }, bind()?));
    }
    let ip = crate::config::canonical(listen).ip();
    let wildcard_key = name(port, "*");
    let start = Instant::now();
    let wildcard = loop {
        if let Some(s) = try_hold(&wildcard_key)? {
            break s;
        }
        if start.elapsed() >= WAIT {
            return Err(in_use(format!(
                "another udptee serves UDP port {port} on every address (lock @{wildcard_key})"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if ip.is_unspecified() {
        let bound = bind()?;
        return Ok((
            ListenLock {
                held: vec![wildcard],
            },
            bound,
        ));
    }
    let own_key = name(port, &ip.to_string());
    let Some(own) = try_hold(&own_key)? else {
        return Err(in_use(format!(
            "another udptee serves {listen} (lock @{own_key})"
        )));
    };
    let bound = bind()?;
    drop(wildcard);
    Ok((ListenLock { held: vec![own] }, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn one_holder_per_address_and_a_wildcard_excludes_all() {
        let port = free_port();
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port);
        let (a, ()) = bind_locked(at("127.0.0.1"), || Ok(())).unwrap();
        let e = bind_locked(at("127.0.0.1"), || Ok(())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("another udptee serves"), "{e}");
        let e = bind_locked(at("::ffff:127.0.0.1"), || Ok(())).unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::AddrInUse,
            "one address, two spellings"
        );
        let (b, ()) = bind_locked(at("127.0.0.2"), || Ok(())).expect("another address");
        drop((a, b));
        let (w, ()) = bind_locked(at("0.0.0.0"), || Ok(())).unwrap();
        let started = Instant::now();
        let e = bind_locked(at("127.0.0.1"), || Ok(())).unwrap_err();
        assert!(e.to_string().contains("every address"), "{e}");
        assert!(
            started.elapsed() >= WAIT,
            "it waited for a start in progress"
        );
        drop(w);
        let (_again, ()) = bind_locked(at("127.0.0.1"), || Ok(())).expect("released on drop");
    }

    #[test]
    fn a_failed_bind_releases_the_locks() {
        let port = free_port();
        let at = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
        let e = bind_locked(at, || -> io::Result<()> { Err(io::Error::other("no")) }).unwrap_err();
        assert_eq!(e.to_string(), "no");
        bind_locked(at, || Ok(())).expect("nothing left held");
    }
}
