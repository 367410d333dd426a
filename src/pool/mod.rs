//! The preallocated datagram pool: fixed-size slots, allocated and touched once at start-up.
//!
//! A slot is owned by whoever holds its [`BufId`]: a worker while the kernel fills it, then every target
//! it was dispatched to. `share` sets how many holders it has; each `release` drops one, and the last one
//! returns the slot to the lock-free free list. Nothing is allocated or locked after `new`.
//!
//! Slot bytes are `AtomicU8`, so the kernel may write a slot through a raw pointer (recvmmsg) while other
//! threads read other slots, with no `&mut` ever formed and no `unsafe` here; the raw pointers are only
//! dereferenced by the kernel, in `net::mmsg`. Hot path: `try_take`, `share`, `release`.

pub mod ring;

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

/// Index of a slot in a [`BufPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BufId(u32);

impl BufId {
    /// The slot index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Bytes in front of every payload: io_uring's multishot recvmsg writes its 16-byte
/// `io_uring_recvmsg_out` and the control messages (64 bytes, `net::mmsg::CMSG_BYTES`) there, so
/// both backends share one slot layout and senders always find the payload at the same offset.
pub const HEADROOM: usize = 80;

/// Page size used to pre-fault the pool; a larger real page only means fewer faults were needed.
const PAGE_BYTES: usize = 4096;

/// Fixed-size datagram slots shared by workers and senders.
#[derive(Debug)]
pub struct BufPool {
    bytes: Box<[AtomicU8]>,
    slot_bytes: usize,
    lens: Box<[AtomicU32]>,
    refs: Box<[AtomicU32]>,
    rx_nanos: Box<[AtomicU64]>,
    free: ArrayQueue<BufId>,
}

impl BufPool {
    /// Allocates `slots` slots of `slot_bytes` each and writes one byte per page so the memory is
    /// resident before the first datagram: no page fault, no allocation on the hot path.
    ///
    /// # Panics
    /// If the allocation fails or `slots` is out of range; see [`try_new`](Self::try_new).
    pub fn new(slots: usize, slot_bytes: usize) -> Self {
        Self::try_new(slots, slot_bytes).expect("pool allocation")
    }

    /// Like [`new`](Self::new), but says why instead of panicking: `slots` must be 1 to `u32::MAX`
    /// and the allocation must succeed.
    pub fn try_new(slots: usize, slot_bytes: usize) -> Result<Self, String> {
        if slots == 0 || u32::try_from(slots).is_err() {
            return Err(format!(
                "a pool of {slots} slots is out of range (1 to {})",
                u32::MAX
            ));
        }
        let total = slots
            .checked_mul(HEADROOM + slot_bytes)
            .ok_or("the pool size overflows")?;
        let bytes: Box<[AtomicU8]> = bytemuck::try_zeroed_slice_box(total)
            .map_err(|()| format!("allocating {total} bytes failed"))?;
        for byte in bytes.iter().step_by(PAGE_BYTES) {
            byte.store(0, Ordering::Relaxed);
        }
        let free = ArrayQueue::new(slots);
        for i in 0..slots {
            let _ = free.push(BufId(i as u32));
        }
        Ok(Self {
            bytes,
            slot_bytes,
            lens: bytemuck::zeroed_slice_box(slots),
            refs: bytemuck::zeroed_slice_box(slots),
            rx_nanos: bytemuck::zeroed_slice_box(slots),
            free,
        })
    }

    /// Payload bytes per slot (each slot also has [`HEADROOM`] in front).
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Slots currently free.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Takes a free slot, or `None` when the pool is dry (a counted drop for the caller, never a wait).
    pub fn try_take(&self) -> Option<BufId> {
        self.free.pop()
    }

    /// Records the datagram length and kernel receive time of a filled slot.
    pub fn set_meta(&self, id: BufId, len: usize, rx_nanos: u64) {
        self.lens[id.index()].store(len as u32, Ordering::Relaxed);
        self.rx_nanos[id.index()].store(rx_nanos, Ordering::Relaxed);
    }

    /// Length of the datagram in the slot.
    pub fn len(&self, id: BufId) -> usize {
        self.lens[id.index()].load(Ordering::Relaxed) as usize
    }

    /// Kernel receive time of the datagram (ns since the Unix epoch; 0 if unknown).
    pub fn rx_nanos(&self, id: BufId) -> u64 {
        self.rx_nanos[id.index()].load(Ordering::Relaxed)
    }

