//! The JSON of `GET /targets` (each target's settings and counters, with its ledger) and of
//! `GET /parity` (what each target was sent over the last window, against a primary), shared by the
//! admin API and the status page.

use serde_json::json;

use super::stats::Stats;

/// `GET /targets`: every target (current, then removed) with its settings and counters.
pub(crate) fn targets_json(stats: &Stats, only: Option<&str>) -> serde_json::Value {
    let table = stats.registry().current();
    let snaps = stats.registry().snapshots();
    let list: Vec<serde_json::Value> = snaps
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name))
        .map(|(name, s)| {
            let entry = table.targets.iter().find(|t| &t.spec.name == name);
            let dropped: serde_json::Map<String, serde_json::Value> =
                crate::metrics::counters::DropReason::PER_TARGET
                    .iter()
                    .map(|r| (r.as_str().to_owned(), json!(s.dropped(*r))))
                    .collect();
            let counters = json!({
                "offered": s.offered,
                "forwarded": s.forwarded,
                "forwarded_bytes": s.bytes,
                "kernel_forwarded": s.kernel_forwarded,
                "dropped": dropped,
                "queued": s.queued(),
                "receiver_drops": s.receiver_drops,
                "up": s.up,
                "filtered": s.filtered,
                "lines": crate::metrics::counters::LineOutcome::ALL
                    .iter()
                    .map(|o| (o.as_str().to_owned(), json!(s.lines(*o))))
                    .collect::<serde_json::Map<String, serde_json::Value>>(),
            });
            match entry {
                Some(t) => json!({
                    "name": name,
                    "state": "active",
                    "addr": t.spec.addr,
                    "resolved": match (&t.spec.unix, &t.spec.stream_path, t.spec.tcp) {
                        (Some(p), _, _) => format!("unixgram://{}", p.display()),
                        (None, Some(p), _) => format!("unix://{}", p.display()),
                        (None, None, true) => format!("tcp://{}", t.spec.resolved),
                        (None, None, false) => t.spec.resolved.to_string(),
                    },
                    // Since when this address is the target's (its incarnation started).
                    "since": humantime::format_rfc3339_seconds(t.core.since).to_string(),
                    "connection": t.core.link.as_ref().map(|l| {
                        use std::sync::atomic::Ordering::Relaxed;
                        json!({
                            "connected": l.connected.load(Relaxed),
                            "connects": l.connects.load(Relaxed),
                            "connections_lost": l.lost.load(Relaxed),
                            "connect_failures": l.failed.load(Relaxed),
                        })
                    }),
                    "enabled": t.spec.enabled,
                    "path": stats.registry().path_of(name),
                    "queue-depth": t.spec.queue_depth,
                    "queue-bytes": t.spec.queue_bytes,
                    "sndbuf": t.spec.sndbuf_bytes,
                    "lines": t.spec.lines,
                    "parity": t.spec.parity,
                    "preserve-source": t.spec.preserve_source,
                    "max-rate": t.spec.max_rate,
                    // The series budget's window: what it holds, and which names hold most.
                    "series": t.core.lines.load().as_deref().and_then(|f| f.series_report(10)),
                    "origin": t.core.origin.as_str(),
                    "origin_relayed_because": t.core.origin.relayed_because,
                    "queued_bytes": t.core.ring.used_bytes(),
                    "counters": counters,
                    "group": t.spec.group.as_ref().zip(t.core.group.as_ref()).map(|(spec, g)| json!({
                        "health-interval": humantime::format_duration(spec.health_interval).to_string(),
                        "max-datagram": spec.max_datagram,
                        "members": g.members().iter().map(member_json).collect::<Vec<_>>(),
                    })),
                }),
                None => json!({ "name": name, "state": "removed", "counters": counters }),
            }
        })
        .collect();
    serde_json::Value::Array(list)
}

/// One group member: its state on the ring and its books, in datagrams and lines.
pub(crate) fn member_json(m: &crate::fanout::group::MemberView) -> serde_json::Value {
    use crate::metrics::counters::{DropReason, LineOutcome};
    let s = &m.books;
    let dropped: serde_json::Map<String, serde_json::Value> = DropReason::PER_TARGET
        .iter()
        .filter(|r| s.dropped(**r) > 0)
        .map(|r| (r.as_str().to_owned(), json!(s.dropped(*r))))
        .collect();
    json!({
        "addr": m.addr,
        "admin": m.admin,
        "up": m.up,
        "last_check": m.last_check,
        "points": m.points,
        "share": m.share,
        "datagrams": { "offered": s.offered, "forwarded": s.forwarded, "dropped": dropped, "queued": s.queued() },
        "lines": {
            "offered": s.lines(LineOutcome::Offered),
            "sent": s.lines(LineOutcome::Sent),
            "dropped": s.lines(LineOutcome::Dropped),
        },
    })
}

