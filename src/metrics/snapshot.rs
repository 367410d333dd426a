//! Counters at a point in time: each worker's and each target's ([`WorkerSnapshot`],
//! [`TargetSnapshot`]) and the whole forwarder's ([`Snapshot`]), with the accounting they satisfy
//! and the final summary's text. Plain values: readers take them, nothing on the hot path does.

use std::fmt;

use super::kernel::KernelSnapshot;
use super::reason::{DropReason, LineOutcome, SendErrorKind};

/// One worker's counters at a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerSnapshot {
    /// Datagrams received.
    pub received: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Datagrams over `--max-datagram`.
    pub truncated: u64,
    /// Datagrams received with the pool dry.
    pub pool_exhausted: u64,
    /// Datagrams from senders outside `--allow`.
    pub source_denied: u64,
    /// Datagrams udptee itself sent to its own listener (a loop), forwarded to no one.
    #[serde(default)]
    pub looped: u64,
    /// Kernel drops on this worker's socket.
    pub rcvbuf_overflow: u64,
    /// Failed receive calls.
    pub recv_errors: u64,
    /// Times the io_uring ran out of provided buffers (receive pressure; 0 with recvmmsg).
    pub ring_empty: u64,
    /// Datagrams that carried the kernel fast path's handled mark.
    #[serde(default)]
    pub kernel_marked: u64,
}

/// Line counts from a list of any length: an older udptee's shorter one padded with zeros.
fn lines_padded<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<[u64; LineOutcome::ALL.len()], D::Error> {
    let v: Vec<u64> = serde::Deserialize::deserialize(d)?;
    let mut out = [0u64; LineOutcome::ALL.len()];
    for (o, x) in out.iter_mut().zip(v) {
        *o = x;
    }
    Ok(out)
}

/// One target's counters at a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetSnapshot {
    /// Datagrams received while the target was in the set (since it joined).
    pub offered: u64,
    /// Copies sent.
    pub forwarded: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Copies refused by the kernel, by [`SendErrorKind`] (in `ALL` order).
    pub send_errors: [u64; SendErrorKind::ALL.len()],
    /// Copies abandoned at shutdown or removal.
    pub drain_timeout: u64,
    /// Copies lost with a TCP target's connection (written, not acknowledged when it was lost).
    #[serde(default)]
    pub connection_lost: u64,
    /// Copies over the target's `max-rate`.
    #[serde(default)]
    pub rate_limited: u64,
    /// Datagrams whose every line was of a new series over `max-series` (dropped).
    #[serde(default)]
    pub series_limited: u64,
    /// Copies dropped because the queue was full.
    pub queue_full: u64,
    /// Datagrams over `--max-datagram` offered to this target.
    pub truncated: u64,
    /// Datagrams received with the pool dry while this target was in the set.
    pub pool_exhausted: u64,
    /// Datagrams not sent because the target was disabled.
    pub disabled: u64,
    /// Datagrams from senders outside `--allow`.
    pub source_denied: u64,
    /// A group's datagrams that found no member in its ring (every member down).
    pub no_member: u64,
    /// Datagrams all of whose lines the line settings removed (not sent, by design).
    pub filtered: u64,
    /// Of `forwarded`, the copies the kernel fast path made.
    pub kernel_forwarded: u64,
    /// Kernel fast path clones refused by a full receive backlog.
    pub backlog_full: u64,
    /// Kernel fast path clones that failed otherwise.
    pub clone_error: u64,
    /// Lines by [`LineOutcome`] (in `ALL` order); all zero for a passthrough target. Read from
    /// an older udptee (a takeover's final counters) with fewer outcomes, the rest are zero.
    #[serde(deserialize_with = "lines_padded")]
    pub lines: [u64; LineOutcome::ALL.len()],
    /// Parity digest: the wrapping sum of the hashes of every line sent.
    pub digest: u64,
    /// Copies the target's own socket dropped after udptee handed them to the kernel (its receive
    /// buffer was full), when that socket is on this host; `None` for remote targets.
    pub receiver_drops: Option<u64>,
    /// Whether the target can receive: for a target on this host, a socket is bound at its address;
    /// for a remote one, its last sends met no error. `None` until first looked at.
    pub up: Option<bool>,
}

