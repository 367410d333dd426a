//! The forwarder's data threads: spawned with a name and an optional CPU, counted while they live,
//! and timed with the kernel's per-thread CPU clock (nanoseconds, not scheduler ticks), including
//! threads that have already exited. A data thread that dies by panic is recorded, so readiness fails
//! and the supervisor exits non-zero instead of leaving a half-alive process.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Book-keeping over every data thread.
#[derive(Debug, Default)]
pub struct Threads {
    /// Live threads: (kernel tid, name).
    live: Mutex<Vec<(i32, String)>>,
    /// CPU time of threads that have exited, ns.
    exited_nanos: AtomicU64,
    /// Data threads that died by panic (their names).
    died: Mutex<Vec<String>>,
}

/// Runs on the thread's way out, panics included.
struct Exit<'a> {
    threads: &'a Threads,
    tid: i32,
}

impl Drop for Exit<'_> {
    fn drop(&mut self) {
        self.threads
            .exited_nanos
            .fetch_add(thread_cpu_nanos(), Ordering::Relaxed);
        let mut live = self.threads.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = live.iter().position(|(t, _)| *t == self.tid) {
            let (_, name) = live.swap_remove(i);
            if std::thread::panicking() {
                self.threads
                    .died
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(name);
            }
        }
    }
}

/// The calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID), ns.
fn thread_cpu_nanos() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

impl Threads {
    /// Starts `body` on a thread named `name`, pinned to `cpu` when given.
    pub(crate) fn spawn(
        self: &std::sync::Arc<Self>,
        name: String,
        cpu: Option<usize>,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let me = std::sync::Arc::clone(self);
        let thread_name = name.clone();
        std::thread::Builder::new().name(name).spawn(move || {
            let tid = crate::net::sys::gettid();
            me.live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((tid, thread_name.clone()));
            let _exit = Exit { threads: &me, tid };
            if let Some(id) = cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                    tracing::warn!(thread = %thread_name, cpu = id, "could not pin thread to CPU; running unpinned");
                }
            }
            body();
        })
    }

    /// Names of data threads that died by panic.
    pub fn died(&self) -> Vec<String> {
        self.died.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// CPU time of every data thread so far (live ones from /proc/self/task/TID/schedstat, in ns).
    pub fn cpu_time(&self) -> Duration {
        let live: Vec<i32> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, _)| *t)
            .collect();
        let nanos: u64 = live
            .iter()
            .filter_map(|tid| crate::metrics::proc::thread_cpu_nanos(*tid))
            .sum();
        Duration::from_nanos(nanos + self.exited_nanos.load(Ordering::Relaxed))
    }
}
