//! The admin endpoints and latency dumps: exact values on /metrics, latency counts that equal what was
//! forwarded, 404/405 for wrong requests, and junk or slow admin clients that do not disturb forwarding.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use udptee::DropReason;
use util::*;

/// Minimal HTTP/1.1 request for tests: returns (status, headers+body text).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: udptee\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn with_admin(c: &mut udptee::Config) {
    c.admin = Some("127.0.0.1:0".parse().unwrap());
}

#[test]
fn metrics_report_exact_counts() {
    let sink = Sink::new(false);
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let fwd = forwarder(false, &[sink.addr, closed], |c| {
        with_admin(c);
        c.max_datagram = 1000;
    });
    let admin = fwd.admin_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_paced(
        &fwd,
        &client,
        0,
        (0..1000).map(|i| 1 + i % 900),
        250,
        &[&sink],
    );
    send_paced(
        &fwd,
        &client,
        1,
        [1001, 1500, 5000, 9000, 60000].into_iter(),
        1,
        &[],
    );
    wait_for(&fwd, "both targets to account for everything", || {
        let s = fwd.snapshot();
        s.received() == 1005 && s.unaccounted(0) == 0 && s.unaccounted(1) == 0
    });

    let (status, body) = http(admin, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "the classic text format by default: {body}"
    );
    assert!(
        body.contains("# TYPE udptee_received_datagrams_total counter") && !body.contains("# EOF"),
        "counters are typed for classic parsers"
    );
    let snap = fwd.snapshot();
    let (s, c) = (
        format!("target=\"{}\"", sink.addr),
        format!("target=\"{closed}\""),
    );
    assert_eq!(sample(&body, "udptee_received_datagrams_total"), 1005);
    assert_eq!(
        sample(
            &body,
            "udptee_worker_received_datagrams_total{worker=\"0\"}"
        ),
        1005
    );
    assert_eq!(
        sample(
            &body,
            "udptee_worker_truncated_datagrams_total{worker=\"0\"}"
        ),
        5
    );
    assert_eq!(
        sample(
            &body,
            &format!("udptee_target_forwarded_datagrams_total{{{s}}}")
        ),
        1000
    );
    assert_eq!(
        sample(
            &body,
            &format!("udptee_target_dropped_datagrams_total{{{s},reason=\"truncated\"}}")
        ),
        5
    );
    assert_eq!(
        sample(
            &body,
            &format!("udptee_target_dropped_datagrams_total{{{s},reason=\"queue_full\"}}")
        ),
        0
    );
    let refused = sample(
        &body,
        &format!("udptee_target_send_errors_total{{{c},error=\"conn_refused\"}}"),
    );
    assert!(refused > 0, "the closed port's ECONNREFUSED is on /metrics");
    assert_eq!(refused, snap.dropped(1, DropReason::SendError));
    assert_eq!(
        sample(
            &body,
            &format!("udptee_target_dropped_datagrams_total{{{c},reason=\"send_error\"}}")
        ),
        refused
    );
    assert_eq!(
        sample(
            &body,
            &format!("udptee_target_forwarded_datagrams_total{{{c}}}")
        ) + refused
            + 5,
        1005,
        "received = forwarded + dropped, read from /metrics alone"
    );
    assert_eq!(
        sample(&body, &format!("udptee_target_queued_datagrams{{{s}}}")),
        0
    );
    assert_eq!(
        sample(&body, "udptee_worker_kernel_drops_total{worker=\"0\"}"),
        0
    );
    assert_eq!(
        sample(&body, &format!("udptee_target_receiver_drops_total{{{s}}}")),
        0,
        "a reading receiver on this host dropped nothing"
    );
    assert_eq!(sample(&body, &format!("udptee_target_up{{{s}}}")), 1);
    wait_for(&fwd, "the closed port to be seen down", || {
        fwd.snapshot().targets[1].up == Some(false)
    });
    let (_, later) = http(admin, "GET", "/metrics");
    assert_eq!(
        sample(&later, &format!("udptee_target_up{{{c}}}")),
        0,
        "nothing bound at the closed port: down"
    );
    assert_eq!(
        sample(
            &body,
            "udptee_worker_uring_buffers_exhausted_total{worker=\"0\"}"
        ),
        0,
        "receive pressure is exported (0 on recvmmsg)"
    );
    assert!(body.contains("udptee_build_info{") && body.contains("io_backend=\"mmsg\""));
    assert!(
        body.contains("udptee_host_udp_rcvbuf_errors_total"),
        "the host's kernel view is beside ours"
    );

    let (status, latency) = http(admin, "GET", "/latency");
    assert_eq!(status, 200);
    let json: serde_json::Value =
        serde_json::from_str(latency.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json[0]["target"], sink.addr.to_string());
    assert_eq!(
        json[0]["count"], 1000,
        "one latency sample per copy forwarded"
    );
    assert_eq!(json[1]["count"], snap.targets[1].forwarded);
    assert_accounted(&fwd.shutdown());
    let _ = sink.finish();
}

