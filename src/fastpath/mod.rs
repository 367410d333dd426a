//! The kernel fast path: a TC ingress program (`bpf/fastpath.bpf.c`) that copies datagrams to local
//! targets inside the kernel, so the receiving core pays for one clone per copy instead of a
//! receive, a copy out and a send per target.
//!
//! The registry decides per target which path serves it (`ineligible`): a UDP target on this host
//! with no line settings, enabled, while no `--allow` list is set, goes to the kernel; every other
//! one stays in user space, fed from the same datagram. After every published table the registry
//! hands the kernel a `Plan`; `FastPath::publish` writes it into the program's double-buffered
//! configuration under a new generation, after recording that generation's served targets in the
//! [`Book`]. The program marks each original it passes up with the generation that served it, and
//! the workers read the mark (SO_RCVMARK) and skip exactly the targets the kernel served: each
//! datagram is copied once per target whatever changes around it. Unmarked datagrams (fragments, IP
//! options, GSO packets, or all of them while the program is not loaded) are served to every target
//! by user space, as without the fast path.
//!
//! The program's per-CPU counters are folded into each target's counters at every snapshot
//! (`TargetRegistry::snapshots`): its copies are `forwarded`, its refused clones `backlog_full` or
//! `clone_error` drops, and `offered` grows by both, so `offered = forwarded + drops` still holds.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(udptee_fastpath)]
mod loader;
mod sysctl;

/// Kernel targets the program serves at most; further eligible targets stay in user space.
pub const MAX_KERNEL_TARGETS: usize = 8;
/// Counter rows in the program (target names, first seen first); later names stay in user space.
pub const MAX_SLOTS: usize = 64;
/// `skb->mark` of an original the program passed up, `| generation & 0xffff`.
pub(crate) const MARK_HANDLED: u32 = 0x7ee1_0000;
/// `skb->mark` of a copy the program made (never copied again).
pub const MARK_COPY: u32 = 0x7ee2_0000;
const MARK_MASK: u32 = 0xffff_0000;


pub use crate::config::FastPathMode as Mode;

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

/// Which targets the kernel served under each recent generation: what a worker reads for a marked
/// datagram. Written by the owner before the generation is published to the program.
#[derive(Debug)]
pub struct Book {
    entries: Box<[BookEntry]>,
    /// Marked datagrams whose generation had already left the book (served by user space too).
    stale: AtomicU64,
}

#[derive(Debug, Default)]
struct BookEntry {
    generation: AtomicU32,
    v4: AtomicU64,
    v6: AtomicU64,
}

const BOOK_LEN: usize = 256;

impl Default for Book {
    fn default() -> Self {
        Self {
            entries: (0..BOOK_LEN).map(|_| BookEntry::default()).collect(),
            stale: AtomicU64::new(0),
        }
    }
}

impl Book {
    /// The target bits (by slot) the kernel already served for a datagram received with `mark` from
    /// `src`; 0 for one it did not handle.
    #[inline]
    pub(crate) fn served(&self, mark: u32, src: Option<SocketAddr>) -> u64 {
        if mark & MARK_MASK != MARK_HANDLED {
            return 0;
        }
        let g = mark & 0xffff;
        let e = &self.entries[g as usize % BOOK_LEN];
        if e.generation.load(Ordering::Acquire) & 0xffff != g {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        if is_v4(src) {
            e.v4.load(Ordering::Relaxed)
        } else {
            e.v6.load(Ordering::Relaxed)
        }
    }

    fn record(&self, generation: u32, v4: u64, v6: u64) {
        let e = &self.entries[(generation & 0xffff) as usize % BOOK_LEN];
        e.v4.store(v4, Ordering::Relaxed);
        e.v6.store(v6, Ordering::Relaxed);
        e.generation.store(generation, Ordering::Release);
    }

    /// Every generation recorded: (generation, IPv4 slots, IPv6 slots).
    pub(crate) fn entries(&self) -> Vec<(u32, u64, u64)> {
        self.entries
            .iter()
            .map(|e| {
                (
                    e.generation.load(Ordering::Acquire),
                    e.v4.load(Ordering::Relaxed),
                    e.v6.load(Ordering::Relaxed),
                )
            })
            .filter(|&(g, _, _)| g != 0)
            .collect()
    }

    /// Marked datagrams whose generation was no longer known.
    pub fn stale(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }
}

fn is_v4(src: Option<SocketAddr>) -> bool {
    match src {
        Some(SocketAddr::V4(_)) => true,
        Some(SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().is_some(),
        None => false,
    }
}

/// One generation of another instance's book, by target name: handed over with the sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BookRecord {
    /// The generation (its low 16 bits are in the marks).
    pub generation: u32,
    /// The targets it served IPv4 datagrams for.
    pub v4: Vec<String>,
    /// The targets it served IPv6 datagrams for.
    pub v6: Vec<String>,
}

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
    /// User space needs the original IPv4 datagrams (a user-space target, a recorder, a tap).
    pub(crate) pass_v4: bool,
    pub(crate) pass_v6: bool,
}

