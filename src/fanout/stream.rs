//! A stream listener's thread: accepts TCP (statsd lines) or Unix stream (DogStatsD frames)
//! connections, reads them with epoll, turns their bytes back into datagrams in pool slots and
//! hands those to the same dispatch as a receive worker, counted under its own index.
//!
//! Each ready connection gets one read of up to [`READ_BYTES`] per round, so a busy client cannot
//! starve a quiet one. TCP lines are joined across reads, packed into datagrams of up to
//! `--pack-size` (never splitting a line, nothing from two connections in one datagram) and handed
//! on at the end of each read: no timer, no added latency. A frame is one datagram. Bounded: at
//! most `--max-connections` (more are closed at accept, nothing written to them), each holding at
//! most one unfinished line or frame (`--max-datagram`), closed after `--idle-timeout` of quiet.
//! Hot path for stream traffic: no allocation per read once a connection's first line is held.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::dispatch::{Dispatch, Run};
use super::ratelimit::RateLimit;
use super::target::TargetTable;
use crate::config::StreamSettings;
use crate::metrics::counters::WorkerCounters;
use crate::metrics::stream::{CloseReason, StreamCounters};
use crate::net::mmsg::RecvMeta;
use crate::net::stream::{Conn, Peer, SocketFile, StreamSocket};
use crate::pool::{BufId, BufPool};
use crate::statsd::stream::{Frames, Lines, Packer};

/// Bytes read from one connection per round: 64 KiB, one loopback TCP segment train.
const READ_BYTES: usize = 64 << 10;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// The epoll key of the listening socket (connections are their slot + 1).
const LISTENER: u64 = 0;
/// How often quiet connections are looked for.
const IDLE_SWEEP: Duration = Duration::from_secs(1);
/// At stop, reads per connection to take what its client already sent.
const STOP_READS: usize = 16;
/// How long a listener that could not accept (out of descriptors) is left alone.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// One stream listener's thread state.
pub(crate) struct StreamWorker {
    pub(crate) name: String,
    pub(crate) socket: StreamSocket,
    /// This thread's index in every target's per-thread counters.
    pub(crate) index: usize,
    pub(crate) pool: Arc<BufPool>,
    /// Its datagram counters, as a receive worker's.
    pub(crate) received: Arc<WorkerCounters>,
    pub(crate) latency: bool,
    pub(crate) batch: usize,
    /// The registry's published table.
    pub(crate) table: Arc<ArcSwap<TargetTable>>,
    pub(crate) counters: Arc<StreamCounters>,
    pub(crate) running: Arc<AtomicBool>,
    pub(crate) settings: StreamSettings,
    pub(crate) max_datagram: usize,
    /// The socket file to remove at exit (a Unix listener).
    pub(crate) file: Option<SocketFile>,
    /// False once the listening socket was handed to a new udptee: its file is the new one's.
    pub(crate) handed_over: Arc<AtomicBool>,
}

/// How a connection's bytes become datagrams.
enum Decode {
    Lines(Lines),
    Frames(Frames),
}

impl Decode {
    fn pending(&self) -> usize {
        match self {
            Self::Lines(l) => l.pending(),
            Self::Frames(f) => f.pending(),
        }
    }
}

struct Client {
    conn: Conn,
    peer: Peer,
    decode: Decode,
    last: Instant,
}

/// Datagrams made this round, in pool slots, until they are dispatched.
struct Out {
    dispatch: Dispatch,
    table: arc_swap::Cache<Arc<ArcSwap<TargetTable>>, Arc<TargetTable>>,
    ids: Vec<BufId>,
    meta: Vec<RecvMeta>,
    spare: Vec<BufId>,
    scratch: BufId,
    local: SocketAddr,
}

impl Out {
    /// One datagram from `peer`; the batch is dispatched once full.
    fn push(&mut self, datagram: &[u8], peer: &Peer) {
        let pool = &self.dispatch.pool;
        let id = self
            .spare
            .pop()
            .or_else(|| pool.try_take())
            .unwrap_or(self.scratch);
        if id != self.scratch {
            pool.write(id, datagram);
        }
        self.ids.push(id);
        self.meta.push(RecvMeta {
            len: datagram.len(),
            src: peer.addr,
            cred: peer.cred,
            ..RecvMeta::default()
        });
        if self.ids.len() >= self.dispatch.batch {
            self.flush();
        }
    }

