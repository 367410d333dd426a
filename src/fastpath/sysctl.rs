//! The host settings the kernel path needs, changed only where needed and put back at exit.
//!
//! A clone redirected into an interface's ingress has lost the route its original carried, so the
//! kernel routes it again as if it had arrived from outside. For IPv4 on lo it then drops a copy
//! with a loopback or local source (reason IP_LOCAL_SOURCE) or a loopback destination (martian),
//! unless lo's `route_localnet` and `accept_local` are 1. They are set on lo alone, never on `all`
//! or a real interface (route_localnet there is CVE-2020-8558); IPv6 needs nothing.

/// The settings changed so far, with their values before.
#[derive(Debug, Default)]
pub(super) struct Guard {
    changed: Vec<(&'static str, String)>,
    tried: bool,
}

const LOOPBACK_IPV4: [&str; 2] = [
    "/proc/sys/net/ipv4/conf/lo/route_localnet",
    "/proc/sys/net/ipv4/conf/lo/accept_local",
];

impl Guard {
    /// Whether lo's route_localnet and accept_local are 1, setting them if not (each change
    /// logged; a refusal logged once). Without them IPv4 copies through lo would be dropped by the
    /// kernel after being counted, so IPv4 targets then stay in user space.
    pub(super) fn loopback_for_ipv4(&mut self) -> bool {
        let set = || {
            LOOPBACK_IPV4
                .iter()
                .all(|p| std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1"))
        };
        if set() {
            return true;
        }
        if std::mem::replace(&mut self.tried, true) {
            return false;
        }
        for path in LOOPBACK_IPV4 {
            let before = match std::fs::read_to_string(path) {
                Ok(v) => v.trim().to_owned(),
                Err(e) => {
                    tracing::warn!(setting = path, error = %e, "cannot read a setting the kernel path needs; IPv4 targets stay in user space");
                    continue;
                }
            };
            if before == "1" {
                continue;
            }
            match std::fs::write(path, "1") {
                Ok(()) => {
                    tracing::info!(setting = path, from = %before, to = "1", "set for the kernel path's IPv4 copies on lo; put back at exit");
                    self.changed.push((path, before));
                }
                Err(e) => {
                    tracing::warn!(setting = path, error = %e, "cannot set a setting the kernel path needs; IPv4 targets stay in user space")
                }
            }
        }
        set()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (path, before) in self.changed.drain(..).rev() {
            match std::fs::write(path, &before) {
                Ok(()) => tracing::info!(setting = path, to = %before, "put back"),
                Err(e) => tracing::warn!(setting = path, error = %e, "could not put back"),
            }
        }
    }
}
