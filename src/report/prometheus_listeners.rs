//! The listener families of `/metrics`: for each listener (`listener` label: its address with its
//! scheme), what its threads received and, for a tcp:// or unix:// listener, its connections, the
//! reasons they closed, and the lines and frames they carried.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType::{Counter, Gauge};

use super::family::{Labels, family};
use crate::metrics::counters::Snapshot;
use crate::metrics::snapshot::ListenerSnapshot;
use crate::metrics::stream::{CloseReason, StreamSnapshot};

/// Writes every listener family.
pub(crate) fn encode(enc: &mut DescriptorEncoder<'_>, snap: &Snapshot) -> fmt::Result {
    let label = |l: &ListenerSnapshot| -> Labels {
        vec![("listener", l.name.clone()), ("kind", l.kind.to_owned())]
    };
    let all = |f: &dyn Fn(&ListenerSnapshot) -> u64| -> Vec<(Labels, u64)> {
        snap.listeners.iter().map(|l| (label(l), f(l))).collect()
    };
    family(
        enc,
        "udptee_listener_received_datagrams",
        "Datagrams each listener received (for tcp:// and unix://: datagrams made of its lines and frames).",
        Counter,
        &all(&|l| snap.listener_received(l)),
    )?;
    family(
        enc,
        "udptee_listener_received_bytes",
        "Bytes of datagrams each listener received.",
        Counter,
        &all(&|l| snap.listener_bytes(l)),
    )?;
    let streams: Vec<(Labels, &StreamSnapshot)> = snap
        .listeners
        .iter()
        .filter_map(|l| Some((vec![("listener", l.name.clone())], l.stream.as_ref()?)))
        .collect();
    let each = |f: fn(&StreamSnapshot) -> u64| -> Vec<(Labels, u64)> {
        streams.iter().map(|(l, s)| (l.clone(), f(s))).collect()
    };
    family(
        enc,
        "udptee_listener_connections_accepted",
        "Connections a stream listener accepted (those refused over --max-connections included).",
        Counter,
        &each(|s| s.accepted),
    )?;
    family(
        enc,
        "udptee_listener_connections_open",
        "Connections a stream listener holds open now.",
        Gauge,
        &each(|s| s.open),
    )?;
    let mut closed: Vec<(Labels, u64)> = Vec::new();
    for (l, s) in &streams {
        for r in CloseReason::ALL {
            let mut labels = l.clone();
            labels.push(("reason", r.as_str().to_owned()));
            closed.push((labels, s.closed(r)));
        }
    }
    family(
        enc,
        "udptee_listener_connections_closed",
        "Connections a stream listener closed, by reason: eof (the client), refused (over --max-connections, at accept), idle (--idle-timeout), frame_too_long, read_error, stop.",
        Counter,
        &closed,
    )?;
    family(
        enc,
        "udptee_listener_lines",
        "Complete statsd lines read from tcp:// connections.",
        Counter,
        &each(|s| s.lines),
    )?;
    family(
        enc,
        "udptee_listener_lines_too_long",
        "Lines over --max-datagram from tcp:// connections, dropped (the connection goes on).",
        Counter,
        &each(|s| s.lines_too_long),
    )?;
    family(
        enc,
        "udptee_listener_frames",
        "DogStatsD frames read from unix:// connections.",
        Counter,
        &each(|s| s.frames),
    )?;
    family(
        enc,
        "udptee_listener_cut_bytes",
        "Bytes of an unfinished line or frame lost with its connection (a reset, an idle close, a stop).",
        Counter,
        &each(|s| s.cut_bytes),
    )
}