#[test]
fn wrong_paths_and_methods_get_4xx() {
    let sink = Sink::new(false);
    let fwd = forwarder(false, &[sink.addr], with_admin);
    let admin = fwd.admin_addr().unwrap();
    assert_eq!(http(admin, "GET", "/healthz").0, 200);
    assert_eq!(
        http(admin, "GET", "/readyz").0,
        200,
        "sockets bound, workers and senders running"
    );
    assert_eq!(http(admin, "HEAD", "/metrics").0, 200);
    assert_eq!(http(admin, "GET", "/nope").0, 404);
    assert_eq!(http(admin, "GET", "/").0, 200, "the status page");
    assert_eq!(http(admin, "GET", "/status.html").0, 404);
    let (status, body) = http(admin, "POST", "/metrics");
    assert_eq!(status, 405);
    assert!(
        body.to_ascii_lowercase().contains("allow: get, head"),
        "{body}"
    );
    assert_eq!(http(admin, "DELETE", "/healthz").0, 405);
    let _ = fwd.shutdown();
}

#[test]
fn junk_and_slow_admin_clients_do_not_disturb_forwarding() {
    let sink = Sink::new(false);
    let fwd = forwarder(false, &[sink.addr], with_admin);
    let admin = fwd.admin_addr().unwrap();
    // Slow clients: connections that send half a request and then nothing.
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(admin).unwrap();
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();
    // Junk: binary garbage and oversized header lines.
    for junk in [
        &b"\x00\xff\xfe garbage\r\n\r\n"[..],
        &[b'A'; 100_000][..],
        b"GET / HTTP/9.9\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(junk);
        let _ = s.read(&mut [0u8; 512]);
    }
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = send_paced(&fwd, &client, 0, (0..5000).map(|i| i % 1200), 500, &[&sink]);
    assert_eq!(
        http(admin, "GET", "/healthz").0,
        200,
        "the admin listener still answers"
    );
    let snap = fwd.shutdown();
    drop(slow);
    assert!(
        sink.finish().0 == sent,
        "every datagram forwarded, in order, while the admin port was abused"
    );
    assert_eq!(snap.dropped_total(0), 0);
}

#[test]
fn sigusr1_dumps_latency_counts_equal_to_forwarded() {
    let sink = Sink::new(false);
    let log = std::env::temp_dir().join(format!("udptee-hlog-test-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_arg = log.to_str().unwrap().to_owned();
    let (mut child, listen) =
        spawn_udptee(&sink, &["--admin", "off", "--histogram-log", &log_arg], &[]);
    wait_bound(&mut child, listen);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..500 {
        client.send_to(&[b'm'; 64][..i % 64], listen).unwrap();
    }
    wait_until(
        "the datagrams to reach the sink",
        Duration::from_secs(20),
        || sink.received() >= 500,
    );
    signal(&child, "-USR1");
    wait_until(
        "SIGUSR1 to write the interval log",
        Duration::from_secs(10),
        || std::fs::metadata(&log).is_ok_and(|m| m.len() > 0),
    );
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("latency since start"))
        .unwrap_or_else(|| panic!("no latency line: {err}"));
    assert!(
        line.contains("count=500"),
        "the dumped count equals the datagrams forwarded: {line}"
    );
    for field in [
        "p50_us=",
        "p90_us=",
        "p99_us=",
        "p999_us=",
        "p9999_us=",
        "max_us=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    let text = std::fs::read(&log).unwrap();
    let mut total = 0;
    for entry in hdrhistogram::serialization::interval_log::IntervalLogIterator::new(&text) {
        if let Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(i)) = entry {
            let bytes = base64_decode(i.encoded_histogram());
            let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut &bytes[..])
                .unwrap();
            total += h.len();
        }
    }
    assert_eq!(
        total, 500,
        "the interval log holds every sample, readable by HdrHistogram"
    );
    let _ = std::fs::remove_file(&log);
    let _ = sink.finish();
}

