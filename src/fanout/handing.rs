//! What a data path hands to the udptee that takes over from it (its listen sockets, locks,
//! other listeners and admin listener), and what it takes from the one it takes over from (their
//! final counters); and what systemd's file-descriptor store keeps. Start-up and hand-over only.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{DataPath, StartError};

impl DataPath {
    /// The admin listener of the udptee being taken over, when it sent one (once).
    pub fn take_admin_listener(&mut self) -> Option<std::net::TcpListener> {
        self.taken.as_mut().and_then(|t| t.admin.take())
    }

    /// Whether the listen sockets came from a udptee being taken over.
    pub fn taking_over(&self) -> bool {
        self.taken.is_some()
    }

    /// Finishes a takeover: tells the old udptee to stop, and carries its final counters into
    /// ours when they come. Nothing to do when the sockets were not taken over.
    pub fn finish_takeover(&mut self) -> Result<(), StartError> {
        let Some(t) = self.taken.take() else {
            return Ok(());
        };
        let registry = Arc::clone(&self.view.registry);
        let workers = self.view.worker_counters.clone();
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
        .map_err(|e| StartError::Takeover(format!("--takeover: telling the old udptee to stop: {e}")))
    }

    /// The listeners after the first, described, with a second descriptor of each socket, for
    /// the next takeover (once).
    pub fn take_carried(&mut self) -> Vec<(crate::handover::Extra, Vec<OwnedFd>)> {
        self.carried.take().unwrap_or_default()
    }

    /// What systemd's file-descriptor store keeps across a restart: every UDP listener's sockets
    /// and every stream listener's (a unixgram socket is bound anew at each start).
    pub fn systemd_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        let v = &self.view;
        let udp = v.listeners.iter().filter(|l| l.kind == "udp");
        udp.flat_map(|l| v.worker_sockets[l.workers.clone()].iter().map(AsFd::as_fd))
            .chain(self.stream_fds.iter().map(AsFd::as_fd))
            .collect()
    }

    /// A second descriptor of each instance lock socket, for the next takeover.
    pub fn handover_locks(&self) -> io::Result<Vec<OwnedFd>> {
        self.listen_lock
            .sockets()
            .iter()
            .map(|s| s.try_clone().map(OwnedFd::from))
            .collect()
    }

    /// Marks the listen sockets as handed over: at stop, workers leave what is queued in them to the
    /// new udptee instead of reading them dry.
    pub fn hand_over(&self) {
        self.drain_socket.store(false, Ordering::Relaxed);
    }
}
