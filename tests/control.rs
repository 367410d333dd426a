//! Runtime control: reload under load, the admin API's verbs, host names followed, `udptee check`.

mod util;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use udptee::cli::Invocation;
use udptee::config::{ConfigError, Resolve, Resolver, TargetSpec};
use udptee::{Config, Forwarder};
use util::*;

/// A sink that records the (stream, seq) carried in the first 8 bytes of every datagram.
struct SeqSink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(u32, u32)>>>,
    thread: Option<JoinHandle<()>>,
}

impl SeqSink {
    fn new() -> Self {
        let socket = udp_socket(loopback(false), 8 << 20);
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (st, se) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    if n >= 8 {
                        let stream = u32::from_le_bytes(buf[..4].try_into().unwrap());
                        let seq = u32::from_le_bytes(buf[4..8].try_into().unwrap());
                        se.lock().unwrap().push((stream, seq));
                    }
                }
            }
        });
        Self {
            addr,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Sequence numbers per stream, in arrival order.
    fn finish(mut self) -> HashMap<u32, Vec<u32>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let mut by: HashMap<u32, Vec<u32>> = HashMap::new();
        for (s, q) in self.seen.lock().unwrap().iter() {
            by.entry(*s).or_default().push(*q);
        }
        by
    }
}

fn write_config(path: &std::path::Path, listen: SocketAddr, targets: &[(&str, SocketAddr)]) {
    let mut text = format!("listen = \"{listen}\"\nstats-interval = \"0s\"\nadmin = \"off\"\n");
    for (name, addr) in targets {
        text.push_str(&format!(
            "[[target]]\nname = \"{name}\"\naddr = \"{addr}\"\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("udptee-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn is_run(v: &[u32]) -> bool {
    v.windows(2).all(|w| w[1] == w[0] + 1)
}

/// Under steady load from two client sockets, a reload adds a target, removes another and moves a
/// third: the unchanged one gets every datagram once in order, the added one a gap-free tail, the
/// removed one a gap-free head, the moved one everything across its two addresses, and every
/// target's books balance.
#[test]
fn a_reload_under_load_changes_only_what_it_names() {
    const PER_STREAM: u32 = 20_000;
    let keep = SeqSink::new();
    let gone = SeqSink::new();
    let moved_old = SeqSink::new();
    let moved_new = SeqSink::new();
    let added = SeqSink::new();
    let listen = free_addr();
    let path = temp_path("reload.toml");
    write_config(
        &path,
        listen,
        &[
            ("keep", keep.addr),
            ("gone", gone.addr),
            ("moved", moved_old.addr),
        ],
    );
    let inv = Invocation::try_from_iter(["udptee", "--config", path.to_str().unwrap()]).unwrap();
    let config = inv.load().expect("the file is valid");
    let loader: udptee::control::Loader = Box::new(move || inv.load());
    let fwd = Forwarder::start_with(&config, Some(loader)).expect("starts");
    let clients = [
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    ];
    let mut sent = 0usize;
    for seq in 0..PER_STREAM {
        for (stream, c) in clients.iter().enumerate() {
            c.send_to(&payload(stream as u32, seq, 64), listen).unwrap();
            sent += 1;
        }
        if seq == PER_STREAM / 2 {
            write_config(
                &path,
                listen,
                &[
                    ("keep", keep.addr),
                    ("moved", moved_new.addr),
                    ("added", added.addr),
                ],
            );
            let report = fwd.control().reload().expect("the new file is valid");
            assert_eq!(report.change.added, ["added"]);
            assert_eq!(report.change.removed, ["gone"]);
            assert_eq!(report.change.replaced, ["moved"]);
            assert_eq!(report.change.unchanged, ["keep"]);
        }
        if seq % 250 == 249 {
            wait_for(&fwd, "the unchanged target to keep up", || {
                keep.count() >= sent
            });
        }
    }
    wait_for(&fwd, "the unchanged target to get everything", || {
        keep.count() >= sent
    });
    wait_for(&fwd, "the moved target to get its tail", || {
        moved_old.count() + moved_new.count() >= sent
    });
    let snap = fwd.shutdown();
    let keep = keep.finish();
    for stream in 0..2 {
        assert_eq!(
            keep[&stream],
            (0..PER_STREAM).collect::<Vec<_>>(),
            "the unchanged target got stream {stream} exactly once, in order"
        );
    }
    let (gone, added) = (gone.finish(), added.finish());
    let (old, new) = (moved_old.finish(), moved_new.finish());
    for stream in 0..2 {
        let head = &gone[&stream];
        assert!(
            head[0] == 0 && is_run(head),
            "the removed target got a gap-free head"
        );
        let tail = &added[&stream];
        assert!(
            *tail.last().unwrap() == PER_STREAM - 1 && is_run(tail),
            "the added target got a gap-free tail"
        );
        let mut both = old.get(&stream).cloned().unwrap_or_default();
        both.extend(new.get(&stream).cloned().unwrap_or_default());
        assert_eq!(
            both,
            (0..PER_STREAM).collect::<Vec<_>>(),
            "the moved target lost nothing and got nothing twice: old address then new"
        );
    }
    for name in ["keep", "gone", "moved", "added"] {
        let t = snap.index_of(name).expect("every target is reported");
        assert_eq!(
            snap.unaccounted(t),
            0,
            "{name}: offered = forwarded + drops:\n{snap}"
        );
        assert_eq!(snap.dropped_total(t), 0, "{name}: nothing dropped:\n{snap}");
    }
    let t = snap.index_of("moved").unwrap();
    assert_eq!(
        snap.targets[t].forwarded,
        u64::from(2 * PER_STREAM),
        "counters belong to the name and survive the move"
    );
    let _ = std::fs::remove_file(path);
}

/// A reload with an invalid file changes nothing and says where the error is.
#[test]
fn an_invalid_reload_keeps_the_running_set() {
    let sink = Sink::new(false);
    let listen = free_addr();
    let path = temp_path("invalid.toml");
    write_config(&path, listen, &[("a", sink.addr)]);
    let inv = Invocation::try_from_iter(["udptee", "--config", path.to_str().unwrap()]).unwrap();
    let mut config = inv.load().unwrap();
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    let fwd = Forwarder::start_with(&config, Some(Box::new(move || inv.load()))).unwrap();
    let admin = fwd.admin_addr().unwrap();
    std::fs::write(&path, format!("listen = \"{listen}\"\nbatch = \"x\"\n")).unwrap();
    let e = fwd.control().reload().unwrap_err().to_string();
    assert!(
        e.contains(":2:") && e.contains("batch"),
        "names the line and key: {e}"
    );
    let (code, body) = http(admin, "POST", "/-/reload", "", "");
    assert_eq!(code, 400, "the API refuses it too: {body}");
    assert!(
        body.contains(":2:") && body.contains("batch"),
        "with the message: {body}"
    );
    assert_eq!(
        fwd.control().reload_counts(),
        (0, 2),
        "each counted as an error"
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"still forwarding", listen).unwrap();
    wait_for(&fwd, "forwarding to go on", || sink.received() == 1);
    // A valid file that changes start-up settings: the targets are applied, the rest reported.
    std::fs::write(
        &path,
        format!(
            "listen = \"{listen}\"\nbatch = 8\nstats-interval = \"0s\"\n[[target]]\nname = \"a\"\naddr = \"{}\"\n",
            sink.addr
        ),
    )
    .unwrap();
    let report = fwd.control().reload().expect("valid");
    assert!(
        report.restart_needed.contains(&"batch") && report.restart_needed.contains(&"admin"),
        "settings that cannot change live are reported: {:?}",
        report.restart_needed
    );
    assert_eq!(report.change.unchanged, ["a"]);
    // The same file again changes nothing: nothing is published, the generation stays.
    let before = fwd.registry().current().generation;
    let again = fwd.control().reload().expect("valid");
    assert_eq!(again.change.unchanged, ["a"]);
    assert_eq!(
        again.change.generation, before,
        "a no-op reload keeps the generation"
    );
    assert_eq!(fwd.registry().current().generation, before);
    let snap = fwd.shutdown();
    assert_eq!(snap.target_names, ["a"], "the running set is kept");
    let _ = std::fs::remove_file(path);
}

#[test]
fn every_api_verb_answers_as_documented() {
    let a = Sink::new(false);
    let b = Sink::new(false);
    let fwd = forwarder(false, &[a.addr], |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap())
    });
    let admin = fwd.admin_addr().unwrap();
    let name_a = a.addr.to_string();

    let (code, body) = http(admin, "GET", "/targets", "", "");
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["name"], name_a.as_str());
    assert_eq!(list[0]["enabled"], true);

    let put = format!("{{\"addr\": \"{}\", \"queue-depth\": 100}}", b.addr);
    let (code, body) = http(admin, "PUT", "/targets/dark", "", &put);
    assert_eq!(code, 200, "PUT adds: {body}");
    assert!(
        body.contains("runtime state"),
        "the answer says a reload re-applies the file"
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"to both", fwd.local_addr()).unwrap();
    wait_for(&fwd, "the new target to get traffic", || {
        b.received() == 1 && a.received() == 1
    });

    let (code, body) = http(admin, "GET", "/targets/dark", "", "");
    assert_eq!(code, 200);
    let t: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["queue-depth"], 100, "its own settings");
    assert_eq!(t["counters"]["forwarded"], 1);

    for (path, body, why) in [
        ("/targets/dark", "{\"addr\": 5}", "a wrong type"),
        ("/targets/dark", "not json", "junk"),
        (
            "/targets/dark",
            "{\"addr\": \"127.0.0.1:9\", \"bogus\": 1}",
            "an unknown key",
        ),
        (
            "/targets/bad%20name",
            "{\"addr\": \"127.0.0.1:9\"}",
            "a bad name",
        ),
        (
            "/targets/loop",
            &format!("{{\"addr\": \"{}\"}}", fwd.local_addr()),
            "a loop",
        ),
        (
            "/targets/twice",
            &format!("{{\"addr\": \"{}\"}}", b.addr),
            "a duplicate address",
        ),
        (
            "/targets/bcast",
            "{\"addr\": \"255.255.255.255:9\"}",
            "a refused connect (broadcast)",
        ),
    ] {
        let (code, answer) = http(admin, "PUT", path, "", body);
        assert_eq!(code, 400, "{why} is a 400: {answer}");
        assert!(!answer.contains("not json"), "input is never echoed");
    }

    let (_, body) = http(admin, "GET", "/targets", "", "");
    assert!(
        !body.contains("bcast"),
        "a refused change leaves no name behind: {body}"
    );
    let (code, _) = http(admin, "POST", "/targets/dark/disable", "", "");
    assert_eq!(code, 200);
    client.send_to(b"only to a", fwd.local_addr()).unwrap();
    wait_for(&fwd, "a to get the second", || a.received() == 2);
    let (code, _) = http(admin, "POST", "/targets/dark/enable", "", "");
    assert_eq!(code, 200);

    assert_eq!(http(admin, "DELETE", "/targets/nope", "", "").0, 404);
    assert_eq!(http(admin, "POST", "/targets/nope/enable", "", "").0, 404);
    assert_eq!(http(admin, "PATCH", "/targets/dark", "", "").0, 405);
    assert_eq!(http(admin, "GET", "/targets/dark/enable", "", "").0, 405);
    assert_eq!(http(admin, "DELETE", "/targets", "", "").0, 405);
    assert_eq!(
        http(admin, "POST", "/-/reload", "", "").0,
        400,
        "no --config: nothing to reload"
    );
    let (code, _) = http(admin, "DELETE", "/targets/dark", "", "");
    assert_eq!(code, 200);
    let snap = fwd.shutdown();
    let dark = snap
        .index_of("dark")
        .expect("a removed target stays reported");
    assert_eq!(snap.targets[dark].forwarded, 1);
    assert_eq!(
        snap.targets[dark].disabled, 1,
        "the copy it missed while disabled is counted"
    );
    assert_eq!(snap.unaccounted(dark), 0);
    assert_eq!(b.finish().0.len(), 1);
}

