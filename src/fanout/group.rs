//! A group target's work in the data path: its sender thread splits each datagram's lines over the
//! members on statsd's ring (`statsd::shard`) and hands each member's re-batched datagrams over:
//! sent at once without waiting when the member's queue is empty (as workers send inline), else
//! copied into that member's ring, whose own sender sends them like any target's. A slow or dead
//! member backs up its own ring only. The ring holds the members up; `fanout/health` changes that.
//!
//! Books: the group's own counters count datagrams as a target's do (`forwarded`: every line
//! handed to a member; `no_member`: no member was up; `filtered`), and lines (`Offered`, `Sent` to
//! members, `Dropped` for no member); each member's count what it was handed (`offered`), sent and
//! dropped, in datagrams and lines. So a group's lines sent = the sum of its members' lines offered.

use std::os::fd::AsFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::account::count_send_error;
use super::target::{Group, Member, TargetCore};
use crate::config::GroupSpec;
use crate::metrics::counters::{LineOutcome, TargetSnapshot};
use crate::net::mmsg::MmsgSend;
use crate::pool::ring::Entry;
use crate::statsd::filter::{LineCounts, LineFilter, Part};
use crate::statsd::ring::{Ring, hash};
use crate::statsd::shard::{Emit, Sharded, Sharder, count_lines};

/// Where a key goes: its hash, the point it lands on and that point's member.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// `md5(key)`'s first four bytes, little-endian.
    pub hash: u32,
    /// The point's value and the member's address, or `None` with no member up.
    pub point: Option<(u32, String)>,
}

/// One member as reports show it.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// The address as written (its identity on the ring).
    pub addr: String,
    /// Where its admin port is checked, if it is.
    pub admin: Option<String>,
    /// In the ring now.
    pub up: bool,
    /// What its last health check found.
    pub last_check: Option<String>,
    /// Its points in the current ring.
    pub points: usize,
    /// Its share of the hash space in the current ring, 0 to 1.
    pub share: f64,
    /// Its books: datagrams and lines handed to it, sent and dropped.
    pub books: TargetSnapshot,
}

impl Group {
    /// A group over `members` (in spec order), all in the ring.
    pub(crate) fn new(name: Arc<str>, spec: GroupSpec, members: Vec<Arc<TargetCore>>) -> Self {
        let members: Box<[Member]> = spec
            .members
            .iter()
            .zip(members)
            .map(|(m, core)| Member {
                spec: m.clone(),
                core,
                up: AtomicBool::new(true),
                last_check: std::sync::Mutex::new(None),
            })
            .collect();
        let all = Ring::new(
            members
                .iter()
                .enumerate()
                .map(|(i, m)| (i, m.spec.addr.as_str())),
        );
        Self {
            name,
            spec,
            members,
            ring: arc_swap::ArcSwap::from_pointee(all),
            rebuilding: std::sync::Mutex::new(()),
            stopped: AtomicBool::new(false),
            checkers: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Sets member `i` up or down; when that changes it, builds the ring of the members up and
    /// publishes it before the member's state shows the change (a reader that sees the state sees
    /// the ring that goes with it). Returns whether it changed.
    fn set_up(&self, i: usize, up: bool) -> bool {
        let _one = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
        if self.members[i].up.load(Ordering::Relaxed) == up {
            return false;
        }
        let live = self
            .members
            .iter()
            .enumerate()
            .filter(|&(j, m)| {
                if j == i {
                    up
                } else {
                    m.up.load(Ordering::Relaxed)
                }
            })
            .map(|(j, m)| (j, m.spec.addr.as_str()));
        self.ring.store(Arc::new(Ring::new(live)));
        self.members[i].up.store(up, Ordering::Release);
        true
    }

    /// Records member `i`'s health check: `Ok` with the answer, or why it failed. A change takes it
    /// out of the ring or puts it back (the whole ring is rebuilt, as proxy.js does).
    pub(crate) fn observe(&self, i: usize, result: Result<String, String>) {
        let m = &self.members[i];
        let up = result.is_ok();
        let text = match &result {
            Ok(answer) | Err(answer) => answer.clone(),
        };
        *m.last_check.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.clone());
        if self.set_up(i, up) {
            let live = self.ring.load().points().len();
            if up {
                tracing::warn!(target_name = %self.name, member = %m.spec.addr, answer = %text,
                    ring_points = live, "group member is healthy again: back in the ring");
            } else {
                tracing::warn!(target_name = %self.name, member = %m.spec.addr, reason = %text,
                    ring_points = live, "group member failed its health check: out of the ring, its keys go to the others");
            }
        }
    }

    /// Where `key` goes on the current ring.
    pub(crate) fn locate(&self, key: &[u8]) -> Placement {
        let h = hash(key);
        let ring = self.ring.load();
        Placement {
            hash: h,
            point: ring
                .locate(h)
                .map(|(p, m)| (ring.points()[p], self.members[m].spec.addr.clone())),
        }
    }

    /// Every member's state and books.
    pub(crate) fn members(&self) -> Vec<MemberView> {
        let ring = self.ring.load();
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| MemberView {
                addr: m.spec.addr.clone(),
                admin: m.spec.admin.clone(),
                up: m.up.load(Ordering::Relaxed),
                last_check: m
                    .last_check
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                points: ring.points_of(i),
                share: ring.share(i),
                books: m.core.counters.snapshot(),
            })
            .collect()
    }

    /// The sharder has exited: stop the health checks, and let each member drain and exit by the
    /// group's own deadline (as a removal or the shutdown set it).
    pub(crate) fn finish(&self, core: &TargetCore) {
        self.stopped.store(true, Ordering::Release);
        for t in self
            .checkers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            t.unpark();
        }
        for m in self.members.iter() {
            if let Some(&d) = core.drain_deadline.get() {
                if core.retired.load(Ordering::Relaxed) {
                    m.core.retire(d);
                } else {
                    let _ = m.core.drain_deadline.set(d);
                }
            }
            m.core.close();
        }
    }
}

