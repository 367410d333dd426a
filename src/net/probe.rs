//! The receive backend's choice, made once at start-up: `--io auto|uring|mmsg` against what this
//! kernel allows (io_uring may be refused: old kernels, seccomp, `kernel.io_uring_disabled`), with
//! the fallback logged once, as quinn-udp does with its capabilities.

use std::net::UdpSocket;

use super::IoBackend;
use super::uring::UringRecv;

/// Whether `--io auto` uses io_uring when the kernel allows it. Measured side by side on Linux 6.18
/// (docs/performance.md, "Receive backends"): io_uring multishot recvmsg cost 3-5% more CPU per
/// datagram than recvmmsg, so auto prefers recvmmsg. It still probes io_uring, so the log says
/// whether `--io uring` would work here.
const AUTO_PREFERS_URING: bool = false;

/// Decides the receive backend once, at start-up, and sets up one io_uring per worker socket when it
/// is io_uring. Returns no rings for recvmmsg. `auto` logs its choice and why once; `uring` fails
/// with the reason instead (`unix`: a unixgram listener, which only recvmmsg serves).
pub fn choose_backend(
    io: IoBackend,
    unix: bool,
    batch: usize,
    sockets: &[UdpSocket],
) -> Result<Vec<UringRecv>, String> {
    if unix {
        if io == IoBackend::Uring {
            return Err("a unixgram listener receives with recvmmsg only".into());
        }
        return Ok(Vec::new());
    }
    let required = match io {
        IoBackend::Mmsg => return Ok(Vec::new()),
        IoBackend::Auto => false,
        IoBackend::Uring => true,
    };
    let usable = super::uring::probe();
    if let (Ok(()), false, false) = (&usable, required, AUTO_PREFERS_URING) {
        tracing::info!(
            "io_uring works here, but recvmmsg measured faster (docs/performance.md); receiving with recvmmsg (--io uring to override)"
        );
        return Ok(Vec::new());
    }
    let rings = usable.and_then(|()| {
        sockets
            .iter()
            .map(|s| {
                UringRecv::new(s, super::uring::ring_entries(batch))
                    .map_err(|e| format!("io_uring setup: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()
    });
    match rings {
        Ok(rings) => Ok(rings),
        Err(reason) if required => Err(reason),
        Err(reason) => {
            tracing::info!(%reason, "io_uring unavailable; receiving with recvmmsg");
            Ok(Vec::new())
        }
    }
}
