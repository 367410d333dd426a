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
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::family::{Labels, family};
use super::{prometheus_listeners, prometheus_members, prometheus_targets};
use crate::report::Stats;

/// Content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A registry whose one collector reads `stats` at every scrape.
pub fn registry(stats: Arc<Stats>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ForwarderCollector(stats)));
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
struct ForwarderCollector(Arc<Stats>);

impl Collector for ForwarderCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let stats = &self.0;
        let snap = stats.snapshot();
        // Receive threads by index: the datagram workers, then one per stream listener (the
        // `udptee_listener_*` families name each listener).
        let worker = |i: usize| -> Labels { vec![("worker", i.to_string())] };
        let per_worker =
            |f: &dyn Fn(&crate::metrics::counters::WorkerSnapshot) -> u64| -> Vec<(Labels, u64)> {
                snap.workers
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (worker(i), f(w)))
                    .collect()
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
            "udptee_worker_looped_datagrams",
            "Datagrams udptee itself sent to its own Unix listener (a target that is a link to it), forwarded to no one.",
            Counter,
            &per_worker(&|w| w.looped),
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
        prometheus_listeners::encode(&mut enc, &snap)?;
        let generation = prometheus_targets::encode(&mut enc, stats, &snap)?;
        prometheus_members::encode(&mut enc, stats)?;
        let (ok, err) = stats.reloads().get();
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
            &[(vec![], generation)],
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
        prometheus_targets::encode_latency(&mut enc, stats)?;
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
        let top = stats.top().counts();
        family(
            &mut enc,
            "udptee_top_sampling",
            "1 while the top talkers' sampler runs (GET /top, udptee top, the status page looked in the last 15 s), else 0.",
            Gauge,
            &[(vec![], u64::from(top.sampling))],
        )?;
        family(
            &mut enc,
            "udptee_top_datagrams",
            "Datagrams offered to the top talkers' sample, by outcome: sampled, or missed (its ring was full; rates are scaled up for them, forwarding never waits).",
            Counter,
            &[
                (vec![("outcome", "sampled".to_owned())], top.sampled),
                (vec![("outcome", "missed".to_owned())], top.missed),
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
