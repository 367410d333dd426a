//! The kernel fast path (`--fast-path`), in network namespaces the tests create (`util::netns`):
//! `near` runs udptee with local targets on lo and on its veth address, `far` is a remote host that
//! sends over the veth and holds a target served from user space. Needs root, iproute2 and a kernel
//! that lets us load BPF; each test says why it skips otherwise.

mod util;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use udptee::config::{Config, IoBackend, TargetSpec};
use udptee::fastpath::{FastPath, Mode};
use udptee::{Forwarder, Snapshot};
use util::netns::{self, Net};
use util::{Sink, fingerprint, payload, skip, skip_witness};

/// A namespace pair with IPv6 on the veth too, where BPF can be loaded; `None` (said why) otherwise.
fn net_or_skip(tag: u8) -> Option<Net> {
    let net = match Net::new(tag) {
        Ok(n) => n,
        Err(e) => {
            skip(&format!("skipping: {e}"));
            return None;
        }
    };
    for (ns, dev, ip) in [
        (&net.near, &net.near_dev, v6_of(tag, 1)),
        (&net.far, &net.far_dev, v6_of(tag, 2)),
    ] {
        net.ip(
            ns,
            &["addr", "add", &format!("{ip}/64"), "dev", dev, "nodad"],
        )
        .expect("an IPv6 address on the veth");
    }
    let probe = Net::within(&net.near, || {
        FastPath::start(Mode::On, Some("127.0.0.1:9".parse().unwrap()), &[], &[]).map(|_| ())
    });
    if let Err(e) = probe {
        skip(&format!(
            "skipping: the kernel fast path cannot load here: {e}"
        ));
        return None;
    }
    Some(net)
}

fn v6_of(tag: u8, host: u8) -> String {
    format!("fd00:204:{tag}::{host}")
}

/// Starts a forwarder inside `ns` (its threads, sockets and BPF program live there).
fn forwarder_in(ns: &str, listen: SocketAddr, targets: Vec<TargetSpec>) -> Forwarder {
    forwarder_on(ns, listen, targets, IoBackend::Mmsg)
}

/// [`forwarder_in`] on receive backend `io`.
fn forwarder_on(
    ns: &str,
    listen: SocketAddr,
    targets: Vec<TargetSpec>,
    io: IoBackend,
) -> Forwarder {
    Net::within(ns, move || {
        let mut config = Config::new(listen, targets);
        config.io_backend = io;
        config.fast_path = Mode::On;
        config.max_datagram = 65_535;
        config.stats_interval = Duration::ZERO;
        config.rcvbuf_bytes = 32 << 20;
        Forwarder::start(&config).expect("the forwarder starts with --fast-path on")
    })
}

fn sink_in(ns: &str, addr: SocketAddr) -> Sink {
    Net::within(ns, move || Sink::with_rcvbuf(addr, 64 << 20))
}

fn socket_in(ns: &str, addr: SocketAddr) -> UdpSocket {
    Net::within(ns, move || UdpSocket::bind(addr).unwrap())
}

fn wait_until(what: &str, snap: impl Fn() -> String, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}:\n{}",
            snap()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn target(name: &str, addr: SocketAddr) -> TargetSpec {
    let mut t = TargetSpec::new(name, addr);
    t.queue_bytes = 16 << 20;
    t
}

fn sorted(mut v: Vec<(usize, u64)>) -> Vec<(usize, u64)> {
    v.sort_unstable();
    v
}

fn counters_of<'a>(
    snap: &'a Snapshot,
    name: &str,
) -> &'a udptee::metrics::counters::TargetSnapshot {
    &snap.targets[snap.index_of(name).expect("the target is reported")]
}

