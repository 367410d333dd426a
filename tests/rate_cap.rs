//! Protecting a shadow by volume: a target with `max-rate` is sent at most its rate (a burst of
//! one batch, then the rate), the rest is counted `rate_limited` exactly, and an uncapped target
//! beside it gets everything; bad rates are one clear error in the file, on the command line and
//! from the API, with the running set kept.

mod util;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use udptee::config::MaxRate;
use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_udptee");

#[test]
fn a_capped_target_gets_its_rate_and_the_uncapped_one_everything() {
    let (capped, open) = (Sink::new(false), Sink::new(false));
    let fwd = forwarder(false, &[capped.addr, open.addr], |c| {
        c.targets[0].max_rate = Some("2000/s".parse::<MaxRate>().unwrap());
    });
    // 10,000 datagrams a second for 5 s, paced in 1 ms steps.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let total = 50_000usize;
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * 10_000.0) as usize).min(total);
        while sent < due {
            client
                .send_to(&payload(1, sent as u32, 64), fwd.local_addr())
                .unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed().as_secs_f64();
    wait_for(&fwd, "the uncapped target to get everything", || {
        open.received() == total
    });
    let snap = fwd.shutdown();
    assert_accounted(&snap);
    let (c, o) = (&snap.targets[0], &snap.targets[1]);
    assert_eq!(o.forwarded, total as u64, "the uncapped one gets all");
    assert_eq!(o.rate_limited, 0);
    assert_eq!(c.offered, total as u64);
    assert_eq!(
        c.forwarded + c.rate_limited,
        total as u64,
        "rate_limited counts the rest exactly"
    );
    // At most the rate over the time it was offered traffic, plus one batch; at least 95% of it.
    let allowed = 2000.0 * elapsed;
    let got = c.forwarded as f64;
    assert!(
        got <= allowed + 32.0 + 1.0,
        "{got} over {allowed:.0} in {elapsed:.2} s"
    );
    assert!(
        got >= 0.95 * allowed,
        "{got} under 95% of {allowed:.0} in {elapsed:.2} s"
    );
    if elapsed < 5.2 {
        assert!((9_500.0..=10_500.0).contains(&got), "10,000 +- 5%: {got}");
    }
    eprintln!(
        "capped: {got} in {elapsed:.2} s; rate_limited {}",
        c.rate_limited
    );
    let (seen, _) = capped.finish();
    assert_eq!(seen.len() as u64, c.forwarded);
}

#[test]
fn bad_rates_are_one_clear_error_and_the_api_keeps_the_running_set() {
    for (rate, says) in [
        ("0/s", "max-rate \"0/s\""),
        ("10 bytes/s", "N/s, N datagrams/s or N lines/s"),
        ("500 lines/s", "only a plain target with line settings"),
    ] {
        let dir = temp_dir("rate", "file");
        let file = dir.join("udptee.toml");
        std::fs::write(
            &file,
            format!("listen = \"127.0.0.1:8125\"\n[[target]]\naddr = \"127.0.0.1:8126\"\nmax-rate = \"{rate}\"\n"),
        )
        .unwrap();
        let o = std::process::Command::new(BIN)
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{rate}: {err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The API: a bad rate is a 400 and changes nothing; a good one applies at once.
    let sink = Sink::new(false);
    let admin = free_tcp();
    let (mut child, listen) = spawn_udptee(&sink, &["--admin", &admin.to_string()], &[]);
    wait_bound(&mut child, listen);
    wait_admin(admin);
    let body = format!("{{\"addr\": \"{}\", \"max-rate\": \"fast\"}}", sink.addr);
    let (code, answer) = http(admin, "PUT", "/targets/x", "", &body);
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("max-rate"), "{answer}");
    let (_, list) = http(admin, "GET", "/targets", "", "");
    assert!(!list.contains("\"x\""), "nothing changed: {list}");
    let body = format!("{{\"addr\": \"{}\", \"max-rate\": \"100/s\"}}", sink.addr);
    let (code, answer) = http(admin, "PUT", &format!("/targets/{}", sink.addr), "", &body);
    assert_eq!(code, 200, "{answer}");
    let (_, list) = http(admin, "GET", "/targets", "", "");
    assert!(list.contains("\"max-rate\": \"100/s\""), "{list}");
    signal(&child, "-TERM");
    let _ = child.wait();
}

#[test]
fn a_cap_in_lines_counts_lines_and_a_datagram_it_empties_is_rate_limited() {
    let (capped, open) = (Sink::new(false), Sink::new(false));
    let fwd = forwarder(false, &[capped.addr, open.addr], |c| {
        // Line settings that keep everything: the target's sender parses its lines.
        c.targets[0].lines.prefix = "shadow.".into();
        c.targets[0].max_rate = Some("1000 lines/s".parse::<MaxRate>().unwrap());
    });
    // 2 s of 10 lines per datagram, 500 datagrams a second: 5,000 lines/s offered, steadily.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram: Vec<u8> = (0..10)
        .map(|i| format!("m.{i}:1|c"))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes();
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < 950 {
        let due = ((start.elapsed().as_secs_f64() * 500.0) as usize).min(950);
        while sent < due {
            client.send_to(&datagram, fwd.local_addr()).unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Then 50 at once: more lines than the cap's burst (1% of a second's worth), so the cap
    // empties whole datagrams.
    for _ in 0..50 {
        client.send_to(&datagram, fwd.local_addr()).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    wait_for(&fwd, "the uncapped target to get everything", || {
        open.received() == 1000
    });
    let snap = fwd.shutdown();
    assert_accounted(&snap);
    let c = &snap.targets[0];
    use udptee::metrics::counters::LineOutcome::{Offered, RateLimited, Sent};
    assert_eq!(c.lines(Offered), 10_000);
    assert_eq!(
        c.lines(Sent) + c.lines(RateLimited),
        10_000,
        "every line sent or capped"
    );
    let allowed = 1000.0 * elapsed;
    let got = c.lines(Sent) as f64;
    assert!(
        got <= allowed + 10.0 + 10.0,
        "{got} lines over {allowed:.0} in {elapsed:.2} s"
    );
    assert!(
        got >= 0.95 * allowed,
        "{got} lines under 95% of {allowed:.0}"
    );
    assert!(
        c.rate_limited > 0,
        "datagrams the cap emptied are rate_limited: {c:?}"
    );
    assert_eq!(c.forwarded + c.rate_limited + c.filtered, 1000, "{c:?}");
    assert_eq!(snap.targets[1].forwarded, 1000);
}
