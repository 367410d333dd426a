//! Unix datagram sockets, as DogStatsD clients use them: byte-identical forwarding UDS to UDS, UDS
//! to UDP and UDP to UDS; a Unix target that never reads (it pushes back instead of dropping)
//! costs the other targets nothing and is that target's counted `queue_full`; a stale socket file
//! is replaced, a live one refused; the mode is set.

mod util;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use udptee::config::{Config, TargetSpec, UnixListen};
use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_udptee");

/// A Unix datagram receiver that keeps what it gets.
fn unix_sink(path: &Path) -> (UnixDatagram, impl Fn(usize) -> Vec<Vec<u8>>) {
    let s = UnixDatagram::bind(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = s.try_clone().unwrap();
    (s, move |n| {
        let mut buf = vec![0u8; 70_000];
        (0..n)
            .map(|_| {
                let k = r.recv(&mut buf).expect("a datagram within 10 s");
                buf[..k].to_vec()
            })
            .collect()
    })
}

fn unix_target(name: &str, path: &Path) -> TargetSpec {
    let mut t = TargetSpec::new(name, "0.0.0.0:0".parse().unwrap());
    t.addr = format!("unixgram://{}", path.display());
    t.unix = Some(path.to_path_buf());
    t
}

fn unix_config(listen: &Path, targets: Vec<TargetSpec>) -> Config {
    let mut c = Config::new("0.0.0.0:0".parse().unwrap(), targets);
    c.listen_unix = Some(UnixListen {
        path: listen.to_path_buf(),
        mode: 0o666,
        owner: None,
    });
    c.stats_interval = Duration::ZERO;
    c.max_datagram = 65535;
    c.drain_timeout = Duration::from_millis(300);
    c
}

fn datagrams(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| payload(3, i, 1 + (i as usize * 97) % 9000))
        .collect()
}

