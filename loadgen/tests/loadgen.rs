//! udptee-loadgen end to end on loopback: exact counts, exact loss through a lossy relay, detection of
//! duplicates and reordering, JSON that parses, clear errors for bad arguments.

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use udptee_loadgen::generator::{self, Limit, Progress, SendOpts};
use udptee_loadgen::payload::{self, Format, Header, Profile};
use udptee_loadgen::sink::{self, SinkOpts};

const BIN: &str = env!("CARGO_BIN_EXE_udptee-loadgen");

fn loadgen(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("udptee-loadgen runs")
}

fn sink_opts() -> SinkOpts {
    SinkOpts {
        listen: "127.0.0.1:0".parse().unwrap(),
        rcvbuf: 16 << 20,
        duration: Some(Duration::from_secs(60)),
        idle_timeout: None,
    }
}

/// `count` fixed-size statsd datagrams at `rate` from one socket, sent as they fall due.
fn paced(to: std::net::SocketAddr, rate: f64, count: u64) -> SendOpts {
    SendOpts {
        to,
        rate: Some(rate),
        limit: Limit::Count(count),
        sizes: (64, 64),
        format: Format::Statsd,
        profile: Profile::Fixed,
        sockets: 1,
        threads: 1,
        batch: 32,
        burst: 1,
        cpus: Vec::new(),
    }
}