/// What a group's sender reuses from batch to batch.
pub(crate) struct ShardState {
    sharder: Sharder,
    out: Vec<u8>,
    parts: Vec<Part>,
    /// Members pushed to in this batch, to wake.
    pushed: Vec<bool>,
    /// Sends to a member with an empty queue, without waiting.
    send: MmsgSend,
}

impl ShardState {
    pub(crate) fn new(group: &Group) -> Self {
        Self {
            sharder: Sharder::new(group.members.len(), group.spec.max_datagram),
            out: Vec::new(),
            parts: Vec::new(),
            pushed: vec![false; group.members.len()],
            send: MmsgSend::new_nonblocking(1),
        }
    }
}

/// Hands each ready datagram to its member: sent at once without waiting when the member's queue
/// is empty (as workers do for plain targets: no wake-up of its sender), else copied into its
/// ring, behind what waits there. Counted in the member's books either way.
struct Pusher<'a> {
    group: &'a Group,
    pushed: &'a mut [bool],
    send: &'a mut MmsgSend,
}

impl Emit for Pusher<'_> {
    fn emit(&mut self, m: usize, datagram: &[u8], lines: u32, rx_nanos: u64) {
        let core = &self.group.members[m].core;
        let c = core.counters.worker(0);
        let lines = u64::from(lines);
        // Offered first, outcomes after: a reader (outcomes first) never sees more out than in.
        c.add_offered(1);
        c.add_lines(LineOutcome::Offered, lines);
        if core.ring.is_empty() {
            match self.send.send_slices(core.socket.as_fd(), &[datagram]) {
                Ok(1) => {
                    c.add_forwarded(1, datagram.len() as u64);
                    c.add_lines(LineOutcome::Sent, lines);
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    count_send_error(core, c, &e);
                    c.add_lines(LineOutcome::Dropped, lines);
                    return;
                }
            }
        }
        if core.ring.producer().push_bytes(datagram, rx_nanos) {
            self.pushed[m] = true;
        } else {
            c.add_queue_full(1);
            c.add_lines(LineOutcome::Dropped, lines);
        }
    }
}

/// Shards one batch of the group's ring (`payload` reads an entry), through its line settings
/// first when it has some, and counts it in the group's books.
pub(crate) fn shard_batch<'e>(
    core: &TargetCore,
    group: &Group,
    entries: &'e [Entry],
    payload: impl Fn(&'e Entry) -> &'e [u8],
    filter: Option<&LineFilter>,
    st: &mut ShardState,
    rng: &mut fastrand::Rng,
) {
    let counters = core.counters.sender();
    let ring = group.ring.load();
    let ShardState {
        sharder,
        out,
        parts,
        pushed,
        send,
    } = st;
    let mut emit = Pusher {
        group,
        pushed: &mut pushed[..],
        send,
    };
    let (mut forwarded, mut bytes, mut none, mut empty) = (0u64, 0u64, 0u64, 0u64);
    let (mut sent, mut lost) = (0u64, 0u64);
    let mut counts = LineCounts::default();
    for e in entries {
        let data = payload(e);
        let mut placed = true;
        match filter {
            None => match sharder.shard(&ring, data, e.rx_nanos, &mut emit) {
                Sharded::Placed(n) => sent += u64::from(n),
                Sharded::NoMember(n) => {
                    lost += u64::from(n);
                    placed = false;
                }
            },
            Some(f) => {
                out.clear();
                parts.clear();
                f.apply(data, out, parts, &mut counts, rng);
                if parts.is_empty() {
                    empty += 1;
                    continue;
                }
                for p in parts.iter() {
                    match sharder.shard(&ring, &out[p.start..p.end], e.rx_nanos, &mut emit) {
                        Sharded::Placed(n) => sent += u64::from(n),
                        Sharded::NoMember(n) => {
                            lost += u64::from(n);
                            placed = false;
                        }
                    }
                }
            }
        }
        if placed {
            forwarded += 1;
            bytes += e.len as u64;
        } else {
            none += 1;
        }
    }
    sharder.flush(&mut emit);
    for (m, p) in pushed.iter_mut().enumerate() {
        if std::mem::take(p) {
            group.members[m].core.wake();
        }
    }
    let offered = if filter.is_some() {
        counts.offered
    } else {
        sent + lost
    };
    // Offered first: a reader takes outcomes first, so it never sees more out than in.
    counters.add_lines(LineOutcome::Offered, offered);
    counters.add_lines(LineOutcome::Filtered, counts.filtered);
    counters.add_lines(LineOutcome::SampledOut, counts.sampled_out);
    counters.add_lines(LineOutcome::Malformed, counts.malformed);
    counters.add_lines(LineOutcome::MalformedDropped, counts.malformed_dropped);
    counters.add_lines(LineOutcome::Sent, sent);
    counters.add_lines(LineOutcome::Dropped, lost);
    counters.add_forwarded(forwarded, bytes);
    counters.add_no_member(none);
    counters.add_filtered(empty);
}

/// Counts the lines of a member's queued datagrams (non-empty pieces between `\n`, as the sharder
/// made them) under `outcome`, once its sender sent or lost them.
pub(crate) fn count_member_lines<'e>(
    core: &TargetCore,
    datagrams: impl Iterator<Item = &'e [u8]>,
    outcome: LineOutcome,
) {
    let n: u64 = datagrams.map(|d| u64::from(count_lines(d))).sum();
    // The group's thread counted them offered when it queued them.
    core.counters.sender().add_lines(outcome, n);
}
