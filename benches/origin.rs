//! Keeping the origin on Unix datagram sockets (`preserve-source`), end to end: udptee with a
//! Unix listener and one Unix target, the target keeping each client's credentials or relaying,
//! measured side by side, interleaved, at fixed rates. Prints the CPU time udptee's own threads
//! spent per datagram (their run time from /proc/self/task/*/schedstat: an AF_UNIX send runs
//! entirely in the sending thread, with no softirq to hide) and the ratio kept / relayed, as
//! medians over the runs.
//!
//! ```sh
//! cargo bench --bench origin                          # 50k and 150k/s, 3 runs of 3 s each
//! RATES=50000 RUNS=5 SECS=5 cargo bench --bench origin
//! ```
//! udptee's threads are pinned to CPU 0, the client and the receiver to CPU 1. Needs root (the
//! privilege to send another process's credentials); it says so and exits otherwise.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use udptee::config::{Config, TargetSpec, UnixListen};

mod common;
use common::{pin, udptee_threads_ns};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

/// One run: CPU ns per datagram of udptee's threads, and the datagrams the receiver got.
fn run(dir: &Path, keep: bool, rate: u64, secs: u64) -> (f64, u64) {
    let listen = dir.join("in.sock");
    let out = dir.join("out.sock");
    let _ = std::fs::remove_file(&out);
    let sink = UnixDatagram::bind(&out).unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut t = TargetSpec::new("t", "0.0.0.0:0".parse().unwrap());
    t.addr = format!("unixgram://{}", out.display());
    t.unix = Some(out.clone());
    t.preserve_source = Some(keep);
    let mut c = Config::new("0.0.0.0:0".parse().unwrap(), vec![t]);
    c.listen_unix = Some(UnixListen {
        path: listen.clone(),
        mode: 0o666,
        owner: None,
    });
    c.stats_interval = Duration::ZERO;
    c.admin = None;
    c.worker_cpus = vec![Some(0)];
    c.sender_cpus = vec![0];
    c.rcvbuf_bytes = 8 << 20;
    let fwd = udptee::Forwarder::start(&c).expect("udptee starts");

    let got = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (got, stop) = (Arc::clone(&got), Arc::clone(&stop));
        std::thread::spawn(move || {
            pin(1);
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if sink.recv(&mut buf).is_ok() {
                    got.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    pin(1);
    let client = UnixDatagram::unbound().unwrap();
    let line = b"bench.unix.metric:1|c|#env:bench,service:api";
    let before = udptee_threads_ns();
    let start = Instant::now();
    let total = rate * secs;
    let mut sent = 0u64;
    while sent < total {
        // Paced in 1 ms steps: what should have gone by now.
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(total) {
            if client.send_to(line, &listen).is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let spent = udptee_threads_ns() - before;
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    drop(fwd.shutdown());
    (spent as f64 / sent as f64, got.load(Ordering::Relaxed))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("origin bench skipped: sending another process's credentials needs root");
        return;
    }
    // `cargo test --benches` runs this without `--bench`: one short run per way, as a check.
    let measuring = std::env::args().any(|a| a == "--bench");
    let (rates, runs, secs) = if measuring {
        ("50000,150000", "3", "3")
    } else {
        ("2000", "1", "1")
    };
    let rates: Vec<u64> = env("RATES", rates)
        .split(',')
        .map(|r| {
            r.parse()
                .expect("RATES: datagrams per second, comma-separated")
        })
        .collect();
    let runs: usize = env("RUNS", runs).parse().expect("RUNS");
    let secs: u64 = env("SECS", secs).parse().expect("SECS");
    let dir = std::env::temp_dir().join(format!("udptee-bench-origin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!("Unix datagram in, Unix datagram out; {runs} runs of {secs} s per rate, interleaved");
    println!(
        "{:>8} {:>10} {:>16} {:>10} {:>8}",
        "rate", "way", "cpu ns/dg (med)", "lost", "ratio"
    );
    for rate in rates {
        let (mut kept, mut relayed, mut lost) = (Vec::new(), Vec::new(), [0u64; 2]);
        for _ in 0..runs {
            for (i, keep) in [false, true].into_iter().enumerate() {
                let (ns, got) = run(&dir, keep, rate, secs);
                lost[i] += (rate * secs).saturating_sub(got);
                assert!(
                    measuring || got == rate * secs,
                    "every datagram arrives: {got}"
                );
                if keep {
                    kept.push(ns)
                } else {
                    relayed.push(ns)
                }
            }
        }
        let (k, r) = (median(kept), median(relayed));
        println!(
            "{rate:>8} {:>10} {r:>16.0} {:>10} {:>8.2}",
            "relayed", lost[0], 1.0
        );
        println!(
            "{rate:>8} {:>10} {k:>16.0} {:>10} {:>8.2}",
            "kept",
            lost[1],
            k / r
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
