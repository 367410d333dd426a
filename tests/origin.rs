//! Keeping the origin (`preserve-source`): a Unix receiver sees each client's pid, uid and gid on
//! a preserving target's copies and udptee's own on a relaying one; a UDP receiver sees each
//! client's address and port (IPv4 and IPv6) on a preserving target and udptee's on a plain one;
//! without the privilege, asking is an error and the Unix default relays with a warning; and
//! `strip-fields` removes DogStatsD's origin fields from one target's copy only.

mod util;

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use udptee::config::{Config, LineSettings, TargetSpec, UnixListen};
use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_udptee");

fn root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A Unix receiver that reads each datagram with the credentials the kernel gives it.
struct CredSink(UnixDatagram);

impl CredSink {
    fn bind(path: &Path) -> Self {
        let s = UnixDatagram::bind(path).unwrap();
        setsockopt(&s, sockopt::PassCred, &true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self(s)
    }

    /// The next datagram and its sender's (pid, uid, gid).
    fn next(&self) -> (Vec<u8>, (i32, u32, u32)) {
        let mut buf = vec![0u8; 2048];
        let mut space = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            self.0.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .expect("a datagram within 10 s");
        let mut cred = None;
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmCredentials(u) = c {
                cred = Some((u.pid(), u.uid(), u.gid()));
            }
        }
        let n = msg.bytes;
        (
            buf[..n].to_vec(),
            cred.expect("SCM_CREDENTIALS on every datagram"),
        )
    }
}

fn unix_target(name: &str, path: &Path, preserve: Option<bool>) -> TargetSpec {
    let mut t = TargetSpec::new(name, "0.0.0.0:0".parse().unwrap());
    t.addr = format!("unixgram://{}", path.display());
    t.unix = Some(path.to_path_buf());
    t.preserve_source = preserve;
    t
}

/// Sends `n` datagrams to `path` from a child process (fork: only async-signal-safe calls in the
/// child), which exits at once; returns its pid. It stays a zombie, its pid still valid, until
/// [`reap`].
fn send_from_child(path: &Path, n: usize) -> i32 {
    let addr = nix::sys::socket::UnixAddr::new(path).unwrap();
    let msg = b"child.metric:1|c|#env:test";
    // SAFETY: the child calls only socket, sendto and _exit (async-signal-safe), with memory
    // prepared before the fork.
    match unsafe { nix::unistd::fork() }.unwrap() {
        // SAFETY: as above: socket, sendto and _exit only, on an address built before the fork.
        nix::unistd::ForkResult::Child => unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
            for _ in 0..n {
                libc::sendto(
                    fd,
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    nix::sys::socket::SockaddrLike::as_ptr(&addr).cast(),
                    nix::sys::socket::SockaddrLike::len(&addr),
                );
            }
            libc::_exit(0);
        },
        nix::unistd::ForkResult::Parent { child } => child.as_raw(),
    }
}

fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}

