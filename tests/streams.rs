//! Stream listeners: statsd lines over TCP and DogStatsD frames over a Unix stream socket, beside
//! the UDP listener, to the same targets. Every line arrives once, in order per connection, however
//! the client's writes split it; lines are packed into datagrams without splitting one; the bounds
//! hold (too many connections, an over-long line, an over-long frame, a client that says nothing);
//! bad listener flags are one clear error.

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use udptee::config::{StreamListen, UnixListen};
use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_udptee");

/// Every line `out` received so far, in arrival order; packed datagrams never end in a newline.
fn lines(out: &Keep) -> Vec<String> {
    let datagrams = out.datagrams();
    assert!(
        datagrams.iter().all(|d| !d.ends_with(b"\n")),
        "no newline after the last line of a datagram"
    );
    out.lines()
}

/// A TCP receiver keeping every line of the one connection it accepts.
fn tcp_sink() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&lines);
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        // Split at `\n` only: a `\r` before it is data (`BufRead::lines` would drop it).
        for line in std::io::BufRead::split(std::io::BufReader::new(s), b'\n') {
            let Ok(line) = line else { return };
            keep.lock().unwrap().push(String::from_utf8(line).unwrap());
        }
    });
    (addr, lines)
}

fn listener_port(fwd: &udptee::Forwarder, scheme: &str) -> SocketAddr {
    let name = fwd
        .stats()
        .listener_names()
        .into_iter()
        .find(|n| n.starts_with(scheme))
        .expect("the listener is named");
    name[scheme.len()..].parse().unwrap()
}

