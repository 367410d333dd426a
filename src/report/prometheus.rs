//! `/metrics`: every counter of the forwarder in Prometheus text, produced with the prometheus-client
//! crate from a snapshot taken at scrape time (nothing is maintained on the hot path for it). The
//! crate writes OpenMetrics, served as is to scrapers that ask for it; everyone else gets the classic
//! text format (`version=0.0.4`), which differs only in naming a counter family by its `_total`
//! sample and in having no `# EOF`/`# UNIT` lines, so promtool and classic parsers see counters as
//! counters. The kernel's view sits beside udptee's: each worker socket's drop counter and the host's
//! /proc/net/snmp UDP error counters, so kernel loss and udptee loss can be told apart at a glance.
//! Counter names end in `_total` (added by the encoder), units are in the names.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::control::Control;
use crate::metrics::counters::{DropReason, SendErrorKind};
use crate::report::Stats;

/// Content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// A registry whose one collector reads `stats` (and the reload counts of `control`) at every scrape.
pub fn registry(stats: Arc<Stats>, control: Arc<Control>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ForwarderCollector(stats, control)));
    registry
}

/// Renders `registry` as OpenMetrics text (`openmetrics`) or the classic text format.
pub fn render(registry: &Registry, openmetrics: bool) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(if openmetrics { out } else { to_classic(&out) })
}

/// OpenMetrics text to the classic format: counter families take their `_total` name in `# HELP` and
/// `# TYPE`, and `# UNIT` and `# EOF` go.
fn to_classic(open: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in open.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_owned());
            }
        }
    }
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{kind}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[derive(Debug)]
struct ForwarderCollector(Arc<Stats>, Arc<Control>);

fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Labels, u64)],
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    if let [(labels, value)] = samples {
        if labels.is_empty() {
            // A label-less sample is written without `{}`.
            return value_of(kind, *value, metric);
        }
    }
    for (labels, value) in samples {
        value_of(kind, *value, metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// Upper bounds of the latency histogram's buckets, µs: 50 µs to 1 s.
const LATENCY_BUCKETS_US: [u64; 13] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

fn value_of(kind: MetricType, value: u64, enc: MetricEncoder<'_>) -> fmt::Result {
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(enc),
        _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(enc),
    }
}

impl Collector for ForwarderCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let stats = &self.0;
        let snap = stats.snapshot();
        let names = &snap.target_names;
        let worker = |i: usize| -> Labels { vec![("worker", i.to_string())] };
        let target = |t: usize| -> Labels { vec![("target", names[t].clone())] };
        let per_worker =
            |f: &dyn Fn(&crate::metrics::counters::WorkerSnapshot) -> u64| -> Vec<(Labels, u64)> {
                snap.workers
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (worker(i), f(w)))
                    .collect()
            };
        let per_target = |f: &dyn Fn(usize) -> u64| -> Vec<(Labels, u64)> {
            (0..names.len()).map(|t| (target(t), f(t))).collect()
        };
        use MetricType::{Counter, Gauge};

        family(
            &mut enc,
            "udptee_build_info",
            "udptee version and I/O backend (value is always 1).",
            Gauge,
            &[(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                    ("io_backend", stats.backend().to_owned()),
                ],
                1,
            )],
        )?;
        family(
            &mut enc,
            "udptee_received_datagrams",
            "Datagrams received from the kernel, all workers.",
            Counter,
            &[(vec![], snap.received())],
        )?;
        family(
            &mut enc,
            "udptee_worker_received_datagrams",
            "Datagrams received by each worker.",
            Counter,
            &per_worker(&|w| w.received),
        )?;
        family(
            &mut enc,
            "udptee_worker_received_bytes",
            "Bytes received by each worker (oversized datagrams excluded).",
            Counter,
            &per_worker(&|w| w.bytes),
        )?;
        family(
            &mut enc,
            "udptee_worker_truncated_datagrams",
            "Datagrams over --max-datagram, forwarded to no one.",
            Counter,
            &per_worker(&|w| w.truncated),
        )?;
        family(
            &mut enc,
            "udptee_worker_source_denied_datagrams",
            "Datagrams from senders outside --allow, forwarded to no one.",
            Counter,
            &per_worker(&|w| w.source_denied),
        )?;
        family(
            &mut enc,
            "udptee_worker_recv_errors",
            "Failed receive calls.",
            Counter,
            &per_worker(&|w| w.recv_errors),
        )?;
        family(
            &mut enc,
            "udptee_worker_kernel_drops",
            "Datagrams the kernel dropped on this worker's socket before udptee saw them (receive buffer full; SO_RXQ_OVFL/SO_MEMINFO).",
            Counter,
            &per_worker(&|w| w.rcvbuf_overflow),
        )?;
        family(
            &mut enc,
            "udptee_worker_uring_buffers_exhausted",
            "Times the worker's io_uring ran out of provided buffers (receive pressure; 0 with recvmmsg).",
            Counter,
            &per_worker(&|w| w.ring_empty),
        )?;
        family(
            &mut enc,
            "udptee_target_offered_datagrams",
            "Datagrams received while each target was in the set (since it joined); offered = forwarded + dropped + queued.",
            Counter,
            &per_target(&|t| snap.targets[t].offered),
        )?;
        family(
            &mut enc,
            "udptee_target_forwarded_datagrams",
            "Copies sent to each target.",
            Counter,
            &per_target(&|t| snap.targets[t].forwarded),
        )?;
        family(
            &mut enc,
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
            &mut enc,
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
            &mut enc,
            "udptee_target_send_errors",
            "Copies the kernel refused to send, by errno class (part of reason=send_error).",
            Counter,
            &errors,
        )?;
        family(
            &mut enc,
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
            &mut enc,
            "udptee_target_path",
            "Which path serves each target now: kernel (the fast path) or user (value is always 1).",
            Gauge,
            &paths,
        )?;
        if let Some(k) = &snap.kernel {
            family(
                &mut enc,
                "udptee_fastpath_handled_datagrams",
                "Datagrams the kernel fast path copied to its targets.",
                Counter,
                &[(vec![], k.handled)],
            )?;
            family(
                &mut enc,
                "udptee_fastpath_consumed_datagrams",
                "Of those, datagrams whose original became the last copy (never received by a worker).",
                Counter,
                &[(vec![], k.consumed)],
            )?;
            family(
                &mut enc,
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
                &mut enc,
                "udptee_fastpath_active",
                "1 while the kernel fast path copies; 0 once it turned itself off (reason: marks_lost, its packet marks did not reach udptee's socket).",
                Gauge,
                &[(
                    vec![("reason", k.off.unwrap_or("").to_owned())],
                    u64::from(k.off.is_none()),
                )],
            )?;
            family(
                &mut enc,
                "udptee_fastpath_stale_marks",
                "Datagrams marked by a kernel generation the workers no longer knew (served to every target by user space; should stay 0).",
                Counter,
                &[(vec![], k.stale_marks)],
            )?;
            family(
                &mut enc,
                "udptee_fastpath_passed_datagrams",
                "Datagrams the kernel fast path left to user space unhandled, by reason (user space serves every target for them).",
                Counter,
                &passed,
            )?;
        }
        family(
            &mut enc,
            "udptee_target_queued_datagrams",
            "Copies waiting in each target's queue or being sent by its sender.",
            Gauge,
            &per_target(&|t| snap.targets[t].queued()),
        )?;
        family(
            &mut enc,
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
            &mut enc,
            "udptee_target_lines",
            "statsd lines of targets with line settings or parity, by outcome; offered = sent + filtered + sampled_out + malformed_dropped + dropped.",
            Counter,
            &lines,
        )?;
        family(
            &mut enc,
            "udptee_target_malformed_lines",
            "Lines that are not statsd, seen by targets with line settings (forwarded or dropped by their malformed setting).",
            Counter,
            &per_target(&|t| {
                snap.targets[t].lines(crate::metrics::counters::LineOutcome::Malformed)
            }),
        )?;
        let receiver: Vec<(Labels, u64)> = (0..names.len())
            .filter_map(|t| snap.targets[t].receiver_drops.map(|d| (target(t), d)))
            .collect();
        family(
            &mut enc,
            "udptee_target_receiver_drops",
            "Copies forwarded to a target on this host that its own socket then dropped (receive buffer full), read with sock_diag; absent for remote targets.",
            Counter,
            &receiver,
        )?;
        let up: Vec<(Labels, u64)> = (0..names.len())
            .filter_map(|t| snap.targets[t].up.map(|u| (target(t), u64::from(u))))
            .collect();
        family(
            &mut enc,
            "udptee_target_up",
            "1 when the target can receive: on this host, a socket is bound at its address; remote, its last sends met no error. 0 otherwise.",
            Gauge,
            &up,
        )?;
        let table = stats.registry().current();
        let current =
            |f: &dyn Fn(&crate::fanout::targets::TargetEntry) -> u64| -> Vec<(Labels, u64)> {
                table
                    .targets
                    .iter()
                    .map(|t| (vec![("target", t.spec.name.clone())], f(t)))
                    .collect()
            };
        family(
            &mut enc,
            "udptee_target_queue_capacity_datagrams",
            "Most datagrams each target's queue holds (queue-depth).",
            Gauge,
            &current(&|t| t.spec.queue_depth as u64),
        )?;
        family(
            &mut enc,
            "udptee_target_queued_bytes",
            "Bytes in each target's queue now.",
            Gauge,
            &current(&|t| t.core.ring.used_bytes() as u64),
        )?;
        family(
            &mut enc,
            "udptee_target_queue_capacity_bytes",
            "Bytes each target's queue holds at most (queue-bytes), allocated when the target is added.",
            Gauge,
            &current(&|t| t.spec.queue_bytes as u64),
        )?;
        family(
            &mut enc,
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
            &mut enc,
            "udptee_target_resolve_errors",
            "Failed look-ups of a target's host name (the last address is kept).",
            Counter,
            &resolve,
        )?;
        let (ok, err) = self.1.reload_counts();
        family(
            &mut enc,
            "udptee_config_reloads",
            "Configuration reloads (SIGHUP, POST /-/reload), by result.",
            Counter,
            &[
                (vec![("result", "success".to_owned())], ok),
                (vec![("result", "error".to_owned())], err),
            ],
        )?;
        family(
            &mut enc,
            "udptee_config_generation",
            "Generation of the target set now published (increases with every change).",
            Gauge,
            &[(vec![], table.generation)],
        )?;
        let pool = stats.pool();
        family(
            &mut enc,
            "udptee_pool_slots",
            "Datagram slots allocated at start-up.",
            Gauge,
            &[(vec![], pool.capacity() as u64)],
        )?;
        family(
            &mut enc,
            "udptee_pool_slots_in_use",
            "Slots holding a datagram not yet sent or dropped by every target, or armed for receive.",
            Gauge,
            &[(vec![], (pool.capacity() - pool.available()) as u64)],
        )?;
        // Latency since start per target (kernel receive to send), as a Prometheus histogram.
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
        family(
            &mut enc,
            "udptee_ready",
            "1 when /readyz would answer ready: the sockets are bound, every worker and every current target's sender runs, no data thread died.",
            Gauge,
            &[(vec![], u64::from(stats.ready().is_ok()))],
        )?;
        let rec = stats.recorder().counts();
        family(
            &mut enc,
            "udptee_record_active",
            "1 while a recording (--record, POST /record/start) runs.",
            Gauge,
            &[(vec![], u64::from(stats.recorder().active()))],
        )?;
        family(
            &mut enc,
            "udptee_record_datagrams",
            "Datagrams written to the recording's pcap files.",
            Counter,
            &[(vec![], rec.recorded)],
        )?;
        family(
            &mut enc,
            "udptee_record_bytes",
            "Bytes written to the recording's pcap files, headers included.",
            Counter,
            &[(vec![], rec.bytes)],
        )?;
        family(
            &mut enc,
            "udptee_record_files",
            "Recording files opened (rotation opens one more).",
            Counter,
            &[(vec![], rec.files)],
        )?;
        family(
            &mut enc,
            "udptee_record_filtered",
            "Datagrams not recorded because the record filter left none of their lines.",
            Counter,
            &[(vec![], rec.filtered)],
        )?;
        family(
            &mut enc,
            "udptee_record_dropped",
            "Datagrams not recorded, by reason: queue_full (the recorder fell behind; forwarding never waits for it), write_error (a write failed, e.g. a full disk).",
            Counter,
            &[
                (vec![("reason", "queue_full".to_owned())], rec.queue_full),
                (vec![("reason", "write_error".to_owned())], rec.write_error),
            ],
        )?;
        let tap = stats.taps().counts();
        family(
            &mut enc,
            "udptee_tap_clients",
            "Live taps (GET /tap, udptee tap) connected now.",
            Gauge,
            &[(vec![], tap.clients)],
        )?;
        family(
            &mut enc,
            "udptee_tap_datagrams",
            "Datagrams shown to live taps, by outcome: shown, or dropped (a tap reader fell behind; forwarding never waits for it).",
            Counter,
            &[
                (vec![("outcome", "shown".to_owned())], tap.shown),
                (vec![("outcome", "dropped".to_owned())], tap.dropped),
            ],
        )?;
        family(
            &mut enc,
            "udptee_log_lines_dropped",
            "Log lines lost: stderr failed (a closed pipe, a full disk) or the logging thread fell behind. Forwarding never waits for the log.",
            Counter,
            &[(vec![], crate::logging::lines_dropped())],
        )?;
        if let Ok(snmp) = procfs::net::snmp() {
            family(
                &mut enc,
                "udptee_host_udp_rcvbuf_errors",
                "Host-wide UDP datagrams dropped because a socket's receive buffer was full (/proc/net/snmp Udp RcvbufErrors, IPv4).",
                Counter,
                &[(vec![], snmp.udp_rcvbuf_errors)],
            )?;
            family(
                &mut enc,
                "udptee_host_udp_in_errors",
                "Host-wide UDP receive errors (/proc/net/snmp Udp InErrors, IPv4).",
                Counter,
                &[(vec![], snmp.udp_in_errors)],
            )?;
            family(
                &mut enc,
                "udptee_host_udp_sndbuf_errors",
                "Host-wide UDP sends dropped for lack of send buffer (/proc/net/snmp Udp SndbufErrors, IPv4).",
                Counter,
                &[(vec![], snmp.udp_sndbuf_errors)],
            )?;
        }
        Ok(())
    }
}
