//! The target sender: one thread per target incarnation, sharing the target's connected socket, fed
//! by its backlog ring with whatever the workers could not send inline.
//!
//! It parks until a worker pushes, reads up to a batch of entries in place and sends them with a
//! blocking `sendmmsg` straight from the ring; only then does it consume them, so workers keep
//! queueing behind it until everything older is out (each flow keeps its order). Errors follow
//! quinn-udp: an error means the first message failed, so that copy is counted as a `send_error` by
//! errno class and skipped, and the rest retried; a short count resumes where the kernel stopped. A
//! send that times out (`EAGAIN` after the socket's send timeout) keeps the batch and retries, so a
//! slow target backs up its own ring only. Once the target is removed or the forwarder stops, what
//! is left after the drain deadline is counted `drain_timeout`. Hot path: no allocation, no lock,
//! one syscall per batch.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use super::account::count_send_error;
use super::change::{ChangeError, SenderSettings};
use super::group::{self, ShardState};
use super::ratelimit::SharedRateLimit;
use super::target::{Group, TargetCore};
use super::threads::Threads;
use crate::config::TargetSpec;
use crate::metrics::counters::TargetCounterSet;
use crate::metrics::counters::{LineOutcome, TargetCounters};
use crate::metrics::histogram::now_nanos;
use crate::net::mmsg::MmsgSend;
use crate::net::origin::{Origin, OriginSend};
use crate::net::socket::{self, WAKE_INTERVAL};
use crate::pool::ring::ByteRing;
use crate::pool::ring::Entry;
use crate::statsd::filter::{LineCounts, LineFilter, Part};

/// The origin of an entry of a target that keeps it.
fn origin_of(core: &TargetCore, e: &Entry) -> Origin {
    Origin::decode(core.entry(e))
}

/// What became of the items a `send_loop` call sent.
enum Outcome<'e> {
    /// Items `start..start + n` went out.
    Sent(usize, usize),
    /// The kernel refused item `i`.
    Refused(usize, &'e io::Error),
    /// The drain deadline passed: items from `start` on are abandoned.
    Abandoned(usize),
}
use Outcome::{Abandoned, Refused, Sent};

/// What the filtered path reuses from batch to batch: no allocation once warm.
#[derive(Debug, Default)]
struct Scratch {
    out: Vec<u8>,
    parts: Vec<Part>,
    /// For each part, the entry it came from.
    owner: Vec<usize>,
    /// For each part: 0 pending, 1 sent, else the errno that refused it, or -1 for drain_timeout.
    state: Vec<i32>,
}

/// One target incarnation's sender.
pub(crate) struct TargetSender {
    pub(crate) core: Arc<TargetCore>,
    pub(crate) batch: usize,
    /// Record per-copy latency (`--latency`).
    pub(crate) latency: bool,
}

impl TargetSender {
    fn past_deadline(&self) -> bool {
        self.core
            .drain_deadline
            .get()
            .is_some_and(|d| Instant::now() >= *d)
    }

    /// Sends until the backlog is closed and empty (or its drain deadline has passed).
    pub(crate) fn run(self) {
        let mut send = MmsgSend::new(self.batch);
        let mut kept = OriginSend::new(if self.core.origin.way.is_some() {
            self.batch
        } else {
            0
        });
        let mut entries = vec![Entry::default(); self.batch];
        let mut scratch = Scratch::default();
        let mut rng = fastrand::Rng::new();
        let mut shard = self.core.group.as_deref().map(ShardState::new);
        let mut pos = 0u64;
        let ring = &self.core.ring;
        loop {
            let n = ring.peek(pos, &mut entries);
            if n == 0 {
                // Acquire: pairs with the close after the last producer is gone; the ring is then final.
                if self.core.closed.load(Ordering::Acquire) && ring.peek(pos, &mut entries) == 0 {
                    break;
                }
                std::thread::park_timeout(WAKE_INTERVAL);
                continue;
            }
            let filter = self.core.lines.load_full();
            if self.past_deadline() {
                self.core.counters.sender().add_drain_timeout(n as u64);
            } else if let (Some(group), Some(st)) = (self.core.group.as_deref(), shard.as_mut()) {
                let core = &*self.core;
                let f = filter.as_deref();
                group::shard_batch(
                    core,
                    group,
                    &entries[..n],
                    |e| core.payload(e),
                    f,
                    st,
                    &mut rng,
                );
            } else if let Some(filter) = filter {
                let sends = (&mut send, &mut kept);
                self.send_filtered(sends, &entries[..n], &filter, &mut scratch, &mut rng);
            } else {
                self.send_all((&mut send, &mut kept), &entries[..n]);
            }
            pos = entries[n - 1].next;
            ring.consume(pos, n);
        }
        if let Some(group) = &self.core.group {
            group.finish(&self.core);
        }
        self.core.sender_alive.store(false, Ordering::Relaxed);
        self.log_retired();
    }