#[test]
fn send_to_sink_counts_exactly() {
    let stop = Arc::new(AtomicBool::new(false));
    let sink = sink::start(&sink_opts(), Arc::clone(&stop)).unwrap();
    let opts = SendOpts {
        sizes: (20, 1400),
        format: Format::Dogstatsd,
        profile: Profile::Realistic,
        sockets: 4,
        threads: 2,
        ..paced(sink.addr, 50_000.0, 20_000)
    };
    let sent = generator::send(&opts, &stop, &Progress::default()).unwrap();
    assert_eq!(sent.sent, 20_000, "--count is exact");
    assert_eq!(sent.per_stream.iter().sum::<u64>(), 20_000);
    let r = finish_after(sink, 20_000);
    assert_eq!(r.datagrams, 20_000);
    assert_eq!(
        (r.lost, r.duplicates, r.untracked, r.kernel_drops),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert_eq!(r.streams.len(), 4, "one stream per socket");
    for (s, n) in r.streams.iter().zip(&sent.per_stream) {
        assert_eq!(
            s.received, *n,
            "stream {} received what was sent on it",
            s.stream
        );
    }
    assert_eq!(
        r.latency_us.count, 20_000,
        "every datagram has a latency sample"
    );
}

#[test]
fn bursts_keep_the_count_and_the_rate() {
    // 1,003 is no multiple of the burst: the tail goes out short rather than never.
    let stop = Arc::new(AtomicBool::new(false));
    let sink = sink::start(&sink_opts(), Arc::clone(&stop)).unwrap();
    let opts = SendOpts {
        burst: 16,
        ..paced(sink.addr, 10_000.0, 1_003)
    };
    let sent = generator::send(&opts, &stop, &Progress::default()).unwrap();
    assert_eq!(sent.sent, 1_003, "--count is exact with --burst");
    assert!(
        sent.elapsed_s > 0.09,
        "bursts are still paced to the rate: {} s for 1,003 at 10k/s",
        sent.elapsed_s
    );
    let r = finish_after(sink, 1_003);
    assert_eq!((r.datagrams, r.lost, r.duplicates), (1_003, 0, 0), "{r:?}");
}

#[test]
fn duplicates_and_reordering_are_detected() {
    let stop = Arc::new(AtomicBool::new(false));
    let sink = sink::start(&sink_opts(), stop).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let mut buf = Vec::new();
    for seq in [0, 1, 3, 2, 2, 5, 4] {
        payload::encode(
            Format::Statsd,
            Profile::Fixed,
            Header {
                stream: 7,
                seq,
                sent_us: 1,
            },
            64,
            &mut rng,
            &mut buf,
        );
        client.send_to(&buf, sink.addr).unwrap();
    }
    client
        .send_to(b"not a loadgen datagram", sink.addr)
        .unwrap();
    let r = finish_after(sink, 8);
    assert_eq!(r.duplicates, 1, "seq 2 arrived twice");
    assert_eq!(r.reordered, 2, "seq 2 after 3 and seq 4 after 5");
    assert_eq!(r.lost, 0, "every seq 0..=5 arrived");
    assert_eq!(r.untracked, 1, "foreign datagrams are counted, not misread");
}

#[test]
fn bench_through_a_lossy_relay_reports_exactly_ten_percent() {
    let out = tempdir("lossy");
    let relay = format!("{BIN} relay --listen {{listen}} {{to}} --drop-every 10");
    let o = loadgen(&[
        "bench",
        "--fanout",
        "2",
        "--rates",
        "10k,20k",
        "--count",
        "5000",
        "--forwarder",
        &relay,
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("loss % per target"),
        "the table has its header: {stdout}"
    );
    assert_eq!(
        stdout.matches("10.000,10.000").count(),
        2,
        "both rates, both targets: exactly 10% loss\n{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["sent"], 5000);
        assert_eq!(row["delivered"], serde_json::json!([4500, 4500]));
    }
    let svg = std::fs::read_to_string(out.join("bench.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("10.00%"),
        "the plot labels each point with its loss"
    );
}

#[test]
fn sink_and_send_print_json_and_no_progress_when_piped() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let sink = Command::new(BIN)
        .args(["sink", "--listen", &listen, "--idle-timeout", "2s"])
        .output();
    // The sink above already ran to its idle timeout with nothing sent; run it again in the background.
    let sink_empty: serde_json::Value =
        serde_json::from_slice(&sink.unwrap().stdout).expect("empty sink prints JSON");
    assert_eq!(sink_empty["datagrams"], 0);
    let child = Command::new(BIN)
        .args(["sink", "--listen", &listen, "--idle-timeout", "1s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let send = loadgen(&[
        "send",
        "--to",
        &listen,
        "--rate",
        "5k",
        "--count",
        "1000",
        "--payload",
        "raw",
        "--size",
        "20",
    ]);
    assert!(send.status.success());
    let report: serde_json::Value = serde_json::from_slice(&send.stdout).expect("send prints JSON");
    assert_eq!(report["sent"], 1000);
    assert_eq!(report["rate_reached"], true);
    assert!(
        !String::from_utf8_lossy(&send.stderr).contains('\r'),
        "no progress line when stderr is not a terminal"
    );
    let out = child.wait_with_output().unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("sink prints one JSON summary");
    assert_eq!(summary["datagrams"], 1000);
    assert_eq!(summary["lost"], 0);
}

#[test]
fn bad_arguments_are_clear_errors() {
    for (args, expect) in [
        (
            &[
                "send",
                "--to",
                "127.0.0.1:9",
                "--rate",
                "fast",
                "--count",
                "1",
            ][..],
            "--rate",
        ),
        (
            &[
                "send",
                "--to",
                "127.0.0.1:9",
                "--rate",
                "1k",
                "--count",
                "1",
                "--size",
                "100-10",
            ],
            "--size",
        ),
        (
            &["send", "--to", "127.0.0.1:9", "--rate", "1k"],
            "--duration",
        ),
        (
            &["send", "--to", "nowhere", "--rate", "1k", "--count", "1"],
            "nowhere",
        ),
        (
            &[
                "send",
                "--to",
                "127.0.0.1:9",
                "--rate",
                "1k",
                "--count",
                "1",
                "--threads",
                "4",
            ],
            "--threads",
        ),
        (
            &[
                "send",
                "--to",
                "127.0.0.1:9",
                "--rate",
                "1k",
                "--count",
                "1",
                "--payload",
                "raw",
                "--profile",
                "realistic",
            ],
            "realistic",
        ),
        (
            &[
                "send",
                "--to",
                "127.0.0.1:9",
                "--rate",
                "1k",
                "--count",
                "1",
                "--burst",
                "64",
            ],
            "--burst",
        ),
        (&["sink", "--listen", "127.0.0.1:99999"], "127.0.0.1:99999"),
        (&["bench", "--fanout", "0", "--count", "1"], "--fanout"),
    ] {
        let o = loadgen(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(
            err.contains(expect),
            "{args:?}: error names {expect}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: no panic: {err}");
    }
}

/// Waits (at most 20 s) until the sink has `count` datagrams, then stops it and returns its report.
fn finish_after(sink: sink::SinkHandle, count: u64) -> sink::SinkReport {
    let start = std::time::Instant::now();
    while sink
        .live
        .datagrams
        .load(std::sync::atomic::Ordering::Relaxed)
        < count
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the sink did not get {count} datagrams"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    sink.finish()
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("udptee-loadgen-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
