//! Zero-loss restarts: the listen sockets are handed to the next udptee instead of being closed, so
//! the kernel's queue carries over and nothing arrives while no socket is bound.
//!
//! Two ways. **Takeover**: the running udptee listens on `--control-socket` (a Unix stream socket,
//! mode 0600, only its own user or root may connect); `udptee --takeover` connects, says which
//! address it will listen on, and gets the listen sockets and the instance locks (SCM_RIGHTS) in
//! the answer. It starts forwarding from them and says `ready`; the old one then stops receiving
//! (without reading its sockets dry: the new one reads them now), drains its queues, sends its final
//! counters, which the new one adds to its own so totals stay continuous, and exits 0. A request
//! for another listen address is refused and the old instance keeps running. **systemd**: the
//! sockets are stored in the service's file-descriptor store (`FDSTORE=1`, `FDNAME=udptee-listen`)
//! once bound; a restarted udptee finds them in `LISTEN_FDS` and uses them, as it does sockets from
//! socket activation (`ListenDatagram=`).
//!
//! The protocol is one JSON line each way (`Request`, `Reply`), then `ready`, then the final
//! counters ([`Final`]). Nothing here is on the data path.
//!
//! Floor 2 (the data path), below `fanout`: the protocol only; the descriptors travel through
//! `net::fds`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod listeners;

pub use self::listeners::{Carried, Extra};
use crate::metrics::counters::{Snapshot, TargetSnapshot, WorkerSnapshot};

/// How long each side waits for the other's next message.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the new instance asks for.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    udptee: String,
    listen: SocketAddr,
    pid: u32,
    /// The new instance also wants the admin listener (it runs one on the same address).
    #[serde(default)]
    admin: bool,
}

/// The old instance's answer (the descriptors ride with it).
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    error: Option<String>,
    sockets: usize,
    locks: usize,
    pid: u32,
    /// With the kernel fast path: which targets (by name) each recent generation served, so the
    /// new instance reads the marks of datagrams still queued in the sockets.
    #[serde(default)]
    kernel: Vec<crate::fastpath::BookRecord>,
    /// 1 when the admin listener rides after the locks.
    #[serde(default)]
    admin: usize,
    /// The listeners besides the first, whose descriptors ride after the admin listener's.
    #[serde(default)]
    extra: Vec<Extra>,
}

/// What the old instance's kernel fast path does around a hand-over: `true` before the sockets
/// go (stop copying, return the book), `false` if the new instance then did not start (resume).
pub type KernelHandover = Arc<dyn Fn(bool) -> Vec<crate::fastpath::BookRecord> + Send + Sync>;

/// The old instance's counters after its drain.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Final {
    /// Per target name.
    pub targets: Vec<(String, TargetSnapshot)>,
    /// Per worker.
    pub workers: Vec<WorkerSnapshot>,
}

impl Final {
    /// What a successor carries over from this instance's final snapshot. The originals the kernel
    /// fast path consumed were received here though no worker read them: they travel as the first
    /// worker's, so the successor's `received` still covers every datagram its targets were
    /// offered.
    pub fn of(summary: &Snapshot) -> Self {
        let mut workers = summary.workers.clone();
        if let (Some(k), Some(w)) = (&summary.kernel, workers.first_mut()) {
            w.received += k.consumed;
            w.bytes += k.consumed_bytes;
        }
        Self {
            targets: summary
                .target_names
                .iter()
                .cloned()
                .zip(summary.targets.iter().cloned())
                .collect(),
            workers,
        }
    }
}

/// What a takeover got from the old instance.
#[derive(Debug)]
pub struct Taken {
    /// The listen sockets (one SO_REUSEPORT group).
    pub sockets: Vec<UdpSocket>,
    /// The instance locks.
    pub locks: Vec<UnixDatagram>,
    /// The old instance's pid.
    pub pid: u32,
    /// The old instance's kernel book (empty without its fast path).
    pub kernel: Vec<crate::fastpath::BookRecord>,
    /// The old instance's admin listener, when it had one and the new one asked for it: both
    /// accept on it until the old one stops, so the admin address never refuses a connection.
    pub admin: Option<TcpListener>,
    /// The old instance's other listeners (datagram groups, stream listeners), to claim.
    pub extra: Carried,
    conn: UnixStream,
}

impl Taken {
    /// Tells the old instance to stop; a thread waits for its final counters and hands them to
    /// `on_final` once it has exited (`None` if it went without sending them).
    pub fn ready(
        mut self,
        on_final: impl FnOnce(Option<Final>) + Send + 'static,
    ) -> std::io::Result<()> {
        self.conn.write_all(b"ready\n")?;
        self.conn.set_read_timeout(None)?;
        std::thread::Builder::new()
            .name("udptee-handover".into())
            .spawn(move || {
                let mut line = String::new();
                let last = BufReader::new(self.conn)
                    .read_line(&mut line)
                    .ok()
                    .and_then(|_| serde_json::from_str::<Final>(&line).ok());
                on_final(last);
            })
            .map(|_| ())
    }
}

