//! Target groups: lines sharded over members on statsd's ring (proxy.js's, hashring 3.2.0), beside
//! plain mirrors; members leaving and rejoining the ring by their health checks; a dead member
//! losing only its own keys; a change of members moving only the keys the ring says; bad groups
//! refused at check, start, reload and API; `udptee ring` and the ring route.

mod util;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use udptee::cli::Invocation;
use udptee::daemon::Forwarder;
use udptee::statsd::ring::{Ring, key};
use util::*;

/// A UDP receiver that keeps every datagram's bytes.
struct LineSink {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl LineSink {
    fn new() -> Self {
        let socket = udp_socket("127.0.0.1:0".parse().unwrap(), 8 << 20);
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (Arc::clone(&got), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    g.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        });
        Self { addr, got, stop }
    }

    fn datagrams(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }

    /// The lines received, in order (split on `\n`, empty ones skipped).
    fn lines(&self) -> Vec<Vec<u8>> {
        split_lines(&self.datagrams())
    }

    fn clear(&self) {
        self.got.lock().unwrap().clear();
    }
}

impl Drop for LineSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn split_lines(datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
    datagrams
        .iter()
        .flat_map(|d| d.split(|&b| b == b'\n'))
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// statsd's admin port as far as a health check sees it: answers `health: up` or `health: down`
/// (as `up` says), or refuses connections once `refuse` is set (it is closed).
struct Admin {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    checks: Arc<AtomicUsize>,
}

impl Admin {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let checks = Arc::new(AtomicUsize::new(0));
        let (u, c) = (Arc::clone(&up), Arc::clone(&checks));
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let (u, c) = (Arc::clone(&u), Arc::clone(&c));
                // A thread per check: a slow client never delays the next one.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    if s.read(&mut buf).is_ok() {
                        let state = if u.load(Ordering::Relaxed) {
                            "up"
                        } else {
                            "down"
                        };
                        // One write, as statsd's own `stream.write("health: " + status + "\n")`.
                        let _ = s.write_all(format!("health: {state}\n").as_bytes());
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        Self { addr, up, checks }
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("udptee-group-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// `[[target]]` text of a group named `cluster` over `members` (address, optional admin).
fn group_toml(members: &[(String, Option<SocketAddr>)], extra: &str) -> String {
    let list: Vec<String> = members
        .iter()
        .map(|(addr, admin)| match admin {
            Some(a) => format!("{{ addr = \"{addr}\", admin = \"{a}\" }}"),
            None => format!("{{ addr = \"{addr}\" }}"),
        })
        .collect();
    format!(
        "[[target]]\nname = \"cluster\"\nhealth-interval = \"200ms\"\n{extra}members = [{}]\n",
        list.join(", ")
    )
}

/// Starts a forwarder from `text` (a whole file, written to `file`), with reload from the file.
fn start(file: &str, text: &str) -> (Forwarder, std::path::PathBuf) {
    let path = temp(file);
    std::fs::write(&path, text).unwrap();
    let inv = Invocation::try_from_iter(["udptee", "--config", path.to_str().unwrap()]).unwrap();
    let config = inv.load().expect("the file is valid");
    let loader: udptee::control::Loader = Box::new(move || inv.load());
    (
        Forwarder::start_with(&config, Some(loader)).expect("starts"),
        path,
    )
}

fn head(listen: SocketAddr, admin: &str) -> String {
    format!("listen = \"{listen}\"\nstats-interval = \"0s\"\nadmin = \"{admin}\"\n")
}

/// A corpus like DogStatsD clients send: buffered multi-line datagrams (lines for several members
/// in one), single lines, tags, events, service checks, CRLF endings and non-ASCII names.
fn corpus(round: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..60 {
        let mut d = String::new();
        for j in 0..(i % 7 + 1) {
            let n = (round * 31 + i * 7 + j) % 97;
            match j % 5 {
                0 => d.push_str(&format!("app.req.{n}:{i}|c|#env:prod,route:/v{j}\n")),
                1 => d.push_str(&format!("_e{{5,4}}:ev{n:03}|text|#k:v\n")),
                2 => d.push_str(&format!("_sc|check.{n}|0|#svc:a\n")),
                3 => d.push_str(&format!("métrique.ü{n}:{j}.5|ms|@0.5\r\n")),
                _ => d.push_str(&format!("page.views.{n}:1|c")),
            }
            if j % 5 == 4 {
                d.push('\n');
            }
        }
        out.push(d.into_bytes());
    }
    out.push(b"gorets:1|c".to_vec());
    out.push(b"\n\n".to_vec());
    out
}

fn send_all(to: SocketAddr, datagrams: &[Vec<u8>]) {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in datagrams {
        c.send_to(d, to).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// For each member index, the lines of `datagrams` the ring gives it, in order.
fn expected(ring: &Ring, members: usize, datagrams: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    let mut by = vec![Vec::new(); members];
    for l in split_lines(datagrams) {
        if let Some(m) = ring.member_of(key(&l)) {
            by[m].push(l);
        }
    }
    by
}

/// Sends `corpus(k)` to `listen` and checks that each `(sink, member)` got exactly the lines
/// `ring` gives that member, in order; returns what each member should get.
fn round(
    listen: SocketAddr,
    k: usize,
    ring: &Ring,
    sinks: &[(&LineSink, usize)],
) -> Vec<Vec<Vec<u8>>> {
    let traffic = corpus(k);
    send_all(listen, &traffic);
    let want = expected(ring, 4, &traffic);
    wait_until(
        &format!("round {k}: every checked member's lines"),
        Duration::from_secs(10),
        || sinks.iter().all(|(s, m)| s.lines().len() >= want[*m].len()),
    );
    std::thread::sleep(Duration::from_millis(100));
    for (s, m) in sinks {
        assert_eq!(s.lines(), want[*m], "round {k}: member {m}");
    }
    want
}

#[test]
fn lines_land_on_their_ring_members_beside_an_unchanged_mirror() {
    let members: Vec<LineSink> = (0..3).map(|_| LineSink::new()).collect();
    let mirror = LineSink::new();
    let listen = free_addr();
    let spec: Vec<(String, Option<SocketAddr>)> =
        members.iter().map(|m| (m.addr.to_string(), None)).collect();
    let text = format!(
        "{}[[target]]\nname = \"mirror\"\naddr = \"{}\"\n{}",
        head(listen, "127.0.0.1:0"),
        mirror.addr,
        group_toml(&spec, "max-datagram = 300\n")
    );
    let (fwd, _) = start("shard.toml", &text);
    let traffic = corpus(0);
    send_all(listen, &traffic);
    let ring = Ring::new(spec.iter().enumerate().map(|(i, (a, _))| (i, a.as_str())));
    let want = expected(&ring, 3, &traffic);
    let total: usize = want.iter().map(Vec::len).sum();
    wait_until("every line at its member", Duration::from_secs(10), || {
        members.iter().map(|m| m.lines().len()).sum::<usize>() >= total
            && mirror.datagrams().len() == traffic.len()
    });
    for (i, m) in members.iter().enumerate() {
        assert!(
            !want[i].is_empty(),
            "member {i} owns some keys of the corpus"
        );
        assert_eq!(m.lines(), want[i], "member {i}: its lines, once, in order");
        for d in m.datagrams() {
            let alone = d.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() == 1;
            assert!(
                d.len() <= 300 || alone || traffic.contains(&d),
                "re-batched within max-datagram"
            );
        }
    }
    assert_eq!(
        mirror.datagrams(),
        traffic,
        "the mirror gets every datagram unchanged"
    );
    // A datagram whose lines all go to one member is passed on unchanged.
    let gorets = ring.member_of(b"gorets").unwrap();
    assert!(
        members[gorets]
            .datagrams()
            .contains(&b"gorets:1|c".to_vec())
    );

    // The books: the group's lines sent are its members' lines offered; every member sent its own.
    let groups = fwd.stats().groups();
    let (name, views) = &groups[0];
    assert_eq!(name, "cluster");
    let member_lines: u64 = views
        .iter()
        .map(|v| v.books.lines(udptee::metrics::counters::LineOutcome::Sent))
        .sum();
    assert_eq!(member_lines as usize, total);
    for (v, w) in views.iter().zip(&want) {
        assert!(v.up && v.points == 40, "{v:?}");
        assert_eq!(
            v.books
                .lines(udptee::metrics::counters::LineOutcome::Offered) as usize,
            w.len()
        );
    }
    let admin = fwd.admin_addr().unwrap();
    let (status, metrics) = http(admin, "GET", "/metrics", "", "");
    assert_eq!(status, 200);
    for v in views {
        let series = format!(
            "udptee_member_lines_total{{target=\"cluster\",member=\"{}\",outcome=\"sent\"}}",
            v.addr
        );
        assert_eq!(
            sample(&metrics, &series),
            v.books.lines(udptee::metrics::counters::LineOutcome::Sent)
        );
        let up = format!(
            "udptee_member_up{{target=\"cluster\",member=\"{}\"}}",
            v.addr
        );
        assert_eq!(sample(&metrics, &up), 1);
    }
    let (status, body) = http(admin, "GET", "/targets/cluster", "", "");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["group"]["members"].as_array().unwrap().len(), 3, "{body}");
    let snap = fwd.shutdown();
    assert_accounted(&snap);
}

/// The issue's vectors through the running ring route and the offline `udptee ring`.
#[test]
fn the_ring_route_and_udptee_ring_answer_statsd_s_vectors() {
    let listen = free_addr();
    let spec: Vec<(String, Option<SocketAddr>)> =
        ["127.0.0.1:8127", "127.0.0.1:8129", "127.0.0.1:8131"]
            .iter()
            .map(|a| (a.to_string(), None))
            .collect();
    let text = format!("{}{}", head(listen, "127.0.0.1:0"), group_toml(&spec, ""));
    let (fwd, path) = start("vectors.toml", &text);
    let admin = fwd.admin_addr().unwrap();
    let cases = [
        ("page.views", "127.0.0.1:8129"),
        ("users.online", "127.0.0.1:8129"),
        ("api.latency", "127.0.0.1:8131"),
        ("gorets", "127.0.0.1:8127"),
        ("foo", "127.0.0.1:8127"),
        ("a.b.c", "127.0.0.1:8131"),
        ("_e%7B21%2C36%7D", "127.0.0.1:8129"),
        ("metric_%C3%BC", "127.0.0.1:8127"),
    ];
    for (k, member) in cases {
        let (status, body) = http(
            admin,
            "GET",
            &format!("/targets/cluster/ring?key={k}"),
            "",
            "",
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["member"], member, "{k}: {body}");
    }
    let (_, body) = http(admin, "GET", "/targets/cluster/ring?key=page.views", "", "");
    assert!(body.contains("506656135"), "the hash is shown: {body}");
    assert_eq!(
        http(admin, "GET", "/targets/cluster/ring", "", "").0,
        400,
        "a key is needed"
    );
    assert_eq!(
        http(admin, "GET", "/targets/nosuch/ring?key=a", "", "").0,
        404
    );
    assert_eq!(
        http(admin, "POST", "/targets/cluster/ring?key=a", "", "").0,
        405
    );
    fwd.shutdown();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udptee"))
        .args([
            "ring",
            "--config",
            path.to_str().unwrap(),
            "page.views",
            "gorets",
            "_e{21,36}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "cluster\tpage.views\t127.0.0.1:8129\t506656135\n\
         cluster\tgorets\t127.0.0.1:8127\t"
            .to_owned()
            + &udptee::statsd::ring::hash(b"gorets").to_string()
            + "\ncluster\t_e{21,36}\t127.0.0.1:8129\t"
            + &udptee::statsd::ring::hash(b"_e{21,36}").to_string()
            + "\n"
    );
}

/// A member whose admin says `health: down` leaves the ring at the next check and its keys go where
/// the ring of the others says; `health: up` brings it back; an admin that refuses connections
/// takes its member out; a dead member without admin (never checked) loses only its own keys,
/// counted on it.
#[test]
fn health_moves_keys_and_a_dead_member_loses_only_its_own() {
    let a = LineSink::new();
    let b = LineSink::new();
    let dead = free_addr();
    let a_admin = Admin::new();
    let refusing = free_tcp();
    let c = LineSink::new();
    let listen = free_addr();
    let spec = vec![
        (a.addr.to_string(), Some(a_admin.addr)),
        (b.addr.to_string(), None),
        (dead.to_string(), None),
        (c.addr.to_string(), Some(refusing)),
    ];
    let text = format!("{}{}", head(listen, "127.0.0.1:0"), group_toml(&spec, ""));
    let (fwd, _) = start("health.toml", &text);
    let view = |i: usize| fwd.stats().groups()[0].1[i].clone();
    wait_until(
        "the refusing admin's member to leave",
        Duration::from_secs(5),
        || !view(3).up,
    );
    // The status page's data shows the members and who is down.
    let (status, body) = http(fwd.admin_addr().unwrap(), "GET", "/status.json", "", "");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let members = v["targets"][0]["members"]
        .as_array()
        .expect("members on the page");
    assert_eq!(members.len(), 4);
    assert_eq!(members[3]["up"], false, "{body}");
    assert_eq!(members[0]["up"], true);
    assert!(
        view(3).last_check.unwrap().contains("connect"),
        "{:?}",
        view(3)
    );
    let live = |up: &[usize]| Ring::new(up.iter().map(|&i| (i, spec[i].0.as_str())));

    // A, B and the dead member in the ring (C's admin refuses).
    let want = round(listen, 1, &live(&[0, 1, 2]), &[(&a, 0), (&b, 1)]);
    assert!(c.lines().is_empty(), "out of the ring: nothing for c");
    assert!(!want[2].is_empty(), "the dead member owns keys");
    wait_until(
        "the dead member's losses to be counted",
        Duration::from_secs(5),
        || {
            let d = view(2).books;
            d.offered > 0 && d.offered == d.forwarded + d.dropped_total()
        },
    );
    let d = view(2).books;
    assert!(
        d.send_errors_total() > 0,
        "the dead member's sends are refused and counted: {d:?}"
    );

    // A drains (`health: down`): its keys move as the ring of B and the dead member says.
    a_admin.up.store(false, Ordering::Relaxed);
    wait_until("a to leave the ring", Duration::from_secs(5), || {
        !view(0).up
    });
    a.clear();
    b.clear();
    round(listen, 2, &live(&[1, 2]), &[(&b, 1)]);
    assert!(a.lines().is_empty(), "a drained: nothing for it");
    assert_eq!(view(0).points, 0);
    assert_eq!(view(1).points, 40);

    // A is up again: the ring is as before.
    a_admin.up.store(true, Ordering::Relaxed);
    wait_until("a to rejoin", Duration::from_secs(5), || view(0).up);
    b.clear();
    round(listen, 3, &live(&[0, 1, 2]), &[(&a, 0), (&b, 1)]);
    assert!(a_admin.checks.load(Ordering::Relaxed) >= 3);
    let snap = fwd.shutdown();
    assert_accounted(&snap);
}

/// With no member up, lines are dropped and counted `no_member`, never queued.
#[test]
fn no_member_up_drops_and_counts() {
    let listen = free_addr();
    let spec = vec![(free_addr().to_string(), Some(free_tcp()))];
    let text = format!("{}{}", head(listen, "off"), group_toml(&spec, ""));
    let (fwd, _) = start("none.toml", &text);
    wait_until("the member to leave", Duration::from_secs(5), || {
        !fwd.stats().groups()[0].1[0].up
    });
    send_all(listen, &[b"a:1|c\nb:2|c".to_vec(), b"c:1|c".to_vec()]);
    wait_until("two no_member drops", Duration::from_secs(5), || {
        fwd.snapshot().targets[0].no_member == 2
    });
    let snap = fwd.shutdown();
    let t = &snap.targets[0];
    assert_eq!(t.lines(udptee::metrics::counters::LineOutcome::Dropped), 3);
    assert_accounted(&snap);
}

/// Adding a member through a reload moves only the keys the new ring gives it; the others stay.
#[test]
fn a_reload_that_adds_a_member_moves_only_the_keys_the_ring_says() {
    let sinks: Vec<LineSink> = (0..4).map(|_| LineSink::new()).collect();
    let listen = free_addr();
    let spec: Vec<(String, Option<SocketAddr>)> =
        sinks.iter().map(|m| (m.addr.to_string(), None)).collect();
    let (fwd, path) = start(
        "grow.toml",
        &format!("{}{}", head(listen, "off"), group_toml(&spec[..3], "")),
    );
    let keys: Vec<String> = (0..2000).map(|i| format!("svc.metric.{i}")).collect();
    let before: HashMap<&String, String> = keys
        .iter()
        .map(|k| {
            (
                k,
                fwd.stats()
                    .locate("cluster", k.as_bytes())
                    .unwrap()
                    .point
                    .unwrap()
                    .1,
            )
        })
        .collect();
    std::fs::write(
        &path,
        format!("{}{}", head(listen, "off"), group_toml(&spec, "")),
    )
    .unwrap();
    fwd.control().reload().expect("the reload applies");
    let mut moved = 0;
    for k in &keys {
        let now = fwd
            .stats()
            .locate("cluster", k.as_bytes())
            .unwrap()
            .point
            .unwrap()
            .1;
        if now != before[k] {
            assert_eq!(now, spec[3].0, "{k} moved only to the new member");
            moved += 1;
        }
    }
    assert!(
        (300..700).contains(&moved),
        "about a quarter of the keys move: {moved}"
    );
    let traffic: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| format!("{k}:1|c").into_bytes())
        .collect();
    send_all(listen, &traffic);
    wait_until("every line delivered", Duration::from_secs(10), || {
        sinks.iter().map(|s| s.lines().len()).sum::<usize>() == keys.len()
    });
    assert_eq!(sinks[3].lines().len(), moved);
    fwd.shutdown();
}

/// Bad groups get one clear error at check, start, reload and through the API, and the running set
/// stays.
#[test]
fn bad_groups_are_refused_with_a_clear_error_everywhere() {
    let listen = free_addr();
    let m = free_addr();
    let cases = [
        (
            "[[target]]\nname = \"g\"\nmembers = []\n",
            "`members` is empty",
        ),
        (
            &*format!(
                "[[target]]\nname = \"g\"\nmembers = [{{ addr = \"{m}\" }}, {{ addr = \"{m}\" }}]\n"
            ),
            "same receiver",
        ),
        (
            &*format!(
                "[[target]]\nname = \"g\"\nhealth-interval = \"50ms\"\nmembers = [{{ addr = \"{m}\" }}]\n"
            ),
            "health-interval",
        ),
        (
            &*format!(
                "[[target]]\nname = \"g\"\nmembers = [{{ addr = \"{m}\", admin = \"nope\" }}]\n"
            ),
            "admin",
        ),
        (
            &*format!(
                "[[target]]\nname = \"g\"\naddr = \"{m}\"\nmembers = [{{ addr = \"{m}\" }}]\n"
            ),
            "not both",
        ),
        (
            &*format!("[[target]]\nmembers = [{{ addr = \"{m}\" }}]\n"),
            "name",
        ),
        (
            &*format!("[[target]]\nname = \"g\"\nmembers = [{{ addr = \"{m}\", port = 1 }}]\n"),
            "port",
        ),
    ];
    for (i, (target, why)) in cases.iter().enumerate() {
        let path = temp(&format!("bad{i}.toml"));
        std::fs::write(&path, format!("{}{target}", head(listen, "off"))).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_udptee"))
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}: {err}");
        assert!(err.contains(why), "case {i}: {why:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    let good = LineSink::new();
    let spec = vec![(good.addr.to_string(), None)];
    let (fwd, path) = start(
        "api.toml",
        &format!("{}{}", head(listen, "127.0.0.1:0"), group_toml(&spec, "")),
    );
    let admin = fwd.admin_addr().unwrap();
    for body in [
        r#"{"members": []}"#.to_owned(),
        format!(r#"{{"members": [{{"addr": "{m}", "admin": "x"}}]}}"#),
        format!(r#"{{"members": [{{"addr": "{m}"}}], "health-interval": "1ms"}}"#),
        r#"{"members": "nope"}"#.to_owned(),
    ] {
        let (status, answer) = http(
            admin,
            "PUT",
            "/targets/cluster",
            "Content-Type: application/json\r\n",
            &body,
        );
        assert_eq!(status, 400, "{body}: {answer}");
    }
    // A bad file on reload keeps the running group.
    std::fs::write(
        &path,
        format!(
            "{}[[target]]\nname = \"cluster\"\nmembers = []\n",
            head(listen, "127.0.0.1:0")
        ),
    )
    .unwrap();
    assert!(fwd.control().reload().is_err());
    assert_eq!(
        fwd.stats().groups()[0].1[0].addr,
        good.addr.to_string(),
        "the running group stays"
    );
    // A good one through the API applies.
    let body = format!(
        r#"{{"members": [{{"addr": "{}"}}, {{"addr": "{m}"}}]}}"#,
        good.addr
    );
    let (status, answer) = http(
        admin,
        "PUT",
        "/targets/cluster",
        "Content-Type: application/json\r\n",
        &body,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(fwd.stats().groups()[0].1.len(), 2);
    fwd.shutdown();
}

/// Etsy statsd's `proxy.js` (npm `statsd` 0.9.0, which `.ci/packages.sh` installs with its
/// `hashring` 3.2.0), or `UDPTEE_STATSD_PROXY_JS`.
fn proxy_js() -> Option<std::path::PathBuf> {
    let p = std::env::var_os("UDPTEE_STATSD_PROXY_JS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/ci-tools/node_modules/statsd/proxy.js")
        });
    let hashring = p.parent()?.parent()?.join("hashring/package.json");
    let node = std::process::Command::new("node").arg("--version").output();
    (p.exists() && hashring.exists() && node.is_ok_and(|o| o.status.success())).then_some(p)
}

/// Each member's lines, sorted (proxy.js sends each line alone, udptee re-batches: the same lines
/// either way).
fn by_member(sinks: &[LineSink]) -> Vec<Vec<Vec<u8>>> {
    sinks
        .iter()
        .map(|s| {
            let mut l = s.lines();
            l.sort();
            l
        })
        .collect()
}

/// The witness: proxy.js and udptee on the same 7 members (the 39-point ring), the same traffic;
/// every line lands on the same member. Then one member's admin answers `health: down` and both
/// move its keys the same way; then `health: up` and both move them back.
#[test]
fn proxy_js_and_udptee_put_every_line_on_the_same_member() {
    let Some(js) = proxy_js() else {
        skip_witness(
            "skipped: node with npm statsd 0.9.0 and hashring 3.2.0 not installed (run .ci/packages.sh, or set UDPTEE_STATSD_PROXY_JS)",
        );
        return;
    };
    let sinks: Vec<LineSink> = (0..7).map(|_| LineSink::new()).collect();
    let admins: Vec<Admin> = (0..7).map(|_| Admin::new()).collect();
    let proxy_listen = free_addr();
    let nodes: Vec<String> = sinks
        .iter()
        .zip(&admins)
        .map(|(s, a)| {
            format!(
                "{{host: '127.0.0.1', port: {}, adminport: {}}}",
                s.addr.port(),
                a.addr.port()
            )
        })
        .collect();
    let conf = temp("proxy-config.js");
    std::fs::write(
        &conf,
        format!(
            "{{\nnodes: [{}],\naddress: '127.0.0.1',\nport: {},\nmgmt_address: '127.0.0.1',\nmgmt_port: {},\nforkCount: 0,\ncheckInterval: 200,\ncacheSize: 10000\n}}\n",
            nodes.join(",\n"),
            proxy_listen.port(),
            free_tcp().port()
        ),
    )
    .unwrap();
    let mut proxy = std::process::Command::new("node")
        .arg(&js)
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .die_with_test()
        .spawn()
        .expect("node starts");
    wait_bound(&mut proxy, proxy_listen);

    let listen = free_addr();
    let spec: Vec<(String, Option<SocketAddr>)> = sinks
        .iter()
        .zip(&admins)
        .map(|(s, a)| (s.addr.to_string(), Some(a.addr)))
        .collect();
    let (fwd, _) = start(
        "witness.toml",
        &format!("{}{}", head(listen, "off"), group_toml(&spec, "")),
    );
    assert_eq!(
        fwd.stats().groups()[0].1[0].points,
        39,
        "7 members: 39 points each"
    );

    let compare = |round: usize, what: &str| {
        let traffic = corpus(round);
        let total = split_lines(&traffic).len();
        let got = |sinks: &[LineSink]| sinks.iter().map(|s| s.lines().len()).sum::<usize>();
        sinks.iter().for_each(LineSink::clear);
        send_all(proxy_listen, &traffic);
        wait_until(
            &format!("proxy.js to deliver ({what})"),
            Duration::from_secs(10),
            || got(&sinks) == total,
        );
        let theirs = by_member(&sinks);
        sinks.iter().for_each(LineSink::clear);
        send_all(listen, &traffic);
        wait_until(
            &format!("udptee to deliver ({what})"),
            Duration::from_secs(10),
            || got(&sinks) == total,
        );
        let ours = by_member(&sinks);
        let views = fwd.stats().groups()[0].1.clone();
        let ups: Vec<bool> = views.iter().map(|v| v.up).collect();
        for (m, (o, t)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(
                o.len(),
                t.len(),
                "{what}: member {m} gets as many lines from both (udptee's members up: {ups:?}, last checks: {:?})",
                views
                    .iter()
                    .map(|v| v.last_check.clone())
                    .collect::<Vec<_>>()
            );
            assert_eq!(o, t, "{what}: member {m} gets the same lines from both");
        }
        ours
    };
    let all_up = compare(4, "all up");
    assert!(
        all_up.iter().all(|l| !l.is_empty()),
        "every member owns keys"
    );

    admins[2].up.store(false, Ordering::Relaxed);
    wait_until(
        "udptee to see member 2 down",
        Duration::from_secs(5),
        || !fwd.stats().groups()[0].1[2].up,
    );
    // proxy.js checks every 200 ms too: two of its intervals.
    std::thread::sleep(Duration::from_millis(500));
    let drained = compare(4, "member 2 down");
    assert!(drained[2].is_empty(), "a drained member gets nothing");
    assert_eq!(
        fwd.stats().groups()[0].1[0].points,
        40,
        "6 members: 40 points each"
    );

    admins[2].up.store(true, Ordering::Relaxed);
    wait_until("udptee to see member 2 up", Duration::from_secs(5), || {
        fwd.stats().groups()[0].1[2].up
    });
    std::thread::sleep(Duration::from_millis(500));
    let back = compare(4, "member 2 up again");
    assert_eq!(back, all_up, "the ring is as before");
    let _ = proxy.kill();
    let _ = proxy.wait();
    fwd.shutdown();
}
