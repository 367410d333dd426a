//! A stream listener's own counters: its connections and what their bytes held, beside the
//! datagram counters its thread keeps as any receive worker does. Written only by that thread,
//! once per read or connection event. Floor 1.

use std::sync::atomic::AtomicU64;

use super::cell::{add, get};

/// Why a stream listener closed a connection (or refused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client closed it.
    Eof,
    /// Over `--max-connections`: closed at accept, nothing written to it.
    Refused,
    /// Quiet for `--idle-timeout`.
    Idle,
    /// A DogStatsD frame longer than `--max-datagram`: the stream cannot be read further.
    FrameTooLong,
    /// A read failed (a reset, most often).
    ReadError,
    /// udptee stopped.
    Stop,
}

impl CloseReason {
    /// Every reason, in the order of the counters.
    pub const ALL: [Self; 6] = [
        Self::Eof,
        Self::Refused,
        Self::Idle,
        Self::FrameTooLong,
        Self::ReadError,
        Self::Stop,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eof => "eof",
            Self::Refused => "refused",
            Self::Idle => "idle",
            Self::FrameTooLong => "frame_too_long",
            Self::ReadError => "read_error",
            Self::Stop => "stop",
        }
    }
}

/// One stream listener's counters.
#[derive(Debug, Default)]
pub struct StreamCounters {
    accepted: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    lines: AtomicU64,
    lines_too_long: AtomicU64,
    frames: AtomicU64,
    /// Bytes of an unfinished line or frame thrown away with its connection.
    cut_bytes: AtomicU64,
}

/// A copy of a stream listener's counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamSnapshot {
    /// Connections accepted (refused ones included).
    pub accepted: u64,
    /// Connections open now (accepted, less those closed).
    pub open: u64,
    /// Connections closed, by [`CloseReason::ALL`] order.
    pub closed: [u64; CloseReason::ALL.len()],
    /// Complete lines read from TCP connections.
    pub lines: u64,
    /// Lines over `--max-datagram`, dropped (the connection goes on).
    pub lines_too_long: u64,
    /// DogStatsD frames read from Unix stream connections.
    pub frames: u64,
    /// Bytes of an unfinished line or frame lost with their connection (a reset, a stop).
    pub cut_bytes: u64,
}

impl StreamSnapshot {
    /// Connections closed for `reason`.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize]
    }
}

impl StreamCounters {
    /// Zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection accepted.
    pub fn add_accepted(&self) {
        add(&self.accepted, 1);
    }

    /// A connection closed for `reason`, losing `cut_bytes` of an unfinished line or frame.
    pub fn add_closed(&self, reason: CloseReason, cut_bytes: usize) {
        add(&self.closed[reason as usize], 1);
        if cut_bytes > 0 {
            add(&self.cut_bytes, cut_bytes as u64);
        }
    }

    /// What one read held.
    pub fn add_read(&self, lines: u64, too_long: u64, frames: u64) {
        if lines > 0 {
            add(&self.lines, lines);
        }
        if too_long > 0 {
            add(&self.lines_too_long, too_long);
        }
        if frames > 0 {
            add(&self.frames, frames);
        }
    }

    /// A copy for reporting.
    pub fn snapshot(&self) -> StreamSnapshot {
        // Closes first, accepts after: a reader's cut never shows more closed than accepted.
        let closed: [u64; CloseReason::ALL.len()] = std::array::from_fn(|i| get(&self.closed[i]));
        let accepted = get(&self.accepted);
        StreamSnapshot {
            accepted,
            open: accepted.saturating_sub(closed.iter().sum()),
            closed,
            lines: get(&self.lines),
            lines_too_long: get(&self.lines_too_long),
            frames: get(&self.frames),
            cut_bytes: get(&self.cut_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_is_accepted_less_closed() {
        let c = StreamCounters::new();
        for _ in 0..3 {
            c.add_accepted();
        }
        c.add_closed(CloseReason::Idle, 0);
        c.add_closed(CloseReason::ReadError, 7);
        let s = c.snapshot();
        assert_eq!((s.accepted, s.open, s.cut_bytes), (3, 1, 7));
        assert_eq!(s.closed(CloseReason::Idle), 1);
        assert_eq!(
            CloseReason::ALL[CloseReason::ReadError as usize],
            CloseReason::ReadError
        );
    }
}
