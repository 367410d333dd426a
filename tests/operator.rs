//! The operator view with real tools as witnesses: the status page, `/status.json` and `/top`
//! (headless Chromium renders it against a running udptee with two live targets and a dead one,
//! with its top names, screenshots it and makes no request elsewhere), the Grafana dashboard and the alert rules name only metrics a
//! scrape really has, promtool checks and unit-tests the rules, and a real Prometheus scraping
//! udptee answers the forwarded rate that was sent. Each tool-backed test says why it skips where
//! the tool is missing (.ci/packages.sh installs them).

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_udptee");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn has(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// udptee with targets `old` and `new` (sinks) and `dead` (nothing bound), its admin on a free port.
struct Running {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    old: Sink,
    new: Sink,
}

impl Running {
    fn start(extra: &[&str]) -> Self {
        let (old, new) = (Sink::new(false), Sink::new(false));
        let dead = free_addr();
        let admin = free_tcp();
        let listen = free_addr();
        let mut child = Command::new(BIN)
            .args(["--listen", &listen.to_string()])
            .args(["--to", &format!("old={}", old.addr)])
            .args(["--to", &format!("new={}", new.addr)])
            .args(["--to", &format!("dead={dead}")])
            .args(["--admin", &admin.to_string(), "--stats-interval", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .die_with_test()
            .spawn()
            .unwrap();
        wait_bound(&mut child, listen);
        wait_admin(admin);
        Self {
            child,
            listen,
            admin,
            old,
            new,
        }
    }

    /// Sends `rate` datagrams a second for `secs`, paced in 10 ms steps.
    fn traffic(&self, rate: u32, secs: f64) -> u64 {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
            while sent < due {
                c.send_to(
                    format!("page.views:1|c|#seq:{sent}").as_bytes(),
                    self.listen,
                )
                .unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        sent
    }

    fn stop(self) {
        signal(&self.child, "-TERM");
        let out = self.child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = (self.old.finish(), self.new.finish());
    }
}

/// Every `udptee_...` metric name in `text` (recording rules, `udptee:...`, are not metric names).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("udptee_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        if before_ok {
            out.insert(text[start..end].to_owned());
        }
        i = end;
    }
    out
}

#[test]
fn the_status_page_and_its_json_follow_the_admin_rules() {
    let u = Running::start(&[]);
    u.traffic(2000, 2.5);
    let (code, page) = http(u.admin, "GET", "/", "", "");
    assert_eq!(code, 200);
    assert!(page.contains("<title>udptee status</title>"), "{page}");
    // Served with a policy that allows nothing but this listener.
    let mut s = std::net::TcpStream::connect(u.admin).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut raw = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut raw);
    let head = raw.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    for asset in ["/status.css", "/status.js"] {
        let (code, body) = http(u.admin, "GET", asset, "", "");
        assert_eq!(code, 200, "{asset}");
        // Self-contained: no URL of any other host (the SVG namespace is a name, not a request).
        let elsewhere = body
            .replace("http://www.w3.org/2000/svg", "")
            .contains("://");
        assert!(!elsewhere, "{asset} refers to another host");
    }
    assert!(!page.contains("://"), "the page refers to no other host");
    let (code, _) = http(u.admin, "POST", "/", "", "");
    assert_eq!(code, 405, "read-only");
    let (code, body) = http(u.admin, "GET", "/status.json?primary=old", "", "");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let t = |name: &str| {
        v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {body}"))
    };
    for name in ["old", "new"] {
        let x = t(name);
        assert!(
            x["rate_60s"]["out"].as_f64().unwrap() > 500.0,
            "{name}: {x}"
        );
        assert_eq!(x["up"], true);
        assert!(
            x["spark"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s.as_f64().unwrap() > 0.0)
        );
    }
    let dead = t("dead");
    assert_eq!(dead["up"], false, "{dead}");
    assert!(
        dead["dropped_total"].as_u64().unwrap() + dead["receiver_drops"].as_u64().unwrap() > 0,
        "the dead target's losses show: {dead}"
    );
    assert!(
        v["listener_60s"]["datagrams"].as_f64().unwrap() > 500.0,
        "{body}"
    );
    assert_eq!(v["primary"], "old");
    u.stop();
}

