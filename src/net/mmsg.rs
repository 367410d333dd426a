//! The recvmmsg/sendmmsg backend: one syscall per batch in each direction.
//!
//! Kernel header arrays (`mmsghdr`, `iovec`, control buffers) are sized to the batch, built once per
//! thread and re-prepared before each call; their raw pointers make these types `!Send`, so each thread
//! builds its own. The iovecs point into pool slots, which the kernel reads or writes during the call
//! only; no Rust reference to slot bytes exists at any time (see `pool`). Hot path.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;

use super::sys::retry_if_interrupted;
use crate::pool::ring::Entry;
use crate::pool::{BufId, BufPool};

/// Control-message room per datagram on 64-bit Linux: SO_RXQ_OVFL needs CMSG_SPACE(4) = 24 bytes,
/// SCM_TIMESTAMPNS CMSG_SPACE(16) = 32, IPV6_PKTINFO CMSG_SPACE(20) = 40 (IP_PKTINFO 32) and SO_MARK
/// (SO_RCVMARK, with the kernel fast path) CMSG_SPACE(4) = 24; 120 in all. A Unix listener has no
/// PKTINFO and no mark, and SCM_CREDENTIALS instead: CMSG_SPACE(12) = 32.
pub(crate) const CMSG_BYTES: usize = 120;

/// Room for the sender's address: a `sockaddr_in6` is 28 bytes, rounded up to keep what follows aligned.
pub(crate) const NAME_BYTES: usize = 32;

/// A control buffer aligned like `cmsghdr`, as quinn-udp's `cmsg::Aligned`, so CMSG_* macros may read it.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BYTES]);

/// What the kernel said about one received datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvMeta {
    /// Real datagram length (MSG_TRUNC makes the kernel report it even when it did not fit).
    pub len: usize,
    /// The datagram was larger than the slot and was cut by the kernel.
    pub truncated: bool,
    /// SO_RXQ_OVFL: the socket's cumulative drop count when this datagram was queued, if any were dropped.
    pub kernel_drops: Option<u32>,
    /// SCM_TIMESTAMPNS: kernel receive time in ns since the Unix epoch, 0 if absent.
    pub rx_nanos: u64,
    /// The sender's address and port (absent for an unnamed sender, e.g. an unbound Unix socket).
    pub src: Option<SocketAddr>,
    /// IP_PKTINFO / IPV6_PKTINFO: the address the datagram was sent to, on a wildcard listener.
    pub dst: Option<IpAddr>,
    /// SO_RCVMARK: the packet's mark (with the kernel fast path, which targets it already served).
    pub mark: u32,
    /// SCM_CREDENTIALS (a Unix listener, SO_PASSCRED): who sent it.
    pub cred: Option<Cred>,
    /// Sent by one of this process's own Unix target sockets (their abstract names start with
    /// `\0udptee-target-PID-`): a target that is a link to the listener.
    pub looped: bool,
}

/// A Unix sender's credentials, as the kernel gives them (`struct ucred`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cred {
    /// Process id (0 when the sender is not visible in this pid namespace).
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// True for the address of one of this process's Unix target sockets (an abstract name starting
/// with [`own_unix_prefix`](super::sys::own_unix_prefix)).
pub(crate) fn is_own_unix(name: &[u8]) -> bool {
    name.get(..2)
        .is_some_and(|f| i32::from(u16::from_ne_bytes([f[0], f[1]])) == libc::AF_UNIX)
        && name[2..].starts_with(super::sys::own_unix_prefix())
}