#[test]
fn uds_to_uds_and_to_udp_byte_for_byte() {
    let dir = temp_dir("uds", "both");
    let (listen, out) = (dir.join("in.sock"), dir.join("out.sock"));
    let (_keep, read_unix) = unix_sink(&out);
    let udp = Sink::new(false);
    let fwd = udptee::Forwarder::start(&unix_config(
        &listen,
        vec![unix_target("uds", &out), TargetSpec::new("udp", udp.addr)],
    ))
    .unwrap();
    let client = UnixDatagram::unbound().unwrap();
    let sent = datagrams(300);
    // Paced by the UDP sink (the Unix receiver pushes back on its own).
    for (i, d) in sent.iter().enumerate() {
        client.send_to(d, &listen).unwrap();
        if i % 50 == 49 {
            wait_for(&fwd, "a window", || udp.received() > i);
        }
    }
    let got = read_unix(300);
    assert!(
        got == sent,
        "the Unix target got every datagram, byte for byte, in order"
    );
    wait_for(&fwd, "the UDP sink", || udp.received() >= 300);
    let snap = fwd.shutdown();
    assert_eq!(snap.received(), 300);
    for t in 0..2 {
        assert_eq!(snap.targets[t].forwarded, 300, "{}", snap.target_names[t]);
        assert_eq!(snap.unaccounted(t), 0);
    }
    let (seen, _) = udp.finish();
    let want: Vec<(usize, u64)> = sent.iter().map(|d| fingerprint(d)).collect();
    assert!(seen == want, "UDS to UDP, byte for byte");
    assert!(
        !listen.exists(),
        "the listen socket file is removed at exit"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn udp_to_uds_byte_for_byte() {
    let dir = temp_dir("uds", "udp2uds");
    let out = dir.join("out.sock");
    let (_keep, read_unix) = unix_sink(&out);
    let fwd = forwarder(false, &[], |c| {
        c.targets = vec![unix_target("uds", &out)];
        c.max_datagram = 65535;
    });
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = datagrams(200);
    for d in &sent {
        client.send_to(d, fwd.local_addr()).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    let got = read_unix(200);
    assert!(got == sent, "every datagram, byte for byte, in order");
    let snap = fwd.shutdown();
    assert_eq!(snap.targets[0].forwarded, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_unix_target_that_never_reads_costs_the_others_nothing() {
    let dir = temp_dir("uds", "stuck");
    let stuck = dir.join("stuck.sock");
    // Bound, never read: once its queue is full, sends to it would block.
    let _never = UnixDatagram::bind(&stuck).unwrap();
    let udp = Sink::new(false);
    let fwd = forwarder(false, &[], |c| {
        c.targets = vec![
            TargetSpec::new("udp", udp.addr),
            unix_target("stuck", &stuck),
        ];
        c.drain_timeout = Duration::from_millis(300);
    });
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = send_paced(
        &fwd,
        &client,
        0,
        std::iter::repeat_n(200, 20_000),
        500,
        &[&udp],
    );
    let snap = fwd.shutdown();
    let (seen, _) = udp.finish();
    assert!(seen == sent, "the UDP target got all 20,000, in order");
    let s = &snap.targets[1];
    assert!(
        s.queue_full > 0,
        "the stuck Unix target's copies are its own queue_full: {s:?}"
    );
    assert_eq!(snap.unaccounted(1), 0, "and its books balance: {s:?}");
    assert_eq!(snap.targets[0].forwarded, 20_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stale_socket_file_is_replaced_a_live_one_refused_and_the_mode_set() {
    let dir = temp_dir("uds", "stale");
    let listen = dir.join("dsd.socket");
    let udp = Sink::new(false);
    let spec = format!("unixgram://{}", listen.display());
    let start = |extra: &[&str]| udptee_child(&spec, &udp.addr.to_string(), extra);
    // A live receiver owns the path: refused, and the file is left alone.
    let live = UnixDatagram::bind(&listen).unwrap();
    let o = start(&[]).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another process serves this socket (a datagram socket)"),
        "{err}"
    );
    assert!(listen.exists());
    drop(live); // the file stays behind: stale now
    let child = start(&["--unix-mode", "0620"]);
    wait_until("the socket", Duration::from_secs(10), || {
        UnixDatagram::unbound().unwrap().connect(&listen).is_ok()
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&listen).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o620, "--unix-mode");
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"dsd.metric:1|c|#env:test", &listen)
        .unwrap();
    wait_until("the UDP target", Duration::from_secs(10), || {
        udp.received() >= 1
    });
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!listen.exists(), "removed at exit");
    // A regular file at the path is never replaced.
    std::fs::write(&listen, b"not a socket").unwrap();
    let o = start(&[]).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&listen).unwrap(), b"not a socket");
    // Bad values are one line, exit 2.
    for (args, says) in [
        (vec!["--unix-mode", "999"], "octal"),
        (
            vec!["--allow", "10.0.0.0/8"],
            "--allow filters senders by address",
        ),
    ] {
        let o = start(&args).wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let o = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--to",
            "unixgram://relative/path",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ABSOLUTE"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_unix_receiver_that_restarts_is_found_again() {
    let dir = temp_dir("uds", "restart");
    let out = dir.join("agent.sock");
    let fwd = forwarder(false, &[], |c| {
        c.targets = vec![unix_target("agent", &out)];
    });
    // Nothing listens yet: copies fail (counted), the target is down.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"early:1|c", fwd.local_addr()).unwrap();
    wait_for(&fwd, "the early copy counted", || {
        fwd.snapshot().targets[0].send_errors_total() == 1
    });
    let mut sent = 1u64;
    for round in 0..3 {
        let _ = std::fs::remove_file(&out);
        let (keep, _) = unix_sink(&out);
        keep.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // Until the new receiver is found (the watch connects again within a second, a failed
        // send at once), copies to the old one fail and are counted.
        let line = format!("round.{round}:1|c");
        let mut buf = [0u8; 64];
        let got = (0..100).find_map(|_| {
            client.send_to(line.as_bytes(), fwd.local_addr()).unwrap();
            sent += 1;
            keep.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
        });
        assert_eq!(got, Some(line.into_bytes()), "round {round}: found again");
    }
    let snap = fwd.shutdown();
    let t = &snap.targets[0];
    assert_eq!(t.forwarded, 3, "one copy per round reached a receiver");
    assert_eq!(
        t.forwarded + t.send_errors_total(),
        sent,
        "every other copy is a counted send_error: {t:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A target that is the unixgram listener under another name (a symbolic link, a hard link) is a
/// loop: refused at start-up and from the admin API, by the socket's identity (its inode), with a
/// message that names the path.
#[test]
fn a_link_to_the_listener_is_refused_as_a_loop() {
    let dir = temp_dir("uds", "loop");
    let listen = dir.join("l.sock");
    let (_out, _) = unix_sink(&dir.join("out.sock"));
    let fwd = udptee::Forwarder::start(&unix_config(
        &listen,
        vec![unix_target("out", &dir.join("out.sock"))],
    ))
    .unwrap();
    std::os::unix::fs::symlink(&listen, dir.join("sym.sock")).unwrap();
    std::fs::hard_link(&listen, dir.join("hard.sock")).unwrap();
    for link in ["sym.sock", "hard.sock"] {
        let path = dir.join(link);
        let body = format!(r#"{{"addr": "unixgram://{}"}}"#, path.display());
        let e = fwd
            .control()
            .put("loop", body.as_bytes())
            .expect_err("a link to the listener is a loop");
        let msg = e.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("forward to itself"),
            "{link}: {msg}"
        );
        assert!(
            !msg.contains("0.0.0.0:0"),
            "{link}: the path, not a placeholder: {msg}"
        );
    }
    assert_eq!(
        fwd.registry().current().names(),
        ["out"],
        "nothing was added"
    );
    drop(fwd);

    // At start-up: a link planted where a target points is found once the listener exists.
    std::fs::remove_file(dir.join("sym.sock")).unwrap();
    std::os::unix::fs::symlink(&listen, dir.join("sym.sock")).unwrap();
    let e = udptee::Forwarder::start(&unix_config(
        &listen,
        vec![unix_target("sym", &dir.join("sym.sock"))],
    ))
    .expect_err("a target linked to the listener");
    assert!(e.to_string().contains("sym.sock"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A link planted after every check (the target's receiver goes away, and its path becomes a link
/// to the listener, which the watch then connects to) is caught at run time: a datagram that comes
/// from one of udptee's own target sockets (their abstract names say so) is a loop, dropped and
/// counted, so one datagram stays one datagram instead of multiplying.
#[test]
fn a_link_planted_at_run_time_is_caught_by_the_senders_name() {
    let dir = temp_dir("uds", "loop-run");
    let listen = dir.join("l.sock");
    let out = dir.join("out.sock");
    let (sink, _) = unix_sink(&out);
    let fwd =
        udptee::Forwarder::start(&unix_config(&listen, vec![unix_target("out", &out)])).unwrap();
    drop(sink);
    std::fs::remove_file(&out).unwrap();
    std::os::unix::fs::symlink(&listen, &out).unwrap();
    let client = UnixDatagram::unbound().unwrap();
    let mut sent = 0u64;
    let looped =
        |fwd: &udptee::Forwarder| fwd.snapshot().workers.iter().map(|w| w.looped).sum::<u64>();
    // Until the watch connects the target again (within a second), copies fail and are counted.
    let caught = (0..100).any(|_| {
        client.send_to(b"loop:1|c", &listen).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
        looped(&fwd) > 0
    });
    assert!(caught, "the loop was seen: {}", fwd.snapshot());
    std::thread::sleep(Duration::from_millis(500));
    let snap = fwd.shutdown();
    let looped: u64 = snap.workers.iter().map(|w| w.looped).sum();
    assert!(
        looped <= sent,
        "each datagram looped at most once: {looped} of {sent}"
    );
    assert_eq!(
        snap.received(),
        sent + looped,
        "what came back was not sent again:\n{snap}"
    );
    assert_eq!(snap.targets[0].source_denied, looped, "{snap}");
    assert!(
        snap.to_string().contains(&format!("looped {looped}")),
        "{snap}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
