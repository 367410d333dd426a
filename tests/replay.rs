//! `udptee replay` as a user runs it, on captures made by tcpdump and editcap (tests/data): pcap,
//! pcapng and Linux cooked v2 frames deliver the same 24 datagrams byte for byte, in order; non-UDP
//! frames are skipped and counted; truncated and corrupted files are an error naming the offset,
//! exit 1 and no panic, after reporting what was sent; bad flags exit 2; `--speed 1` keeps the
//! recorded timing and `--speed max` does not wait.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_udptee");

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The 24 datagrams the fixtures hold, in capture order.
fn expected() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for i in 0..20usize {
        let mut line = format!("fixture.v4.{i}:{i}|c|#seq:{i}").into_bytes();
        line.extend(std::iter::repeat_n(b'x', i * 50));
        v.push(line);
        if i % 5 == 0 {
            v.push(format!("fixture.v6.{i}:{i}|g").into_bytes());
        }
    }
    v
}

fn replay(args: &[&str]) -> Output {
    Command::new(BIN).arg("replay").args(args).output().unwrap()
}

/// A sink that keeps every payload.
fn sink_payloads(sink: Sink, n: usize) -> Vec<(usize, u64)> {
    wait_until("the datagrams", Duration::from_secs(10), || {
        sink.received() >= n
    });
    std::thread::sleep(Duration::from_millis(50));
    sink.finish().0
}

#[test]
fn every_capture_format_replays_the_same_datagrams() {
    let want: Vec<(usize, u64)> = expected().iter().map(|d| fingerprint(d)).collect();
    for (file, not_udp) in [("lo.pcap", 2), ("lo.pcapng", 2), ("any.pcap", 0)] {
        let sink = Sink::new(false);
        let o = replay(&[
            data(file).to_str().unwrap(),
            "--to",
            &sink.addr.to_string(),
            "--speed",
            "max",
        ]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{file}: {out} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("replayed 24 datagrams"), "{file}: {out}");
        assert!(out.contains(&format!("not_udp {not_udp}")), "{file}: {out}");
        assert!(
            out.contains("24 copies sent, 0 send errors"),
            "{file}: {out}"
        );
        assert!(
            sink_payloads(sink, 24) == want,
            "{file}: every payload, byte for byte, in order"
        );
    }
}