    /// Hands what is made so far to every target.
    fn flush(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let current = self.table.load();
        self.dispatch.run(
            current,
            Run {
                ids: &self.ids,
                meta: &self.meta,
                served: 0,
                scratch: self.scratch,
                local: self.local,
            },
            &mut self.spare,
        );
        self.ids.clear();
        self.meta.clear();
    }
}

impl StreamWorker {
    /// Accepts and reads until `running` turns false; then reads what clients already sent,
    /// closes every connection and returns its slots to the pool.
    pub(crate) fn run(mut self) {
        if let Err(e) = self.serve() {
            tracing::error!(listener = %self.name, error = %e, "stream listener failed; it no longer accepts");
        }
        // `handed_over` holds true while the socket is ours (the data path's "read it dry" flag).
        if let Some(file) = self
            .file
            .take()
            .filter(|_| self.handed_over.load(Ordering::Relaxed))
        {
            file.remove();
        }
    }

    fn serve(&self) -> io::Result<()> {
        let pool = Arc::clone(&self.pool);
        let scratch = pool
            .try_take()
            .ok_or_else(|| io::Error::other("the pool has no slot for this listener"))?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&self.socket, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        let batch = self.batch;
        let mut out = Out {
            dispatch: Dispatch::new(
                self.index,
                Arc::clone(&pool),
                Arc::clone(&self.received),
                self.latency,
                batch,
            ),
            table: arc_swap::Cache::new(Arc::clone(&self.table)),
            ids: Vec::with_capacity(batch),
            meta: Vec::with_capacity(batch),
            spare: Vec::with_capacity(batch),
            scratch,
            local: self
                .socket
                .tcp_addr()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        let mut clients: Vec<Option<Client>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut open = 0usize;
        let mut rbuf = vec![0u8; READ_BYTES];
        // Packed datagrams fit a slot: a pack size over --max-datagram is taken as --max-datagram.
        let mut packer = Packer::new(self.settings.pack_bytes.min(self.max_datagram));
        let mut events = vec![EpollEvent::empty(); EVENTS];
        let mut swept = Instant::now();
        let mut paused: Option<Instant> = None;
        let mut accept_errors = RateLimit::new();
        while self.running.load(Ordering::Relaxed) {
            self.received.beat();
            let n = match epoll.wait(&mut events, 100u16) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let now = Instant::now();
            for ev in &events[..n] {
                if ev.data() == LISTENER {
                    if let Err(e) = self.accept(&epoll, &mut clients, &mut free, &mut open, now) {
                        if let Some(count) = accept_errors.hit(1) {
                            tracing::warn!(listener = %self.name, error = %e, count,
                                "accept failed; the listener pauses (its queue keeps the clients waiting)");
                        }
                        let _ = epoll.delete(&self.socket);
                        paused = Some(now + ACCEPT_PAUSE);
                    }
                    continue;
                }
                let slot = (ev.data() - 1) as usize;
                let Some(client) = clients.get_mut(slot).and_then(Option::as_mut) else {
                    continue;
                };
                if let Err(reason) = self.read(client, &mut rbuf, &mut packer, &mut out, now) {
                    self.close(&epoll, &mut clients, &mut free, &mut open, slot, reason);
                }
            }
            out.flush();
            if paused.is_some_and(|until| now >= until) {
                paused = None;
                epoll.add(&self.socket, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
            }
            if now.duration_since(swept) >= IDLE_SWEEP {
                swept = now;
                out.table.load(); // pick up a new table even when quiet
                for slot in 0..clients.len() {
                    if clients[slot]
                        .as_ref()
                        .is_some_and(|c| now.duration_since(c.last) >= self.settings.idle_timeout)
                    {
                        self.close(
                            &epoll,
                            &mut clients,
                            &mut free,
                            &mut open,
                            slot,
                            CloseReason::Idle,
                        );
                    }
                }
            }
        }
        // Stopping: what clients already sent is read and forwarded, then every connection closed.
        let now = Instant::now();
        for slot in 0..clients.len() {
            let mut reason = CloseReason::Stop;
            if let Some(client) = clients[slot].as_mut() {
                for _ in 0..STOP_READS {
                    match self.read(client, &mut rbuf, &mut packer, &mut out, now) {
                        Ok(true) => {}
                        Ok(false) => break, // nothing more to read
                        Err(r) => {
                            reason = r;
                            break;
                        }
                    }
                }
                self.close(&epoll, &mut clients, &mut free, &mut open, slot, reason);
            }
        }
        out.flush();
        for id in out.spare.drain(..).chain(std::iter::once(scratch)) {
            pool.put_back(id);
        }
        Ok(())
    }

    /// Accepts what is pending; over `--max-connections`, closes at once without a byte written.
    /// Out of descriptors (or memory), the listener is left alone for [`ACCEPT_PAUSE`]: the
    /// connections waiting stay in its queue, and a listener that stays readable cannot spin.
    fn accept(
        &self,
        epoll: &Epoll,
        clients: &mut Vec<Option<Client>>,
        free: &mut Vec<usize>,
        open: &mut usize,
        now: Instant,
    ) -> Result<(), io::Error> {
        for _ in 0..EVENTS {
            let (conn, peer) = match self.socket.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The client gave up before it was accepted: nothing to do.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) => return Err(e),
            };
            self.counters.add_accepted();
            if *open >= self.settings.max_connections {
                drop(conn);
                self.counters.add_closed(CloseReason::Refused, 0);
                continue;
            }
            let slot = free.pop().unwrap_or_else(|| {
                clients.push(None);
                clients.len() - 1
            });
            if let Err(e) = epoll.add(&conn, EpollEvent::new(EpollFlags::EPOLLIN, slot as u64 + 1))
            {
                tracing::warn!(listener = %self.name, error = %e, "cannot watch a connection; closed");
                free.push(slot);
                self.counters.add_closed(CloseReason::ReadError, 0);
                continue;
            }
            let decode = match conn {
                Conn::Tcp(_) => Decode::Lines(Lines::new(self.max_datagram)),
                Conn::Unix(_) => Decode::Frames(Frames::new(self.max_datagram)),
            };
            clients[slot] = Some(Client {
                conn,
                peer,
                decode,
                last: now,
            });
            *open += 1;
        }
        Ok(())
    }

