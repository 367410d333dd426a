//! The watch thread: what happens to copies after udptee hands them to the kernel.
//!
//! "Forwarded" means the kernel accepted the copy (`sendmmsg` returned it). For a target on this host
//! the copy can still be lost one hop later: the receiving socket's buffer is full (a receiver that
//! stalls), or nothing is bound there at all (the kernel answers with ICMP and reports ECONNREFUSED
//! only on some later sends). Once a second this thread asks the kernel, through sock_diag, which
//! sockets receive each local target's address and how many datagrams they dropped, and adds the
//! increase to the target's `receiver_drops`. A target with no socket bound is `down`, and what is
//! forwarded to it between two looks that both found it down is counted there too. A remote
//! target's socket cannot be seen: it is `down` while its sends meet errors, and its receiver drops
//! are unknown. Never on the data path: the data threads only ever write their own counters.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::targets::TargetRegistry;
use crate::metrics::counters::TargetCounterSet;
use crate::net::diag::{Diag, UdpSocketInfo, receivers};

/// How often the receivers are looked at.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How often this host's own addresses are read again (which targets are local).
const LOCALS_INTERVAL: Duration = Duration::from_secs(30);

/// What was seen of one target at the last look.
#[derive(Debug)]
struct Seen {
    addr: SocketAddr,
    from: Option<SocketAddr>,
    counters: Arc<TargetCounterSet>,
    /// Drop counts of the receiving sockets, by inode.
    drops: HashMap<u32, u32>,
    send_errors: u64,
    forwarded: u64,
    up: Option<bool>,
    /// A Unix datagram target: whether something listened at its path at the last connect; a
    /// TCP target: whether its sender holds a connection. Its UDP sockets are not looked for.
    unix: Option<bool>,
}

impl Seen {
    /// Not looked at yet (`send_errors` is `u64::MAX` until the first look).
    fn new(addr: SocketAddr, from: Option<SocketAddr>, counters: Arc<TargetCounterSet>) -> Self {
        Self {
            addr,
            from,
            counters,
            drops: HashMap::new(),
            send_errors: u64::MAX,
            forwarded: 0,
            up: None,
            unix: None,
        }
    }
}

/// The watcher's state; [`Watch::spawn`] runs it on its own thread.
#[derive(Debug)]
pub(crate) struct Watch {
    registry: Arc<TargetRegistry>,
    diag: Option<Diag>,
    locals: Vec<IpAddr>,
    locals_at: Instant,
    seen: HashMap<String, Seen>,
}