fn io_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Asks the udptee on `path` for its sockets (and its admin listener, with `admin`). `Ok(None)`:
/// nobody listens there (start normally).
pub fn take_over(path: &Path, listen: SocketAddr, admin: bool) -> Result<Option<Taken>, String> {
    let mut conn = match UnixStream::connect(path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io_err(&format!("--takeover: {}", path.display()), e)),
    };
    conn.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(|e| io_err("--takeover", e))?;
    let req = Request {
        udptee: "takeover".into(),
        listen,
        pid: std::process::id(),
        admin,
    };
    let mut line = serde_json::to_string(&req).map_err(|e| io_err("--takeover", e))?;
    line.push('\n');
    conn.write_all(line.as_bytes())
        .map_err(|e| io_err("--takeover: sending the request", e))?;
    let (bytes, fds) = crate::net::fds::recv_with_fds(&conn).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof => format!(
            "--takeover: the running udptee closed the connection without an answer ({e}): another udptee is probably taking it over at the same moment; start one at a time"
        ),
        _ => io_err("--takeover: the answer", e),
    })?;
    let reply: Reply = serde_json::from_slice(bytes.trim_ascii_end())
        .map_err(|e| io_err("--takeover: the answer", e))?;
    if let Some(e) = reply.error {
        let tail = if e.contains("took it over first") {
            "; this one exits"
        } else {
            "; it keeps running"
        };
        return Err(format!(
            "--takeover refused by the running udptee (pid {}): {e}{tail}",
            reply.pid
        ));
    }
    let expected = reply.sockets
        + reply.locks
        + reply.admin.min(1)
        + reply.extra.iter().map(|e| e.fds).sum::<usize>();
    if fds.len() != expected {
        return Err(format!(
            "--takeover: expected {expected} descriptors, got {}",
            fds.len()
        ));
    }
    let mut fds = fds.into_iter();
    let sockets = fds
        .by_ref()
        .take(reply.sockets)
        .map(UdpSocket::from)
        .collect();
    let locks = fds
        .by_ref()
        .take(reply.locks)
        .map(UnixDatagram::from)
        .collect();
    let admin = (reply.admin > 0)
        .then(|| fds.next())
        .flatten()
        .map(TcpListener::from);
    let extra = Carried(
        reply
            .extra
            .into_iter()
            .map(|e| {
                let mine = fds.by_ref().take(e.fds).collect();
                (e, mine)
            })
            .collect(),
    );
    Ok(Some(Taken {
        sockets,
        locks,
        pid: reply.pid,
        kernel: reply.kernel,
        admin,
        extra,
        conn,
    }))
}

/// A takeover the old instance accepted: its main loop stops receiving, drains, and sends
/// [`Final`] on `conn`.
#[derive(Debug)]
pub struct Handover {
    /// The new instance's pid.
    pub pid: u32,
    conn: UnixStream,
}

impl Handover {
    /// Sends the final counters and closes the connection.
    pub fn finish(mut self, last: &Final) {
        if let Ok(mut line) = serde_json::to_string(last) {
            line.push('\n');
            let _ = self.conn.write_all(line.as_bytes());
        }
    }
}

