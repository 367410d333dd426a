//! Top talkers against the real binary: `udptee top --once --json` on three names sent by three
//! senders at 50/30/20% reports those shares and the senders by address; the live view, driven
//! in tmux, shows the names, then the senders, and quits on `q`; the sampler stops when nobody looks;
//! bad flags and queries get a clear error and the data path carries on.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_udptee");
const NAMES: [&str; 3] = ["api.requests", "db.query", "cache.hit"];

struct Running {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    sink: Sink,
}

impl Running {
    fn start() -> Self {
        let sink = Sink::new(false);
        let (listen, admin) = (free_addr(), free_tcp());
        let mut child = udptee_child(
            &listen.to_string(),
            &sink.addr.to_string(),
            &["--admin", &admin.to_string()],
        );
        wait_bound(&mut child, listen);
        wait_admin(admin);
        Self {
            child,
            listen,
            admin,
            sink,
        }
    }

    fn top(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["top", "--admin", &self.admin.to_string()])
            .args(args)
            .output()
            .unwrap()
    }

    fn metrics(&self) -> String {
        let (code, body) = http(self.admin, "GET", "/metrics", "", "");
        assert_eq!(code, 200);
        body
    }

    fn stop(self) -> usize {
        stop_ok(self.child);
        self.sink.finish().0.len()
    }
}

/// Three senders, each with its own name, at 50, 30 and 20% of 2,000 datagrams a second.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
    senders: Vec<SocketAddr>,
}