    /// A removed target's final accounting, once its sender has finished.
    fn log_retired(&self) {
        if self.core.retired.load(Ordering::Relaxed) {
            let s = self.core.counters.snapshot();
            tracing::info!(
                target_name = %self.core.name, addr = %self.core.addr, offered = s.offered,
                forwarded = s.forwarded, dropped = s.dropped_total(), drain_timeout = s.drain_timeout,
                "target removed: its queue is drained; totals under this name so far"
            );
        }
    }

    /// Counts the lines of entries sent as they are (`parity` without line settings).
    fn digest_sent(&self, counters: &TargetCounters, entries: &[Entry], sent: bool) {
        if self.core.count_lines {
            let outcome = if sent {
                LineOutcome::Sent
            } else {
                LineOutcome::Dropped
            };
            let datagrams = entries.iter().map(|e| self.core.payload(e));
            group::count_member_lines(&self.core, datagrams, outcome);
            return;
        }
        if !self.core.parity.load(Ordering::Relaxed) {
            return;
        }
        let (mut lines, mut malformed, mut digest) = (0, 0, 0u64);
        for e in entries {
            for line in crate::statsd::lines(self.core.payload(e)) {
                lines += 1;
                // Counted as a target with line settings counts them (sent as they are here).
                if crate::statsd::parse(crate::statsd::ending(line).0).is_err() {
                    malformed += 1;
                }
                digest = digest.wrapping_add(xxhash_rust::xxh3::xxh3_64(line));
            }
        }
        counters.add_lines(LineOutcome::Offered, lines);
        counters.add_lines(LineOutcome::Malformed, malformed);
        if sent {
            counters.add_lines(LineOutcome::Sent, lines);
            counters.add_digest(digest);
        } else {
            counters.add_lines(LineOutcome::Dropped, lines);
        }
    }