fn frame(m: &[u8]) -> Vec<u8> {
    let mut f = (m.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(m);
    f
}

#[test]
fn every_line_from_every_kind_of_listener_arrives_once_in_order() {
    let dir = temp_dir("streams", "all");
    let (sock, gram) = (dir.join("dsd.sock"), dir.join("dsd.gram"));
    let out = Keep::new();
    let (tcp_out, tcp_lines) = tcp_sink();
    let fwd = forwarder(false, &[out.addr], |c| {
        c.targets
            .push(udptee::config::TargetSpec::new_tcp("tcp", tcp_out));
        c.extra_listen = vec![udptee::config::DatagramListen::Unixgram(UnixListen {
            path: gram.clone(),
            mode: 0o666,
            owner: None,
        })];
        c.streams = vec![
            StreamListen::Tcp("127.0.0.1:0".parse().unwrap()),
            StreamListen::Unix(UnixListen {
                path: sock.clone(),
                mode: 0o666,
                owner: None,
            }),
        ];
        c.stream.pack_bytes = 200;
    });
    let tcp = listener_port(&fwd, "tcp://");
    const CLIENTS: usize = 8;
    const LINES: usize = 2000;
    // TCP clients, each writing its lines in pieces cut anywhere (a trailing \r is data).
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(tcp).unwrap();
                let mut wire = Vec::new();
                for i in 0..LINES {
                    let cr = if i % 100 == 7 { "\r" } else { "" };
                    wire.extend_from_slice(format!("tcp.c{c}.s{i}:1|c{cr}\n").as_bytes());
                }
                let mut at = 0;
                let mut cut = 1 + c;
                while at < wire.len() {
                    let end = (at + cut).min(wire.len());
                    s.write_all(&wire[at..end]).unwrap();
                    at = end;
                    cut = (cut * 7 + 3) % 500 + 1;
                    if at % 7 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();
    // A DogStatsD client on the Unix stream socket: frames of several lines, split too.
    let mut u = UnixStream::connect(&sock).unwrap();
    let mut wire = Vec::new();
    for i in 0..500 {
        wire.extend(frame(format!("uds.a{i}:1|g\nuds.b{i}:2|g").as_bytes()));
    }
    for piece in wire.chunks(333) {
        u.write_all(piece).unwrap();
    }
    // And UDP and unixgram, as before.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let unixgram = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for i in 0..200 {
        udp.send_to(format!("udp.{i}:1|c").as_bytes(), fwd.local_addr())
            .unwrap();
        unixgram
            .send_to(format!("gram.{i}:1|c").as_bytes(), &gram)
            .unwrap();
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    for c in clients {
        c.join().unwrap();
    }
    let want = CLIENTS * LINES + 1000 + 200 + 200;
    wait_for(&fwd, "every line at the target", || {
        lines(&out).len() >= want
    });
    drop(u);
    let lines = lines(&out);
    assert_eq!(lines.len(), want, "no line repeated");
    let mut per: HashMap<String, Vec<usize>> = HashMap::new();
    for l in &lines {
        let (name, _) = l.split_once(':').unwrap();
        let mut parts = name.rsplitn(2, ".");
        let seq = parts.next().unwrap();
        let who = parts.next().unwrap().to_owned();
        let n: usize = seq
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .parse()
            .unwrap();
        per.entry(who).or_default().push(n);
        if name.starts_with("tcp.") {
            let i: usize = seq[1..].parse().unwrap();
            assert_eq!(
                l.ends_with('\r'),
                i % 100 == 7,
                "a trailing \\r is kept as data: {l:?}"
            );
        }
    }
    for c in 0..CLIENTS {
        let seqs = &per[&format!("tcp.c{c}")];
        assert_eq!(
            seqs,
            &(0..LINES).collect::<Vec<_>>(),
            "client {c}: every line once, in order"
        );
    }
    assert_eq!(per["uds"].len(), 1000);
    assert_eq!(per["udp"].len(), 200);
    assert_eq!(per["gram"].len(), 200);
    // The TCP target got the same lines, each connection's in order.
    wait_for(&fwd, "every line at the TCP target", || {
        tcp_lines.lock().unwrap().len() >= want
    });
    let mut tcp_got = tcp_lines.lock().unwrap().clone();
    for c in 0..CLIENTS {
        let prefix = format!("tcp.c{c}.s");
        let seqs: Vec<usize> = tcp_got
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix)?.split(':').next()?.parse().ok())
            .collect();
        assert_eq!(
            seqs,
            (0..LINES).collect::<Vec<_>>(),
            "client {c} at the TCP target"
        );
    }
    tcp_got.sort();
    let mut udp_got = lines.clone();
    udp_got.sort();
    let differ = tcp_got.iter().zip(&udp_got).find(|(a, b)| a != b);
    assert!(
        tcp_got.len() == udp_got.len() && differ.is_none(),
        "both targets got the same lines: {} and {}, first difference {differ:?}",
        tcp_got.len(),
        udp_got.len()
    );
    // Packed: at most 200 bytes unless a line is alone, and far fewer datagrams than lines.
    let datagrams = out.datagrams();
    assert!(datagrams.iter().all(|d| d.len() <= 200));
    assert!(
        datagrams.len() < want / 2,
        "{} datagrams for {want} lines",
        datagrams.len()
    );
    let snap = fwd.shutdown();
    assert_accounted(&snap);
    let tcp_l = snap.listeners.iter().find(|l| l.kind == "tcp").unwrap();
    let s = tcp_l.stream.as_ref().unwrap();
    assert_eq!(
        (s.accepted, s.lines, s.lines_too_long),
        (CLIENTS as u64, (CLIENTS * LINES) as u64, 0)
    );
    let unix_l = snap.listeners.iter().find(|l| l.kind == "unix").unwrap();
    assert_eq!(unix_l.stream.as_ref().unwrap().frames, 500);
    assert_eq!(
        snap.listener_received(unix_l),
        500,
        "a frame is one datagram"
    );
    assert!(
        !sock.exists() && !gram.exists(),
        "the socket files are removed at stop"
    );
    assert_eq!(snap.listeners.len(), 4, "udp, unixgram, tcp, unix");
}

