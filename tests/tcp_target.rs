//! TCP targets: statsd lines over one persistent connection. A target down at start takes what
//! was queued once it comes up; a reset is counted (`connection_lost`) and the books balance; a
//! switch to another address under traffic, by the API or a reload, loses and repeats nothing;
//! a switch to a receiver that refuses is itself refused, and the old address keeps the traffic.

mod util;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use udptee::config::TargetSpec;
use util::*;

/// A TCP receiver: accepts connections one after another and keeps every line, in order.
struct TcpSink {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    /// The connection being read, to reset it from the test.
    current: Arc<Mutex<Option<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl TcpSink {
    fn at(addr: SocketAddr) -> Self {
        let l = TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let current: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (ls, cur, st) = (Arc::clone(&lines), Arc::clone(&current), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                *cur.lock().unwrap() = Some(s.try_clone().unwrap());
                let (ls, st) = (Arc::clone(&ls), Arc::clone(&st));
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let mut r = BufReader::new(s);
                    let mut line = String::new();
                    while !st.load(Ordering::Relaxed) {
                        match r.read_line(&mut line) {
                            Ok(0) => return,
                            Ok(_) if line.ends_with('\n') => {
                                ls.lock()
                                    .unwrap()
                                    .push(line.trim_end_matches('\n').to_owned());
                                line.clear();
                            }
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        Self {
            addr,
            lines,
            current,
            stop,
        }
    }

    fn new() -> Self {
        Self::at("127.0.0.1:0".parse().unwrap())
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Resets the connection being read (SO_LINGER 0, then close: an RST).
    fn reset(&self) {
        if let Some(s) = self.current.lock().unwrap().take() {
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn send(udp: &UdpSocket, to: SocketAddr, tag: &str, range: std::ops::Range<usize>) {
    for i in range {
        udp.send_to(format!("{tag}.{i}:1|c").as_bytes(), to)
            .unwrap();
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn tcp_target(name: &str, addr: SocketAddr) -> TargetSpec {
    TargetSpec::new_tcp(name, addr)
}

#[test]
fn a_target_down_at_start_comes_up_then_resets_and_the_books_balance() {
    let port = free_tcp();
    let fwd = forwarder(false, &[], |c| {
        c.targets = vec![tcp_target("t", port)];
        c.drain_timeout = Duration::from_secs(2);
    });
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = fwd.local_addr();
    // Down: copies wait in the target's queue.
    send(&udp, to, "early", 0..300);
    wait_for(&fwd, "the copies offered", || {
        fwd.snapshot().targets[0].offered == 300
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        fwd.snapshot().targets[0].forwarded,
        0,
        "nothing is forwarded while it is down"
    );
    // Up: what waited arrives, in order, each line once, then forwarded once acknowledged.
    let sink = TcpSink::at(port);
    wait_for(&fwd, "the queued lines", || sink.lines().len() >= 300);
    let want: Vec<String> = (0..300).map(|i| format!("early.{i}:1|c")).collect();
    assert_eq!(sink.lines(), want);
    wait_for(&fwd, "acknowledged", || {
        fwd.snapshot().targets[0].forwarded == 300
    });
    // A reset: it connects again, and what comes after arrives.
    sink.reset();
    std::thread::sleep(Duration::from_millis(200));
    send(&udp, to, "late", 0..300);
    wait_for(&fwd, "lines after the reset", || {
        sink.lines()
            .iter()
            .filter(|l| l.starts_with("late."))
            .count()
            + fwd.snapshot().targets[0].connection_lost as usize
            >= 300
    });
    let snap = fwd.shutdown();
    assert_accounted(&snap);
    let t = &snap.targets[0];
    let late: Vec<String> = sink
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("late."))
        .collect();
    // Every late line either arrived (once) or is counted lost with the reset connection.
    let mut seen = late.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), late.len(), "no line repeated");
    assert!(late.len() as u64 + t.connection_lost >= 300, "{t:?}");
    assert_eq!(t.offered, 600);
}

/// Sends numbered lines until told to stop; returns how many.
fn traffic(to: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            udp.send_to(format!("seq.{i}:1|c").as_bytes(), to).unwrap();
            i += 1;
            if i % 32 == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        i
    })
}

fn every_line_once(sinks: &[&TcpSink], n: usize) {
    let mut all: Vec<usize> = sinks
        .iter()
        .flat_map(|s| s.lines())
        .map(|l| l["seq.".len()..l.len() - ":1|c".len()].parse().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "every line reached exactly one receiver, once"
    );
}

#[test]
fn a_switch_under_traffic_loses_and_repeats_nothing() {
    let (a, b, c) = (TcpSink::new(), TcpSink::new(), TcpSink::new());
    let fwd = forwarder(false, &[], |cfg| {
        cfg.targets = vec![tcp_target("t", a.addr)]
    });
    let registry = fwd.registry();
    wait_until("connected", Duration::from_secs(10), || {
        a.current.lock().unwrap().is_some()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(fwd.local_addr(), Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));
    // The API's way: PUT one target.
    registry.put(tcp_target("t", b.addr)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // A reload's way: the whole set.
    registry.apply(vec![tcp_target("t", c.addr)]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let n = sender.join().unwrap();
    wait_for(&fwd, "every line at a receiver", || {
        a.lines().len() + b.lines().len() + c.lines().len() >= n
    });
    std::thread::sleep(Duration::from_millis(100));
    let snap = fwd.shutdown();
    assert_accounted(&snap);
    assert!(!a.lines().is_empty() && !b.lines().is_empty() && !c.lines().is_empty());
    every_line_once(&[&a, &b, &c], n);
    assert_eq!(snap.targets[0].forwarded, n as u64);
}

#[test]
fn a_switch_to_a_receiver_that_refuses_is_refused_and_the_old_one_keeps_sending() {
    let a = TcpSink::new();
    let nobody = free_tcp();
    let fwd = forwarder(false, &[], |cfg| {
        cfg.targets = vec![tcp_target("t", a.addr)]
    });
    wait_until("connected", Duration::from_secs(10), || {
        a.current.lock().unwrap().is_some()
    });
    let e = fwd
        .registry()
        .put(tcp_target("t", nobody))
        .unwrap_err()
        .to_string();
    assert!(e.contains("switching target \"t\""), "{e}");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    send(&udp, fwd.local_addr(), "still", 0..50);
    wait_for(&fwd, "the old receiver keeps the traffic", || {
        a.lines().len() >= 50
    });
    let snap = fwd.shutdown();
    assert_accounted(&snap);
}

#[test]
fn copies_written_and_not_acknowledged_when_the_connection_resets_are_counted_lost() {
    // A receiver that accepts and never reads, with a small receive buffer: what does not fit
    // stays unacknowledged in udptee's send queue.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(8).unwrap();
    let listener: TcpListener = sock.into();
    let addr = listener.local_addr().unwrap();
    let fwd = forwarder(false, &[], |c| {
        c.targets = vec![tcp_target("t", addr)];
        c.drain_timeout = Duration::from_millis(500);
    });
    let (stalled, _) = listener.accept().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pad = "x".repeat(200);
    for i in 0..3000 {
        udp.send_to(format!("{pad}.{i}:1|c").as_bytes(), fwd.local_addr())
            .unwrap();
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    wait_for(&fwd, "every copy offered", || {
        fwd.snapshot().targets[0].offered == 3000
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = fwd.snapshot().targets[0].clone();
    assert!(
        before.forwarded < 3000,
        "the stalled receiver holds copies back: {before:?}"
    );
    socket2::SockRef::from(&stalled)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stalled);
    // It connects again to the same listener; a reader takes what follows.
    let (next, _) = listener.accept().unwrap();
    let got = std::thread::spawn(move || {
        let mut n = 0;
        for line in BufReader::new(next).lines() {
            if line.is_err() {
                break;
            }
            n += 1;
        }
        n
    });
    wait_for(&fwd, "the loss counted", || {
        fwd.snapshot().targets[0].connection_lost > 0
    });
    let snap = fwd.shutdown();
    assert_accounted(&snap);
    let t = &snap.targets[0];
    let read = got.join().unwrap();
    assert_eq!(
        t.forwarded + t.connection_lost + t.queue_full + t.drain_timeout,
        3000,
        "{t:?}"
    );
    assert!(
        read as u64 <= t.forwarded,
        "what the new connection read was forwarded: {read} {t:?}"
    );
}

#[test]
fn a_tcp_target_at_udptees_own_tcp_listener_is_refused_by_the_api_and_a_reload() {
    let a = TcpSink::new();
    let fwd = forwarder(false, &[], |c| {
        c.targets = vec![tcp_target("t", a.addr)];
        c.streams = vec![udptee::config::StreamListen::Tcp(
            "127.0.0.1:0".parse().unwrap(),
        )];
    });
    let own: SocketAddr = fwd
        .stats()
        .listener_names()
        .iter()
        .find_map(|n| n.strip_prefix("tcp://")?.parse().ok())
        .unwrap();
    let e = fwd
        .registry()
        .put(tcp_target("loop", own))
        .unwrap_err()
        .to_string();
    assert!(e.contains("forward to itself"), "{e}");
    let e = fwd
        .registry()
        .apply(vec![tcp_target("t", a.addr), tcp_target("loop", own)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("forward to itself"), "{e}");
    // A UDP target at the same port is no loop: UDP is not what listens there.
    fwd.registry()
        .put(TargetSpec::new("udp-same-port", own))
        .unwrap();
    assert_accounted(&fwd.shutdown());
}

/// A DogStatsD-like receiver on a Unix stream socket: keeps each frame's payload, in order, from
/// the connections it accepts one after another.
struct FrameSink {
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl FrameSink {
    fn at(path: &std::path::Path) -> Self {
        use std::io::Read;
        let l = std::os::unix::net::UnixListener::bind(path).unwrap();
        l.set_nonblocking(true).unwrap();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (fs, st) = (Arc::clone(&frames), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                let (fs, st) = (Arc::clone(&fs), Arc::clone(&st));
                std::thread::spawn(move || {
                    let mut len = [0u8; 4];
                    while !st.load(Ordering::Relaxed) && s.read_exact(&mut len).is_ok() {
                        let mut m = vec![0u8; u32::from_le_bytes(len) as usize];
                        if s.read_exact(&mut m).is_err() {
                            return;
                        }
                        fs.lock().unwrap().push(m);
                    }
                });
            }
        });
        Self { frames, stop }
    }

    fn frames(&self) -> Vec<Vec<u8>> {
        self.frames.lock().unwrap().clone()
    }
}

impl Drop for FrameSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn unix_stream_target(name: &str, path: &std::path::Path) -> TargetSpec {
    let mut t = TargetSpec::new(name, "0.0.0.0:0".parse().unwrap());
    t.addr = format!("unix://{}", path.display());
    t.stream_path = Some(path.to_path_buf());
    t
}

#[test]
fn a_unix_stream_target_gets_each_datagram_as_a_frame_and_a_switch_moves_it_whole() {
    let dir = temp_dir("tcpt", "ustream");
    let (pa, pb) = (dir.join("a.sock"), dir.join("b.sock"));
    let (a, b) = (FrameSink::at(&pa), FrameSink::at(&pb));
    let fwd = forwarder(false, &[], |c| {
        c.targets = vec![unix_stream_target("dsd", &pa)]
    });
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Datagrams of several lines each arrive as one frame each, byte for byte.
    let sent: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("m.{i}:1|c\nn.{i}:2|g|#k:v").into_bytes())
        .collect();
    for d in &sent {
        udp.send_to(d, fwd.local_addr()).unwrap();
    }
    wait_for(&fwd, "every frame", || a.frames().len() >= 300);
    assert_eq!(
        a.frames(),
        sent,
        "one frame per datagram, unchanged, in order"
    );
    wait_for(&fwd, "read, so forwarded", || {
        fwd.snapshot().targets[0].forwarded == 300
    });
    // A switch under traffic: every datagram reaches one of the two, once.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(fwd.local_addr(), Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(200));
    fwd.registry().put(unix_stream_target("dsd", &pb)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let n = sender.join().unwrap();
    let seqs = || -> Vec<usize> {
        let mut v: Vec<usize> = a
            .frames()
            .into_iter()
            .chain(b.frames())
            .filter_map(|f| {
                let s = String::from_utf8(f).ok()?;
                s.strip_prefix("seq.")?.split(':').next()?.parse().ok()
            })
            .collect();
        v.sort_unstable();
        v
    };
    wait_for(&fwd, "every datagram at a receiver", || seqs().len() >= n);
    assert_eq!(seqs(), (0..n).collect::<Vec<_>>(), "each once");
    assert!(!b.frames().is_empty(), "the new receiver took over");
    let snap = fwd.shutdown();
    assert_accounted(&snap);
    assert_eq!(snap.targets[0].forwarded, 300 + n as u64);
    let _ = std::fs::remove_dir_all(&dir);
}
