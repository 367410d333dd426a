//! The recorder: every received datagram into pcap files that tcpdump, Wireshark and `udptee replay`
//! read, on its own thread, never in the way of forwarding.
//!
//! Workers copy each batch into the recorder's observer ring (bounded by `--record-queue-bytes`);
//! what does not fit is counted `queue_full` and the worker moves on. The recorder thread takes up to
//! 256 datagrams at a time, optionally keeps only the lines a name filter passes, wraps each in
//! synthetic IPv4 or IPv6 and UDP headers with the original source and destination (etherparse),
//! appends it as a pcap record with the kernel receive time in nanoseconds (pcap-file, link type
//! RAW) and writes the batch with one `write`. A write that fails (a full disk) is undone by
//! truncating the file back to its last whole record, and its datagrams are counted `write_error`;
//! the next attempt is a new file a second later when rotating, so the file on disk always reads
//! back whole. Rotation by size and by age, keeping the newest `--record-keep` files.
//!
//! Floor 3 (services over the data path): plugs in through `fanout::ObserverHub`; the data path
//! never starts it.

mod file;
mod pcap;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use self::file::{Files, OpenError};
use self::writer::{RecordTotals, STOP_WAIT, Writer};
use crate::fanout::ObserverHub;
use crate::fanout::observe::Observer;
use crate::statsd::filter::LineFilter;

pub use crate::config::settings::{
    DEFAULT_RECORD_QUEUE_BYTES as DEFAULT_QUEUE_BYTES, MIN_RECORD_FILE_BYTES as MIN_FILE_BYTES,
    MIN_RECORD_ROTATE as MIN_ROTATE, RecordSettings,
};
/// Beyond [`STOP_WAIT`], how long a stop waits for the thread's last write.
const STOP_JOIN: Duration = Duration::from_secs(3);

/// Why a recording could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The settings are invalid (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// Already recording, or not recording (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The file could not be created, or udptee is stopping (HTTP 503 / exit 1).
    #[error("{0}")]
    Unavailable(String),
}

/// A copy of the totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordCounts {
    /// Datagrams the workers offered the recorder.
    pub offered: u64,
    /// Datagrams written to a file (one per received datagram, or its filtered lines).
    pub recorded: u64,
    /// Bytes written to files, pcap headers included.
    pub bytes: u64,
    /// Files opened.
    pub files: u64,
    /// Datagrams left with no line by the name filter.
    pub filtered: u64,
    /// Datagrams the recorder fell behind on (`--record-queue-bytes` full).
    pub queue_full: u64,
    /// Datagrams lost to failed writes (a full disk).
    pub write_error: u64,
}

impl RecordCounts {
    /// Datagrams queued for the recorder and not yet written or dropped.
    pub fn pending(&self) -> u64 {
        self.offered
            .saturating_sub(self.recorded + self.filtered + self.queue_full + self.write_error)
    }
}

/// One running recording.
struct Session {
    settings: RecordSettings,
    observer: Arc<Observer>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    /// Disconnected when the thread ends.
    done: std::sync::mpsc::Receiver<()>,
    files: Arc<Mutex<Vec<PathBuf>>>,
}

/// The recorder of one forwarder: at most one recording at a time.
pub struct Recorder {
    /// Where the recording's ring is published (and timestamps turned on at its first start).
    hub: ObserverHub,
    totals: Arc<RecordTotals>,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

/// What `GET /record` and the stop verb report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordStatus {
    /// A recording is running.
    pub recording: bool,
    /// Its settings.
    pub settings: Option<RecordSettings>,
    /// The files it wrote (current last).
    pub files: Vec<PathBuf>,
    /// Totals since start.
    pub totals: RecordCounts,
}