/// Every datagram, 1 to 65,507 bytes, from a client on lo and one over the veth, reaches each of two
/// kernel targets (on lo and on the veth address) and a user-space target on the far host exactly
/// once and byte for byte; the counters equal what each received, and fragments went up counted.
fn byte_exact(v6: bool, tag: u8, io: IoBackend) {
    let Some(net) = net_or_skip(tag) else { return };
    let near_ip: std::net::IpAddr = if v6 {
        v6_of(tag, 1).parse().unwrap()
    } else {
        net.near_ip.parse().unwrap()
    };
    let far_ip: std::net::IpAddr = if v6 {
        v6_of(tag, 2).parse().unwrap()
    } else {
        net.far_ip.parse().unwrap()
    };
    let lo = util::loopback(v6);
    let k_lo = sink_in(&net.near, lo);
    let k_dev = sink_in(&net.near, SocketAddr::new(near_ip, 0));
    let user = sink_in(&net.far, SocketAddr::new(far_ip, 0));
    let wildcard: SocketAddr = if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap();
    let fwd = forwarder_on(
        &net.near,
        wildcard,
        vec![
            target("k_lo", k_lo.addr),
            target("k_dev", k_dev.addr),
            target("user", user.addr),
        ],
        io,
    );
    let reg = fwd.registry();
    assert_eq!(
        ["k_lo", "k_dev", "user"].map(|n| reg.path_of(n)),
        ["kernel", "kernel", "user"],
        "local targets without line settings go to the kernel, a remote one stays in user space"
    );
    let port = fwd.local_addr().port();
    let c_lo = socket_in(&net.near, SocketAddr::new(lo.ip(), 0));
    let c_far = socket_in(&net.far, SocketAddr::new(far_ip, 0));
    let sizes = [
        1usize, 2, 7, 8, 64, 512, 1232, 1400, 1472, 1473, 3000, 9000, 16_384, 32_768, 65_507,
    ];
    let sinks = [&k_lo, &k_dev, &user];
    let mut sent = Vec::new();
    for round in 0..12u32 {
        for (i, &size) in sizes.iter().enumerate() {
            let seq = round * 100 + i as u32;
            for (stream, (c, to)) in [
                (&c_lo, SocketAddr::new(lo.ip(), port)),
                (&c_far, SocketAddr::new(near_ip, port)),
            ]
            .into_iter()
            .enumerate()
            {
                let p = payload(stream as u32, seq, size);
                c.send_to(&p, to).unwrap();
                sent.push(fingerprint(&p));
            }
        }
        let n = sent.len();
        wait_until(
            "a round to reach every target",
            || fwd.snapshot().to_string(),
            || sinks.iter().all(|s| s.received() >= n),
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    let snap = fwd.shutdown();
    util::assert_accounted(&snap);
    let k = snap
        .kernel
        .clone()
        .expect("the kernel path reports its counters");
    for (name, sink) in [("k_lo", k_lo), ("k_dev", k_dev), ("user", user)] {
        let t = counters_of(&snap, name).clone();
        let (seen, _) = sink.finish();
        assert_eq!(
            seen.len(),
            sent.len(),
            "{name}: every datagram exactly once\n{snap}"
        );
        assert!(
            sorted(seen) == sorted(sent.clone()),
            "{name}: byte for byte"
        );
        assert_eq!(
            t.forwarded,
            sent.len() as u64,
            "{name}: forwarded is what it received\n{snap}"
        );
        if name == "user" {
            assert_eq!(t.kernel_forwarded, 0, "{name}: served from user space");
        } else {
            assert!(
                t.kernel_forwarded > sent.len() as u64 / 2,
                "{name}: most copies made in the kernel\n{snap}"
            );
        }
    }
    let fragments = k.passed.iter().find(|(r, _)| *r == "fragment").unwrap().1;
    // Datagrams over the MTU arrive fragmented (the veth's 1500, lo's 65,536): 12 rounds of those.
    let headers = if v6 { 48 } else { 28 };
    let big = sizes
        .iter()
        .map(|&s| u64::from(s + headers > 1500) + u64::from(s + headers > 65_536))
        .sum::<u64>()
        * 12;
    assert_eq!(
        fragments, big,
        "each fragmented datagram went to user space, counted once\n{snap}"
    );
    assert!(k.handled > 0 && k.consumed == 0, "{k:?}");
}

#[test]
fn kernel_copies_are_byte_exact_over_ipv4_on_lo_and_veth() {
    byte_exact(false, 41, IoBackend::Mmsg);
}

#[test]
fn kernel_copies_are_byte_exact_over_ipv6_on_lo_and_veth() {
    byte_exact(true, 42, IoBackend::Mmsg);
}

/// The marks reach the workers through io_uring's recvmsg as through recvmmsg.
#[test]
fn kernel_copies_are_byte_exact_with_io_uring() {
    if !util::backends().contains(&IoBackend::Uring) {
        return; // backends() said why
    }
    byte_exact(false, 48, IoBackend::Uring);
}

/// Under steady load, a target moved from the kernel to user space and back (parity turned on and
/// off: a setting the kernel path does not do) gets every datagram exactly once. (Around a move the
/// order may change: copies made in the kernel can overtake those still queued in user space.)
#[test]
fn a_target_moving_between_paths_under_load_loses_and_repeats_nothing() {
    let Some(net) = net_or_skip(43) else { return };
    let moving = sink_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let steady = sink_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let fwd = forwarder_in(
        &net.near,
        "127.0.0.1:0".parse().unwrap(),
        vec![target("moving", moving.addr), target("steady", steady.addr)],
    );
    let to = fwd.local_addr();
    let client = socket_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut seq = 0u32;
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // ~20k/s in bursts of 20 per ms.
                for _ in 0..20 {
                    client.send_to(&payload(0, seq, 64), to).unwrap();
                    seq += 1;
                }
                let due = Duration::from_micros(u64::from(seq) * 50);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            seq
        })
    };
    let reg = Arc::clone(fwd.registry());
    let mut seen_paths = Vec::new();
    for _ in 0..4 {
        for parity in [true, false] {
            std::thread::sleep(Duration::from_millis(150));
            let mut spec = target("moving", moving.addr);
            spec.parity = parity;
            let r = Arc::clone(&reg);
            Net::within(&net.near, move || r.put(spec).map(|_| ())).expect("the change applies");
            seen_paths.push(reg.path_of("moving"));
        }
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    let total = sender.join().unwrap() as usize;
    wait_until(
        "the last datagrams",
        || fwd.snapshot().to_string(),
        || moving.received() >= total && steady.received() >= total,
    );
    std::thread::sleep(Duration::from_millis(100));
    let snap = fwd.shutdown();
    util::assert_accounted(&snap);
    assert_eq!(
        seen_paths,
        ["user", "kernel"].repeat(4),
        "parity moves the target to user space, and back"
    );
    for (name, sink) in [("moving", moving), ("steady", steady)] {
        let t = counters_of(&snap, name).clone();
        let (seen, _) = sink.finish();
        let mut count: HashMap<(usize, u64), usize> = HashMap::new();
        for f in &seen {
            *count.entry(*f).or_default() += 1;
        }
        let expected: Vec<_> = (0..total as u32)
            .map(|s| fingerprint(&payload(0, s, 64)))
            .collect();
        let missing = expected.iter().filter(|f| !count.contains_key(f)).count();
        let repeated = count.values().filter(|&&n| n > 1).count();
        assert_eq!(
            (missing, repeated, seen.len()),
            (0, 0, total),
            "{name}: no gap, no duplicate across 8 moves\n{snap}"
        );
        assert_eq!(t.forwarded, total as u64, "{name}: counted as received");
        assert!(
            t.kernel_forwarded > 0,
            "{name}: the kernel served part of it"
        );
    }
    let moved = counters_of(&snap, "moving");
    assert!(
        moved.kernel_forwarded < moved.forwarded,
        "and user space the rest\n{snap}"
    );
}

