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

/// Sockets systemd passed (`LISTEN_FDS`: socket activation, or the file-descriptor store), if any:
/// the UDP sockets bound to `listen` (any port when its port is 0), whatever their name; anything
/// else passed is closed, with a warning.
pub fn from_systemd(listen: SocketAddr) -> Vec<UdpSocket> {
    let Ok(fds) = sd_notify::listen_fds_with_names(true) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (fd, name) in fds {
        // SAFETY: systemd passed this descriptor to us (LISTEN_PID is ours, checked by the crate);
        // nothing else in the process owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let socket = socket2::Socket::from(owned);
        let bound = socket
            .r#type()
            .is_ok_and(|t| t == socket2::Type::DGRAM)
            .then(|| socket.local_addr().ok().and_then(|a| a.as_socket()))
            .flatten();
        let ours = bound.is_some_and(|b| super::socket::serves(b, listen));
        if ours {
            out.push(UdpSocket::from(socket));
        } else {
            tracing::warn!(fd, name, bound = ?bound,
                "systemd passed a descriptor that is not a UDP socket on the listen address; closed");
        }
    }
    out
}

/// Stores `sockets` in systemd's file-descriptor store (when running under systemd), so a
/// restart finds them in `LISTEN_FDS` with the kernel's queue intact.
pub fn store_in_systemd(sockets: &[UdpSocket]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() || sockets.is_empty() {
        return;
    }
    let fds: Vec<std::os::fd::BorrowedFd<'_>> =
        sockets.iter().map(std::os::fd::AsFd::as_fd).collect();
    let states = [
        sd_notify::NotifyState::FdStore,
        sd_notify::NotifyState::FdName(FD_NAME),
    ];
    match sd_notify::notify_with_fds(false, &states, &fds) {
        Ok(()) => tracing::debug!(
            count = fds.len(),
            "listen sockets stored in systemd's file-descriptor store"
        ),
        Err(e) => tracing::warn!(error = %e, "storing the listen sockets in systemd failed"),
    }
}
