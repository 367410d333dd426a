//! The udptee binary as a user runs it: --help, clear one-line errors with non-zero exits for bad input,
//! and SIGTERM draining to a final accounting with exit 0.

mod util;

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::time::Duration;

use util::{Sink, signal, spawn_udptee, wait_bound, wait_until};

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
