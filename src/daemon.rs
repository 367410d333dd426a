//! [`Forwarder`]: one running udptee, assembled from its floors — the data path, then the services
//! that read it (recorder, taps, the report), the control verbs, and the edges (the admin listener
//! and the control socket that answers a takeover). It starts them bottom up and stops them in the
//! order that loses nothing: stop receiving, let the recorder write what it has, drain the senders,
//! stop the admin listener, detach the kernel path.
//!
//! Floor 5 (the edges), with `supervisor`, which runs it under signals. Nothing below imports it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::AdminServer;
use crate::config::Config;
use crate::control::{Control, Loader};
use crate::fanout::targets::TargetRegistry;
use crate::fanout::{DataPath, StartError};
use crate::handover::{ControlServer, Handover, Holdings};
use crate::metrics::counters::Snapshot;
use crate::net::SocketState;
use crate::pool::BufPool;
use crate::record::Recorder;
use crate::report::Stats;
use crate::tap::Taps;
use crate::top::Top;

/// A running forwarder. Dropping it without [`shutdown`](Self::shutdown) stops it the same way.
#[derive(Debug)]
pub struct Forwarder {
    data: DataPath,
    stats: Arc<Stats>,
    control: Arc<Control>,
    admin: Option<AdminServer>,
    /// Answers `--takeover` on `--control-socket`.
    control_server: Option<ControlServer>,
    handovers: crossbeam_channel::Receiver<Handover>,
    /// Keeps `handovers` connected whether or not a control server runs (or has finished): a
    /// disconnected channel would be always ready in the main loop's select and spin it.
    _handover_tx: crossbeam_channel::Sender<Handover>,
    stopped: bool,
}

impl Forwarder {
    /// Binds, allocates the pool, starts every target (socket, backlog, sender), every worker and
    /// the admin listener (if configured). Reload is refused: see [`start_with`](Self::start_with).
    pub fn start(config: &Config) -> Result<Self, StartError> {
        Self::start_with(config, None)
    }

    /// As [`start`](Self::start), with `loader` to re-read the configuration on reload (SIGHUP,
    /// `POST /-/reload`).
    pub fn start_with(config: &Config, loader: Option<Loader>) -> Result<Self, StartError> {
        let mut data = DataPath::bind(config)?;
        let registry = Arc::clone(data.registry());
        let recorder = Arc::new(Recorder::new(data.observer_hub(config.max_datagram)));
        let taps = Arc::new(Taps::new(data.observer_hub(config.max_datagram)));
        let control = Arc::new(Control::new(
            Arc::clone(&registry),
            Arc::clone(&recorder),
            config.clone(),
            loader,
        ));
        let stats = Arc::new(Stats::new(
            data.view().clone(),
            Arc::clone(&recorder),
            taps,
            Top::new(data.observer_hub(config.max_datagram)),
            Arc::clone(control.reload_counters()),
        ));
        if let (Some(settings), true) = (&config.record, config.record_start) {
            recorder
                .start(settings.clone())
                .map_err(|e| StartError::Record(e.to_string()))?;
        }
        let inherited_admin = data.take_admin_listener();
        let admin = config
            .admin
            .map(|addr| {
                AdminServer::start(
                    addr,
                    inherited_admin,
                    Arc::clone(&stats),
                    Arc::clone(&control),
                )
                .map_err(|source| StartError::Admin { addr, source })
            })
            .transpose()?;
        let (handover_tx, handovers) = crossbeam_channel::bounded(1);
        let handover_locks = data.handover_locks().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        data.start_workers()?;
        let mut fwd = Self {
            data,
            stats,
            control,
            admin,
            control_server: None,
            handovers,
            _handover_tx: handover_tx.clone(),
            stopped: false,
        };
        // This instance answers the next takeover; in a takeover, the path is ours from now on.
        if let Some(path) = &config.control_socket {
            if fwd.data.taking_over() && crate::net::socket::is_socket_file(path) {
                let _ = std::fs::remove_file(path);
            }
            // The first listener's sockets; the others travel as described listeners.
            let first: Arc<[UdpSocket]> = fwd
                .stats
                .listen_sockets()
                .iter()
                .map(UdpSocket::try_clone)
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?
                .into();
            let held = Holdings {
                sockets: first,
                locks: handover_locks,
                admin: fwd.admin.as_ref().and_then(AdminServer::handover_fd),
                extra: fwd.data.take_carried(),
            };
            match ControlServer::start(
                path,
                fwd.data.local_addr(),
                held,
                handover_tx,
                Arc::new(move |handing| registry.kernel_handover(handing)),
            ) {
                Ok(server) => fwd.control_server = Some(server),
                Err(e) if config.takeover => return Err(StartError::Takeover(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "no control socket: this udptee cannot be taken over")
                }
            }
        }
        fwd.data.finish_takeover()?;
        Ok(fwd)
    }

    /// Takeovers the control socket accepted (at most one): the caller stops with
    /// [`hand_over`](Self::hand_over) and sends the final counters.
    pub fn handovers(&self) -> &crossbeam_channel::Receiver<Handover> {
        &self.handovers
    }

    /// Marks the listen sockets as handed over: at stop, workers leave what is queued in them to the
    /// new udptee instead of reading them dry.
    pub fn hand_over(&self) {
        self.data.hand_over();
    }

    /// The listen sockets (for systemd's file-descriptor store).
    pub fn listen_sockets(&self) -> &[UdpSocket] {
        self.stats.listen_sockets()
    }

    /// The listen sockets systemd's file-descriptor store keeps across a restart.
    pub fn systemd_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.data.systemd_fds()
    }

    /// The bound listen address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.data.local_addr()
    }

    /// What the kernel granted the receive sockets.
    pub fn socket_state(&self) -> SocketState {
        self.data.socket_state()
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
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The bound admin address, if the admin listener runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }

    /// Every counter now; see [`DataView::snapshot`](crate::fanout::DataView::snapshot).
    pub fn snapshot(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// CPU time used so far by the forwarder's threads; see
    /// [`DataView::cpu_time`](crate::fanout::DataView::cpu_time).
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
        self.data.stop_receiving();
        // Everything received is in the recorder's ring now: let it write that and close its file.
        let _ = self.stats.recorder().stop();
        self.data.drain();
        if let Some(mut admin) = self.admin.take() {
            admin.stop();
        }
        // The kernel path's last counts are kept; then the program is detached and lo's settings
        // put back.
        self.data.detach_kernel();
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}