#[test]
fn a_unix_receiver_sees_the_clients_credentials_on_a_preserving_target_only() {
    if !root() {
        skip("skipped: sending another process's credentials needs root (CAP_SYS_ADMIN)");
        return;
    }
    let dir = temp_dir("origin", "unix");
    let listen = dir.join("in.sock");
    let (kept, relayed) = (
        CredSink::bind(&dir.join("kept.sock")),
        CredSink::bind(&dir.join("relayed.sock")),
    );
    let mut c = Config::new(
        "0.0.0.0:0".parse().unwrap(),
        vec![
            // The default for a Unix target fed by a Unix listener, with the privilege: kept.
            unix_target("kept", &dir.join("kept.sock"), None),
            unix_target("relayed", &dir.join("relayed.sock"), Some(false)),
        ],
    );
    c.listen_unix = Some(UnixListen {
        path: listen.clone(),
        mode: 0o666,
        owner: None,
    });
    c.stats_interval = Duration::ZERO;
    c.admin = Some("127.0.0.1:0".parse().unwrap());
    c.record = Some(udptee::record::RecordSettings::new(dir.join("rec.pcap")));
    let fwd = udptee::Forwarder::start(&c).unwrap();
    let (_, targets) = http(fwd.admin_addr().unwrap(), "GET", "/targets", "", "");
    let v: serde_json::Value = serde_json::from_str(&targets).unwrap();
    assert_eq!(v[0]["origin"], "kept", "{targets}");
    assert_eq!(v[1]["origin"], "relayed", "{targets}");

    let mut pids = Vec::new();
    for _ in 0..3 {
        let pid = send_from_child(&listen, 20);
        for _ in 0..20 {
            let (data, (p, uid, gid)) = kept.next();
            assert_eq!(data, b"child.metric:1|c|#env:test", "byte for byte");
            assert_eq!((p, uid, gid), (pid, 0, 0), "the client's pid, not udptee's");
            let (_, (p, ..)) = relayed.next();
            assert_eq!(
                p,
                std::process::id() as i32,
                "udptee's own pid on a relaying target"
            );
        }
        pids.push(pid);
    }
    let snap = fwd.shutdown();
    for &pid in &pids {
        reap(pid);
    }
    assert_accounted(&snap);
    for (name, t) in snap.target_names.iter().zip(&snap.targets) {
        assert_eq!((t.forwarded, t.dropped_total()), (60, 0), "{name}");
    }
    // The recording keeps each datagram's credentials, as its documented source address.
    let mut recorded = Vec::new();
    udptee::replay::capture::for_each_udp(&dir.join("rec.pcap"), &mut Default::default(), |d| {
        recorded.push(udptee::net::origin::cred_of_address(d.src.ip()));
        Ok(())
    })
    .unwrap();
    assert_eq!(recorded.len(), 60);
    for (i, c) in recorded.iter().enumerate() {
        let c = c.expect("a credentials address (fd75:6474::/32)");
        assert_eq!((c.pid, c.uid, c.gid), (pids[i / 20], 0, 0), "record {i}");
    }
}