impl TargetSnapshot {
    /// Adds another thread's counters for the same target.
    pub fn merge(&mut self, o: &Self) {
        self.offered += o.offered;
        self.forwarded += o.forwarded;
        self.bytes += o.bytes;
        for (a, b) in self.send_errors.iter_mut().zip(o.send_errors) {
            *a += b;
        }
        self.drain_timeout += o.drain_timeout;
        self.connection_lost += o.connection_lost;
        self.rate_limited += o.rate_limited;
        self.series_limited += o.series_limited;
        self.queue_full += o.queue_full;
        self.truncated += o.truncated;
        self.pool_exhausted += o.pool_exhausted;
        self.disabled += o.disabled;
        self.source_denied += o.source_denied;
        self.no_member += o.no_member;
        self.filtered += o.filtered;
        self.kernel_forwarded += o.kernel_forwarded;
        self.backlog_full += o.backlog_full;
        self.clone_error += o.clone_error;
        for (a, b) in self.lines.iter_mut().zip(o.lines) {
            *a += b;
        }
        self.digest = self.digest.wrapping_add(o.digest);
    }

    /// What happened between `before` (an earlier snapshot of the same target) and this one.
    pub fn since(&self, before: &Self) -> Self {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            offered: d(self.offered, before.offered),
            forwarded: d(self.forwarded, before.forwarded),
            bytes: d(self.bytes, before.bytes),
            send_errors: std::array::from_fn(|i| d(self.send_errors[i], before.send_errors[i])),
            drain_timeout: d(self.drain_timeout, before.drain_timeout),
            connection_lost: d(self.connection_lost, before.connection_lost),
            rate_limited: d(self.rate_limited, before.rate_limited),
            series_limited: d(self.series_limited, before.series_limited),
            queue_full: d(self.queue_full, before.queue_full),
            truncated: d(self.truncated, before.truncated),
            pool_exhausted: d(self.pool_exhausted, before.pool_exhausted),
            disabled: d(self.disabled, before.disabled),
            source_denied: d(self.source_denied, before.source_denied),
            no_member: d(self.no_member, before.no_member),
            filtered: d(self.filtered, before.filtered),
            kernel_forwarded: d(self.kernel_forwarded, before.kernel_forwarded),
            backlog_full: d(self.backlog_full, before.backlog_full),
            clone_error: d(self.clone_error, before.clone_error),
            lines: std::array::from_fn(|i| d(self.lines[i], before.lines[i])),
            digest: self.digest.wrapping_sub(before.digest),
            receiver_drops: self
                .receiver_drops
                .map(|r| d(r, before.receiver_drops.unwrap_or(0))),
            up: self.up,
        }
    }

    /// Lines with `outcome`.
    pub fn lines(&self, outcome: LineOutcome) -> u64 {
        self.lines[outcome as usize]
    }

    /// All send errors together.
    pub fn send_errors_total(&self) -> u64 {
        self.send_errors.iter().sum()
    }

    /// Copies dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::QueueFull => self.queue_full,
            DropReason::SendError => self.send_errors_total(),
            DropReason::Truncated => self.truncated,
            DropReason::PoolExhausted => self.pool_exhausted,
            DropReason::DrainTimeout => self.drain_timeout,
            DropReason::Disabled => self.disabled,
            DropReason::SourceDenied => self.source_denied,
            DropReason::NoMember => self.no_member,
            DropReason::BacklogFull => self.backlog_full,
            DropReason::CloneError => self.clone_error,
            DropReason::ConnectionLost => self.connection_lost,
            DropReason::RateLimited => self.rate_limited,
            DropReason::SeriesLimited => self.series_limited,
            DropReason::RcvbufOverflow => 0,
        }
    }

    /// All dropped copies (reasons in [`DropReason::PER_TARGET`]).
    pub fn dropped_total(&self) -> u64 {
        DropReason::PER_TARGET
            .iter()
            .map(|&r| self.dropped(r))
            .sum()
    }

    /// Copies offered but neither forwarded nor dropped yet: queued or in flight while running, and
    /// zero once the forwarder has stopped. Never negative (see [`TargetCounterSet::snapshot`](super::counters::TargetCounterSet::snapshot)).
    pub fn queued(&self) -> u64 {
        self.offered
            .saturating_sub(self.forwarded)
            .saturating_sub(self.dropped_total())
            .saturating_sub(self.filtered)
    }
}

/// Every counter of the forwarder at a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per worker.
    pub workers: Vec<WorkerSnapshot>,
    /// Per target: the current set in order, then removed targets.
    pub targets: Vec<TargetSnapshot>,
    /// Target names, parallel to `targets`.
    pub target_names: Vec<String>,
    /// The kernel fast path's own counters, when it is loaded.
    pub kernel: Option<KernelSnapshot>,
    /// Per listener: its name, its workers' totals and, for a stream listener, its connections.
    pub listeners: Vec<ListenerSnapshot>,
}

