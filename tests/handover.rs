//! Zero-loss restarts: `--takeover` in the middle of steady load from two clients delivers every
//! datagram exactly once and the old udptee exits 0 by itself, with the totals carried over; a
//! takeover for another address is refused and the old one keeps forwarding; sockets systemd passes
//! (LISTEN_FDS) are used with what was queued in them; and the sockets go into systemd's
//! file-descriptor store (FDSTORE=1) once bound.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_udptee");

fn udptee(listen: SocketAddr, sink: SocketAddr, extra: &[&str]) -> Child {
    udptee_child(&listen.to_string(), &sink.to_string(), extra)
}

fn stderr_of(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The (stream, sequence number) of every datagram the sink kept, from `payload`'s first 8 bytes.
fn sequences(seen: &[(usize, u64)], sent: &[Vec<Vec<u8>>]) -> Vec<Vec<u32>> {
    let index: std::collections::HashMap<(usize, u64), (usize, u32)> = sent
        .iter()
        .enumerate()
        .flat_map(|(s, v)| {
            v.iter()
                .enumerate()
                .map(move |(i, p)| (fingerprint(p), (s, i as u32)))
        })
        .collect();
    let mut out = vec![Vec::new(); sent.len()];
    for f in seen {
        let (s, i) = index[f];
        out[s].push(i);
    }
    out
}

#[test]
fn a_takeover_under_load_loses_nothing_and_the_old_one_exits_by_itself() {
    for io in ["mmsg", "uring"] {
        if io == "uring" && udptee::net::uring::probe().is_err() {
            skip_part("skipping the io_uring round: this kernel refuses io_uring");
            continue;
        }
        takeover_under_load(io, None);
    }
}

/// The default configuration has the admin listener on: the new udptee takes it over with the
/// data sockets, and /healthz answers all along (probed every 20 ms from before the takeover
/// until after the old one has gone).
#[test]
fn a_takeover_with_the_admin_listener_on_keeps_it_answering() {
    takeover_under_load("mmsg", Some(free_tcp()));
}

/// Probes `GET /healthz` on `admin` every 20 ms until `stop`: (answered 200, failed).
fn probe_health(admin: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u32, u32)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            if http(admin, "GET", "/healthz", "", "") == (200, "ok\n".to_owned()) {
                ok += 1;
            } else {
                failed += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (ok, failed)
    })
}