/// The udptee binary in `ns` with `args`, its stderr captured.
fn udptee_in(ns: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_udptee")])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("udptee starts")
}

/// The ids of the BPF links `pid` holds (its TCX attachments), from /proc/PID/fdinfo.
fn links_of(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("link_id:").map(|v| v.trim().to_owned()))
        })
        .collect()
}

/// Whether BPF link `id` still exists (`bpftool link show id ID`); `None` without bpftool.
fn link_exists(id: &str) -> Option<bool> {
    let out = std::process::Command::new("bpftool")
        .args(["link", "show", "id", id])
        .output()
        .ok()?;
    Some(out.status.success())
}

/// Kills the child at the end of a test, passed or not.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `n` datagrams to `to` from a fresh socket in `ns`, paced so no buffer overflows.
fn send_n(ns: &str, to: SocketAddr, n: u32, stream: u32) {
    Net::within(ns, move || {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        for seq in 0..n {
            c.send_to(&payload(stream, seq, 100), to).unwrap();
            if seq % 50 == 49 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
}

/// `kill -9` leaves nothing behind: the TCX link goes with the process, so nobody copies to the
/// targets any more; a new udptee then copies each datagram exactly once.
#[test]
fn kill_9_leaves_no_program_and_a_restart_copies_once() {
    let Some(net) = net_or_skip(44) else { return };
    let sink = sink_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let listen: SocketAddr = "127.0.0.1:18125".parse().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:18125",
        "--to",
        &sink.addr.to_string(),
        "--fast-path",
        "on",
        "--admin",
        "off",
        "--control-socket",
        "off",
    ];
    let mut first = Reap(udptee_in(&net.near, &args));
    let wait_copies = |want: usize| {
        let start = Instant::now();
        while sink.received() < want {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "copies did not arrive"
            );
            send_n(&net.near, listen, 1, 9);
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_copies(1);
    // `ip netns exec` runs udptee in place of itself: the same pid.
    let links = links_of(first.0.id());
    assert!(!links.is_empty(), "udptee attached by a BPF link (TCX)");
    netns::run(&["kill", "-9", &first.0.id().to_string()]).unwrap();
    first.0.wait().unwrap();
    for id in &links {
        if let Some(exists) = link_exists(id) {
            assert!(!exists, "link {id} went with the process");
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let before = sink.received();
    send_n(&net.near, listen, 200, 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sink.received(),
        before,
        "with udptee killed, nothing copies to its targets any more"
    );
    let mut second = Reap(udptee_in(&net.near, &args));
    wait_copies(before + 1);
    std::thread::sleep(Duration::from_millis(100));
    let base = sink.received();
    send_n(&net.near, listen, 1000, 2);
    std::thread::sleep(Duration::from_millis(300));
    let got = sink.received() - base;
    netns::run(&["kill", "-TERM", &second.0.id().to_string()]).unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(second.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(second.0.wait().unwrap().success(), "{log}");
    assert_eq!(
        got, 1000,
        "a restart copies each datagram once, not twice\n{log}"
    );
    assert!(
        log.contains("(kernel path: "),
        "the final accounting shows the kernel copies\n{log}"
    );
}

/// Without the privilege to load BPF, `on` refuses to start with one clear line, and `auto` says
/// why once and forwards from user space.
#[test]
fn without_privilege_on_refuses_and_auto_falls_back() {
    if !nix::unistd::Uid::effective().is_root()
        || std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
    {
        skip("skipping: needs root and setpriv to run udptee as an unprivileged user");
        return;
    }
    let sink = Sink::new(false);
    let listen = util::free_addr();
    let run = |mode: &str| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(env!("CARGO_BIN_EXE_udptee"))
            .args([
                "--listen",
                &listen.to_string(),
                "--to",
                &sink.addr.to_string(),
            ])
            .args([
                "--fast-path",
                mode,
                "--admin",
                "off",
                "--control-socket",
                "off",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = run("on").wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "on without privilege must not start: {err}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("--fast-path on"))
        .collect();
    assert_eq!(lines.len(), 1, "one clear line: {err}");
    assert!(
        lines[0].contains("CAP_BPF") || lines[0].contains("built without the kernel fast path"),
        "saying what it needs: {err}"
    );

    let child = run("auto");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = Instant::now();
    while sink.received() < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "auto did not forward"
        );
        client.send_to(b"auto", listen).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    netns::run(&["kill", "-TERM", &child.id().to_string()]).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("--fast-path auto: the kernel path is not available")
            .count(),
        1,
        "auto says why, once: {err}"
    );
}

/// Packets the program does not handle reach user space and are counted: fragments (served to the
/// kernel target by user space) and other protocols to the listen address. A target on the listen
/// port stays in user space; the listen address itself is refused as a loop.
#[test]
fn fragments_and_other_protocols_are_counted_and_the_listen_port_is_kept_out() {
    let Some(net) = net_or_skip(45) else { return };
    let k = sink_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let listen: SocketAddr = format!("{}:0", net.near_ip).parse().unwrap();
    let fwd = forwarder_in(&net.near, listen, vec![target("k", k.addr)]);
    let to = fwd.local_addr();
    // A target on another address but the listen port: valid, and never given to the kernel.
    let same_port: SocketAddr = format!("127.0.0.1:{}", to.port()).parse().unwrap();
    let same = sink_in(&net.near, same_port);
    let reg = Arc::clone(fwd.registry());
    let r = Arc::clone(&reg);
    Net::within(&net.near, move || {
        r.put(target("same", same_port)).map(|_| ())
    })
    .unwrap();
    assert_eq!((reg.path_of("k"), reg.path_of("same")), ("kernel", "user"));
    let r = Arc::clone(&reg);
    let looped = Net::within(&net.near, move || r.put(target("loop", to)).map(|_| ()));
    assert!(
        looped.is_err(),
        "the listen address itself is a loop and refused"
    );

    let far_ip: std::net::IpAddr = net.far_ip.parse().unwrap();
    let near_ip = to.ip();
    Net::within(&net.far, move || {
        let c = UdpSocket::bind(SocketAddr::new(far_ip, 0)).unwrap();
        for seq in 0..5 {
            c.send_to(&payload(0, seq, 4000), to).unwrap(); // over MTU 1500: fragmented
            c.send_to(&payload(1, seq, 100), to).unwrap();
        }
        let raw = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(253)),
        )
        .expect("a raw socket (root)");
        for _ in 0..3 {
            raw.send_to(b"not udp", &SocketAddr::new(near_ip, 0).into())
                .unwrap();
        }
    });
    wait_until(
        "ten datagrams at both targets",
        || fwd.snapshot().to_string(),
        || k.received() >= 10 && same.received() >= 10,
    );
    std::thread::sleep(Duration::from_millis(100));
    let snap = fwd.shutdown();
    util::assert_accounted(&snap);
    let kern = snap.kernel.clone().unwrap();
    let passed: HashMap<&str, u64> = kern.passed.iter().copied().collect();
    assert_eq!(passed["fragment"], 5, "{snap}");
    assert_eq!(passed["not_udp"], 3, "{snap}");
    let t = counters_of(&snap, "k");
    assert_eq!(
        (t.forwarded, t.kernel_forwarded),
        (10, 5),
        "fragments served by user space\n{snap}"
    );
    let (seen_k, _) = k.finish();
    let (seen_same, _) = same.finish();
    assert_eq!((seen_k.len(), seen_same.len()), (10, 10));
}

/// `--takeover` with the kernel path on both sides, under load, to a kernel target and a user-space
/// one: the old instance stops copying before it hands the sockets over (and says what the marks
/// already queued in them mean), the new one starts copying once the old one has stopped reading
/// them; each target gets every datagram exactly once.
#[test]
fn a_takeover_with_the_kernel_path_copies_each_datagram_once() {
    let Some(net) = net_or_skip(46) else { return };
    let k = sink_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let far_ip: std::net::IpAddr = net.far_ip.parse().unwrap();
    let u = sink_in(&net.far, SocketAddr::new(far_ip, 0));
    let dir = std::env::temp_dir().join(format!("udptee-fp-takeover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ctl = dir.join("control.sock");
    let listen: SocketAddr = "127.0.0.1:18126".parse().unwrap();
    let (k_to, u_to) = (format!("k={}", k.addr), format!("u={}", u.addr));
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--listen",
            "127.0.0.1:18126",
            "--to",
            &k_to,
            "--to",
            &u_to,
            "--fast-path",
            "on",
            "--admin",
            "off",
            "--control-socket",
            ctl.to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let old_args = args(&[]);
    let old = Reap(udptee_in(
        &net.near,
        &old_args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let start = Instant::now();
    while !ctl.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the control socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let stop = Arc::new(AtomicBool::new(false));
    let client = socket_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let sender = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut seq = 0u32;
            while !stop.load(Ordering::Relaxed) && seq < 20_000 {
                for _ in 0..20 {
                    client.send_to(&payload(0, seq, 64), listen).unwrap();
                    seq += 1;
                }
                std::thread::sleep(Duration::from_millis(4));
            }
            seq
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let new_args = args(&["--takeover"]);
    let mut new = Reap(udptee_in(
        &net.near,
        &new_args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let mut old = old;
    let status = old.0.wait().unwrap();
    assert!(status.success(), "the old udptee hands over and exits 0");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let total = sender.join().unwrap() as usize;
    wait_until(
        "every datagram at both targets",
        || format!("k {} u {} of {total}", k.received(), u.received()),
        || k.received() >= total && u.received() >= total,
    );
    std::thread::sleep(Duration::from_millis(300));
    netns::run(&["kill", "-TERM", &new.0.id().to_string()]).unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(new.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(new.0.wait().unwrap().success(), "{log}");
    for (name, sink) in [("k", k), ("u", u)] {
        let (seen, _) = sink.finish();
        let mut count: HashMap<(usize, u64), usize> = HashMap::new();
        for f in &seen {
            *count.entry(*f).or_default() += 1;
        }
        let missing = (0..total as u32)
            .filter(|&s| !count.contains_key(&fingerprint(&payload(0, s, 64))))
            .count();
        let repeated = count.values().filter(|&&n| n > 1).count();
        assert_eq!(
            (missing, repeated, seen.len()),
            (0, 0, total),
            "{name}: exactly once across the takeover\n{log}"
        );
    }
    assert!(
        log.contains("(kernel path: "),
        "the new one copied in the kernel once the old one was gone\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Hand-made IPv4 packets from the far host, as a property over a seeded mix: datagrams whose
/// lengths do not add up are left to the stack (which drops them) and counted `malformed`, never
/// copied; IP options go to user space, counted; valid ones, padded ones included, reach the kernel
/// target exactly once, as the stack would deliver them; the books balance.
#[test]
fn hand_made_packets_are_copied_only_when_the_stack_would_deliver_them() {
    let Some(net) = net_or_skip(47) else { return };
    let k = sink_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let listen: SocketAddr = format!("{}:0", net.near_ip).parse().unwrap();
    let fwd = forwarder_in(&net.near, listen, vec![target("k", k.addr)]);
    let to = fwd.local_addr();
    let (src, dst) = (
        net.far_ip.parse::<std::net::Ipv4Addr>().unwrap(),
        match to.ip() {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(_) => unreachable!(),
        },
    );
    let mut rng = fastrand::Rng::with_seed(0x75d7_ee15);
    let (mut expected, mut malformed, mut options) = (Vec::new(), 0u64, 0u64);
    let mut packets = Vec::new();
    for seq in 0..400u32 {
        let body = payload(3, seq, rng.usize(8..1200));
        let kind = rng.u8(0..5);
        let opts: &[u8] = if kind == 4 { &[1, 1, 1, 0] } else { &[] }; // NOP NOP NOP EOL
        let ulen: usize = match kind {
            1 => body.len() + 8 + rng.usize(1..100), // longer than the packet
            2 => rng.usize(0..8),                    // shorter than its own header
            3 => 8 + body.len() - rng.usize(1..8),   // shorter than the packet: padding
            _ => 8 + body.len(),
        };
        let mut p = vec![0x40 | (5 + opts.len() / 4) as u8, 0];
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 64, 17, 0, 0]); // length and checksum: the kernel's
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(opts);
        p.extend_from_slice(&4321u16.to_be_bytes());
        p.extend_from_slice(&to.port().to_be_bytes());
        p.extend_from_slice(&(ulen as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
        p.extend_from_slice(&body);
        match kind {
            1 | 2 => malformed += 1,
            3 => expected.push(fingerprint(&body[..ulen - 8])),
            4 => {
                options += 1;
                expected.push(fingerprint(&body));
            }
            _ => expected.push(fingerprint(&body)),
        }
        packets.push(p);
    }
    let want = expected.len();
    Net::within(&net.far, move || {
        let raw = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
        )
        .expect("a raw socket (root)");
        let dst: SocketAddr = SocketAddr::new(dst.into(), 0);
        for (i, p) in packets.iter().enumerate() {
            raw.send_to(p, &dst.into()).unwrap();
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    wait_until(
        "the deliverable datagrams",
        || fwd.snapshot().to_string(),
        || k.received() >= want,
    );
    std::thread::sleep(Duration::from_millis(200));
    let snap = fwd.shutdown();
    util::assert_accounted(&snap);
    let kern = snap.kernel.clone().unwrap();
    let passed: HashMap<&str, u64> = kern.passed.iter().copied().collect();
    assert_eq!(
        (passed["malformed"], passed["ip_options"]),
        (malformed, options),
        "{snap}"
    );
    let (seen, _) = k.finish();
    assert!(
        seen.len() == want && sorted(seen) == sorted(expected),
        "exactly what the stack delivers, once each\n{snap}"
    );
    assert_eq!(counters_of(&snap, "k").forwarded, want as u64, "{snap}");
    // With one target, every original the kernel served was its last copy: no worker saw those,
    // and the received bytes still count them.
    assert!(kern.consumed > 0 && kern.consumed_bytes > 0, "{kern:?}");
    assert_eq!(
        snap.received_bytes(),
        counters_of(&snap, "k").bytes,
        "received bytes include the originals the kernel consumed\n{snap}"
    );
}

/// A firewall rule that rewrites packet marks on the way in (here nftables in prerouting, as some
/// network plugins do) would make user space copy again what the kernel copied: udptee sees the
/// marks go missing, turns the kernel path off, and from then on each datagram arrives once.
#[test]
fn rewritten_marks_turn_the_kernel_path_off() {
    let Some(net) = net_or_skip(49) else { return };
    let k = sink_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let far_ip: std::net::IpAddr = net.far_ip.parse().unwrap();
    let u = sink_in(&net.far, SocketAddr::new(far_ip, 0));
    let fwd = forwarder_in(
        &net.near,
        "127.0.0.1:0".parse().unwrap(),
        vec![target("k", k.addr), target("u", u.addr)],
    );
    let to = fwd.local_addr();
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_witness("skipping: needs nft (nftables) for the mark-rewriting rule");
        return;
    }
    let nft = |args: &[&str]| {
        let mut all = vec!["ip", "netns", "exec", &net.near, "nft"];
        all.extend_from_slice(args);
        netns::run(&all).expect("the nftables rule")
    };
    let port = to.port().to_string();
    nft(&["add", "table", "ip", "udptee_test"]);
    nft(&[
        "add",
        "chain",
        "ip",
        "udptee_test",
        "pre",
        "{ type filter hook prerouting priority -150; }",
    ]);
    nft(&[
        "add",
        "rule",
        "ip",
        "udptee_test",
        "pre",
        "udp",
        "dport",
        &port,
        "meta",
        "mark",
        "set",
        "0x1",
    ]);
    let client = socket_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let start = Instant::now();
    let mut seq = 0u32;
    while fwd
        .snapshot()
        .kernel
        .as_ref()
        .is_some_and(|k| k.off.is_none())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the lost marks were not noticed:\n{}",
            fwd.snapshot()
        );
        for _ in 0..50 {
            client.send_to(&payload(0, seq, 64), to).unwrap();
            seq += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        fwd.registry().path_of("k"),
        "user",
        "k is served from user space now"
    );
    std::thread::sleep(Duration::from_millis(300));
    let base = k.received();
    for s in 0..2000u32 {
        client.send_to(&payload(1, s, 64), to).unwrap();
        if s % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    wait_until(
        "the second stream",
        || fwd.snapshot().to_string(),
        || k.received() >= base + 2000,
    );
    std::thread::sleep(Duration::from_millis(200));
    let snap = fwd.shutdown();
    util::assert_accounted(&snap);
    assert_eq!(
        k.received() - base,
        2000,
        "after the switch each datagram once\n{snap}"
    );
    assert!(
        snap.to_string()
            .contains("turned off while running: marks_lost"),
        "{snap}"
    );
}

/// The program run by the kernel itself (BPF_PROG_TEST_RUN) on arbitrary frames, mostly close to a
/// datagram for the listen port (random header fields, lengths, options, fragments, protocols,
/// payloads), with two kernel targets and a user-space one: whatever it copies, the frame it lets
/// go on is the frame it got, byte for byte, and it never drops one.
#[test]
fn any_frame_goes_on_exactly_as_it_came() {
    use proptest::prelude::*;
    let Some(net) = net_or_skip(50) else { return };
    let dir = std::env::temp_dir().join(format!("udptee-fp-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let user = dir.join("user.sock");
    let _rx = std::os::unix::net::UnixDatagram::bind(&user).unwrap();
    let a = sink_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let b = sink_in(&net.near, "127.0.0.1:0".parse().unwrap());
    let mut u = TargetSpec::new("user", "127.0.0.1:1".parse().unwrap());
    u.unix = Some(user.clone());
    let fwd = forwarder_in(
        &net.near,
        "127.0.0.1:0".parse().unwrap(),
        vec![target("a", a.addr), target("b", b.addr), u],
    );
    assert_eq!(fwd.registry().path_of("a"), "kernel");
    let fp = fwd.registry().fastpath().expect("loaded");
    let port = fwd.local_addr().port();

    // A frame: Ethernet, then an IPv4 header and UDP, each field usually right, sometimes not.
    let frame = (
        prop::bool::weighted(0.9),                 // IPv4 (else a random ethertype)
        prop_oneof![8 => Just(5u8), 2 => 5u8..16], // IHL
        prop::bool::weighted(0.85),                // UDP (else another protocol)
        prop_oneof![8 => Just(0u16), 1 => Just(0x2000u16), 1 => any::<u16>()], // flags/offset
        prop::bool::weighted(0.85),                // to the listen port
        prop_oneof![8 => Just(None), 2 => any::<u16>().prop_map(Some)], // a wrong UDP length
        prop::collection::vec(any::<u8>(), 0..300), // payload
        any::<[u8; 12]>(),                         // MAC addresses
    );
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 512,
        failure_persistence: None,
        ..Default::default()
    });
    let result = runner.run(&frame, |(v4, ihl, udp, frag, ours, bad_len, body, macs)| {
        let mut f = macs.to_vec();
        f.extend_from_slice(if v4 { &[0x08, 0x00] } else { &[0x88, 0xb5] });
        let opts = usize::from(ihl - 5) * 4;
        let tot = 20 + opts + 8 + body.len();
        f.push(0x40 | ihl);
        f.push(0);
        f.extend_from_slice(&(tot as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, if udp { 17 } else { 6 }, 0, 0]);
        f.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        f.extend(std::iter::repeat_n(1u8, opts)); // NOPs
        f.extend_from_slice(&4321u16.to_be_bytes());
        f.extend_from_slice(&(if ours { port } else { port ^ 1 }).to_be_bytes());
        let ulen = bad_len.unwrap_or((8 + body.len()) as u16);
        f.extend_from_slice(&ulen.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&body);
        let (verdict, out) = fp.test_run(&f).expect("the test run");
        prop_assert_eq!(verdict, -1, "every frame goes on (TC_ACT_UNSPEC)");
        prop_assert!(out == f, "the frame goes on as it came");
        Ok(())
    });
    let snap = fwd.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        panic!("{e}\n{snap}");
    }
    let k = snap.kernel.expect("counters");
    assert!(
        k.handled > 0 && k.passed.iter().any(|(r, n)| *r == "malformed" && *n > 0),
        "the mix reached both the copying path and the checks: {k:?}"
    );
}