impl Recorder {
    /// A recorder publishing its ring through `hub`.
    pub(crate) fn new(hub: ObserverHub) -> Self {
        Self {
            hub,
            totals: Arc::new(RecordTotals::default()),
            session: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Totals since start, the running recording's queue included.
    pub fn counts(&self) -> RecordCounts {
        let t = &self.totals;
        let (mut offered, mut queue_full) = (
            t.offered_done.load(Ordering::Relaxed),
            t.queue_full_done.load(Ordering::Relaxed),
        );
        if let Some(s) = self.lock().as_ref() {
            offered += s.observer.offered();
            queue_full += s.observer.dropped();
        }
        RecordCounts {
            offered,
            recorded: t.recorded.load(Ordering::Relaxed),
            bytes: t.bytes.load(Ordering::Relaxed),
            files: t.files.load(Ordering::Relaxed),
            filtered: t.filtered.load(Ordering::Relaxed),
            queue_full,
            write_error: t.write_error.load(Ordering::Relaxed),
        }
    }

    /// True while a recording runs.
    pub fn active(&self) -> bool {
        self.lock().is_some()
    }

    /// The current state.
    pub fn status(&self) -> RecordStatus {
        let (settings, files) = match self.lock().as_ref() {
            Some(s) => (
                Some(s.settings.clone()),
                s.files.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            ),
            None => (None, Vec::new()),
        };
        RecordStatus {
            recording: settings.is_some(),
            settings,
            files,
            totals: self.counts(),
        }
    }

    /// Starts recording with `settings`: the first file is created before this returns, so a path
    /// that cannot be written is this call's error.
    pub fn start(&self, settings: RecordSettings) -> Result<RecordStatus, RecordError> {
        settings.validate().map_err(RecordError::Invalid)?;
        let filter = if settings.include.is_empty() && settings.exclude.is_empty() {
            None
        } else {
            Some(
                LineFilter::new(&settings.line_settings(), self.hub.max_datagram())
                    .map_err(RecordError::Invalid)?,
            )
        };
        let mut session = self.lock();
        if let Some(s) = session.as_ref() {
            return Err(RecordError::Conflict(format!(
                "already recording to {}; POST /record/stop first",
                s.settings.path.display()
            )));
        }
        let mut files = Files::new(&settings);
        let first = files.open().map_err(|e| match e {
            OpenError::Link(m) => RecordError::Invalid(m),
            OpenError::Io(m) => RecordError::Unavailable(m),
        })?;
        let observer = Arc::new(
            Observer::try_new("record", settings.queue_bytes).map_err(RecordError::Unavailable)?,
        );
        self.hub.enable_timestamps();
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(Mutex::new(vec![files.current_path().to_path_buf()]));
        self.totals.files.fetch_add(1, Ordering::Relaxed);
        self.totals.bytes.fetch_add(first, Ordering::Relaxed);
        let mut writer = Writer {
            observer: Arc::clone(&observer),
            totals: Arc::clone(&self.totals),
            files,
            opened: Arc::clone(&opened),
            filter,
            stop: Arc::clone(&stop),
        };
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("udptee-record".into())
            .spawn(move || {
                let _done = done_tx;
                writer.run();
            })
            .map_err(|e| RecordError::Unavailable(format!("starting the recorder thread: {e}")))?;
        if let Err(e) = self.hub.add(Arc::clone(&observer)) {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
            return Err(RecordError::Unavailable(e.to_string()));
        }
        tracing::info!(path = %settings.path.display(), rotate = settings.rotates(), "recording started");
        *session = Some(Session {
            settings,
            observer,
            stop,
            thread,
            done,
            files: opened,
        });
        drop(session);
        Ok(self.status())
    }

    /// Stops the recording: workers stop copying, the thread writes what is queued and closes the
    /// file. Returns the state after, with the files it wrote.
    pub fn stop(&self) -> Result<RecordStatus, RecordError> {
        let Some(s) = self.lock().take() else {
            return Err(RecordError::Conflict("not recording".into()));
        };
        self.hub.remove(&s.observer);
        s.stop.store(true, Ordering::Relaxed);
        // A write stuck on a stalled disk or a FIFO nobody reads must not hold up a shutdown: wait a
        // bounded time, then leave the thread behind; what it had not written is reported lost.
        match s.done.recv_timeout(STOP_WAIT + STOP_JOIN) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(path = %s.settings.path.display(),
                    "recorder: a write is stuck (a stalled disk?); stopping without it, what it held is not recorded");
            }
            _ => {
                if s.thread.join().is_err() {
                    tracing::error!("the recorder thread panicked");
                }
            }
        }
        let t = &self.totals;
        t.offered_done
            .fetch_add(s.observer.offered(), Ordering::Relaxed);
        t.queue_full_done
            .fetch_add(s.observer.dropped(), Ordering::Relaxed);
        let files = s.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let status = RecordStatus {
            recording: false,
            settings: Some(s.settings),
            files,
            totals: self.counts(),
        };
        tracing::info!(
            files = status.files.len(),
            recorded = status.totals.recorded,
            queue_full = status.totals.queue_full,
            write_error = status.totals.write_error,
            "recording stopped"
        );
        Ok(status)
    }
}
