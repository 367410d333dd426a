//! The admin listener against hostile local clients: connections that dribble their requests do
//! not keep /healthz out (the one waiting longest gives way, and it is counted); a change without
//! the token is refused from its headers, its body never read; a request whose body does not come
//! in time is closed; and on a loopback listener without a token only root or udptee's own user
//! may change anything, while reading stays open to everyone.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use util::*;

/// Connects to `addr` from a socket owned by `uid`: the socket's owner is the thread's filesystem
/// uid when it is created (needs root). The kernel reports that owner through sock_diag.
fn connect_as(uid: u32, addr: SocketAddr) -> TcpStream {
    std::thread::spawn(move || {
        // SAFETY: setfsuid changes only this thread's filesystem uid, which is put back.
        let before = unsafe { libc::setfsuid(uid) };
        let s = TcpStream::connect(addr);
        // SAFETY: as above; the thread ends here anyway.
        unsafe { libc::setfsuid(before as u32) };
        s.unwrap()
    })
    .join()
    .unwrap()
}

/// One request on `s`; the status code and the body.
fn request(mut s: TcpStream, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
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
    (
        status,
        out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned(),
    )
}

/// A slow client: the headers of a PUT announcing a large body, then one byte now and then.
fn slow_put(addr: SocketAddr, headers: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT /targets/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n{headers}\r\n{{"
    )
    .unwrap();
    s
}

#[test]
fn slow_clients_never_keep_the_health_probe_out() {
    let a = Sink::new(false);
    let fwd = forwarder(false, &[a.addr], |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap())
    });
    let admin = fwd.admin_addr().unwrap();
    // Twice the connection limit, each holding its request open.
    let mut slow: Vec<TcpStream> = (0..128).map(|_| slow_put(admin, "")).collect();
    let started = Instant::now();
    let mut answered = 0;
    for round in 0..20 {
        // The slow ones keep dribbling (and reconnect when closed), as an attacker would.
        for s in &mut slow {
            if s.write_all(b" ").is_err() {
                *s = slow_put(admin, "");
            }
        }
        let (code, body) = http(admin, "GET", "/healthz", "", "");
        assert_eq!((code, body.as_str()), (200, "ok\n"), "probe {round}");
        answered += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(answered, 20, "every probe answered");
    assert!(started.elapsed() < Duration::from_secs(10));
    let (_, metrics) = http(admin, "GET", "/metrics", "", "");
    assert!(
        sample(
            &metrics,
            "udptee_admin_connections_dropped_total{reason=\"evicted\"}"
        ) >= 64,
        "the slow connections that gave way are counted:\n{metrics}"
    );
    assert!(sample(&metrics, "udptee_admin_connections_total") >= 128 + 20);
}

#[test]
fn a_change_without_the_token_is_refused_before_its_body_and_a_slow_body_is_cut_off() {
    let a = Sink::new(false);
    let fwd = forwarder(false, &[a.addr], |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        c.admin_token = Some("0123456789abcdef-secret".into());
    });
    let admin = fwd.admin_addr().unwrap();
    // The headers alone decide: 403 at once, though 60,000 body bytes were announced.
    let mut s = slow_put(admin, "");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .expect("answered without waiting for the body");
    assert_eq!(&head, b"HTTP/1.1 403");
    // With the token, a body that does not come is cut off with 408 (headers 5 s + body 5 s).
    let mut s = slow_put(admin, "Authorization: Bearer 0123456789abcdef-secret\r\n");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let (_, metrics) = http(admin, "GET", "/metrics", "", "");
    assert_eq!(
        sample(
            &metrics,
            "udptee_admin_connections_dropped_total{reason=\"unauthorized\"}"
        ),
        1
    );
    assert_eq!(
        sample(
            &metrics,
            "udptee_admin_connections_dropped_total{reason=\"slow\"}"
        ),
        1
    );
    assert_eq!(fwd.snapshot().target_names.len(), 1, "nothing was added");
}

#[test]
fn only_root_or_udptees_user_may_change_things_on_loopback() {
    if !nix::unistd::Uid::effective().is_root() {
        skip("skipping: needs root to connect as another user");
        return;
    }
    let a = Sink::new(false);
    let b = Sink::new(false);
    let fwd = forwarder(false, &[a.addr], |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap())
    });
    let admin = fwd.admin_addr().unwrap();
    let nobody = 65534;
    let put = format!("{{\"addr\": \"{}\"}}", b.addr);
    let name = a.addr.to_string();
    let refused = [
        ("PUT", "/targets/steal".to_owned(), put.as_str()),
        ("DELETE", format!("/targets/{name}"), ""),
        ("POST", format!("/targets/{name}/disable"), ""),
        ("POST", "/record/start".to_owned(), "{\"file\": \"x.pcap\"}"),
        ("POST", "/-/reload".to_owned(), ""),
        ("GET", "/tap".to_owned(), ""),
    ];
    for (method, path, body) in &refused {
        let (code, text) = request(connect_as(nobody, admin), method, path, "", body);
        assert_eq!(code, 403, "{method} {path} from nobody: {text}");
        assert!(text.contains("only from root or uid 0"), "{text}");
    }
    assert_eq!(fwd.snapshot().target_names.len(), 1, "nothing changed");
    assert!(!fwd.control().recorder().status().recording);
    for path in ["/metrics", "/healthz", "/targets", "/", "/status.json"] {
        let (code, _) = request(connect_as(nobody, admin), "GET", path, "", "");
        assert_eq!(code, 200, "reading {path} stays open");
    }
    // Root (and udptee's own user, here the same) may.
    let (code, text) = request(connect_as(0, admin), "PUT", "/targets/added", "", &put);
    assert_eq!(code, 200, "{text}");
    assert_eq!(fwd.snapshot().target_names.len(), 2);
}

