//! Backend selection: `--io auto` falls back to recvmmsg with the reason logged when io_uring cannot be
//! set up (simulated here), `--io uring` fails clearly instead, and each backend reports itself.

mod util;

use std::net::UdpSocket;
use std::time::Duration;

use util::{Sink, signal, spawn_udptee, wait_bound, wait_until};

fn run_with_simulated_failure(io: &str) -> (std::process::Child, std::net::SocketAddr, Sink) {
    let sink = Sink::new(false);
    let (child, listen) = spawn_udptee(
        &sink,
        &["--io", io, "--admin", "off"],
        &[("UDPTEE_SIMULATE_URING_FAILURE", "1")],
    );
    (child, listen, sink)
}

#[test]
fn auto_falls_back_to_recvmmsg_and_says_why() {
    let (mut child, listen, sink) = run_with_simulated_failure("auto");
    wait_bound(&mut child, listen);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..300u32 {
        client.send_to(&i.to_le_bytes(), listen).unwrap();
    }
    wait_until(
        "forwarding after the fallback",
        Duration::from_secs(20),
        || sink.received() >= 300,
    );
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let fallback: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("io_uring unavailable; receiving with recvmmsg"))
        .collect();
    assert_eq!(
        fallback.len(),
        1,
        "one log line says the fallback happened: {err}"
    );
    assert!(
        fallback[0].contains("UDPTEE_SIMULATE_URING_FAILURE"),
        "and why: {}",
        fallback[0]
    );
    assert!(
        err.contains("io=\"mmsg\"") || err.contains("io=mmsg"),
        "the start line names the backend: {err}"
    );
    assert!(err.contains("forwarded 300"), "{err}");
    assert_eq!(sink.finish().0.len(), 300);
}

#[test]
fn forced_uring_fails_clearly_when_unavailable() {
    let (child, _, _sink) = run_with_simulated_failure("uring");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--io uring: simulated io_uring setup failure"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn auto_says_which_backend_it_chose_and_why() {
    let sink = Sink::new(false);
    let (mut child, listen) = spawn_udptee(&sink, &["--admin", "off"], &[]);
    wait_bound(&mut child, listen);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let reasons = err
        .lines()
        .filter(|l| l.contains("receiving with recvmmsg") || l.contains("io=\"uring\""))
        .count();
    assert_eq!(
        reasons, 1,
        "exactly one line says which backend auto chose and why: {err}"
    );
}

#[test]
fn forced_mmsg_never_touches_io_uring() {
    let sink = Sink::new(false);
    let fwd = util::forwarder(false, &[sink.addr], |c| {
        c.io_backend = udptee::config::IoBackend::Mmsg
    });
    assert_eq!(fwd.stats().backend(), "mmsg");
    let _ = fwd.shutdown();
}