#[test]
fn mutations_need_loopback_or_the_token() {
    let a = Sink::new(false);
    // A wildcard listener is not loopback: without a token, changes are refused.
    let fwd = forwarder(false, &[a.addr], |c| {
        c.admin = Some("0.0.0.0:0".parse().unwrap())
    });
    let admin: SocketAddr = format!("127.0.0.1:{}", fwd.admin_addr().unwrap().port())
        .parse()
        .unwrap();
    let name = a.addr.to_string();
    assert_eq!(
        http(admin, "POST", &format!("/targets/{name}/disable"), "", "").0,
        403
    );
    assert_eq!(
        http(admin, "GET", "/targets", "", "").0,
        200,
        "reading is open"
    );
    drop(fwd);

    let fwd = forwarder(false, &[a.addr], |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        c.admin_token = Some("0123456789abcdef-secret".into());
    });
    let admin = fwd.admin_addr().unwrap();
    let path = format!("/targets/{name}/disable");
    assert_eq!(
        http(admin, "POST", &path, "", "").0,
        403,
        "a token, once set, is required"
    );
    assert_eq!(
        http(admin, "POST", &path, "Authorization: Bearer wrong\r\n", "").0,
        403
    );
    assert_eq!(
        http(
            admin,
            "POST",
            &path,
            "Authorization: Bearer 0123456789abcdef-secret\r\n",
            ""
        )
        .0,
        200
    );
}

