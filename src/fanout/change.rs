//! What a change of the target set did ([`Change`]) or why it was refused ([`ChangeError`]), and the
//! settings every target's sender shares. Plain data for the registry, the control verbs and the
//! admin API.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::ConfigError;

/// What a change did, for the log, the API response and the reload counter.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Targets that joined.
    pub added: Vec<String>,
    /// Targets that left (their queues drain in the background).
    pub removed: Vec<String>,
    /// Targets whose address or queue settings changed (new socket and sender, same counters).
    pub replaced: Vec<String>,
    /// Targets whose `enabled` changed.
    pub toggled: Vec<String>,
    /// Targets left exactly as they were.
    pub unchanged: Vec<String>,
    /// The generation now published.
    pub generation: u64,
}

/// Why a change was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The new set is invalid (duplicate, loop, too many, bad value).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// A new target's socket could not be set up.
    #[error("connecting to target {name:?} ({addr}): {source}")]
    Connect {
        /// The target.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A connected stream target was to move to an address that did not accept a connection: the
    /// change is refused and the old connection keeps the traffic.
    #[error("switching target {name:?} to {to}: {source}; it keeps sending to its current address")]
    Switch {
        /// The target.
        name: String,
        /// The address it was to move to, as written.
        to: String,
        /// Why the connection failed.
        #[source]
        source: std::io::Error,
    },
    /// A backlog ring could not be allocated.
    #[error("target {name:?}: {reason}")]
    Memory {
        /// The target.
        name: String,
        /// What failed.
        reason: String,
    },
    /// A sender thread could not be started.
    #[error("starting the sender of target {name:?}: {source}")]
    Spawn {
        /// The target.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No target of that name.
    #[error("no target named {0:?}")]
    NotFound(String),
    /// The forwarder is stopping.
    #[error("udptee is shutting down")]
    Stopping,
}

/// Settings every target's sender shares; fixed at start-up.
#[derive(Debug, Clone)]
pub(crate) struct SenderSettings {
    /// The first UDP listener's bound address (the kernel fast path serves it).
    pub(crate) listen: SocketAddr,
    /// Every listener, bound (a target at one of them would be a loop; how senders are known).
    pub(crate) own: crate::config::Listening,
    pub(crate) workers: usize,
    pub(crate) batch: usize,
    pub(crate) latency: bool,
    pub(crate) drain_timeout: Duration,
    pub(crate) sender_cpus: Vec<usize>,
    pub(crate) max_targets: usize,
    /// `--max-datagram`: a filtered copy is packed under it.
    pub(crate) max_datagram: usize,
    /// `--user`: privileges end after start, so nothing may rely on them at every send.
    pub(crate) gives_up_privileges: bool,
}
