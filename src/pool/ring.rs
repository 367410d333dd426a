//! A target's backlog: a byte ring that holds copies of the datagrams the kernel did not take at once,
//! packed back to back, so the memory a backlog costs is the bytes it holds, not slots x the largest
//! datagram.
//!
//! Many producers (the receive workers, serialised by a mutex taken once per batch, only when the
//! target has a backlog) and one consumer (the target's sender, lock-free). Positions are running byte
//! counts: `head` is where the next entry goes, `tail` the oldest entry not yet sent. Producers write
//! only in `[head, tail + capacity)`, the consumer reads only in `[tail, head)`, and each publishes its
//! position with Release after its bytes, so neither ever reads a byte the other is writing. An entry
//! is a 16-byte header (length, kernel receive time) and the payload, padded to 8 bytes; an entry
//! never wraps: a producer that meets the end skips to the start, writing a skip marker when there is
//! room for one. Allocated and touched once, when the target is created; nothing is allocated after.
#![allow(unsafe_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// Entry header: payload length (u32), reserved (u32), kernel receive time in ns (u64).
const HEADER: usize = 16;
/// Entries start on 8-byte boundaries, so a header never straddles the end of the ring.
const ALIGN: usize = 8;
/// Header length value that means "skip to the start of the ring".
const SKIP: u32 = u32::MAX;

/// Bytes one entry of `len` payload bytes occupies.
pub const fn entry_bytes(len: usize) -> usize {
    (HEADER + len).div_ceil(ALIGN) * ALIGN
}

/// A datagram read out of the ring: where its bytes are, and when the kernel received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Ring position of the entry (pass the last one's `next` to [`ByteRing::consume`]).
    pub next: u64,
    /// Start of the payload, valid for reads of `len` bytes until the entry is consumed.
    pub ptr: *const u8,
    /// Payload length.
    pub len: usize,
    /// Kernel receive time, ns since the Unix epoch (0 when unknown).
    pub rx_nanos: u64,
}

/// The byte ring of one target. See the module docs for the protocol.
#[derive(Debug)]
pub struct ByteRing {
    bytes: Box<[AtomicU8]>,
    /// Next write position; written by producers under `produce`, read by the consumer (Acquire).
    head: AtomicU64,
    /// Oldest unconsumed position; written by the consumer only, read by producers (Acquire).
    tail: AtomicU64,
    /// Entries in the ring (a gauge; it may briefly lag the positions).
    entries: AtomicUsize,
    /// Most entries the ring may hold (`--queue-depth`), beside its byte capacity.
    max_entries: usize,
    produce: Mutex<()>,
}

impl ByteRing {
    /// A ring of `capacity` bytes (rounded up to 8) holding at most `max_entries` datagrams, allocated
    /// and touched now so that it is resident before the first datagram.
    pub fn try_new(capacity: usize, max_entries: usize) -> Result<Self, String> {
        let capacity = capacity.max(ALIGN).div_ceil(ALIGN) * ALIGN;
        super::check_available(capacity).map_err(|available| {
            format!("a {capacity}-byte target queue does not fit: {available}")
        })?;
        let bytes: Box<[AtomicU8]> = bytemuck::try_zeroed_slice_box(capacity)
            .map_err(|()| format!("allocating a {capacity}-byte target queue failed"))?;
        for byte in bytes.iter().step_by(4096) {
            byte.store(0, Ordering::Relaxed);
        }
        Ok(Self {
            bytes,
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            entries: AtomicUsize::new(0),
            max_entries: max_entries.max(1),
            produce: Mutex::new(()),
        })
    }

    /// Byte capacity.
    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// Entries queued now.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Bytes in use now (entries, their headers and any skipped end).
    pub fn used_bytes(&self) -> usize {
        let tail = self.tail.load(Ordering::Relaxed);
        self.head.load(Ordering::Relaxed).saturating_sub(tail) as usize
    }

