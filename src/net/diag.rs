//! The kernel's view of other processes' sockets, through sock_diag (NETLINK_SOCK_DIAG): which UDP
//! sockets are bound on a port and how many datagrams each has dropped (SK_MEMINFO_DROPS, mostly a full
//! receive buffer), and which user owns the other end of a local TCP connection (the admin
//! listener's rule for who may change things). This is what `ss -uam` and `ss -tpe` read; the
//! messages are built and parsed by the rust-netlink crates.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

/// One UDP socket as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSocketInfo {
    /// The socket's inode: stable for its life, new when the receiver restarts.
    pub inode: u32,
    /// The bound address (a wildcard for `0.0.0.0` / `::`).
    pub local: SocketAddr,
    /// The connected peer, if the socket is connected.
    pub remote: Option<SocketAddr>,
    /// Datagrams the kernel dropped on this socket since it was created.
    pub drops: u32,
    /// An IPv6 socket that takes no IPv4 traffic (IPV6_V6ONLY).
    pub v6only: bool,
}

/// A NETLINK_SOCK_DIAG socket, kept open between queries.
#[derive(Debug)]
pub struct Diag {
    socket: netlink_sys::Socket,
    buf: Vec<u8>,
}

impl Diag {
    /// Opens the netlink socket (no privileges needed to see sockets of this network namespace).
    pub fn open() -> io::Result<Self> {
        let mut socket = netlink_sys::Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            buf: vec![0; 64 << 10],
        })
    }

    /// Every UDP socket, IPv4 and IPv6, whose local port is `port` (the kernel filters by port).
    pub fn udp_on_port(&mut self, port: u16) -> io::Result<Vec<UdpSocketInfo>> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.dump(family, port, &mut out)?;
        }
        Ok(out)
    }

    /// The uid owning the local TCP socket bound to `client` and connected to `server`: the other
    /// end of a connection this process accepted from `client` on `server`. `None` when no socket
    /// of this network namespace is that end (the client is on another host, or already gone).
    pub fn tcp_owner(&mut self, client: SocketAddr, server: SocketAddr) -> io::Result<Option<u32>> {
        let (client, server) = (
            crate::config::canonical(client),
            crate::config::canonical(server),
        );
        let mut found = None;
        for family in [AF_INET, AF_INET6] {
            let mut id = socket_id(family);
            id.source_port = client.port();
            id.destination_port = server.port();
            self.query(family, IPPROTO_TCP, ExtensionFlags::empty(), id, |r| {
                let id = &r.header.socket_id;
                let local =
                    crate::config::canonical(SocketAddr::new(id.source_address, id.source_port));
                let remote = crate::config::canonical(SocketAddr::new(
                    id.destination_address,
                    id.destination_port,
                ));
                if local == client && remote == server {
                    found = Some(r.header.uid);
                }
            })?;
        }
        Ok(found)
    }

    fn dump(&mut self, family: u8, port: u16, out: &mut Vec<UdpSocketInfo>) -> io::Result<()> {
        let mut id = socket_id(family);
        id.source_port = port;
        self.query(family, IPPROTO_UDP, ExtensionFlags::SKMEMINFO, id, |r| {
            // The kernel filters by port already; checked again in case it did not.
            if r.header.socket_id.source_port == port {
                out.push(info(r));
            }
        })
    }

    /// One dump of `protocol` sockets of `family` (the kernel filters by the ports in `socket_id`),
    /// each answer handed to `each`.
    fn query(
        &mut self,
        family: u8,
        protocol: u8,
        extensions: ExtensionFlags,
        socket_id: SocketId,
        mut each: impl FnMut(&netlink_packet_sock_diag::inet::InetResponse),
    ) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol,
                extensions,
                states: StateFlags::all(),
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "sock_diag: empty reply",
                ));
            }
            let mut at = 0;
            while at < n {
                let message = NetlinkMessage::<SockDiagMessage>::deserialize(&self.buf[at..n])
                    .map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}"))
                    })?;
                let len = message.header.length as usize;
                match message.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => each(&r),
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return Err(e.to_io());
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
    }
}

fn socket_id(family: u8) -> SocketId {
    if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    }
}

fn info(r: &netlink_packet_sock_diag::inet::InetResponse) -> UdpSocketInfo {
    let id = &r.header.socket_id;
    let mut drops = 0;
    let mut v6only = false;
    for nla in &r.nlas {
        match nla {
            Nla::MemInfo(m) => drops = m.drops,
            Nla::SkV6Only(v) => v6only = *v,
            _ => {}
        }
    }
    let remote = (id.destination_port != 0 || !id.destination_address.is_unspecified())
        .then(|| SocketAddr::new(id.destination_address, id.destination_port));
    UdpSocketInfo {
        inode: r.header.inode,
        local: SocketAddr::new(id.source_address, id.source_port),
        remote,
        drops,
        v6only,
    }
}

