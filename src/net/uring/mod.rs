//! The io_uring receive backend: one ring per worker, one multishot `RecvMsgMulti` over a provided
//! buffer ring whose buffers are pool slots. Multishot recvmsg is available since Linux 6.0.
//!
//! The kernel picks a buffer per datagram and writes `io_uring_recvmsg_out`, the control messages and
//! the payload into it, which is why every pool slot has [`HEADROOM`] bytes before its payload. A
//! slot handed to the ring belongs to the kernel until its completion is reaped; we track it by buffer
//! id and never hold a Rust reference to it before then. A completion without IORING_CQE_F_MORE ends
//! the multishot request and it is re-armed on the next call; ENOBUFS (the ring ran dry) is counted as
//! receive pressure. Truncation and the kernel drop count are decoded exactly as on the recvmmsg path.
#![allow(unsafe_code)]

mod buf_ring;

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use io_uring::types::{Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode};

use self::buf_ring::BufRing;
use super::mmsg::{CMSG_BYTES, NAME_BYTES, RecvMeta, decode_control, decode_sockaddr};
use crate::pool::{BufId, BufPool, HEADROOM};

/// `io_uring_recvmsg_out` is 16 bytes; with NAME_BYTES of sender address and CMSG_BYTES of control,
/// the payload starts at HEADROOM.
const _: () = assert!(
    HEADROOM == 16 + NAME_BYTES + CMSG_BYTES,
    "pool headroom must match the recvmsg_out layout"
);

/// user_data of the multishot receive request.
const RECV: u64 = 1;

pub use crate::config::ring_entries;

/// Reusable io_uring receive state for one worker socket.
pub struct UringRecv {
    // Field order matters: the ring is dropped first, which ends the request and the buffer ring's
    // registration, before the ring memory is unmapped.
    ring: IoUring,
    buf_ring: BufRing,
    msghdr: Box<libc::msghdr>,
    fd: RawFd,
    armed: bool,
    slots: Box<[Option<BufId>]>,
    free_bids: Vec<u16>,
    ring_empty: u64,
    /// Created disabled (single issuer): the first `arm`, on the worker thread, enables it.
    disabled: bool,
}

// SAFETY: `msghdr` only points at nothing (null name and control, lengths only); the ring and buffer
// ring are owned by this value. Moving it to the worker thread moves all of it.
unsafe impl Send for UringRecv {}

impl UringRecv {
    /// Sets up a ring and a provided-buffer ring of `entries` buffers for `socket`.
    pub fn new(socket: &UdpSocket, entries: u16) -> io::Result<Self> {
        // The completion queue must hold at least the submission queue (8) and every provided buffer.
        let cq_entries = (u32::from(entries) * 2).max(16);
        // Single issuer with deferred task work (Linux 6.1) posts completions only when the worker
        // enters the kernel to wait for them, with no wake-up per datagram. The ring starts disabled
        // and the worker thread enables it, becoming its one issuer. Older kernels refuse the flags:
        // then a plain ring.
        let (ring, deferred) = match IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_r_disabled()
            .build(8)
        {
            Ok(ring) => (ring, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                (IoUring::builder().setup_cqsize(cq_entries).build(8)?, false)
            }
            Err(e) => return Err(e),
        };
        let buf_ring = BufRing::new(&ring, entries, 0)?;
        // SAFETY: msghdr is plain C data; all-zero is valid. Only the name and control lengths matter
        // to multishot recvmsg (they reserve room in each buffer).
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_controllen = CMSG_BYTES as _;
        msghdr.msg_namelen = NAME_BYTES as _;
        Ok(Self {
            ring,
            buf_ring,
            msghdr,
            fd: socket.as_raw_fd(),
            armed: false,
            slots: vec![None; usize::from(entries)].into(),
            free_bids: (0..entries).rev().collect(),
            ring_empty: 0,
            disabled: deferred,
        })
    }

    /// Times the ring ran out of buffers (ENOBUFS): receive pressure, datagrams wait in the socket.
    pub fn ring_empty(&self) -> u64 {
        self.ring_empty
    }

    /// Gives the kernel slots for every free buffer id, from `spare` first (cache-warm), then the pool.
    pub fn provide(&mut self, pool: &BufPool, spare: &mut Vec<BufId>) {
        let mut pushed = false;
        while let Some(&bid) = self.free_bids.last() {
            let Some(id) = spare.pop().or_else(|| pool.try_take()) else {
                break;
            };
            self.free_bids.pop();
            self.buf_ring.push(
                pool.slot_ptr(id),
                (HEADROOM + pool.slot_bytes()) as u32,
                bid,
            );
            self.slots[usize::from(bid)] = Some(id);
            pushed = true;
        }
        if pushed {
            self.buf_ring.publish();
        }
    }

    fn arm(&mut self) -> io::Result<()> {
        if self.armed {
            return Ok(());
        }
        if self.disabled {
            self.ring.submitter().register_enable_rings()?;
            self.disabled = false;
        }
        let sqe =
            opcode::RecvMsgMulti::new(Fd(self.fd), &raw const *self.msghdr, self.buf_ring.bgid())
                .flags(libc::MSG_TRUNC as u32)
                .build()
                .user_data(RECV);
        // SAFETY: the SQE names our socket fd (open for the worker's life, and pinned by the kernel
        // while the request runs) and `msghdr`, boxed in `self` and outliving the ring, which is
        // dropped first; buffers come from our registered buffer group.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        self.ring.submit()?;
        self.armed = true;
        Ok(())
    }