    /// One read from `client`: its datagrams go to `out`. Whether there was anything to read, or
    /// why the connection must be closed (its end, too).
    fn read(
        &self,
        client: &mut Client,
        rbuf: &mut [u8],
        packer: &mut Packer,
        out: &mut Out,
        now: Instant,
    ) -> Result<bool, CloseReason> {
        let n = match client.conn.read(rbuf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(false);
            }
            Err(_) => return Err(CloseReason::ReadError),
        };
        client.last = now;
        let peer = client.peer;
        match &mut client.decode {
            Decode::Lines(lines) => {
                let mut emit = |line: &[u8]| packer.push(line, |d| out.push(d, &peer));
                let fed = if n == 0 {
                    lines.finish(&mut emit)
                } else {
                    lines.feed(&rbuf[..n], &mut emit)
                };
                packer.flush(|d| out.push(d, &peer));
                self.counters.add_read(fed.lines, fed.too_long, 0);
            }
            Decode::Frames(frames) => {
                let r = frames.feed(&rbuf[..n], |f| out.push(f, &peer));
                match r {
                    Ok(k) => self.counters.add_read(0, 0, k),
                    Err(e) => {
                        self.counters.add_read(0, 0, e.handed_on);
                        tracing::debug!(listener = %self.name, error = %e, "closing a connection");
                        return Err(CloseReason::FrameTooLong);
                    }
                }
            }
        }
        if n == 0 {
            return Err(CloseReason::Eof);
        }
        Ok(true)
    }

    fn close(
        &self,
        epoll: &Epoll,
        clients: &mut [Option<Client>],
        free: &mut Vec<usize>,
        open: &mut usize,
        slot: usize,
        reason: CloseReason,
    ) {
        if let Some(client) = clients[slot].take() {
            let _ = epoll.delete(&client.conn);
            self.counters.add_closed(reason, client.decode.pending());
            free.push(slot);
            *open -= 1;
        }
    }
}