/// Clients on several ports, IPv4 and IPv6: the preserving target sees each datagram from its
/// client's address and port, the plain one from udptee's.
#[test]
fn a_udp_receiver_sees_each_clients_address_on_a_preserving_target_only() {
    if !root() {
        skip("skipped: a raw socket needs root (CAP_NET_RAW)");
        return;
    }
    for v6 in [false, true] {
        if v6 && !ipv6_available() {
            skip_part("skipped IPv6: no ::1 here");
            continue;
        }
        let kept = UdpSocket::bind(loopback(v6)).unwrap();
        let plain = UdpSocket::bind(loopback(v6)).unwrap();
        for s in [&kept, &plain] {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        let fwd = forwarder(
            v6,
            &[kept.local_addr().unwrap(), plain.local_addr().unwrap()],
            |c| {
                c.targets[0].preserve_source = Some(true);
            },
        );
        let clients: Vec<UdpSocket> = (0..4)
            .map(|_| UdpSocket::bind(loopback(v6)).unwrap())
            .collect();
        for round in 0..25u32 {
            for (i, c) in clients.iter().enumerate() {
                c.send_to(format!("c{i}.r{round}:1|c").as_bytes(), fwd.local_addr())
                    .unwrap();
            }
        }
        let mut buf = [0u8; 256];
        let mut seen = std::collections::HashMap::<SocketAddr, u32>::new();
        for _ in 0..100 {
            let (n, from) = kept
                .recv_from(&mut buf)
                .expect("a preserved copy within 10 s");
            let text = std::str::from_utf8(&buf[..n]).unwrap();
            let i: usize = text[1..text.find('.').unwrap()].parse().unwrap();
            assert_eq!(
                from,
                clients[i].local_addr().unwrap(),
                "{text} from its client"
            );
            *seen.entry(from).or_default() += 1;
            let (_, from) = plain.recv_from(&mut buf).unwrap();
            assert!(
                clients.iter().all(|c| c.local_addr().unwrap() != from),
                "the plain copy leaves from udptee's own socket"
            );
        }
        assert_eq!(seen.len(), 4);
        assert!(seen.values().all(|&n| n == 25), "{seen:?}");
        let snap = fwd.shutdown();
        assert_accounted(&snap);
        assert_eq!(snap.targets[0].forwarded, 100, "v6={v6}");
    }
}

/// A child process killed when dropped (a test that fails on the way).
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Without the privilege: `preserve-source = true` is one clear error at start; the Unix default
/// relays, with a warning from `check` and at start.
#[test]
fn without_the_privilege_asking_is_an_error_and_the_default_relays_with_a_warning() {
    if !root() || Command::new("setpriv").arg("--version").output().is_err() {
        skip("skipped: needs root and setpriv (util-linux) to run udptee as nobody");
        return;
    }
    let dir = temp_dir("origin", "unprivileged");
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777));
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = write(
        &dir,
        "udp.toml",
        &format!(
            "listen = \"{}\"\nadmin = \"off\"\n[[target]]\nname = \"shadow\"\naddr = \"{}\"\npreserve-source = true\n",
            free_addr(),
            sink.local_addr().unwrap()
        ),
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(BIN)
        .args(["--config", &udp.to_string_lossy()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("preserve-source") && err.contains("CAP_NET_RAW"),
        "{err}"
    );

    // A Unix target with --user: privileges go after start, so credentials cannot be kept.
    let listen = dir.join("in.sock");
    let unix = |extra: &str| {
        format!(
            "listen = \"unixgram://{}\"\nadmin = \"off\"\nuser = \"nobody\"\n[[target]]\nname = \"dsd\"\naddr = \"unixgram://{}\"\n{extra}",
            listen.display(),
            dir.join("out.sock").display()
        )
    };
    let default = write(&dir, "unix.toml", &unix(""));
    let out = Command::new(BIN)
        .args(["check", "--config", &default.to_string_lossy()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning, not an error: {err}");
    assert!(
        err.contains("warning") && err.contains("dsd") && err.contains("relayed"),
        "{err}"
    );

    // Running: /targets says the origin is relayed and why; asking through the API is refused
    // and the running target stays.
    let admin = free_tcp();
    let running = write(
        &dir,
        "running.toml",
        &unix("").replace("admin = \"off\"", &format!("admin = \"{admin}\"")),
    );
    // With --user the kernel forgets the parent-death signal at the switch: killed on drop instead,
    // so that a failed assertion leaves no udptee holding the test's pipes.
    let mut child = Reaped(Some(
        Command::new(BIN)
            .args(["--config", &running.to_string_lossy()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    wait_admin(admin);
    let (_, got) = http(admin, "GET", "/targets/dsd", "", "");
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["origin"], "relayed", "{got}");
    assert!(
        v["origin_relayed_because"]
            .as_str()
            .is_some_and(|r| r.contains("--user")),
        "{got}"
    );
    let body = format!(
        r#"{{"addr": "unixgram://{}", "preserve-source": true}}"#,
        dir.join("out.sock").display()
    );
    let (code, answer) = http(admin, "PUT", "/targets/dsd", "", &body);
    assert!((400..500).contains(&code), "{code} {answer}");
    assert!(answer.contains("preserve-source"), "{answer}");
    let (_, got) = http(admin, "GET", "/targets/dsd", "", "");
    assert!(
        got.contains("\"relayed\""),
        "the running target stays: {got}"
    );
    // The same through a reload of the file: refused, the running set kept.
    std::fs::write(
        &running,
        std::fs::read_to_string(&running).unwrap() + "preserve-source = true\n",
    )
    .unwrap();
    let (code, answer) = http(admin, "POST", "/-/reload", "", "");
    assert!((400..500).contains(&code), "{code} {answer}");
    assert!(
        answer.contains("preserve-source") && answer.contains("--user"),
        "{answer}"
    );
    let (_, got) = http(admin, "GET", "/targets/dsd", "", "");
    assert!(
        got.contains("\"relayed\""),
        "still running as it was: {got}"
    );
    let child = child.0.take().unwrap();
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("origin: relayed") && log.matches("origin: relayed").count() == 1,
        "said once at start: {log}"
    );

    let asked = write(&dir, "asked.toml", &unix("preserve-source = true\n"));
    let out = Command::new(BIN)
        .args(["--config", &asked.to_string_lossy()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("preserve-source") && err.contains("--user"),
        "{err}"
    );

    // What cannot keep its origin is refused whatever the privilege: Unix in, UDP out.
    let mixed = write(
        &dir,
        "mixed.toml",
        &format!(
            "listen = \"unixgram://{}\"\n[[target]]\nname = \"udp\"\naddr = \"127.0.0.1:9\"\npreserve-source = true\n",
            listen.display()
        ),
    );
    let out = Command::new(BIN)
        .args(["check", "--config", &mixed.to_string_lossy()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("preserve-source") && err.contains("credentials"),
        "{err}"
    );
}

/// `strip-fields` on one target: its lines lose `|c:`, `|e:` and `|card:` and keep everything else
/// in order; the other target gets the datagram byte for byte.
#[test]
fn strip_fields_changes_one_targets_copy_only() {
    let shadow = Sink::new(false);
    let primary = Sink::new(false);
    let fwd = forwarder(false, &[primary.addr, shadow.addr], |c| {
        c.targets[1].lines = LineSettings {
            strip_fields: vec!["c".into(), "e".into(), "card".into()],
            ..LineSettings::default()
        };
    });
    let sent: &[u8] = b"a:1|c|#env:prod,z:1|c:ci-1|e:it-x|card:low|T5\nb:2|g\n_sc|up|0|c:x|#t:1";
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(sent, fwd.local_addr()).unwrap();
    wait_for(&fwd, "both copies", || {
        primary.received() == 1 && shadow.received() == 1
    });
    let snap = fwd.shutdown();
    assert_accounted(&snap);
    let (p, _) = primary.finish();
    let (s, _) = shadow.finish();
    assert_eq!(
        p[0],
        fingerprint(sent),
        "the primary's copy is the datagram as sent"
    );
    let want: &[u8] = b"a:1|c|#env:prod,z:1|T5\nb:2|g\n_sc|up|0|#t:1";
    assert_eq!(
        s[0],
        fingerprint(want),
        "the shadow's copy without origin fields"
    );
}

/// `udptee replay --preserve-source`: each datagram leaves from the address and port it was
/// recorded from; without the flag, from the replaying socket.
#[test]
fn replay_keeps_the_recorded_sources_when_asked() {
    if !root() {
        skip("skipped: a raw socket needs root (CAP_NET_RAW)");
        return;
    }
    let dir = temp_dir("origin", "replay");
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let fwd = forwarder(false, &[sink.local_addr().unwrap()], |c| {
        c.record = Some(udptee::record::RecordSettings::new(dir.join("rec.pcap")));
    });
    let clients: Vec<UdpSocket> = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, c) in clients.iter().enumerate() {
        c.send_to(format!("c{i}:1|c").as_bytes(), fwd.local_addr())
            .unwrap();
    }
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        sink.recv_from(&mut buf).unwrap();
    }
    drop(fwd.shutdown());
    let rec = dir.join("rec.pcap");
    for keep in [true, false] {
        let mut args = vec![
            "replay".to_owned(),
            rec.to_string_lossy().into_owned(),
            "--to".into(),
            sink.local_addr().unwrap().to_string(),
            "--speed".into(),
            "max".into(),
        ];
        if keep {
            args.push("--preserve-source".into());
        }
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..3 {
            let (n, from) = sink.recv_from(&mut buf).unwrap();
            let i: usize = std::str::from_utf8(&buf[1..n - 4])
                .unwrap()
                .parse()
                .unwrap();
            let client = clients[i].local_addr().unwrap();
            assert_eq!(
                from == client,
                keep,
                "replayed c{i} from {from} (client {client})"
            );
        }
    }
}

/// A copy whose sender is gone (its pid no longer exists) cannot carry its origin: the kernel
/// refuses it (ESRCH), and udptee counts it `origin_lost`.
#[test]
fn a_gone_senders_copy_is_origin_lost() {
    if !root() {
        skip("skipped: naming another process's pid needs root (CAP_SYS_ADMIN)");
        return;
    }
    use udptee::metrics::counters::SendErrorKind;
    use udptee::net::mmsg::Cred;
    use udptee::net::origin::{Origin, OriginSend, Way};
    let (a, b) = UnixDatagram::pair().unwrap();
    let dir = temp_dir("origin", "gone");
    let pid = send_from_child(&dir.join("nobody-listens.sock"), 0);
    reap(pid);
    let mut send = OriginSend::new(2);
    let gone = Origin::Process(Cred {
        pid,
        uid: 0,
        gid: 0,
    });
    let here = Origin::Process(Cred {
        pid: std::process::id() as i32,
        uid: 0,
        gid: 0,
    });
    let fd = std::os::fd::AsFd::as_fd(&a);
    let copies = [(&b"mine"[..], here), (&b"gone"[..], gone)];
    assert_eq!(
        send.send(fd, &Way::Credentials, copies.into_iter())
            .unwrap(),
        1
    );
    let e = send
        .send(fd, &Way::Credentials, copies[1..].iter().copied())
        .unwrap_err();
    assert_eq!(SendErrorKind::of(&e), SendErrorKind::OriginLost, "{e}");
    let mut buf = [0u8; 8];
    assert_eq!(
        b.recv(&mut buf).unwrap(),
        4,
        "the copy with a live pid went out"
    );
}
