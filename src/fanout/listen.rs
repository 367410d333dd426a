//! The listen sockets, acquired once at start-up in the one order that loses nothing: from the
//! udptee being taken over (`--takeover`), else from systemd (`LISTEN_FDS`, the fd store), else
//! bound now under the instance lock; a unixgram listener is bound on its own; tcp:// and unix://
//! listeners are bound for their threads. Not on the hot path.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use super::error::StartError;
use crate::config::{Config, StreamListen};
use crate::handover::{self, Taken};
use crate::metrics::stream::StreamCounters;
use crate::net::fds;
use crate::net::lock::{self, ListenLock};
use crate::net::stream::{SocketFile, StreamSocket};
use crate::net::{SocketState, socket};

/// The listen group, with what it came with.
pub(crate) struct Listen {
    /// Held for the forwarder's life: no second udptee can join the listen port.
    pub(crate) lock: ListenLock,
    /// One socket per worker.
    pub(crate) sockets: Vec<UdpSocket>,
    /// The bound address (the real port when the configuration asked for port 0).
    pub(crate) local_addr: SocketAddr,
    /// What the kernel granted.
    pub(crate) socket_state: SocketState,
    /// The takeover in progress, when the sockets came from another udptee.
    pub(crate) taken: Option<Taken>,
}

/// Acquires the listen sockets for `config`; see the module docs.
pub(crate) fn acquire(config: &Config) -> Result<Listen, StartError> {
    let bind_error = |source| StartError::Bind {
        addr: config.listen,
        source,
    };
    if config.takeover && !config.streams.is_empty() {
        return Err(StartError::Takeover(
            "--takeover hands over the datagram listener's sockets; tcp:// and unix:// listeners are not handed over yet (restart instead)".into(),
        ));
    }
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
    let inherited = if taken.is_none() {
        fds::from_systemd(config.listen)
    } else {
        Vec::new()
    };
    if config.listen_unix.is_some() && (taken.is_some() || config.takeover) {
        return Err(StartError::Takeover(
            "--takeover hands over UDP listen sockets; a unixgram listener is not supported yet"
                .into(),
        ));
    }
    let (lock, (sockets, local_addr, socket_state), taken) = match (taken, &config.listen_unix) {
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
        (None, None) if !inherited.is_empty() => {
            let n = inherited.len();
            let (lock, group) = lock::bind_locked(config.listen, || {
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
    Ok(Listen {
        lock,
        sockets,
        local_addr,
        socket_state,
        taken,
    })
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

/// Binds every `tcp://` and `unix://` listener.
pub(crate) fn bind_streams(config: &Config) -> Result<Vec<BoundStream>, StartError> {
    config
        .streams
        .iter()
        .map(|spec| {
            let socket = StreamSocket::bind(spec).map_err(|source| match spec {
                StreamListen::Tcp(addr) => StartError::Bind {
                    addr: *addr,
                    source,
                },
                StreamListen::Unix(u) => StartError::BindUnix {
                    path: u.path.clone(),
                    source,
                },
            })?;
            let (name, kind) = match (spec, socket.tcp_addr()) {
                (StreamListen::Tcp(_), Some(bound)) => (StreamListen::Tcp(bound).name(), "tcp"),
                _ => (spec.name(), "unix"),
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
        })
        .collect()
}
