//! The forwarder: receive workers, per-target senders, the pool and the queues between them.
//!
//! ```text
//!  SO_REUSEPORT group   table (arc-swap, loaded once per batch)   connected sockets
//!  rx0 (cpu a) ─┐  empty backlog: sendmmsg(MSG_DONTWAIT) inline ─────────┬──> target0
//!  rx1 (cpu b) ─┼─ EAGAIN, short count, or a backlog: copy ─> [ring 0] ─ tx0 ┘
//!  rxN ─────────┘                                         ─> [ring T] ─ txT ──> targetT
//!        └─ BufPool: each worker's receive staging, free again once the batch is dispatched ─┘
//! ```
//! The [`targets::TargetRegistry`] owns the target set and publishes it; see its docs for how a
//! change is applied without touching unchanged targets. Start-up does everything that can fail
//! (resolve, bind, connect, allocate) before any thread runs. Shutdown stops the workers first;
//! senders then drain their rings until `drain_timeout`, count what is left as `drain_timeout`, and
//! exit.

mod account;
mod books;
mod change;
mod kernel;
pub(crate) mod observe;
mod parity;
pub(crate) mod ratelimit;
mod sender;
mod target;
pub mod targets;
mod threads;
mod watch;
mod worker;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::targets::{ChangeError, SenderSettings, TargetRegistry};
pub use self::threads::Threads;
use crate::config::{Config, ConfigError};
use crate::metrics::counters::{Snapshot, WorkerCounters};
use crate::metrics::histogram::{LatencySummary, TargetHistograms, new_histogram};
use crate::net::uring::{self, UringRecv};
use crate::net::{IoBackend, SocketState, socket};
use crate::pool::BufPool;

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
    /// The initial target set could not be started.
    #[error(transparent)]
    Targets(#[from] ChangeError),
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
        "udptee needs {bytes} bytes (receive staging and target backlogs) but {available}; lower --queue-bytes, --workers or --max-datagram (docs/tuning.md)"
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
    /// A data thread died; the process must exit so its supervisor restarts it.
    #[error("data thread(s) died: {}; exiting so the supervisor restarts udptee", .0.join(", "))]
    Died(Vec<String>),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {source}")]
    Signals {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `--user` could not be applied.
    #[error("{0}")]
    Privileges(String),
    /// A unixgram listen socket could not be created.
    #[error("binding unixgram://{}: {source}", path.display())]
    BindUnix {
        /// The socket path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `--takeover` failed or was refused.
    #[error("{0}")]
    Takeover(String),
    /// `--record` could not start.
    #[error("--record: {0}")]
    Record(String),
    /// `--fast-path on` could not load the kernel path.
    #[error("{0}")]
    FastPath(String),
}

/// The forwarder's shared view for reporting: the stats line, the admin endpoint and SIGUSR1 all read
/// through it. Nothing here is touched by the hot path except the counters it reads.
#[derive(Debug)]
pub struct Stats {
    backend: &'static str,
    pool: Arc<BufPool>,
    /// A second descriptor of each listen socket (the workers own the first): for the kernel drop
    /// counts, turning timestamps on, the fd store and a hand-over.
    worker_sockets: Arc<[UdpSocket]>,
    worker_counters: Vec<Arc<WorkerCounters>>,
    registry: Arc<TargetRegistry>,
    workers_expected: usize,
    workers_running: Arc<std::sync::atomic::AtomicUsize>,
    threads: Arc<Threads>,
    recorder: Arc<crate::record::Recorder>,
    taps: Arc<crate::tap::Taps>,
}

impl Stats {
    /// Names of the current targets, in table order.
    pub fn target_names(&self) -> Vec<String> {
        self.registry.current().names()
    }

    /// The target registry (current set, counters by name, changes).
    pub fn registry(&self) -> &Arc<TargetRegistry> {
        &self.registry
    }

    /// The recorder (`--record`, `POST /record/start`).
    pub fn recorder(&self) -> &Arc<crate::record::Recorder> {
        &self.recorder
    }

    /// The live taps (`GET /tap`).
    pub fn taps(&self) -> &Arc<crate::tap::Taps> {
        &self.taps
    }

    /// The receive backend in use (`uring` or `mmsg`).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The datagram pool (capacity and occupancy, for gauges).
    pub fn pool(&self) -> &BufPool {
        &self.pool
    }

    /// Every counter now: current targets in table order, then removed ones. Kernel drops are
    /// refreshed from SO_MEMINFO, which also sees drops after the last datagram received (SO_RXQ_OVFL
    /// only reports them with the next one).
    pub fn snapshot(&self) -> Snapshot {
        for (socket, counters) in self.worker_sockets.iter().zip(&self.worker_counters) {
            if let Ok(drops) = socket::socket_drops(socket) {
                counters.set_rcvbuf_overflow(drops);
            }
        }
        let kernel = self.registry.kernel_snapshot();
        let (target_names, targets) = self.registry.snapshots().into_iter().unzip();
        Snapshot {
            workers: self.worker_counters.iter().map(|c| c.snapshot()).collect(),
            targets,
            target_names,
            kernel,
        }
    }

    /// Latency of each target since start (current, then removed), merged over every thread that
    /// sends to it.
    pub fn latency(&self) -> TargetHistograms {
        let current = self.target_names();
        let mut all = self.registry.all_counters();
        all.sort_by_key(|(n, _)| current.iter().position(|c| c == n).unwrap_or(usize::MAX));
        all.into_iter()
            .map(|(name, set)| {
                let mut h = new_histogram();
                for part in set.parts() {
                    part.latency().merge_into(&mut h);
                }
                (name, h)
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

    /// CPU time used so far by the forwarder's data threads (the kernel's nanosecond clocks).
    pub fn cpu_time(&self) -> Duration {
        self.threads.cpu_time()
    }

    /// Ready when every worker and every current target's sender runs, and no data thread died.
    pub fn ready(&self) -> Result<(), String> {
        let died = self.threads.died();
        if !died.is_empty() {
            return Err(format!("data thread(s) died: {}", died.join(", ")));
        }
        let running = self.workers_running.load(Ordering::Relaxed);
        if running != self.workers_expected {
            return Err(format!(
                "{running} of {} receive workers running",
                self.workers_expected
            ));
        }
        let stopped = self.registry.not_running();
        if !stopped.is_empty() {
            return Err(format!("senders not running: {}", stopped.join(", ")));
        }
        Ok(())
    }

    /// Each receive worker's loop turns so far (they move at least every read timeout while the
    /// worker lives).
    pub fn worker_beats(&self) -> Vec<u64> {
        self.worker_counters.iter().map(|c| c.beats()).collect()
    }

    /// Names of data threads that died (a panic): the process must exit so a supervisor restarts it.
    pub fn died(&self) -> Vec<String> {
        self.threads.died()
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
    workers: Vec<JoinHandle<()>>,
    control: Arc<crate::control::Control>,
    admin: Option<crate::admin::AdminServer>,
    watch: Option<(Arc<AtomicBool>, JoinHandle<watch::Watch>)>,
    /// Held for the forwarder's life: no second udptee can join the listen port.
    _listen_lock: crate::net::lock::ListenLock,
    /// Answers `--takeover` on `--control-socket`.
    control_server: Option<crate::handover::ControlServer>,
    handovers: crossbeam_channel::Receiver<crate::handover::Handover>,
    /// Keeps `handovers` connected whether or not a control server runs (or has finished): a
    /// disconnected channel would be always ready in the main loop's select and spin it.
    _handover_tx: crossbeam_channel::Sender<crate::handover::Handover>,
    /// Workers read their socket dry at stop, unless it was handed over (the new udptee reads it).
    drain_socket: Arc<AtomicBool>,
    /// A unixgram listener's socket file and its inode, removed at stop if it is still ours.
    unix_file: Option<(std::path::PathBuf, u64)>,
    stopped: bool,
}

/// Counts a worker as running for as long as it lives, panics included.
struct Running(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Allocates and pre-faults the pool, after checking it fits: touching more than the host has would
/// get the process OOM-killed instead of refused with a message.
fn allocate_pool(config: &Config, uring: bool) -> Result<BufPool, StartError> {
    let bytes = config.pool_bytes(uring) + config.backlog_bytes();
    crate::pool::check_available(bytes)
        .map_err(|available| StartError::Memory { bytes, available })?;
    BufPool::try_new(config.pool_slots(uring), config.max_datagram)
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
    if config.listen_unix.is_some() {
        if config.io_backend == IoBackend::Uring {
            return Err(StartError::Backend {
                reason: "a unixgram listener receives with recvmmsg only".into(),
            });
        }
        return Ok(Vec::new());
    }
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
    /// Binds, allocates the pool, starts every target (socket, backlog, sender), every worker and
    /// the admin listener (if configured). Reload is refused: see [`start_with`](Self::start_with).
    pub fn start(config: &Config) -> Result<Self, StartError> {
        Self::start_with(config, None)
    }

    /// Like [`start`](Self::start), with `loader` to re-read the configuration on reload.
    pub fn start_with(
        config: &Config,
        loader: Option<crate::control::Loader>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let bind_error = |source| StartError::Bind {
            addr: config.listen,
            source,
        };
        // The listen sockets: from the udptee we take over, from systemd, or bound now.
        let taken = match (&config.control_socket, config.takeover) {
            (Some(path), true) => {
                crate::handover::take_over(path, config.listen).map_err(StartError::Takeover)?
            }
            (None, true) => {
                return Err(StartError::Takeover(
                    "--takeover needs --control-socket (or $RUNTIME_DIRECTORY)".into(),
                ));
            }
            _ => None,
        };
        let inherited = if taken.is_none() {
            crate::handover::from_systemd(config.listen)
        } else {
            Vec::new()
        };
        if config.listen_unix.is_some() && (taken.is_some() || config.takeover) {
            return Err(StartError::Takeover(
                "--takeover hands over UDP listen sockets; a unixgram listener is not supported yet"
                    .into(),
            ));
        }
        let (listen_lock, (sockets, local_addr, socket_state), taken) =
            match (taken, &config.listen_unix) {
                (None, Some(u)) => {
                    let group = socket::bind_unix_group(
                        u,
                        config.worker_cpus.len(),
                        config.rcvbuf_bytes,
                        config.latency,
                    )
                    .map_err(|source| StartError::BindUnix {
                        path: u.path.clone(),
                        source,
                    })?;
                    // The live-socket check at bind is this listener's one-instance rule.
                    (
                        crate::net::lock::ListenLock::from_sockets(Vec::new()),
                        group,
                        None,
                    )
                }
                (Some(mut t), _) => {
                    let group = socket::adopt_group(
                        std::mem::take(&mut t.sockets),
                        config.listen,
                        config.rcvbuf_bytes,
                        config.latency,
                    )
                    .map_err(bind_error)?;
                    let lock =
                        crate::net::lock::ListenLock::from_sockets(std::mem::take(&mut t.locks));
                    tracing::info!(
                        pid = t.pid,
                        sockets = group.0.len(),
                        "took the listen sockets over from the running udptee"
                    );
                    (lock, group, Some(t))
                }
                (None, None) if !inherited.is_empty() => {
                    let n = inherited.len();
                    let (lock, group) = crate::net::lock::bind_locked(config.listen, || {
                        socket::adopt_group(
                            inherited,
                            config.listen,
                            config.rcvbuf_bytes,
                            config.latency,
                        )
                    })
                    .map_err(bind_error)?;
                    tracing::info!(
                        sockets = n,
                        "listening on the sockets systemd passed (LISTEN_FDS)"
                    );
                    (lock, group, None)
                }
                (None, None) => {
                    let (lock, group) = crate::net::lock::bind_locked(config.listen, || {
                        socket::bind_reuseport_group(
                            config.listen,
                            config.worker_cpus.len(),
                            config.rcvbuf_bytes,
                            config.latency,
                        )
                    })
                    .map_err(bind_error)?;
                    (lock, group, None)
                }
            };
        // One worker per socket: a handed-over group may differ from --workers.
        let mut config = config.clone();
        if sockets.len() != config.worker_cpus.len() {
            tracing::warn!(
                sockets = sockets.len(),
                workers = config.worker_cpus.len(),
                "the handed-over group has another number of sockets than --workers; one worker per socket"
            );
            config.worker_cpus.resize(sockets.len(), None);
        }
        let config = &config;
        let workers = config.worker_cpus.len();
        let worker_sockets: Arc<[UdpSocket]> = sockets
            .iter()
            .map(UdpSocket::try_clone)
            .collect::<io::Result<Vec<_>>>()
            .map_err(|source| StartError::Bind {
                addr: local_addr,
                source,
            })?
            .into();

        let mut urings = choose_backend(config, &sockets)?;
        let pool = Arc::new(allocate_pool(config, !urings.is_empty())?);
        let worker_counters: Vec<_> = (0..workers)
            .map(|_| Arc::new(WorkerCounters::new()))
            .collect();
        let threads = Arc::new(Threads::default());
        let registry = Arc::new(TargetRegistry::new(
            SenderSettings {
                listen: local_addr,
                listen_unix: config.listen_unix.as_ref().map(|u| u.path.clone()),
                workers,
                batch: config.batch,
                latency: config.latency,
                drain_timeout: config.drain_timeout,
                sender_cpus: config.sender_cpus.clone(),
                max_targets: config.max_targets,
                max_datagram: config.max_datagram,
            },
            Arc::clone(&threads),
        ));
        registry.apply(config.targets.clone())?;
        registry.set_allow(crate::net::allow::AllowList::new(&config.allow));
        let seed = taken.as_ref().map(|t| t.kernel.clone()).unwrap_or_default();
        registry.watch_marks(worker_counters.clone());
        start_fastpath(
            config,
            local_addr,
            &worker_sockets,
            &registry,
            &seed,
            taken.is_some(),
        )?;
        // Kernel receive times are read only when something needs them: latency, or a recording
        // (turned on for good at its first start; the cost is one control message per datagram).
        let stamps = || -> Box<dyn Fn() + Send + Sync> {
            let sockets = Arc::clone(&worker_sockets);
            Box::new(move || {
                for s in sockets.iter() {
                    let _ = socket::enable_timestamps(s);
                }
            })
        };
        let recorder = Arc::new(crate::record::Recorder::new(
            Arc::clone(&registry),
            config.max_datagram,
            stamps(),
        ));
        let taps = Arc::new(crate::tap::Taps::new(
            Arc::clone(&registry),
            config.max_datagram,
            stamps(),
        ));
        let workers_running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stats = Arc::new(Stats {
            backend: if urings.is_empty() { "mmsg" } else { "uring" },
            pool: Arc::clone(&pool),
            worker_sockets: Arc::clone(&worker_sockets),
            worker_counters: worker_counters.clone(),
            registry: Arc::clone(&registry),
            workers_expected: workers,
            workers_running: Arc::clone(&workers_running),
            threads: Arc::clone(&threads),
            recorder: Arc::clone(&recorder),
            taps,
        });
        let control = Arc::new(crate::control::Control::new(
            Arc::clone(&registry),
            Arc::clone(&recorder),
            config.clone(),
            loader,
        ));
        if let (Some(settings), true) = (&config.record, config.record_start) {
            recorder
                .start(settings.clone())
                .map_err(|e| StartError::Record(e.to_string()))?;
        }
        let admin = config
            .admin
            .map(|addr| {
                crate::admin::AdminServer::start(addr, Arc::clone(&stats), Arc::clone(&control))
                    .map_err(|source| StartError::Admin { addr, source })
            })
            .transpose()?;
        let watch_stop = Arc::new(AtomicBool::new(false));
        let watch = watch::Watch::new(Arc::clone(&registry))
            .spawn(Arc::clone(&watch_stop))
            .map_err(|source| StartError::Spawn {
                name: "udptee-watch".into(),
                source,
            })?;
        let running = Arc::new(AtomicBool::new(true));
        let drain_socket = Arc::new(AtomicBool::new(true));
        let (handover_tx, handovers) = crossbeam_channel::bounded(1);
        let handover_locks = listen_lock
            .sockets()
            .iter()
            .map(|s| s.try_clone().map(std::os::fd::OwnedFd::from))
            .collect::<io::Result<Vec<_>>>()
            .map_err(bind_error)?;
        let mut fwd = Self {
            local_addr,
            socket_state,
            drain_timeout: config.drain_timeout,
            stats: Arc::clone(&stats),
            running: Arc::clone(&running),
            workers: Vec::new(),
            control,
            admin,
            watch: Some((watch_stop, watch)),
            _listen_lock: listen_lock,
            control_server: None,
            handovers,
            _handover_tx: handover_tx.clone(),
            drain_socket: Arc::clone(&drain_socket),
            unix_file: config.listen_unix.as_ref().and_then(|u| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(&u.path)
                    .ok()
                    .map(|m| (u.path.clone(), m.ino()))
            }),
            stopped: false,
        };
        for (w, (socket, cpu)) in sockets
            .into_iter()
            .zip(config.worker_cpus.iter().copied())
            .enumerate()
        {
            let worker = worker::RecvWorker {
                index: w,
                socket,
                pool: Arc::clone(&pool),
                table: registry.swap(),
                counters: Arc::clone(&worker_counters[w]),
                running: Arc::clone(&running),
                batch: config.batch,
                latency: config.latency,
                uring: (!urings.is_empty()).then(|| urings.remove(0)),
                drain_socket: Arc::clone(&drain_socket),
            };
            let alive = Arc::clone(&workers_running);
            alive.fetch_add(1, Ordering::Relaxed);
            let name = format!("udptee-rx{w}");
            let handle = threads
                .spawn(name.clone(), cpu, move || {
                    let _running = Running(alive);
                    worker.run();
                })
                .map_err(|source| {
                    workers_running.fetch_sub(1, Ordering::Relaxed);
                    StartError::Spawn { name, source }
                })?;
            fwd.workers.push(handle);
        }
        // This instance answers the next takeover; in a takeover, the path is ours from now on.
        if let Some(path) = &config.control_socket {
            if taken.is_some() {
                let _ = std::fs::remove_file(path);
            }
            match crate::handover::ControlServer::start(
                path,
                local_addr,
                Arc::clone(&worker_sockets),
                handover_locks,
                handover_tx,
                {
                    let registry = Arc::clone(&registry);
                    Arc::new(move |handing| registry.kernel_handover(handing))
                },
            ) {
                Ok(server) => fwd.control_server = Some(server),
                Err(e) if config.takeover => return Err(StartError::Takeover(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "no control socket: this udptee cannot be taken over")
                }
            }
        }
        if let Some(t) = taken {
            let registry = Arc::clone(&registry);
            let workers = worker_counters.clone();
            t.ready(move |last| {
                if let Some(last) = last {
                    registry.carry(&last.targets);
                    for (w, s) in workers.iter().zip(&last.workers) {
                        w.add_snapshot(s);
                    }
                    tracing::info!("takeover: the previous udptee drained and exited; its counters are carried over");
                } else {
                    tracing::warn!("takeover: the previous udptee exited without sending its final counters");
                }
                // Nobody else reads the sockets now: the kernel path may mark datagrams again.
                registry.kernel_handover(false);
            })
            .map_err(|e| StartError::Takeover(format!("--takeover: telling the old udptee to stop: {e}")))?;
        }
        Ok(fwd)
    }

    /// Takeovers the control socket accepted (at most one): the caller stops with
    /// [`hand_over`](Self::hand_over) and sends the final counters.
    pub fn handovers(&self) -> &crossbeam_channel::Receiver<crate::handover::Handover> {
        &self.handovers
    }

    /// Marks the listen sockets as handed over: at stop, workers leave what is queued in them to the
    /// new udptee instead of reading them dry.
    pub fn hand_over(&self) {
        self.drain_socket.store(false, Ordering::Relaxed);
    }

    /// The listen sockets (for systemd's file-descriptor store).
    pub fn listen_sockets(&self) -> &[UdpSocket] {
        &self.stats.worker_sockets
    }

    /// The bound listen address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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

    /// The target registry.
    pub fn registry(&self) -> &Arc<TargetRegistry> {
        self.stats.registry()
    }

    /// The control plane (reload and the admin API's verbs).
    pub fn control(&self) -> &Arc<crate::control::Control> {
        &self.control
    }

    /// The bound admin address, if the admin listener runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(crate::admin::AdminServer::addr)
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
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        // From here on user space serves every target, so the workers' last reads cover them all.
        self.stats.registry.kernel_pass_all();
        self.running.store(false, Ordering::Relaxed);
        for handle in self.workers.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a receive worker panicked");
            }
        }
        if let Some((path, ino)) = self.unix_file.take() {
            use std::os::unix::fs::MetadataExt;
            if std::fs::metadata(&path).is_ok_and(|m| m.ino() == ino) {
                let _ = std::fs::remove_file(&path);
            }
        }
        // Everything received is in the recorder's ring now: let it write that and close its file.
        let _ = self.stats.recorder.stop();
        self.stats
            .registry
            .shutdown(Instant::now() + self.drain_timeout);
        if let Some((stop, handle)) = self.watch.take() {
            stop.store(true, Ordering::Relaxed);
            handle.thread().unpark();
            // What the receivers dropped of the last copies sent, for the final accounting.
            if let Ok(mut watch) = handle.join() {
                watch.last_look();
            }
        }
        if let Some(mut admin) = self.admin.take() {
            admin.stop();
        }
        // The kernel path's last counts are kept; then the program is detached and lo's settings
        // put back.
        drop(self.stats.registry.take_fastpath());
    }
}

/// Loads the kernel fast path as `--fast-path` asks and hands it the target set.
fn start_fastpath(
    config: &Config,
    listen: SocketAddr,
    sockets: &[UdpSocket],
    registry: &TargetRegistry,
    seed: &[crate::fastpath::BookRecord],
    taking_over: bool,
) -> Result<(), StartError> {
    let listen = config.listen_unix.is_none().then_some(listen);
    let started = crate::fastpath::FastPath::start(
        config.fast_path,
        listen,
        &config.fast_path_interfaces,
        sockets,
    )
    .map_err(StartError::FastPath)?;
    if let Some(fp) = started {
        // Taking over: until the old instance has stopped reading the sockets, it could not read
        // our marks, so the kernel path waits (user space serves every target).
        if taking_over {
            registry.kernel_handover(true);
        }
        registry.set_fastpath(fp, seed);
    }
    Ok(())
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}
