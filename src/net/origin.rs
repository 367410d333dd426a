//! Keeping a datagram's origin on its copy (`preserve-source`): who sent it, as the receiver would
//! have seen it without udptee in between.
//!
//! - From a Unix datagram listener to a Unix datagram target: the sender's pid, uid and gid
//!   (SCM_CREDENTIALS, read with SO_PASSCRED) go out with each copy as SCM_CREDENTIALS. The kernel
//!   lets a process name another's pid only with CAP_SYS_ADMIN, another uid with CAP_SETUID and
//!   another gid with CAP_SETGID ([`probe_credentials`] asks it); a pid that no longer exists is
//!   refused (ESRCH), and that copy is counted `send_error{error="origin_lost"}`.
//! - From UDP to a UDP target: the copy leaves from the client's own address and port. A raw
//!   socket (CAP_NET_RAW, [`raw_socket`]) with the IP and UDP headers written here, one
//!   `sendmmsg` per batch. A socket bound per source (IP_TRANSPARENT) cannot work for the common
//!   case: the client's own socket holds its address and port on this host, so the bind fails
//!   (EADDRINUSE); IP_PKTINFO sets the source address but not the port.
//!
//! An [`Origin`] travels in front of the payload in the target's ring ([`ORIGIN_BYTES`]), so the
//! ring's layout and its memory bound are unchanged. Hot path of a preserving target: no
//! allocation, one syscall per batch.
#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

use super::mmsg::{Cred, RecvMeta, sendmmsg, zeroed_mmsghdrs};
use crate::pool::{BufId, BufPool};

/// Bytes an [`Origin`] takes in front of a payload in a ring entry.
pub const ORIGIN_BYTES: usize = 24;

/// Who sent a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// Not known (an unnamed Unix sender without credentials).
    #[default]
    Unknown,
    /// A UDP client's address and port.
    Ip(SocketAddr),
    /// A Unix client's credentials.
    Process(Cred),
}

impl Origin {
    /// What the kernel said about a received datagram: its credentials, else its address.
    pub fn of(meta: &RecvMeta) -> Self {
        match (meta.cred, meta.src) {
            (Some(c), _) => Self::Process(c),
            (None, Some(a)) => Self::Ip(a),
            (None, None) => Self::Unknown,
        }
    }

    /// The fixed-size form kept in a ring entry.
    pub fn encode(&self) -> [u8; ORIGIN_BYTES] {
        let mut b = [0u8; ORIGIN_BYTES];
        match *self {
            Self::Unknown => {}
            Self::Ip(a) => {
                b[0] = if a.is_ipv4() { 4 } else { 6 };
                b[2..4].copy_from_slice(&a.port().to_be_bytes());
                match a.ip() {
                    IpAddr::V4(v4) => b[4..8].copy_from_slice(&v4.octets()),
                    IpAddr::V6(v6) => b[4..20].copy_from_slice(&v6.octets()),
                }
            }
            Self::Process(c) => {
                b[0] = 1;
                b[4..8].copy_from_slice(&c.pid.to_ne_bytes());
                b[8..12].copy_from_slice(&c.uid.to_ne_bytes());
                b[12..16].copy_from_slice(&c.gid.to_ne_bytes());
            }
        }
        b
    }

    /// Reads what [`encode`](Self::encode) wrote; anything shorter or unknown is `Unknown`.
    pub fn decode(b: &[u8]) -> Self {
        let Some(b) = b.get(..ORIGIN_BYTES) else {
            return Self::Unknown;
        };
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let port = u16::from_be_bytes([b[2], b[3]]);
        match b[0] {
            4 => Self::Ip(SocketAddr::from(([b[4], b[5], b[6], b[7]], port))),
            6 => {
                let ip: [u8; 16] = b[4..20].try_into().unwrap_or_default();
                Self::Ip(SocketAddr::from((ip, port)))
            }
            1 => Self::Process(Cred {
                pid: u32_at(4) as i32,
                uid: u32_at(8),
                gid: u32_at(12),
            }),
            _ => Self::Unknown,
        }
    }
}

/// The first 32 bits of the IPv6 address that stands for a Unix sender's credentials in a
/// recording (`fd75:6474::/32`, a unique-local prefix no real sender uses here): then the pid, the
/// uid and the gid, each a big-endian u32. tcpdump shows it as the source address, port 0.
pub const CRED_PREFIX: [u8; 4] = [0xfd, 0x75, 0x64, 0x74];

