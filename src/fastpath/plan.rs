//! What the kernel is to serve after a change: which targets are eligible (`ineligible`), their
//! slots and home interfaces (`Plan`), and the host's addresses it is decided from. Read by the
//! registry and the loader; no state of its own.

use std::net::{IpAddr, SocketAddr};

use crate::config::TargetSpec;

/// Kernel targets the program serves at most; further eligible targets stay in user space.
pub const MAX_KERNEL_TARGETS: usize = 8;
/// Counter rows in the program (target names, first seen first); later names stay in user space.
pub const MAX_SLOTS: usize = 64;

/// What the program passed to user space unhandled, by reason (the program's `enum reason` from 2).
pub const PASS_REASONS: [&str; 9] = [
    "fragment",
    "ip_options",
    "ipv6_ext",
    "gso",
    "not_udp",
    "config_busy",
    "short",
    "restore_failed",
    "malformed",
];

/// One target the kernel serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelTarget {
    pub(crate) name: String,
    /// The target's row in the program's counters (and its bit in the [`Book`]).
    pub(crate) slot: u8,
    pub(crate) addr: SocketAddr,
    /// The index of the interface holding the address (0 for a loopback address).
    pub(crate) home: u32,
}

/// What the kernel is to do after a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) targets: Vec<KernelTarget>,
    /// User space needs the original IPv4 datagrams (a user-space target, a recorder, a tap, the
    /// top talkers' sample).
    pub(crate) pass_v4: bool,
    pub(crate) pass_v6: bool,
}

/// Why a target is not served by the kernel, or `None` when it can be.
pub(crate) fn ineligible(
    spec: &TargetSpec,
    via_sender: bool,
    listen: SocketAddr,
    local: &LocalAddrs,
) -> Option<&'static str> {
    if spec.unix.is_some() {
        return Some("unix socket");
    }
    if spec.group.is_some() {
        return Some("group (sharded by line)");
    }
    if !spec.enabled {
        return Some("disabled");
    }
    if spec.is_stream() {
        return Some("stream target");
    }
    if spec.max_rate.is_some() {
        return Some("rate cap");
    }
    if via_sender {
        return Some("line settings");
    }
    if spec.resolved.port() == listen.port() {
        return Some("same port as the listen address");
    }
    let family_ok = match (listen, spec.resolved) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), _) => true,
        (SocketAddr::V4(_), SocketAddr::V6(_)) => false,
    };
    if !family_ok {
        return Some("family the listen address does not receive");
    }
    if !local.holds(spec.resolved.ip()) {
        return Some("not on this host");
    }
    None
}

/// The addresses of this host (this network namespace), read when a plan is made.
#[derive(Debug, Default)]
pub(crate) struct LocalAddrs(Vec<(String, IpAddr)>);

impl LocalAddrs {
    pub(crate) fn read() -> Self {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return Self::default();
        };
        Self(
            addrs
                .filter_map(|a| {
                    let ip = a.address.as_ref().and_then(|s| {
                        s.as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                    })?;
                    Some((a.interface_name, ip))
                })
                .collect(),
        )
    }

    fn holds(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.0.iter().any(|(_, a)| *a == ip)
    }

    /// The index of the interface holding `ip` (0 for loopback addresses, or when unknown).
    pub(crate) fn home_of(&self, ip: IpAddr) -> u32 {
        if ip.is_loopback() {
            return 0;
        }
        self.0
            .iter()
            .find(|(_, a)| *a == ip)
            .and_then(|(n, _)| nix::net::if_::if_nametoindex(n.as_str()).ok())
            .unwrap_or(0)
    }

    /// The interfaces where traffic to `listen` arrives: lo for a loopback address, those that hold
    /// a specific one, every interface with an address for a wildcard.
    #[cfg_attr(not(udptee_fastpath), allow(dead_code))]
    pub(crate) fn interfaces_for(&self, listen: IpAddr) -> Vec<String> {
        let mut out: Vec<String> = if listen.is_loopback() {
            vec!["lo".into()]
        } else {
            self.0
                .iter()
                .filter(|(_, a)| listen.is_unspecified() || *a == listen)
                .map(|(n, _)| n.clone())
                .collect()
        };
        out.sort();
        out.dedup();
        out
    }
}

/// `addr`'s words as the program reads them (network order in memory).
#[cfg_attr(not(udptee_fastpath), allow(dead_code))]
pub(crate) fn addr_words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            std::array::from_fn(|i| {
                u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_laid_out_as_the_program_reads_them() {
        let w = addr_words("127.0.0.1".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [127, 0, 0, 1]);
        let w = addr_words("::1".parse().unwrap());
        assert_eq!(w[3].to_ne_bytes(), [0, 0, 0, 1]);
    }
}
