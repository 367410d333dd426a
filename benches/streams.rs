//! What a statsd line costs through a stream listener against the UDP path, end to end, side by
//! side and interleaved at a fixed line rate:
//!
//! - `udp`: 16 UDP clients send datagrams of packed lines (up to 1432 bytes, what the stream
//!   listener packs) to udptee's UDP listener; two UDP targets. The UDP path as it is.
//! - `tcp`: 16 TCP connections write the same lines to a tcp:// listener; one UDP and one TCP
//!   target (the issue's figure).
//! - `udp-tcp`: the UDP listener with one UDP and one TCP target, to tell the listener's cost from
//!   the TCP target's.
//!
//! udptee runs in-process, every thread of it pinned to CPU 0; clients and receivers to CPU 1.
//! CPU 0 is measured two ways: an idle-priority spin pinned to it (what it lost to everything else
//! on that core, softirq included, against the mean of a spin alone just before and just after
//! the run), and udptee's threads' own run time
//! (/proc/self/task/*/schedstat). Both are printed per line, as medians over the runs, with the
//! ratio to `udp`.
//!
//! ```sh
//! cargo bench --bench streams                       # 200k lines/s, 3 runs of 3 s
//! RATE=400000 RUNS=5 SECS=5 cargo bench --bench streams
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use udptee::config::{Config, StreamListen, TargetSpec};

mod common;
use common::{pin, udptee_threads_ns};

const CLIENTS: usize = 16;
const PACK: usize = 1432;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

/// Client `c`'s lines, packed as the stream listener packs them: datagrams of up to PACK bytes.
fn datagrams(c: usize, lines: usize) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    for i in 0..lines {
        let line = format!("bench.stream.c{c}.m{}:{}|c|#env:bench", i % 50, i % 7 + 1);
        let last = out.last_mut().expect("one");
        if !last.is_empty() && last.len() + 1 + line.len() > PACK {
            out.push(Vec::new());
        }
        let last = out.last_mut().expect("one");
        if !last.is_empty() {
            last.push(b'\n');
        }
        last.extend_from_slice(line.as_bytes());
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Udp,
    Tcp,
    UdpToTcp,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::UdpToTcp => "udp-tcp",
        }
    }
}

/// Counts the lines a receiver gets.
fn udp_sink(
    got: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&s)
        .set_recv_buffer_size(32 << 20)
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let addr = s.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        pin(1);
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = s.recv(&mut buf) {
                got.fetch_add(
                    1 + buf[..n].iter().filter(|&&b| b == b'\n').count() as u64,
                    Ordering::Relaxed,
                );
            }
        }
    });
    (addr, h)
}

fn tcp_sink(
    got: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        pin(1);
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = vec![0u8; 256 << 10];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = s.read(&mut buf) {
                got.fetch_add(
                    buf[..n].iter().filter(|&&b| b == b'\n').count() as u64,
                    Ordering::Relaxed,
                );
            }
        }
    });
    (addr, h)
}

/// The spin's rate on CPU 0 with nothing else there, over `secs` (after a short warm-up: the
/// first fraction of a second runs slow on this VM).
fn idle_rate(secs: u64) -> f64 {
    std::thread::spawn(move || {
        pin(0);
        udptee_loadgen::spin::spin(Duration::from_millis(300)).unwrap();
        udptee_loadgen::spin::spin(Duration::from_secs(secs)).unwrap()
    })
    .join()
    .unwrap()
    .iterations_per_sec
}

