//! The group member families of `/metrics`: for each member of each group (`target`, `member`
//! labels), the datagrams and lines it was handed, sent and dropped, whether it is in the ring, its
//! points and its share of the key space.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::family::{Labels, family};
use super::stats::Stats;
use crate::fanout::group::MemberView;
use crate::metrics::counters::{DropReason, LineOutcome};

/// The reasons a member's copies are dropped for (it is sent to like a plain target).
const MEMBER_REASONS: [DropReason; 3] = [
    DropReason::QueueFull,
    DropReason::SendError,
    DropReason::DrainTimeout,
];

/// Writes every member family (nothing but the descriptors when there is no group).
pub(crate) fn encode(enc: &mut DescriptorEncoder<'_>, stats: &Stats) -> fmt::Result {
    let groups = stats.groups();
    let members: Vec<(Labels, &MemberView)> = groups
        .iter()
        .flat_map(|(g, ms)| {
            ms.iter()
                .map(move |m| (vec![("target", g.clone()), ("member", m.addr.clone())], m))
        })
        .collect();
    let each = |f: fn(&MemberView) -> u64| -> Vec<(Labels, u64)> {
        members.iter().map(|(l, m)| (l.clone(), f(m))).collect()
    };
    // One sample per member and value of `key`, from `values` (label value, sample) per member.
    let by = |key: &'static str, values: fn(&MemberView) -> Vec<(&'static str, u64)>| {
        let mut out: Vec<(Labels, u64)> = Vec::new();
        for (l, m) in &members {
            for (v, n) in values(m) {
                let mut labels = l.clone();
                labels.push((key, v.to_owned()));
                out.push((labels, n));
            }
        }
        out
    };
    use MetricType::{Counter, Gauge};
    family(
        enc,
        "udptee_member_offered_datagrams",
        "Datagrams each group member was handed (re-batched lines, or a datagram whose lines were all its own).",
        Counter,
        &each(|m| m.books.offered),
    )?;
    family(
        enc,
        "udptee_member_forwarded_datagrams",
        "Datagrams sent to each group member.",
        Counter,
        &each(|m| m.books.forwarded),
    )?;
    family(
        enc,
        "udptee_member_dropped_datagrams",
        "Datagrams for each group member not sent, by reason; offered = forwarded + dropped + queued.",
        Counter,
        &by("reason", |m| {
            MEMBER_REASONS
                .iter()
                .map(|&r| (r.as_str(), m.books.dropped(r)))
                .collect()
        }),
    )?;
    family(
        enc,
        "udptee_member_lines",
        "statsd lines each group member was handed, by outcome: offered = sent + dropped once its queue drains. A group's lines sent = the sum of its members' offered.",
        Counter,
        &by("outcome", |m| {
            [
                ("offered", LineOutcome::Offered),
                ("sent", LineOutcome::Sent),
                ("dropped", LineOutcome::Dropped),
            ]
            .iter()
            .map(|&(v, o)| (v, m.books.lines(o)))
            .collect()
        }),
    )?;
    family(
        enc,
        "udptee_member_up",
        "1 while the member is in its group's ring (up at start, then as its last health check said), 0 while out.",
        Gauge,
        &each(|m| u64::from(m.up)),
    )?;
    family(
        enc,
        "udptee_member_ring_points",
        "Points each member holds on its group's ring now (40 per member; 39 with 7 or 14 members up; 0 while down).",
        Gauge,
        &each(|m| m.points as u64),
    )?;
    let mut share = enc.encode_descriptor(
        "udptee_member_key_share",
        "The share of the key hash space each member owns on its group's ring now, 0 to 1.",
        None,
        Gauge,
    )?;
    for (labels, m) in &members {
        ConstGauge::new(m.share).encode(share.encode_family(labels)?)?;
    }
    Ok(())
}
