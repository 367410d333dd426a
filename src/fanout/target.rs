//! A target as the data path sees it: one incarnation's socket, backlog ring, counters and sender
//! ([`TargetCore`]), the entry a table publishes for it, and the immutable [`TargetTable`] workers
//! load once per batch. Hot path: workers and senders read these; only the registry builds them.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Instant;

use super::observe::Observer;
use super::origin::Keeping;
use super::ratelimit::SharedRateLimit;
use crate::config::{ConfigError, GroupSpec, MemberSpec, TargetSpec};
use crate::fastpath::Book;
use crate::metrics::counters::TargetCounterSet;
use crate::net::allow::AllowList;
use crate::pool::ring::ByteRing;
use crate::ratecap::RateCap;
use crate::statsd::filter::LineFilter;
use crate::statsd::ring::Ring;

/// One incarnation of a target: its connected socket, backlog and sender. A new address or new queue
/// settings make a new incarnation under the same name (and the same counters).
#[derive(Debug)]
pub(crate) struct TargetCore {
    pub(crate) name: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) socket: UdpSocket,
    pub(crate) ring: ByteRing,
    pub(crate) counters: Arc<TargetCounterSet>,
    /// Send-error warnings for this target, shared by every call site (one warning per interval).
    pub(crate) errors: SharedRateLimit,
    /// Set when no producer can push any more: the sender drains the ring and exits.
    pub(crate) closed: AtomicBool,
    /// Set when the target is removed or the forwarder stops: after it, what is left is dropped as
    /// `drain_timeout`.
    pub(crate) drain_deadline: OnceLock<Instant>,
    /// Set when the target was removed (not at shutdown): its sender logs its final accounting.
    pub(crate) retired: AtomicBool,
    /// The sender thread, to wake it after a push.
    pub(crate) sender: OnceLock<Thread>,
    /// The sender thread is running.
    pub(crate) sender_alive: AtomicBool,
    /// The line filter of the published entry (none: send as received); the sender loads it per
    /// batch, so a change of line settings applies without a new incarnation.
    pub(crate) lines: arc_swap::ArcSwapOption<LineFilter>,
    /// Digest the lines sent (`parity`), for a target without line settings.
    pub(crate) parity: AtomicBool,
    /// A Unix datagram target's path: the watch thread connects its socket again while it is down
    /// (the receiver may start later, or restart and bind the path anew).
    pub(crate) unix: Option<std::path::PathBuf>,
    /// A group's members and ring: its sender shards into the members' rings instead of sending
    /// (`fanout/group`); its own socket is an unbound placeholder.
    pub(crate) group: Option<Arc<Group>>,
    /// A group member: its sender counts the lines of what it sends (`Offered`, `Sent`, `Dropped`).
    pub(crate) count_lines: bool,
    /// Whether copies keep their sender's origin (`preserve-source`), and how.
    pub(crate) origin: Keeping,
    /// When this incarnation started: since when `addr` is the target's.
    pub(crate) since: std::time::SystemTime,
    /// A stream target's connection state (its sender owns the connection).
    pub(crate) link: Option<StreamLink>,
}

/// A stream target's (TCP or Unix stream) connection state, for reports, and where it connects.
#[derive(Debug, Default)]
pub(crate) struct StreamLink {
    pub(crate) connected: AtomicBool,
    /// Connections made.
    pub(crate) connects: AtomicU64,
    /// Connections lost (a reset, a close by the receiver, a timeout).
    pub(crate) lost: AtomicU64,
    /// Attempts to connect that failed.
    pub(crate) failed: AtomicU64,
    /// The send buffer asked for (`sndbuf`).
    pub(crate) sndbuf_bytes: Option<usize>,
    /// A Unix stream target's socket file (none: TCP, at the core's `addr`).
    pub(crate) path: Option<std::path::PathBuf>,
    /// A connection opened before this incarnation was published (a switch), for its sender.
    pub(crate) handoff: std::sync::Mutex<Option<crate::net::stream::Conn>>,
}

impl StreamLink {
    /// Where its receiver is.
    pub(crate) fn endpoint(&self, addr: SocketAddr) -> crate::net::link::Endpoint<'_> {
        crate::net::link::Endpoint::of(self.path.as_deref(), addr)
    }
}

/// A group in the data path: its members, each a target incarnation of its own (socket, ring,
/// sender, counters), and the ring of those up. Behaviour in `fanout/group` and `fanout/health`.
#[derive(Debug)]
pub(crate) struct Group {
    /// The group target's name.
    pub(crate) name: Arc<str>,
    pub(crate) spec: GroupSpec,
    pub(crate) members: Box<[Member]>,
    /// The ring of the members up; rebuilt whole when one goes down or comes back.
    pub(crate) ring: arc_swap::ArcSwap<Ring>,
    /// Serialises rebuilds.
    pub(crate) rebuilding: std::sync::Mutex<()>,
    /// Set when the sharder has exited: the health checks stop.
    pub(crate) stopped: AtomicBool,
    /// The health check threads, woken to stop.
    pub(crate) checkers: std::sync::Mutex<Vec<Thread>>,
}

/// One member of a group.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) spec: MemberSpec,
    pub(crate) core: Arc<TargetCore>,
    /// In the ring: up at start, then as its last health check said.
    pub(crate) up: AtomicBool,
    /// What its last health check found (`None` before the first, or without `admin`).
    pub(crate) last_check: std::sync::Mutex<Option<String>>,
}