/// One listener's share of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerSnapshot {
    /// Its address with its scheme (`127.0.0.1:8125`, `unixgram:///run/dsd.sock`, `tcp://...`).
    pub name: String,
    /// `udp`, `unixgram`, `tcp` or `unix`.
    pub kind: &'static str,
    /// The indexes in [`Snapshot::workers`] of its receive threads.
    pub workers: std::ops::Range<usize>,
    /// A stream listener's connections and lines.
    pub stream: Option<super::stream::StreamSnapshot>,
}

impl Snapshot {
    fn sum(&self, f: impl Fn(&WorkerSnapshot) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }

    /// Datagrams received: over all workers, plus those the kernel fast path served whose original
    /// never reached user space (it became the last copy).
    pub fn received(&self) -> u64 {
        self.sum(|w| w.received) + self.kernel.as_ref().map_or(0, |k| k.consumed)
    }

    /// Bytes received: over all workers, plus the payloads of the datagrams the kernel fast path
    /// served whose original never reached user space.
    pub fn received_bytes(&self) -> u64 {
        self.sum(|w| w.bytes) + self.kernel.as_ref().map_or(0, |k| k.consumed_bytes)
    }

    /// Datagrams over `--max-datagram`, all workers.
    pub fn truncated(&self) -> u64 {
        self.sum(|w| w.truncated)
    }

    /// Datagrams received with the pool dry, all workers.
    pub fn pool_exhausted(&self) -> u64 {
        self.sum(|w| w.pool_exhausted)
    }

    /// Kernel receive-buffer drops over all worker sockets.
    pub fn rcvbuf_overflow(&self) -> u64 {
        self.sum(|w| w.rcvbuf_overflow)
    }

    /// Datagrams received by one listener's threads (for a stream listener: datagrams packed).
    pub fn listener_received(&self, l: &ListenerSnapshot) -> u64 {
        self.listener_sum(l, |w| w.received)
    }

    /// Bytes received by one listener's threads.
    pub fn listener_bytes(&self, l: &ListenerSnapshot) -> u64 {
        self.listener_sum(l, |w| w.bytes)
    }

    fn listener_sum(&self, l: &ListenerSnapshot, f: impl Fn(&WorkerSnapshot) -> u64) -> u64 {
        let workers = self.workers.get(l.workers.clone()).unwrap_or_default();
        workers.iter().map(f).sum()
    }

