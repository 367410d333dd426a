//! A target group as configured: lines sharded over its members on statsd's own ring (see
//! `statsd::ring`), each member checked over statsd's admin port. Floor 1.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::ConfigError;
use super::limits::{MAX_DATAGRAM_LIMIT, MIN_INTERVAL};

/// How often members are checked: proxy.js's `checkInterval` default.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// A group's largest re-batched datagram: 1432 bytes, what DogStatsD clients fill (a 1500-byte MTU
/// less the IP and UDP headers, with room for tunnels).
pub const DEFAULT_GROUP_MAX_DATAGRAM: usize = 1432;
/// Smallest group `max-datagram`: below this nearly every line would go alone.
pub const MIN_GROUP_MAX_DATAGRAM: usize = 64;
/// Most members in a group: each costs a sender thread, a socket and its backlog bytes.
pub const MAX_MEMBERS: usize = 64;

/// One member: where its lines go, and where it answers `health`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberSpec {
    /// The address as written: the member's identity on the ring (a host name hashes as the name).
    pub addr: String,
    /// What `addr` resolves to.
    pub resolved: SocketAddr,
    /// statsd's admin (management) port, `HOST:PORT`, checked every `health_interval`; `None`:
    /// never checked, always in the ring.
    pub admin: Option<String>,
}

/// A group's members and settings. Its line settings are the target's (applied before sharding).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// In the order written; a line's member is its index here.
    pub members: Vec<MemberSpec>,
    /// How often each member with an `admin` is checked, and how long a check may take.
    pub health_interval: Duration,
    /// Largest datagram the group makes when it re-batches lines (a longer line goes alone).
    pub max_datagram: usize,
}

impl GroupSpec {
    /// Checks the members and settings of group `name`.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::Group {
            target: name.to_owned(),
            reason,
        };
        if self.members.is_empty() {
            return Err(bad(
                "`members` is empty: give at least one { addr = \"HOST:PORT\" }".into(),
            ));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(bad(format!(
                "{} members, more than the most, {MAX_MEMBERS}",
                self.members.len()
            )));
        }
        if !(MIN_GROUP_MAX_DATAGRAM..=MAX_DATAGRAM_LIMIT).contains(&self.max_datagram) {
            return Err(bad(format!(
                "max-datagram {} is outside {MIN_GROUP_MAX_DATAGRAM} to {MAX_DATAGRAM_LIMIT}",
                self.max_datagram
            )));
        }
        if self.health_interval < MIN_INTERVAL {
            return Err(bad(format!(
                "health-interval {:?} is under the shortest, {MIN_INTERVAL:?}",
                self.health_interval
            )));
        }
        for (i, m) in self.members.iter().enumerate() {
            if m.resolved.port() == 0 {
                return Err(bad(format!("member {} has port 0", m.addr)));
            }
            if let Some(o) = self.members[..i].iter().find(|o| {
                o.addr == m.addr || super::canonical(o.resolved) == super::canonical(m.resolved)
            }) {
                return Err(bad(format!(
                    "members {} and {} are the same receiver ({}): each member once",
                    o.addr, m.addr, m.resolved
                )));
            }
            if let Some(admin) = &m.admin {
                check_admin(admin).map_err(|why| bad(format!("member {}: admin {why}", m.addr)))?;
            }
        }
        Ok(())
    }
}

/// An admin address is `HOST:PORT` (or `[V6]:PORT`) with a port from 1 to 65535; it is looked up at
/// every check, so a host name may move.
fn check_admin(admin: &str) -> Result<(), String> {
    let shown: String = admin.chars().take(100).collect();
    let Some((host, port)) = admin.rsplit_once(':') else {
        return Err(format!("{shown:?} has no port: give HOST:PORT"));
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || (host.starts_with('[') && host.ends_with(']'))
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(format!(
            "{shown:?} is not HOST:PORT with a port from 1 to 65535"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(addr: &str, admin: Option<&str>) -> MemberSpec {
        MemberSpec {
            addr: addr.into(),
            resolved: addr.parse().unwrap(),
            admin: admin.map(Into::into),
        }
    }

    fn group(members: Vec<MemberSpec>) -> GroupSpec {
        GroupSpec {
            members,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            max_datagram: DEFAULT_GROUP_MAX_DATAGRAM,
        }
    }

    #[test]
    fn empty_duplicate_and_unparsable_members_are_refused_by_name() {
        let e = group(vec![]).validate("c").unwrap_err().to_string();
        assert!(e.contains("`members` is empty") && e.contains("c"), "{e}");
        let dup = group(vec![
            member("127.0.0.1:1", None),
            member("127.0.0.1:1", None),
        ]);
        assert!(
            dup.validate("c")
                .unwrap_err()
                .to_string()
                .contains("same receiver")
        );
        let mapped = group(vec![
            member("127.0.0.1:1", None),
            member("[::ffff:127.0.0.1]:1", None),
        ]);
        assert!(
            mapped.validate("c").is_err(),
            "one receiver in two spellings"
        );
        for admin in ["nope", "h:0", "h:99999", ":8126", "a b:1"] {
            let g = group(vec![member("127.0.0.1:1", Some(admin))]);
            let e = g.validate("c").unwrap_err().to_string();
            assert!(e.contains("admin"), "{admin}: {e}");
        }
        for admin in ["127.0.0.1:8126", "statsd-a.svc:8126", "[::1]:8126"] {
            group(vec![member("127.0.0.1:1", Some(admin))])
                .validate("c")
                .unwrap();
        }
    }

    #[test]
    fn a_health_interval_under_100ms_and_a_tiny_datagram_are_refused() {
        let mut g = group(vec![member("127.0.0.1:1", None)]);
        g.health_interval = Duration::from_millis(50);
        assert!(
            g.validate("c")
                .unwrap_err()
                .to_string()
                .contains("health-interval")
        );
        g.health_interval = DEFAULT_HEALTH_INTERVAL;
        g.max_datagram = 10;
        assert!(
            g.validate("c")
                .unwrap_err()
                .to_string()
                .contains("max-datagram")
        );
    }
}
