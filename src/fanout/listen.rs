//! The listen sockets, acquired once at start-up in the one order that loses nothing: from the
//! udptee being taken over (`--takeover`), else from systemd (`LISTEN_FDS`, the fd store), else
//! bound now under the instance lock (a unixgram listener is bound on its own: its live-socket
//! check is its lock). The first datagram listener, then the others, then the tcp:// and unix://
//! ones, each claiming what was carried or passed for it. Not on the hot path.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use super::error::StartError;
use crate::config::{Config, DatagramListen, StreamListen};
use crate::handover::{self, Carried, Extra, Taken};
use crate::metrics::stream::StreamCounters;
use crate::net::fds::Inherited;
use crate::net::lock::{self, ListenLock};
use crate::net::stream::{SocketFile, StreamSocket};
use crate::net::{SocketState, socket};

/// The listeners, with what they came with.
pub(crate) struct Listen {
    /// Held for the forwarder's life: no second udptee can join a listen port.
    pub(crate) lock: ListenLock,
    /// The first datagram listener: one socket per worker.
    pub(crate) sockets: Vec<UdpSocket>,
    /// Its bound address (the real port when the configuration asked for port 0).
    pub(crate) local_addr: SocketAddr,
    /// What the kernel granted.
    pub(crate) socket_state: SocketState,
    /// The takeover in progress, when the sockets came from another udptee.
    pub(crate) taken: Option<Taken>,
    /// The other datagram listeners, each a group of its own.
    pub(crate) extra: Vec<ExtraGroup>,
    /// The tcp:// and unix:// listeners.
    pub(crate) streams: Vec<BoundStream>,
}

/// A datagram listener after the first: its own sockets (one per worker), workers and counters.
pub(crate) struct ExtraGroup {
    /// The listener, a UDP one at its bound address.
    pub(crate) listen: DatagramListen,
    pub(crate) sockets: Vec<UdpSocket>,
}

impl ExtraGroup {
    /// How it travels in a takeover.
    pub(crate) fn described(&self) -> Extra {
        Extra {
            kind: self.listen.kind().into(),
            addr: match self.listen {
                DatagramListen::Udp(a) => Some(a),
                DatagramListen::Unixgram(_) => None,
            },
            path: self.listen.path().map(std::path::Path::to_path_buf),
            fds: self.sockets.len(),
        }
    }
}

