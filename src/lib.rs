//! udptee: a Linux UDP datagram tee.
//!
//! Every datagram that arrives on the listen address is handed, byte for byte, to every target. The
//! data path is built so that one slow or dead target costs only its own copies:
//! - receive workers (one per `--workers`/`--cpus` entry, optionally pinned), each with its own
//!   SO_REUSEPORT socket, read batches with `recvmmsg` into slots of a pool allocated once at start-up;
//! - each target is sent inline from the worker when its backlog is empty; what the kernel does not
//!   take at once is copied into the target's bounded byte ring, which its sender thread sends with
//!   `sendmmsg` on a connected socket (targets with line settings always go through their sender);
//! - a full queue, a send error, an oversized datagram or a drain timeout is a counted drop with a named
//!   [`metrics::counters::DropReason`]; nothing is lost silently, nothing waits on a target.
//!
//! The house, in floors; each module imports only floors below its own (docs/architecture.md):
//! 1. **Plain data and leaves**: [`config`] (every setting, its limits and checks; imports nothing of
//!    udptee's), [`metrics`] (counters and snapshots, knowing nothing of their readers), [`pool`],
//!    [`statsd`] (the line parser and filter), [`ratecap`] (a rate cap on one atomic), [`logging`],
//!    [`notify`], [`privileges`].
//! 2. **The data path**: [`net`] (sockets and the batch syscalls), [`fastpath`] (the kernel path),
//!    [`replay`], [`handover`] (the takeover protocol), [`fanout`] (workers, senders, the target
//!    registry: [`fanout::DataPath`], which starts nothing above itself).
//! 3. **Services over the data path**: [`record`], [`tap`], [`top`], [`report`] (the shared [`Stats`], JSON,
//!    the status page, Prometheus).
//! 4. **Control**: [`control`] (reload and the admin API's verbs, in one place).
//! 5. **The edges**: `admin` (the HTTP listener and its routes), [`cli`] (flags to a [`Config`]),
//!    [`daemon`] (one running [`Forwarder`], assembled and stopped in order) and [`supervisor`]
//!    ([`run`]: signals, systemd, the stats line).
//!
//! `unsafe` code lives only in `net::{sys,mmsg,uring,fds}`, `pool::ring` and `fastpath::loader`,
//! plus one read of an unconsumed ring entry in `fanout::target` and one in `fanout::observe`.
#![deny(unsafe_code)]

mod admin;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fanout;
pub mod fastpath;
pub mod handover;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod pool;
pub mod privileges;
pub mod ratecap;
pub mod record;
pub mod replay;
pub mod report;
pub mod statsd;
pub mod supervisor;
pub mod tap;
pub mod top;

pub use config::Config;
pub use daemon::Forwarder;
pub use fanout::StartError;
pub use metrics::counters::{DropReason, Snapshot};
pub use net::{SocketState, socket_drops};
pub use report::Stats;
pub use supervisor::run;
