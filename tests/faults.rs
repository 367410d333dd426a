//! The fault suite: what a real network does to a target's path, in network namespaces the tests
//! create (`util::netns`). A lossy, slow link (tc netem), a host that becomes unreachable (a route
//! replaced by `unreachable`, then removed: EHOSTUNREACH, then ENETUNREACH), a small MTU, and a
//! second SIGTERM while a slow target drains. In each, the local target gets everything, every copy
//! is accounted for by reason, and udptee says what it could and could not see. Needs root and
//! iproute2; each test prints why it skips without them.

mod util;

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udptee::DropReason;
use udptee::metrics::counters::SendErrorKind;
use util::netns::{self, Net};
use util::*;

fn net_or_skip(tag: u8) -> Option<Net> {
    match Net::new(tag) {
        Ok(n) => Some(n),
        Err(e) => {
            skip(&format!("skipped: {e}"));
            None
        }
    }
}

/// A sink in `far` on `ip`, reading into a large buffer.
fn far_sink(net: &Net, ip: &str) -> Sink {
    let ip: std::net::IpAddr = ip.parse().unwrap();
    Net::within(&net.far, move || Sink::at(SocketAddr::new(ip, 0)))
}

/// Loss and delay on the path to a remote target. netem does both where the kernel has it
/// (CONFIG_NET_SCH_NETEM); elsewhere (this project's CI kernel) loss is an nftables rule on the far
/// host dropping a random 10% and delay is a 20 Mbit/s tbf queue.
#[test]
fn loss_and_delay_on_the_path_are_outside_udptee() {
    let Some(net) = net_or_skip(11) else { return };
    if net
        .qdisc(&["netem", "delay", "20ms", "loss", "10%", "limit", "100000"])
        .is_err()
    {
        // On far's input: lost on the wire, as on a real lossy link (a drop in near's output hook
        // would be reported to the sender as EPERM instead).
        let nft = |rule: &str| netns::run(&["ip", "netns", "exec", &net.far, "nft", rule]);
        let loss = nft("add table inet faults")
            .and_then(|()| nft("add chain inet faults in { type filter hook input priority 0; }"))
            .and_then(|()| {
                nft(&format!(
                    "add rule inet faults in ip daddr {} numgen random mod 10 < 1 drop",
                    net.far_ip
                ))
            });
        if let Err(e) = loss {
            skip_witness(&format!(
                "skipped: neither netem nor nftables can drop packets here: {e}"
            ));
            return;
        }
        net.qdisc(&["tbf", "rate", "20mbit", "burst", "8kb", "latency", "10s"])
            .unwrap();
    }
    let far = far_sink(&net, &net.far_ip);
    let far_addr = far.addr;
    let near = net.near.clone();
    let (snap, sent, fast_seen) = Net::within(&near, move || {
        let fast = Sink::new(false);
        let fwd = forwarder(false, &[fast.addr, far_addr], |_| {});
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = send_paced(
            &fwd,
            &client,
            0,
            (0..2000).map(|i| 10 + i % 1000),
            200,
            &[&fast],
        );
        wait_for(&fwd, "the remote target's copies to go out", || {
            fwd.snapshot().unaccounted(1) == 0
        });
        std::thread::sleep(Duration::from_millis(300)); // netem's 20 ms delay, with margin
        (fwd.shutdown(), sent, fast.finish().0)
    });
    assert!(
        fast_seen == sent,
        "the local target got everything, in order"
    );
    assert_eq!(
        snap.targets[1].forwarded, 2000,
        "udptee handed every copy to the kernel:\n{snap}"
    );
    assert_eq!(snap.dropped_total(1), 0, "{snap}");
    assert_eq!(
        snap.targets[1].receiver_drops, None,
        "a remote receiver cannot be seen: unknown, not zero"
    );
    assert_eq!(snap.targets[1].up, Some(true), "its sends met no error");
    let (far_seen, _) = far.finish();
    let got = far_seen.len();
    println!("the far host got {got} of 2000 through the lossy link");
    assert!(
        (1600..=1960).contains(&got),
        "netem lost about 10% on the wire, which only the receiver can see: {got} of 2000"
    );
    // udptee's own order is the local target's, checked above. The path may swap a few
    // neighbours: a veth hands each packet to the backlog of the CPU that sends it, and the queue
    // in front of it is drained from the sender's CPU or from its timer's, so with the suite
    // running on both cores two backlogs can race. Anything beyond that would be udptee's.
    let rank: std::collections::HashMap<_, usize> =
        sent.iter().enumerate().map(|(i, f)| (f, i)).collect();
    let behind = far_seen
        .windows(2)
        .filter(|w| rank[&w[1]] < rank[&w[0]])
        .count();
    assert!(
        behind * 100 <= got,
        "at most 1% out of order on the path: {behind} of {got}"
    );
    assert_accounted(&snap);
}

