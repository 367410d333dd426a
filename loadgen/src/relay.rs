//! The baseline relay: the simplest single-thread `recvmmsg` -> `sendmmsg`-per-target loop, no queues,
//! no pool beyond one batch. It is the kernel-bound reference udptee is measured against, and, with
//! `--drop-every N`, a deliberately lossy forwarder for testing that the bench reports loss exactly.
//!
//! It uses udptee's own batch I/O and socket setup, so the comparison isolates the design (queues,
//! threads, shared slots), not the syscall wrappers. A slow target stalls everything: that is the point.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use serde::Serialize;
use udptee::net::mmsg::{MmsgRecv, MmsgSend, RecvMeta};
use udptee::pool::{BufId, BufPool};

/// What to relay.
#[derive(Debug, Clone)]
pub struct RelayOpts {
    /// Listen address.
    pub listen: SocketAddr,
    /// Targets.
    pub targets: Vec<SocketAddr>,
    /// Datagrams per syscall.
    pub batch: usize,
    /// Receive buffer.
    pub rcvbuf: usize,
    /// Drop every Nth datagram (1-based: N, 2N, ...); 0 drops nothing.
    pub drop_every: u64,
}

/// What the relay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayReport {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams dropped on purpose.
    pub dropped_on_purpose: u64,
    /// Copies sent, over all targets.
    pub sent: u64,
    /// Copies refused by the kernel.
    pub send_errors: u64,
    /// Kernel drops on the listen socket.
    pub kernel_drops: u64,
}

/// Relays until `stop` is set.
pub fn run(o: &RelayOpts, stop: &AtomicBool) -> Result<RelayReport> {
    anyhow::ensure!((1..=1024).contains(&o.batch), "--batch must be 1 to 1024");
    let (mut sockets, _, _) =
        udptee::net::socket::bind_reuseport_group(o.listen, 1, o.rcvbuf, false)
            .with_context(|| format!("binding {}", o.listen))?;
    let socket = sockets.pop().context("no socket")?;
    let targets = o
        .targets
        .iter()
        .map(|t| {
            udptee::net::socket::connect_target(*t, None)
                .with_context(|| format!("connecting to {t}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let pool = BufPool::new(o.batch, 65536);
    let ids: Vec<BufId> = std::iter::from_fn(|| pool.try_take()).collect();
    let mut keep: Vec<BufId> = Vec::with_capacity(o.batch);
    let mut recv = MmsgRecv::new(o.batch);
    let mut send = MmsgSend::new(o.batch);
    let mut meta = vec![RecvMeta::default(); o.batch];
    let mut r = RelayReport::default();
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = recv.recv_batch(socket.as_fd(), &pool, &ids, &mut meta) else {
            continue;
        };
        keep.clear();
        for (&id, m) in ids.iter().zip(&meta[..n]) {
            r.received += 1;
            if o.drop_every > 0 && r.received % o.drop_every == 0 {
                r.dropped_on_purpose += 1;
                continue;
            }
            pool.set_meta(id, m.len, 0);
            keep.push(id);
        }
        for target in &targets {
            let mut at = 0;
            while at < keep.len() {
                match send.send_batch(target.as_fd(), &pool, &keep[at..]) {
                    Ok(k) => {
                        r.sent += k as u64;
                        at += k.max(1);
                    }
                    Err(_) => {
                        r.send_errors += 1;
                        at += 1;
                    }
                }
            }
        }
    }
    r.kernel_drops = udptee::socket_drops(&socket).unwrap_or(0);
    Ok(r)
}
