//! Line settings on the real data path: 16 metric names in multi-line datagrams through targets with
//! include, exclude, sample 0.5 and add-tags/prefix, beside an unfiltered target. Each filtered
//! target gets exactly its lines, in order, with every line and datagram accounted for; the sampled
//! one gets each name whole or not at all, the same names in a second run; the unfiltered one gets
//! every datagram byte for byte; and `GET /parity` explains every difference.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use udptee::metrics::counters::LineOutcome;
use udptee::statsd::filter::LineSettings;
use util::*;

/// Every line of `datagrams`, in order.
fn text_lines(datagrams: &[Vec<u8>]) -> Vec<String> {
    datagrams
        .iter()
        .flat_map(|d| {
            String::from_utf8(d.clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

const NAMES: usize = 16;

/// 400 datagrams of 4 lines each, cycling through the 16 names `svc.x0`..`svc.x15`, with tags.
fn traffic() -> Vec<Vec<u8>> {
    (0..400)
        .map(|d| {
            (0..4)
                .map(|l| {
                    let i = (d * 4 + l) % NAMES;
                    format!("svc.x{i}:{d}|c|#env:prod,seq:{d}")
                })
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        })
        .collect()
}

fn name_of(line: &str) -> &str {
    line.split(':').next().unwrap()
}

fn get(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

/// Runs the traffic through targets with `settings` (index 0 is unfiltered); returns the sinks, the
/// final snapshot and the parity ledger against target 0.
fn run(settings: &[LineSettings]) -> (Vec<Keep>, udptee::Snapshot, serde_json::Value) {
    let sinks: Vec<Keep> = settings.iter().map(|_| Keep::new()).collect();
    let addrs: Vec<SocketAddr> = sinks.iter().map(|s| s.addr).collect();
    let fwd = forwarder(false, &addrs, |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        for (t, s) in c.targets.iter_mut().zip(settings) {
            t.lines = s.clone();
        }
        c.targets[0].parity = true;
        for (i, t) in c.targets.iter_mut().enumerate() {
            t.name = format!("t{i}");
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, d) in traffic().iter().enumerate() {
        client.send_to(d, fwd.local_addr()).unwrap();
        if i % 50 == 49 {
            wait_for(&fwd, "the window to go out", || {
                let s = fwd.snapshot();
                (0..settings.len()).all(|t| s.unaccounted(t) == 0) && s.received() == i as u64 + 1
            });
        }
    }
    wait_for(&fwd, "everything to be sent", || {
        let s = fwd.snapshot();
        (0..settings.len()).all(|t| s.unaccounted(t) == 0)
    });
    std::thread::sleep(Duration::from_millis(200));
    let parity = get(fwd.admin_addr().unwrap(), "/parity?primary=t0");
    (sinks, fwd.shutdown(), parity)
}

#[test]
fn line_settings_give_each_target_exactly_its_share() {
    let settings = vec![
        LineSettings::default(),
        LineSettings {
            include: vec!["svc.x1".into(), "svc.x2*".into()],
            ..LineSettings::default()
        },
        LineSettings {
            exclude: vec!["svc.x1*".into()],
            ..LineSettings::default()
        },
        LineSettings {
            sample: Some(0.5),
            ..LineSettings::default()
        },
        LineSettings {
            add_tags: vec!["shadow:true".into()],
            prefix: "shadow.".into(),
            ..LineSettings::default()
        },
    ];
    let (sinks, snap, parity) = run(&settings);
    let sent = traffic();
    let all_lines = text_lines(&sent);

    assert!(
        sinks[0].datagrams() == sent,
        "the unfiltered target got every datagram, byte for byte"
    );
    let keep = |f: &dyn Fn(&str) -> bool| -> Vec<String> {
        all_lines
            .iter()
            .filter(|l| f(name_of(l)))
            .cloned()
            .collect()
    };
    assert_eq!(
        text_lines(&sinks[1].datagrams()),
        keep(&|n| n == "svc.x1" || n.starts_with("svc.x2")),
        "include: exactly svc.x1 (not svc.x10..15) and svc.x2*, every line, in order"
    );
    assert_eq!(
        text_lines(&sinks[2].datagrams()),
        keep(&|n| !n.starts_with("svc.x1")),
        "exclude: everything but svc.x1*"
    );
    let sampled: BTreeSet<String> = text_lines(&sinks[3].datagrams())
        .iter()
        .map(|l| name_of(l).to_owned())
        .collect();
    assert!(
        (3..=13).contains(&sampled.len()),
        "sample 0.5 keeps about half of 16 names: {sampled:?}"
    );
    assert_eq!(
        text_lines(&sinks[3].datagrams()),
        keep(&|n| sampled.contains(n)),
        "each sampled name complete: all of its lines, in order"
    );
    let shadow = text_lines(&sinks[4].datagrams());
    assert_eq!(shadow.len(), all_lines.len());
    for (got, orig) in shadow.iter().zip(&all_lines) {
        assert_eq!(got, &format!("shadow.{orig},shadow:true"), "rewritten copy");
    }
    assert!(
        sinks[4].datagrams().len() == sent.len(),
        "one datagram per datagram when the copy fits"
    );

    for (t, sink) in sinks.iter().enumerate().skip(1) {
        let s = &snap.targets[t];
        assert_eq!(s.offered, 400);
        assert_eq!(
            s.forwarded + s.filtered + s.dropped_total(),
            400,
            "datagrams: offered = forwarded + filtered + dropped ({t}):\n{snap}"
        );
        assert_eq!(s.lines(LineOutcome::Offered), 1600);
        assert_eq!(
            s.lines(LineOutcome::Sent)
                + s.lines(LineOutcome::Filtered)
                + s.lines(LineOutcome::SampledOut)
                + s.lines(LineOutcome::MalformedDropped)
                + s.lines(LineOutcome::Dropped),
            1600,
            "lines: offered = sent + every cause ({t}):\n{snap}"
        );
        assert_eq!(
            s.lines(LineOutcome::Sent) as usize,
            text_lines(&sink.datagrams()).len(),
            "{t}: lines counted as sent = lines received"
        );
    }
    assert_eq!(snap.targets[1].lines(LineOutcome::Filtered), 1600 - 200);
    assert_eq!(
        snap.targets[0].lines(LineOutcome::Sent),
        1600,
        "parity = true counts lines"
    );

    // The ledger: t2's difference from t0 is fully explained by its filter; t4's digest differs
    // (rewritten lines) with nothing missing.
    let by_name: BTreeMap<String, serde_json::Value> = parity["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
        .collect();
    let t2 = &by_name["t2"]["versus_primary"];
    assert_eq!(
        t2["lines_sent_difference"], t2["explained_by"]["filtered"],
        "every missing line is explained by the filter: {t2}"
    );
    assert_eq!(t2["digest_equal"], false);
    let t4 = &by_name["t4"]["versus_primary"];
    assert_eq!(t4["lines_sent_difference"], 0, "{t4}");
    assert_eq!(by_name["t0"]["since_start"]["lines"]["sent"], 1600);

    // A second run samples the same names.
    let (sinks2, _, _) = run(&settings[..4]);
    let again: BTreeSet<String> = text_lines(&sinks2[3].datagrams())
        .iter()
        .map(|l| name_of(l).to_owned())
        .collect();
    assert_eq!(again, sampled, "the same names in every run");
}

#[test]
fn identical_targets_have_equal_digests() {
    let include_all = LineSettings {
        include: vec!["*".into()],
        ..LineSettings::default()
    };
    let (_, snap, parity) = run(&[LineSettings::default(), include_all]);
    assert_eq!(snap.targets[0].digest, snap.targets[1].digest, "{snap}");
    let t1 = &parity["targets"][1]["versus_primary"];
    assert_eq!(t1["digest_equal"], true, "{parity}");
    assert_eq!(t1["lines_sent_difference"], 0);
}

/// A `parity` target without line settings counts malformed lines as a target with line settings
/// does (it sends them as they are, like every line).
#[test]
fn a_parity_target_counts_malformed_lines_too() {
    let sinks = [Keep::new(), Keep::new()];
    let fwd = forwarder(false, &[sinks[0].addr, sinks[1].addr], |c| {
        c.targets[0].parity = true;
        c.targets[1].lines = LineSettings {
            prefix: "shadow.".into(),
            ..LineSettings::default()
        };
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .send_to(
            b"good:1|c\nnot statsd\nalso:bad\r\nok:2|g\r\n",
            fwd.local_addr(),
        )
        .unwrap();
    wait_for(&fwd, "both copies", || {
        let s = fwd.snapshot();
        s.targets.iter().all(|t| t.forwarded == 1)
    });
    let snap = fwd.shutdown();
    for t in &snap.targets {
        assert_eq!(t.lines(LineOutcome::Offered), 4, "{snap}");
        assert_eq!(t.lines(LineOutcome::Malformed), 2, "{snap}");
    }
}