impl Traffic {
    fn start(to: SocketAddr) -> Self {
        let sockets: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let senders = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut sent = 0;
            while !flag.load(Ordering::Relaxed) {
                // 20 datagrams each 10 ms: 10, 6 and 4.
                for (i, n) in [10, 6, 4].into_iter().enumerate() {
                    for k in 0..n {
                        let line = format!("{}:1|c|#k:{k}", NAMES[i]);
                        sockets[i].send_to(line.as_bytes(), to).unwrap();
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            sent
        });
        Self {
            stop,
            thread,
            senders,
        }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "udptee top: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The share each key has in a report.
fn shares(r: &serde_json::Value) -> Vec<(String, f64)> {
    r["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["key"].as_str().unwrap().to_owned(),
                row["share"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn assert_shares(r: &serde_json::Value, keys: &[String]) {
    let got = shares(r);
    for (key, want) in keys.iter().zip([0.5, 0.3, 0.2]) {
        let share = got
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key} not among {got:?}"))
            .1;
        assert!(
            (share - want).abs() <= 0.05,
            "{key}: share {share}, want {want} within 5 points: {r}"
        );
    }
}

#[test]
fn once_json_reports_the_shares_of_names_and_senders() {
    let u = Running::start();
    let traffic = Traffic::start(u.listen);
    std::thread::sleep(Duration::from_millis(300));
    let names = json(&u.top(&["--once", "--json"]));
    assert_eq!(names["by"], "name");
    assert!(names["sampled"].as_u64().unwrap() > 500, "{names}");
    assert_shares(&names, &NAMES.map(str::to_owned));
    let senders = json(&u.top(&["--once", "--json", "--by", "sender"]));
    let addrs: Vec<String> = traffic.senders.iter().map(ToString::to_string).collect();
    assert_shares(&senders, &addrs);
    let series = json(&u.top(&["--once", "--json", "--by", "series", "-n", "3"]));
    assert_eq!(series["top"].as_array().unwrap().len(), 3);
    assert!(
        series["top"][0]["key"]
            .as_str()
            .unwrap()
            .starts_with("api.requests|c|#k:")
    );
    // The same through the configuration's admin address, as text.
    let dir = temp_dir("top", "conf");
    let conf = dir.join("udptee.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"{}\"\nadmin = \"{}\"\n[[target]]\nname = \"t\"\naddr = \"{}\"\n",
            u.listen, u.admin, u.sink.addr
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["top", "--once", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(&format!("udptee top - {} - by name", u.admin)),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.ends_with("  api.requests"))
        .unwrap();
    assert!(
        row.trim_start().starts_with('4') || row.trim_start().starts_with('5'),
        "{text}"
    );
    assert_eq!(sample(&u.metrics(), "udptee_top_sampling"), 1);
    let sent = traffic.stop();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(u.stop() as u64, sent, "forwarding went on, every datagram");
}

#[test]
fn the_sampler_stops_when_nobody_looks() {
    let u = Running::start();
    let traffic = Traffic::start(u.listen);
    assert_eq!(
        sample(&u.metrics(), "udptee_top_sampling"),
        0,
        "nobody looked yet"
    );
    let (code, body) = http(u.admin, "GET", "/top?n=1&window=1s", "", "");
    assert_eq!(code, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["top"].as_array().unwrap().len(), 1);
    assert!(
        r["seconds"].as_f64().unwrap() >= 0.9,
        "the first look waits for a second: {r}"
    );
    assert_eq!(sample(&u.metrics(), "udptee_top_sampling"), 1);
    // 15 s after the last look the sampler unpublishes its ring and ends.
    wait_until("the sampler to stop", Duration::from_secs(25), || {
        sample(&u.metrics(), "udptee_top_sampling") == 0
    });
    let m = u.metrics();
    assert!(
        sample(&m, "udptee_top_datagrams_total{outcome=\"sampled\"}") > 1000,
        "{m}"
    );
    let sent = traffic.stop();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(u.stop() as u64, sent);
}

#[test]
fn bad_flags_and_queries_get_a_clear_error() {
    let u = Running::start();
    for (q, says) in [
        ("/top?by=host", "by: expected name, sender or series"),
        ("/top?n=0", "n: expected a whole number from 1 to 100"),
        ("/top?window=90s", "window: expected whole seconds"),
        ("/top?window=%FF", "window: expected whole seconds"),
        ("/top?n=3&n=4", "n given twice"),
        ("/top?bogus", "unknown query key"),
    ] {
        let (code, body) = http(u.admin, "GET", q, "", "");
        assert_eq!(code, 400, "{q}: {body}");
        assert!(body.contains(says), "{q}: {body}");
    }
    let (code, _) = http(u.admin, "POST", "/top", "", "");
    assert_eq!(code, 405);
    for (args, says) in [
        (&["--by", "host"][..], "expected name, sender or series"),
        (&["--rows", "0"][..], "0 is not in 1..=100"),
        (
            &["--window", "90s"][..],
            "expected whole seconds from 1s to 60s",
        ),
        (&["--config", "x.toml"][..], "cannot be used with"),
    ] {
        let out = u.top(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Nobody at the address: exit 1, saying where it asked.
    let nobody = free_tcp();
    let out = Command::new(BIN)
        .args(["top", "--once", "--admin", &nobody.to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!(
            "udptee top: asking the admin listener at {nobody}"
        )),
        "{err}"
    );
    // A configuration without an admin listener.
    let dir = temp_dir("top", "conf");
    let conf = dir.join("udptee.toml");
    std::fs::write(
        &conf,
        "listen = \"127.0.0.1:1\"\nadmin = \"off\"\n[[target]]\naddr = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["top", "--once", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("has no admin listener"), "{err}");
    // The data path never noticed.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..10 {
        c.send_to(b"still:1|c", u.listen).unwrap();
    }
    wait_until("the datagrams", Duration::from_secs(5), || {
        u.sink.received() == 10
    });
    assert_eq!(u.stop(), 10);
}

/// tmux on a private socket, killed with the test.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env("TERM", "xterm-256color")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn the_live_view_in_tmux_shows_names_then_senders_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        skip_witness("skipping: tmux is not installed (apt-get install tmux)");
        return;
    }
    let u = Running::start();
    let traffic = Traffic::start(u.listen);
    let dir = temp_dir("top", "tmux");
    let (socket, status) = (dir.join("tmux.sock"), dir.join("status"));
    let tmux = Tmux { socket };
    let cmd = format!(
        "{BIN} top --admin {}; echo $? > {}",
        u.admin,
        status.display()
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "120",
        "-y",
        "30",
        &cmd,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut screen = String::new();
    wait_until("the names on the screen", Duration::from_secs(15), || {
        screen = tmux.screen();
        NAMES.iter().all(|n| screen.contains(n))
    });
    assert!(screen.contains("by name"), "{screen}");
    assert!(
        screen.contains("q quit  n names  s senders  e series"),
        "{screen}"
    );
    // Rows in share order: the 50% name first.
    let first = screen
        .lines()
        .skip_while(|l| !l.contains("SHARE"))
        .nth(1)
        .unwrap();
    assert!(first.ends_with("api.requests"), "{screen}");
    tmux.run(&["send-keys", "-t", "top", "s"]);
    wait_until("the senders on the screen", Duration::from_secs(15), || {
        screen = tmux.screen();
        traffic
            .senders
            .iter()
            .all(|a| screen.contains(&a.to_string()))
    });
    assert!(screen.contains("by sender"), "{screen}");
    tmux.run(&["send-keys", "-t", "top", "q"]);
    wait_until("udptee top to quit", Duration::from_secs(10), || {
        std::fs::read_to_string(&status).is_ok_and(|s| !s.is_empty())
    });
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "0");
    let sent = traffic.stop();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(u.stop() as u64, sent);
}