    /// Receives up to `ids.len()` datagrams, waiting at most `wait` for the first; fills `ids[..n]` with
    /// the slots the kernel filled and `meta[..n]` with what it said about each.
    pub fn recv_batch(
        &mut self,
        _fd: BorrowedFd<'_>,
        pool: &BufPool,
        ids: &mut [BufId],
        meta: &mut [RecvMeta],
        wait: Duration,
    ) -> io::Result<usize> {
        self.arm()?;
        let n = self.reap(pool, ids, meta)?;
        if n > 0 {
            return Ok(n);
        }
        // The reap may have consumed the completion that ended the request (ENOBUFS, or no
        // IORING_CQE_F_MORE): re-arm before sleeping, or nothing could wake us before the timeout.
        self.arm()?;
        let ts = Timespec::from(wait);
        match self
            .ring
            .submitter()
            .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
        {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        self.reap(pool, ids, meta)
    }

    fn reap(
        &mut self,
        pool: &BufPool,
        ids: &mut [BufId],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let mut n = 0;
        let mut error = None;
        let limit = ids.len().min(meta.len());
        let mut cq = self.ring.completion();
        while n < limit {
            let Some(cqe) = cq.next() else { break };
            let (res, flags) = (cqe.result(), cqe.flags());
            if !cqueue::more(flags) {
                self.armed = false;
            }
            if res < 0 {
                match -res {
                    libc::ENOBUFS => self.ring_empty += 1,
                    libc::EINTR | libc::ECANCELED => {}
                    errno => error = Some(io::Error::from_raw_os_error(errno)),
                }
                continue;
            }
            let Some(bid) = cqueue::buffer_select(flags) else {
                continue;
            };
            let Some(id) = self.slots.get_mut(usize::from(bid)).and_then(Option::take) else {
                continue;
            };
            self.free_bids.push(bid);
            meta[n] = decode(pool, id, &self.msghdr);
            ids[n] = id;
            n += 1;
        }
        drop(cq);
        match error {
            Some(e) if n == 0 => Err(e),
            _ => Ok(n),
        }
    }

    /// Ends the ring and returns the slots it still held, for the caller to give back to the pool.
    pub fn into_slots(self) -> Vec<BufId> {
        let Self {
            ring,
            buf_ring,
            slots,
            ..
        } = self;
        drop(ring);
        drop(buf_ring);
        slots.iter().flatten().copied().collect()
    }
}

/// Reads what the kernel wrote in front of the payload of a completed slot.
fn decode(pool: &BufPool, id: BufId, msghdr: &libc::msghdr) -> RecvMeta {
    // SAFETY: the completion for this buffer was reaped, so the kernel is done writing it and the slot
    // is ours alone (by id) until we dispatch it; the slot spans HEADROOM + slot_bytes bytes of the
    // pool's allocation. AtomicU8 and u8 share a layout, and nobody writes while this view lives.
    let buffer = unsafe {
        std::slice::from_raw_parts(pool.slot_ptr(id).cast_const(), HEADROOM + pool.slot_bytes())
    };
    let Ok(out) = RecvMsgOut::parse(buffer, msghdr) else {
        return RecvMeta {
            truncated: true,
            ..RecvMeta::default()
        };
    };
    let len = out.incoming_payload_len() as usize;
    let mut meta = RecvMeta {
        len,
        truncated: out.is_payload_truncated() || len > pool.slot_bytes(),
        ..RecvMeta::default()
    };
    let control = out.control_data();
    // SAFETY: msghdr is plain C data; all-zero is valid.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_control = control.as_ptr().cast_mut().cast();
    hdr.msg_controllen = control.len() as _;
    decode_control(&hdr, &mut meta);
    let name = out.name_data();
    if out.incoming_name_len() as usize <= name.len() {
        meta.src = decode_sockaddr(name);
    }
    meta
}

/// Checks, end to end on a loopback socket, that this kernel lets us use io_uring multishot recvmsg
/// with a provided buffer ring: the opcode probe alone cannot tell (multishot came in 6.0, after the
/// opcode). Returns why not, for the one log line that explains the fallback.
pub fn probe() -> Result<(), String> {
    if std::env::var_os("UDPTEE_SIMULATE_URING_FAILURE").is_some() {
        return Err(
            "simulated io_uring setup failure (UDPTEE_SIMULATE_URING_FAILURE is set)".into(),
        );
    }
    let fail = |what: &str, e: io::Error| format!("{what}: {e}");
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(|e| fail("probe socket", e))?;
    let pool = BufPool::new(4, 64);
    let mut recv = UringRecv::new(&rx, 2).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring is not available (ENOSYS: old kernel or seccomp)".into(),
        Some(libc::EPERM) => {
            "io_uring is not permitted (EPERM: kernel.io_uring_disabled or seccomp)".into()
        }
        _ => fail("io_uring setup", e),
    })?;
    recv.provide(&pool, &mut Vec::new());
    let tx = UdpSocket::bind("127.0.0.1:0").map_err(|e| fail("probe socket", e))?;
    tx.send_to(
        b"udptee-probe",
        rx.local_addr().map_err(|e| fail("probe socket", e))?,
    )
    .map_err(|e| fail("probe send", e))?;
    let mut ids = [BufId::default(); 2];
    let mut meta = [RecvMeta::default(); 2];
    let n = recv
        .recv_batch(
            std::os::fd::AsFd::as_fd(&rx),
            &pool,
            &mut ids,
            &mut meta,
            Duration::from_secs(1),
        )
        .map_err(|e| fail("multishot recvmsg", e))?;
    if n != 1 || meta[0].len != 12 || meta[0].truncated {
        return Err(format!(
            "multishot recvmsg did not deliver the probe datagram (got {n})"
        ));
    }
    Ok(())
}