/// One run: (spin-measured core ns per line, udptee thread ns per line, lines lost at a target).
fn run(way: Way, rate: u64, secs: u64) -> (f64, f64, u64) {
    let before_rate = idle_rate(secs);
    let stop = Arc::new(AtomicBool::new(false));
    let (got_a, got_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (a, ha) = udp_sink(Arc::clone(&got_a), Arc::clone(&stop));
    let (b, hb) = if way == Way::Udp {
        udp_sink(Arc::clone(&got_b), Arc::clone(&stop))
    } else {
        tcp_sink(Arc::clone(&got_b), Arc::clone(&stop))
    };
    let second = if way == Way::Udp {
        TargetSpec::new("b", b)
    } else {
        TargetSpec::new_tcp("b", b)
    };
    let mut c = Config::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![TargetSpec::new("a", a), second],
    );
    if way == Way::Tcp {
        c.streams = vec![StreamListen::Tcp("127.0.0.1:0".parse().unwrap())];
    }
    c.stats_interval = Duration::ZERO;
    c.admin = None;
    c.latency = false;
    c.worker_cpus = vec![Some(0)];
    c.sender_cpus = vec![0];
    c.rcvbuf_bytes = 32 << 20;
    c.queue_bytes = 64 << 20;
    pin(0); // udptee's threads inherit CPU 0
    let fwd = udptee::Forwarder::start(&c).expect("udptee starts");
    let to = match way {
        Way::Tcp => fwd
            .stats()
            .listener_names()
            .iter()
            .find_map(|n| n.strip_prefix("tcp://")?.parse().ok())
            .expect("a tcp listener"),
        _ => fwd.local_addr(),
    };
    let per_client = (rate * secs) as usize / CLIENTS;
    let lines = (per_client * CLIENTS) as u64;
    let spin = std::thread::spawn(move || {
        pin(0);
        udptee_loadgen::spin::spin(Duration::from_secs(secs)).unwrap()
    });
    let before = udptee_threads_ns();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            std::thread::spawn(move || {
                pin(1);
                let mut dgs = datagrams(k, per_client);
                if way == Way::Tcp {
                    for d in &mut dgs {
                        d.push(b'\n'); // over TCP every line ends with a newline
                    }
                }
                let per_dg = per_client as f64 / dgs.len() as f64;
                let client_rate = rate as f64 / CLIENTS as f64 / per_dg; // datagrams (or writes) per second
                let mut tcp = (way == Way::Tcp).then(|| TcpStream::connect(to).unwrap());
                let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                let start = Instant::now();
                let mut sent = 0;
                while sent < dgs.len() {
                    let due =
                        ((start.elapsed().as_secs_f64() * client_rate) as usize).min(dgs.len());
                    while sent < due {
                        match &mut tcp {
                            Some(s) => s.write_all(&dgs[sent]).unwrap(),
                            None => {
                                let _ = udp.send_to(&dgs[sent], to);
                            }
                        }
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let spun = spin.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (got_a.load(Ordering::Relaxed) < lines || got_b.load(Ordering::Relaxed) < lines)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let spent = udptee_threads_ns() - before;
    let lost =
        (2 * lines).saturating_sub(got_a.load(Ordering::Relaxed) + got_b.load(Ordering::Relaxed));
    drop(fwd.shutdown());
    stop.store(true, Ordering::Relaxed);
    let _ = (ha.join(), hb.join());
    // The spin alone, before and after the run: the mean is the rate nothing took from it.
    let idle_rate = (before_rate + idle_rate(secs)) / 2.0;
    let busy = (1.0 - spun.iterations_per_sec / idle_rate).max(0.0) * spun.seconds;
    if std::env::var_os("SPIN_DEBUG").is_some() {
        eprintln!(
            "{}: idle {idle_rate:.3e}/s, under load {:.3e}/s over {:.2} s; udptee threads {:.3} s",
            way.name(),
            spun.iterations_per_sec,
            spun.seconds,
            spent as f64 / 1e9
        );
    }
    (busy * 1e9 / lines as f64, spent as f64 / lines as f64, lost)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: one short run per way, as a check.
    let measuring = std::env::args().any(|a| a == "--bench");
    let (rate, runs, secs) = if measuring {
        ("200000", "3", "3")
    } else {
        ("20000", "1", "1")
    };
    let rate: u64 = env("RATE", rate).parse().expect("RATE: lines per second");
    let runs: usize = env("RUNS", runs).parse().expect("RUNS");
    let secs: u64 = env("SECS", secs).parse().expect("SECS");
    pin(0);
    println!(
        "{CLIENTS} clients, {rate} lines/s, {runs} runs of {secs} s, interleaved; udptee on CPU 0, clients and receivers on CPU 1"
    );
    println!(
        "{:>8} {:>18} {:>8} {:>20} {:>8} {:>10}",
        "way", "core ns/line (med)", "ratio", "thread ns/line (med)", "ratio", "lost"
    );
    let ways = [Way::Udp, Way::Tcp, Way::UdpToTcp];
    let mut core = vec![Vec::new(); ways.len()];
    let mut thread = vec![Vec::new(); ways.len()];
    let mut lost = vec![0u64; ways.len()];
    for _ in 0..runs {
        for (i, way) in ways.iter().enumerate() {
            let (c, t, l) = run(*way, rate, secs);
            core[i].push(c);
            thread[i].push(t);
            lost[i] += l;
            assert!(
                measuring || l == 0,
                "{}: every line arrives ({l} lost)",
                way.name()
            );
        }
    }
    let (c0, t0) = (median(core[0].clone()), median(thread[0].clone()));
    for (i, way) in ways.iter().enumerate() {
        let (c, t) = (median(core[i].clone()), median(thread[i].clone()));
        println!(
            "{:>8} {c:>18.0} {:>8.2} {t:>20.0} {:>8.2} {:>10}",
            way.name(),
            c / c0,
            t / t0,
            lost[i]
        );
    }
}