    /// Hands a filled slot to `holders` owners; each must call [`release`](Self::release) once. The
    /// queue push that publishes the id orders this store before any holder's release.
    pub fn share(&self, id: BufId, holders: u32) {
        self.refs[id.index()].store(holders, Ordering::Relaxed);
    }

    /// Drops one holder; the last one returns the slot to the free list.
    pub fn release(&self, id: BufId) {
        if self.release_owned(id) {
            self.put_back(id);
        }
    }

    /// Drops one holder. Returns true when it was the last: the caller then owns the free slot and must
    /// reuse it or [`put_back`](Self::put_back) it. Workers reuse the slots they free at once, so their
    /// hot set stays one batch of cache-warm slots instead of cycling through the whole pool (the free
    /// list is FIFO).
    #[must_use]
    pub fn release_owned(&self, id: BufId) -> bool {
        // AcqRel: the last holder must see every other holder's use of the slot finished before the
        // slot is handed out (and written by the kernel) again.
        self.refs[id.index()].fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Returns a free slot, owned by the caller, to the free list.
    pub fn put_back(&self, id: BufId) {
        let pushed = self.free.push(id);
        debug_assert!(pushed.is_ok(), "free list holds each slot at most once");
    }

    fn start(&self, id: BufId) -> usize {
        id.index() * (HEADROOM + self.slot_bytes)
    }

    /// Start of the slot's payload, for the kernel to read or write; valid for `slot_bytes()` bytes
    /// for as long as the pool is borrowed.
    pub(crate) fn as_mut_ptr(&self, id: BufId) -> *mut u8 {
        self.bytes[self.start(id) + HEADROOM].as_ptr()
    }

    /// Start of the whole slot (headroom first), for io_uring's provided buffers; valid for
    /// `HEADROOM + slot_bytes()` bytes for as long as the pool is borrowed.
    pub(crate) fn slot_ptr(&self, id: BufId) -> *mut u8 {
        self.bytes[self.start(id)].as_ptr()
    }

    /// Copies the datagram in a slot into `dst` (as much as fits); returns the bytes copied.
    pub fn read_into(&self, id: BufId, dst: &mut [u8]) -> usize {
        let start = self.start(id) + HEADROOM;
        let n = self.len(id).min(dst.len()).min(self.slot_bytes);
        for (d, s) in dst[..n].iter_mut().zip(&self.bytes[start..start + n]) {
            *d = s.load(Ordering::Relaxed);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn slot_returns_only_after_last_holder() {
        let pool = BufPool::new(2, 64);
        let a = pool.try_take().unwrap();
        let _b = pool.try_take().unwrap();
        assert!(
            pool.try_take().is_none(),
            "a dry pool says so instead of allocating"
        );
        pool.share(a, 3);
        pool.release(a);
        pool.release(a);
        assert_eq!(
            pool.available(),
            0,
            "two of three holders released: still in use"
        );
        pool.release(a);
        assert_eq!(pool.try_take(), Some(a), "the last release frees the slot");
        pool.share(a, 2);
        assert!(!pool.release_owned(a), "not the last holder");
        assert!(
            pool.release_owned(a),
            "the last holder now owns the free slot"
        );
        assert_eq!(
            pool.available(),
            0,
            "an owned free slot is not on the free list until put back"
        );
        pool.put_back(a);
        assert_eq!(pool.available(), 1);
    }

    #[test]
    fn slots_do_not_overlap() {
        let pool = BufPool::new(3, 100);
        let p0 = pool.as_mut_ptr(BufId(0)) as usize;
        let p1 = pool.as_mut_ptr(BufId(1)) as usize;
        assert_eq!(
            p1 - p0,
            HEADROOM + 100,
            "slots are headroom + slot_bytes apart"
        );
        assert_eq!(
            p0 - pool.slot_ptr(BufId(0)) as usize,
            HEADROOM,
            "the payload follows the headroom"
        );
    }

    proptest! {
        /// Any interleaving of takes and releases keeps every slot either free or held, never both.
        #[test]
        fn free_plus_held_is_capacity(ops in proptest::collection::vec((0u8..2, 1u32..4), 1..200)) {
            let pool = BufPool::new(8, 16);
            let mut held: Vec<(BufId, u32)> = Vec::new();
            for (op, holders) in ops {
                if op == 0 {
                    if let Some(id) = pool.try_take() {
                        pool.share(id, holders);
                        held.push((id, holders));
                    }
                } else if let Some((id, n)) = held.pop() {
                    for _ in 0..n { pool.release(id); }
                }
                prop_assert_eq!(pool.available() + held.len(), pool.capacity());
            }
        }
    }
}