#[test]
fn an_unreachable_host_is_counted_by_reason_and_recovers() {
    let Some(net) = net_or_skip(12) else { return };
    // A far host address behind a route through far's veth address.
    net.ip(&net.far, &["addr", "add", "10.204.112.2/32", "dev", "lo"])
        .unwrap();
    net.ip(
        &net.near,
        &["route", "add", "10.204.112.0/24", "via", &net.far_ip],
    )
    .unwrap();
    let far = far_sink(&net, "10.204.112.2");
    let far_addr = far.addr;
    let near = net.near.clone();
    let ns = net.near.clone();
    let via = net.far_ip.clone();
    let (snap, sent, fast_seen, phases) = Net::within(&near, move || {
        let fast = Sink::new(false);
        let fwd = forwarder(false, &[fast.addr, far_addr], |_| {});
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let route = |args: &[&str]| {
            let mut all = vec!["ip", "-n", &ns, "route"];
            all.extend_from_slice(args);
            netns::run(&all).unwrap();
        };
        let mut sent = Vec::new();
        let mut phases = Vec::new();
        let mut phase = |fwd: &udptee::Forwarder, stream: u32, sent: &mut Vec<_>| {
            sent.extend(send_paced(
                fwd,
                &client,
                stream,
                (0..300).map(|_| 64),
                100,
                &[&fast],
            ));
            wait_for(fwd, "the remote copies to be handled", || {
                fwd.snapshot().unaccounted(1) == 0
            });
            phases.push(fwd.snapshot().targets[1].clone());
        };
        phase(&fwd, 0, &mut sent); // reachable
        route(&["replace", "unreachable", "10.204.112.0/24"]);
        phase(&fwd, 1, &mut sent); // EHOSTUNREACH
        route(&["del", "10.204.112.0/24"]);
        phase(&fwd, 2, &mut sent); // ENETUNREACH
        route(&["add", "10.204.112.0/24", "via", &via]);
        phase(&fwd, 3, &mut sent); // back
        std::thread::sleep(Duration::from_millis(100));
        (fwd.shutdown(), sent, fast.finish().0, phases)
    });
    assert!(fast_seen == sent, "the local target got all 1200, in order");
    assert_eq!(snap.dropped_total(0), 0);
    let unreachable = SendErrorKind::ALL
        .iter()
        .position(|k| *k == SendErrorKind::Unreachable)
        .unwrap();
    let delta = |i: usize, f: &dyn Fn(&udptee::metrics::counters::TargetSnapshot) -> u64| {
        f(&phases[i]) - if i == 0 { 0 } else { f(&phases[i - 1]) }
    };
    assert_eq!(delta(0, &|s| s.forwarded), 300, "reachable: all sent");
    for (i, what) in [(1, "EHOSTUNREACH"), (2, "ENETUNREACH")] {
        assert_eq!(
            delta(i, &|s| s.send_errors[unreachable]),
            300,
            "{what}: every copy counted as send_error/unreachable:\n{snap}"
        );
        assert_eq!(
            delta(i, &|s| s.forwarded),
            0,
            "{what}: nothing claimed as forwarded"
        );
    }
    assert_eq!(
        delta(3, &|s| s.forwarded),
        300,
        "the route is back: all sent again"
    );
    assert_eq!(snap.dropped(1, DropReason::SendError), 600);
    let (far_seen, _) = far.finish();
    assert_eq!(
        far_seen.len(),
        600,
        "the far host got the reachable phases' copies"
    );
    assert_accounted(&snap);
}