/// Reads until the peer closes (Ok(0)) or resets; false if it stays open past `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_)) && {
        // A timeout is an error too: tell it apart.
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        !matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[test]
fn the_bounds_hold_and_each_is_counted() {
    let dir = temp_dir("streams", "bounds");
    let sock = dir.join("dsd.sock");
    let out = Keep::new();
    let fwd = forwarder(false, &[out.addr], |c| {
        c.max_datagram = 64;
        c.streams = vec![
            StreamListen::Tcp("127.0.0.1:0".parse().unwrap()),
            StreamListen::Unix(UnixListen {
                path: sock.clone(),
                mode: 0o666,
                owner: None,
            }),
        ];
        c.stream.max_connections = 2;
        c.stream.idle_timeout = Duration::from_secs(1);
        c.stream.pack_bytes = 64;
    });
    let tcp = listener_port(&fwd, "tcp://");
    let tcp_stats = || {
        let snap = fwd.snapshot();
        snap.listeners
            .iter()
            .find(|l| l.kind == "tcp")
            .unwrap()
            .stream
            .clone()
            .unwrap()
    };
    // An over-long line is dropped and counted; the connection goes on.
    let mut a = TcpStream::connect(tcp).unwrap();
    let long = "x".repeat(100);
    a.write_all(format!("ok.1:1|c\n{long}:1|c\nok.2:1|c\n").as_bytes())
        .unwrap();
    wait_for(&fwd, "both short lines", || lines(&out).len() >= 2);
    assert_eq!(lines(&out), vec!["ok.1:1|c", "ok.2:1|c"]);
    assert_eq!(tcp_stats().lines_too_long, 1);
    // A second connection fits; a third is over --max-connections: closed, nothing written.
    let _b = TcpStream::connect(tcp).unwrap();
    wait_for(&fwd, "two open", || tcp_stats().open == 2);
    let mut c = TcpStream::connect(tcp).unwrap();
    assert!(
        closed_within(&mut c, Duration::from_secs(5)),
        "the third connection is closed"
    );
    wait_for(&fwd, "the refusal counted", || tcp_stats().closed[1] == 1);
    // Quiet connections are closed after the idle timeout; an active one is not.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        a.write_all(b"keep:1|c\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = tcp_stats();
    assert_eq!(
        (s.closed[2], s.open),
        (1, 1),
        "the quiet one closed as idle, the busy one open"
    );
    // An over-long DogStatsD frame closes its connection; earlier frames went through.
    let mut u = UnixStream::connect(&sock).unwrap();
    u.write_all(&frame(b"uds:1|c")).unwrap();
    u.write_all(&frame(&[b'y'; 65])).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(u.read(&mut buf), Ok(0) | Err(_)));
    wait_for(&fwd, "the frame before it", || {
        lines(&out).contains(&"uds:1|c".to_owned())
    });
    let snap = fwd.shutdown();
    let u = snap
        .listeners
        .iter()
        .find(|l| l.kind == "unix")
        .unwrap()
        .stream
        .clone()
        .unwrap();
    assert_eq!((u.frames, u.closed[3]), (1, 1), "frame_too_long closed it");
    assert_accounted(&snap);
}

#[test]
fn bad_listener_flags_are_one_clear_error() {
    let run = |args: &[&str]| {
        let o = Command::new(BIN)
            .args(args)
            .args(["--to", "127.0.0.1:9", "--admin", "off"])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} is refused");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = run(&["--listen", "127.0.0.1:0", "--listen", "sctp://127.0.0.1:1"]);
    assert!(e.contains("tcp://HOST:PORT or unix:///PATH"), "{e}");
    let e = run(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "tcp://127.0.0.1:1",
        "--listen",
        "tcp://127.0.0.1:1",
    ]);
    assert!(e.contains("each listener once"), "{e}");
    let e = run(&["--listen", "tcp://127.0.0.1:1", "--fast-path", "on"]);
    assert!(
        e.contains("the kernel fast path serves a UDP listener"),
        "{e}"
    );
    let e = run(&["--listen", "127.0.0.1:7001", "--listen", "0.0.0.0:7001"]);
    assert!(e.contains("a wildcard UDP listener covers"), "{e}");
    // A target at any of udptee's own listeners is a loop.
    let o = Command::new(BIN)
        .args(["--listen", "127.0.0.1:7001", "--listen", "127.0.0.1:7002"])
        .args(["--listen", "tcp://127.0.0.1:7003", "--admin", "off"])
        .args(["--to", "127.0.0.1:7002"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("127.0.0.1:7002"), "{e}");
    let o = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:7001",
            "--listen",
            "tcp://127.0.0.1:7003",
        ])
        .args(["--admin", "off", "--to", "tcp://127.0.0.1:7003"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("127.0.0.1:7003"),
        "a TCP target at a tcp:// listener: {e}"
    );
    let e = run(&["--listen", "127.0.0.1:0", "--listen", "unix://relative"]);
    assert!(e.contains("unix:///ABSOLUTE/PATH"), "{e}");
    let e = run(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "tcp://127.0.0.1:1",
        "--max-connections",
        "0",
    ]);
    assert!(e.contains("--max-connections"), "{e}");
    // The file takes a list, and `udptee check` names every listener.
    let dir = temp_dir("streams", "check");
    let file = dir.join("udptee.toml");
    std::fs::write(
        &file,
        "listen = [\"127.0.0.1:8125\", \"tcp://127.0.0.1:8125\", \"unix:///run/dsd.stream\"]\n[[target]]\naddr = \"127.0.0.1:8126\"\n",
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("listen 127.0.0.1:8125, tcp://127.0.0.1:8125, unix:///run/dsd.stream"),
        "{text}"
    );
}

/// Starts the udptee binary with `args` and `extra`, its standard error captured.
fn udptee_with(args: &[String], extra: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .die_with_test()
        .spawn()
        .unwrap()
}

/// Waits until `addr` accepts a TCP connection.
fn wait_tcp(addr: SocketAddr) {
    wait_until("the tcp:// listener", Duration::from_secs(10), || {
        TcpStream::connect(addr).is_ok()
    });
}

