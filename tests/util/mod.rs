//! Shared helpers for the integration tests: loopback sinks that record what they receive, a
//! deterministic payload generator, and a flow-controlled sender so no buffer on the path overflows.
#![allow(dead_code, unreachable_pub)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use std::cell::Cell;

use udptee::config::{Config, IoBackend, TargetSpec};
use udptee::{Forwarder, Snapshot};

pub mod netns;

/// A test that cannot run its check here (a privilege, or the host lacks what it needs) says why
/// and is counted: with `UDPTEE_SKIP_LOG` set (`.ci/run` sets it), the test's name goes into that
/// file, and the closing line counts it as skipped, not passed.
pub fn skip(why: &str) {
    record_skip(why);
}

/// Like [`skip`], for a missing witness: a real tool that `.ci/packages.sh` installs. In CI
/// (`CI=true`) that is a failure, so a witness silently missing can never turn CI green.
pub fn skip_witness(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("a witness is missing in CI, where .ci/packages.sh installs it: {why}");
    }
    record_skip(why);
}

/// A part of a test did not run here (one address family, one backend): said, not counted, since
/// the test ran its other checks.
pub fn skip_part(why: &str) {
    eprintln!(
        "SKIPPED PART of {}: {why}",
        std::thread::current().name().unwrap_or("?")
    );
}

/// Like [`skip_part`], for a missing witness: a failure in CI, as [`skip_witness`].
pub fn skip_witness_part(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("a witness is missing in CI, where .ci/packages.sh installs it: {why}");
    }
    skip_part(why);
}

fn record_skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let binary = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    eprintln!("SKIPPED {test}: {why}");
    if let Ok(path) = std::env::var("UDPTEE_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{binary}::{test}\t{}", why.replace('\n', " "));
        }
    }
}

/// Longest a test waits for datagrams to arrive before it fails with a diagnosis.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Loopback of the given family: "127.0.0.1" or "::1".
pub fn loopback(v6: bool) -> SocketAddr {
    if v6 {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    }
}

/// True when this host can bind ::1 (some CI containers have no IPv6).
pub fn ipv6_available() -> bool {
    UdpSocket::bind("[::1]:0").is_ok()
}

/// A UDP socket bound on loopback with the given receive buffer (forced when we may).
pub fn udp_socket(addr: SocketAddr, rcvbuf: usize) -> UdpSocket {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).unwrap();
    // Past net.core.rmem_max when we may (root), as udptee itself does.
    let want = libc::c_int::try_from(rcvbuf / 2).unwrap_or(libc::c_int::MAX);
    // SAFETY: a live socket, a pointer to a local c_int and its size.
    let forced = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const want).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    if !forced {
        s.set_recv_buffer_size(rcvbuf).unwrap();
    }
    s.bind(&addr.into()).unwrap();
    s.into()
}

/// Deterministic content of datagram `seq` of `size` bytes: its sequence number first (when it fits),
/// then a pattern that differs per sequence number, so any corruption or mix-up shows.
pub fn payload(stream: u32, seq: u32, size: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..size)
        .map(|i| (seq as usize * 31 + i * 7 + stream as usize) as u8)
        .collect();
    if size >= 8 {
        p[..4].copy_from_slice(&stream.to_le_bytes());
        p[4..8].copy_from_slice(&seq.to_le_bytes());
    }
    p
}

/// (length, hash) of a datagram: what sinks record, compared against the same of what was sent.
pub fn fingerprint(bytes: &[u8]) -> (usize, u64) {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    (bytes.len(), h.finish())
}

/// A loopback receiver that records the fingerprint of every datagram, in arrival order.
pub struct Sink {
    pub addr: SocketAddr,
    pub count: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<(usize, u64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<UdpSocket>>,
}

impl Sink {
    /// A reading sink on loopback with a large receive buffer.
    pub fn new(v6: bool) -> Self {
        Self::at(loopback(v6))
    }

    /// A reading sink bound to `addr` (port 0: any) with a large receive buffer.
    pub fn at(addr: SocketAddr) -> Self {
        Self::with_rcvbuf(addr, 8 << 20)
    }

