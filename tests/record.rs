//! The recorder and live taps: what is recorded reads back (with our reader and with tcpdump) with
//! the original addresses, ports, payloads and order, and replays exactly; rotation keeps at most N
//! files of at most the size asked; a full disk and a stalled writer are counted while forwarding
//! loses nothing; the admin verbs answer as documented; a tap sees the traffic and a tap that never
//! reads slows nothing.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use udptee::record::{RecordCounts, RecordSettings};
use udptee::replay::capture::{Skipped, for_each_udp_in};
use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_udptee");

/// Every UDP datagram of a capture: (source, destination, receive time, payload).
fn read_capture(path: &Path) -> Vec<(SocketAddr, SocketAddr, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut skipped = Skipped::default();
    for_each_udp_in(std::fs::File::open(path).unwrap(), &mut skipped, |u| {
        out.push((u.src, u.dst, u.ts_nanos.unwrap_or(0), u.payload.to_vec()));
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{} reads back whole: {e:?}", path.display()));
    assert_eq!(
        skipped.iter().sum::<u64>(),
        0,
        "nothing skipped in {}",
        path.display()
    );
    out
}

fn record_counts(fwd: &udptee::Forwarder) -> RecordCounts {
    fwd.stats().recorder().counts()
}

/// Datagram `i`'s size: mixed, 1 byte to 1400, with a few large ones.
fn size_of_dgram(i: usize) -> usize {
    match i % 100 {
        0 => 1,
        1 => 1900,
        n => 8 + (n * 37 + i) % 1400,
    }
}

#[test]
fn ten_thousand_datagrams_from_two_clients_read_back_and_replay_exactly() {
    on_each_backend(|| {
        let dir = temp_dir("rec", "10k");
        let path = dir.join("traffic.pcap");
        let sink = Sink::new(false);
        let fwd = forwarder(false, &[sink.addr], |c| {
            c.record = Some(RecordSettings::new(&path));
        });
        let clients = [
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        ];
        // Interleaved, paced by the sink so no buffer on the way overflows.
        let mut sent: Vec<Vec<Vec<u8>>> = vec![Vec::new(), Vec::new()];
        for i in 0..10_000usize {
            let c = i % 2;
            let p = payload(c as u32, (i / 2) as u32, size_of_dgram(i));
            clients[c].send_to(&p, fwd.local_addr()).unwrap();
            sent[c].push(p);
            if i % 200 == 199 {
                wait_for(&fwd, "a window through", || sink.received() > i);
            }
        }
        wait_for(&fwd, "all 10,000 through", || sink.received() >= 10_000);
        let listen = fwd.local_addr();
        let snap = fwd.shutdown();
        assert_eq!(snap.received(), 10_000);

        let got = read_capture(&path);
        assert_eq!(got.len(), 10_000, "one record per datagram");
        for (c, client) in clients.iter().enumerate() {
            let from = client.local_addr().unwrap();
            let flow: Vec<&Vec<u8>> = got
                .iter()
                .filter(|(src, ..)| *src == from)
                .map(|(_, _, _, p)| p)
                .collect();
            assert!(
                flow.iter().copied().eq(sent[c].iter()),
                "client {c}: every payload, byte for byte, in order"
            );
        }
        assert!(
            got.iter().all(|(_, dst, ts, _)| *dst == listen && *ts > 0),
            "destination is the listen address; kernel receive times present"
        );
        assert!(
            got.windows(2).all(|w| w[0].2 <= w[1].2),
            "receive times never go backwards"
        );

        // tcpdump reads it too, with the same addresses. -q keeps it from decoding payloads by
        // port: the first ephemeral port, 49152, is also Broadcom's LI-SHIM port.
        match Command::new("tcpdump")
            .args(["-nn", "-q", "-r"])
            .arg(&path)
            .output()
        {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                assert_eq!(text.lines().count(), 10_000, "tcpdump sees every record");
                let first = clients[0].local_addr().unwrap();
                let want = format!(
                    "IP 127.0.0.1.{} > 127.0.0.1.{}: UDP, length {}",
                    first.port(),
                    listen.port(),
                    sent[0][0].len()
                );
                assert!(
                    text.lines().next().unwrap().contains(&want),
                    "{want} in {}",
                    text.lines().next().unwrap()
                );
            }
            _ => skip_witness_part("skipping the tcpdump check: tcpdump is not installed"),
        }

        // Replayed flat out into a sink (with room for the whole unpaced burst): every datagram
        // once, byte-identical, in recorded order.
        let replay_sink = Sink::with_rcvbuf(loopback(false), 128 << 20);
        let o = Command::new(BIN)
            .arg("replay")
            .arg(&path)
            .args(["--to", &replay_sink.addr.to_string(), "--speed", "max"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        wait_until("the replay", Duration::from_secs(20), || {
            replay_sink.received() >= 10_000
        });
        std::thread::sleep(Duration::from_millis(50));
        let (seen, _) = replay_sink.finish();
        let want: Vec<(usize, u64)> = got.iter().map(|(.., p)| fingerprint(p)).collect();
        assert!(seen == want, "replay delivers the recording exactly");
        let _ = sink.finish();
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn ipv6_sources_and_wildcard_destinations_are_recorded() {
    if !ipv6_available() {
        skip("skipping: no IPv6 loopback here");
        return;
    }
    let dir = temp_dir("rec", "v6");
    let path = dir.join("v6.pcap");
    let sink = Sink::new(false);
    let mut config = udptee::Config::new(
        "[::]:0".parse().unwrap(),
        vec![udptee::config::TargetSpec::new("s", sink.addr)],
    );
    config.stats_interval = Duration::ZERO;
    config.max_datagram = 2048;
    config.record = Some(RecordSettings::new(&path));
    let fwd = udptee::Forwarder::start(&config).unwrap();
    let client = UdpSocket::bind("[::1]:0").unwrap();
    let to: SocketAddr = format!("[::1]:{}", fwd.local_addr().port())
        .parse()
        .unwrap();
    for i in 0..50u32 {
        client.send_to(&payload(0, i, 100), to).unwrap();
    }
    wait_for(&fwd, "50 through", || sink.received() >= 50);
    fwd.shutdown();
    let got = read_capture(&path);
    assert_eq!(got.len(), 50);
    assert!(
        got.iter()
            .all(|(src, dst, ..)| *src == client.local_addr().unwrap() && *dst == to),
        "IPv6 source, and the real destination (::1, from IPV6_PKTINFO) of a wildcard listener: {:?}",
        got[0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rotation_keeps_at_most_n_files_of_at_most_the_size() {
    let dir = temp_dir("rec", "rotate");
    let sink = Sink::new(false);
    let max = 128u64 << 10;
    let fwd = forwarder(false, &[sink.addr], |c| {
        let mut r = RecordSettings::new(dir.join("r.pcap"));
        r.max_bytes = Some(max);
        r.keep = Some(3);
        c.record = Some(r);
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_paced(
        &fwd,
        &client,
        0,
        std::iter::repeat_n(1000, 3000),
        200,
        &[&sink],
    );
    wait_for(&fwd, "the recorder to write all 3000", || {
        record_counts(&fwd).recorded == 3000
    });
    let counts = record_counts(&fwd);
    fwd.shutdown();
    let after = {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    };
    assert!(
        counts.files >= 20,
        "3 MB in 128 KiB files opens 20+: {counts:?}"
    );
    assert_eq!(after.len(), 3, "keep 3: {after:?}");
    for f in &after {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= max, "{} is {len} bytes, over {max}", f.display());
        assert!(
            !read_capture(f).is_empty(),
            "{} reads back whole",
            f.display()
        );
    }
    let names: Vec<String> = after
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("r.") && n.ends_with(".pcap")),
        "{names:?}"
    );
    let _ = sink.finish();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rotation_by_age_starts_a_new_file_every_interval() {
    let dir = temp_dir("rec", "age");
    let sink = Sink::new(false);
    let fwd = forwarder(false, &[sink.addr], |c| {
        let mut r = RecordSettings::new(dir.join("a.pcap"));
        r.rotate = Some(Duration::from_secs(1));
        c.record = Some(r);
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = std::time::Instant::now();
    let mut seq = 0u32;
    while start.elapsed() < Duration::from_millis(2500) {
        client
            .send_to(&payload(0, seq, 100), fwd.local_addr())
            .unwrap();
        seq += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_for(&fwd, "the recorder", || {
        record_counts(&fwd).recorded == u64::from(seq)
    });
    fwd.shutdown();
    // A loaded machine may take a while to drain and stop: a file per started second of that too.
    let lasted = start.elapsed().as_secs_f64();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3 && files.len() as f64 <= lasted.ceil() + 1.0,
        "{lasted:.1} s at 1 s per file: {files:?}"
    );
    let total: usize = files.iter().map(|f| read_capture(f).len()).sum();
    assert_eq!(total as u32, seq, "every datagram in exactly one file");
    let _ = sink.finish();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A 256 KiB tmpfs mounted on a directory for the test's life; `None` (the test skips) where
/// mounting is not allowed.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(dir: &Path) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_disk_is_counted_and_forwarding_loses_nothing() {
    let dir = temp_dir("rec", "full");
    let Some(_disk) = TinyDisk::mount(&dir) else {
        skip("skipping: cannot mount a tmpfs here (needs root)");
        return;
    };
    let path = dir.join("full.pcap");
    let sink = Sink::new(false);
    let fwd = forwarder(false, &[sink.addr], |c| {
        c.record = Some(RecordSettings::new(&path));
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = send_paced(
        &fwd,
        &client,
        0,
        std::iter::repeat_n(1000, 2000),
        100,
        &[&sink],
    );
    // The recorder catches up, then everything it did not write is a write_error.
    wait_for(&fwd, "the recorder to account for every datagram", || {
        let c = record_counts(&fwd);
        c.recorded + c.write_error + c.queue_full == 2000
    });
    let c = record_counts(&fwd);
    let fwd_snap = fwd.shutdown();
    assert_eq!(
        fwd_snap.targets[0].forwarded, 2000,
        "forwarding lost nothing"
    );
    let (seen, _) = sink.finish();
    assert!(seen == sent, "the target got every datagram");
    assert!(
        c.write_error > 0 && c.recorded > 0,
        "some written, the rest counted: {c:?}"
    );
    let back = read_capture(&path);
    assert_eq!(
        back.len() as u64,
        c.recorded,
        "the file holds exactly what was counted recorded, and reads back whole (cut back after the failure)"
    );
}

#[test]
fn a_stalled_writer_is_counted_and_forwarding_loses_nothing() {
    let dir = temp_dir("rec", "stall");
    let fifo = dir.join("stalled.pcap");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // A reader that holds the pipe open and never reads: the recorder's writes block once the
    // pipe's 64 KiB are full.
    let reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap()
    };
    let sink = Sink::new(false);
    let fwd = forwarder(false, &[sink.addr], |c| {
        let mut r = RecordSettings::new(&fifo);
        r.queue_bytes = 256 << 10;
        c.record = Some(r);
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = send_paced(
        &fwd,
        &client,
        0,
        std::iter::repeat_n(1000, 5000),
        250,
        &[&sink],
    );
    let c = record_counts(&fwd);
    assert!(
        c.queue_full > 0,
        "the recorder fell behind and said so: {c:?}"
    );
    // The reader goes away: the stuck write fails and the recorder can stop.
    drop(reader);
    let snap = fwd.shutdown();
    assert_eq!(snap.targets[0].forwarded, 5000, "forwarding lost nothing");
    let (seen, _) = sink.finish();
    assert!(seen == sent, "the target got every datagram, in order");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_name_filter_records_only_matching_lines() {
    let dir = temp_dir("rec", "filter");
    let path = dir.join("f.pcap");
    let sink = Sink::new(false);
    let fwd = forwarder(false, &[sink.addr], |c| {
        let mut r = RecordSettings::new(&path);
        r.include = vec!["api.*".into()];
        c.record = Some(r);
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in [
        &b"api.req:1|c\nweb.req:1|c"[..],
        b"web.only:2|g",
        b"api.lat:3|ms|#a:b",
    ] {
        client.send_to(d, fwd.local_addr()).unwrap();
    }
    wait_for(&fwd, "3 through", || sink.received() >= 3);
    wait_for(&fwd, "the recorder", || {
        let c = record_counts(&fwd);
        c.recorded + c.filtered == 3
    });
    fwd.shutdown();
    let got: Vec<Vec<u8>> = read_capture(&path).into_iter().map(|r| r.3).collect();
    assert_eq!(
        got,
        vec![b"api.req:1|c".to_vec(), b"api.lat:3|ms|#a:b".to_vec()],
        "only the matching lines; a datagram left with none is not recorded"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn record_flags_are_checked_at_start_up() {
    for (args, says) in [
        (
            vec!["--record", "/tmp/x.pcap", "--record-keep", "3"],
            "--record-keep needs",
        ),
        (
            vec!["--record", "/tmp/x.pcap", "--record-max-bytes", "1KiB"],
            "--record-max-bytes 1024",
        ),
        (
            vec!["--record", "/tmp/x.pcap", "--record-rotate", "10ms"],
            "--record-rotate",
        ),
        (
            vec![
                "--record",
                "/tmp/x.pcap",
                "--record-include",
                "a[",
                "--record-keep",
                "1",
            ],
            "--record-keep needs",
        ),
        (
            vec!["--record", "/tmp/x.pcap", "--record-include", "a["],
            "--record-include",
        ),
        (
            vec!["--allow", "10.0.0.0/33"],
            "--allow \"10.0.0.0/33\" is not",
        ),
        (vec!["--allow", "10.0.0.1,junk"], "--allow \"junk\" is not"),
    ] {
        let o = Command::new(BIN)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--admin",
                "off",
            ])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    // A directory that does not exist: a clear start-up error, exit 1.
    let o = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--admin",
            "off",
        ])
        .args(["--record", "/nonexistent-dir/x.pcap"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("creating /nonexistent-dir/x.pcap"), "{err}");
}

/// The udptee binary forwarding to `sink` with an admin listener on a free port and `extra` flags,
/// once both its listen socket and its admin listener answer: (process, listen, admin).
fn udptee_with_admin(sink: &Sink, extra: &[&str]) -> (std::process::Child, SocketAddr, SocketAddr) {
    let admin = free_tcp();
    let flags: Vec<String> = ["--admin".to_owned(), admin.to_string()]
        .into_iter()
        .chain(extra.iter().map(|s| (*s).to_owned()))
        .collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (mut child, listen) = spawn_udptee(sink, &flags, &[]);
    wait_bound(&mut child, listen);
    wait_admin(admin);
    (child, listen, admin)
}

#[test]
fn record_verbs_answer_as_documented() {
    let dir = temp_dir("rec", "api");
    let sink = Sink::new(false);
    let configured = dir.join("cfg.pcap");
    let (child, listen, admin) = udptee_with_admin(
        &sink,
        &[
            "--record",
            configured.to_str().unwrap(),
            "--record-start",
            "off",
        ],
    );
    let (code, body) = http(admin, "GET", "/record", "", "");
    assert_eq!(code, 200);
    assert!(body.contains("\"recording\": false"), "{body}");
    assert!(!configured.exists(), "--record-start off records nothing");

    let (code, body) = http(admin, "POST", "/record/start", "", "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"recording\": true"), "{body}");
    let (code, body) = http(admin, "POST", "/record/start", "", "");
    assert_eq!(code, 409, "one recording at a time: {body}");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..10 {
        client.send_to(&payload(0, i, 50), listen).unwrap();
    }
    wait_until("10 through", Duration::from_secs(10), || {
        sink.received() >= 10
    });
    let (code, body) = http(admin, "POST", "/record/stop", "", "");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("cfg.pcap"),
        "the stop names the files: {body}"
    );
    assert_eq!(read_capture(&configured).len(), 10);
    let (code, _) = http(admin, "POST", "/record/stop", "", "");
    assert_eq!(code, 409, "not recording");

    for bad in [
        r#"{"file": "../evil.pcap"}"#,
        r#"{"file": "/etc/passwd"}"#,
        r#"{"file": ".hidden"}"#,
        r#"{"bogus": 1}"#,
        r#"{"max-bytes": "1KiB"}"#,
        "not json",
    ] {
        let (code, body) = http(admin, "POST", "/record/start", "", bad);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(!body.contains("passwd"), "no echo: {body}");
    }
    let (code, body) = http(
        admin,
        "POST",
        "/record/start",
        "",
        r#"{"file": "api.pcap", "max-bytes": "1MiB", "keep": 2}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        dir.join("api.000000.pcap").exists(),
        "a file name from the API lands beside the configured recording, rotated names"
    );
    let (code, _) = http(admin, "GET", "/record/start", "", "");
    assert_eq!(code, 405);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("final: record: offered 10, recorded 10"),
        "{err}"
    );
    let _ = sink.finish();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tap_sees_the_traffic_and_a_stuck_tap_slows_nothing() {
    let sink = Sink::new(false);
    let (child, listen, admin) = udptee_with_admin(&sink, &[]);

    // `udptee tap --count 3 --include 'tap.*'` prints the three matching datagrams.
    let tap = Command::new(BIN)
        .args(["tap", "--admin", &admin.to_string(), "--count", "3"])
        .args(["--include", "tap.*"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let from = client.local_addr().unwrap();
    wait_until("the tap to connect", Duration::from_secs(10), || {
        sample(
            &http(admin, "GET", "/metrics", "", "").1,
            "udptee_tap_clients",
        ) == 1
    });
    for i in 0..6 {
        let line = if i % 2 == 0 {
            format!("tap.seen:{i}|c\nother:1|c")
        } else {
            format!("not.shown:{i}|c")
        };
        client.send_to(line.as_bytes(), listen).unwrap();
    }
    let out = tap.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (k, l) in lines.iter().enumerate() {
        let shown = format!("tap.seen:{}|c", k * 2);
        let want = format!("{from} > {listen} {}B {shown}", shown.len());
        assert!(l.contains(&want), "{want} in {l}");
    }

    // A tap client that never reads: forwarding of 100,000 datagrams is untouched.
    let mut stuck = std::net::TcpStream::connect(admin).unwrap();
    std::io::Write::write_all(&mut stuck, b"GET /tap HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    wait_until("the stuck tap to open", Duration::from_secs(10), || {
        sample(
            &http(admin, "GET", "/metrics", "", "").1,
            "udptee_tap_clients",
        ) == 1
    });
    let big = vec![b'x'; 1000];
    for i in 0..100_000usize {
        client.send_to(&big, listen).unwrap();
        if i % 500 == 499 {
            wait_until("a window through", Duration::from_secs(20), || {
                sink.received() > 6 + i
            });
        }
    }
    wait_until("all through", Duration::from_secs(20), || {
        sink.received() >= 100_006
    });
    let metrics = http(admin, "GET", "/metrics", "", "").1;
    assert!(
        sample(&metrics, "udptee_tap_datagrams_total{outcome=\"dropped\"}") > 0,
        "the stuck tap's misses are counted"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!(
                "udptee_target_forwarded_datagrams_total{{target=\"{}\"}}",
                sink.addr
            )
        ),
        100_006,
        "every copy forwarded while the tap was stuck"
    );
    drop(stuck);
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let (seen, _) = sink.finish();
    assert_eq!(seen.len(), 100_006, "the target got every datagram");
}

#[test]
fn allow_forwards_only_for_listed_senders_and_a_reload_changes_it() {
    let dir = temp_dir("rec", "allow");
    let sink = Sink::new(false);
    let mut config = udptee::Config::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![udptee::config::TargetSpec::new("s", sink.addr)],
    );
    config.stats_interval = Duration::ZERO;
    config.max_datagram = 2048;
    config.allow = udptee::net::allow::parse_cidrs("127.0.0.2/32").unwrap();
    config.record = Some(RecordSettings::new(dir.join("allowed.pcap")));
    let next = std::sync::Arc::new(std::sync::Mutex::new(config.clone()));
    let reload = std::sync::Arc::clone(&next);
    let fwd = udptee::Forwarder::start_with(
        &config,
        Some(Box::new(move || Ok(reload.lock().unwrap().clone()))),
    )
    .unwrap();
    let allowed = UdpSocket::bind("127.0.0.2:0").unwrap();
    let denied = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..100u32 {
        allowed
            .send_to(&payload(1, i, 64), fwd.local_addr())
            .unwrap();
        if i % 2 == 0 {
            denied
                .send_to(&payload(2, i, 64), fwd.local_addr())
                .unwrap();
        }
    }
    wait_for(&fwd, "150 received", || fwd.snapshot().received() >= 150);
    wait_until("100 through", Duration::from_secs(10), || {
        sink.received() >= 100
    });
    let snap = fwd.snapshot();
    let t = &snap.targets[0];
    assert_eq!(
        (t.forwarded, t.source_denied),
        (100, 50),
        "the listed sender's datagrams go out; the other's are counted source_denied"
    );
    assert_eq!(snap.unaccounted(0), 0, "and the books balance");

    // A reload that lists the other sender too.
    next.lock().unwrap().allow = udptee::net::allow::parse_cidrs("127.0.0.1, 127.0.0.2").unwrap();
    fwd.control().reload().unwrap();
    for i in 0..10u32 {
        denied
            .send_to(&payload(2, 1000 + i, 64), fwd.local_addr())
            .unwrap();
    }
    wait_until("the newly allowed sender", Duration::from_secs(10), || {
        sink.received() >= 110
    });
    let snap = fwd.shutdown();
    assert_eq!(
        snap.targets[0].source_denied, 50,
        "nothing denied after the reload"
    );
    let recorded = read_capture(&dir.join("allowed.pcap"));
    assert_eq!(
        recorded.len(),
        110,
        "denied datagrams are not recorded either"
    );
    assert!(
        recorded[..100]
            .iter()
            .all(|(src, ..)| *src == allowed.local_addr().unwrap())
    );
    let (seen, _) = sink.finish();
    assert_eq!(seen.len(), 110);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// udptee runs as root: a recording never follows a symbolic link and never truncates a file it did
/// not create, whether the name comes from the API, `--record` at start-up or rotation.
#[test]
fn recordings_never_follow_links_or_overwrite_files() {
    use std::os::unix::fs::symlink;
    let dir = temp_dir("rec", "links");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let unchanged = |what: &str| {
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "precious\n",
            "{what}: the link's target is untouched"
        );
    };
    // At start-up: --record at a link is refused, with a clear error.
    symlink(&victim, dir.join("boot.pcap")).unwrap();
    let mut boot = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--admin",
            "off",
        ])
        .args(["--record", dir.join("boot.pcap").to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while boot.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = boot.kill();
    let o = boot.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    unchanged("--record at start-up");

    let sink = Sink::new(false);
    let cfg = dir.join("cfg.pcap");
    let (mut child, listen, admin) = udptee_with_admin(
        &sink,
        &["--record", cfg.to_str().unwrap(), "--record-start", "off"],
    );
    // From the API: a name that is a link is a 400; a NUL byte is a 400, not a 503.
    symlink(&victim, dir.join("evil.pcap")).unwrap();
    let (code, body) = http(
        admin,
        "POST",
        "/record/start",
        "",
        r#"{"file": "evil.pcap"}"#,
    );
    assert_eq!(code, 400, "{body}");
    unchanged("POST /record/start");
    symlink(dir.join("nowhere"), dir.join("dangling.pcap")).unwrap();
    let (code, body) = http(
        admin,
        "POST",
        "/record/start",
        "",
        r#"{"file": "dangling.pcap"}"#,
    );
    assert_eq!(code, 400, "a dangling link is no way in either: {body}");
    assert!(!dir.join("nowhere").exists(), "nothing created through it");
    let (code, body) = http(
        admin,
        "POST",
        "/record/start",
        "",
        "{\"file\": \"a\\u0000b.pcap\"}",
    );
    assert_eq!(code, 400, "NUL: {body}");

    // An earlier recording is kept: this one goes to the next numbered name beside it.
    std::fs::write(dir.join("old.pcap"), "an earlier run\n").unwrap();
    let (code, body) = http(
        admin,
        "POST",
        "/record/start",
        "",
        r#"{"file": "old.pcap"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..5 {
        client.send_to(&payload(0, i, 50), listen).unwrap();
    }
    wait_until("5 through", Duration::from_secs(10), || {
        sink.received() >= 5
    });
    let (code, body) = http(admin, "POST", "/record/stop", "", "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        std::fs::read_to_string(dir.join("old.pcap")).unwrap(),
        "an earlier run\n",
        "not truncated"
    );
    assert_eq!(read_capture(&dir.join("old.000000.pcap")).len(), 5);

    // Rotation: a link planted at the next rotated name is passed over.
    symlink(&victim, dir.join("rot.000000.pcap")).unwrap();
    symlink(&victim, dir.join("rot.000001.pcap")).unwrap();
    let (code, body) = http(
        admin,
        "POST",
        "/record/start",
        "",
        r#"{"file": "rot.pcap", "max-bytes": "128KiB"}"#,
    );
    assert_eq!(code, 200, "{body}");
    for i in 0..400 {
        client.send_to(&payload(1, i, 1000), listen).unwrap();
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    wait_until("400 through", Duration::from_secs(10), || {
        sink.received() >= 405
    });
    let (code, body) = http(admin, "POST", "/record/stop", "", "");
    assert_eq!(code, 200, "{body}");
    unchanged("rotation");
    let recorded: usize = (2..10)
        .map(|n| dir.join(format!("rot.{n:06}.pcap")))
        .filter(|p| p.exists())
        .map(|p| read_capture(&p).len())
        .sum();
    assert_eq!(recorded, 400, "every datagram in files udptee created");
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let _ = sink.finish();
    std::fs::remove_dir_all(&dir).unwrap();
}
