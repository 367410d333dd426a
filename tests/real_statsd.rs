//! A real statsd daemon (Etsy's, from npm) behind a filtered udptee target, fed by a real DogStatsD
//! client library (Datadog's Python `datadog`, buffered: multi-line datagrams, tags, events and
//! service checks). The filtered copy still parses in statsd (no bad line) with exactly the totals
//! the client sent for the names it keeps; an unfiltered target gets every datagram byte for byte.
//! And statsd lines over TCP, from many connections cut anywhere, through a tcp:// listener and a
//! tcp:// target into statsd's own TCP server (`servers/tcp`), give the totals a direct run gives.
//!
//! Needs `node` with statsd installed where `.ci/packages.sh` puts it (target/ci-tools, or
//! `UDPTEE_STATSD_JS=/path/to/stats.js`) and Python with `datadog`; skips, saying why, without them.

mod util;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use udptee::statsd::filter::LineSettings;
use util::*;

/// Etsy statsd's stats.js, or `None` after saying the test skips without it.
fn statsd_js() -> Option<PathBuf> {
    let p = std::env::var_os("UDPTEE_STATSD_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/ci-tools/node_modules/statsd/stats.js")
        });
    if !p.exists() {
        skip_witness(
            "skipped: Etsy statsd not installed (run .ci/packages.sh, or set UDPTEE_STATSD_JS)",
        );
        return None;
    }
    Some(p)
}

/// One command on statsd's management port; its answer up to `END`.
fn mgmt(port: u16, command: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    while !out.contains("END") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    // Let statsd close first: a close with its last bytes unread would reset the connection,
    // and statsd 0.9 dies of an unhandled ECONNRESET.
    let _ = s.write_all(b"quit\n");
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    out
}

/// `'key': value` from statsd's `counters` dump.
fn counter(dump: &str, key: &str) -> Option<u64> {
    dump.lines().find_map(|l| {
        let l = l.trim().trim_end_matches(',');
        let rest = l.strip_prefix(&format!("'{key}': "))?;
        rest.trim().parse().ok()
    })
}

#[test]
fn a_filtered_copy_parses_in_a_real_statsd() {
    let Some(js) = statsd_js() else {
        return;
    };
    let python_ok = Command::new("python3")
        .args(["-c", "import datadog"])
        .status()
        .is_ok_and(|s| s.success());
    if !python_ok {
        skip_witness("skipped: the Python datadog client is not installed (pip install datadog)");
        return;
    }
    let dir = temp_dir("statsd", "udp");
    let (statsd, port, mgmt_port) = start_statsd(&js, &dir, Server::Udp);

    let raw = Sink::new(false);
    let statsd_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let fwd = forwarder(false, &[raw.addr, statsd_addr], |c| {
        c.max_datagram = 65535;
        c.targets[1].lines = LineSettings {
            include: vec!["app.*".into()],
            exclude: vec!["app.debug.*".into()],
            prefix: "shadow.".into(),
            ..LineSettings::default()
        };
    });
    // The client: buffered, so several lines per datagram; metrics with tags, an event and a
    // service check, which Etsy statsd does not parse: the include keeps them out of its copy.
    // (statsd writes the tag `route:/api` as `route=-api`.)
    let script = format!(
        r#"
from datadog.dogstatsd import DogStatsd
s = DogStatsd(host="127.0.0.1", port={port}, disable_buffering=False, disable_telemetry=True, max_buffer_len=1400)
import time
for i in range(2000):
    if i % 50 == 0:
        # statsd reads on one Node.js thread with the kernel's default buffer: pace the client
        # so a busy CI machine cannot overflow it (udptee would report that as receiver drops).
        s.flush()
        time.sleep(0.01)
    s.increment("app.requests", tags=["env:prod", "route:/api"])
    s.increment("app.debug.noise")
    s.increment("other.requests")
    s.gauge("app.queue", i)
    s.timing("app.latency", 12)
    if i % 100 == 0:
        s.event("deploy", "v2 rolled out", tags=["env:prod"])
        s.service_check("db.health", 0, tags=["env:prod"])
s.flush()
s.close_socket()
"#,
        port = fwd.local_addr().port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(&fwd, "udptee to send everything", || {
        let s = fwd.snapshot();
        s.received() > 0
            && s.unaccounted(0) == 0
            && s.unaccounted(1) == 0
            && raw.received() as u64 == s.received()
    });
    std::thread::sleep(Duration::from_millis(500));
    let snap = fwd.shutdown();
    let dump = mgmt(mgmt_port, "counters");
    drop(statsd);
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(
        counter(&dump, "shadow.app.requests;env=prod;route=-api"),
        Some(2000),
        "every kept counter arrived, renamed, with its tags: {dump}\nudptee's view: {snap}"
    );
    assert_eq!(
        counter(&dump, "statsd.bad_lines_seen"),
        Some(0),
        "no line statsd could not parse: {dump}"
    );
    for gone in [
        "app.debug.noise",
        "other.requests",
        "shadow.app.debug.noise",
        "shadow.other.requests",
    ] {
        assert!(!dump.contains(gone), "{gone} was filtered out: {dump}");
    }
    let (seen, _) = raw.finish();
    assert_eq!(
        seen.len() as u64,
        snap.received(),
        "the unfiltered target got every datagram"
    );
    assert_eq!(
        seen.iter().map(|(len, _)| *len as u64).sum::<u64>(),
        snap.received_bytes(),
        "byte for byte"
    );
    assert!(snap.targets[1].lines(udptee::metrics::counters::LineOutcome::Filtered) > 0);
    assert_accounted(&snap);
}

/// Which of Etsy statsd's servers to run.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    Udp,
    Tcp,
}

