//! A real statsd daemon (Etsy's, from npm) behind a filtered udptee target, fed by a real DogStatsD
//! client library (Datadog's Python `datadog`, buffered: multi-line datagrams, tags, events and
//! service checks). The filtered copy still parses in statsd (no bad line) with exactly the totals
//! the client sent for the names it keeps; an unfiltered target gets every datagram byte for byte.
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

fn statsd_js() -> Option<PathBuf> {
    let p = std::env::var_os("UDPTEE_STATSD_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/ci-tools/node_modules/statsd/stats.js")
        });
    p.exists().then_some(p)
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
        skip_witness(
            "skipped: Etsy statsd not installed (run .ci/packages.sh, or set UDPTEE_STATSD_JS)",
        );
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
    let port = free_addr().port();
    let mgmt_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("udptee-statsd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("config.js");
    std::fs::write(
        &conf,
        format!(
            "{{ address: \"127.0.0.1\", port: {port}, mgmt_address: \"127.0.0.1\", mgmt_port: {mgmt_port}, backends: [], flushInterval: 3600000, deleteCounters: false }}"
        ),
    )
    .unwrap();
    let mut statsd = Command::new("node")
        .arg(&js)
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", mgmt_port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "statsd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

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
    let _ = statsd.kill();
    let _ = statsd.wait();
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