    /// True when every entry ever pushed has been consumed. Acquire: pairs with the consumer's Release
    /// in [`consume`](Self::consume), so `true` means every earlier copy was handed to the kernel.
    pub fn is_empty(&self) -> bool {
        self.tail.load(Ordering::Acquire) == self.head.load(Ordering::Acquire)
    }

    fn ptr(&self, pos: u64) -> *mut u8 {
        self.bytes[(pos % self.bytes.len() as u64) as usize].as_ptr()
    }

    /// Locks the ring for one batch of pushes.
    pub fn producer(&self) -> Producer<'_> {
        let guard = self.produce.lock().unwrap_or_else(|p| p.into_inner());
        Producer {
            ring: self,
            head: self.head.load(Ordering::Relaxed),
            tail: self.tail.load(Ordering::Acquire),
            pushed: 0,
            _guard: guard,
        }
    }

    /// Reads up to `out.len()` entries from `from` (the consumer's position: 0 at first, then the
    /// last entry's `next`) without consuming them; returns how many were read.
    pub fn peek(&self, from: u64, out: &mut [Entry]) -> usize {
        let head = self.head.load(Ordering::Acquire);
        let cap = self.bytes.len() as u64;
        let mut pos = from;
        let mut n = 0;
        while n < out.len() && pos < head {
            let offset = pos % cap;
            if cap - offset < HEADER as u64 {
                pos += cap - offset;
                continue;
            }
            let mut header = [0u8; HEADER];
            // SAFETY: `offset + HEADER <= cap` (checked above), so the source is inside `bytes`; the
            // range lies in `[tail, head)`, which producers do not write until the consumer moves tail
            // past it, and head was loaded with Acquire after their Release, so the bytes are complete.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr(pos), header.as_mut_ptr(), HEADER);
            }
            let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
            if len == SKIP {
                pos += cap - offset;
                continue;
            }
            let len = len as usize;
            let rx_nanos = u64::from_ne_bytes(header[8..16].try_into().unwrap_or_default());
            let next = pos + entry_bytes(len) as u64;
            out[n] = Entry {
                next,
                ptr: self.ptr(pos + HEADER as u64),
                len,
                rx_nanos,
            };
            n += 1;
            pos = next;
        }
        n
    }

    /// The payload of `e`, for the consumer to read in place (a filtered target's sender).
    ///
    /// # Safety
    /// `e` must come from this ring's [`peek`](Self::peek) and not be consumed yet: until then
    /// producers do not write its bytes (see `peek`), so they do not change under the borrow.
    pub unsafe fn payload(&self, e: &Entry) -> &[u8] {
        // SAFETY: by the contract, `e.ptr..e.ptr + e.len` lies inside `bytes` (peek built it from a
        // complete entry, which never wraps) and no producer writes it while the borrow lives;
        // AtomicU8 has the layout of u8.
        unsafe { std::slice::from_raw_parts(e.ptr, e.len) }
    }

    /// Frees everything before `to` (a `next` from [`peek`](Self::peek)), `entries` entries.
    pub fn consume(&self, to: u64, entries: usize) {
        self.entries.fetch_sub(entries, Ordering::Relaxed);
        // Release: producers that see the new tail see our reads of the freed bytes completed.
        self.tail.store(to, Ordering::Release);
    }
}

// SAFETY: the raw pointer in `Entry` points into a ring's AtomicU8 storage, which is Sync; it is only
// dereferenced by the kernel (sendmmsg) or by `ByteRing` under the protocol above.
unsafe impl Send for Entry {}

impl Default for Entry {
    fn default() -> Self {
        Self {
            next: 0,
            ptr: std::ptr::null(),
            len: 0,
            rx_nanos: 0,
        }
    }
}