fn takeover_under_load(io: &str, admin: Option<SocketAddr>) {
    let dir = temp_dir("ho", &format!("load-{io}-{}", admin.is_some()));
    let control = dir.join("control.sock");
    let sink = Sink::new(false);
    let listen = free_addr();
    let ctl = control.to_str().unwrap();
    let admin_arg = admin.map(|a| a.to_string());
    let mut args = vec!["--control-socket", ctl, "--io", io];
    if let Some(a) = &admin_arg {
        args.extend(["--admin", a.as_str()]);
    }
    let mut old = udptee(listen, sink.addr, &args);
    wait_bound(&mut old, listen);
    let probes = admin.map(|a| {
        wait_admin(a);
        let stop = Arc::new(AtomicBool::new(false));
        (Arc::clone(&stop), probe_health(a, stop))
    });
    wait_until("the control socket", Duration::from_secs(10), || {
        control.exists()
    });

    // Two clients, 2,000 datagrams/s each, for about 3 s; the takeover after 1 s.
    let stop = Arc::new(AtomicBool::new(false));
    let sent_count = Arc::new(AtomicU32::new(0));
    let clients: Vec<_> = (0..2u32)
        .map(|stream| {
            let (stop, count) = (Arc::clone(&stop), Arc::clone(&sent_count));
            std::thread::spawn(move || {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                let mut sent = Vec::new();
                while !stop.load(Ordering::Relaxed) && sent.len() < 6000 {
                    for _ in 0..20 {
                        let p = payload(stream, sent.len() as u32, 64 + sent.len() % 200);
                        c.send_to(&p, listen).unwrap();
                        sent.push(p);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    args.push("--takeover");
    let mut new = udptee(listen, sink.addr, &args);
    // The old one hands over, drains and exits 0 on its own (and the new one keeps running).
    wait_until("the old udptee to exit", Duration::from_secs(30), || {
        if let Some(status) = new.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            let _ = new.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the new udptee exited ({status}) instead:\n{err}");
        }
        old.try_wait().unwrap().is_some()
    });
    let (code, old_err) = stderr_of(old);
    assert_eq!(
        code,
        Some(0),
        "the old udptee exits 0 by itself:\n{old_err}"
    );
    assert!(
        old_err.contains("handing over to the new udptee"),
        "{old_err}"
    );
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<Vec<Vec<u8>>> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let total: usize = sent.iter().map(Vec::len).sum();
    wait_until(
        "every datagram at the sink",
        Duration::from_secs(20),
        || sink.received() >= total,
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        new.try_wait().unwrap().is_none(),
        "the new one keeps running"
    );
    if let Some((stop, probes)) = probes {
        stop.store(true, Ordering::Relaxed);
        let (ok, failed) = probes.join().unwrap();
        assert_eq!(failed, 0, "/healthz answered every probe ({ok} did)");
        assert!(ok > 50, "probed all along: {ok}");
        let (code, metrics) = http(admin.unwrap(), "GET", "/metrics", "", "");
        assert_eq!(code, 200);
        assert!(
            metrics.contains(&format!("udptee_received_datagrams_total {total}")),
            "the new one answers, with the carried totals"
        );
    }
    signal(&new, "-TERM");
    let (code, new_err) = stderr_of(new);
    assert_eq!(code, Some(0), "{new_err}");
    let (seen, _) = sink.finish();
    assert_eq!(seen.len(), total, "exactly once: no loss, no duplicate");
    for (s, seqs) in sequences(&seen, &sent).into_iter().enumerate() {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted,
            (0..sent[s].len() as u32).collect::<Vec<_>>(),
            "client {s}: every datagram, once"
        );
    }
    assert!(
        new_err.contains(&format!("final: received {total} datagrams")),
        "{io}: the new one's totals include the old one's (counters carried over):\n{new_err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_takeover_for_another_address_is_refused_and_the_old_one_keeps_running() {
    let dir = temp_dir("ho", "refuse");
    let control = dir.join("control.sock");
    let ctl = control.to_str().unwrap();
    let sink = Sink::new(false);
    let listen = free_addr();
    let mut old = udptee(listen, sink.addr, &["--control-socket", ctl]);
    wait_bound(&mut old, listen);
    wait_until("the control socket", Duration::from_secs(10), || {
        control.exists()
    });
    let other = free_addr();
    let new = udptee(other, sink.addr, &["--control-socket", ctl, "--takeover"]);
    let (code, err) = stderr_of(new);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refused by the running udptee"), "{err}");
    assert!(
        err.contains(&format!("it would listen on {other}")),
        "{err}"
    );
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.send_to(b"still here:1|c", listen).unwrap();
    wait_until("the old one forwards", Duration::from_secs(10), || {
        sink.received() >= 1
    });
    assert!(
        old.try_wait().unwrap().is_none(),
        "the old one keeps running"
    );
    signal(&old, "-TERM");
    assert_eq!(stderr_of(old).0, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_takeover_with_nobody_to_take_over_from_starts_normally() {
    let dir = temp_dir("ho", "nobody");
    let ctl = dir.join("control.sock");
    let sink = Sink::new(false);
    let listen = free_addr();
    let mut child = udptee(
        listen,
        sink.addr,
        &["--control-socket", ctl.to_str().unwrap(), "--takeover"],
    );
    wait_bound(&mut child, listen);
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"a:1|c", listen)
        .unwrap();
    wait_until("it forwards", Duration::from_secs(10), || {
        sink.received() >= 1
    });
    signal(&child, "-TERM");
    assert_eq!(stderr_of(child).0, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sockets_from_systemd_are_used_with_what_was_queued_in_them() {
    let sink = Sink::new(false);
    // The socket a previous udptee left in the fd store (or socket activation bound), holding 500
    // datagrams that arrived while no udptee ran.
    let held = udp_socket("127.0.0.1:0".parse().unwrap(), 8 << 20);
    let listen = held.local_addr().unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent: Vec<Vec<u8>> = (0..500u32).map(|i| payload(7, i, 100)).collect();
    for p in &sent {
        c.send_to(p, listen).unwrap();
    }
    let fd = held.as_raw_fd();
    // A second, unrelated socket passed beside it (another service's): closed, not used.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other_fd = other.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=udptee-listen:other exec \"$0\" \"$@\"",
    ])
    .arg(BIN)
    .args([
        "--listen",
        &listen.to_string(),
        "--to",
        &sink.addr.to_string(),
    ])
    .args([
        "--admin",
        "off",
        "--stats-interval",
        "0",
        "--control-socket",
        "off",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .die_with_test();
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: dup2 is async-signal-safe; it puts our socket at fd 3 (without CLOEXEC) in the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) == -1 || libc::dup2(other_fd, 4) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().unwrap();
    drop(held);
    let start = std::time::Instant::now();
    while sink.received() < 500 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&child, "-TERM");
    let (code, err) = stderr_of(child);
    assert_eq!(sink.received(), 500, "{err}");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("sockets systemd passed"), "{err}");
    assert!(
        err.contains("serves no listener; closed"),
        "the unrelated socket is left out: {err}"
    );
    drop(other);
    let (seen, _) = sink.finish();
    let want: Vec<(usize, u64)> = sent.iter().map(|p| fingerprint(p)).collect();
    assert!(seen == want, "all 500 queued before it started, in order");
}

#[test]
fn the_sockets_go_into_the_systemd_fd_store() {
    let dir = temp_dir("ho", "fdstore");
    let path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let sink = Sink::new(false);
    let listen = free_addr();
    let child = Command::new(BIN)
        .args([
            "--listen",
            &listen.to_string(),
            "--to",
            &sink.addr.to_string(),
        ])
        .args(["--admin", "off", "--stats-interval", "0", "--workers", "2"])
        .args(["--control-socket", "off"])
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .die_with_test()
        .spawn()
        .unwrap();
    let got = fdstore_message(&notify);
    signal(&child, "-TERM");
    let _ = stderr_of(child);
    let (text, fds) = got.expect("an FDSTORE=1 message");
    assert!(text.contains("FDNAME=udptee-listen"), "{text}");
    assert_eq!(fds.len(), 2, "both workers' sockets");
    for fd in fds {
        let s = UdpSocket::from(fd);
        assert_eq!(s.local_addr().unwrap(), listen, "the listen socket itself");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_idle_udptee_uses_no_cpu() {
    // A main loop selecting on a channel whose sender is gone spins a core; idle must be idle.
    for extra in [vec!["--control-socket", "off"], vec![]] {
        let sink = Sink::new(false);
        let listen = free_addr();
        let mut child = udptee(listen, sink.addr, &extra);
        wait_bound(&mut child, listen);
        let ticks = |pid: u32| -> u64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let rest = stat.rsplit_once(')').unwrap().1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
        };
        let before = ticks(child.id());
        std::thread::sleep(Duration::from_secs(2));
        let used = ticks(child.id()) - before;
        signal(&child, "-TERM");
        let _ = stderr_of(child);
        // Clock ticks are 10 ms: 2 s of a spinning thread would be ~200.
        assert!(used < 20, "{extra:?}: {used} ticks of CPU in 2 s idle");
    }
}

/// Two takeovers at the same moment: one wins and runs; the other exits 1 saying that another
/// udptee took over first (not a bare "Connection reset by peer").
#[test]
fn two_simultaneous_takeovers_one_wins_and_the_other_says_why() {
    let dir = temp_dir("ho", "twice");
    let control = dir.join("control.sock");
    let ctl = control.to_str().unwrap();
    let sink = Sink::new(false);
    let listen = free_addr();
    let mut old = udptee(listen, sink.addr, &["--control-socket", ctl]);
    wait_bound(&mut old, listen);
    wait_until("the control socket", Duration::from_secs(10), || {
        control.exists()
    });
    let args = ["--control-socket", ctl, "--takeover"];
    let mut a = udptee(listen, sink.addr, &args);
    let mut b = udptee(listen, sink.addr, &args);
    // The loser exits by itself; the winner keeps running.
    let mut loser = None;
    wait_until("one of them to give up", Duration::from_secs(20), || {
        if a.try_wait().unwrap().is_some() {
            loser = Some(0);
        } else if b.try_wait().unwrap().is_some() {
            loser = Some(1);
        }
        loser.is_some()
    });
    let (lost, won) = if loser == Some(0) { (a, b) } else { (b, a) };
    let (code, err) = stderr_of(lost);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("took it over first") || err.contains("at the same moment"),
        "says why: {err}"
    );
    let (code, old_err) = stderr_of(old);
    assert_eq!(code, Some(0), "{old_err}");
    signal(&won, "-TERM");
    let (code, err) = stderr_of(won);
    assert_eq!(code, Some(0), "{err}");
    let _ = sink.finish();
    let _ = std::fs::remove_dir_all(&dir);
}
