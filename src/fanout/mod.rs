//! The forwarder: receive workers, per-target senders, the pool and the queues between them.
//!
//! ```text
//!  SO_REUSEPORT group    no backlog: sendmmsg(MSG_DONTWAIT) inline ──────────┐ connected sockets
//!  rx0 (cpu a) ─┐                                                           ├──> target0
//!  rx1 (cpu b) ─┼─ share ─ backlog or EAGAIN ──> [q target0] ──> tx0 ───────┘
//!  rxN ─────────┘                            ──> [q targetT] ──> txT ──────────> targetT
//!        └──────── BufPool: slots taken by rx, released by the last sender of each copy ─┘
//! ```
//! Start-up does everything that can fail (resolve, bind, connect, allocate) before any thread runs.
//! Shutdown stops the workers first; senders then drain their queues until `drain_timeout`, count what
//! is left as `drain_timeout`, and exit when the queues are empty and closed.

mod ratelimit;
mod sender;
mod worker;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::ratelimit::RateLimit;
use crate::admin::AdminServer;
use crate::config::{Config, ConfigError};
use crate::metrics::counters::{SendErrorKind, Snapshot, TargetCounters, WorkerCounters};
use crate::metrics::histogram::{LatencySummary, TargetHistograms, new_histogram, now_nanos};
use crate::net::uring::{self, UringRecv};
use crate::net::{IoBackend, SocketState, socket, sys};
use crate::pool::{BufId, BufPool};

/// Counts copies one `sendmmsg` accepted, and their latency when recorded. Shared by the workers'
/// inline sends and the senders, so both count the same way.
fn count_sent(counters: &TargetCounters, pool: &BufPool, sent: &[BufId], latency: bool) {
    let bytes: usize = sent.iter().map(|&id| pool.len(id)).sum();
    counters.add_forwarded(sent.len() as u64, bytes as u64);
    if latency {
        counters
            .latency()
            .record_batch(now_nanos(), sent.iter().map(|&id| pool.rx_nanos(id)));
    }
}

/// Counts one copy the kernel refused (the first of a sendmmsg batch), logging at most once per
/// interval per call site.
fn count_send_error(
    counters: &TargetCounters,
    target: &str,
    e: &io::Error,
    errors: &mut RateLimit,
) {
    let kind = SendErrorKind::of(e);
    counters.add_send_error(kind);
    if let Some(count) = errors.hit(1) {
        tracing::warn!(target_addr = %target, error = %e, reason = kind.as_str(), count,
            "send to target failed; copies dropped (send_error)");
    }
}