#[test]
fn a_small_mtu_path_gets_whole_datagrams() {
    let Some(net) = net_or_skip(13) else { return };
    net.ip(&net.near, &["link", "set", &net.near_dev, "mtu", "576"])
        .unwrap();
    net.ip(&net.far, &["link", "set", &net.far_dev, "mtu", "576"])
        .unwrap();
    let far = far_sink(&net, &net.far_ip);
    let far_addr = far.addr;
    let sizes = [0usize, 100, 548, 549, 576, 1400, 8000, 30000, 65507];
    let (snap, sent) = Net::within(&net.near.clone(), move || {
        let fwd = forwarder(false, &[far_addr], |c| c.max_datagram = 65535);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = Vec::new();
        for (seq, size) in sizes.iter().enumerate() {
            let p = payload(0, seq as u32, *size);
            client.send_to(&p, fwd.local_addr()).unwrap();
            sent.push(fingerprint(&p));
        }
        wait_for(&fwd, "all to be sent", || {
            let s = fwd.snapshot();
            s.received() == sizes.len() as u64 && s.unaccounted(0) == 0
        });
        std::thread::sleep(Duration::from_millis(200));
        (fwd.shutdown(), sent)
    });
    let (seen, _) = far.finish();
    assert!(
        seen == sent,
        "every size up to the UDP maximum crossed a 576-byte MTU whole (fragmented by the kernel): {seen:?}\n{snap}"
    );
    assert_eq!(snap.dropped_total(0), 0, "{snap}");
}

/// A second SIGTERM while a slow target drains exits at once with status 1, writing the accounting so
/// far, instead of waiting out a long --drain-timeout.
#[test]
fn a_second_sigterm_during_the_drain_exits_at_once() {
    let Some(net) = net_or_skip(14) else { return };
    net.qdisc(&["tbf", "rate", "1mbit", "burst", "4kb", "latency", "60s"])
        .unwrap();
    let far = far_sink(&net, &net.far_ip);
    let listen = SocketAddr::from(([127, 0, 0, 1], 8125));
    let mut child = Command::new("ip")
        .args(["netns", "exec", &net.near, env!("CARGO_BIN_EXE_udptee")])
        .args([
            "--listen",
            &listen.to_string(),
            "--to",
            &format!("slow={}", far.addr),
            "--admin",
            "off",
            "--queue-bytes",
            "16MiB",
            "--queue-depth",
            "100000",
            "--sndbuf",
            "64KiB",
            "--drain-timeout",
            "120s",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        })
    };
    let has = |s: &str| log.lock().unwrap().contains(s);
    wait_until("udptee to start", Duration::from_secs(10), || {
        has("udptee forwarding")
    });
    // 3 MB through a 1 Mbit/s link: about 24 s of backlog.
    Net::within(&net.near.clone(), move || {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3000u32 {
            let mut p = vec![0u8; 1000];
            p[..4].copy_from_slice(&i.to_be_bytes());
            client.send_to(&p, listen).unwrap();
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "-TERM");
    wait_until("the drain to begin", Duration::from_secs(5), || {
        has("draining queues")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still draining the slow target"
    );
    let second = Instant::now();
    signal(&child, "-TERM");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(second.elapsed() < Duration::from_secs(3), "exits at once");
        std::thread::sleep(Duration::from_millis(10));
    };
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("second signal"), "{log}");
    let at_exit = log
        .lines()
        .find(|l| l.contains("at exit: target slow"))
        .unwrap_or_else(|| panic!("the accounting so far: {log}"));
    let queued_at_exit = at_exit
        .split("unaccounted ")
        .nth(1)
        .and_then(|v| v.split(';').next()?.trim().parse::<u64>().ok())
        .unwrap();
    assert!(
        queued_at_exit > 0,
        "it left with copies still queued, and says how many: {at_exit}"
    );
    assert!(log.contains("at exit: received 3000 datagrams"), "{log}");
    let _ = far.finish();
}