    /// A filtered target's batch: each entry through the line filter into `scratch`, the parts sent
    /// in order, then each entry counted once: forwarded when all its parts went out, else by the
    /// first failure; every line under one outcome.
    fn send_filtered(
        &self,
        (send, kept): (&mut MmsgSend, &mut OriginSend),
        entries: &[Entry],
        filter: &LineFilter,
        s: &mut Scratch,
        rng: &mut fastrand::Rng,
    ) {
        let counters = self.core.counters.sender();
        s.out.clear();
        s.parts.clear();
        s.owner.clear();
        let mut counts = LineCounts::default();
        let (mut empty, mut capped, mut over_budget) = (0, 0, 0);
        for (i, e) in entries.iter().enumerate() {
            let before = s.parts.len();
            let limited_before = counts.rate_limited;
            let series_before = counts.series_limited;
            filter.apply(
                self.core.payload(e),
                &mut s.out,
                &mut s.parts,
                &mut counts,
                rng,
            );
            s.owner.resize(s.parts.len(), i);
            if s.parts.len() == before {
                // Every line removed: by the rate cap if it took any, else by the settings.
                if counts.rate_limited > limited_before {
                    capped += 1;
                } else if counts.series_limited > series_before {
                    over_budget += 1;
                } else {
                    empty += 1;
                }
            }
        }
        counters.add_lines(LineOutcome::Offered, counts.offered);
        counters.add_lines(LineOutcome::Filtered, counts.filtered);
        counters.add_lines(LineOutcome::SampledOut, counts.sampled_out);
        counters.add_lines(LineOutcome::Malformed, counts.malformed);
        counters.add_lines(LineOutcome::MalformedDropped, counts.malformed_dropped);
        counters.add_lines(LineOutcome::RateLimited, counts.rate_limited);
        counters.add_lines(LineOutcome::SeriesLimited, counts.series_limited);
        counters.add_lines(LineOutcome::TagsStripped, counts.tags_stripped);
        counters.add_filtered(empty);
        counters.add_rate_limited(capped);
        counters.add_series_limited(over_budget);
        s.state.clear();
        s.state.resize(s.parts.len(), 0);
        let state = &mut s.state;
        let (parts, out) = (&s.parts, &s.out);
        self.send_loop(
            parts.len(),
            |start| match &self.core.origin.way {
                Some(way) => {
                    let copies = parts[start..]
                        .iter()
                        .zip(&s.owner[start..])
                        .map(|(p, &i)| (&out[p.start..p.end], origin_of(&self.core, &entries[i])));
                    kept.send(self.core.origin_fd(), way, copies)
                }
                None => {
                    let ranges = parts[start..].iter().map(|p| (p.start, p.end));
                    send.send_ranges(self.core.socket.as_fd(), out, ranges)
                }
            },
            |outcome| match outcome {
                Sent(start, n) => state[start..start + n].fill(1),
                Refused(i, e) => state[i] = e.raw_os_error().unwrap_or(libc::EIO),
                Abandoned(start) => state[start..].fill(-1),
            },
        );
        // Per entry: its parts are consecutive.
        let now = now_nanos();
        let (mut sent_lines, mut lost_lines, mut digest) = (0u64, 0u64, 0u64);
        let mut p = 0;
        while p < s.parts.len() {
            let owner = s.owner[p];
            let mut q = p;
            let (mut bytes, mut failure) = (0usize, 0i32);
            while q < s.parts.len() && s.owner[q] == owner {
                let part = &s.parts[q];
                if s.state[q] == 1 {
                    bytes += part.end - part.start;
                    sent_lines += u64::from(part.lines);
                    digest = digest.wrapping_add(part.digest);
                } else {
                    lost_lines += u64::from(part.lines);
                    if failure == 0 {
                        failure = s.state[q];
                    }
                }
                q += 1;
            }
            match failure {
                0 => {
                    counters.add_forwarded(1, bytes as u64);
                    if self.latency {
                        counters
                            .latency()
                            .record_batch(now, std::iter::once(entries[owner].rx_nanos));
                    }
                }
                -1 => counters.add_drain_timeout(1),
                errno => {
                    count_send_error(&self.core, counters, &io::Error::from_raw_os_error(errno))
                }
            }
            p = q;
        }
        counters.add_lines(LineOutcome::Sent, sent_lines);
        counters.add_lines(LineOutcome::Dropped, lost_lines);
        counters.add_digest(digest);
    }

    /// Sends `entries` in order, resuming after short counts and skipping copies the kernel refused.
    fn send_all(&self, (send, kept): (&mut MmsgSend, &mut OriginSend), entries: &[Entry]) {
        let counters = self.core.counters.sender();
        let core = &*self.core;
        self.send_loop(
            entries.len(),
            |start| match &core.origin.way {
                Some(way) => {
                    let copies = entries[start..]
                        .iter()
                        .map(|e| (core.payload(e), origin_of(core, e)));
                    kept.send(core.origin_fd(), way, copies)
                }
                None => send.send_entries(core.socket.as_fd(), &entries[start..]),
            },
            |outcome| match outcome {
                Sent(start, n) => {
                    let sent = &entries[start..start + n];
                    self.digest_sent(counters, sent, true);
                    let bytes: usize = sent.iter().map(|e| e.len - core.origin_bytes()).sum();
                    counters.add_forwarded(n as u64, bytes as u64);
                    if self.latency {
                        counters
                            .latency()
                            .record_batch(now_nanos(), sent.iter().map(|e| e.rx_nanos));
                    }
                }
                Refused(i, e) => {
                    self.digest_sent(counters, &entries[i..=i], false);
                    count_send_error(&self.core, counters, e);
                }
                Abandoned(start) => {
                    self.digest_sent(counters, &entries[start..], false);
                    counters.add_drain_timeout((entries.len() - start) as u64);
                }
            },
        );
    }

