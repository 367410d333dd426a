//! The book: which targets the kernel served under each recent generation, read by a worker for
//! every marked datagram (one relaxed load per datagram, only with the fast path on), and the marks
//! the program writes. Hot path; imports nothing of udptee's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// `skb->mark` of an original the program passed up, `| generation & 0xffff`.
pub(crate) const MARK_HANDLED: u32 = 0x7ee1_0000;
/// `skb->mark` of a copy the program made (never copied again).
pub const MARK_COPY: u32 = 0x7ee2_0000;
const MARK_MASK: u32 = 0xffff_0000;

/// Which targets the kernel served under each recent generation: what a worker reads for a marked
/// datagram. Written by the owner before the generation is published to the program.
#[derive(Debug)]
pub struct Book {
    entries: Box<[BookEntry]>,
    /// Marked datagrams whose generation had already left the book (served by user space too).
    stale: AtomicU64,
}

#[derive(Debug, Default)]
struct BookEntry {
    generation: AtomicU32,
    v4: AtomicU64,
    v6: AtomicU64,
}

const BOOK_LEN: usize = 256;

impl Default for Book {
    fn default() -> Self {
        Self {
            entries: (0..BOOK_LEN).map(|_| BookEntry::default()).collect(),
            stale: AtomicU64::new(0),
        }
    }
}

impl Book {
    /// The target bits (by slot) the kernel already served for a datagram received with `mark` from
    /// `src`; 0 for one it did not handle.
    #[inline]
    pub(crate) fn served(&self, mark: u32, src: Option<SocketAddr>) -> u64 {
        if mark & MARK_MASK != MARK_HANDLED {
            return 0;
        }
        let g = mark & 0xffff;
        let e = &self.entries[g as usize % BOOK_LEN];
        if e.generation.load(Ordering::Acquire) & 0xffff != g {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        if is_v4(src) {
            e.v4.load(Ordering::Relaxed)
        } else {
            e.v6.load(Ordering::Relaxed)
        }
    }

    pub(crate) fn record(&self, generation: u32, v4: u64, v6: u64) {
        let e = &self.entries[(generation & 0xffff) as usize % BOOK_LEN];
        e.v4.store(v4, Ordering::Relaxed);
        e.v6.store(v6, Ordering::Relaxed);
        e.generation.store(generation, Ordering::Release);
    }

    /// Every generation recorded: (generation, IPv4 slots, IPv6 slots).
    pub(crate) fn entries(&self) -> Vec<(u32, u64, u64)> {
        self.entries
            .iter()
            .map(|e| {
                (
                    e.generation.load(Ordering::Acquire),
                    e.v4.load(Ordering::Relaxed),
                    e.v6.load(Ordering::Relaxed),
                )
            })
            .filter(|&(g, _, _)| g != 0)
            .collect()
    }

    /// Marked datagrams whose generation was no longer known.
    pub fn stale(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }
}

fn is_v4(src: Option<SocketAddr>) -> bool {
    match src {
        Some(SocketAddr::V4(_)) => true,
        Some(SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().is_some(),
        None => false,
    }
}

/// One generation of another instance's book, by target name: handed over with the sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BookRecord {
    /// The generation (its low 16 bits are in the marks).
    pub generation: u32,
    /// The targets it served IPv4 datagrams for.
    pub v4: Vec<String>,
    /// The targets it served IPv6 datagrams for.
    pub v6: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_read_only_for_its_own_generation_and_family() {
        let book = Book::default();
        book.record(7, 0b01, 0b10);
        let v4 = Some("127.0.0.1:9".parse().unwrap());
        let v6 = Some("[::1]:9".parse().unwrap());
        let mapped = Some("[::ffff:127.0.0.1]:9".parse().unwrap());
        assert_eq!(book.served(MARK_HANDLED | 7, v4), 0b01);
        assert_eq!(book.served(MARK_HANDLED | 7, mapped), 0b01);
        assert_eq!(book.served(MARK_HANDLED | 7, v6), 0b10);
        assert_eq!(book.served(0, v4), 0, "unmarked: user space serves all");
        assert_eq!(
            book.served(MARK_COPY | 7, v4),
            0,
            "a copy's mark is not a handled one"
        );
        assert_eq!(book.served(0x1234_0007, v4), 0, "someone else's mark");
        assert_eq!(book.stale(), 0);
        book.record(7 + BOOK_LEN as u32, 0b100, 0);
        assert_eq!(
            book.served(MARK_HANDLED | 7, v4),
            0,
            "overwritten: not guessed"
        );
        assert_eq!(book.stale(), 1, "and counted");
    }
}