/// One batch of pushes, holding the producer lock; publishes what it pushed when dropped.
#[derive(Debug)]
pub struct Producer<'a> {
    ring: &'a ByteRing,
    head: u64,
    tail: u64,
    pushed: usize,
    _guard: std::sync::MutexGuard<'a, ()>,
}

impl Producer<'_> {
    /// Copies one datagram of `len` bytes from `src` into the ring. Returns false, copying nothing,
    /// when it does not fit (the byte or the entry bound): the caller counts it `queue_full`.
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes, and not written by anyone during the call.
    pub unsafe fn push(&mut self, src: *const u8, len: usize, rx_nanos: u64) -> bool {
        // SAFETY: forwarded from the caller's contract; an empty prefix adds nothing.
        unsafe { self.push_prefixed(&[], src, len, rx_nanos) }
    }

    /// Copies `data` into the ring as one entry; see [`push`](Self::push).
    pub fn push_bytes(&mut self, data: &[u8], rx_nanos: u64) -> bool {
        // SAFETY: a shared slice is valid for reads of its length, and nobody writes it while it is
        // borrowed.
        unsafe { self.push(data.as_ptr(), data.len(), rx_nanos) }
    }

    /// Like [`push`](Self::push), with `prefix` written in front of the payload; the entry's length
    /// is `prefix.len() + len` (an observer's peer addresses).
    ///
    /// # Safety
    /// As [`push`](Self::push).
    pub unsafe fn push_prefixed(
        &mut self,
        prefix: &[u8],
        src: *const u8,
        len: usize,
        rx_nanos: u64,
    ) -> bool {
        let (plen, len) = (prefix.len(), prefix.len() + len);
        let Ok(len32) = u32::try_from(len) else {
            return false;
        };
        if len32 == SKIP {
            return false;
        }
        let cap = self.ring.bytes.len() as u64;
        let need = entry_bytes(len) as u64;
        if self.ring.entries.load(Ordering::Relaxed) + self.pushed >= self.ring.max_entries {
            return false;
        }
        let mut free = cap - (self.head - self.tail);
        let offset = self.head % cap;
        let skip = if offset + need > cap { cap - offset } else { 0 };
        if skip + need > free {
            // The consumer may have moved on since we locked: look once more before refusing.
            self.tail = self.ring.tail.load(Ordering::Acquire);
            free = cap - (self.head - self.tail);
            if skip + need > free {
                return false;
            }
        }
        if skip > 0 {
            if skip >= HEADER as u64 {
                let marker = SKIP.to_ne_bytes();
                // SAFETY: `offset + 4 <= cap` since skip >= HEADER; the range is free (within
                // `[head, tail + cap)`) and only this producer, holding the lock, writes there.
                unsafe {
                    std::ptr::copy_nonoverlapping(marker.as_ptr(), self.ring.ptr(self.head), 4);
                }
            }
            self.head += skip;
        }
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&len32.to_ne_bytes());
        header[8..].copy_from_slice(&rx_nanos.to_ne_bytes());
        // SAFETY: the entry fits before the end of the ring (skip made it start at 0 otherwise) and in
        // free space, which only this producer writes while it holds the lock; `src` is valid for
        // `len` bytes by the caller's contract and cannot overlap the ring's free space.
        unsafe {
            let at = self.head + HEADER as u64;
            std::ptr::copy_nonoverlapping(header.as_ptr(), self.ring.ptr(self.head), HEADER);
            std::ptr::copy_nonoverlapping(prefix.as_ptr(), self.ring.ptr(at), plen);
            std::ptr::copy_nonoverlapping(src, self.ring.ptr(at + plen as u64), len - plen);
        }
        self.head += need;
        self.pushed += 1;
        true
    }
}