/// Acquires every listen socket for `config`; see the module docs.
pub(crate) fn acquire(config: &Config) -> Result<Listen, StartError> {
    let bind_error = |source| StartError::Bind {
        addr: config.listen,
        source,
    };
    // The listen sockets: from the udptee we take over, from systemd, or bound now.
    let taken = match (&config.control_socket, config.takeover) {
        (Some(path), true) => handover::take_over(path, config.listen, config.admin.is_some())
            .map_err(StartError::Takeover)?,
        (None, true) => {
            return Err(StartError::Takeover(
                "--takeover needs --control-socket (or $RUNTIME_DIRECTORY)".into(),
            ));
        }
        _ => None,
    };
    let mut inherited = if taken.is_none() {
        Inherited::from_systemd()
    } else {
        Inherited::default()
    };
    if config.listen_unix.is_some() && (taken.is_some() || config.takeover) {
        return Err(StartError::Takeover(
            "--takeover hands over a UDP first listener's sockets; a unixgram one is not supported yet"
                .into(),
        ));
    }
    let first_inherited = match (&taken, &config.listen_unix) {
        (None, None) if !config.streams_only => inherited.take_udp(config.listen),
        _ => Vec::new(),
    };
    let (lock, (sockets, local_addr, socket_state), taken) = match (taken, &config.listen_unix) {
        // Only stream listeners: no first datagram group (a takeover brings its other ones).
        (taken, _) if config.streams_only => {
            let none = SocketState {
                rcvbuf_granted: 0,
                forced: false,
            };
            let lock = ListenLock::from_sockets(Vec::new());
            (lock, (Vec::new(), config.listen, none), taken)
        }
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
            (ListenLock::from_sockets(Vec::new()), group, None)
        }
        (Some(mut t), _) => {
            let group = socket::adopt_group(
                std::mem::take(&mut t.sockets),
                config.listen,
                config.rcvbuf_bytes,
                config.latency,
            )
            .map_err(bind_error)?;
            let lock = ListenLock::from_sockets(std::mem::take(&mut t.locks));
            tracing::info!(
                pid = t.pid,
                sockets = group.0.len(),
                "took the listen sockets over from the running udptee"
            );
            (lock, group, Some(t))
        }
        (None, None) if !first_inherited.is_empty() => {
            let n = first_inherited.len();
            let (lock, group) = lock::bind_locked(config.listen, || {
                socket::adopt_group(
                    first_inherited,
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
            let (lock, group) = lock::bind_locked(config.listen, || {
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
    let (mut lock, mut taken) = (lock, taken);
    let mut carried = taken.as_mut().map(|t| std::mem::take(&mut t.extra));
    let extra = config
        .extra_listen
        .iter()
        .map(|d| extra_group(config, d, carried.as_mut(), &mut inherited, &mut lock))
        .collect::<Result<Vec<_>, _>>()?;
    let streams = config
        .streams
        .iter()
        .map(|spec| bind_stream(spec, carried.as_mut(), &mut inherited))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Listen {
        lock,
        sockets,
        local_addr,
        socket_state,
        taken,
        extra,
        streams,
    })
}

/// One datagram listener after the first: carried over by a takeover, passed by systemd, or bound.
fn extra_group(
    config: &Config,
    d: &DatagramListen,
    carried: Option<&mut Carried>,
    inherited: &mut Inherited,
    locks: &mut ListenLock,
) -> Result<ExtraGroup, StartError> {
    let workers = config.worker_cpus.len();
    let (rcvbuf, stamps) = (config.rcvbuf_bytes, config.latency);
    match d {
        DatagramListen::Udp(addr) => {
            let bind_error = |source| StartError::Bind {
                addr: *addr,
                source,
            };
            let handed = carried
                .and_then(|c| c.claim("udp", Some(*addr), None))
                .map(|fds| fds.into_iter().map(UdpSocket::from).collect::<Vec<_>>());
            let (sockets, local, _) = match handed {
                Some(sockets) => {
                    socket::adopt_group(sockets, *addr, rcvbuf, stamps).map_err(bind_error)?
                }
                None => {
                    let passed = inherited.take_udp(*addr);
                    let (lock, group) = lock::bind_locked(*addr, || {
                        if passed.is_empty() {
                            socket::bind_reuseport_group(*addr, workers, rcvbuf, stamps)
                        } else {
                            socket::adopt_group(passed, *addr, rcvbuf, stamps)
                        }
                    })
                    .map_err(bind_error)?;
                    locks.join(lock);
                    group
                }
            };
            Ok(ExtraGroup {
                listen: DatagramListen::Udp(local),
                sockets,
            })
        }
        DatagramListen::Unixgram(u) => {
            let bind_error = |source| StartError::BindUnix {
                path: u.path.clone(),
                source,
            };
            let sockets = match carried.and_then(|c| c.claim("unixgram", None, Some(&u.path))) {
                Some(fds) => {
                    let mut sockets: Vec<UdpSocket> =
                        fds.into_iter().map(UdpSocket::from).collect();
                    while sockets.len() < workers {
                        let more = sockets[0].try_clone().map_err(bind_error)?;
                        sockets.push(more);
                    }
                    sockets
                }
                None => {
                    socket::bind_unix_group(u, workers, rcvbuf, stamps)
                        .map_err(bind_error)?
                        .0
                }
            };
            Ok(ExtraGroup {
                listen: d.clone(),
                sockets,
            })
        }
    }
}

/// A stream listener, bound, until its thread starts.
pub(crate) struct BoundStream {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) socket: StreamSocket,
    pub(crate) counters: Arc<StreamCounters>,
    /// A Unix listener's socket file, removed at stop if still ours.
    pub(crate) file: Option<SocketFile>,
}

/// One `tcp://` or `unix://` listener: carried over by a takeover, passed by systemd, or bound.
fn bind_stream(
    spec: &StreamListen,
    carried: Option<&mut Carried>,
    inherited: &mut Inherited,
) -> Result<BoundStream, StartError> {
    let error = |source| match spec {
        StreamListen::Tcp(addr) => StartError::Bind {
            addr: *addr,
            source,
        },
        StreamListen::Unix(u) => StartError::BindUnix {
            path: u.path.clone(),
            source,
        },
    };
    let (kind, addr, path) = match spec {
        StreamListen::Tcp(a) => ("tcp", Some(*a), None),
        StreamListen::Unix(u) => ("unix", None, Some(u.path.as_path())),
    };
    let passed = carried
        .and_then(|c| c.claim(kind, addr, path))
        .and_then(|fds| fds.into_iter().next())
        .or_else(|| inherited.take_stream(spec));
    let socket = match passed {
        Some(fd) => StreamSocket::adopt(spec, fd),
        None => StreamSocket::bind(spec),
    }
    .map_err(error)?;
    let name = match (spec, socket.tcp_addr()) {
        (StreamListen::Tcp(_), Some(bound)) => StreamListen::Tcp(bound).name(),
        _ => spec.name(),
    };
    let file = spec.path().and_then(SocketFile::of);
    tracing::info!(listener = %name, "listening for streams");
    Ok(BoundStream {
        name,
        kind,
        socket,
        counters: Arc::new(StreamCounters::new()),
        file,
    })
}

impl BoundStream {
    /// How it travels in a takeover (with a second descriptor of its socket).
    pub(crate) fn described(&self) -> std::io::Result<(Extra, std::os::fd::OwnedFd)> {
        use std::os::fd::AsFd;
        let fd = self.socket.as_fd().try_clone_to_owned()?;
        let extra = Extra {
            kind: self.kind.into(),
            addr: self.socket.tcp_addr(),
            path: self.file.as_ref().map(|f| f.path().to_owned()),
            fds: 1,
        };
        Ok((extra, fd))
    }
}