    /// Index of the target named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.target_names.iter().position(|n| n == name)
    }

    /// Copies of datagrams for target `t` dropped for `reason`.
    pub fn dropped(&self, t: usize, reason: DropReason) -> u64 {
        self.targets[t].dropped(reason)
    }

    /// All dropped copies for target `t` (reasons in [`DropReason::PER_TARGET`]).
    pub fn dropped_total(&self, t: usize) -> u64 {
        self.targets[t].dropped_total()
    }

    /// Copies offered to target `t` but neither forwarded nor dropped yet: queued or in flight while
    /// running, zero once stopped; negative only if the books were broken.
    pub fn unaccounted(&self, t: usize) -> i128 {
        let s = &self.targets[t];
        i128::from(s.offered)
            - i128::from(s.forwarded)
            - i128::from(s.dropped_total())
            - i128::from(s.filtered)
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "received {} datagrams ({} bytes); truncated {}; pool_exhausted {}; source_denied {}; kernel rcvbuf_overflow {} (never received)",
            self.received(),
            self.received_bytes(),
            self.truncated(),
            self.pool_exhausted(),
            self.sum(|w| w.source_denied),
            self.rcvbuf_overflow()
        )?;
        // With several listeners, each one's share, and a stream listener's connections.
        for l in self.listeners.iter().filter(|_| self.listeners.len() > 1) {
            write!(
                f,
                "listener {} ({}): received {} datagrams ({} bytes)",
                l.name,
                l.kind,
                self.listener_received(l),
                self.listener_bytes(l)
            )?;
            if let Some(s) = &l.stream {
                let closed: Vec<String> = super::stream::CloseReason::ALL
                    .iter()
                    .map(|r| format!("{} {}", r.as_str(), s.closed(*r)))
                    .collect();
                write!(
                    f,
                    "; connections accepted {}, open {}, closed {}; lines {}, lines_too_long {}; frames {}; cut_bytes {}",
                    s.accepted,
                    s.open,
                    closed.join(", "),
                    s.lines,
                    s.lines_too_long,
                    s.frames,
                    s.cut_bytes
                )?;
            }
            writeln!(f)?;
        }
        let looped = self.sum(|w| w.looped);
        if looped > 0 {
            writeln!(
                f,
                "looped {looped} (sent by udptee itself to its own listener: a target is a link to it; counted source_denied at every target)"
            )?;
        }
        if let Some(k) = &self.kernel {
            let passed: Vec<String> = k.passed.iter().map(|(r, n)| format!("{r} {n}")).collect();
            writeln!(
                f,
                "kernel fast path ({} on {}): handled {} ({} never reached user space); passed up unhandled: {}",
                k.attach,
                k.interfaces.join(","),
                k.handled,
                k.consumed,
                passed.join(", ")
            )?;
            if let Some(off) = k.off {
                writeln!(f, "kernel fast path turned off while running: {off}")?;
            }
        }
        for (t, s) in self.targets.iter().enumerate() {
            write!(
                f,
                "target {}: offered {}, forwarded {} ({} bytes); dropped queue_full {}, send_error {}",
                self.target_names.get(t).map_or("?", String::as_str),
                s.offered,
                s.forwarded,
                s.bytes,
                s.queue_full,
                s.send_errors_total()
            )?;
            let kinds: Vec<String> = SendErrorKind::ALL
                .iter()
                .zip(s.send_errors)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{}={n}", k.as_str()))
                .collect();
            if !kinds.is_empty() {
                write!(f, " ({})", kinds.join(" "))?;
            }
            // Every reason that is not zero, so that the line adds up on its own.
            for (name, n) in [
                ("truncated", s.truncated),
                ("pool_exhausted", s.pool_exhausted),
                ("source_denied", s.source_denied),
                ("no_member", s.no_member),
            ] {
                if n > 0 {
                    write!(f, ", {name} {n}")?;
                }
            }
            if s.disabled > 0 {
                write!(f, ", disabled {}", s.disabled)?;
            }
            if s.kernel_forwarded > 0 || s.backlog_full > 0 || s.clone_error > 0 {
                write!(
                    f,
                    ", backlog_full {}, clone_error {} (kernel path: {} of the forwarded)",
                    s.backlog_full, s.clone_error, s.kernel_forwarded
                )?;
            }
            if s.connection_lost > 0 {
                write!(f, ", connection_lost {}", s.connection_lost)?;
            }
            if s.rate_limited > 0 {
                write!(f, ", rate_limited {}", s.rate_limited)?;
            }
            if s.series_limited > 0 {
                write!(f, ", series_limited {}", s.series_limited)?;
            }
            write!(
                f,
                ", drain_timeout {}; unaccounted {}",
                s.drain_timeout,
                self.unaccounted(t)
            )?;
            if s.filtered > 0 || s.lines(LineOutcome::Offered) > 0 {
                write!(f, "; filtered {} (every line removed)", s.filtered)?;
                let lines: Vec<String> = LineOutcome::ALL
                    .iter()
                    .map(|o| format!("{} {}", o.as_str(), s.lines(*o)))
                    .collect();
                write!(f, "; lines {}", lines.join(", "))?;
            }
            if let Some(d) = s.receiver_drops {
                write!(f, "; receiver_drops {d} (forwarded, lost at the receiver)")?;
            }
            if s.up == Some(false) {
                write!(f, "; receiver down")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targets_final_line_adds_up_on_its_own() {
        let t = TargetSnapshot {
            offered: 10,
            forwarded: 4,
            queue_full: 1,
            truncated: 2,
            pool_exhausted: 1,
            source_denied: 1,
            disabled: 1,
            ..TargetSnapshot::default()
        };
        let snap = Snapshot {
            targets: vec![t],
            target_names: vec!["a".into()],
            ..Snapshot::default()
        };
        let text = snap.to_string();
        let line = text.lines().find(|l| l.starts_with("target a:")).unwrap();
        // Every number after "forwarded N (B bytes)" is a drop; with forwarded they make offered.
        let (_, drops) = line.split_once("bytes);").unwrap();
        let dropped: u64 = drops
            .split([',', ';', ' '])
            .filter_map(|w| w.parse::<u64>().ok())
            .sum();
        assert_eq!(4 + dropped, 10, "{line}");
        assert!(
            line.contains("truncated 2") && line.contains("pool_exhausted 1"),
            "{line}"
        );
    }
}