/// Why a target is not served by the kernel, or `None` when it can be.
pub(crate) fn ineligible(
    spec: &crate::config::TargetSpec,
    via_sender: bool,
    listen: SocketAddr,
    local: &LocalAddrs,
) -> Option<&'static str> {
    if spec.unix.is_some() {
        return Some("unix socket");
    }
    if !spec.enabled {
        return Some("disabled");
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

/// The kernel path's own counters, for the stats line, `/metrics` and the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelSnapshot {
    /// Datagrams the program served.
    pub handled: u64,
    /// Of those, datagrams whose original became the last copy (user space never received them).
    pub consumed: u64,
    /// Payload bytes of the `consumed` datagrams.
    pub consumed_bytes: u64,
    /// Datagrams passed up unhandled, by reason ([`PASS_REASONS`]).
    pub passed: Vec<(&'static str, u64)>,
    /// Marked datagrams whose generation the book no longer knew.
    pub stale_marks: u64,
    /// Where the program is attached.
    pub interfaces: Vec<String>,
    /// How it is attached: `tcx` or `netlink`.
    pub attach: &'static str,
    /// Why the kernel path copies nothing any more, when it was turned off while running.
    pub off: Option<&'static str>,
}

/// One target's counters in the program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelTargetCounts {
    /// Copies delivered into the stack.
    pub copies: u64,
    /// Payload bytes of those copies.
    pub bytes: u64,
    /// Clones refused because the receive backlog was full.
    pub backlog: u64,
    /// Clones refused for another reason.
    pub error: u64,
}

/// The loaded program and its maps; see the module docs. Dropping it detaches the program and puts
/// back every host setting it changed.
pub struct FastPath {
    #[cfg(udptee_fastpath)]
    inner: std::sync::Mutex<loader::Loaded>,
    book: Arc<Book>,
    interfaces: Vec<String>,
    attach: &'static str,
    /// The host settings changed for the kernel path, put back at drop.
    sysctls: std::sync::Mutex<sysctl::Guard>,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("interfaces", &self.interfaces)
            .field("attach", &self.attach)
            .finish_non_exhaustive()
    }
}

impl FastPath {
    /// Loads and attaches the program for `listen` (on `interfaces`, or where `listen` receives
    /// traffic), after turning SO_RCVMARK on for the workers' `sockets` (they learn from each
    /// datagram's mark which targets the kernel served). `listen` is `None` for a unixgram
    /// listener, which has nothing to copy. `Ok(None)` for [`Mode::Off`], and for [`Mode::Auto`]
    /// when it cannot load (said once, in the log); `Err` with one line for [`Mode::On`].
    pub fn start(
        mode: Mode,
        listen: Option<SocketAddr>,
        interfaces: &[String],
        sockets: &[std::net::UdpSocket],
    ) -> Result<Option<Arc<Self>>, String> {
        if mode == Mode::Off {
            return Ok(None);
        }
        let loaded = listen
            .ok_or_else(|| "a unixgram listener has no IP traffic to copy".to_owned())
            .and_then(|listen| {
                sockets
                    .iter()
                    .try_for_each(crate::net::socket::enable_rcvmark)
                    .map_err(|e| format!("SO_RCVMARK (Linux 5.19+) refused: {e}"))?;
                Self::load(listen, interfaces)
            });
        match loaded {
            Ok(fp) => {
                tracing::info!(
                    interfaces = ?fp.interfaces,
                    attach = fp.attach,
                    "kernel fast path attached: local targets without line settings are copied in the kernel"
                );
                Ok(Some(Arc::new(fp)))
            }
            Err(e) if mode == Mode::On => Err(format!("--fast-path on: {e}")),
            Err(e) => {
                tracing::warn!(reason = %e, "--fast-path auto: the kernel path is not available; every target is served from user space");
                Ok(None)
            }
        }
    }

    #[cfg(not(udptee_fastpath))]
    fn load(_listen: SocketAddr, _interfaces: &[String]) -> Result<Self, String> {
        Err(format!(
            "this udptee was built without the kernel fast path ({})",
            env!("UDPTEE_FASTPATH_MISSING")
        ))
    }

    #[cfg(udptee_fastpath)]
    fn load(listen: SocketAddr, interfaces: &[String]) -> Result<Self, String> {
        let local = LocalAddrs::read();
        let interfaces = if interfaces.is_empty() {
            local.interfaces_for(listen.ip())
        } else {
            interfaces.to_vec()
        };
        if interfaces.is_empty() {
            return Err(format!(
                "no interface holds the listen address {}",
                listen.ip()
            ));
        }
        let (loaded, attach) = loader::Loaded::attach(listen, &interfaces)?;
        Ok(Self {
            inner: std::sync::Mutex::new(loaded),
            book: Arc::new(Book::default()),
            interfaces,
            attach,
            sysctls: std::sync::Mutex::new(sysctl::Guard::default()),
        })
    }

