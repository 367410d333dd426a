//! The live progress line of long runs: rewritten in place once a second on stderr while a run lasts,
//! and nothing at all when stderr is not a terminal (logs and pipes stay clean).

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A progress line that runs until [`finish`](Self::finish).
#[derive(Debug)]
pub struct ProgressLine {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressLine {
    /// Prints `line(seconds since start)` every second, if stderr is a terminal.
    pub fn start(line: impl Fn(f64) -> String + Send + 'static) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let start = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    if !done.load(Ordering::Relaxed) {
                        eprint!("\r\x1b[2K{}", line(start.elapsed().as_secs_f64()));
                    }
                }
                eprint!("\r\x1b[2K");
            })
        });
        Self { done, thread }
    }

    /// Stops the line and erases it, before the caller prints its result.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The increase of `counter` since the previous call with the same `last`.
pub fn delta(counter: &AtomicU64, last: &AtomicU64) -> u64 {
    let now = counter.load(Ordering::Relaxed);
    now.saturating_sub(last.swap(now, Ordering::Relaxed))
}