/// The sockets that receive what is sent to `target` from `from`, the way the kernel picks them: a
/// socket connected to `from` first, then one bound to the target's address, then a wildcard
/// (`0.0.0.0`, or `::` unless it is IPv6-only for IPv4 targets). Sockets of one SO_REUSEPORT group
/// share the traffic, so all of the best kind are returned. Empty when nothing would receive it.
pub fn receivers(
    target: SocketAddr,
    from: Option<SocketAddr>,
    sockets: &[UdpSocketInfo],
) -> Vec<UdpSocketInfo> {
    let target = crate::config::canonical(target);
    let score = |s: &UdpSocketInfo| -> Option<u8> {
        let local = crate::config::canonical(s.local);
        if local.port() != target.port() {
            return None;
        }
        let bound = local.ip() == target.ip();
        let wildcard = match s.local.ip() {
            IpAddr::V4(a) => a.is_unspecified() && target.is_ipv4(),
            IpAddr::V6(a) => a.is_unspecified() && (target.is_ipv6() || !s.v6only),
        };
        if !bound && !wildcard {
            return None;
        }
        let mut score = if bound { 2 } else { 1 };
        match s.remote {
            Some(r) if Some(crate::config::canonical(r)) == from.map(crate::config::canonical) => {
                score += 4
            }
            // Connected elsewhere: takes nothing of ours.
            Some(_) => return None,
            None => {}
        }
        Some(score)
    };
    let best = sockets.iter().filter_map(score).max();
    sockets
        .iter()
        .filter(|s| best.is_some() && score(s) == best)
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(inode: u32, local: &str, remote: Option<&str>, v6only: bool) -> UdpSocketInfo {
        UdpSocketInfo {
            inode,
            local: local.parse().unwrap(),
            remote: remote.map(|r| r.parse().unwrap()),
            drops: inode,
            v6only,
        }
    }

    #[test]
    fn the_kernel_reports_a_socket_that_drops() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = receiver.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&receiver)
            .set_recv_buffer_size(4096)
            .unwrap();
        for _ in 0..200 {
            sender.send_to(&[0u8; 1000], at).unwrap();
        }
        let mut diag = Diag::open().unwrap();
        let found = diag.udp_on_port(at.port()).unwrap();
        let mine = receivers(at, sender.local_addr().ok(), &found);
        assert_eq!(mine.len(), 1, "{found:?}");
        assert_eq!(mine[0].local, at);
        let drops = u64::from(mine[0].drops);
        assert_eq!(
            drops,
            crate::net::socket_drops(&receiver).unwrap(),
            "sock_diag and SO_MEMINFO agree"
        );
        assert!(drops > 100, "a 4 KiB buffer overflows: {drops}");
        drop(receiver);
        let after = diag.udp_on_port(at.port()).unwrap();
        assert!(receivers(at, None, &after).is_empty(), "{after:?}");
    }

    #[test]
    fn the_kernel_names_the_owner_of_a_local_tcp_client() {
        for at in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(server) = std::net::TcpListener::bind(at) else {
                continue; // no IPv6 here
            };
            let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
            let (_conn, peer) = server.accept().unwrap();
            let mut diag = Diag::open().unwrap();
            let me = nix::unistd::Uid::effective().as_raw();
            assert_eq!(
                diag.tcp_owner(peer, server.local_addr().unwrap()).unwrap(),
                Some(me),
                "{at}"
            );
            let elsewhere: SocketAddr = "192.0.2.1:4000".parse().unwrap();
            assert_eq!(
                diag.tcp_owner(elsewhere, server.local_addr().unwrap())
                    .unwrap(),
                None,
                "no local socket is that end"
            );
            drop(client);
        }
    }

    #[test]
    fn the_most_specific_sockets_receive() {
        let t: SocketAddr = "127.0.0.1:8126".parse().unwrap();
        let all = [
            sock(1, "0.0.0.0:8126", None, false),
            sock(2, "127.0.0.1:8126", None, false),
            sock(3, "127.0.0.1:8126", None, false),
            sock(4, "127.0.0.1:9999", None, false),
            sock(5, "127.0.0.1:8126", Some("127.0.0.1:4000"), false),
        ];
        let inodes = |v: Vec<UdpSocketInfo>| v.iter().map(|s| s.inode).collect::<Vec<_>>();
        assert_eq!(
            inodes(receivers(t, None, &all)),
            [2, 3],
            "a reuseport group"
        );
        assert_eq!(
            inodes(receivers(t, Some("127.0.0.1:4000".parse().unwrap()), &all)),
            [5],
            "a socket connected to us wins"
        );
        assert_eq!(inodes(receivers(t, None, &all[..1])), [1], "the wildcard");
        let v6 = [
            sock(6, "[::]:8126", None, true),
            sock(7, "[::]:8126", None, false),
        ];
        assert_eq!(
            inodes(receivers(t, None, &v6)),
            [7],
            "a dual-stack wildcard takes IPv4, a v6-only one does not"
        );
        let mapped = [sock(8, "[::ffff:127.0.0.1]:8126", None, false)];
        assert_eq!(inodes(receivers(t, None, &mapped)), [8]);
        assert!(receivers(t, None, &all[3..4]).is_empty());
    }
}