/// Why the forwarder could not start. Every variant names what it was doing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Listen address.
        addr: SocketAddr,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A target socket could not be created or connected.
    #[error("connecting to target {target} ({addr}): {source}")]
    Connect {
        /// The target as written.
        target: String,
        /// Its address.
        addr: SocketAddr,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A thread could not be started.
    #[error("starting thread {name}: {source}")]
    Spawn {
        /// Thread name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The datagram pool does not fit in the memory this host has available.
    #[error(
        "the datagram pool needs {bytes} bytes but {available}; lower --queue-depth or --max-datagram (docs/tuning.md)"
    )]
    Memory {
        /// Pool bytes asked for.
        bytes: usize,
        /// What the host said.
        available: String,
    },
    /// `--io uring` was asked for and the kernel refuses it.
    #[error("--io uring: {reason}")]
    Backend {
        /// What the probe or set-up said.
        reason: String,
    },
    /// The admin HTTP listener could not be bound.
    #[error("binding admin listener {addr}: {source}")]
    Admin {
        /// The `--admin` address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {source}")]
    Signals {
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The forwarder's shared view for reporting: the stats line, the admin endpoint and SIGUSR1 all read
/// through it. Nothing here is touched by the hot path except the per-thread counters it reads.
#[derive(Debug)]
pub struct Stats {
    target_names: Vec<String>,
    queue_depth: usize,
    backend: &'static str,
    pool: Arc<BufPool>,
    worker_sockets: Vec<UdpSocket>,
    worker_counters: Vec<Arc<WorkerCounters>>,
    target_counters: Vec<Arc<TargetCounters>>,
    backlogs: Vec<Arc<AtomicUsize>>,
    threads_expected: usize,
    threads_running: Arc<AtomicUsize>,
    thread_ids: Arc<Mutex<Vec<i32>>>,
}

impl Stats {
    /// Target names, in `--to` order.
    pub fn target_names(&self) -> &[String] {
        &self.target_names
    }

    /// Capacity of each target queue.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    /// The receive backend in use (`uring` or `mmsg`).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The datagram pool (capacity and occupancy, for gauges).
    pub fn pool(&self) -> &BufPool {
        &self.pool
    }

    /// Copies queued for (or in flight in) target `t`'s sender.
    pub fn queued(&self, t: usize) -> usize {
        self.backlogs[t].load(Ordering::Relaxed)
    }

    /// Every counter now. Kernel drops are refreshed from SO_MEMINFO, which also sees drops after the
    /// last datagram received (SO_RXQ_OVFL only reports them with the next one).
    pub fn snapshot(&self) -> Snapshot {
        for (socket, counters) in self.worker_sockets.iter().zip(&self.worker_counters) {
            if let Ok(drops) = socket::socket_drops(socket) {
                counters.set_rcvbuf_overflow(drops);
            }
        }
        Snapshot::new(
            self.worker_counters.iter().map(|c| c.snapshot()).collect(),
            self.target_counters.iter().map(|c| c.snapshot()).collect(),
            self.target_names.clone(),
        )
    }

    /// Latency of each target since start, merged over every thread that sends to it.
    pub fn latency(&self) -> TargetHistograms {
        self.target_names
            .iter()
            .enumerate()
            .map(|(t, name)| {
                let mut h = new_histogram();
                self.target_counters[t].latency().merge_into(&mut h);
                for w in &self.worker_counters {
                    w.target(t).latency().merge_into(&mut h);
                }
                (name.clone(), h)
            })
            .collect()
    }

    /// Latency percentiles per target (SIGUSR1 and `/latency`).
    pub fn latency_summaries(&self) -> Vec<LatencySummary> {
        self.latency()
            .iter()
            .map(|(name, h)| LatencySummary::of(name, h))
            .collect()
    }

    /// CPU time (user + system) used so far by the forwarder's own threads, from /proc/self/task.
    pub fn cpu_time(&self) -> Duration {
        let tids = self
            .thread_ids
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        tids.iter()
            .filter_map(|tid| crate::metrics::proc::thread_cpu_time(*tid))
            .sum()
    }

    /// Ready when every worker and sender thread is running (sockets are bound before any starts).
    pub fn ready(&self) -> Result<(), String> {
        let running = self.threads_running.load(Ordering::Relaxed);
        if running == self.threads_expected {
            Ok(())
        } else {
            Err(format!(
                "{running} of {} worker and sender threads running",
                self.threads_expected
            ))
        }
    }
}

/// A running forwarder. Dropping it without [`shutdown`](Self::shutdown) stops it the same way.
#[derive(Debug)]
pub struct Forwarder {
    local_addr: SocketAddr,
    socket_state: SocketState,
    drain_timeout: Duration,
    stats: Arc<Stats>,
    running: Arc<AtomicBool>,
    drain_deadline: Arc<OnceLock<Instant>>,
    workers: Vec<JoinHandle<()>>,
    senders: Vec<JoinHandle<()>>,
    admin: Option<AdminServer>,
}

/// Counts a data thread as running for as long as it lives, panics included.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn spawn(
    name: String,
    cpu: Option<usize>,
    stats: &Stats,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, StartError> {
    let tids = Arc::clone(&stats.thread_ids);
    let alive = Arc::clone(&stats.threads_running);
    let thread_name = name.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            alive.fetch_add(1, Ordering::Relaxed);
            let _running = Running(alive);
            if let Some(id) = cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                    tracing::warn!(thread = %thread_name, cpu = id, "could not pin thread to CPU; running unpinned");
                }
            }
            if let Ok(mut t) = tids.lock() {
                t.push(sys::gettid());
            }
            body();
        })
        .map_err(|source| StartError::Spawn { name, source })
}