/// A Unix sender's credentials as the source address of a recorded datagram.
pub fn cred_address(c: Cred) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&CRED_PREFIX);
    b[4..8].copy_from_slice(&(c.pid as u32).to_be_bytes());
    b[8..12].copy_from_slice(&c.uid.to_be_bytes());
    b[12..16].copy_from_slice(&c.gid.to_be_bytes());
    Ipv6Addr::from(b)
}

/// The credentials a recorded source address stands for, if it is one ([`cred_address`]).
pub fn cred_of_address(ip: IpAddr) -> Option<Cred> {
    let IpAddr::V6(v6) = ip else { return None };
    let b = v6.octets();
    let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (b[..4] == CRED_PREFIX).then(|| Cred {
        pid: word(4) as i32,
        uid: word(8),
        gid: word(12),
    })
}

/// How a preserving target's copies carry their origin.
#[derive(Debug)]
pub enum Way {
    /// SCM_CREDENTIALS on a connected Unix datagram socket.
    Credentials,
    /// IP and UDP headers written here, on a raw socket, to this address.
    Raw(SocketAddr),
}

/// The error of a copy whose origin this way cannot carry (a Unix sender to a UDP target, an
/// IPv6 client to an IPv4 target): counted as `origin_lost`, like ESRCH.
pub fn origin_unusable() -> io::Error {
    io::Error::from_raw_os_error(libc::EAFNOSUPPORT)
}

/// Control room for one SCM_CREDENTIALS message: CMSG_SPACE(12) = 32 bytes, aligned like cmsghdr.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CredBuf([u8; 32]);

/// An IPv6 header and a UDP header, the larger of the two families.
const HEAD_BYTES: usize = 48;

/// Reusable state for sending with origins, for one thread (raw pointers: `!Send`).
pub struct OriginSend {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[[libc::iovec; 2]]>,
    ctrl: Box<[CredBuf]>,
    heads: Box<[[u8; HEAD_BYTES]]>,
    name: libc::sockaddr_storage,
    flags: libc::c_int,
}

impl OriginSend {
    /// State for batches of up to `batch` copies.
    pub fn new(batch: usize) -> Self {
        let iov = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            hdrs: zeroed_mmsghdrs(batch),
            iovs: vec![[iov; 2]; batch].into(),
            ctrl: vec![CredBuf([0; 32]); batch].into(),
            heads: vec![[0; HEAD_BYTES]; batch].into(),
            // SAFETY: sockaddr_storage is plain C data; all-zero is a valid value of it.
            name: unsafe { std::mem::zeroed() },
            flags: 0,
        }
    }

    /// Like [`new`](Self::new), but sends never wait (MSG_DONTWAIT): a worker's inline send.
    pub fn new_nonblocking(batch: usize) -> Self {
        Self {
            flags: libc::MSG_DONTWAIT,
            ..Self::new(batch)
        }
    }

    /// Sends the datagrams in pool slots `ids`, each with its origin, as [`send`](Self::send)
    /// does. The caller holds the slots (received, not armed for the kernel), so nobody writes
    /// them during the call.
    pub fn send_slots(
        &mut self,
        fd: BorrowedFd<'_>,
        way: &Way,
        pool: &BufPool,
        ids: &[BufId],
        origins: impl Iterator<Item = Origin>,
    ) -> io::Result<usize> {
        let copies = ids.iter().zip(origins).map(|(&id, o)| {
            let len = pool.len(id).min(pool.slot_bytes());
            // SAFETY: a slot's payload is valid for `slot_bytes()` bytes while `pool` is
            // borrowed, `len` is within it, and the caller's hold means no one writes it while
            // this borrow lives (AtomicU8 has the layout of u8).
            let bytes =
                unsafe { std::slice::from_raw_parts(pool.as_mut_ptr(id).cast_const(), len) };
            (bytes, o)
        });
        self.send(fd, way, copies)
    }

    /// Sends `copies` (payload and origin; at most a batch) in one `sendmmsg`, each with its
    /// origin. Returns how many went out; an error means the first failed (sendmmsg(2)). A copy
    /// whose origin `way` cannot carry ends the batch before it, or is the error
    /// ([`origin_unusable`]) when it is the first.
    pub fn send<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        way: &Way,
        copies: impl Iterator<Item = (&'a [u8], Origin)>,
    ) -> io::Result<usize> {
        let name_len = match way {
            Way::Credentials => 0,
            Way::Raw(to) => write_sockaddr(&mut self.name, *to),
        };
        let mut n = 0;
        for (payload, origin) in copies.take(self.hdrs.len()) {
            let (iovlen, control, controllen) = match (way, origin) {
                (Way::Credentials, Origin::Process(c)) => {
                    let len = write_credentials(&mut self.ctrl[n], c);
                    self.iovs[n][0] = iovec(payload);
                    (1, self.ctrl[n].0.as_mut_ptr(), len)
                }
                (Way::Credentials, _) => {
                    self.iovs[n][0] = iovec(payload);
                    (1, ptr::null_mut(), 0)
                }
                (Way::Raw(to), Origin::Ip(from)) => {
                    let Some(head) = write_headers(&mut self.heads[n], from, *to, payload) else {
                        break;
                    };
                    self.iovs[n] = [iovec(&self.heads[n][..head]), iovec(payload)];
                    (2, ptr::null_mut(), 0)
                }
                (Way::Raw(_), _) => break,
            };
            let h = &mut self.hdrs[n];
            h.msg_len = 0;
            h.msg_hdr.msg_name = if name_len > 0 {
                (&raw mut self.name).cast()
            } else {
                ptr::null_mut()
            };
            h.msg_hdr.msg_namelen = name_len as libc::socklen_t;
            h.msg_hdr.msg_iov = self.iovs[n].as_mut_ptr();
            h.msg_hdr.msg_iovlen = iovlen;
            h.msg_hdr.msg_control = control.cast();
            h.msg_hdr.msg_controllen = controllen as _;
            h.msg_hdr.msg_flags = 0;
            n += 1;
        }
        if n == 0 {
            return Err(origin_unusable());
        }
        // SAFETY: the `n` headers prepared above point at payloads the caller's iterator borrowed
        // for 'a (alive during this call), at this struct's header and control buffers, and at the
        // address in `self.name`.
        unsafe { sendmmsg(fd, &mut self.hdrs[..n], self.flags) }
    }
}

fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        // The kernel only reads through it.
        iov_base: b.as_ptr().cast_mut().cast(),
        iov_len: b.len(),
    }
}

/// Writes `to` as a raw socket's destination (port 0: the port is in the UDP header); returns
/// its length.
fn write_sockaddr(name: &mut libc::sockaddr_storage, to: SocketAddr) -> usize {
    let raw = socket2::SockAddr::from(SocketAddr::new(to.ip(), 0));
    let len = raw.len() as usize;
    // SAFETY: a SockAddr's storage holds `len` valid bytes, and `len` fits a sockaddr_storage.
    unsafe {
        ptr::copy_nonoverlapping(
            raw.as_ptr().cast::<u8>(),
            (name as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        );
    }
    len
}

/// Writes one SCM_CREDENTIALS message into `buf`; returns the control length.
fn write_credentials(buf: &mut CredBuf, c: Cred) -> usize {
    let ucred = libc::ucred {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    };
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; the buffer is CMSG_SPACE(12) = 32 bytes and
    // aligned like cmsghdr, so the header and its 12-byte payload fit, written unaligned anyway.
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<libc::ucred>() as u32) as usize;
        debug_assert!(space <= buf.0.len());
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_control = buf.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        ptr::write_unaligned(
            cmsg,
            libc::cmsghdr {
                cmsg_len: libc::CMSG_LEN(size_of::<libc::ucred>() as u32) as _,
                cmsg_level: libc::SOL_SOCKET,
                cmsg_type: libc::SCM_CREDENTIALS,
            },
        );
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::ucred>(), ucred);
        space
    }
}

/// Writes the IP and UDP headers of a datagram from `from` to `to` carrying `payload` (etherparse's
/// headers, the UDP checksum computed over the payload, which IPv6 requires); returns their length,
/// or `None` when the families differ or the datagram is too long for one packet. For IPv4 the
/// kernel fills the id and the header checksum (raw(7), IP_HDRINCL).
pub(crate) fn write_headers(
    head: &mut [u8; HEAD_BYTES],
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
) -> Option<usize> {
    use etherparse::{IpNumber, Ipv4Header, Ipv6Header, UdpHeader};
    let (from, to) = (crate::config::canonical(from), crate::config::canonical(to));
    let udp_len = u16::try_from(UdpHeader::LEN + payload.len()).ok()?;
    let (ip, udp) = match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = Ipv4Header::new(udp_len, 64, IpNumber::UDP, s.octets(), d.octets()).ok()?;
            let udp = UdpHeader::with_ipv4_checksum(from.port(), to.port(), &ip, payload).ok()?;
            let bytes = ip.to_bytes();
            head[..bytes.len()].copy_from_slice(&bytes);
            (bytes.len(), udp)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Header {
                payload_length: udp_len,
                next_header: IpNumber::UDP,
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
                ..Ipv6Header::default()
            };
            let udp = UdpHeader::with_ipv6_checksum(from.port(), to.port(), &ip, payload).ok()?;
            head[..Ipv6Header::LEN].copy_from_slice(&ip.to_bytes());
            (Ipv6Header::LEN, udp)
        }
        _ => return None,
    };
    head[ip..ip + UdpHeader::LEN].copy_from_slice(&udp.to_bytes());
    Some(ip + UdpHeader::LEN)
}