#[test]
fn headless_chromium_renders_the_page_and_fetches_nothing_elsewhere() {
    if !has("chromium") {
        skip_witness("skipping: chromium is not installed (apt-get install chromium)");
        return;
    }
    let u = Running::start(&[]);
    let traffic = {
        let (listen, stop) = (
            u.listen,
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        let flag = std::sync::Arc::clone(&stop);
        let t = std::thread::spawn(move || {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..20 {
                    c.send_to(b"page.views:1|c", listen).unwrap();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        (t, stop)
    };
    std::thread::sleep(Duration::from_secs(2));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("operator");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("status.png");
    let netlog = out_dir.join("netlog.json");
    let url = format!("http://{}/", u.admin);
    let chromium = |args: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args([
                "--no-first-run",
                "--disable-background-networking",
                "--disable-sync",
            ])
            .args(["--window-size=1280,800", "--virtual-time-budget=3000"])
            .args(args)
            .arg(&url)
            .stderr(Stdio::null())
            .output()
            .unwrap()
    };
    let dom = chromium(&["--dump-dom", &format!("--log-net-log={}", netlog.display())]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    let shot_run = chromium(&[&format!("--screenshot={}", shot.display())]);
    traffic.1.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.0.join().unwrap();
    assert!(
        shot_run.status.success() && shot.exists(),
        "a screenshot at {}",
        shot.display()
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real image"
    );
    for name in ["old", "new", "dead"] {
        assert!(
            dom.contains(&format!("<strong>{name}</strong>")),
            "{name} on the page:\n{dom}"
        );
    }
    assert!(
        dom.contains("DOWN"),
        "the dead target is shown down (in words, not only colour)"
    );
    assert!(dom.contains("live ·"), "the page got data:\n{dom}");
    // The top names: the one name sent, with all the lines.
    assert!(
        dom.contains(
            "<td data-label=\"Name\">page.views</td><td data-label=\"Share of lines\">100.0%</td>"
        ),
        "the top names:\n{dom}"
    );
    // Non-zero rates: some "In /s" cell starts with a number other than 0.
    assert!(
        dom.split("data-label=\"In /s\">")
            .skip(1)
            .any(|c| !c.starts_with("0 ") && !c.starts_with('–')),
        "non-zero rates:\n{dom}"
    );
    // Every request the page made (those the net log says the page's origin initiated; the
    // browser's own update and time checks have none) went to the admin listener.
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&netlog).unwrap()).expect("a net log");
    let origin = format!("http://{}", u.admin);
    let from_page: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["params"]["initiator"] == serde_json::json!(origin))
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_owned))
        .collect();
    assert!(
        from_page.iter().any(|u| u.ends_with("/status.js"))
            && from_page.iter().any(|u| u.contains("/status.json"))
            && from_page.iter().any(|u| u.contains("/top?by=name&n=10")),
        "the net log recorded the page's requests: {from_page:?}"
    );
    let elsewhere: Vec<&String> = from_page
        .iter()
        .filter(|u| !u.starts_with(&format!("{origin}/")))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests outside the admin listener: {elsewhere:?}"
    );
    u.stop();
}

#[test]
fn the_dashboard_and_the_rules_name_only_exported_metrics() {
    let u = Running::start(&[]);
    u.traffic(500, 1.0);
    let scrape = http(u.admin, "GET", "/metrics", "", "").1;
    let exported: std::collections::BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    for file in [
        "dist/grafana/udptee.json",
        "dist/prometheus/udptee-rules.yml",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let names = metric_names(&text);
        assert!(names.len() >= 8, "{file} uses the metrics: {names:?}");
        let missing: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics a scrape does not have: {missing:?}"
        );
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("dist/grafana/udptee.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert!(dash["panels"].as_array().unwrap().len() >= 10);
    u.stop();
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    if !has("promtool") {
        skip_witness("skipping: promtool is not installed (apt-get install prometheus)");
        return;
    }
    let dir = root().join("dist/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "udptee-rules.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = Command::new("promtool")
        .args(["test", "rules", "udptee-rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    // And the scrape itself passes promtool's lint.
    let u = Running::start(&[]);
    u.traffic(200, 0.5);
    let scrape = http(u.admin, "GET", "/metrics", "", "").1;
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(lint.stdin.as_mut().unwrap(), scrape.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    u.stop();
}

#[test]
fn a_real_prometheus_scrapes_the_forwarded_rate() {
    if !has("prometheus") {
        skip_witness("skipping: prometheus is not installed (apt-get install prometheus)");
        return;
    }
    let u = Running::start(&[]);
    let dir = std::env::temp_dir().join(format!("udptee-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: udptee\n    static_configs:\n      - targets: ['{}']\n",
            root().join("dist/prometheus/udptee-rules.yml").display(),
            u.admin
        ),
    )
    .unwrap();
    let web = free_tcp();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .die_with_test()
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(prom);
    wait_until("prometheus to serve", Duration::from_secs(30), || {
        std::net::TcpStream::connect(web).is_ok() && http(web, "GET", "/-/ready", "", "").0 == 200
    });
    let query = |q: &str, at: Option<std::time::SystemTime>| -> serde_json::Value {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("query", q);
        if let Some(t) = at {
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            form.append_pair("time", &format!("{secs:.3}"));
        }
        let path = format!("/api/v1/query?{}", form.finish());
        serde_json::from_str(&http(web, "GET", &path, "", "").1).unwrap()
    };
    wait_until("the first scrape", Duration::from_secs(30), || {
        query("up{job=\"udptee\"} == 1", None)["data"]["result"]
            .as_array()
            .is_some_and(|r| r.len() == 1)
    });
    let sent = u.traffic(2000, 8.0);
    // A window well inside the traffic: [end - 6 s, end - 2 s].
    let mid = std::time::SystemTime::now() - Duration::from_secs(2);
    // Let the last copies go out and be scraped.
    std::thread::sleep(Duration::from_secs(3));
    let value = |v: &serde_json::Value| -> f64 {
        v["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or_else(|| panic!("a value: {v}"))
            .parse()
            .unwrap()
    };
    let total = query(
        "udptee_target_forwarded_datagrams_total{target=\"old\"}",
        None,
    );
    assert_eq!(
        value(&total) as u64,
        sent,
        "Prometheus has every copy forwarded: {total}"
    );
    let rate = query(
        "rate(udptee_target_forwarded_datagrams_total{target=\"old\"}[4s])",
        Some(mid),
    );
    assert!(
        (1700.0..=2300.0).contains(&value(&rate)),
        "Prometheus sees the 2000/s sent, mid-way: {rate}"
    );
    // The dead target's alert expression is true in the real server too.
    let down = query("udptee_target_up{target=\"dead\"} == 0", None);
    assert_eq!(
        down["data"]["result"].as_array().map(Vec::len),
        Some(1),
        "{down}"
    );
    u.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