/// `GET /targets/{name}/ring?key=K`: where a key goes in a group now.
pub(crate) fn placement_json(
    group: &str,
    key: &str,
    p: &crate::fanout::group::Placement,
) -> serde_json::Value {
    json!({
        "group": group,
        "key": key,
        "hash": p.hash,
        "member": p.point.as_ref().map(|(_, m)| m),
        "point": p.point.as_ref().map(|(v, _)| v),
    })
}

/// One target's books in the parity ledger: datagrams and lines by outcome, and the digest.
fn ledger(s: &crate::metrics::counters::TargetSnapshot) -> serde_json::Value {
    use crate::metrics::counters::{DropReason, LineOutcome};
    let dropped: serde_json::Map<String, serde_json::Value> = DropReason::PER_TARGET
        .iter()
        .map(|r| (r.as_str().to_owned(), json!(s.dropped(*r))))
        .collect();
    let lines: serde_json::Map<String, serde_json::Value> = LineOutcome::ALL
        .iter()
        .map(|o| (o.as_str().to_owned(), json!(s.lines(*o))))
        .collect();
    json!({
        "datagrams": {
            "offered": s.offered,
            "sent": s.forwarded,
            "filtered": s.filtered,
            "dropped": dropped,
            "queued": s.queued(),
        },
        "lines": lines,
        "digest": format!("{:016x}", s.digest),
    })
}

/// `GET /parity[?primary=NAME]`: per target, since start and over the last complete window, what
/// was offered, kept, removed (by cause), dropped (by reason) and sent, with an order-independent
/// digest of the lines sent. With a primary, each other target is compared with it: equal digests,
/// and every difference in lines sent beside the causes the target's own books give.
pub(crate) fn parity_json(
    stats: &Stats,
    primary: Option<&str>,
) -> Result<serde_json::Value, String> {
    use crate::metrics::counters::LineOutcome;
    let now = stats.registry().snapshots();
    let last = stats.registry().last_parity_window();
    let primary_snap = match primary {
        Some(p) => Some(
            now.iter()
                .find(|(n, _)| n == p)
                .map(|(_, s)| s.clone())
                .ok_or_else(|| format!("no target named {p:?}"))?,
        ),
        None => None,
    };
    let targets: Vec<serde_json::Value> = now
        .iter()
        .map(|(name, s)| {
            let mut v = json!({ "name": name, "since_start": ledger(s) });
            if let Some((len, window)) = &last {
                if let Some((_, w)) = window.iter().find(|(n, _)| n == name) {
                    v["last_interval"] = ledger(w);
                    v["last_interval"]["seconds"] = json!(len.as_secs_f64());
                }
            }
            if let (Some(p), Some(pname)) = (&primary_snap, primary) {
                if pname != name {
                    let sent = |x: &crate::metrics::counters::TargetSnapshot| x.lines(LineOutcome::Sent);
                    let cause = |o: LineOutcome| s.lines(o) as i128 - p.lines(o) as i128;
                    v["versus_primary"] = json!({
                        "digest_equal": s.digest == p.digest,
                        "lines_sent_difference": sent(p) as i128 - sent(s) as i128,
                        "explained_by": {
                            "filtered": cause(LineOutcome::Filtered),
                            "sampled_out": cause(LineOutcome::SampledOut),
                            "malformed_dropped": cause(LineOutcome::MalformedDropped),
                            "rate_limited": cause(LineOutcome::RateLimited),
                            "series_limited": cause(LineOutcome::SeriesLimited),
                            "dropped": cause(LineOutcome::Dropped),
                            "datagrams_dropped_before_the_filter": s.dropped_total() as i128 - p.dropped_total() as i128,
                            "offered": p.lines(LineOutcome::Offered) as i128 - s.lines(LineOutcome::Offered) as i128,
                        },
                    });
                }
            }
            v
        })
        .collect();
    Ok(json!({
        "primary": primary,
        "window_seconds": crate::fanout::targets::PARITY_INTERVAL.as_secs(),
        "note": "lines are counted for targets with line settings or parity = true; others show zeros",
        "targets": targets,
    }))
}
