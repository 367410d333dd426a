//! Kernel I/O: socket setup and the batch receive/send backend.
//!
//! Required of a backend: receive up to a batch of datagrams into pool slots named by `BufId`, report
//! each datagram's real length, truncation, the socket's kernel drop count and receive timestamp; send a
//! batch from pool slots on a connected socket, returning how many went out. Dispatch happens once per
//! batch, never per datagram. Only `sys`, `mmsg`, `origin`, `uring` and `fds` contain `unsafe`. Public so that udptee-loadgen's
//! generator, sink and baseline relay use the very same batch I/O as the forwarder.
//!
//! Floor 2 (the data path), its lowest part: imports `config` and `pool` only.

pub mod allow;
pub mod diag;
pub mod fds;
pub mod link;
pub mod lock;
pub mod mmsg;
pub mod origin;
pub mod probe;
pub mod socket;
pub mod stream;
pub(crate) mod sys;
pub mod uring;

pub use crate::config::IoBackend;
pub use socket::{SocketState, socket_drops};