#[test]
fn a_takeover_carries_every_listener_and_the_socket_files_stay() {
    let dir = temp_dir("streams", "takeover");
    let (control, stream, gram) = (
        dir.join("control.sock"),
        dir.join("dsd.stream"),
        dir.join("dsd.gram"),
    );
    let out = Keep::new();
    let (udp1, udp2, tcp) = (free_addr(), free_addr(), free_tcp());
    let args: Vec<String> = vec![
        "--listen".into(),
        udp1.to_string(),
        "--listen".into(),
        udp2.to_string(),
        "--listen".into(),
        format!("tcp://{tcp}"),
        "--listen".into(),
        format!("unix://{}", stream.display()),
        "--listen".into(),
        format!("unixgram://{}", gram.display()),
        "--to".into(),
        out.addr.to_string(),
        "--control-socket".into(),
        control.display().to_string(),
        "--admin".into(),
        "off".into(),
        "--stats-interval".into(),
        "0".into(),
    ];
    let start = |extra: &[&str]| udptee_with(&args, extra);
    let mut old = start(&[]);
    wait_bound(&mut old, udp1);
    wait_tcp(tcp);
    wait_until("the control socket", Duration::from_secs(10), || {
        control.exists()
    });
    let mut before = TcpStream::connect(tcp).unwrap();
    before.write_all(b"before.tcp:1|c\n").unwrap();
    wait_until("the old one forwards", Duration::from_secs(10), || {
        lines(&out).contains(&"before.tcp:1|c".to_owned())
    });
    let new = start(&["--takeover"]);
    wait_until("the old udptee to exit", Duration::from_secs(30), || {
        old.try_wait().unwrap().is_some()
    });
    let o = old.wait_with_output().unwrap();
    let old_err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{old_err}");
    assert!(
        stream.exists() && gram.exists(),
        "the socket files are the new one's now"
    );
    // A connection to the old one was closed at its stop; the listeners are the new one's.
    before
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 8];
    assert!(
        matches!(before.read(&mut b), Ok(0) | Err(_)),
        "closed by the old udptee"
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"after.udp1:1|c", udp1).unwrap();
    udp.send_to(b"after.udp2:1|c", udp2).unwrap();
    std::os::unix::net::UnixDatagram::unbound()
        .unwrap()
        .send_to(b"after.gram:1|c", &gram)
        .unwrap();
    send_tcp(tcp, b"after.tcp:1|c\n");
    send_frame(&stream, b"after.unix:1|c");
    let want = [
        "after.udp1",
        "after.udp2",
        "after.gram",
        "after.tcp",
        "after.unix",
    ];
    wait_until(
        "every listener forwards in the new one",
        Duration::from_secs(10),
        || {
            let got = lines(&out);
            want.iter().all(|w| got.contains(&format!("{w}:1|c")))
        },
    );
    let err = stop_ok(new);
    assert!(
        err.contains("final: received 6 datagrams"),
        "the old one's counted too: {err}"
    );
    assert!(
        !stream.exists() && !gram.exists(),
        "removed by the last one at its stop"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tcp_listener_from_systemd_serves_what_waited_in_it_and_goes_into_the_fd_store() {
    use std::os::fd::AsRawFd;
    let dir = temp_dir("streams", "systemd");
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let out = Keep::new();
    // The listening socket systemd holds (socket activation, or the store after a restart), with a
    // client that connected and wrote while no udptee ran.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = held.local_addr().unwrap();
    let mut early = TcpStream::connect(tcp).unwrap();
    early.write_all(b"waited.1:1|c\nwaited.2:1|c\n").unwrap();
    let fd = held.as_raw_fd();
    let udp = free_addr();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=udptee-listen exec \"$0\" \"$@\"",
    ])
    .arg(BIN)
    .env("NOTIFY_SOCKET", &notify_path);
    udp_and_tcp_into(&mut cmd, udp, tcp, &out);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: dup2 is async-signal-safe; it puts the listener at fd 3 (without CLOEXEC).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().unwrap();
    drop(held);
    wait_until("what waited arrives", Duration::from_secs(10), || {
        lines(&out).len() >= 2
    });
    assert_eq!(lines(&out), vec!["waited.1:1|c", "waited.2:1|c"]);
    let stored = fdstore_message(&notify)
        .map(|(_, fds)| fds)
        .unwrap_or_default();
    stop_ok(child);
    let kinds: Vec<(socket2::Type, Option<SocketAddr>)> = stored
        .into_iter()
        .map(|fd| {
            let s = socket2::Socket::from(fd);
            (s.r#type().unwrap(), s.local_addr().unwrap().as_socket())
        })
        .collect();
    assert!(
        kinds.contains(&(socket2::Type::DGRAM, Some(udp))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(socket2::Type::STREAM, Some(tcp))),
        "the tcp:// listener is stored too: {kinds:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// udptee's flags (appended to `cmd`, which runs it) for a UDP listener at `udp` and a `tcp://`
/// one at `tcp`, forwarding to `out`, with no admin listener, stats line or control socket; stderr
/// captured, dying with the test.
fn udp_and_tcp_into(cmd: &mut Command, udp: SocketAddr, tcp: SocketAddr, out: &Keep) {
    cmd.args(["--listen", &udp.to_string()])
        .args(["--listen", &format!("tcp://{tcp}")])
        .args(["--to", &out.addr.to_string()])
        .args([
            "--admin",
            "off",
            "--stats-interval",
            "0",
            "--control-socket",
            "off",
        ])
        .stderr(std::process::Stdio::piped())
        .die_with_test();
}

/// `bytes` over a new TCP connection to `tcp`.
fn send_tcp(tcp: SocketAddr, bytes: &[u8]) {
    TcpStream::connect(tcp).unwrap().write_all(bytes).unwrap();
}

/// `payload` as one DogStatsD frame over a new connection to the Unix stream socket at `path`.
fn send_frame(path: &std::path::Path, payload: &[u8]) {
    UnixStream::connect(path)
        .unwrap()
        .write_all(&frame(payload))
        .unwrap();
}

/// User and system CPU time of a process so far, from /proc/PID/stat, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_the_listener_pauses_instead_of_spinning_and_the_waiting_clients_are_served_later()
 {
    let out = Keep::new();
    let (udp, tcp) = (free_addr(), free_tcp());
    let mut cmd = Command::new(BIN);
    udp_and_tcp_into(&mut cmd, udp, tcp, &out);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe: room for udptee's own descriptors and a few
        // connections only.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 24,
                    rlim_max: 24,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    wait_bound(&mut child, udp);
    wait_tcp(tcp);
    let clients: Vec<TcpStream> = (0..30)
        .map(|i| {
            let mut c = TcpStream::connect(tcp).unwrap();
            c.write_all(format!("c{i}:1|c\n").as_bytes()).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let served = lines(&out).len();
    assert!(
        served > 0 && served < 30,
        "some served, the rest wait: {served}"
    );
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(child.id()) - before;
    assert!(
        spent < 20,
        "a listener it cannot accept on does not spin: {spent} ticks in 1 s"
    );
    drop(clients); // the served ones close, making room; the waiting ones are accepted then
    wait_until("every client served", Duration::from_secs(10), || {
        lines(&out).len() == 30
    });
    let err = stop_ok(child);
    assert!(err.contains("accept failed; the listener pauses"), "{err}");
}

#[test]
fn only_stream_listeners_forward_and_hand_over() {
    let dir = temp_dir("streams", "only");
    let (control, stream) = (dir.join("control.sock"), dir.join("dsd.stream"));
    let out = Keep::new();
    let tcp = free_tcp();
    let args: Vec<String> = vec![
        "--listen".into(),
        format!("tcp://{tcp}"),
        "--listen".into(),
        format!("unix://{}", stream.display()),
        "--to".into(),
        out.addr.to_string(),
        "--control-socket".into(),
        control.display().to_string(),
        "--admin".into(),
        "off".into(),
        "--stats-interval".into(),
        "0".into(),
    ];
    let start = |extra: &[&str]| udptee_with(&args, extra);
    let old = start(&[]);
    wait_tcp(tcp);
    wait_until("the control socket", Duration::from_secs(10), || {
        control.exists()
    });
    send_tcp(tcp, b"old.tcp:1|c\n");
    send_frame(&stream, b"old.unix:1|c");
    wait_until("the old one forwards", Duration::from_secs(10), || {
        lines(&out).len() == 2
    });
    let new = start(&["--takeover"]);
    let o = old.wait_with_output().unwrap();
    let old_err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{old_err}");
    assert!(
        !old_err.contains("receive buffer"),
        "no datagram socket, no buffer warning: {old_err}"
    );
    send_tcp(tcp, b"new.tcp:1|c\n");
    send_frame(&stream, b"new.unix:1|c");
    wait_until("the new one forwards", Duration::from_secs(10), || {
        lines(&out).len() == 4
    });
    let err = stop_ok(new);
    assert!(err.contains("final: received 4 datagrams"), "{err}");
    assert!(
        err.contains(&format!(
            "final: listener tcp://{tcp} (tcp): received 2 datagrams"
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