impl TargetCore {
    /// The whole entry peeked from this target's ring and not consumed yet (with its origin in
    /// front, for a target that keeps it). Only its sender calls it.
    #[allow(unsafe_code)]
    pub(crate) fn entry(&self, e: &crate::pool::ring::Entry) -> &[u8] {
        // SAFETY: the sender is the ring's one consumer; every entry passed here comes from its
        // own `peek` of this batch, and it consumes them only after it is done with them.
        unsafe { self.ring.payload(e) }
    }

    /// The datagram of an entry (after its origin, for a target that keeps it).
    pub(crate) fn payload(&self, e: &crate::pool::ring::Entry) -> &[u8] {
        self.entry(e).get(self.origin_bytes()..).unwrap_or_default()
    }

    /// Bytes of origin in front of each entry of this target's ring (0 unless it keeps origins).
    pub(crate) fn origin_bytes(&self) -> usize {
        if self.origin.way.is_some() {
            crate::net::origin::ORIGIN_BYTES
        } else {
            0
        }
    }

    /// The socket that sends copies with their origin: the raw one, or the target's own.
    pub(crate) fn origin_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match &self.origin.raw {
            Some(raw) => raw.as_fd(),
            None => self.socket.as_fd(),
        }
    }

    /// Wakes the sender (after a push, or when closing).
    pub(crate) fn wake(&self) {
        if let Some(t) = self.sender.get() {
            t.unpark();
        }
    }

    /// Removed from the set: its sender drains what is left until `deadline`, then logs its final
    /// accounting.
    pub(crate) fn retire(&self, deadline: Instant) {
        let _ = self.drain_deadline.set(deadline);
        self.retired.store(true, Ordering::Relaxed);
    }

    /// No more pushes will come.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake();
    }
}

/// Closes a core's backlog when the last table holding it is gone: by then no worker can push.
#[derive(Debug)]
pub(crate) struct ProducerGuard(pub(crate) Arc<TargetCore>);

impl Drop for ProducerGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A target as one table publishes it.
#[derive(Debug)]
pub(crate) struct TargetEntry {
    pub(crate) core: Arc<TargetCore>,
    pub(crate) producers: Arc<ProducerGuard>,
    pub(crate) spec: TargetSpec,
    /// Every copy goes through the sender (line settings or parity): workers never send inline.
    pub(crate) via_sender: bool,
    /// `max-rate` in datagrams, applied by the workers before they send or queue.
    pub(crate) rate: Option<RateCap>,
}

impl TargetEntry {
    /// An entry for `spec`; a rate cap bursts by `batch` (a worker's batch), so a batch that
    /// arrives at exactly the rate is never cut.
    pub(crate) fn new(
        core: Arc<TargetCore>,
        producers: Arc<ProducerGuard>,
        spec: TargetSpec,
        batch: usize,
    ) -> Self {
        let via_sender =
            !spec.lines.is_passthrough() || spec.parity || spec.group.is_some() || spec.is_stream();
        let rate = spec
            .max_rate
            .filter(|r| r.unit == crate::config::RateUnit::Datagrams)
            .map(|r| RateCap::new(r.per_second, batch));
        Self {
            core,
            producers,
            spec,
            via_sender,
            rate,
        }
    }
}

impl TargetEntry {
    /// Compiles this entry's line filter (none for a target without line settings); a bad one
    /// refuses the whole change before anything is published.
    pub(crate) fn compile_lines(
        &self,
        max_datagram: usize,
    ) -> Result<Option<Arc<LineFilter>>, ConfigError> {
        if self.spec.lines.is_passthrough() {
            return Ok(None);
        }
        let lines_per_second = self
            .spec
            .max_rate
            .filter(|r| r.unit == crate::config::RateUnit::Lines)
            .map(|r| r.per_second);
        LineFilter::new(&self.spec.lines, max_datagram)
            .map(|f| match lines_per_second {
                Some(n) => f.with_line_cap(n),
                None => f,
            })
            .map(|f| Some(Arc::new(f)))
            .map_err(|reason| ConfigError::Lines {
                target: self.spec.name.clone(),
                reason,
            })
    }

    /// Gives the core what this entry asks of it: the line filter (the sender loads it per batch)
    /// and whether to digest its lines.
    pub(crate) fn install(&self, lines: Option<Arc<LineFilter>>) {
        self.core.lines.store(lines);
        self.core.parity.store(self.spec.parity, Ordering::Relaxed);
    }
}

/// An immutable target set. Workers load it once per batch.
#[derive(Debug, Default)]
pub struct TargetTable {
    /// Increases with every published change.
    pub generation: u64,
    pub(crate) targets: Box<[Arc<TargetEntry>]>,
    /// The recorder's and live taps' copies of every received datagram.
    pub(crate) observers: Box<[Arc<Observer>]>,
    /// `--allow`: the senders forwarded for (`None`: everyone).
    pub(crate) allow: Option<Arc<AllowList>>,
    /// With the kernel fast path: which targets it served, by the mark of each datagram.
    pub(crate) kernel: Option<Arc<Book>>,
}

impl TargetTable {
    /// Names in table order.
    pub fn names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.spec.name.clone()).collect()
    }

    /// Each target's name and counters, in table order.
    pub(crate) fn counters(&self) -> impl Iterator<Item = (&str, &Arc<TargetCounterSet>)> + Clone {
        self.targets
            .iter()
            .map(|t| (t.spec.name.as_str(), &t.core.counters))
    }

    /// Whether `entries` are exactly this table's, in its order: a change that changes nothing.
    pub(crate) fn holds_exactly(&self, entries: &[Arc<TargetEntry>]) -> bool {
        self.targets.len() == entries.len()
            && self
                .targets
                .iter()
                .zip(entries)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}
