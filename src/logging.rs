//! Logging that can neither panic nor block a data thread.
//!
//! Log lines are handed to a bounded channel (tracing-appender's lossy non-blocking writer) and
//! written to stderr by one logging thread; when it cannot keep up (a stalled log shipper), lines are
//! dropped and counted, never waited for. The stderr writer itself swallows write errors (a closed
//! pipe, a full disk) and counts them, where `eprintln!` would panic.
//!
//! Floor 1 (plain data and leaves): imports nothing of udptee's.

use std::io::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Failed writes to stderr (the line is lost).
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Lines the logging thread could not take in time (the channel was full).
static DROPPED: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// Lines dropped because of a failed write or a full channel.
pub fn lines_dropped() -> u64 {
    WRITE_ERRORS.load(Ordering::Relaxed) + DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// stderr that reports success whatever happens, counting failures in [`lines_dropped`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if io::stderr().write_all(buf).is_err() {
            WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Lines buffered for the logging thread before new ones are dropped.
pub const BUFFERED_LINES: usize = 16_384;

/// A non-blocking, lossy writer over [`LossyStderr`]; keep the guard until exit (dropping it flushes).
pub fn non_blocking() -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("udptee-log")
        .finish(LossyStderr);
    let _ = DROPPED.set(writer.error_counter());
    (writer, guard)
}

/// Writes `text` straight to stderr, ignoring failures (for the last words before `exit`).
pub fn write_direct(text: &str) {
    let _ = LossyStderr.write(text.as_bytes());
}