/// Decodes a `sockaddr_in` or `sockaddr_in6` of `len` bytes at `name`; other families are `None`.
pub(crate) fn decode_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(name.get(..2)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET if name.len() >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: at least sizeof(sockaddr_in) bytes, read unaligned; any bit pattern is valid.
            let a: libc::sockaddr_in = unsafe { ptr::read_unaligned(name.as_ptr().cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if name.len() >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: at least sizeof(sockaddr_in6) bytes, read unaligned; any bit pattern is valid.
            let a: libc::sockaddr_in6 = unsafe { ptr::read_unaligned(name.as_ptr().cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

pub(crate) fn zeroed_mmsghdrs(n: usize) -> Box<[libc::mmsghdr]> {
    // SAFETY: mmsghdr is plain C data (integers and raw pointers); all-zero is a valid value of it.
    (0..n)
        .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
        .collect()
}

fn empty_iovecs(n: usize) -> Box<[libc::iovec]> {
    (0..n)
        .map(|_| libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        })
        .collect()
}

/// Fills one `mmsghdr`: an optional address buffer, one iovec, an optional control buffer.
fn prepare_hdr(
    h: &mut libc::mmsghdr,
    name: Option<&mut libc::sockaddr_storage>,
    iov: *mut libc::iovec,
    control: *mut u8,
    controllen: usize,
) {
    h.msg_len = 0;
    match name {
        Some(name) => {
            h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        None => {
            h.msg_hdr.msg_name = ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
        }
    }
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h.msg_hdr.msg_control = control.cast();
    h.msg_hdr.msg_controllen = controllen as _;
    h.msg_hdr.msg_flags = 0;
}

/// Reusable recvmmsg state for one thread.
pub struct MmsgRecv {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    ctrl: Box<[CmsgBuf]>,
    names: Box<[libc::sockaddr_storage]>,
}

impl MmsgRecv {
    /// State for batches of up to `batch` datagrams.
    pub fn new(batch: usize) -> Self {
        Self {
            hdrs: zeroed_mmsghdrs(batch),
            iovs: empty_iovecs(batch),
            ctrl: vec![CmsgBuf([0; CMSG_BYTES]); batch].into(),
            // SAFETY: sockaddr_storage is plain C data; all-zero is a valid value of it.
            names: (0..batch).map(|_| unsafe { mem::zeroed() }).collect(),
        }
    }

    /// Receives up to `ids.len()` datagrams into the given slots, blocking until at least one arrives
    /// (MSG_WAITFORONE) or the socket's read timeout expires (`WouldBlock`). Fills `meta[..n]`.
    pub fn recv_batch(
        &mut self,
        fd: BorrowedFd<'_>,
        pool: &BufPool,
        ids: &[BufId],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let n = ids.len().min(self.hdrs.len()).min(meta.len());
        for (i, &id) in ids[..n].iter().enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: pool.as_mut_ptr(id).cast(),
                iov_len: pool.slot_bytes(),
            };
            prepare_hdr(
                &mut self.hdrs[i],
                Some(&mut self.names[i]),
                &raw mut self.iovs[i],
                self.ctrl[i].0.as_mut_ptr(),
                CMSG_BYTES,
            );
        }
        let hdrs = self.hdrs.as_mut_ptr();
        let got = retry_if_interrupted(|| {
            // SAFETY: `hdrs` has at least `n` entries, each prepared above: one iovec pointing into a
            // pool slot valid for `slot_bytes()` bytes while `pool` is borrowed (AtomicU8 storage, so
            // the kernel's write races with no Rust reference), an address buffer of its stated
            // length and a control buffer of CMSG_BYTES, both owned by `self`. A null timeout is allowed by recvmmsg(2).
            let rc = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    hdrs,
                    n as libc::c_uint,
                    libc::MSG_WAITFORONE | libc::MSG_TRUNC,
                    ptr::null_mut(),
                )
            };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(rc as usize)
            }
        })?;
        for (h, m) in self.hdrs[..got].iter().zip(meta.iter_mut()) {
            *m = decode_recv(h, pool.slot_bytes());
        }
        Ok(got)
    }
}

/// Reads length, truncation and control messages of one received `mmsghdr`.
fn decode_recv(h: &libc::mmsghdr, slot_bytes: usize) -> RecvMeta {
    let len = h.msg_len as usize;
    let mut meta = RecvMeta {
        len,
        truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > slot_bytes,
        ..RecvMeta::default()
    };
    decode_control(&h.msg_hdr, &mut meta);
    if !h.msg_hdr.msg_name.is_null() {
        let len = (h.msg_hdr.msg_namelen as usize).min(size_of::<libc::sockaddr_storage>());
        // SAFETY: msg_name points at the sockaddr_storage this header was prepared with, and the
        // kernel set msg_namelen to the address length it wrote (capped to the buffer above).
        let name = unsafe { std::slice::from_raw_parts(h.msg_hdr.msg_name.cast::<u8>(), len) };
        meta.src = decode_sockaddr(name);
        meta.looped = meta.src.is_none() && is_own_unix(name);
    }
    meta
}