#[test]
fn several_targets_loops_and_a_port_filter() {
    let (a, b) = (Sink::new(false), Sink::new(true));
    let o = replay(&[
        data("lo.pcap").to_str().unwrap(),
        "--to",
        &a.addr.to_string(),
        "--to",
        &b.addr.to_string(),
        "--speed",
        "max",
        "--loop",
        "3",
    ]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("replayed 72 datagrams") && out.contains("144 copies sent"),
        "{out}"
    );
    assert_eq!(sink_payloads(a, 72).len(), 72);
    assert_eq!(sink_payloads(b, 72).len(), 72, "IPv6 targets too");
    let o = replay(&[
        data("lo.pcap").to_str().unwrap(),
        "--to",
        "127.0.0.1:9",
        "--port",
        "4242",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("replayed 0 datagrams") && out.contains("other_port 24"),
        "{out}"
    );
}

#[test]
fn speed_one_keeps_the_recorded_timing() {
    // The fixture spans ~200 ms (20 sends 10 ms apart).
    let sink = Sink::new(false);
    let to = sink.addr.to_string();
    // Replays the fixture with one pacing flag; returns how long it took.
    let timed = |flag: &str, value: &str| {
        let started = Instant::now();
        let o = replay(&[data("lo.pcap").to_str().unwrap(), "--to", &to, flag, value]);
        assert!(o.status.success(), "{flag} {value}");
        started.elapsed()
    };
    let took = timed("--speed", "1");
    assert!(took >= Duration::from_millis(180), "as recorded: {took:?}");
    let fast = timed("--speed", "4");
    assert!(fast < took, "four times faster: {fast:?} vs {took:?}");
    let paced = timed("--pps", "200");
    assert!(
        paced >= Duration::from_millis(100),
        "24 datagrams at 200/s: {paced:?}"
    );
    assert_eq!(sink_payloads(sink, 72).len(), 72);
}

#[test]
fn truncated_and_corrupt_files_are_errors_with_the_offset() {
    let dir = std::env::temp_dir().join(format!("udptee-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sink = Sink::new(false);
    let to = sink.addr.to_string();
    for source in ["lo.pcap", "lo.pcapng"] {
        let bytes = std::fs::read(data(source)).unwrap();
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        for cut in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 7] {
            cases.push((format!("cut at {cut}"), bytes[..cut].to_vec()));
        }
        // The first record's captured length (pcap), or the block length of the first block after
        // the section header (pcapng), made huge, then made zero.
        let at = if source.ends_with("pcapng") {
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize + 4
        } else {
            24 + 8
        };
        for fill in [0xffu8, 0x00u8] {
            let mut c = bytes.clone();
            c[at..at + 4].fill(fill);
            cases.push((format!("length at {at} filled with {fill:#x}"), c));
        }
        for (what, content) in cases {
            let path = dir.join("bad.cap");
            std::fs::write(&path, &content).unwrap();
            let o = replay(&[path.to_str().unwrap(), "--to", &to, "--speed", "max"]);
            let err = String::from_utf8_lossy(&o.stderr);
            let out = String::from_utf8_lossy(&o.stdout);
            assert_eq!(o.status.code(), Some(1), "{source} {what}: {err}");
            assert!(
                err.contains("byte offset"),
                "{source} {what}: names the offset: {err}"
            );
            assert!(!err.contains("panicked"), "{source} {what}: {err}");
            assert!(
                err.len() < 300,
                "{source} {what}: one short line, never the file's bytes: {err:.300}"
            );
            assert!(
                out.contains("replayed"),
                "{source} {what}: what was sent before: {out}"
            );
        }
    }
    std::fs::write(dir.join("junk.cap"), b"this is not a capture at all").unwrap();
    let o = replay(&[dir.join("junk.cap").to_str().unwrap(), "--to", &to]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a pcap or pcapng file"));
    let o = replay(&[dir.join("missing.cap").to_str().unwrap(), "--to", &to]);
    assert_eq!(o.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = sink.finish();
}

#[test]
fn bad_replay_flags_exit_2() {
    let f = data("lo.pcap");
    let f = f.to_str().unwrap();
    for args in [
        vec![f],
        vec![f, "--to", "127.0.0.1:9", "--speed", "0"],
        vec![f, "--to", "127.0.0.1:9", "--speed", "fast"],
        vec![f, "--to", "127.0.0.1:9", "--pps", "-5"],
        vec![f, "--to", "127.0.0.1:9", "--loop", "0"],
        vec![f, "--to", "127.0.0.1:0"],
        vec![f, "--to", "nonsense"],
    ] {
        let o = replay(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A pace too slow or too fast to mean anything is a flag error naming its bounds, never a panic or
/// a replay that waits for ever.
#[test]
fn out_of_range_paces_are_refused_with_their_bounds() {
    let f = data("lo.pcap");
    let f = f.to_str().unwrap();
    for (flag, value, bound) in [
        ("--speed", "1e-308", "0.001"),
        ("--speed", "1e-12", "0.001"),
        ("--speed", "1e7", "1000000"),
        ("--speed", "NaN", "0.001"),
        ("--pps", "1e-300", "0.01"),
        ("--pps", "inf", "0.01"),
    ] {
        let start = Instant::now();
        let mut child = Command::new(BIN)
            .args(["replay", f, "--to", "127.0.0.1:9", flag, value])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("replay {flag} {value} still runs after 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{flag} {value}: {err}");
        assert!(
            err.contains(bound),
            "{flag} {value}: the message states the bound: {err}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

/// SIGINT or SIGTERM during a replay stops it between datagrams and still prints what was sent.
#[test]
fn a_signal_stops_a_replay_with_its_summary() {
    for sig in ["-INT", "-TERM"] {
        let sink = Sink::new(false);
        let child = Command::new(BIN)
            .args([
                "replay",
                data("lo.pcap").to_str().unwrap(),
                "--to",
                &sink.addr.to_string(),
                "--pps",
                "20",
                "--loop",
                "100",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("some datagrams", Duration::from_secs(10), || {
            sink.received() >= 5
        });
        signal(&child, sig);
        let start = Instant::now();
        let o = child.wait_with_output().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{sig}: stopped promptly"
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(130), "{sig}: {out}");
        assert!(
            out.starts_with("replayed ") && out.contains("stopped early by a signal"),
            "{sig}: the summary is printed: {out}"
        );
        let sent: u64 = out
            .split(" copies sent")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(sent >= 5, "{sig}: the summary counts what was sent: {out}");
    }
}
