//! `--allow`: which senders udptee forwards for. Datagrams from anyone else are counted
//! `source_denied` and sent to no target.
//!
//! The list is published in the target table, so a reload changes it and workers pick it up with
//! the table, once per batch; the check per datagram is a walk over a handful of prefixes. IPv4
//! senders seen on a dual-stack IPv6 socket (`::ffff:a.b.c.d`) are matched as IPv4.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Prefixes senders must be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(Box<[IpNet]>);

impl AllowList {
    /// A list of `nets`; `None` when empty (everyone is allowed).
    pub fn new(nets: &[IpNet]) -> Option<Self> {
        (!nets.is_empty()).then(|| Self(nets.into()))
    }

    /// True when `src` is in one of the prefixes; an unnamed sender never is.
    pub fn permits(&self, src: Option<SocketAddr>) -> bool {
        let Some(src) = src else { return false };
        let ip = src.ip().to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Parses `CIDR[,CIDR...]`; a bare address is that one host (`/32`, `/128`).
pub fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_cidr)
        .collect()
}

/// One `CIDR` or address.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("{s:?} is not an address or CIDR prefix (10.0.0.0/8, fd00::/8, 127.0.0.1)")
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn prefixes_and_hosts_match_in_both_families() {
        let a = AllowList::new(&parse_cidrs("10.0.0.0/8, 127.0.0.1,fd00::/8").unwrap()).unwrap();
        let at = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert!(a.permits(at("10.200.1.2:5")));
        assert!(a.permits(at("127.0.0.1:5")));
        assert!(!a.permits(at("127.0.0.2:5")), "a bare address is one host");
        assert!(a.permits(at("[fd12::1]:5")));
        assert!(a.permits(at("[::ffff:10.1.1.1]:5")), "IPv4-mapped is IPv4");
        assert!(!a.permits(at("[::1]:5")));
        assert!(!a.permits(None), "an unnamed sender is not allowed");
        assert!(AllowList::new(&[]).is_none(), "empty: everyone");
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        for bad in ["10.0.0.0/33", "x", "10.0.0/8", "::/129", ""] {
            assert!(parse_cidr(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Never panics on any text, and what it accepts contains its own network address.
        #[test]
        fn any_text_parses_or_is_refused(s in "\\PC{0,40}") {
            if let Ok(n) = parse_cidr(&s) {
                prop_assert!(n.contains(&n.network()));
            }
        }
    }
}
