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

mod file;

use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

use self::file::Files;
use crate::fanout::observe::{Observed, Observer};
use crate::fanout::ratelimit::RateLimit;
use crate::fanout::targets::TargetRegistry;
use crate::statsd::filter::{LineCounts, LineFilter, Part};

/// Datagrams the recorder thread takes per write.
const BATCH: usize = 256;
/// Sleep when nothing is queued.
const IDLE: Duration = Duration::from_millis(20);
pub use crate::config::settings::{
    DEFAULT_RECORD_QUEUE_BYTES as DEFAULT_QUEUE_BYTES, MIN_RECORD_FILE_BYTES as MIN_FILE_BYTES,
    MIN_RECORD_ROTATE as MIN_ROTATE, RecordSettings,
};
/// Snap length written in the file header: every UDP datagram, whole.
const SNAPLEN: u32 = 262_144;
/// How long a stopping recorder waits for workers to move to a table without it.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// Beyond [`STOP_WAIT`], how long a stop waits for the thread's last write.
const STOP_JOIN: Duration = Duration::from_secs(3);
/// Pause before a new file after a failed write.
const RETRY: Duration = Duration::from_secs(1);

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

/// Totals over every recording since start, for metrics and the final summary.
#[derive(Debug, Default)]
pub struct RecordTotals {
    recorded: AtomicU64,
    bytes: AtomicU64,
    files: AtomicU64,
    filtered: AtomicU64,
    write_error: AtomicU64,
    queue_full_done: AtomicU64,
    offered_done: AtomicU64,
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
    registry: Arc<TargetRegistry>,
    totals: Arc<RecordTotals>,
    session: Mutex<Option<Session>>,
    max_datagram: usize,
    /// Called once before the first recording: turns kernel receive timestamps on.
    enable_timestamps: Box<dyn Fn() + Send + Sync>,
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
    /// A recorder publishing its ring through `registry`.
    pub(crate) fn new(
        registry: Arc<TargetRegistry>,
        max_datagram: usize,
        enable_timestamps: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            registry,
            totals: Arc::new(RecordTotals::default()),
            session: Mutex::new(None),
            max_datagram,
            enable_timestamps,
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
                LineFilter::new(&settings.line_settings(), self.max_datagram)
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
        let first = files.open().map_err(RecordError::Unavailable)?;
        let observer = Arc::new(
            Observer::try_new("record", settings.queue_bytes).map_err(RecordError::Unavailable)?,
        );
        (self.enable_timestamps)();
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
        if let Err(e) = self.registry.add_observer(Arc::clone(&observer)) {
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
        self.registry.remove_observer(&s.observer);
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

/// A `Write` into a buffer the recorder thread also holds, so pcap-file's writer encodes into memory
/// and the thread decides when and how the bytes reach the file.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The pcap header every file starts with.
fn pcap_header() -> PcapHeader {
    PcapHeader {
        snaplen: SNAPLEN,
        datalink: DataLink::RAW,
        ts_resolution: TsResolution::NanoSecond,
        ..PcapHeader::default()
    }
}

/// The file header's bytes.
fn header_bytes() -> Vec<u8> {
    let buf = Shared::default();
    let _ = PcapWriter::with_header(buf.clone(), pcap_header());
    buf.0.take()
}

/// Builds one datagram's packet into `packet`: synthetic IP and UDP headers around `payload`. IPv4
/// when both ends are IPv4 (or IPv4-mapped), IPv6 otherwise; an unnamed sender is port 0 of the
/// unspecified address.
pub(crate) fn build_packet(
    packet: &mut Vec<u8>,
    o: &Observed<'_>,
    payload: &[u8],
) -> Result<(), String> {
    let src = o
        .src
        .unwrap_or_else(|| SocketAddr::new(IpAddr::from([0u8; 4]), 0));
    let (sip, dip) = (src.ip().to_canonical(), o.dst.ip().to_canonical());
    let builder = match (sip, dip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            etherparse::PacketBuilder::ipv6(v6(s), v6(d), 64)
        }
    }
    .udp(src.port(), o.dst.port());
    packet.clear();
    builder
        .write(packet, payload)
        .map_err(|e| format!("encoding a {}-byte datagram: {e}", payload.len()))
}

/// Appends `packet` as one pcap record stamped with the kernel receive time (now, if the socket gave
/// none).
pub(crate) fn write_record(
    w: &mut PcapWriter<impl Write>,
    rx_nanos: u64,
    packet: &[u8],
) -> Result<(), String> {
    let ts = if rx_nanos == 0 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    } else {
        Duration::from_nanos(rx_nanos)
    };
    w.write_packet(&PcapPacket::new(ts, packet.len() as u32, packet))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Bytes of a pcap record header.
const RECORD_HEADER: u64 = 16;

/// The recorder thread.
struct Writer {
    observer: Arc<Observer>,
    totals: Arc<RecordTotals>,
    files: Files,
    opened: Arc<Mutex<Vec<PathBuf>>>,
    filter: Option<LineFilter>,
    stop: Arc<AtomicBool>,
}

impl Writer {
    fn run(&mut self) {
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use proptest::prelude::*;

    use super::*;

    fn addr(v6: bool, bits: u128, port: u16) -> SocketAddr {
        let ip = if v6 {
            IpAddr::from(bits.to_be_bytes())
        } else {
            IpAddr::from((bits as u32).to_be_bytes())
        };
        SocketAddr::new(ip, port)
    }

    proptest! {
        /// What the recorder writes, our own reader reads back: addresses, ports, payload and the
        /// receive time to the nanosecond, for both families and any payload.
        #[test]
        fn records_read_back_exactly(
            v6 in any::<bool>(), src in any::<u128>(), dst in any::<u128>(),
            sport in any::<u16>(), dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            rx in 1u64..4_000_000_000_000_000_000,
        ) {
            let (s, d) = (addr(v6, src, sport), addr(v6, dst, dport));
            let o = Observed { src: Some(s), dst: d, rx_nanos: rx, payload: &payload };
            let mut w = PcapWriter::with_header(Vec::new(), pcap_header()).unwrap();
            let mut packet = Vec::new();
            build_packet(&mut packet, &o, &payload).unwrap();
            write_record(&mut w, rx, &packet).unwrap();
            let file = w.into_writer();
            let mut got = Vec::new();
            let mut skipped = Default::default();
            crate::replay::capture::for_each_udp_in(&file[..], &mut skipped, |u| {
                got.push((u.src, u.dst, u.ts_nanos, u.payload.to_vec()));
                Ok(())
            }).unwrap();
            // IPv4-mapped IPv6 addresses are written as IPv4 (canonical), as the kernel reports them.
            let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
            let both_v4 = s.ip().to_canonical().is_ipv4() && d.ip().to_canonical().is_ipv4();
            let want = |a: SocketAddr| if both_v4 { canon(a) } else { match a.ip().to_canonical() {
                IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
                IpAddr::V6(_) => a,
            }};
            prop_assert_eq!(got, vec![(want(s), want(d), Some(rx), payload.clone())]);
        }
    }
}
