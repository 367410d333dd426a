//! Protecting a shadow by cardinality: a target with `max-series` sees at most that many distinct
//! series (name, type and tag set) in its window; the lines of new series over it are dropped and
//! counted `series_limited` (or, with `cardinality = "strip-tags"`, sent without their tags and
//! counted `tags_stripped`), another target sees everything, and `/targets` names the metric that
//! blew up.

mod util;

use std::collections::HashSet;
use std::net::UdpSocket;

use std::time::Duration;

use udptee::config::lines::Cardinality;
use udptee::metrics::counters::LineOutcome;
use util::*;

fn send_series(to: std::net::SocketAddr, n: usize) {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..n {
        c.send_to(
            format!("api.requests:1|c|#request_id:{i},env:prod").as_bytes(),
            to,
        )
        .unwrap();
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn run(action: Cardinality) -> (Vec<String>, udptee::Snapshot) {
    let budgeted = Keep::new();
    let open = Sink::new(false);
    let fwd = forwarder(false, &[budgeted.addr, open.addr], |c| {
        c.targets[0].lines.max_series = Some(1000);
        c.targets[0].lines.cardinality = action;
    });
    send_series(fwd.local_addr(), 5000);
    wait_for(&fwd, "everything through", || {
        let s = fwd.snapshot();
        open.received() == 5000 && s.unaccounted(0) == 0 && s.targets[0].offered == 5000
    });
    std::thread::sleep(Duration::from_millis(200));
    let snap = fwd.shutdown();
    assert_accounted(&snap);
    assert_eq!(
        snap.targets[1].forwarded, 5000,
        "the other target sees every series"
    );
    (budgeted.lines(), snap)
}

#[test]
fn over_the_budget_new_series_are_dropped_and_counted() {
    let (got, snap) = run(Cardinality::Drop);
    let t = &snap.targets[0];
    let series: HashSet<&String> = got.iter().collect();
    assert_eq!(series.len(), 1000, "at most the budget: {}", got.len());
    assert_eq!(
        t.lines(LineOutcome::SeriesLimited),
        4000,
        "the rest counted"
    );
    assert_eq!(
        t.series_limited, 4000,
        "each datagram it emptied, under its reason"
    );
    assert_eq!(t.forwarded, 1000);
}

#[test]
fn with_strip_tags_the_lines_over_the_budget_arrive_without_their_tags() {
    let (got, snap) = run(Cardinality::StripTags);
    let t = &snap.targets[0];
    let tagged = got.iter().filter(|l| l.contains("|#")).count();
    let bare = got.iter().filter(|l| *l == "api.requests:1|c").count();
    assert_eq!(
        (tagged, bare),
        (1000, 4000),
        "the budget's series whole, the rest untagged"
    );
    assert_eq!(t.lines(LineOutcome::TagsStripped), 4000);
    assert_eq!(t.lines(LineOutcome::Sent), 5000, "every line sent");
    assert_eq!(t.series_limited, 0, "nothing dropped");
}

#[test]
fn targets_name_the_metric_that_blew_up_and_bad_budgets_are_refused() {
    let dir = temp_dir("series", "file");
    let sink = Keep::new();
    let budgeted = sink.addr;
    let listen = free_addr();
    let admin = free_tcp();
    let file = dir.join("udptee.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"{listen}\"\nadmin = \"{admin}\"\nstats-interval = \"0s\"\n[[target]]\nname = \"shadow\"\naddr = \"{budgeted}\"\nmax-series = 50\nseries-window = \"10m\"\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_udptee"))
        .args(["--config"])
        .arg(&file)
        .args(["--control-socket", "off"])
        .stderr(std::process::Stdio::piped())
        .die_with_test()
        .spawn()
        .unwrap();
    wait_bound(&mut child, listen);
    wait_admin(admin);
    send_series(listen, 200);
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.send_to(b"quiet.metric:1|g", listen).unwrap();
    wait_until("the budget full", Duration::from_secs(10), || {
        let (_, body) = http(admin, "GET", "/targets/shadow", "", "");
        body.contains("\"seen\": 50")
    });
    let (_, body) = http(admin, "GET", "/targets/shadow", "", "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let series = &v["series"];
    assert_eq!(series["budget"], 50, "{body}");
    assert_eq!(series["top_names"][0][0], "api.requests", "{body}");
    assert_eq!(series["top_names"][0][1], 50, "{body}");
    // A bad budget from the API is a 400, and the running one stays.
    let (code, answer) = http(
        admin,
        "PUT",
        "/targets/shadow",
        "",
        &format!("{{\"addr\": \"{budgeted}\", \"max-series\": 0}}"),
    );
    assert_eq!(code, 400, "{answer}");
    let (code, answer) = http(
        admin,
        "PUT",
        "/targets/shadow",
        "",
        &format!("{{\"addr\": \"{budgeted}\", \"max-series\": 10, \"cardinality\": \"shrug\"}}"),
    );
    assert_eq!(code, 400, "{answer}");
    let (_, body) = http(admin, "GET", "/targets/shadow", "", "");
    assert!(body.contains("\"max-series\": 50"), "{body}");
    signal(&child, "-TERM");
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
