//! The udptee binary as a user runs it: --help, clear one-line errors with non-zero exits for bad input,
//! and SIGTERM draining to a final accounting with exit 0.

mod util;

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::time::Duration;

use util::{
    Sink, free_addr, free_tcp, http, signal, skip_part, spawn_udptee, wait_admin, wait_bound,
    wait_until,
};

const BIN: &str = env!("CARGO_BIN_EXE_udptee");

fn udptee(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("udptee runs")
}

#[test]
fn help_documents_every_flag() {
    let o = udptee(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--listen",
        "--to",
        "--workers",
        "--cpus",
        "--sender-cpus",
        "--batch",
        "--queue-depth",
        "--rcvbuf",
        "--sndbuf",
        "--max-datagram",
        "--stats-interval",
        "--drain-timeout",
        "--log-level",
        "--log-format",
        "--io",
        "--admin",
        "--latency",
        "--histogram-log",
    ] {
        assert!(help.contains(flag), "--help documents {flag}");
    }
    assert!(help.contains("[default: 8MiB]"), "--help shows defaults");
}

#[test]
fn bad_input_is_a_one_line_error_and_nonzero_exit() {
    let cases: &[(&[&str], &str)] = &[
        (&["--listen", "127.0.0.1:0"], "--to"),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--fast-path",
                "sometimes",
            ],
            "--fast-path",
        ),
        (&["--listen", "nonsense", "--to", "127.0.0.1:9"], "nonsense"),
        (
            &["--listen", "127.0.0.1:0", "--to", "no-such-host.invalid:9"],
            "no-such-host.invalid",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--batch",
                "0",
            ],
            "--batch",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--batch",
                "5000",
            ],
            "--batch",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--queue-depth=-1",
            ],
            "--queue-depth",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--queue-depth",
                "0",
            ],
            "--queue-depth",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--rcvbuf",
                "lots",
            ],
            "--rcvbuf",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--max-datagram",
                "100000",
            ],
            "--max-datagram",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--cpus",
                "9999",
            ],
            "--cpus",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--cpus",
                "0-",
            ],
            "--cpus",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--stats-interval",
                "often",
            ],
            "--stats-interval",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--to",
                "127.0.0.1:9",
            ],
            "same address",
        ),
        (
            &["--listen", "0.0.0.0:8125", "--to", "127.0.0.1:8125"],
            "forward to itself",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--log-level",
                "loud==",
            ],
            "--log-level",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--drain-timeout",
                "18446744073709551615s",
            ],
            "--drain-timeout",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--stats-interval",
                "900y",
            ],
            "--stats-interval",
        ),
    ];
    for (args, expect) in cases {
        let o = udptee(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: usage errors exit 2: {err}"
        );
        assert!(
            err.contains(expect),
            "{args:?}: the message names {expect:?}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{args:?}: no panic: {err}"
        );
    }
}

