//! The recorder thread ([`Writer`]): takes what the workers copied into its observer ring, filters
//! lines when asked, encodes pcap records and writes each batch with one `write`; a failed write is
//! cut back to the last whole record and counted. [`RecordTotals`] are its counts over every
//! recording since start.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pcap_file::pcap::PcapWriter;

use super::file::Files;
use super::pcap::{RECORD_HEADER, Shared, build_packet, pcap_header, write_record};
use crate::fanout::observe::Observer;
use crate::fanout::ratelimit::RateLimit;
use crate::statsd::filter::{LineCounts, LineFilter, Part};

/// Datagrams the recorder thread takes per write.
pub(crate) const BATCH: usize = 256;
/// Sleep when nothing is queued.
const IDLE: Duration = Duration::from_millis(20);
/// Pause before a new file after a failed write.
const RETRY: Duration = Duration::from_secs(1);
/// How long a stopping recorder waits for workers to move to a table without it.
pub(crate) const STOP_WAIT: Duration = Duration::from_secs(2);

/// Totals over every recording since start, for metrics and the final summary.
#[derive(Debug, Default)]
pub(crate) struct RecordTotals {
    pub(crate) recorded: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) files: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) write_error: AtomicU64,
    pub(crate) queue_full_done: AtomicU64,
    pub(crate) offered_done: AtomicU64,
}

/// The recorder thread.
pub(crate) struct Writer {
    pub(crate) observer: Arc<Observer>,
    pub(crate) totals: Arc<RecordTotals>,
    pub(crate) files: Files,
    pub(crate) opened: Arc<Mutex<Vec<PathBuf>>>,
    pub(crate) filter: Option<LineFilter>,
    pub(crate) stop: Arc<AtomicBool>,
}

impl Writer {
    pub(crate) fn run(&mut self) {
        let buf = Shared::default();
        // Each file's header comes from `Files`; this writer only encodes records into `buf`.
        let mut pcap = match PcapWriter::with_header(buf.clone(), pcap_header()) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "recorder: pcap writer failed; not recording");
                return;
            }
        };
        buf.0.borrow_mut().clear();
        let mut packet = Vec::with_capacity(70_000);
        let (mut out, mut parts) = (Vec::new(), Vec::<Part>::new());
        let mut rng = fastrand::Rng::new();
        let mut errors = RateLimit::new();
        let mut retry_at: Option<Instant> = None;
        let mut stop_by: Option<Instant> = None;
        let mut ends: Vec<usize> = Vec::with_capacity(BATCH);
        let observer = Arc::clone(&self.observer);
        loop {
            let now = Instant::now();
            match retry_at {
                Some(t) if now >= t => self.retry(&mut errors, &mut retry_at),
                None if self.files.due(now) => self.rotate(&mut errors, &mut retry_at),
                _ => {}
            }
            let mut filtered = 0u64;
            ends.clear();
            let n = observer.drain(BATCH, |o| {
                let source = match &self.filter {
                    None => {
                        parts.clear();
                        parts.push(Part {
                            start: 0,
                            end: o.payload.len(),
                            lines: 0,
                            digest: 0,
                        });
                        o.payload
                    }
                    Some(f) => {
                        out.clear();
                        parts.clear();
                        let mut counts = LineCounts::default();
                        f.apply(o.payload, &mut out, &mut parts, &mut counts, &mut rng);
                        if parts.is_empty() {
                            filtered += 1;
                        }
                        &out[..]
                    }
                };
                for p in &parts {
                    if build_packet(&mut packet, o, &source[p.start..p.end]).is_err() {
                        self.totals.write_error.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let pending = buf.0.borrow().len() as u64;
                    if retry_at.is_none()
                        && self
                            .files
                            .would_overflow(pending, RECORD_HEADER + packet.len() as u64)
                    {
                        // What came before goes into this file; this record starts the next one.
                        let bytes = buf.0.take();
                        self.flush(&bytes, &ends, &mut errors, &mut retry_at);
                        ends.clear();
                        self.rotate(&mut errors, &mut retry_at);
                    }
                    if write_record(&mut pcap, o.rx_nanos, &packet).is_err() {
                        self.totals.write_error.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    ends.push(buf.0.borrow().len());
                }
            });
            let bytes = buf.0.take();
            self.flush(&bytes, &ends, &mut errors, &mut retry_at);
            self.totals.filtered.fetch_add(filtered, Ordering::Relaxed);
            if n == 0 {
                if self.stop.load(Ordering::Relaxed) {
                    let by = *stop_by.get_or_insert_with(|| now + STOP_WAIT);
                    // Done once no worker holds a table with this ring (only ours, the local clone
                    // and the session's references are left) and the ring is empty.
                    if (Arc::strong_count(&observer) <= 3 || now >= by) && observer.is_empty() {
                        break;
                    }
                }
                std::thread::sleep(IDLE);
            }
        }
        self.files.close();
    }

    /// Writes one batch's records (`ends`: where each ends in `bytes`); on a failure keeps the whole
    /// records that made it, cuts the file back to the last of them and counts the rest lost.
    fn flush(
        &mut self,
        bytes: &[u8],
        ends: &[usize],
        errors: &mut RateLimit,
        retry_at: &mut Option<Instant>,
    ) {
        let records = ends.len() as u64;
        if records == 0 {
            return;
        }
        if retry_at.is_some() {
            self.totals
                .write_error
                .fetch_add(records, Ordering::Relaxed);
            return;
        }
        let (written, result) = self.files.write(bytes, ends);
        self.totals
            .recorded
            .fetch_add(written.records, Ordering::Relaxed);
        self.totals
            .bytes
            .fetch_add(written.bytes, Ordering::Relaxed);
        if let Err(e) = result {
            self.totals
                .write_error
                .fetch_add(records - written.records, Ordering::Relaxed);
            if let Some(count) = errors.hit(1) {
                tracing::warn!(path = %self.files.current_path().display(), error = %e, count,
                    "recorder: write failed; datagrams counted write_error, the file is cut back to its last whole record; retrying in 1s");
            }
            *retry_at = Some(Instant::now() + RETRY);
        }
    }

    /// After a failed write: the next file when rotating, else the same file again.
    fn retry(&mut self, errors: &mut RateLimit, retry_at: &mut Option<Instant>) {
        if self.files.rotates() {
            self.rotate(errors, retry_at);
        } else {
            *retry_at = None;
        }
    }

    /// Opens the next file (deleting beyond `keep`); on failure retries a second later.
    fn rotate(&mut self, errors: &mut RateLimit, retry_at: &mut Option<Instant>) {
        match self.files.next() {
            Ok(header) => {
                *retry_at = None;
                self.totals.files.fetch_add(1, Ordering::Relaxed);
                self.totals.bytes.fetch_add(header, Ordering::Relaxed);
                let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
                opened.push(self.files.current_path().to_path_buf());
                opened.retain(|p| p.exists());
            }
            Err(e) => {
                if let Some(count) = errors.hit(1) {
                    tracing::warn!(error = %e, count, "recorder: opening the next file failed; retrying");
                }
                *retry_at = Some(Instant::now() + RETRY);
            }
        }
    }
}