/// Standard base64 (the interval log's histogram encoding), decoded with the base64 crate.
fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Every /metrics scrape under load is a consistent cut: per target, forwarded + dropped never
/// exceeds offered (so `queued` is never negative), while a closed port drops copies (send_error) and
/// a stuck receiver loses them (receiver drops) all the while.
#[test]
fn every_scrape_under_load_is_a_consistent_cut() {
    let sink = Sink::new(false);
    let stuck = udp_socket(loopback(false), 1);
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let fwd = forwarder(
        false,
        &[sink.addr, stuck.local_addr().unwrap(), closed],
        |c| {
            with_admin(c);
            c.queue_depth = 64;
        },
    );
    let admin = fwd.admin_addr().unwrap();
    let to = fwd.local_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut n = 0u64;
            let start = std::time::Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client.send_to(&[b'm'; 200], to);
                n += 1;
                // About 20k/s.
                while start.elapsed() < Duration::from_micros(n * 50) {
                    std::hint::spin_loop();
                }
            }
            n
        })
    };
    let names = [
        sink.addr.to_string(),
        stuck.local_addr().unwrap().to_string(),
    ];
    let start = std::time::Instant::now();
    let mut scrapes = 0;
    // 3 s and 100 scrapes, or as many as a loaded machine allows in 15 s (20 are asked below).
    let done = |scrapes: u32, t: Duration| {
        t >= Duration::from_secs(15) || (t >= Duration::from_secs(3) && scrapes >= 100)
    };
    while !done(scrapes, start.elapsed()) {
        let (status, body) = http(admin, "GET", "/metrics");
        assert_eq!(status, 200);
        for name in &names {
            let t = format!("target=\"{name}\"");
            let offered = sample(
                &body,
                &format!("udptee_target_offered_datagrams_total{{{t}}}"),
            );
            let forwarded = sample(
                &body,
                &format!("udptee_target_forwarded_datagrams_total{{{t}}}"),
            );
            let dropped: u64 = DropReason::PER_TARGET
                .iter()
                .map(|r| {
                    sample(
                        &body,
                        &format!(
                            "udptee_target_dropped_datagrams_total{{{t},reason=\"{}\"}}",
                            r.as_str()
                        ),
                    )
                })
                .sum();
            let queued = sample(&body, &format!("udptee_target_queued_datagrams{{{t}}}"));
            assert!(
                forwarded + dropped <= offered,
                "scrape {scrapes}, {name}: forwarded {forwarded} + dropped {dropped} > offered {offered}"
            );
            assert_eq!(
                queued,
                offered - forwarded - dropped,
                "scrape {scrapes}, {name}"
            );
        }
        scrapes += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert!(sent > 20_000, "the load ran: {sent} datagrams");
    assert!(scrapes >= 20, "many scrapes: {scrapes}");
    let snap = fwd.shutdown();
    assert!(
        snap.targets[1].receiver_drops > Some(0),
        "the stuck receiver lost copies meanwhile:\n{snap}"
    );
    assert!(
        snap.dropped_total(2) > 0,
        "the closed port's copies were dropped meanwhile:\n{snap}"
    );
    assert_accounted(&snap);
    let _ = sink.finish();
}
