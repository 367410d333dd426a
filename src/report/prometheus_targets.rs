//! The per-target families of `/metrics`: what each target was offered, forwarded and dropped (by
//! reason and errno class), which path serves it, the kernel path's own counters, its lines, its
//! receiver's drops, its queue, its latency histogram and its failed look-ups.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::family::{Labels, family};
use super::stats::Stats;
use crate::metrics::counters::{DropReason, SendErrorKind, Snapshot};

/// Upper bounds of the latency histogram's buckets, µs: 50 µs to 1 s.
const LATENCY_BUCKETS_US: [u64; 13] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Writes every per-target family from `snap` (taken from `stats` at this scrape); returns the
/// generation of the target table it read.
pub(crate) fn encode(
    enc: &mut DescriptorEncoder<'_>,
    stats: &Stats,
    snap: &Snapshot,
) -> Result<u64, fmt::Error> {
    let names = &snap.target_names;
    let target = |t: usize| -> Labels { vec![("target", names[t].clone())] };
    let per_target = |f: &dyn Fn(usize) -> u64| -> Vec<(Labels, u64)> {
        (0..names.len()).map(|t| (target(t), f(t))).collect()
    };
    use MetricType::{Counter, Gauge};
    family(
        enc,
        "udptee_target_offered_datagrams",
        "Datagrams received while each target was in the set (since it joined); offered = forwarded + dropped + queued.",
        Counter,
        &per_target(&|t| snap.targets[t].offered),
    )?;
    family(
        enc,
        "udptee_target_forwarded_datagrams",
        "Copies sent to each target.",
        Counter,
        &per_target(&|t| snap.targets[t].forwarded),
    )?;
    family(
        enc,
        "udptee_target_forwarded_bytes",
        "Bytes sent to each target.",
        Counter,
        &per_target(&|t| snap.targets[t].bytes),
    )?;
    let dropped: Vec<(Labels, u64)> = (0..names.len())
        .flat_map(|t| DropReason::PER_TARGET.iter().map(move |&r| (t, r)))
        .map(|(t, r)| {
            (
                vec![
                    ("target", names[t].clone()),
                    ("reason", r.as_str().to_owned()),
                ],
                snap.dropped(t, r),
            )
        })
        .collect();
    family(
        enc,
        "udptee_target_dropped_datagrams",
        "Copies not forwarded to each target, by reason; received = forwarded + dropped once queues drain.",
        Counter,
        &dropped,
    )?;
    let errors: Vec<(Labels, u64)> = (0..names.len())
        .flat_map(|t| {
            SendErrorKind::ALL
                .iter()
                .enumerate()
                .map(move |(k, kind)| (t, k, kind))
        })
        .map(|(t, k, kind)| {
            (
                vec![
                    ("target", names[t].clone()),
                    ("error", kind.as_str().to_owned()),
                ],
                snap.targets[t].send_errors[k],
            )
        })
        .collect();
    family(
        enc,
        "udptee_target_send_errors",
        "Copies the kernel refused to send, by errno class (part of reason=send_error).",
        Counter,
        &errors,
    )?;
    family(
        enc,
        "udptee_target_kernel_forwarded_datagrams",
        "Of the copies sent to each target, those the kernel fast path made.",
        Counter,
        &per_target(&|t| snap.targets[t].kernel_forwarded),
    )?;
    let paths: Vec<(Labels, u64)> = (0..names.len())
        .map(|t| {
            let path = stats.registry().path_of(&names[t]);
            (
                vec![("target", names[t].clone()), ("path", path.to_owned())],
                1,
            )
        })
        .collect();
    family(
        enc,
        "udptee_target_path",
        "Which path serves each target now: kernel (the fast path) or user (value is always 1).",
        Gauge,
        &paths,
    )?;
    if let Some(k) = &snap.kernel {
        family(
            enc,
            "udptee_fastpath_handled_datagrams",
            "Datagrams the kernel fast path copied to its targets.",
            Counter,
            &[(vec![], k.handled)],
        )?;
        family(
            enc,
            "udptee_fastpath_consumed_datagrams",
            "Of those, datagrams whose original became the last copy (never received by a worker).",
            Counter,
            &[(vec![], k.consumed)],
        )?;
        family(
            enc,
            "udptee_fastpath_consumed_bytes",
            "Payload bytes of the datagrams whose original became the last copy.",
            Counter,
            &[(vec![], k.consumed_bytes)],
        )?;
        let passed: Vec<(Labels, u64)> = k
            .passed
            .iter()
            .map(|(r, n)| (vec![("reason", (*r).to_owned())], *n))
            .collect();
        family(
            enc,
            "udptee_fastpath_active",
            "1 while the kernel fast path copies; 0 once it turned itself off (reason: marks_lost, its packet marks did not reach udptee's socket).",
            Gauge,
            &[(
                vec![("reason", k.off.unwrap_or("").to_owned())],
                u64::from(k.off.is_none()),
            )],
        )?;
        family(
            enc,
            "udptee_fastpath_stale_marks",
            "Datagrams marked by a kernel generation the workers no longer knew (served to every target by user space; should stay 0).",
            Counter,
            &[(vec![], k.stale_marks)],
        )?;
        family(
            enc,
            "udptee_fastpath_passed_datagrams",
            "Datagrams the kernel fast path left to user space unhandled, by reason (user space serves every target for them).",
            Counter,
            &passed,
        )?;
    }
    family(
        enc,
        "udptee_target_queued_datagrams",
        "Copies waiting in each target's queue or being sent by its sender.",
        Gauge,
        &per_target(&|t| snap.targets[t].queued()),
    )?;
    family(
        enc,
        "udptee_target_filtered_datagrams",
        "Datagrams all of whose lines the target's line settings removed (not sent, by design); offered = forwarded + dropped + filtered + queued.",
        Counter,
        &per_target(&|t| snap.targets[t].filtered),
    )?;
    let lines: Vec<(Labels, u64)> = (0..names.len())
        .flat_map(|t| {
            crate::metrics::counters::LineOutcome::ALL
                .iter()
                .filter(|o| **o != crate::metrics::counters::LineOutcome::Malformed)
                .map(move |o| (t, *o))
        })
        .map(|(t, o)| {
            (
                vec![
                    ("target", names[t].clone()),
                    ("outcome", o.as_str().to_owned()),
                ],
                snap.targets[t].lines(o),
            )
        })
        .collect();
    family(
        enc,
        "udptee_target_lines",
        "statsd lines of targets with line settings or parity, by outcome; offered = sent + filtered + sampled_out + malformed_dropped + dropped.",
        Counter,
        &lines,
    )?;
    family(
        enc,
        "udptee_target_malformed_lines",
        "Lines that are not statsd, seen by targets with line settings (forwarded or dropped by their malformed setting).",
        Counter,
        &per_target(&|t| snap.targets[t].lines(crate::metrics::counters::LineOutcome::Malformed)),
    )?;
    let receiver: Vec<(Labels, u64)> = (0..names.len())
        .filter_map(|t| snap.targets[t].receiver_drops.map(|d| (target(t), d)))
        .collect();
    family(
        enc,
        "udptee_target_receiver_drops",
        "Copies forwarded to a target on this host that its own socket then dropped (receive buffer full), read with sock_diag; absent for remote targets.",
        Counter,
        &receiver,
    )?;
    let up: Vec<(Labels, u64)> = (0..names.len())
        .filter_map(|t| snap.targets[t].up.map(|u| (target(t), u64::from(u))))
        .collect();
    family(
        enc,
        "udptee_target_up",
        "1 when the target can receive: on this host, a socket is bound at its address; remote, its last sends met no error. 0 otherwise.",
        Gauge,
        &up,
    )?;
    let table = stats.registry().current();
    let current = |f: &dyn Fn(&crate::fanout::targets::TargetEntry) -> u64| -> Vec<(Labels, u64)> {
        table
            .targets
            .iter()
            .map(|t| (vec![("target", t.spec.name.clone())], f(t)))
            .collect()
    };
    family(
        enc,
        "udptee_target_queue_capacity_datagrams",
        "Most datagrams each target's queue holds (queue-depth).",
        Gauge,
        &current(&|t| t.spec.queue_depth as u64),
    )?;
    family(
        enc,
        "udptee_target_queued_bytes",
        "Bytes in each target's queue now.",
        Gauge,
        &current(&|t| t.core.ring.used_bytes() as u64),
    )?;
    family(
        enc,
        "udptee_target_queue_capacity_bytes",
        "Bytes each target's queue holds at most (queue-bytes), allocated when the target is added.",
        Gauge,
        &current(&|t| t.spec.queue_bytes as u64),
    )?;
    family(
        enc,
        "udptee_target_enabled",
        "1 when the target is enabled, 0 when disabled (kept in the set, nothing sent).",
        Gauge,
        &current(&|t| u64::from(t.spec.enabled)),
    )?;
    let resolve: Vec<(Labels, u64)> = stats
        .registry()
        .resolve_errors()
        .into_iter()
        .map(|(n, c)| (vec![("target", n)], c))
        .collect();
    family(
        enc,
        "udptee_target_resolve_errors",
        "Failed look-ups of a target's host name (the last address is kept).",
        Counter,
        &resolve,
    )?;
    Ok(table.generation)
}

/// Latency since start per target (kernel receive to send), as a Prometheus histogram.
pub(crate) fn encode_latency(enc: &mut DescriptorEncoder<'_>, stats: &Stats) -> fmt::Result {
    {
        let mut metric = enc.encode_descriptor(
                "udptee_target_latency_seconds",
                "Time from the kernel's receive timestamp to the send of each copy, since start (--latency on).",
                None,
                MetricType::Histogram,
            )?;
        for (name, h) in stats.latency() {
            let count = h.len();
            // The encoder takes each bucket's own count and accumulates them itself.
            let mut below = 0;
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
                .iter()
                .map(|&us| (us as f64 / 1e6, h.count_between(0, us)))
                .chain(std::iter::once((f64::INFINITY, count)))
                .map(|(le, upto)| {
                    let own = upto.saturating_sub(below);
                    below = below.max(upto);
                    (le, own)
                })
                .collect();
            let sum = h.mean() * count as f64 / 1e6;
            let labels: Labels = vec![("target", name)];
            metric
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, count, &buckets, None,
                )?;
        }
    }
    Ok(())
}