/// The old instance's side: a listener thread answering one takeover.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    handed_over: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Listens on `path` (replacing a stale socket file, refusing a live one and anything that is
    /// not a socket); hands `sockets`,
    /// `locks` (and `admin`, the admin listener, when asked for) to the first instance that asks
    /// for `listen`, then sends it on `accepted`.
    pub fn start(
        path: &Path,
        listen: SocketAddr,
        held: Holdings,
        accepted: crossbeam_channel::Sender<Handover>,
        kernel: KernelHandover,
    ) -> Result<Self, String> {
        let what = format!("--control-socket {}", path.display());
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(format!(
                    "{what}: the path exists and is not a socket; refusing to replace it"
                ));
            }
            // A live udptee answers; a stale file from a crash does not.
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "{what}: another udptee answers there; start with --takeover to replace it"
                ));
            }
            std::fs::remove_file(path).map_err(|e| io_err(&what, e))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| io_err(&what, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err(&what, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io_err(&what, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let handed_over = Arc::new(AtomicBool::new(false));
        let (st, done) = (Arc::clone(&stop), Arc::clone(&handed_over));
        let thread = std::thread::Builder::new()
            .name("udptee-control".into())
            .spawn(move || {
                // Once handed over, later askers are told who has the sockets now.
                let mut handed_to = None;
                while !st.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) if handed_to.is_some() => {
                            let _ = conn.set_nonblocking(false);
                            refuse(&conn, &format!(
                                "another udptee (pid {}) took it over first and runs now",
                                handed_to.unwrap_or_default()
                            ));
                        }
                        Ok((conn, _)) => {
                            match serve(conn, listen, &held, &kernel) {
                                Ok(h) => {
                                    tracing::info!(pid = h.pid, "takeover: the new udptee has the sockets and runs; stopping receiving and draining");
                                    done.store(true, Ordering::Relaxed);
                                    handed_to = Some(h.pid);
                                    let _ = accepted.send(h);
                                }
                                Err(e) => tracing::warn!(error = %e, "takeover refused; still running"),
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })
            .map_err(|e| io_err("starting the control thread", e))?;
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            handed_over,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // After a hand-over the path is the new instance's.
        if !self.handed_over.load(Ordering::Relaxed) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Answers a takeover request with a refusal saying `why`.
fn refuse(conn: &UnixStream, why: &str) {
    let r = Reply {
        error: Some(why.to_owned()),
        sockets: 0,
        locks: 0,
        pid: std::process::id(),
        kernel: Vec::new(),
        admin: 0,
        extra: Vec::new(),
    };
    let mut text = serde_json::to_string(&r).unwrap_or_default();
    text.push('\n');
    let _ = (&*conn).write_all(text.as_bytes());
}

/// What this instance hands over: a second descriptor of each.
#[derive(Debug)]
pub struct Holdings {
    /// The first listener's sockets.
    pub sockets: Arc<[UdpSocket]>,
    /// The instance locks.
    pub locks: Vec<OwnedFd>,
    /// The admin listener, for a successor that runs one.
    pub admin: Option<OwnedFd>,
    /// The other listeners, described.
    pub extra: Vec<(Extra, Vec<OwnedFd>)>,
}

/// Answers one connection: checks who asks and for what, sends the descriptors, waits for `ready`.
fn serve(
    conn: UnixStream,
    listen: SocketAddr,
    held: &Holdings,
    kernel: &KernelHandover,
) -> Result<Handover, String> {
    let (sockets, locks, extra) = (&held.sockets, &held.locks, &held.extra);
    let admin = held.admin.as_ref();
    conn.set_nonblocking(false)
        .map_err(|e| io_err("control", e))?;
    conn.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(|e| io_err("control", e))?;
    let peer = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| io_err("control: peer credentials", e))?;
    let me = nix::unistd::Uid::effective().as_raw();
    if peer.uid() != me && peer.uid() != 0 {
        return Err(format!(
            "uid {} may not take over (only uid {me} or root)",
            peer.uid()
        ));
    }
    let mut reader = BufReader::new(conn.try_clone().map_err(|e| io_err("control", e))?);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| io_err("control: reading the request", e))?;
    let refuse = |why: String| -> Result<Handover, String> {
        refuse(&conn, &why);
        Err(why)
    };
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(_) => return refuse("not a takeover request".into()),
    };
    if req.udptee != "takeover" {
        return refuse("not a takeover request".into());
    }
    // `listen` is the bound address; a request for port 0 (tests) takes whatever port it has.
    if !crate::net::socket::serves(listen, req.listen) {
        return refuse(format!(
            "it would listen on {}, this one listens on {listen}",
            req.listen
        ));
    }
    // The admin listener goes only to an instance that runs one (and knows to expect it).
    let admin = admin.filter(|_| req.admin);
    // From here on this instance's kernel path copies nothing (user space serves every target)
    // and the new instance learns what the marks already queued in the sockets mean.
    let reply = Reply {
        error: None,
        sockets: sockets.len(),
        locks: locks.len(),
        pid: std::process::id(),
        kernel: kernel(true),
        admin: usize::from(admin.is_some()),
        extra: extra.iter().map(|(e, _)| e.clone()).collect(),
    };
    let resume = |e: String| -> String {
        kernel(false);
        e
    };
    let mut text = serde_json::to_string(&reply).map_err(|e| io_err("control", e))?;
    text.push('\n');
    let fds: Vec<RawFd> = sockets
        .iter()
        .map(AsRawFd::as_raw_fd)
        .chain(locks.iter().map(AsRawFd::as_raw_fd))
        .chain(admin.map(AsRawFd::as_raw_fd))
        .chain(
            extra
                .iter()
                .flat_map(|(_, f)| f.iter().map(AsRawFd::as_raw_fd)),
        )
        .collect();
    {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let iov = [std::io::IoSlice::new(text.as_bytes())];
        sendmsg::<()>(
            conn.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| resume(io_err("control: sending the sockets", e)))?;
    }
    let mut ready = String::new();
    reader
        .read_line(&mut ready)
        .map_err(|e| resume(io_err("control: waiting for ready", e)))?;
    if ready.trim() != "ready" {
        return Err(resume(
            "the new udptee did not start (it closed the connection); still running".into(),
        ));
    }
    Ok(Handover { pid: req.pid, conn })
}

#[cfg(test)]
mod tests;
