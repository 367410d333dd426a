//! File descriptors that cross a process boundary: received with SCM_RIGHTS (a takeover's answer),
//! passed by systemd (`LISTEN_FDS`: socket activation or the file-descriptor store), and stored in
//! systemd's store. Each is owned as an `OwnedFd` the moment it arrives. Not on the data path.
#![allow(unsafe_code)]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one hand-over carries (workers' sockets and two locks).
const MAX_FDS: usize = 1100;
/// The name udptee's sockets have in systemd's file-descriptor store.
pub const FD_NAME: &str = "udptee-listen";

/// Reads one message from `conn` with the descriptors it carries (SCM_RIGHTS, close-on-exec).
pub(crate) fn recv_with_fds(conn: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    // A signal (or kernel work queued for this thread, as io_uring's teardown leaves) interrupts
    // the wait without a message: wait again; SO_RCVTIMEO still bounds each wait.
    let msg = loop {
        match recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => {}
            r => break r?,
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these descriptors in this process for us; nobody
            // else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = msg.bytes;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without a message",
        ));
    }
    buf.truncate(n);
    Ok((buf, fds))
}

/// What systemd passed (`LISTEN_FDS`: socket activation, or the file-descriptor store), taken
/// once: each listener takes the descriptors that serve it, whatever their name, and whatever is
/// left is closed with a warning when this is dropped.
#[derive(Debug, Default)]
pub struct Inherited(Vec<(OwnedFd, String)>);

impl Inherited {
    /// The descriptors systemd passed this process, if any (the environment is cleared).
    pub fn from_systemd() -> Self {
        let Ok(fds) = sd_notify::listen_fds_with_names(true) else {
            return Self::default();
        };
        Self(
            fds.into_iter()
                // SAFETY: systemd passed this descriptor to us (LISTEN_PID is ours, checked by
                // the crate); nothing else in the process owns it.
                .map(|(fd, name)| (unsafe { OwnedFd::from_raw_fd(fd) }, name))
                .collect(),
        )
    }

    /// Takes the descriptors `ours` accepts.
    fn take(&mut self, ours: impl Fn(&socket2::Socket) -> bool) -> Vec<OwnedFd> {
        let (mine, rest) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(fd, _)| {
                fd.try_clone()
                    .map(socket2::Socket::from)
                    .is_ok_and(|s| ours(&s))
            });
        self.0 = rest;
        mine.into_iter().map(|(fd, _)| fd).collect()
    }

    /// The UDP sockets bound to `listen` (any port when its port is 0).
    pub fn take_udp(&mut self, listen: SocketAddr) -> Vec<UdpSocket> {
        self.take(|s| {
            s.r#type().is_ok_and(|t| t == socket2::Type::DGRAM)
                && s.local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .is_some_and(|b| super::socket::serves(b, listen))
        })
        .into_iter()
        .map(UdpSocket::from)
        .collect()
    }

    /// The listening stream socket of a tcp:// or unix:// listener, if systemd passed one.
    pub fn take_stream(&mut self, spec: &crate::config::StreamListen) -> Option<OwnedFd> {
        use crate::config::StreamListen;
        self.take(|s| {
            let local = s.local_addr().ok();
            s.r#type().is_ok_and(|t| t == socket2::Type::STREAM)
                && match spec {
                    StreamListen::Tcp(addr) => local
                        .and_then(|a| a.as_socket())
                        .is_some_and(|b| super::socket::serves(b, *addr)),
                    StreamListen::Unix(u) => {
                        local.and_then(|a| a.as_pathname().map(|p| p == u.path)) == Some(true)
                    }
                }
        })
        .into_iter()
        .next()
    }
}

impl Drop for Inherited {
    fn drop(&mut self) {
        for (fd, name) in self.0.drain(..) {
            tracing::warn!(
                fd = fd.as_raw_fd(),
                name,
                "systemd passed a descriptor that serves no listener; closed"
            );
        }
    }
}

/// Stores the listen sockets `fds` in systemd's file-descriptor store (when running under
/// systemd), so a restart finds them in `LISTEN_FDS` with the kernel's queue intact.
pub fn store_in_systemd(fds: &[std::os::fd::BorrowedFd<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() || fds.is_empty() {
        return;
    }
    let states = [
        sd_notify::NotifyState::FdStore,
        sd_notify::NotifyState::FdName(FD_NAME),
    ];
    match sd_notify::notify_with_fds(false, &states, fds) {
        Ok(()) => tracing::debug!(
            count = fds.len(),
            "listen sockets stored in systemd's file-descriptor store"
        ),
        Err(e) => tracing::warn!(error = %e, "storing the listen sockets in systemd failed"),
    }
}
