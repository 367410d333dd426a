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

use crate::config::{Config, ConfigError};
use crate::metrics::counters::{Snapshot, TargetCounters, WorkerCounters};
use crate::net::{SocketState, socket, sys};
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
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {source}")]
    Signals {
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A running forwarder. Dropping it without [`shutdown`](Self::shutdown) stops it the same way.
#[derive(Debug)]
pub struct Forwarder {
    local_addr: SocketAddr,
    socket_state: SocketState,
    target_names: Vec<String>,
    drain_timeout: Duration,
    pool: Arc<BufPool>,
    running: Arc<AtomicBool>,
    drain_deadline: Arc<OnceLock<Instant>>,
    worker_sockets: Vec<UdpSocket>,
    worker_counters: Vec<Arc<WorkerCounters>>,
    target_counters: Vec<Arc<TargetCounters>>,
    workers: Vec<JoinHandle<()>>,
    senders: Vec<JoinHandle<()>>,
    thread_ids: Arc<Mutex<Vec<i32>>>,
}

fn spawn(
    name: String,
    cpu: Option<usize>,
    tids: &Arc<Mutex<Vec<i32>>>,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, StartError> {
    let tids = Arc::clone(tids);
    let thread_name = name.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
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

impl Forwarder {
    /// Binds, connects, allocates the pool and starts every thread.
    pub fn start(config: &Config) -> Result<Self, StartError> {
        config.validate()?;
        let workers = config.worker_cpus.len();
        let (sockets, local_addr, socket_state) =
            socket::bind_reuseport_group(config.listen, workers, config.rcvbuf_bytes).map_err(
                |source| StartError::Bind {
                    addr: config.listen,
                    source,
                },
            )?;
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

        let pool = Arc::new(BufPool::new(config.pool_slots(), config.max_datagram));
        let running = Arc::new(AtomicBool::new(true));
        let drain_deadline = Arc::new(OnceLock::new());
        let thread_ids = Arc::new(Mutex::new(Vec::new()));
        let mut fwd = Self {
            local_addr,
            socket_state,
            target_names: config.targets.iter().map(|t| t.name.clone()).collect(),
            drain_timeout: config.drain_timeout,
            pool: Arc::clone(&pool),
            running: Arc::clone(&running),
            drain_deadline: Arc::clone(&drain_deadline),
            worker_sockets,
            worker_counters: Vec::new(),
            target_counters: Vec::new(),
            workers: Vec::new(),
            senders: Vec::new(),
            thread_ids: Arc::clone(&thread_ids),
        };

        // Workers hold the only queue senders (in their links): when the last worker exits, each queue
        // closes and its sender thread finishes after draining it.
        let mut links = Vec::with_capacity(config.targets.len());
        for (t, (target, socket)) in config.targets.iter().zip(target_sockets).enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(config.queue_depth);
            let socket = Arc::new(socket);
            let backlog = Arc::new(AtomicUsize::new(0));
            links.push(worker::TargetLink {
                name: target.name.clone(),
                socket: Arc::clone(&socket),
                queue: tx,
                backlog: Arc::clone(&backlog),
            });
            let counters = Arc::new(TargetCounters::default());
            fwd.target_counters.push(Arc::clone(&counters));
            let sender = sender::TargetSender {
                name: target.name.clone(),
                socket,
                backlog,
                pool: Arc::clone(&pool),
                queue: rx,
                counters,
                drain_deadline: Arc::clone(&drain_deadline),
                batch: config.batch,
            };
            let cpu = (!config.sender_cpus.is_empty())
                .then(|| config.sender_cpus[t % config.sender_cpus.len()]);
            fwd.senders.push(spawn(
                format!("udptee-tx{t}"),
                cpu,
                &thread_ids,
                move || sender.run(),
            )?);
        }
        for (w, (socket, cpu)) in sockets
            .into_iter()
            .zip(config.worker_cpus.iter().copied())
            .enumerate()
        {
            let counters = Arc::new(WorkerCounters::new(config.targets.len()));
            fwd.worker_counters.push(Arc::clone(&counters));
            let worker = worker::RecvWorker {
                index: w,
                socket,
                pool: Arc::clone(&pool),
                targets: links.clone(),
                counters,
                running: Arc::clone(&running),
                batch: config.batch,
            };
            fwd.workers.push(spawn(
                format!("udptee-rx{w}"),
                cpu,
                &thread_ids,
                move || worker.run(),
            )?);
        }
        Ok(fwd)
    }

    /// The bound listen address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the kernel granted the receive sockets.
    pub fn socket_state(&self) -> SocketState {
        self.socket_state
    }

    /// The datagram pool (capacity and occupancy, for gauges).
    pub fn pool(&self) -> &BufPool {
        &self.pool
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
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}