/// A raw socket that sends whole IP packets of `to`'s family (IPPROTO_RAW, which implies
/// IP_HDRINCL / IPV6_HDRINCL); needs CAP_NET_RAW.
pub fn raw_socket(to: SocketAddr) -> io::Result<OwnedFd> {
    let family = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) with constant arguments; a non-negative result is a new descriptor we own.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether this process may send another process's credentials: sends one datagram naming pid 1
/// and a uid and gid not its own over a socket pair, and lets the kernel's own check answer
/// (EPERM: it may not).
pub fn probe_credentials() -> io::Result<()> {
    let (a, _b) = std::os::unix::net::UnixDatagram::pair()?;
    // SAFETY: getuid/getgid/getpid cannot fail.
    let (uid, gid, pid) = unsafe { (libc::getuid(), libc::getgid(), libc::getpid()) };
    let foreign = Cred {
        pid: if pid == 1 { 2 } else { 1 },
        uid: if uid == 0 { 1 } else { 0 },
        gid: if gid == 0 { 1 } else { 0 },
    };
    let mut send = OriginSend::new(1);
    let fd = std::os::fd::AsFd::as_fd(&a);
    match send.send(
        fd,
        &Way::Credentials,
        std::iter::once((&b"x"[..], Origin::Process(foreign))),
    ) {
        // ESRCH comes after the privilege check: a pid that does not exist here (udptee is pid 1).
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn origins_survive_the_ring_form() {
        for o in [
            Origin::Unknown,
            Origin::Ip("10.1.2.3:8125".parse().unwrap()),
            Origin::Ip("[2001:db8::1]:65535".parse().unwrap()),
            Origin::Process(Cred {
                pid: 4242,
                uid: 1000,
                gid: 100,
            }),
        ] {
            assert_eq!(Origin::decode(&o.encode()), o);
        }
        assert_eq!(Origin::decode(&[9; 3]), Origin::Unknown, "short is unknown");
        let c = Cred {
            pid: 4_000_000,
            uid: 65534,
            gid: u32::MAX,
        };
        assert_eq!(cred_of_address(cred_address(c).into()), Some(c));
        assert_eq!(cred_of_address("::1".parse().unwrap()), None);
        assert_eq!(cred_of_address("127.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn headers_parse_back_with_a_valid_checksum() {
        let mut head = [0u8; HEAD_BYTES];
        for (from, to) in [
            ("127.0.0.1:40000", "127.0.0.1:8125"),
            ("[::1]:40000", "[::1]:8125"),
        ] {
            let payload = b"a.b:1|c\nodd";
            let (f, t): (SocketAddr, SocketAddr) = (from.parse().unwrap(), to.parse().unwrap());
            let n = write_headers(&mut head, f, t, payload).unwrap();
            let mut packet = head[..n].to_vec();
            packet.extend_from_slice(payload);
            let p = etherparse::SlicedPacket::from_ip(&packet).unwrap();
            let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
                panic!("{from}: not UDP")
            };
            assert_eq!(
                (udp.source_port(), udp.destination_port()),
                (f.port(), t.port())
            );
            assert_eq!(udp.payload(), payload);
            let ok = match p.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => udp
                    .to_header()
                    .calc_checksum_ipv4(&ip.header().to_header(), payload),
                Some(etherparse::NetSlice::Ipv6(ip)) => udp
                    .to_header()
                    .calc_checksum_ipv6(&ip.header().to_header(), payload),
                _ => panic!("{from}: no IP header"),
            };
            assert_eq!(ok.unwrap(), udp.checksum(), "{from}: checksum");
        }
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert_eq!(
            write_headers(&mut head, v6, v4, b""),
            None,
            "families differ"
        );
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        assert_eq!(write_headers(&mut head, mapped, v4, b""), Some(28));
    }
}
