//! The receiving side assembled from the listeners: every datagram worker's socket, CPU and
//! receive backend (the first listener's workers, then each other datagram listener's), every
//! stream listener's thread, the counter index and name of each, what udptee listens on (for the
//! rules about loops and origins), and what a takeover carries of the listeners after the first.
//! Start-up only.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::error::StartError;
use super::listen::{BoundStream, ExtraGroup};
use super::view::ListenerView;
use crate::config::{Config, DatagramListen, Listening};
use crate::handover::Extra;
use crate::net::stream::SocketFile;
use crate::net::uring::UringRecv;

/// Every receiving thread's part, in counter-index order.
pub(crate) struct Receivers {
    /// Each datagram worker's socket: the first listener's, then each other group's.
    pub(crate) sockets: Vec<UdpSocket>,
    pub(crate) cpus: Vec<Option<usize>>,
    /// Each datagram worker's io_uring, when that backend serves its group.
    pub(crate) urings: Vec<Option<UringRecv>>,
    /// The stream listeners, whose threads follow the datagram workers.
    pub(crate) streams: Vec<BoundStream>,
    /// How many of `sockets` are the first listener's (the fast path's, and a takeover's first).
    pub(crate) first: usize,
    pub(crate) listeners: Vec<ListenerView>,
    /// Every listener, bound.
    pub(crate) own: Listening,
    /// The unixgram listeners' socket files, removed at stop unless handed over.
    pub(crate) files: Vec<SocketFile>,
    /// The listeners after the first as a takeover describes them, with second descriptors.
    pub(crate) carried: Vec<(Extra, Vec<OwnedFd>)>,
    /// Whether the first listener receives with io_uring.
    pub(crate) uring: bool,
}

impl Receivers {
    /// Puts the first listener's `first` sockets (bound at `local_addr`), the other datagram
    /// groups and the stream listeners in order, choosing each group's receive backend.
    pub(crate) fn assemble(
        config: &Config,
        first: Vec<UdpSocket>,
        local_addr: SocketAddr,
        extra: Vec<ExtraGroup>,
        streams: Vec<BoundStream>,
    ) -> Result<Self, StartError> {
        let workers = config.worker_cpus.len();
        let backend = |unix: bool, sockets: &[UdpSocket]| {
            if sockets.is_empty() {
                return Ok(Vec::new()); // no group: nothing to probe
            }
            crate::net::probe::choose_backend(config.io_backend, unix, config.batch, sockets)
                .map_err(|reason| StartError::Backend { reason })
        };
        let first_rings = backend(config.listen_unix.is_some(), &first)?;
        let uring = !first_rings.is_empty();
        let mut r = Self {
            first: first.len(),
            cpus: config.worker_cpus.clone(),
            urings: pad(first_rings, first.len()),
            sockets: first,
            streams: Vec::new(),
            listeners: Vec::new(),
            own: Listening::default(),
            files: Vec::new(),
            carried: Vec::new(),
            uring,
        };
        // The first listener, a UDP one at its bound address (none with stream listeners only).
        let first_listen = config
            .datagram_listeners()
            .into_iter()
            .next()
            .filter(|_| !config.streams_only)
            .map(|d| match d {
                DatagramListen::Udp(_) => DatagramListen::Udp(local_addr),
                unixgram => unixgram,
            });
        if let Some(d) = first_listen {
            r.note(&d, 0..r.first);
        }
        for g in extra {
            let rings = backend(g.listen.path().is_some(), &g.sockets)?;
            let dup = |s: &UdpSocket| s.try_clone().map(OwnedFd::from);
            let fds = g
                .sockets
                .iter()
                .map(dup)
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|source| StartError::Bind {
                    addr: local_addr,
                    source,
                })?;
            r.carried.push((g.described(), fds));
            let at = r.sockets.len();
            r.note(&g.listen, at..at + g.sockets.len());
            r.urings.extend(pad(rings, g.sockets.len()));
            r.cpus
                .extend((0..g.sockets.len()).map(|i| config.worker_cpus[i % workers]));
            r.sockets.extend(g.sockets);
        }
        let threads = r.sockets.len();
        for (k, s) in streams.iter().enumerate() {
            let (extra, fd) = s.described().map_err(|source| StartError::Bind {
                addr: local_addr,
                source,
            })?;
            match (&extra.addr, &extra.path) {
                (Some(a), _) => r.own.tcp.push(*a),
                (None, Some(p)) => r.own.unix.push(p.clone()),
                (None, None) => {}
            }
            r.carried.push((extra, vec![fd]));
            r.listeners.push(ListenerView {
                name: s.name.clone(),
                kind: s.kind,
                workers: threads + k..threads + k + 1,
                stream: Some(Arc::clone(&s.counters)),
            });
        }
        r.streams = streams;
        Ok(r)
    }

    /// Records a datagram listener whose workers are `workers`: what udptee listens on, its
    /// socket file, its view.
    fn note(&mut self, d: &DatagramListen, workers: std::ops::Range<usize>) {
        match d {
            DatagramListen::Udp(a) => self.own.udp.push(*a),
            DatagramListen::Unixgram(u) => {
                self.own.unixgram.push(u.path.clone());
                self.files.extend(SocketFile::of(&u.path));
            }
        }
        self.listeners
            .push(ListenerView::datagram(d.name(), d.kind(), workers));
    }

    /// Receiving threads: datagram workers and stream listeners.
    pub(crate) fn threads(&self) -> usize {
        self.sockets.len() + self.streams.len()
    }
}

/// One io_uring per socket, or none for any.
fn pad(rings: Vec<UringRecv>, sockets: usize) -> Vec<Option<UringRecv>> {
    if rings.is_empty() {
        (0..sockets).map(|_| None).collect()
    } else {
        rings.into_iter().map(Some).collect()
    }
}