impl Watch {
    pub(crate) fn new(registry: Arc<TargetRegistry>) -> Self {
        let diag = match Diag::open() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::info!(error = %e, "sock_diag unavailable: receiver-side drops of local targets are not reported");
                None
            }
        };
        Self {
            registry,
            diag,
            locals: crate::config::local_addresses(),
            locals_at: Instant::now(),
            seen: HashMap::new(),
        }
    }

    /// Looks at every current target, and once more at those removed since the last look.
    pub(crate) fn poll(&mut self) {
        if self.locals_at.elapsed() >= LOCALS_INTERVAL {
            self.locals = crate::config::local_addresses();
            self.locals_at = Instant::now();
        }
        let table = self.registry.current();
        let mut current = Vec::with_capacity(table.targets.len());
        // A group's own socket is a placeholder: its members' health is its own checks' business.
        for t in table.targets.iter().filter(|t| t.core.group.is_none()) {
            let name = t.spec.name.clone();
            let from = t.core.socket.local_addr().ok();
            let counters = Arc::clone(&t.core.counters);
            match self.seen.get_mut(&name) {
                Some(seen)
                    if seen.addr == t.core.addr && Arc::ptr_eq(&seen.counters, &counters) =>
                {
                    seen.from = from;
                }
                // New, or at a new address: its sockets are new to us; start from what they show.
                _ => {
                    self.seen
                        .insert(name.clone(), Seen::new(t.core.addr, from, counters));
                }
            }
            // A Unix target's receiver may have started, or restarted on a new socket: connect again.
            if let (Some(path), Some(seen)) = (&t.core.unix, self.seen.get_mut(&name)) {
                seen.unix = Some(crate::net::socket::reconnect_unix(&t.core.socket, path).is_ok());
            }
            if let (Some(link), Some(seen)) = (&t.core.link, self.seen.get_mut(&name)) {
                seen.unix = Some(link.connected.load(Ordering::Relaxed));
            }
            current.push(name);
        }
        self.look_all();
        self.seen.retain(|name, _| current.contains(name));
        self.registry.rotate_parity();
        self.registry.check_marks();
    }

    /// Looks at every target seen so far, asking the kernel once per port.
    fn look_all(&mut self) {
        let mut by_port: HashMap<u16, Option<Vec<UdpSocketInfo>>> = HashMap::new();
        for (name, seen) in &mut self.seen {
            let local = seen.unix.is_none() && is_local(seen.addr.ip(), &self.locals);
            let sockets = match (&mut self.diag, local) {
                (Some(diag), true) => by_port
                    .entry(seen.addr.port())
                    .or_insert_with(|| diag.udp_on_port(seen.addr.port()).ok())
                    .as_deref(),
                _ => None,
            };
            look(name, seen, sockets);
        }
    }

    /// Looks now (before any datagram is forwarded, so earlier drops of a receiver are not counted
    /// as ours), then once a second and whenever targets join, until `stop`; then hands itself back
    /// for a last look after the drain.
    pub(crate) fn spawn(mut self, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<Self>> {
        self.poll();
        let registry = Arc::clone(&self.registry);
        let handle = std::thread::Builder::new()
            .name("udptee-watch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(WATCH_INTERVAL);
                    self.poll();
                }
                self
            })?;
        registry.set_watcher(handle.thread().clone());
        Ok(handle)
    }

    /// The last look, after the senders drained: every target seen at the previous look, so what was
    /// removed since is looked at once more.
    pub(crate) fn last_look(&mut self) {
        self.look_all();
    }
}

fn is_local(ip: IpAddr, locals: &[IpAddr]) -> bool {
    let ip = crate::config::canonical(SocketAddr::new(ip, 0)).ip();
    ip.is_loopback() || locals.contains(&ip)
}

/// Updates one target from what the kernel shows (`sockets`: every UDP socket on its port, or `None`
/// for a remote target or when sock_diag failed).
fn look(name: &str, seen: &mut Seen, sockets: Option<&[UdpSocketInfo]>) {
    let counts = seen.counters.snapshot();
    let (errors, forwarded) = (counts.send_errors_total(), counts.forwarded);
    let first = seen.send_errors == u64::MAX;
    let up = match sockets {
        Some(all) => {
            let now = receivers(seen.addr, seen.from, all);
            if !first {
                let mut lost: u64 = now
                    .iter()
                    .map(|s| match seen.drops.get(&s.inode) {
                        // The kernel's counter is 32 bits and wraps.
                        Some(&before) => u64::from(s.drops.wrapping_sub(before)),
                        // A socket new since the last look (a restarted receiver): all of its drops.
                        None => u64::from(s.drops),
                    })
                    .sum();
                if now.is_empty() && seen.up == Some(false) {
                    // Nothing bound at either look: what was forwarded in between reached no one.
                    lost += forwarded.saturating_sub(seen.forwarded);
                }
                seen.counters.receiver().add_drops(lost);
            }
            seen.drops = now.iter().map(|s| (s.inode, s.drops)).collect();
            !now.is_empty()
        }
        None => seen.unix.unwrap_or(first || errors == seen.send_errors),
    };
    seen.forwarded = forwarded;
    seen.counters.receiver().set_state(up, sockets.is_some());
    seen.send_errors = errors;
    if seen.up != Some(up) {
        match (seen.up, up, sockets.is_some()) {
            (_, false, true) => tracing::warn!(
                target_name = name, address = %seen.addr,
                "target down: no socket is bound at its address; its copies are lost at the receiver"
            ),
            (_, false, false) => tracing::warn!(
                target_name = name, address = %seen.addr,
                "target down: its sends are failing"
            ),
            (Some(false), true, _) => {
                tracing::info!(target_name = name, address = %seen.addr, "target up again")
            }
            _ => {}
        }
        seen.up = Some(up);
    }
}