    /// The send loop both paths share: `send_from(i)` sends from item `i` on (one `sendmmsg`). A short
    /// count resumes where the kernel stopped; an error means the first item failed (sendmmsg(2)),
    /// so it is reported and skipped; a send that times out (the send buffer stayed full for
    /// WAKE_INTERVAL: the target path is slow) is retried, keeping the batch while the ring behind
    /// it fills and drops, until the drain deadline abandons the rest.
    fn send_loop(
        &self,
        len: usize,
        mut send_from: impl FnMut(usize) -> io::Result<usize>,
        mut on: impl FnMut(Outcome<'_>),
    ) {
        let mut start = 0;
        while start < len {
            match send_from(start) {
                Ok(0) => break,
                Ok(n) => {
                    on(Sent(start, n));
                    start += n;
                }
                Err(e) if socket::timed_out(&e) => {
                    if self.past_deadline() {
                        on(Abandoned(start));
                        return;
                    }
                }
                Err(e) => {
                    on(Refused(start, &e));
                    start += 1;
                }
            }
        }
    }
}

impl TargetSender {
    /// Starts one incarnation of the target `spec`: connects its socket, allocates its backlog
    /// ring and spawns its sender thread (on `cpu`, if given). A failure leaves nothing running.
    pub(crate) fn start(
        spec: &TargetSpec,
        counters: Arc<TargetCounterSet>,
        settings: &SenderSettings,
        threads: &Arc<Threads>,
        cpu: Option<usize>,
        role: Role,
    ) -> Result<(Arc<TargetCore>, JoinHandle<()>), ChangeError> {
        let origin = match role {
            Role::Plain => super::origin::resolve(spec, settings)?,
            Role::Member | Role::Group(_) => super::origin::Keeping::default(),
        };
        let socket = match (&spec.unix, &role) {
            // A group sends through its members' sockets; its own is an unbound placeholder. So
            // does a TCP target: its sender connects (and reconnects) on its own.
            (_, Role::Group(_)) => socket::placeholder(),
            _ if spec.is_stream() => socket::placeholder(),
            (Some(path), _) => socket::unix_target(path, spec.sndbuf_bytes),
            (None, _) => socket::connect_target(spec.resolved, spec.sndbuf_bytes),
        }
        .map_err(|source| ChangeError::Connect {
            name: spec.name.clone(),
            addr: spec.resolved,
            source,
        })?;
        let ring = ByteRing::try_new(spec.queue_bytes, spec.queue_depth).map_err(|reason| {
            ChangeError::Memory {
                name: spec.name.clone(),
                reason,
            }
        })?;
        let core = Arc::new(TargetCore {
            name: spec.name.as_str().into(),
            addr: spec.resolved,
            socket,
            ring,
            counters,
            errors: SharedRateLimit::new(),
            closed: AtomicBool::new(false),
            drain_deadline: OnceLock::new(),
            retired: AtomicBool::new(false),
            sender: OnceLock::new(),
            sender_alive: AtomicBool::new(true),
            lines: arc_swap::ArcSwapOption::empty(),
            parity: AtomicBool::new(false),
            unix: spec.unix.clone(),
            count_lines: matches!(role, Role::Member),
            origin,
            since: std::time::SystemTime::now(),
            link: spec.is_stream().then(|| super::target::StreamLink {
                sndbuf_bytes: spec.sndbuf_bytes,
                path: spec.stream_path.clone(),
                ..Default::default()
            }),
            group: match role {
                Role::Group(g) => Some(g),
                _ => None,
            },
        });
        let sender = Self {
            core: Arc::clone(&core),
            batch: settings.batch,
            latency: settings.latency,
        };
        let handle = threads
            .spawn(sender_thread_name(&spec.name), cpu, move || {
                if sender.core.link.is_some() {
                    super::link::run(&sender.core, sender.batch, sender.latency);
                    sender.core.sender_alive.store(false, Ordering::Relaxed);
                    sender.log_retired();
                } else {
                    sender.run();
                }
            })
            .map_err(|source| ChangeError::Spawn {
                name: spec.name.clone(),
                source,
            })?;
        let _ = core.sender.set(handle.thread().clone());
        Ok((core, handle))
    }
}

/// What an incarnation is.
#[derive(Debug)]
pub(crate) enum Role {
    /// A target: sends what it is given.
    Plain,
    /// A group's member: sends what the group hands it, counting its lines.
    Member,
    /// A group: shards what it is given over its members.
    Group(Arc<Group>),
}

/// `udptee-tx:NAME`, cut to the kernel's 15 bytes.
fn sender_thread_name(name: &str) -> String {
    let mut n = format!("udptee-tx:{name}");
    while n.len() > 15 {
        n.pop();
    }
    n
}