/// Starts Etsy statsd with its UDP or TCP server on a free port, flushing never (the counters stay
/// for `mgmt`); returns it, its port and its management port once both answer.
fn start_statsd(js: &std::path::Path, dir: &std::path::Path, server: Server) -> (Reap, u16, u16) {
    let mgmt_port = free_tcp().port();
    let (port, listen) = match server {
        Server::Udp => {
            let port = free_addr().port();
            (port, format!("address: \"127.0.0.1\", port: {port}"))
        }
        Server::Tcp => {
            let port = free_tcp().port();
            let s = format!(
                "servers: [{{ server: \"./servers/tcp\", address: \"127.0.0.1\", port: {port} }}]"
            );
            (port, s)
        }
    };
    let conf = dir.join(format!("statsd-{port}.js"));
    std::fs::write(
        &conf,
        format!(
            "{{ {listen}, mgmt_address: \"127.0.0.1\", mgmt_port: {mgmt_port}, backends: [], flushInterval: 3600000, deleteCounters: false }}"
        ),
    )
    .unwrap();
    let child = Command::new("node")
        .arg(js)
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", mgmt_port)).is_err()
        || (server == Server::Tcp && TcpStream::connect(("127.0.0.1", port)).is_err())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "statsd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Reap(child), port, mgmt_port)
}

/// Kills a child at the end of the test, passed or not.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Each of `clients` connections' statsd lines, as bytes: counters, gauges and timers.
fn tcp_workload(clients: usize, lines: usize) -> Vec<Vec<u8>> {
    (0..clients)
        .map(|c| {
            let mut wire = Vec::new();
            for i in 0..lines {
                let line = match i % 3 {
                    0 => format!("tcp.count.{}:{}|c\n", c % 3, 1 + i % 5),
                    1 => format!("tcp.gauge.{c}:{i}|g\n"),
                    _ => format!("tcp.timer.{}:{}|ms\n", c % 2, i % 100),
                };
                wire.extend_from_slice(line.as_bytes());
            }
            wire
        })
        .collect()
}

/// Writes each client's bytes over its own connection to `to`, cut at uneven places.
fn send_streams(to: SocketAddr, streams: &[Vec<u8>]) {
    let threads: Vec<_> = streams
        .iter()
        .cloned()
        .enumerate()
        .map(|(c, wire)| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(to).unwrap();
                let (mut at, mut cut) = (0, 7 + c);
                while at < wire.len() {
                    let end = (at + cut).min(wire.len());
                    s.write_all(&wire[at..end]).unwrap();
                    at = end;
                    cut = (cut * 13 + 5) % 700 + 1;
                    if at % 5 == 0 {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// statsd's `counters` and `gauges` dumps, keys under `tcp.` and the bad-line count.
fn tcp_totals(mgmt_port: u16) -> Vec<String> {
    let mut out: Vec<String> = ["counters", "gauges"]
        .iter()
        .flat_map(|c| {
            mgmt(mgmt_port, c)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .filter(|l| l.starts_with("'tcp.") || l.starts_with("'statsd.bad_lines_seen'"))
        .collect();
    out.sort();
    out
}

#[test]
fn statsd_lines_over_tcp_through_udptee_reach_etsy_statsds_tcp_server_as_a_direct_run_does() {
    let Some(js) = statsd_js() else {
        return;
    };
    let dir = temp_dir("statsd", "tcp");
    let streams = tcp_workload(8, 3000);
    // The direct run: the clients to statsd's TCP server.
    let (_direct, direct_port, direct_mgmt) = start_statsd(&js, &dir, Server::Tcp);
    send_streams(([127, 0, 0, 1], direct_port).into(), &streams);
    // Through udptee: a tcp:// listener, a tcp:// target.
    let (_teed, teed_port, teed_mgmt) = start_statsd(&js, &dir, Server::Tcp);
    let fwd = forwarder(false, &[], |c| {
        c.targets = vec![udptee::config::TargetSpec::new_tcp(
            "statsd",
            ([127, 0, 0, 1], teed_port).into(),
        )];
        c.streams = vec![udptee::config::StreamListen::Tcp(
            "127.0.0.1:0".parse().unwrap(),
        )];
    });
    let listen = fwd
        .stats()
        .listener_names()
        .iter()
        .find_map(|n| {
            n.strip_prefix("tcp://")
                .map(|a| a.parse::<SocketAddr>().unwrap())
        })
        .unwrap();
    send_streams(listen, &streams);
    let lines = (8 * 3000) as u64;
    wait_for(&fwd, "every line acknowledged by statsd", || {
        let s = fwd.snapshot();
        let l = s.listeners.iter().find(|l| l.kind == "tcp").unwrap();
        l.stream.as_ref().unwrap().lines == lines
            && s.unaccounted(0) == 0
            && s.targets[0].forwarded == s.received()
    });
    // statsd reads what was acknowledged a moment later.
    let expect = tcp_totals(direct_mgmt);
    let start = Instant::now();
    while tcp_totals(teed_mgmt) != expect && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let snap = fwd.shutdown();
    assert!(
        expect.iter().any(|l| l.starts_with("'tcp.count.0'")),
        "{expect:?}"
    );
    assert!(
        expect.contains(&"'statsd.bad_lines_seen': 0".to_owned()),
        "{expect:?}"
    );
    assert_eq!(
        tcp_totals(teed_mgmt),
        expect,
        "the same totals as the direct run\n{snap}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_accounted(&snap);
    assert!(
        snap.received() < lines / 10,
        "lines were packed: {} datagrams",
        snap.received()
    );
}
