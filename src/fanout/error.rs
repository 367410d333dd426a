//! [`StartError`]: why udptee could not start, each variant naming what it was doing. The data
//! path's own failures (bind, pool, backend, targets, threads) and the supervisor's (admin
//! listener, signals, `--user`, `--record`) share it, so `main` has one error to report.

use std::io;
use std::net::SocketAddr;

use super::change::ChangeError;
use crate::config::ConfigError;

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