mod reader {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// One forwarder shared by every case (its admin listener is what is under test); it lives
    /// as long as the test process.
    fn admin() -> SocketAddr {
        static ADMIN: OnceLock<SocketAddr> = OnceLock::new();
        *ADMIN.get_or_init(|| {
            let a = Sink::new(false);
            let fwd = forwarder(false, &[a.addr], |c| {
                c.admin = Some("127.0.0.1:0".parse().unwrap());
                c.admin_token = Some("0123456789abcdef-secret".into());
            });
            let addr = fwd.admin_addr().unwrap();
            std::mem::forget((fwd, a));
            addr
        })
    }

    fn request() -> impl Strategy<Value = Vec<u8>> {
        let method = prop::sample::select(vec![
            "GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "G\0T",
        ]);
        let path = prop::sample::select(vec![
            "/healthz",
            "/metrics",
            "/targets/x",
            "/targets/x/enable",
            "/-/reload",
            "/tap",
            "/record/start",
            "/%ff%00",
            "/targets/../../etc",
            "",
        ]);
        let length = prop_oneof![Just(None), (0usize..200_000).prop_map(Some)];
        let auth = prop::bool::ANY;
        let body = prop::collection::vec(any::<u8>(), 0..2048);
        let junk = prop::collection::vec(any::<u8>(), 0..64);
        (method, path, length, auth, body, junk).prop_map(|(m, p, len, auth, body, junk)| {
            let mut r = format!("{m} {p} HTTP/1.1\r\nHost: x\r\n").into_bytes();
            if let Some(n) = len {
                r.extend(format!("Content-Length: {n}\r\n").bytes());
            }
            if auth {
                r.extend(b"Authorization: Bearer 0123456789abcdef-secret\r\n");
            }
            r.extend(&junk);
            r.extend(b"\r\n");
            r.extend(&body);
            r
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Partial, oversized, malformed and chunked-up requests get an HTTP answer or a close,
        /// within the request bounds, and never take the listener down.
        #[test]
        fn any_request_in_any_pieces_is_answered_or_closed(
            bytes in request(),
            cut in 0usize..4096,
            pieces in 1usize..6,
        ) {
            let admin = admin();
            let mut s = TcpStream::connect(admin).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
            let sent = &bytes[..cut.min(bytes.len()).max(1)];
            for chunk in sent.chunks(sent.len().div_ceil(pieces)) {
                if s.write_all(chunk).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // The client has said all it will: the listener must not wait for more for ever.
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut out = Vec::new();
            let read = s.read_to_end(&mut out);
            // Still open after 12 s: only a tap may be, answered at once and streaming (its client
            // keeps reading; bytes it sent after the request wait for the stream's end).
            if read.as_ref().is_err_and(|e| {
                matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            }) {
                let text = String::from_utf8_lossy(&out);
                prop_assert!(
                    text.starts_with("HTTP/1.1 200 ") && text.contains("# udptee tap: "),
                    "neither answered nor closed in 12 s: {text}"
                );
            }
            if !out.is_empty() {
                prop_assert!(out.starts_with(b"HTTP/1.1 "), "{}", String::from_utf8_lossy(&out));
                let code: u16 = String::from_utf8_lossy(&out[9..12]).parse().unwrap();
                prop_assert!((200..600).contains(&code) && code != 500, "{code}");
            }
            let (code, body) = http(admin, "GET", "/healthz", "", "");
            prop_assert_eq!((code, body.as_str()), (200, "ok\n"));
        }
    }
}

#[test]
fn error_answers_never_echo_the_request() {
    let a = Sink::new(false);
    let fwd = forwarder(false, &[a.addr], |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap())
    });
    let admin = fwd.admin_addr().unwrap();
    let cases = [
        (
            "DELETE",
            "/targets/nosuch-xyzzy",
            String::new(),
            "nosuch-xyzzy",
        ),
        (
            "PUT",
            "/targets/%3Cscript%3E",
            "{\"addr\": \"127.0.0.1:9\"}".into(),
            "<script>",
        ),
        (
            "PUT",
            "/targets/ok",
            "{\"addr\": \"127.0.0.1:9\", \"evil-key\": 1}".into(),
            "evil-key",
        ),
        (
            "PUT",
            "/targets/ok",
            "{\"addr\": \"not-an-address-xyzzy\"}".into(),
            "not-an-address-xyzzy",
        ),
        (
            "PUT",
            "/targets/ok",
            "{\"name\": \"other-xyzzy\", \"addr\": \"127.0.0.1:9\"}".into(),
            "other-xyzzy",
        ),
        (
            "GET",
            "/parity?primary=ghost-xyzzy",
            String::new(),
            "ghost-xyzzy",
        ),
    ];
    for (method, path, body, echo) in cases {
        let (code, answer) = http(admin, method, path, "", &body);
        assert!(
            (400..500).contains(&code),
            "{method} {path}: {code} {answer}"
        );
        assert!(
            !answer.contains(echo),
            "{method} {path}: the answer quotes the request: {answer}"
        );
        assert!(answer.contains("\"error\""), "{answer}");
    }
}