impl Producer<'_> {
    /// Copies the datagram in pool slot `id` into the ring behind `prefix` (an origin, or
    /// nothing); see [`push`](Self::push). The caller must hold `id` (a received slot not armed for
    /// the kernel), so nobody writes it during the copy.
    pub(crate) fn push_slot_with(
        &mut self,
        prefix: &[u8],
        pool: &super::BufPool,
        id: super::BufId,
    ) -> bool {
        let len = pool.len(id).min(pool.slot_bytes());
        // SAFETY: a slot's payload is valid for `slot_bytes()` bytes while `pool` is borrowed, `len`
        // is within it, and the holder's contract above means no one writes it during the copy.
        unsafe { self.push_prefixed(prefix, pool.as_mut_ptr(id), len, pool.rx_nanos(id)) }
    }
}

impl Drop for Producer<'_> {
    fn drop(&mut self) {
        if self.pushed > 0 {
            self.ring.entries.fetch_add(self.pushed, Ordering::Relaxed);
            // Release: the consumer's Acquire load of head sees the bytes written above.
            self.ring.head.store(self.head, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn push(ring: &ByteRing, data: &[u8], rx: u64) -> bool {
        let mut p = ring.producer();
        // SAFETY: `data` is a live slice for the call.
        unsafe { p.push(data.as_ptr(), data.len(), rx) }
    }

    fn read(e: &Entry) -> Vec<u8> {
        // SAFETY: unconsumed entries stay valid; tests read them before consuming.
        unsafe { std::slice::from_raw_parts(e.ptr, e.len).to_vec() }
    }

    #[test]
    fn entries_come_out_in_order_with_their_metadata() {
        let ring = ByteRing::try_new(256, 100).unwrap();
        assert!(push(&ring, b"first", 7));
        assert!(push(&ring, b"", 8));
        assert!(!ring.is_empty());
        let mut out = [Entry::default(); 4];
        let n = ring.peek(0, &mut out);
        assert_eq!(n, 2);
        assert_eq!(
            (read(&out[0]), out[0].rx_nanos),
            (b"first".to_vec(), 7),
            "payload and receive time survive"
        );
        assert_eq!(out[1].len, 0, "empty datagrams are datagrams");
        ring.consume(out[1].next, 2);
        assert!(ring.is_empty());
        assert_eq!(ring.len(), 0, "the entry gauge follows");
    }

    #[test]
    fn a_full_ring_refuses_instead_of_overwriting() {
        let ring = ByteRing::try_new(64, 100).unwrap();
        assert!(push(&ring, &[1; 16], 0), "32 bytes");
        assert!(push(&ring, &[2; 16], 0), "64 bytes: full");
        assert!(!push(&ring, &[3; 1], 0), "no room: refused");
        assert!(!push(&ring, &[0; 100], 0), "larger than the ring: refused");
        let ring = ByteRing::try_new(1024, 2).unwrap();
        assert!(push(&ring, b"a", 0) && push(&ring, b"b", 0));
        assert!(!push(&ring, b"c", 0), "the entry bound holds too");
    }

    proptest! {
        /// Any sequence of pushes and partial consumes returns exactly what was pushed, in order,
        /// across wraparound, and never more than the ring holds.
        #[test]
        fn fifo_across_wraparound(ops in proptest::collection::vec((0usize..90, 0usize..4), 1..300)) {
            let ring = ByteRing::try_new(256, 1000).unwrap();
            let mut model: std::collections::VecDeque<Vec<u8>> = Default::default();
            let mut pos = 0;
            for (i, (len, take)) in ops.into_iter().enumerate() {
                let data: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
                if push(&ring, &data, i as u64) {
                    model.push_back(data);
                }
                prop_assert!(ring.used_bytes() <= ring.capacity());
                let mut out = [Entry::default(); 4];
                let n = ring.peek(pos, &mut out[..take]);
                for e in &out[..n] {
                    prop_assert_eq!(Some(read(e)), model.pop_front());
                }
                if n > 0 {
                    pos = out[n - 1].next;
                    ring.consume(pos, n);
                }
                prop_assert_eq!(ring.len(), model.len());
            }
        }
    }
}
