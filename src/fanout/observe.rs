//! Observers: copies of received datagrams for the recorder and for live taps, off the data path.
//!
//! An observer is a bounded byte ring (the same [`ByteRing`] a target's backlog uses) published in
//! the target table beside the targets. Workers copy each batch into every observer of the table they
//! loaded, under the ring's lock once per batch; what does not fit is counted `dropped` and forgotten,
//! so a slow disk or a slow tap reader never makes a worker wait. Each entry carries the datagram's
//! source and destination (address and port) in a fixed [`PEER_BYTES`] prefix before the payload; the
//! consumer (the recorder thread, or a tap's streaming task) decodes it with [`Observed::decode`].
#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::net::mmsg::RecvMeta;
use crate::pool::ring::{ByteRing, Entry};
use crate::pool::{BufId, BufPool};

/// The peer prefix of an entry: flags, two ports, two 16-byte addresses.
pub(crate) const PEER_BYTES: usize = 40;

/// What a consumer sees of an observer.
pub(crate) struct Observer {
    /// "record" or "tap", for logs.
    pub(crate) kind: &'static str,
    ring: ByteRing,
    /// Datagrams offered by the workers.
    offered: AtomicU64,
    /// Datagrams that did not fit (the consumer fell behind).
    dropped: AtomicU64,
    /// The consumer's position in the ring.
    read_pos: std::sync::Mutex<u64>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("kind", &self.kind)
            .field("offered", &self.offered())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// One datagram read out of an observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observed<'a> {
    /// Sender address and port (`None` for an unnamed sender).
    pub(crate) src: Option<SocketAddr>,
    /// Destination address and port.
    pub(crate) dst: SocketAddr,
    /// Kernel receive time, ns since the Unix epoch (0 when the socket gave none).
    pub(crate) rx_nanos: u64,
    /// The datagram as received.
    pub(crate) payload: &'a [u8],
}

fn put_ip(out: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
}

fn get_ip(v6: bool, b: &[u8]) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[..16]);
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// Encodes the peer prefix. Flags: bit 0 source present, bit 1 source IPv6, bit 2 destination IPv6.
pub(crate) fn encode_peer(src: Option<SocketAddr>, dst: SocketAddr) -> [u8; PEER_BYTES] {
    let mut p = [0u8; PEER_BYTES];
    let mut flags = 0u8;
    if let Some(s) = src {
        flags |= 1;
        if s.is_ipv6() {
            flags |= 2;
        }
        p[2..4].copy_from_slice(&s.port().to_be_bytes());
        put_ip(&mut p[8..24], s.ip());
    }
    if dst.is_ipv6() {
        flags |= 4;
    }
    p[0] = flags;
    p[4..6].copy_from_slice(&dst.port().to_be_bytes());
    put_ip(&mut p[24..40], dst.ip());
    p
}

