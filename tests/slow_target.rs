//! A genuinely slow target: reached through a veth pair whose egress is rate-limited (tc tbf) to
//! 1 Mbit/s, in two network namespaces this test creates and deletes. udptee's socket to it backs up,
//! so inline sends get EAGAIN, its sender thread blocks, its queue fills and its copies are dropped as
//! `queue_full`, while the fast target on loopback gets every datagram, in order. Everything is
//! accounted for exactly. Needs root and iproute2 (`ip`, `tc`); skipped, with the reason, without them.

mod util;

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use udptee::DropReason;
use util::*;

/// The two namespaces; deleted on drop, whatever the test did.
struct Namespaces {
    near: String,
    far: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.near, &self.far] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// near (udptee, client, fast sink on its loopback) --veth, 1 Mbit/s egress--> far (slow sink).
fn set_up() -> Result<Namespaces, String> {
    let id = std::process::id();
    let ns = Namespaces {
        near: format!("udptee-near-{id}"),
        far: format!("udptee-far-{id}"),
    };
    let (near, far) = (ns.near.as_str(), ns.far.as_str());
    let (va, vb) = (format!("ut{id}a"), format!("ut{id}b"));
    run(&["ip", "netns", "add", near])?;
    run(&["ip", "netns", "add", far])?;
    run(&[
        "ip", "link", "add", &va, "netns", near, "type", "veth", "peer", "name", &vb, "netns", far,
    ])?;
    run(&["ip", "-n", near, "link", "set", "lo", "up"])?;
    run(&["ip", "-n", far, "link", "set", "lo", "up"])?;
    run(&["ip", "-n", near, "addr", "add", "10.203.7.1/30", "dev", &va])?;
    run(&["ip", "-n", far, "addr", "add", "10.203.7.2/30", "dev", &vb])?;
    run(&["ip", "-n", near, "link", "set", &va, "up"])?;
    run(&["ip", "-n", far, "link", "set", &vb, "up"])?;
    // A deep qdisc (it never drops here): packets wait in it, holding udptee's socket send buffer.
    run(&[
        "tc", "-n", near, "qdisc", "add", "dev", &va, "root", "tbf", "rate", "1mbit", "burst",
        "4kb", "latency", "60s",
    ])?;
    Ok(ns)
}

fn enter(ns: &str) -> Result<(), String> {
    let f =
        File::open(format!("/var/run/netns/{ns}")).map_err(|e| format!("open netns {ns}: {e}"))?;
    setns(f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {ns}: {e}"))
}

#[test]
fn a_rate_limited_target_fills_only_its_own_queue() {
    let is_root = procfs::process::Process::myself()
        .and_then(|p| p.uid())
        .is_ok_and(|uid| uid == 0);
    if !is_root {
        eprintln!("skipped: creating network namespaces needs root");
        return;
    }
    let ns = match set_up() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipped: cannot build the test network: {e}");
            return;
        }
    };
    let (near, far) = (ns.near.clone(), ns.far.clone());
    // setns changes only the calling thread's namespace; sockets keep the namespace they were made in.
    let slow = std::thread::spawn(move || {
        enter(&far).unwrap();
        let s = udp_socket("10.203.7.2:0".parse().unwrap(), 8 << 20);
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    })
    .join()
    .unwrap();
    let slow_addr: SocketAddr = slow.local_addr().unwrap();
    let result = std::thread::spawn(move || {
        enter(&near).unwrap();
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
    })
    .join()
    .unwrap();
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
