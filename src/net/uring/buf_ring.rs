//! `BufRing`: a provided-buffer ring registered with one io_uring, around the crate's raw pieces
//! (`register_buf_ring_with_flags`, `BufRingEntry`). Available since Linux 5.19.
//!
//! The ring memory is an anonymous, page-aligned mapping of `entries` 16-byte entries that the kernel
//! reads; we are its only producer. [`push`](BufRing::push) writes an entry past the tail (invisible to
//! the kernel), [`publish`](BufRing::publish) makes every pushed entry visible with one release store of
//! the tail, as io_uring_buf_ring_advance(3) does. Dropping it unmaps the memory; the owner must drop
//! the io_uring first (which releases the registration), so the kernel never reads freed memory.
#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

/// A registered provided-buffer ring.
pub(crate) struct BufRing {
    base: NonNull<BufRingEntry>,
    map_bytes: usize,
    mask: u16,
    tail: u16,
    bgid: u16,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves that ownership.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Maps and registers a ring of `entries` (a power of two, at most 32768) as buffer group `bgid`.
    pub(crate) fn new(ring: &IoUring, entries: u16, bgid: u16) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring entries must be a power of two <= 32768",
            ));
        }
        let map_bytes = usize::from(entries) * size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping with no address hint has no preconditions; we check
        // MAP_FAILED below. Anonymous mappings are zeroed and page-aligned, as the kernel requires.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(addr.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        let this = Self {
            base,
            map_bytes,
            mask: entries - 1,
            tail: 0,
            bgid,
        };
        // SAFETY: `base` points to `entries` zeroed, page-aligned entries that stay mapped until `this`
        // is dropped, which the owner does only after the ring (and so the registration) is gone.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(base.as_ptr() as u64, entries, bgid, 0)?
        };
        Ok(this)
    }

    /// The buffer group id to name in SQEs.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Writes a buffer entry past the tail; the kernel sees it after [`publish`](Self::publish). The
    /// caller keeps at most `entries` buffers in the ring (it tracks them by `bid`).
    pub(crate) fn push(&mut self, addr: *mut u8, len: u32, bid: u16) {
        let index = usize::from(self.tail & self.mask);
        // SAFETY: `index` < entries, inside our mapping. The kernel only reads entries before the
        // published tail, and this one is past it, so we are the only accessor.
        let entry = unsafe { &mut *self.base.as_ptr().add(index) };
        entry.set_addr(addr as u64);
        entry.set_len(len);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed entry visible to the kernel.
    pub(crate) fn publish(&mut self) {
        // SAFETY: `base` is the first entry of a live, initialised ring, as BufRingEntry::tail requires;
        // the tail field is a u16 the kernel reads atomically, so an AtomicU16 view of it is sound.
        let tail = unsafe { &*BufRingEntry::tail(self.base.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly `map_bytes` at `base`; the owner dropped the io_uring first, so the
        // kernel no longer reads this memory.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_bytes) };
    }
}