/// Allocates and pre-faults the pool, after checking it fits: touching more than the host has would
/// get the process OOM-killed instead of refused with a message.
fn allocate_pool(config: &Config) -> Result<BufPool, StartError> {
    let bytes = config.pool_bytes();
    if let Some(available) = <procfs::Meminfo as procfs::Current>::current()
        .ok()
        .and_then(|m| m.mem_available)
    {
        if bytes as u64 > available {
            return Err(StartError::Memory {
                bytes,
                available: format!("MemAvailable is {available} bytes"),
            });
        }
    }
    BufPool::try_new(config.pool_slots(), config.max_datagram)
        .map_err(|available| StartError::Memory { bytes, available })
}

/// Whether `--io auto` uses io_uring when the kernel allows it. Measured side by side on Linux 6.18
/// (docs/performance.md, "Receive backends"): io_uring multishot recvmsg cost 3-5% more CPU per
/// datagram than recvmmsg, so auto prefers recvmmsg. It still probes io_uring, so the log says
/// whether `--io uring` would work here.
const AUTO_PREFERS_URING: bool = false;

/// Decides the receive backend once, at start-up, and sets up one io_uring per worker socket when it
/// is io_uring. Returns no rings for recvmmsg. `auto` logs its choice and why once; `uring` fails
/// with the reason instead.
fn choose_backend(config: &Config, sockets: &[UdpSocket]) -> Result<Vec<UringRecv>, StartError> {
    let required = match config.io_backend {
        IoBackend::Mmsg => return Ok(Vec::new()),
        IoBackend::Auto => false,
        IoBackend::Uring => true,
    };
    let usable = uring::probe();
    if let (Ok(()), false, false) = (&usable, required, AUTO_PREFERS_URING) {
        tracing::info!(
            "io_uring works here, but recvmmsg measured faster (docs/performance.md); receiving with recvmmsg (--io uring to override)"
        );
        return Ok(Vec::new());
    }
    let rings = usable.and_then(|()| {
        sockets
            .iter()
            .map(|s| {
                UringRecv::new(s, uring::ring_entries(config.batch))
                    .map_err(|e| format!("io_uring setup: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()
    });
    match rings {
        Ok(rings) => Ok(rings),
        Err(reason) if required => Err(StartError::Backend { reason }),
        Err(reason) => {
            tracing::info!(%reason, "io_uring unavailable; receiving with recvmmsg");
            Ok(Vec::new())
        }
    }
}

impl Forwarder {
    /// Binds, connects, allocates the pool and starts every thread (and the admin listener, if any).
    pub fn start(config: &Config) -> Result<Self, StartError> {
        config.validate()?;
        let workers = config.worker_cpus.len();
        let (sockets, local_addr, socket_state) = socket::bind_reuseport_group(
            config.listen,
            workers,
            config.rcvbuf_bytes,
            config.latency,
        )
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let target_sockets = config
            .targets
            .iter()
            .map(|t| {
                socket::connect_target(t.addr, config.sndbuf_bytes).map_err(|source| {
                    StartError::Connect {
                        target: t.name.clone(),
                        addr: t.addr,
                        source,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let worker_sockets = sockets
            .iter()
            .map(UdpSocket::try_clone)
            .collect::<io::Result<Vec<_>>>()
            .map_err(|source| StartError::Bind {
                addr: local_addr,
                source,
            })?;

        let mut urings = choose_backend(config, &sockets)?;
        let pool = Arc::new(allocate_pool(config)?);
        let worker_counters: Vec<_> = (0..workers)
            .map(|_| Arc::new(WorkerCounters::new(config.targets.len())))
            .collect();
        let target_counters: Vec<_> = config
            .targets
            .iter()
            .map(|_| Arc::new(TargetCounters::default()))
            .collect();
        let backlogs: Vec<_> = config
            .targets
            .iter()
            .map(|_| Arc::new(AtomicUsize::new(0)))
            .collect();
        let stats = Arc::new(Stats {
            target_names: config.targets.iter().map(|t| t.name.clone()).collect(),
            queue_depth: config.queue_depth,
            backend: if urings.is_empty() { "mmsg" } else { "uring" },
            pool: Arc::clone(&pool),
            worker_sockets,
            worker_counters: worker_counters.clone(),
            target_counters: target_counters.clone(),
            backlogs: backlogs.clone(),
            threads_expected: workers + config.targets.len(),
            threads_running: Arc::new(AtomicUsize::new(0)),
            thread_ids: Arc::new(Mutex::new(Vec::new())),
        });
        let admin = config
            .admin
            .map(|addr| {
                AdminServer::start(addr, Arc::clone(&stats))
                    .map_err(|source| StartError::Admin { addr, source })
            })
            .transpose()?;
        let running = Arc::new(AtomicBool::new(true));
        let drain_deadline = Arc::new(OnceLock::new());
        let mut fwd = Self {
            local_addr,
            socket_state,
            drain_timeout: config.drain_timeout,
            stats: Arc::clone(&stats),
            running: Arc::clone(&running),
            drain_deadline: Arc::clone(&drain_deadline),
            workers: Vec::new(),
            senders: Vec::new(),
            admin,
        };

        // Workers hold the only queue senders (in their links): when the last worker exits, each queue
        // closes and its sender thread finishes after draining it.
        let mut links = Vec::with_capacity(config.targets.len());
        for (t, (target, socket)) in config.targets.iter().zip(target_sockets).enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(config.queue_depth);
            let socket = Arc::new(socket);
            links.push(worker::TargetLink {
                name: target.name.clone(),
                socket: Arc::clone(&socket),
                queue: tx,
                backlog: Arc::clone(&backlogs[t]),
            });
            let sender = sender::TargetSender {
                name: target.name.clone(),
                socket,
                backlog: Arc::clone(&backlogs[t]),
                pool: Arc::clone(&pool),
                queue: rx,
                counters: Arc::clone(&target_counters[t]),
                drain_deadline: Arc::clone(&drain_deadline),
                batch: config.batch,
                latency: config.latency,
            };
            let cpu = (!config.sender_cpus.is_empty())
                .then(|| config.sender_cpus[t % config.sender_cpus.len()]);
            fwd.senders
                .push(spawn(format!("udptee-tx{t}"), cpu, &stats, move || {
                    sender.run()
                })?);
        }
        for (w, (socket, cpu)) in sockets
            .into_iter()
            .zip(config.worker_cpus.iter().copied())
            .enumerate()
        {
            let worker = worker::RecvWorker {
                index: w,
                socket,
                pool: Arc::clone(&pool),
                targets: links.clone(),
                counters: Arc::clone(&worker_counters[w]),
                running: Arc::clone(&running),
                batch: config.batch,
                latency: config.latency,
                uring: (!urings.is_empty()).then(|| urings.remove(0)),
            };
            fwd.workers
                .push(spawn(format!("udptee-rx{w}"), cpu, &stats, move || {
                    worker.run()
                })?);
        }
        Ok(fwd)
    }

    /// The bound listen address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound admin address, if the admin listener runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }

    /// What the kernel granted the receive sockets.
    pub fn socket_state(&self) -> SocketState {
        self.socket_state
    }

    /// The shared reporting view (counters, latency, readiness).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The datagram pool (capacity and occupancy, for gauges).
    pub fn pool(&self) -> &BufPool {
        self.stats.pool()
    }

    /// Every counter now; see [`Stats::snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// CPU time used so far by the forwarder's threads; see [`Stats::cpu_time`].
    pub fn cpu_time(&self) -> Duration {
        self.stats.cpu_time()
    }

    /// Stops receiving, lets the senders drain for at most the drain timeout, joins every thread and
    /// returns the final accounting (in which every received datagram is forwarded or dropped).
    pub fn shutdown(mut self) -> Snapshot {
        self.stop();
        self.snapshot()
    }

    fn stop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        for handle in self.workers.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a receive worker panicked");
            }
        }
        let _ = self.drain_deadline.set(Instant::now() + self.drain_timeout);
        for handle in self.senders.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a target sender panicked");
            }
        }
        if let Some(mut admin) = self.admin.take() {
            admin.stop();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}
