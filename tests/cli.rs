//! The udptee binary as a user runs it: --help, clear one-line errors with non-zero exits for bad input,
//! and SIGTERM draining to a final accounting with exit 0.

mod util;

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::time::Duration;

use util::{Sink, free_addr, signal, spawn_udptee, wait_bound, wait_until};

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
        println!("skipped the privilege drop: this test must run as root to see one");
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