    /// A reading sink with `rcvbuf` bytes of receive buffer (for bursts nobody paces).
    pub fn with_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> Self {
        let socket = udp_socket(addr, rcvbuf);
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, st) = (Arc::clone(&count), Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !st.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    s.lock().unwrap().push(fingerprint(&buf[..n]));
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
            socket
        });
        Self {
            addr,
            count,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn received(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Stops reading and returns what was recorded and the socket (for its kernel drop count).
    pub fn finish(mut self) -> (Vec<(usize, u64)>, UdpSocket) {
        self.stop.store(true, Ordering::Relaxed);
        let socket = self.thread.take().unwrap().join().unwrap();
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (seen, socket)
    }
}

thread_local! {
    /// The backend [`forwarder`] uses in this test thread (set by [`on_each_backend`]).
    static BACKEND: Cell<IoBackend> = const { Cell::new(IoBackend::Mmsg) };
}

/// The backends to test here: recvmmsg always, io_uring when this kernel allows it (else skipped
/// with the reason printed, as io-uring-test's `require!` does).
pub fn backends() -> Vec<IoBackend> {
    match udptee::net::uring::probe() {
        Ok(()) => vec![IoBackend::Mmsg, IoBackend::Uring],
        Err(reason) => {
            skip_part(&format!(
                "the io_uring round: this kernel refuses io_uring: {reason}"
            ));
            vec![IoBackend::Mmsg]
        }
    }
}

/// Runs a test body once per backend in [`backends`].
pub fn on_each_backend(body: impl Fn()) {
    for backend in backends() {
        eprintln!("-- backend {backend:?}");
        BACKEND.with(|b| b.set(backend));
        body();
    }
}

/// Starts a forwarder on loopback to `targets`, with `tweak` applied to the default config, on the
/// backend [`on_each_backend`] chose (recvmmsg outside it).
pub fn forwarder(v6: bool, targets: &[SocketAddr], tweak: impl FnOnce(&mut Config)) -> Forwarder {
    let targets = targets
        .iter()
        .map(|a| TargetSpec::new(a.to_string(), *a))
        .collect();
    let mut config = Config::new(loopback(v6), targets);
    config.io_backend = BACKEND.with(Cell::get);
    config.queue_depth = 4096;
    config.max_datagram = 2048;
    config.stats_interval = Duration::ZERO;
    tweak(&mut config);
    // The per-target queue settings follow the defaults the test set.
    for t in &mut config.targets {
        t.queue_depth = config.queue_depth;
        t.queue_bytes = config.queue_bytes;
    }
    let fwd = Forwarder::start(&config).expect("forwarder starts");
    let expected = if config.io_backend == IoBackend::Uring {
        "uring"
    } else {
        "mmsg"
    };
    assert_eq!(
        fwd.stats().backend(),
        expected,
        "the forwarder runs on the backend under test"
    );
    fwd
}

/// Waits until an admin listener at `addr` accepts connections (at most 10 s).
pub fn wait_admin(addr: SocketAddr) {
    wait_until("the admin listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
}

/// Waits until `done()` holds, panicking with `what` and the forwarder's counters after [`PATIENCE`].
pub fn wait_for(fwd: &Forwarder, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for {what}; counters:\n{}",
            fwd.snapshot()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `sizes.len()` datagrams from `client` in windows of `window`, waiting after each window until
/// every sink in `paced_by` has received everything sent so far; returns the fingerprints sent.
pub fn send_paced(
    fwd: &Forwarder,
    client: &UdpSocket,
    stream: u32,
    sizes: impl Iterator<Item = usize>,
    window: usize,
    paced_by: &[&Sink],
) -> Vec<(usize, u64)> {
    let to = fwd.local_addr();
    let base: Vec<usize> = paced_by.iter().map(|s| s.received()).collect();
    let mut sent = Vec::new();
    for (seq, size) in sizes.enumerate() {
        let p = payload(stream, seq as u32, size);
        client.send_to(&p, to).unwrap();
        sent.push(fingerprint(&p));
        if sent.len() % window == 0 {
            let n = sent.len();
            wait_for(fwd, "a window to reach the sinks", || {
                paced_by
                    .iter()
                    .zip(&base)
                    .all(|(s, b)| s.received() - b >= n)
            });
        }
    }
    let n = sent.len();
    wait_for(fwd, "the last window to reach the sinks", || {
        paced_by
            .iter()
            .zip(&base)
            .all(|(s, b)| s.received() - b >= n)
    });
    sent
}

/// Asserts that every target's copies are all accounted for: received = forwarded + Σ drops.
pub fn assert_accounted(snap: &Snapshot) {
    for t in 0..snap.targets.len() {
        assert_eq!(
            snap.unaccounted(t),
            0,
            "target {t}: received = forwarded + drops must hold after shutdown:\n{snap}"
        );
    }
}

/// A free loopback UDP address: bound and released, for a child process to bind at once.
pub fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A UDP receiver on 127.0.0.1 keeping every datagram's bytes, in arrival order, until it is
/// dropped.
pub struct Keep {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Keep {
    pub fn new() -> Self {
        let s = udp_socket("127.0.0.1:0".parse().unwrap(), 32 << 20);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = s.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            loop {
                if let Ok(n) = s.recv(&mut buf) {
                    g.lock().unwrap().push(buf[..n].to_vec());
                }
                if Arc::strong_count(&g) == 1 {
                    return;
                }
            }
        });
        Self { addr, got }
    }

    /// Every datagram received so far.
    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }

    /// Every line received so far: each datagram split on `\n`, as sent (a `\r` stays).
    pub fn lines(&self) -> Vec<String> {
        self.datagrams()
            .iter()
            .flat_map(|d| {
                String::from_utf8(d.clone())
                    .expect("lines are UTF-8")
                    .split('\n')
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A fresh, empty directory for one test: `udptee-{TAG}-{name}-{pid}` under the system's temporary
/// directory, TAG naming the test binary.
pub fn temp_dir(tag: &str, name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("udptee-{tag}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A free loopback TCP address (for a child's admin listener).
pub fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts the udptee binary listening on a free loopback address and forwarding to `sink`, with
/// `extra` flags and environment; stderr is captured. Returns the child and its listen address.
pub fn spawn_udptee(
    sink: &Sink,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, SocketAddr) {
    let listen = free_addr();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_udptee"))
        .args([
            "--listen",
            &listen.to_string(),
            "--to",
            &sink.addr.to_string(),
        ])
        .args(extra)
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .die_with_test()
        .spawn()
        .expect("the udptee binary starts");
    (child, listen)
}

/// Waits until the child process has bound `addr` (as /proc/net/udp shows), failing if it exits
/// first or takes longer than 10 s.
pub fn wait_bound(child: &mut std::process::Child, addr: SocketAddr) {
    let start = Instant::now();
    while !procfs::net::udp()
        .unwrap()
        .iter()
        .any(|e| e.local_address == addr)
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "udptee exited before binding {addr}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "udptee did not bind {addr}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `done()` holds, failing with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends a signal (`"-TERM"`, `"-USR1"`) to a child process.
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} failed");
}

/// Stops a udptee child with SIGTERM, asserts it exited 0, and returns its stderr.
pub fn stop_ok(child: std::process::Child) -> String {
    signal(&child, "-TERM");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{err}");
    err
}

/// Kernel drops on a socket we own.
pub fn kernel_drops(socket: &UdpSocket) -> u64 {
    udptee::socket_drops(socket).expect("SO_MEMINFO is available")
}

/// One HTTP request; returns status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// The value of the sample whose name and labels start `series` exactly, e.g. `udptee_received_datagrams_total`.
pub fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// The udptee binary receiving on `listen` (an address, or `unixgram://...`) for `to`, with no admin
/// listener (unless `extra` names one) and no stats line, then `extra`; stderr captured, dying with
/// the test.
pub fn udptee_child(listen: &str, to: &str, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_udptee"))
        .args(["--listen", listen, "--to", to])
        .args(["--stats-interval", "0"])
        // No admin listener unless the test asks for one.
        .args(if extra.contains(&"--admin") {
            &[][..]
        } else {
            &["--admin", "off"][..]
        })
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .die_with_test()
        .spawn()
        .expect("the udptee binary starts")
}

/// Child processes that do not outlive a failed test (which would keep cargo waiting on the pipes
/// they inherited): SIGKILL when the test's thread ends (PR_SET_PDEATHSIG).
pub trait DieWithTest {
    fn die_with_test(&mut self) -> &mut Self;
}

impl DieWithTest for std::process::Command {
    fn die_with_test(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

/// The text and descriptors of the first message on a fake `NOTIFY_SOCKET` that stores
/// descriptors (`FDSTORE=1`), reading at most ten messages; `None` if none comes.
pub fn fdstore_message(
    notify: &std::os::unix::net::UnixDatagram,
) -> Option<(String, Vec<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    for _ in 0..10 {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 8]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<()>(
            notify.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) else {
            break;
        };
        let fds: Vec<i32> = msg
            .cmsgs()
            .unwrap()
            .filter_map(|c| match c {
                ControlMessageOwned::ScmRights(f) => Some(f),
                _ => None,
            })
            .flatten()
            .collect();
        let text = String::from_utf8_lossy(iov[0].as_ref()).into_owned();
        if text.contains("FDSTORE=1") {
            // SAFETY: the kernel installed these descriptors for us with the message.
            let owned = fds
                .into_iter()
                .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            return Some((text, owned.collect()));
        }
    }
    None
}
