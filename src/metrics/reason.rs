//! The names udptee counts under: why a copy was not forwarded ([`DropReason`]), why the kernel
//! refused a send ([`SendErrorKind`]), and what became of a statsd line ([`LineOutcome`]). Each is
//! the Prometheus label and the log field. Floor 1: imports nothing.

use std::io;

/// Why a datagram (or one target's copy of it) was not forwarded. Used as the metrics label and log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The target's queue was full: the target is slower than the traffic.
    QueueFull,
    /// `sendmmsg` refused this copy (ECONNREFUSED, ENOBUFS, ...); see [`SendErrorKind`].
    SendError,
    /// Larger than `--max-datagram`: forwarded to no one, never cut.
    Truncated,
    /// No free pool slot; cannot happen with the pool sized by `Config::pool_slots`.
    PoolExhausted,
    /// Still queued when `--drain-timeout` expired at shutdown.
    DrainTimeout,
    /// The target is disabled (`enabled = false`): kept in the set, nothing sent.
    Disabled,
    /// The sender's address is outside `--allow`: forwarded to no one.
    SourceDenied,
    /// A group with no member in its ring (every member down): its lines went to no one.
    NoMember,
    /// Kernel fast path: the clone for this target was refused because the receive backlog
    /// (`net.core.netdev_max_backlog`) was full, as under bursts.
    BacklogFull,
    /// Kernel fast path: the clone or its rewrite failed for another reason.
    CloneError,
    /// A TCP target's connection was lost (a reset, a keepalive timeout) with this copy written
    /// into its send queue and not yet acknowledged: estimated from `SIOCOUTQ`, never resent.
    ConnectionLost,
    /// Over the target's `max-rate`: dropped so the receiver is not sent more than it can take.
    RateLimited,
    /// Every line of a new series over the target's `max-series` (with `cardinality = "drop"`).
    SeriesLimited,
    /// Dropped by the kernel before udptee saw it (socket receive buffer full, SO_RXQ_OVFL). Not part of
    /// `received`: udptee never had it.
    RcvbufOverflow,
}

impl DropReason {
    /// Reasons that count against a target in the accounting invariant.
    pub const PER_TARGET: [Self; 13] = [
        Self::QueueFull,
        Self::SendError,
        Self::Truncated,
        Self::PoolExhausted,
        Self::DrainTimeout,
        Self::Disabled,
        Self::SourceDenied,
        Self::NoMember,
        Self::BacklogFull,
        Self::CloneError,
        Self::ConnectionLost,
        Self::RateLimited,
        Self::SeriesLimited,
    ];

    /// The label value (`reason="queue_full"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::SendError => "send_error",
            Self::Truncated => "truncated",
            Self::PoolExhausted => "pool_exhausted",
            Self::DrainTimeout => "drain_timeout",
            Self::Disabled => "disabled",
            Self::SourceDenied => "source_denied",
            Self::NoMember => "no_member",
            Self::BacklogFull => "backlog_full",
            Self::CloneError => "clone_error",
            Self::ConnectionLost => "connection_lost",
            Self::RateLimited => "rate_limited",
            Self::SeriesLimited => "series_limited",
            Self::RcvbufOverflow => "rcvbuf_overflow",
        }
    }
}

/// The errno classes a target's send errors are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendErrorKind {
    /// ECONNREFUSED: an ICMP port unreachable came back; nothing listens on the target port.
    ConnRefused,
    /// ENOBUFS/ENOMEM: the local device queue or socket memory is exhausted.
    NoBuffers,
    /// EMSGSIZE: larger than the path allows.
    MessageSize,
    /// EHOSTUNREACH/ENETUNREACH/EPERM (route or firewall).
    Unreachable,
    /// A copy that could not be sent with its sender's origin (`preserve-source`): the sender's
    /// pid was gone (ESRCH), or its address of another family than the target's (EAFNOSUPPORT).
    OriginLost,
    /// Anything else.
    Other,
}

impl SendErrorKind {
    /// All kinds, in counter order.
    pub const ALL: [Self; 6] = [
        Self::ConnRefused,
        Self::NoBuffers,
        Self::MessageSize,
        Self::Unreachable,
        Self::OriginLost,
        Self::Other,
    ];

    /// Classifies an error from `sendmmsg`.
    pub fn of(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => Self::ConnRefused,
            Some(libc::ENOBUFS | libc::ENOMEM) => Self::NoBuffers,
            Some(libc::EMSGSIZE) => Self::MessageSize,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EPERM | libc::EACCES) => {
                Self::Unreachable
            }
            Some(libc::ESRCH | libc::EAFNOSUPPORT) => Self::OriginLost,
            _ => Self::Other,
        }
    }

    /// The label value (`error="conn_refused"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ConnRefused => "conn_refused",
            Self::NoBuffers => "no_buffers",
            Self::MessageSize => "message_size",
            Self::Unreachable => "unreachable",
            Self::OriginLost => "origin_lost",
            Self::Other => "other",
        }
    }
}

/// What became of a line, for targets whose sender reads lines (line settings or parity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOutcome {
    /// Lines in the datagrams the sender took (before its line settings).
    Offered,
    /// Lines sent.
    Sent,
    /// Removed by include/exclude/tags.
    Filtered,
    /// Removed by `sample`.
    SampledOut,
    /// Not statsd and dropped (`malformed = "drop"`).
    MalformedDropped,
    /// Kept, but in a datagram that could not be sent (send_error, drain_timeout).
    Dropped,
    /// Not statsd (forwarded or dropped): a tally beside the others, not an outcome.
    Malformed,
    /// Over the target's `max-rate` in lines.
    RateLimited,
    /// Of a new series over the target's `max-series`, dropped (`cardinality = "drop"`).
    SeriesLimited,
    /// Of a new series over `max-series`, sent without its tags (`cardinality = "strip-tags"`):
    /// a tally beside the outcomes, as `malformed` is.
    TagsStripped,
}

impl LineOutcome {
    /// All, in counter order.
    pub const ALL: [Self; 10] = [
        Self::Offered,
        Self::Sent,
        Self::Filtered,
        Self::SampledOut,
        Self::MalformedDropped,
        Self::Dropped,
        Self::Malformed,
        Self::RateLimited,
        Self::SeriesLimited,
        Self::TagsStripped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offered => "offered",
            Self::Sent => "sent",
            Self::Filtered => "filtered",
            Self::SampledOut => "sampled_out",
            Self::MalformedDropped => "malformed_dropped",
            Self::Dropped => "dropped",
            Self::Malformed => "malformed",
            Self::RateLimited => "rate_limited",
            Self::SeriesLimited => "series_limited",
            Self::TagsStripped => "tags_stripped",
        }
    }
}
