//! The data path: receive workers, per-target senders, the pool and the queues between them.
//!
//! ```text
//!  SO_REUSEPORT group   table (arc-swap, loaded once per batch)   connected sockets
//!  rx0 (cpu a) ─┐  empty backlog: sendmmsg(MSG_DONTWAIT) inline ─────────┬──> target0
//!  rx1 (cpu b) ─┼─ EAGAIN, short count, or a backlog: copy ─> [ring 0] ─ tx0 ┘
//!  rxN ─────────┘                                         ─> [ring T] ─ txT ──> targetT
//!        └─ BufPool: each worker's receive staging, free again once the batch is dispatched ─┘
//! ```
//! The [`targets::TargetRegistry`] owns the target set and publishes it; see its docs for how a
//! change is applied without touching unchanged targets. [`DataPath::bind`] does everything that can
//! fail (resolve, bind, connect, allocate) before any worker runs; [`DataPath::start_workers`] then
//! starts them. Shutdown stops the workers first; senders then drain their rings until
//! `drain_timeout`, count what is left as `drain_timeout`, and exit.
//!
//! Floor 2 of the house (the data path): it starts no service above itself. The recorder, the taps,
//! the control verbs and the admin listener are assembled around it by `daemon::Forwarder`.

mod account;
mod books;
mod change;
mod dispatch;
mod error;
pub mod group;
mod handing;
mod health;
mod hub;
mod incarnation;
mod inline;
mod kernel;
mod listen;
mod origin;
pub use origin::warnings as origin_warnings;
mod link;
pub(crate) mod observe;
mod parity;
pub(crate) mod ratelimit;
mod receivers;
mod sender;
mod stream;
mod target;
pub mod targets;
mod threads;
mod view;
mod watch;
mod worker;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

pub use self::error::StartError;
pub use self::hub::ObserverHub;
use self::listen::BoundStream;
use self::receivers::Receivers;
use self::targets::{SenderSettings, TargetRegistry};
pub use self::threads::Threads;
pub use self::view::DataView;
use crate::config::{Config, StreamSettings};
use crate::handover::Taken;
use crate::metrics::counters::WorkerCounters;
use crate::net::stream::SocketFile;
use crate::net::uring::UringRecv;
use crate::net::{SocketState, socket};
use crate::pool::BufPool;

/// A bound data path. Dropping it without [`stop_receiving`](Self::stop_receiving) and
/// [`drain`](Self::drain) stops it the same way.
#[derive(Debug)]
pub struct DataPath {
    local_addr: SocketAddr,
    socket_state: SocketState,
    drain_timeout: std::time::Duration,
    view: DataView,
    running: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    /// What the workers are started with, until they are.
    pending: Option<Pending>,
    watch: Option<(Arc<AtomicBool>, JoinHandle<watch::Watch>)>,
    /// Held for the data path's life: no second udptee can join the listen port.
    listen_lock: crate::net::lock::ListenLock,
    /// The takeover in progress, finished once this instance answers takeovers itself.
    taken: Option<Taken>,
    /// Workers read their socket dry at stop, unless it was handed over (the new udptee reads it).
    drain_socket: Arc<AtomicBool>,
    /// The unixgram listeners' socket files, removed at stop if they are still ours and were not
    /// handed over.
    unix_files: Vec<SocketFile>,
    /// A second descriptor of each stream listener's socket, for systemd's store.
    stream_fds: Vec<OwnedFd>,
    /// The listeners after the first, for the control server to hand over.
    carried: Option<Vec<(crate::handover::Extra, Vec<OwnedFd>)>>,
    receiving_stopped: bool,
    drained: bool,
}

/// The workers' sockets and settings between bind and start.
struct Pending {
    sockets: Vec<UdpSocket>,
    cpus: Vec<Option<usize>>,
    urings: Vec<Option<UringRecv>>,
    batch: usize,
    latency: bool,
    streams: Vec<BoundStream>,
    stream: StreamSettings,
    max_datagram: usize,
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
    let bytes = config.pool_bytes(uring) + config.backlog_bytes() + config.stream_bytes();
    crate::pool::check_available(bytes)
        .map_err(|available| StartError::Memory { bytes, available })?;
    BufPool::try_new(config.pool_slots(uring), config.max_datagram)
        .map_err(|available| StartError::Memory { bytes, available })
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("sockets", &self.sockets.len())
            .finish_non_exhaustive()
    }
}