    /// Takes over another instance's generations (already translated to our slots): their marks
    /// read as they did there, and our own generations continue after theirs.
    pub(crate) fn seed(&self, entries: &[(u32, u64, u64)]) {
        for &(g, v4, v6) in entries {
            self.book.record(g, v4, v6);
        }
        #[cfg(udptee_fastpath)]
        if let Some(max) = entries.iter().map(|e| e.0).max() {
            self.inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .continue_after(max);
        }
    }

    /// Runs the program once on `packet`, an Ethernet frame, as if it had arrived on lo
    /// (BPF_PROG_TEST_RUN): its verdict (-1 continue, 2 drop) and the frame after it. For tests.
    #[doc(hidden)]
    pub fn test_run(&self, packet: &[u8]) -> Result<(i32, Vec<u8>), String> {
        #[cfg(udptee_fastpath)]
        {
            self.inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .test_run(packet)
        }
        #[cfg(not(udptee_fastpath))]
        {
            let _ = packet;
            Err("built without the kernel fast path".into())
        }
    }

    /// What the workers read for marked datagrams.
    pub(crate) fn book(&self) -> &Arc<Book> {
        &self.book
    }

    /// Serves `plan` from the next datagram on. On failure the kernel path is emptied (every
    /// datagram goes up unmarked and user space serves every target) and the error is returned.
    pub(crate) fn publish(&self, plan: &Plan) -> Result<(), String> {
        let mask = |v4: bool| {
            plan.targets
                .iter()
                .filter(|t| t.addr.is_ipv4() == v4)
                .fold(0u64, |m, t| m | 1 << t.slot)
        };
        let (v4, v6) = (mask(true), mask(false));
        #[cfg(udptee_fastpath)]
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let result = inner.publish(plan, |generation| self.book.record(generation, v4, v6));
            if let Err(e) = &result {
                inner.clear();
                tracing::error!(error = %e, "the kernel fast path could not be updated; every target is served from user space now");
            }
            result
        }
        #[cfg(not(udptee_fastpath))]
        {
            let _ = (v4, v6);
            Err("built without the kernel fast path".into())
        }
    }

    /// Whether IPv4 targets can be served: lo's settings are (or could now be made) right.
    pub(crate) fn ipv4_ready(&self) -> bool {
        self.sysctls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .loopback_for_ipv4()
    }

    /// The program's counters for each of `slots`.
    pub(crate) fn target_counts(&self, slots: usize) -> Vec<KernelTargetCounts> {
        #[cfg(udptee_fastpath)]
        {
            let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.target_counts(slots.min(MAX_SLOTS))
        }
        #[cfg(not(udptee_fastpath))]
        {
            vec![KernelTargetCounts::default(); slots.min(MAX_SLOTS)]
        }
    }

    /// The program's own counters.
    pub fn snapshot(&self) -> KernelSnapshot {
        #[cfg(udptee_fastpath)]
        let (handled, consumed, consumed_bytes, passed) = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reasons();
        #[cfg(not(udptee_fastpath))]
        let (handled, consumed, consumed_bytes, passed) = (0, 0, 0, [0u64; PASS_REASONS.len()]);
        KernelSnapshot {
            handled,
            consumed,
            consumed_bytes,
            passed: PASS_REASONS.iter().copied().zip(passed).collect(),
            stale_marks: self.book.stale(),
            interfaces: self.interfaces.clone(),
            attach: self.attach,
            off: None,
        }
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
    fn a_mark_is_read_only_for_its_own_generation_and_family() {
        let book = Book::default();
        book.record(7, 0b01, 0b10);
        let v4 = Some("127.0.0.1:9".parse().unwrap());
        let v6 = Some("[::1]:9".parse().unwrap());
        let mapped = Some("[::ffff:127.0.0.1]:9".parse().unwrap());
        assert_eq!(book.served(MARK_HANDLED | 7, v4), 0b01);
        assert_eq!(book.served(MARK_HANDLED | 7, mapped), 0b01);
        assert_eq!(book.served(MARK_HANDLED | 7, v6), 0b10);
        assert_eq!(book.served(0, v4), 0, "unmarked: user space serves all");
        assert_eq!(
            book.served(MARK_COPY | 7, v4),
            0,
            "a copy's mark is not a handled one"
        );
        assert_eq!(book.served(0x1234_0007, v4), 0, "someone else's mark");
        assert_eq!(book.stale(), 0);
        book.record(7 + BOOK_LEN as u32, 0b100, 0);
        assert_eq!(
            book.served(MARK_HANDLED | 7, v4),
            0,
            "overwritten: not guessed"
        );
        assert_eq!(book.stale(), 1, "and counted");
    }

    #[test]
    fn addresses_are_laid_out_as_the_program_reads_them() {
        let w = addr_words("127.0.0.1".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [127, 0, 0, 1]);
        let w = addr_words("::1".parse().unwrap());
        assert_eq!(w[3].to_ne_bytes(), [0, 0, 0, 1]);
    }
}
