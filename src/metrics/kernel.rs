//! The kernel fast path's counters as plain values: what the program did in all, and per target.
//! The registry reads the program's per-CPU maps and folds them in here; the counters know nothing
//! of BPF. Floor 1: imports nothing.

/// The kernel path's own counters, for the stats line, `/metrics` and the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelSnapshot {
    /// Datagrams the program served.
    pub handled: u64,
    /// Of those, datagrams whose original became the last copy (user space never received them).
    pub consumed: u64,
    /// Payload bytes of the `consumed` datagrams.
    pub consumed_bytes: u64,
    /// Datagrams passed up unhandled, by reason (`fastpath::PASS_REASONS`).
    pub passed: Vec<(&'static str, u64)>,
    /// Marked datagrams whose generation the book no longer knew.
    pub stale_marks: u64,
    /// Where the program is attached.
    pub interfaces: Vec<String>,
    /// How it is attached: `tcx` or `netlink`.
    pub attach: &'static str,
    /// Why the kernel path copies nothing any more, when it was turned off while running.
    pub off: Option<&'static str>,
}

/// One target's counters in the program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelTargetCounts {
    /// Copies delivered into the stack.
    pub copies: u64,
    /// Payload bytes of those copies.
    pub bytes: u64,
    /// Clones refused because the receive backlog was full.
    pub backlog: u64,
    /// Clones refused for another reason.
    pub error: u64,
}
