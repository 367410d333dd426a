//! The preallocated datagram pool: the receive workers' staging slots, fixed-size, allocated and
//! touched once at start-up.
//!
//! A slot is owned by whoever holds its [`BufId`]: a worker, while the kernel fills it and until the
//! batch it arrived in has been dispatched (sent inline, or copied into a target's [`ring`]). Then the
//! worker keeps it as a spare or puts it back on the lock-free free list. Targets never hold slots.
//! Nothing is allocated or locked after `new`.
//!
//! Slot bytes are `AtomicU8`, so the kernel may write a slot through a raw pointer (recvmmsg) while other
//! threads read other slots, with no `&mut` ever formed and no `unsafe` here; the raw pointers are only
//! dereferenced by the kernel, in `net::mmsg`, and by the backlog copy in `ring`. Hot path: `try_take`,
//! `put_back`.
//!
//! Floor 1 (plain data and leaves): imports only the slot layout from `config`.

pub mod ring;

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

/// Checks that `bytes` more can be made resident: touching more than the host has would get the
/// process OOM-killed instead of refused with a message. Says what the host has when it cannot.
pub fn check_available(bytes: usize) -> Result<(), String> {
    match <procfs::Meminfo as procfs::Current>::current()
        .ok()
        .and_then(|m| m.mem_available)
    {
        Some(available) if bytes as u64 > available => {
            Err(format!("MemAvailable is {available} bytes"))
        }
        _ => Ok(()),
    }
}

/// Index of a slot in a [`BufPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BufId(u32);

impl BufId {
    /// The slot index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

pub use crate::config::HEADROOM;

/// Page size used to pre-fault the pool; a larger real page only means fewer faults were needed.
const PAGE_BYTES: usize = 4096;

/// Fixed-size datagram slots shared by workers and senders.
#[derive(Debug)]
pub struct BufPool {
    bytes: Box<[AtomicU8]>,
    slot_bytes: usize,
    lens: Box<[AtomicU32]>,
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

    /// Writes `src` as the datagram in a slot the caller owns (as much as fits: `slot_bytes()`) and
    /// records its length; returns the bytes written. For datagrams made in user space (a stream
    /// listener's packed lines), where the kernel did not write the slot.
    pub fn write(&self, id: BufId, src: &[u8]) -> usize {
        let start = self.start(id) + HEADROOM;
        let n = src.len().min(self.slot_bytes);
        for (d, s) in self.bytes[start..start + n].iter().zip(&src[..n]) {
            d.store(*s, Ordering::Relaxed);
        }
        self.set_meta(id, n, 0);
        n
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
    fn a_slot_is_free_only_once_put_back() {
        let pool = BufPool::new(2, 64);
        let a = pool.try_take().unwrap();
        let _b = pool.try_take().unwrap();
        assert!(
            pool.try_take().is_none(),
            "a dry pool says so instead of allocating"
        );
        pool.put_back(a);
        assert_eq!(pool.available(), 1);
        assert_eq!(
            pool.try_take(),
            Some(a),
            "the slot put back is handed out again"
        );
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
        /// Any interleaving of takes and put-backs keeps every slot either free or held, never both.
        #[test]
        fn free_plus_held_is_capacity(ops in proptest::collection::vec(0u8..2, 1..200)) {
            let pool = BufPool::new(8, 16);
            let mut held: Vec<BufId> = Vec::new();
            for op in ops {
                if op == 0 {
                    if let Some(id) = pool.try_take() {
                        prop_assert!(!held.contains(&id), "a held slot is never handed out");
                        held.push(id);
                    }
                } else if let Some(id) = held.pop() {
                    pool.put_back(id);
                }
                prop_assert_eq!(pool.available() + held.len(), pool.capacity());
            }
        }
    }
}