/// Reads the kernel drop count (SO_RXQ_OVFL) and receive time (SCM_TIMESTAMPNS) from the control
/// messages `msg` describes. Shared by the recvmmsg and io_uring backends.
pub(crate) fn decode_control(msg: &libc::msghdr, meta: &mut RecvMeta) {
    if msg.msg_control.is_null() {
        return;
    }
    // SAFETY: `msg` describes a control buffer the kernel filled (recvmmsg, or a completed io_uring
    // buffer) of `msg_controllen` bytes, which is what CMSG_FIRSTHDR requires.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR return either null or a pointer to a complete cmsghdr
        // inside the control buffer; read it unaligned (io_uring buffers give no alignment promise).
        let c = unsafe { ptr::read_unaligned(cmsg) };
        // SAFETY: CMSG_DATA of a valid cmsghdr points at its payload, inside the buffer.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        match (c.cmsg_level, c.cmsg_type) {
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) if c.cmsg_len as usize >= cmsg_len::<u32>() => {
                // SAFETY: the kernel put a u32 drop count here (socket(7), SO_RXQ_OVFL); the length
                // check above guarantees it is inside the message. Payloads may be unaligned.
                meta.kernel_drops = Some(unsafe { ptr::read_unaligned(data.cast::<u32>()) });
            }
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS)
                if c.cmsg_len as usize >= cmsg_len::<libc::timespec>() =>
            {
                // SAFETY: the kernel put a struct timespec here (socket(7), SO_TIMESTAMPNS); the
                // length check guarantees it is inside the message.
                let ts = unsafe { ptr::read_unaligned(data.cast::<libc::timespec>()) };
                meta.rx_nanos = (ts.tv_sec as u64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(ts.tv_nsec as u64);
            }
            (libc::SOL_SOCKET, libc::SO_MARK) if c.cmsg_len as usize >= cmsg_len::<u32>() => {
                // SAFETY: the kernel put the u32 skb mark here (socket(7), SO_RCVMARK); the length
                // check guarantees it is inside the message.
                meta.mark = unsafe { ptr::read_unaligned(data.cast::<u32>()) };
            }
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                if c.cmsg_len as usize >= cmsg_len::<libc::ucred>() =>
            {
                // SAFETY: the kernel put a struct ucred here (unix(7), SO_PASSCRED); the length
                // check guarantees it is inside the message.
                let u = unsafe { ptr::read_unaligned(data.cast::<libc::ucred>()) };
                meta.cred = Some(Cred {
                    pid: u.pid,
                    uid: u.uid,
                    gid: u.gid,
                });
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO)
                if c.cmsg_len as usize >= cmsg_len::<libc::in_pktinfo>() =>
            {
                // SAFETY: the kernel put a struct in_pktinfo here (ip(7), IP_PKTINFO); the length
                // check guarantees it is inside the message.
                let info = unsafe { ptr::read_unaligned(data.cast::<libc::in_pktinfo>()) };
                meta.dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                if c.cmsg_len as usize >= cmsg_len::<libc::in6_pktinfo>() =>
            {
                // SAFETY: the kernel put a struct in6_pktinfo here (ipv6(7), IPV6_RECVPKTINFO); the
                // length check guarantees it is inside the message.
                let info = unsafe { ptr::read_unaligned(data.cast::<libc::in6_pktinfo>()) };
                meta.dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            _ => {}
        }
        // SAFETY: as for CMSG_FIRSTHDR; `cmsg` is a valid header of this message.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
}

/// CMSG_LEN of a payload of type `T`.
fn cmsg_len<T>() -> usize {
    // SAFETY: CMSG_LEN is pure arithmetic on its argument.
    unsafe { libc::CMSG_LEN(size_of::<T>() as u32) as usize }
}

/// Reusable sendmmsg state for one thread.
pub struct MmsgSend {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    flags: libc::c_int,
}

impl MmsgSend {
    /// State for batches of up to `batch` datagrams.
    pub fn new(batch: usize) -> Self {
        Self {
            hdrs: zeroed_mmsghdrs(batch),
            iovs: empty_iovecs(batch),
            flags: 0,
        }
    }

    /// Like [`new`](Self::new), but sends never wait (MSG_DONTWAIT): where a blocking socket would
    /// wait for send-buffer room, the call fails with `WouldBlock` (or returns a short count) instead.
    pub fn new_nonblocking(batch: usize) -> Self {
        Self {
            flags: libc::MSG_DONTWAIT,
            ..Self::new(batch)
        }
    }

    /// Sends the datagrams in `ids` on a connected socket. Returns how many were sent: a short count means
    /// "resume at n"; an error means the first one failed (sendmmsg(2): an error after the first message
    /// is not reported, the count is).
    pub fn send_batch(
        &mut self,
        fd: BorrowedFd<'_>,
        pool: &BufPool,
        ids: &[BufId],
    ) -> io::Result<usize> {
        let n = ids.len().min(self.hdrs.len());
        for (i, &id) in ids[..n].iter().enumerate() {
            self.prepare(i, pool.as_mut_ptr(id), pool.len(id).min(pool.slot_bytes()));
        }
        self.submit(fd, n)
    }

    /// Sends each slice as one datagram, with the same return contract as [`send_batch`](Self::send_batch).
    pub fn send_slices(
        &mut self,
        fd: BorrowedFd<'_>,
        bufs: &[impl AsRef<[u8]>],
    ) -> io::Result<usize> {
        let n = bufs.len().min(self.hdrs.len());
        for (i, buf) in bufs[..n].iter().map(AsRef::as_ref).enumerate() {
            // The kernel only reads through this pointer; the borrow of `bufs` outlives the call.
            self.prepare(i, buf.as_ptr().cast_mut(), buf.len());
        }
        self.submit(fd, n)
    }

    /// Sends each range `start..end` of `buf` as one datagram (at most a batch), with the same
    /// return contract as [`send_batch`](Self::send_batch).
    pub fn send_ranges(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: &[u8],
        ranges: impl Iterator<Item = (usize, usize)>,
    ) -> io::Result<usize> {
        let mut n = 0;
        for (i, (start, end)) in ranges.take(self.hdrs.len()).enumerate() {
            let part = &buf[start..end];
            // The kernel only reads through this pointer; `buf` outlives the call.
            self.prepare(i, part.as_ptr().cast_mut(), part.len());
            n = i + 1;
        }
        if n == 0 {
            return Ok(0);
        }
        self.submit(fd, n)
    }

    /// Sends backlog entries in place (their bytes stay in the target's ring until consumed), with
    /// the same return contract as [`send_batch`](Self::send_batch).
    pub fn send_entries(&mut self, fd: BorrowedFd<'_>, entries: &[Entry]) -> io::Result<usize> {
        let n = entries.len().min(self.hdrs.len());
        for (i, e) in entries[..n].iter().enumerate() {
            // The ring keeps an entry's bytes unchanged until the sender consumes it, after this call.
            self.prepare(i, e.ptr.cast_mut(), e.len);
        }
        self.submit(fd, n)
    }

    fn prepare(&mut self, i: usize, base: *mut u8, len: usize) {
        self.iovs[i] = libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        prepare_hdr(
            &mut self.hdrs[i],
            None,
            &raw mut self.iovs[i],
            ptr::null_mut(),
            0,
        );
    }

    fn submit(&mut self, fd: BorrowedFd<'_>, n: usize) -> io::Result<usize> {
        // SAFETY: the first `n` headers were each prepared by the caller with one iovec that is
        // valid for reads of its length for the duration of this call (a pool slot while the pool
        // is borrowed, a borrowed slice, or an unconsumed ring entry).
        unsafe { sendmmsg(fd, &mut self.hdrs[..n], self.flags) }
    }
}

/// One `sendmmsg(2)` of `hdrs`, retried when a signal interrupts it: how many went out, or the
/// first one's error. Shared by every batch send (plain and with origins).
///
/// # Safety
/// Every header's name, iovecs and control buffer must be valid for reads of their stated lengths
/// for the duration of the call; the kernel only reads them.
pub(crate) unsafe fn sendmmsg(
    fd: BorrowedFd<'_>,
    hdrs: &mut [libc::mmsghdr],
    flags: libc::c_int,
) -> io::Result<usize> {
    let (ptr, n) = (hdrs.as_mut_ptr(), hdrs.len());
    retry_if_interrupted(|| {
        // SAFETY: `ptr` points at `n` headers, valid by the caller's contract.
        let rc = unsafe { libc::sendmmsg(fd.as_raw_fd(), ptr, n as libc::c_uint, flags) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    use super::*;

    #[test]
    fn batch_round_trip_reports_lengths_and_truncation() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let pool = BufPool::new(8, 16);
        // Fill two slots and send them with sendmmsg.
        let src: Vec<BufId> = (0..2).map(|_| pool.try_take().unwrap()).collect();
        let mut scratch = MmsgRecv::new(4);
        tx.send(b"").unwrap();
        tx.send(&[7u8; 40]).unwrap();
        let ids: Vec<BufId> = (0..4).map(|_| pool.try_take().unwrap()).collect();
        let mut meta = [RecvMeta::default(); 4];
        let mut got = 0;
        while got < 2 {
            got += scratch
                .recv_batch(rx.as_fd(), &pool, &ids[got..], &mut meta[got..])
                .unwrap();
        }
        assert_eq!(
            (meta[0].len, meta[0].truncated),
            (0, false),
            "empty datagrams are datagrams"
        );
        assert_eq!(
            (meta[1].len, meta[1].truncated),
            (40, true),
            "MSG_TRUNC reports the real length"
        );
        // Now forward slot contents with sendmmsg and check they arrive.
        pool.set_meta(src[0], 3, 0);
        pool.set_meta(src[1], 0, 0);
        let mut send = MmsgSend::new(4);
        assert_eq!(send.send_batch(tx.as_fd(), &pool, &src).unwrap(), 2);
        let mut buf = [0u8; 64];
        assert_eq!(rx.recv(&mut buf).unwrap(), 3);
        assert_eq!(rx.recv(&mut buf).unwrap(), 0);
    }
}