impl DataPath {
    /// Acquires the listen sockets, allocates the pool, starts every target (socket, backlog,
    /// sender), the kernel path and the watch thread; no worker runs yet
    /// ([`start_workers`](Self::start_workers)).
    pub fn bind(config: &Config) -> Result<Self, StartError> {
        config.validate()?;
        let listen::Listen {
            lock: listen_lock,
            sockets,
            local_addr,
            socket_state,
            taken,
            extra,
            streams,
        } = listen::acquire(config)?;
        // One worker per socket: a handed-over group may differ from --workers.
        let mut config = config.clone();
        if sockets.len() != config.worker_cpus.len() && !config.streams_only {
            tracing::warn!(
                sockets = sockets.len(),
                workers = config.worker_cpus.len(),
                "the handed-over group has another number of sockets than --workers; one worker per socket"
            );
            config.worker_cpus.resize(sockets.len(), None);
        }
        let config = &config;
        let r = Receivers::assemble(config, sockets, local_addr, extra, streams)?;
        let workers = r.first;
        // Every receiving thread counts under its own index: the datagram workers of each
        // listener, then one per stream listener.
        let threads_total = r.threads();
        let worker_sockets: Arc<[UdpSocket]> = r
            .sockets
            .iter()
            .map(UdpSocket::try_clone)
            .collect::<io::Result<Vec<_>>>()
            .map_err(|source| StartError::Bind {
                addr: local_addr,
                source,
            })?
            .into();
        let stream_fds = r
            .carried
            .iter()
            .filter(|(e, _)| e.kind == "tcp" || e.kind == "unix")
            .flat_map(|(_, fds)| fds.iter().map(OwnedFd::try_clone))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|source| StartError::Bind {
                addr: local_addr,
                source,
            })?;
        let pool = Arc::new(allocate_pool(config, r.uring)?);
        let worker_counters: Vec<_> = (0..threads_total)
            .map(|_| Arc::new(WorkerCounters::new()))
            .collect();
        let threads = Arc::new(Threads::default());
        let registry = Arc::new(TargetRegistry::new(
            SenderSettings {
                listen: local_addr,
                own: r.own.clone(),
                workers: threads_total,
                batch: config.batch,
                latency: config.latency,
                drain_timeout: config.drain_timeout,
                sender_cpus: config.sender_cpus.clone(),
                max_targets: config.max_targets,
                max_datagram: config.max_datagram,
                gives_up_privileges: config.user.is_some(),
            },
            Arc::clone(&threads),
        ));
        registry.apply(config.targets.clone())?;
        registry.set_allow(crate::net::allow::AllowList::new(&config.allow));
        let seed = taken.as_ref().map(|t| t.kernel.clone()).unwrap_or_default();
        registry.watch_marks(worker_counters[..workers].to_vec());
        start_fastpath(
            config,
            local_addr,
            &worker_sockets[..workers],
            &registry,
            &seed,
            taken.is_some(),
        )?;
        let view = DataView {
            backend: if r.uring { "uring" } else { "mmsg" },
            pool,
            worker_sockets,
            first: workers,
            worker_counters,
            registry: Arc::clone(&registry),
            listeners: r.listeners,
            workers_expected: threads_total,
            workers_running: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            threads,
        };
        let watch_stop = Arc::new(AtomicBool::new(false));
        let watch = watch::Watch::new(registry)
            .spawn(Arc::clone(&watch_stop))
            .map_err(|source| StartError::Spawn {
                name: "udptee-watch".into(),
                source,
            })?;
        Ok(Self {
            local_addr,
            socket_state,
            drain_timeout: config.drain_timeout,
            view,
            running: Arc::new(AtomicBool::new(true)),
            workers: Vec::new(),
            pending: Some(Pending {
                sockets: r.sockets,
                cpus: r.cpus,
                urings: r.urings,
                batch: config.batch,
                latency: config.latency,
                streams: r.streams,
                stream: config.stream,
                max_datagram: config.max_datagram,
            }),
            stream_fds,
            carried: Some(r.carried),
            watch: Some((watch_stop, watch)),
            listen_lock,
            taken,
            drain_socket: Arc::new(AtomicBool::new(true)),
            unix_files: r.files,
            receiving_stopped: false,
            drained: false,
        })
    }

    /// A hub where a reader of every received datagram (the recorder, live taps) plugs in. Kernel
    /// receive times are read only when something needs them: latency, or a reader (turned on for
    /// good at its first start; the cost is one control message per datagram).
    pub fn observer_hub(&self, max_datagram: usize) -> ObserverHub {
        let sockets = Arc::clone(&self.view.worker_sockets);
        ObserverHub::new(
            Arc::clone(&self.view.registry),
            max_datagram,
            Arc::new(move || {
                for s in sockets.iter() {
                    let _ = socket::enable_timestamps(s);
                }
            }),
        )
    }

    /// Starts one receive worker per listen socket and one thread per stream listener. Called
    /// once; later calls do nothing.
    pub fn start_workers(&mut self) -> Result<(), StartError> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let first_stream = p.sockets.len();
        let datagram = p.sockets.into_iter().zip(p.cpus).zip(p.urings);
        for (w, ((socket, cpu), uring)) in datagram.enumerate() {
            let v = &self.view;
            let worker = worker::RecvWorker {
                index: w,
                socket,
                pool: Arc::clone(&v.pool),
                table: v.registry.swap(),
                counters: Arc::clone(&v.worker_counters[w]),
                running: Arc::clone(&self.running),
                batch: p.batch,
                latency: p.latency,
                uring,
                drain_socket: Arc::clone(&self.drain_socket),
            };
            self.spawn_receiver(format!("udptee-rx{w}"), cpu, move || worker.run())?;
        }
        for (k, s) in p.streams.into_iter().enumerate() {
            let v = &self.view;
            let index = first_stream + k;
            let worker = stream::StreamWorker {
                name: s.name,
                socket: s.socket,
                index,
                pool: Arc::clone(&v.pool),
                received: Arc::clone(&v.worker_counters[index]),
                latency: p.latency,
                batch: p.batch,
                table: v.registry.swap(),
                counters: s.counters,
                running: Arc::clone(&self.running),
                settings: p.stream,
                max_datagram: p.max_datagram,
                file: s.file,
                handed_over: Arc::clone(&self.drain_socket),
            };
            self.spawn_receiver(format!("udptee-st{k}"), None, move || worker.run())?;
        }
        Ok(())
    }

    /// Spawns one receiving thread, counted as running for as long as it lives.
    fn spawn_receiver(
        &mut self,
        name: String,
        cpu: Option<usize>,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), StartError> {
        let v = &self.view;
        let alive = Arc::clone(&v.workers_running);
        alive.fetch_add(1, Ordering::Relaxed);
        let handle = v
            .threads
            .spawn(name.clone(), cpu, move || {
                let _running = Running(alive);
                body();
            })
            .map_err(|source| {
                v.workers_running.fetch_sub(1, Ordering::Relaxed);
                StartError::Spawn { name, source }
            })?;
        self.workers.push(handle);
        Ok(())
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
    pub fn view(&self) -> &DataView {
        &self.view
    }

    /// The target registry.
    pub fn registry(&self) -> &Arc<TargetRegistry> {
        &self.view.registry
    }

    /// Stops receiving: from here on user space serves every target, the workers' last reads
    /// cover them all, and the unixgram socket file (if still ours) is removed.
    pub fn stop_receiving(&mut self) {
        if std::mem::replace(&mut self.receiving_stopped, true) {
            return;
        }
        self.view.registry.kernel_pass_all();
        self.running.store(false, Ordering::Relaxed);
        for handle in self.workers.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a receive worker panicked");
            }
        }
        let handed_over = !self.drain_socket.load(Ordering::Relaxed);
        for file in self.unix_files.drain(..).filter(|_| !handed_over) {
            file.remove();
        }
    }

    /// Lets the senders drain for at most the drain timeout, joins them and the watch thread (which
    /// reads what the receivers dropped of the last copies sent, for the final accounting).
    pub fn drain(&mut self) {
        self.stop_receiving();
        if std::mem::replace(&mut self.drained, true) {
            return;
        }
        self.view
            .registry
            .shutdown(Instant::now() + self.drain_timeout);
        if let Some((stop, handle)) = self.watch.take() {
            stop.store(true, Ordering::Relaxed);
            handle.thread().unpark();
            if let Ok(mut watch) = handle.join() {
                watch.last_look();
            }
        }
    }

    /// Detaches the kernel path after keeping its last counts (and puts lo's settings back).
    pub fn detach_kernel(&self) {
        drop(self.view.registry.take_fastpath());
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
    let listen = (config.listen_unix.is_none() && !config.streams_only).then_some(listen);
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

impl Drop for DataPath {
    fn drop(&mut self) {
        self.drain();
        self.detach_kernel();
    }
}
