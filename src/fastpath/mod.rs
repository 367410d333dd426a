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
//!
//! Floor 2 (the data path): above its counters and sockets, below the registry that drives it. `plan`
//! decides, `book` is what the workers read, `loader` is the only module that talks to the BPF
//! loader crate.

use std::net::SocketAddr;
use std::sync::Arc;

mod book;
#[cfg(udptee_fastpath)]
mod loader;
mod plan;
mod sysctl;

pub use self::book::{Book, BookRecord, MARK_COPY};
pub(crate) use self::plan::{KernelTarget, LocalAddrs, Plan, ineligible};
pub use self::plan::{MAX_KERNEL_TARGETS, MAX_SLOTS, PASS_REASONS};
pub use crate::config::FastPathMode as Mode;
pub use crate::metrics::kernel::{KernelSnapshot, KernelTargetCounts};

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
