//! The listeners besides the first that a takeover carries: each described in the answer (its
//! kind, its address or socket file, how many descriptors follow), the descriptors riding after
//! the first listener's, its locks and the admin listener. The new instance takes the ones its
//! configuration names and closes the rest.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One listener besides the first, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extra {
    /// `udp`, `unixgram`, `tcp` or `unix`.
    pub kind: String,
    /// A UDP or TCP listener's bound address.
    pub addr: Option<SocketAddr>,
    /// A Unix listener's socket file.
    pub path: Option<PathBuf>,
    /// Descriptors that follow for it.
    pub fds: usize,
}

impl Extra {
    /// Whether it is the listener of `kind` at `addr` (port 0: any port) or `path`.
    pub fn serves(
        &self,
        kind: &str,
        addr: Option<SocketAddr>,
        path: Option<&std::path::Path>,
    ) -> bool {
        self.kind == kind
            && match (self.addr, addr) {
                (Some(have), Some(want)) => crate::net::socket::serves(have, want),
                (None, None) => self.path.as_deref() == path,
                _ => false,
            }
    }
}

/// What a takeover brought of the listeners besides the first, until each is claimed.
#[derive(Debug, Default)]
pub struct Carried(pub(crate) Vec<(Extra, Vec<OwnedFd>)>);

impl Carried {
    /// The descriptors of the listener of `kind` at `addr` or `path`, if the old udptee had it.
    pub fn claim(
        &mut self,
        kind: &str,
        addr: Option<SocketAddr>,
        path: Option<&std::path::Path>,
    ) -> Option<Vec<OwnedFd>> {
        let i = self
            .0
            .iter()
            .position(|(e, _)| e.serves(kind, addr, path))?;
        Some(self.0.remove(i).1)
    }
}

impl Drop for Carried {
    fn drop(&mut self) {
        for (e, _) in self.0.drain(..) {
            tracing::warn!(kind = %e.kind, addr = ?e.addr, path = ?e.path,
                "takeover: the old udptee's listener is not in this configuration; closed here (it stops with the old udptee)");
        }
    }
}