/// A resolver the test controls: `name:port` resolves to what the map says.
struct FakeDns(Mutex<HashMap<String, SocketAddr>>);

impl Resolve for FakeDns {
    fn resolve(&self, spec: &str) -> Result<SocketAddr, ConfigError> {
        if let Ok(a) = spec.parse() {
            return Ok(a);
        }
        self.0
            .lock()
            .unwrap()
            .get(spec)
            .copied()
            .ok_or_else(|| udptee::config::resolve("no-such-host.invalid:1").unwrap_err())
    }
}

#[test]
fn a_host_name_that_moves_is_followed() {
    let first = Sink::new(false);
    let second = Sink::new(false);
    let dns = Arc::new(FakeDns(Mutex::new(HashMap::from([(
        "pipeline.test:8125".to_owned(),
        first.addr,
    )]))));
    let resolver = Resolver(Arc::clone(&dns) as Arc<dyn Resolve>);
    let mut config = Config::new(loopback(false), Vec::new());
    config.stats_interval = Duration::ZERO;
    config.resolver = resolver.clone();
    let mut spec = TargetSpec::new("pipeline", first.addr);
    spec.addr = "pipeline.test:8125".into();
    config.targets = vec![spec];
    let fwd = Forwarder::start(&config).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut failing = Vec::new();

    client.send_to(b"one", fwd.local_addr()).unwrap();
    wait_for(&fwd, "the first address", || first.received() == 1);
    dns.0
        .lock()
        .unwrap()
        .insert("pipeline.test:8125".into(), second.addr);
    fwd.control().resolve_again(&mut failing);
    client.send_to(b"two", fwd.local_addr()).unwrap();
    wait_for(&fwd, "the new address", || second.received() == 1);

    dns.0.lock().unwrap().clear();
    fwd.control().resolve_again(&mut failing);
    assert_eq!(
        failing,
        ["pipeline"],
        "a failed look-up is remembered, logged once"
    );
    client.send_to(b"three", fwd.local_addr()).unwrap();
    wait_for(&fwd, "the last address to be kept", || {
        second.received() == 2
    });
    assert_eq!(
        fwd.registry().resolve_errors(),
        [("pipeline".to_owned(), 1)],
        "and counted"
    );
    let snap = fwd.shutdown();
    assert_eq!(snap.targets[0].forwarded, 3);
    assert_eq!(snap.unaccounted(0), 0);
    assert_eq!(
        first.received(),
        1,
        "nothing went to the old address after the move"
    );
    let _ = Instant::now();
}