impl<'a> Observed<'a> {
    /// Splits an entry's bytes into its peer prefix and payload; `None` if shorter than the prefix.
    pub(crate) fn decode(bytes: &'a [u8], rx_nanos: u64) -> Option<Self> {
        let (p, payload) = bytes.split_at_checked(PEER_BYTES)?;
        let flags = p[0];
        let src = (flags & 1 != 0).then(|| {
            SocketAddr::new(
                get_ip(flags & 2 != 0, &p[8..24]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        });
        let dst = SocketAddr::new(
            get_ip(flags & 4 != 0, &p[24..40]),
            u16::from_be_bytes([p[4], p[5]]),
        );
        Some(Self {
            src,
            dst,
            rx_nanos,
            payload,
        })
    }
}

impl Observer {
    /// An observer holding at most `bytes` of queued datagrams (each plus a small header).
    pub(crate) fn try_new(kind: &'static str, bytes: usize) -> Result<Self, String> {
        Ok(Self {
            kind,
            ring: ByteRing::try_new(bytes, usize::MAX)?,
            offered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            read_pos: std::sync::Mutex::new(0),
        })
    }

    /// Datagrams the workers offered.
    pub(crate) fn offered(&self) -> u64 {
        self.offered.load(Ordering::Relaxed)
    }

    /// Datagrams that did not fit.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Copies the datagrams of one batch that the worker forwards (`ready`: each slot with what the
    /// kernel said about it) into the ring. `local` is the listen address, the destination when the
    /// kernel did not say (a listener bound to one address). Worker side.
    pub(crate) fn push_batch<'m>(
        &self,
        pool: &BufPool,
        ready: impl Iterator<Item = (BufId, &'m RecvMeta)>,
        local: SocketAddr,
    ) {
        let (mut offered, mut dropped) = (0, 0);
        {
            let mut ring = self.ring.producer();
            for (id, m) in ready {
                offered += 1;
                let dst = SocketAddr::new(m.dst.unwrap_or(local.ip()), local.port());
                // A Unix sender has no address: its credentials stand in for one.
                let src = m.src.or_else(|| {
                    let cred = m.cred.map(crate::net::origin::cred_address)?;
                    Some(SocketAddr::new(cred.into(), 0))
                });
                let peer = encode_peer(src, dst);
                if !ring.push_slot_with(&peer, pool, id) {
                    dropped += 1;
                }
            }
        }
        self.offered.fetch_add(offered, Ordering::Relaxed);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Hands up to `max` (at most [`DRAIN_MAX`]) queued datagrams, oldest first, to `f`, then frees
    /// them; returns how many. Consumer side: the position lock makes a second consumer wait, never
    /// read what the first is reading.
    pub(crate) fn drain(&self, max: usize, mut f: impl FnMut(&Observed<'_>)) -> usize {
        let mut pos = self.read_pos.lock().unwrap_or_else(|p| p.into_inner());
        let mut entries = [Entry::default(); DRAIN_MAX];
        let n = self.ring.peek(*pos, &mut entries[..max.min(DRAIN_MAX)]);
        for e in &entries[..n] {
            // SAFETY: `e` was peeked from this ring just now and is consumed only below, by us, the
            // one consumer (we hold the position lock).
            let bytes = unsafe { self.ring.payload(e) };
            if let Some(o) = Observed::decode(bytes, e.rx_nanos) {
                f(&o);
            }
        }
        if n > 0 {
            *pos = entries[n - 1].next;
            self.ring.consume(*pos, n);
        }
        n
    }
}

/// Most datagrams one [`Observer::drain`] hands over.
pub(crate) const DRAIN_MAX: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_round_trip_in_both_families() {
        let cases = [
            (Some("10.1.2.3:5000".parse().unwrap()), "127.0.0.1:8125"),
            (Some("[2001:db8::7]:65535".parse().unwrap()), "[::1]:8125"),
            (None, "0.0.0.0:1"),
            (
                Some("[::ffff:10.0.0.1]:9".parse().unwrap()),
                "10.0.0.2:8125",
            ),
        ];
        for (src, dst) in cases {
            let dst: SocketAddr = dst.parse().unwrap();
            let mut bytes = encode_peer(src, dst).to_vec();
            bytes.extend_from_slice(b"a:1|c");
            let o = Observed::decode(&bytes, 42).unwrap();
            assert_eq!(
                (o.src, o.dst, o.payload, o.rx_nanos),
                (src, dst, &b"a:1|c"[..], 42)
            );
        }
        assert!(Observed::decode(&[0; 39], 0).is_none(), "short is refused");
    }

    #[test]
    fn a_full_observer_counts_instead_of_waiting() {
        let obs = Observer::try_new("tap", 256).unwrap();
        let pool = BufPool::new(8, 64);
        let ids: Vec<BufId> = (0..6).map(|_| pool.try_take().unwrap()).collect();
        for &id in &ids {
            pool.set_meta(id, 40, 1);
        }
        let meta = vec![
            RecvMeta {
                len: 40,
                src: Some("127.0.0.1:9".parse().unwrap()),
                ..RecvMeta::default()
            };
            6
        ];
        let local: SocketAddr = "127.0.0.1:8125".parse().unwrap();
        obs.push_batch(&pool, ids.iter().copied().zip(&meta), local);
        // 40 + 40 + 16 = 96 bytes an entry: two fit in 256.
        assert_eq!((obs.offered(), obs.dropped()), (6, 4));
        let mut seen = Vec::new();
        assert_eq!(obs.drain(8, |o| seen.push((o.dst, o.payload.len()))), 2);
        assert_eq!(seen, vec![(local, 40); 2]);
        assert!(obs.is_empty(), "drained is freed");
    }
}