#[test]
fn an_address_in_use_is_a_clear_start_up_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = udptee(&["--listen", &addr, "--to", "127.0.0.1:9"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("binding {addr}")) && err.contains("in use"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn sigterm_drains_and_prints_the_final_accounting() {
    let sink = Sink::new(false);
    let (mut child, listen) = spawn_udptee(
        &sink,
        &[
            "--stats-interval",
            "100ms",
            "--max-datagram",
            "1000",
            "--admin",
            "127.0.0.1:0",
        ],
        &[],
    );
    wait_bound(&mut child, listen);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..1000 {
        client.send_to(&vec![b'x'; i % 900], listen).unwrap();
    }
    client.send_to(&[0u8; 5000], listen).unwrap(); // oversized: truncated, sent nowhere
    wait_until(
        "the datagrams to reach the sink",
        Duration::from_secs(20),
        || sink.received() >= 1000,
    );
    std::thread::sleep(Duration::from_millis(300)); // at least one stats line
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SIGTERM is a clean exit 0: {err}");
    assert!(
        err.contains("receive buffer per worker socket"),
        "the granted rcvbuf is logged: {err}"
    );
    assert!(
        err.contains("rx ") && err.contains("/s, received total"),
        "stats lines are logged: {err}"
    );
    assert!(
        err.contains("final: received 1001 datagrams"),
        "final accounting: {err}"
    );
    assert!(err.contains("truncated 1"), "{err}");
    assert!(
        err.contains("forwarded 1000") && err.contains("unaccounted 0"),
        "{err}"
    );
    assert_eq!(sink.finish().0.len(), 1000);
}

#[test]
fn a_pool_larger_than_memory_is_refused_not_a_crash() {
    // Eight targets of 4 GiB of backlog each: more than this 24 GiB host has.
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--queue-bytes",
        "4GiB",
        "--admin",
        "off",
    ];
    let targets: Vec<String> = (1..=8).map(|p| format!("127.0.0.1:{p}")).collect();
    for t in &targets {
        args.extend(["--to", t.as_str()]);
    }
    let o = udptee(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("udptee needs") && err.contains("--queue-bytes"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let many: Vec<String> = (1..=300).map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--listen", "127.0.0.1:0"];
    for t in &many {
        args.extend(["--to", t.as_str()]);
    }
    let o = udptee(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(2),
        "too many targets is a usage error: {err}"
    );
    assert!(err.contains("number of targets"), "{err}");
}

/// SIGHUP re-reads the file: a valid change is applied, an invalid file is refused with its line and
/// key while forwarding goes on, and the process never stops for it.
#[test]
fn sighup_reloads_and_an_invalid_file_keeps_forwarding() {
    let a = Sink::new(false);
    let b = Sink::new(false);
    let listen = free_addr();
    let dir = std::env::temp_dir().join(format!("udptee-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("udptee.toml");
    let file = |targets: &[(&str, std::net::SocketAddr)]| {
        let mut t = format!("listen = \"{listen}\"\nadmin = \"off\"\nstats-interval = \"0s\"\n");
        for (n, addr) in targets {
            t.push_str(&format!("[[target]]\nname = \"{n}\"\naddr = \"{addr}\"\n"));
        }
        std::fs::write(&path, t).unwrap();
    };
    file(&[("a", a.addr)]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_udptee"))
        .args(["--config", path.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_bound(&mut child, listen);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"one", listen).unwrap();
    wait_until("a to get one", Duration::from_secs(10), || {
        a.received() == 1
    });

    file(&[("a", a.addr), ("b", b.addr)]);
    signal(&child, "-HUP");
    wait_until("b to be added", Duration::from_secs(10), || {
        client.send_to(b"probe", listen).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        b.received() > 0
    });

    std::fs::write(&path, format!("listen = \"{listen}\"\nqueue-depth = -1\n")).unwrap();
    signal(&child, "-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP never stops udptee"
    );
    let (before_a, before_b) = (a.received(), b.received());
    client.send_to(b"after", listen).unwrap();
    wait_until("forwarding to go on", Duration::from_secs(10), || {
        a.received() > before_a && b.received() > before_b
    });
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("udptee.toml:2:")
            && err.contains("queue-depth")
            && err.contains("reload refused"),
        "the error names the line and key: {err}"
    );
    assert!(err.contains("reloaded the configuration"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Two instances started at the same moment on one port: exactly one serves it, the other exits 1
/// with one clear line, every time (SO_REUSEPORT alone would let both join and split the traffic).
#[test]
fn concurrent_starts_on_one_port_leave_exactly_one() {
    let sink = Sink::new(false);
    let target = sink.addr.to_string();
    for round in 0..10 {
        let listen = free_addr().to_string();
        let start = || {
            Command::new(BIN)
                .args(["--listen", &listen, "--to", &target, "--admin", "off"])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut pair = [start(), start()];
        let begun = std::time::Instant::now();
        let mut exited = Vec::new();
        while exited.is_empty() && begun.elapsed() < Duration::from_secs(10) {
            for (i, c) in pair.iter_mut().enumerate() {
                if c.try_wait().unwrap().is_some() {
                    exited.push(i);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            exited.len(),
            1,
            "round {round}: exactly one refuses to start"
        );
        let [a, b] = pair;
        let (loser, mut winner) = if exited[0] == 0 { (a, b) } else { (b, a) };
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            winner.try_wait().unwrap().is_none(),
            "round {round}: the other one runs"
        );
        let out = loser.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "round {round}: {err}");
        assert!(
            err.contains(&format!("binding {listen}")) && err.contains("in use")
                || err.contains("another udptee serves"),
            "round {round}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        signal(&winner, "-TERM");
        assert!(winner.wait().unwrap().success());
    }
    let _ = sink.finish();
}

/// `--user nobody` started as root: every thread ends up as nobody with no capability, and it still
/// forwards and drains. An unknown user is a one-line start-up error.
#[test]
fn user_drops_every_privilege_after_binding() {
    let o = udptee(&[
        "--listen",
        "127.0.0.1:0",
        "--to",
        "127.0.0.1:9",
        "--user",
        "no-such-user-here",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--user") && err.contains("no such user"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    if !nix::unistd::Uid::effective().is_root() {
        skip_part("skipped the privilege drop: this test must run as root to see one");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a nobody user");
    let sink = Sink::new(false);
    let (mut child, listen) = spawn_udptee(&sink, &["--user", "nobody", "--admin", "off"], &[]);
    wait_bound(&mut child, listen);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The drop happens after binding; wait for it, then check every thread.
    let pid = child.id();
    wait_until("the switch to nobody", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| s.contains(&format!("Uid:\t{0}\t{0}\t{0}", nobody.uid)))
    });
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_owned()
        };
        let uid = nobody.uid.to_string();
        let gid = nobody.gid.to_string();
        assert_eq!(
            field("Uid:"),
            [&*uid, &*uid, &*uid, &*uid].join("\t"),
            "{status}"
        );
        assert_eq!(
            field("Gid:"),
            [&*gid, &*gid, &*gid, &*gid].join("\t"),
            "{status}"
        );
        assert_eq!(field("Groups:"), gid, "{status}");
        for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"] {
            assert_eq!(field(cap), "0000000000000000", "{cap} in {status}");
        }
    }
    for _ in 0..100 {
        client.send_to(b"as nobody", listen).unwrap();
    }
    wait_until(
        "the datagrams to reach the sink",
        Duration::from_secs(10),
        || sink.received() >= 100,
    );
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("running as this user from now on"), "{err}");
    assert!(err.contains("forwarded 100"), "{err}");
    let _ = sink.finish();
}

/// GET `path` from an admin listener: (status, body).
fn get(admin: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// With stderr unwritable (a full disk, or a pipe whose reader went away), udptee keeps forwarding,
/// stays ready, counts the lost log lines and still stops cleanly: logging never takes the data path
/// down.
#[test]
fn an_unwritable_stderr_costs_only_log_lines() {
    for case in ["/dev/full", "closed pipe"] {
        let sink = Sink::new(false);
        let closed = free_addr().to_string(); // nothing listens: warnings every interval
        let listen = free_addr();
        let admin = free_tcp();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--listen",
            &listen.to_string(),
            "--to",
            &sink.addr.to_string(),
            "--to",
            &closed,
            "--admin",
            &admin.to_string(),
            "--stats-interval",
            "100ms",
        ]);
        let mut child = if case == "/dev/full" {
            cmd.stderr(std::fs::File::create("/dev/full").unwrap())
                .spawn()
                .unwrap()
        } else {
            let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
            drop(child.stderr.take()); // the reader is gone: every write is EPIPE
            child
        };
        wait_bound(&mut child, listen);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..2000u32 {
            client.send_to(&i.to_be_bytes(), listen).unwrap();
            if i % 200 == 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        wait_until(
            &format!("{case}: every datagram to reach the sink"),
            Duration::from_secs(20),
            || sink.received() >= 2000,
        );
        assert_eq!(get(admin, "/readyz").0, 200, "{case}: still ready");
        let dropped = |body: &str| -> u64 {
            body.lines()
                .find_map(|l| l.strip_prefix("udptee_log_lines_dropped_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        wait_until(
            &format!("{case}: the lost log lines to be counted"),
            Duration::from_secs(10),
            || dropped(&get(admin, "/metrics").1) > 0,
        );
        assert!(child.try_wait().unwrap().is_none(), "{case}: still running");
        signal(&child, "-TERM");
        let status = child.wait().unwrap();
        assert!(status.success(), "{case}: a clean stop, exit 0: {status:?}");
        assert_eq!(sink.finish().0.len(), 2000, "{case}: nothing lost");
    }
}

/// Threads and resident memory of a process (from /proc).
fn threads_and_rss(pid: u32) -> (usize, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    (field("Threads:") as usize, field("VmRSS:") * 1024)
}

/// The admin listener against hostile clients: a huge header line, a huge URL, junk, hundreds of idle
/// connections and a slowloris trickle. Each gets a 4xx or is closed, nothing is echoed, no thread or
/// memory grows, every connection is gone within the header timeout, and it answers again after.
#[test]
fn the_admin_listener_is_bounded() {
    use std::io::{Read as _, Write as _};
    let sink = Sink::new(false);
    let admin = free_tcp();
    let (mut child, listen) = spawn_udptee(&sink, &["--admin", &admin.to_string()], &[]);
    wait_bound(&mut child, listen);
    wait_admin(admin);
    // Every thread started (ready), and the status sampler's first turn taken.
    wait_until("ready", Duration::from_secs(10), || {
        http(admin, "GET", "/readyz", "", "").0 == 200
    });
    std::thread::sleep(Duration::from_millis(1200));
    let pid = child.id();
    let (threads, rss) = threads_and_rss(pid);

    // A 200 MB header line: refused after the 16 KiB limit, not buffered.
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A server that stops reading without closing would block the writer: time out instead.
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ").unwrap();
    let chunk = vec![b'a'; 64 << 10];
    let mut written = 0usize;
    while written < 200 << 20 {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(
        written < 8 << 20,
        "the connection is closed long before 200 MB ({written} bytes taken)"
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // A 10 MB URL: a 4xx without the URL in it.
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let url = format!("/{}", "Z".repeat(10 << 20));
    let _ = s.write_all(format!("GET {url} HTTP/1.1\r\n\r\n").as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer:.200}"
    );
    assert!(!answer.contains("ZZZZ"), "input is never echoed");

    // Junk: 400.
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x16\x03\x01\x00\xa5junk\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "junk gets 400: {answer}"
    );

    // 300 idle connections and one that trickles a byte every 500 ms.
    let idle: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(admin).ok())
        .collect();
    let mut loris = std::net::TcpStream::connect(admin).unwrap();
    let started = std::time::Instant::now();
    let (threads_now, rss_now) = threads_and_rss(pid);
    // The admin's own blocking pool (at most 4 threads, for answers that take the registry's lock)
    // may have started; nothing else may.
    assert!(
        threads_now <= threads + 4,
        "no thread per connection: {threads} -> {threads_now}"
    );
    assert!(
        rss_now < rss + (16 << 20),
        "resident memory stays flat: {rss} -> {rss_now} bytes"
    );
    let mut trickled = 0;
    for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
        if loris.write_all(&[*b]).is_err() {
            break;
        }
        trickled += 1;
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "a slowloris connection is closed ({trickled} bytes trickled)"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            matches!(c.read(&mut buf), Ok(0) | Err(_)),
            "every idle connection is closed"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "within the header timeout"
    );
    assert_eq!(get(admin, "/healthz").0, 200, "answers again");
    assert!(threads_and_rss(pid).0 <= threads + 4);
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let _ = sink.finish();
}

/// Each flag edge and each loop spelling of the hardening issue: exit 2 with one line naming the
/// problem, no panic and no backtrace even with RUST_BACKTRACE=1.
#[test]
fn flag_edges_and_loop_spellings_are_one_line_errors() {
    let port = free_addr().port();
    let listen = format!("127.0.0.1:{port}");
    let wildcard = format!("0.0.0.0:{port}");
    let mut cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--max-datagram".into(), "1.5".into()],
            "whole number of bytes",
        ),
        (
            vec!["--rcvbuf".into(), "0".into()],
            "--rcvbuf must be between",
        ),
        (
            vec!["--stats-interval".into(), "1ns".into()],
            "at least 100ms",
        ),
        (
            vec!["--log-level".into(), "nonsense".into()],
            "--log-level \"nonsense\"",
        ),
        (vec!["--cpus".into(), "a".into()], "--cpus \"a\""),
        (
            vec!["--to".into(), format!("[::ffff:127.0.0.1]:{port}")],
            "forward to itself",
        ),
        (
            vec!["--to".into(), format!("localhost:{port}")],
            "forward to itself",
        ),
        (vec!["--to".into(), listen.clone()], "forward to itself"),
        (vec!["--to".into(), "127.0.0.1:0".into()], "port 0"),
        (
            vec![
                "--to".into(),
                "127.0.0.1:9".into(),
                "--to".into(),
                "[::ffff:127.0.0.1]:9".into(),
            ],
            "the same address",
        ),
    ];
    // A wildcard listener and one of this host's own (non-loopback) addresses on the same port.
    let own = nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .find(|ip| !ip.is_loopback());
    match own {
        Some(ip) => cases.push((
            vec![
                "--listen".into(),
                wildcard.clone(),
                "--to".into(),
                format!("{ip}:{port}"),
            ],
            "forward to itself",
        )),
        None => println!(
            "no non-loopback IPv4 address here: the wildcard-and-own-address case is skipped"
        ),
    }
    for (extra, expect) in cases {
        let mut args = Vec::new();
        if !extra.iter().any(|a| a == "--listen") {
            args.extend(["--listen".to_string(), listen.clone()]);
        }
        if !extra.iter().any(|a| a == "--to") {
            args.extend(["--to".into(), "127.0.0.1:9".into()]);
        }
        args.extend(extra);
        let o = Command::new(BIN)
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: names {expect:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("stack backtrace"),
            "{args:?}: {err}"
        );
        // clap's own usage errors add its "For more information, try '--help'." hint.
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {err}");
    }
}

/// What the kernel queued on the listen socket before SIGTERM is read and forwarded, not lost at
/// close: with udptee stopped (SIGSTOP), 40,000 datagrams wait in its socket; SIGTERM then SIGCONT,
/// and every one reaches the target.
#[test]
fn sigterm_forwards_what_the_socket_already_holds() {
    let sink = Sink::new(false);
    let (mut child, listen) = spawn_udptee(&sink, &["--admin", "off", "--rcvbuf", "128MiB"], &[]);
    wait_bound(&mut child, listen);
    signal(&child, "-STOP");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..40_000u32 {
        client.send_to(&i.to_be_bytes(), listen).unwrap();
    }
    signal(&child, "-TERM");
    signal(&child, "-CONT");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("received 40000 datagrams"), "{err}");
    wait_until("the sink to get all", Duration::from_secs(10), || {
        sink.received() >= 40_000
    });
    assert_eq!(sink.finish().0.len(), 40_000);
}

/// The smaller edges of users and socket files: `--unix-owner nosuch` is reported as
/// `--unix-owner`; a regular file at `--control-socket` is refused, never deleted; and as root,
/// `--user root` says it keeps every privilege, and under `--user nobody` the listener's socket file
/// in a sticky directory (as /tmp) is still removed at exit.
#[test]
fn users_and_socket_files_at_the_edges() {
    let dir = std::env::temp_dir().join(format!("udptee-cli-edges-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listen = format!("unixgram://{}", dir.join("l.sock").display());
    let o = udptee(&[
        "--listen",
        &listen,
        "--to",
        "127.0.0.1:9",
        "--unix-owner",
        "nosuch",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--unix-owner") && !err.contains("--user"),
        "the flag that named it: {err}"
    );

    // A regular file where the control socket goes: kept, and said so.
    let precious = dir.join("precious");
    std::fs::write(&precious, "keep me").unwrap();
    let sink = Sink::new(false);
    let control = precious.to_str().unwrap();
    let (mut child, at) = spawn_udptee(&sink, &["--control-socket", control], &[]);
    wait_bound(&mut child, at);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a socket; refusing to replace it"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    let _ = sink.finish();

    if !nix::unistd::Uid::effective().is_root() {
        skip_part("skipped --user root and --user nobody: this part must run as root");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let sink = Sink::new(false);
    let (mut child, at) = spawn_udptee(&sink, &["--user", "root"], &[]);
    wait_bound(&mut child, at);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("every privilege is kept") && !err.contains("no capabilities"),
        "{err}"
    );
    let _ = sink.finish();

    use std::os::unix::fs::PermissionsExt;
    let sticky = dir.join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let path = sticky.join("l.sock");
    let listen = format!("unixgram://{}", path.display());
    let mut child = util::udptee_child(&listen, "127.0.0.1:9", &["--user", "nobody"]);
    wait_until("the socket file", Duration::from_secs(10), || path.exists());
    let pid = child.id();
    wait_until("the switch to nobody", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| s.contains("Uid:\t65534\t65534"))
    });
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(!path.exists(), "the socket file is removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}
