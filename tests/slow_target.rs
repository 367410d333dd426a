//! A genuinely slow target: reached through a veth pair whose egress is rate-limited (tc tbf) to
//! 1 Mbit/s, in two network namespaces this test creates and deletes. udptee's socket to it backs up,
//! so inline sends get EAGAIN, its sender thread blocks, its queue fills and its copies are dropped as
//! `queue_full`, while the fast target on loopback gets every datagram, in order. Everything is
//! accounted for exactly. Needs root and iproute2 (`ip`, `tc`); skipped, with the reason, without them.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use udptee::DropReason;
use util::netns::Net;
use util::*;

#[test]
fn a_rate_limited_target_fills_only_its_own_queue() {
    let ns = match Net::new(7) {
        Ok(ns) => ns,
        Err(e) => {
            skip(&format!("skipped: cannot build the test network: {e}"));
            return;
        }
    };
    // A deep qdisc (it never drops here): packets wait in it, holding udptee's socket send buffer.
    ns.qdisc(&["tbf", "rate", "1mbit", "burst", "4kb", "latency", "60s"])
        .unwrap();
    let far_ip: std::net::IpAddr = ns.far_ip.parse().unwrap();
    let slow = Net::within(&ns.far, move || {
        let s = udp_socket(SocketAddr::new(far_ip, 0), 8 << 20);
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    });
    let slow_addr: SocketAddr = slow.local_addr().unwrap();
    let result = Net::within(&ns.near.clone(), move || {
        const COUNT: usize = 3000;
        let fast = Sink::new(false);
        // The byte budget is the bound that fills: 8 KiB holds 68 of these 100-byte copies (120
        // bytes each in the ring), far fewer than the 4096 the datagram bound allows.
        let fwd = forwarder(false, &[fast.addr, slow_addr], |c| {
            c.queue_depth = 4096;
            c.queue_bytes = 8 << 10;
            c.sndbuf_bytes = Some(16 << 10);
            c.drain_timeout = Duration::from_millis(500);
        });
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = send_paced(&fwd, &client, 0, (0..COUNT).map(|_| 100), 250, &[&fast]);
        let snap = fwd.shutdown();
        (sent, snap, fast.finish().0)
    });
    let (sent, snap, fast_seen) = result;
    eprintln!("{snap}");

    assert!(
        fast_seen == sent,
        "the fast target got every datagram, in order, while the slow one backed up"
    );
    assert_eq!(
        snap.dropped_total(0),
        0,
        "the fast target lost nothing:\n{snap}"
    );
    let queue_full = snap.dropped(1, DropReason::QueueFull);
    assert!(
        queue_full > 0,
        "the rate-limited target's byte budget filled and its copies were dropped:\n{snap}"
    );
    assert_eq!(
        snap.pool_exhausted(),
        0,
        "a slow target never holds receive slots, so the pool never runs dry"
    );
    assert_accounted(&snap);

    // What udptee forwarded to the slow target still trickles through the qdisc: all of it arrives.
    let forwarded = snap.targets[1].forwarded;
    let mut delivered = 0;
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while delivered < forwarded && start.elapsed() < PATIENCE {
        if slow.recv(&mut buf).is_ok() {
            delivered += 1;
        }
    }
    assert_eq!(
        delivered, forwarded,
        "every copy udptee counted as forwarded reached the slow target"
    );
    assert_eq!(
        forwarded + queue_full + snap.dropped(1, DropReason::DrainTimeout),
        sent.len() as u64,
        "{snap}"
    );
    drop(ns);
}