#[test]
fn check_validates_a_file() {
    let good = temp_path("good.toml");
    write_config(
        &good,
        "127.0.0.1:8125".parse().unwrap(),
        &[("a", "127.0.0.1:8126".parse().unwrap())],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udptee"))
        .args(["check", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 targets"));

    let bad = temp_path("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:8125\"\n[[target]]\naddr = \"127.0.0.1:8126\"\nqueue-dept = 5\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udptee"))
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4:") && err.contains("queue-dept"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let _ = std::fs::remove_file(good);
    let _ = std::fs::remove_file(bad);

    // Every error, not only the first: bad keys, each bad target, and a count.
    let many = temp_path("many.toml");
    std::fs::write(
        &many,
        "listen = \"127.0.0.1:8125\"\nio = \"bogus\"\nlog-level = \"loud\"\n\
         [[target]]\nname = \"a\"\naddr = \"127.0.0.1:0\"\n\
         [[target]]\nname = \"b\"\naddr = \"127.0.0.1:8127\"\nqueue-dept = 5\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udptee"))
        .args(["check", "--config", many.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (line, what) in [
        (2, "io"),
        (3, "log-level"),
        (5, "port 0"),
        (10, "queue-dept"),
    ] {
        assert!(
            err.contains(&format!("many.toml:{line}:")) && err.contains(what),
            "line {line} ({what}) reported:\n{err}"
        );
    }
    assert!(err.contains("4 errors"), "{err}");
    let _ = std::fs::remove_file(many);

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/udptee.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udptee"))
        .args(["check", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the shipped example configuration is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Line settings through the API: a PUT that adds filters to a running target changes it in place
/// (the same socket, queue and counters: `toggled`), the next datagrams follow them, the other target
/// is untouched, and a bad glob or fraction is a 400 that changes nothing.
#[test]
fn line_settings_change_in_place_through_the_api() {
    let a = Sink::new(false);
    let b = Sink::new(false);
    let fwd = forwarder(false, &[a.addr, b.addr], |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        c.targets[1].name = "dark".into();
    });
    let admin = fwd.admin_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .send_to(b"api.x:1|c\ndebug.y:1|c", fwd.local_addr())
        .unwrap();
    wait_for(&fwd, "the first datagram", || {
        a.received() == 1 && b.received() == 1
    });

    for (body, why) in [
        (r#"{"addr": "ADDR", "include": ["["]}"#, "include"),
        (r#"{"addr": "ADDR", "sample": 2}"#, "sample"),
        // Error answers never echo the request (#29.9): the choices, not "moon".
        (
            r#"{"addr": "ADDR", "sample-by": "moon"}"#,
            "`name` or `line`",
        ),
    ] {
        let (code, answer) = http(
            admin,
            "PUT",
            "/targets/dark",
            "",
            &body.replace("ADDR", &b.addr.to_string()),
        );
        assert_eq!(code, 400, "{why}: {answer}");
        assert!(answer.contains(why), "{why}: {answer}");
    }
    let put = format!(
        r#"{{"addr": "{}", "exclude": ["debug.*"], "add-tags": ["shadow:true"]}}"#,
        b.addr
    );
    let (code, answer) = http(admin, "PUT", "/targets/dark", "", &put);
    assert_eq!(code, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        v["change"]["toggled"][0], "dark",
        "changed in place: {answer}"
    );
    let (_, got) = http(admin, "GET", "/targets/dark", "", "");
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got["lines"]["exclude"][0], "debug.*");

    client
        .send_to(b"api.x:2|c\ndebug.y:2|c", fwd.local_addr())
        .unwrap();
    wait_for(&fwd, "the second datagram", || {
        a.received() == 2 && b.received() == 2
    });
    let snap = fwd.shutdown();
    let (seen_a, _) = a.finish();
    assert_eq!(
        seen_a[1],
        fingerprint(b"api.x:2|c\ndebug.y:2|c"),
        "the other target untouched"
    );
    let (seen_b, _) = b.finish();
    assert_eq!(
        seen_b[1],
        fingerprint(b"api.x:2|c|#shadow:true"),
        "the dark target's copy follows its new settings"
    );
    assert_eq!(snap.targets[1].offered, 2, "the same counters");
    assert_accounted(&snap);
}

#[test]
fn canary_names_that_come_and_go_are_forgotten_and_the_totals_still_add_up() {
    let a = Sink::new(false);
    let canary = Sink::new(false);
    let fwd = forwarder(false, &[a.addr], |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap())
    });
    let admin = fwd.admin_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let put = format!("{{\"addr\": \"{}\"}}", canary.addr);
    for i in 0..100 {
        let name = format!("canary-{i}");
        assert_eq!(
            http(admin, "PUT", &format!("/targets/{name}"), "", &put).0,
            200
        );
        client.send_to(b"c:1|c", fwd.local_addr()).unwrap();
        wait_for(&fwd, "the canary's copy", || canary.received() == i + 1);
        assert_eq!(
            http(admin, "DELETE", &format!("/targets/{name}"), "", "").0,
            200
        );
    }
    let snap = fwd.snapshot();
    assert!(
        snap.target_names.len() <= 1 + 32 + 1,
        "the current target, 32 removed names and the forgotten row: {:?}",
        snap.target_names
    );
    assert!(snap.target_names.iter().any(|n| n == "(removed)"));
    assert!(
        snap.target_names.iter().any(|n| n == "canary-99"),
        "the latest are remembered"
    );
    let forwarded: u64 = snap
        .target_names
        .iter()
        .zip(&snap.targets)
        .filter(|(n, _)| n.as_str() != a.addr.to_string())
        .map(|(_, t)| t.forwarded)
        .sum();
    assert_eq!(forwarded, 100, "every canary's copy is still in the books");
    let (_, metrics) = http(admin, "GET", "/metrics", "", "");
    assert!(
        metrics.len() < 200_000,
        "/metrics stays small: {}",
        metrics.len()
    );
    let snap = fwd.shutdown();
    assert_accounted(&snap);
}
