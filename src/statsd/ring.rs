//! statsd's own consistent-hash ring: the one Etsy statsd's `proxy.js` builds with `hashring` 3.2.0
//! (the version statsd 0.9.0 pins), so a udptee group and a proxy.js agree key for key.
//!
//! proxy.js gives every member weight 100 and asks for `replicas: 0`, which hashring turns into 1.
//! Then, for the n members in the ring (those up):
//! - a member's identity is its address string as written (`127.0.0.1:8127`, or a host name as
//!   the name);
//! - it has `floor((100 / (100 * n)) * 40 * n)` points, evaluated in IEEE double left to right as
//!   JavaScript does: 40 for most n, 39 for n = 7 and n = 14;
//! - point i is the little-endian u32 of bytes 0..4 of `md5(identity + "-" + i)`;
//! - a key's hash is the same u32 of `md5(key)`, and the key belongs to the member of the first
//!   point at or above it, wrapping to the first point.
//!
//! Any change of the member set rebuilds the whole ring, as hashring does: going from 8 to 7
//! members also moves about 1.2% of the keys of members that stayed (their point count drops
//! from 40 to 39). That is proxy.js's behaviour, kept on purpose.
//!
//! The key of a line is its bytes before the first `:` (the whole line when it has none): the
//! metric name, whatever its tags. proxy.js decodes the datagram as UTF-8 first, so for a key that
//! is not valid UTF-8 it hashes the replacement characters; udptee hashes the bytes as received.

use md5::{Digest, Md5};

/// The weight proxy.js gives every member.
const WEIGHT: f64 = 100.0;
/// hashring's default `vnode count`.
const VNODES: f64 = 40.0;

/// The u32 a key hashes to on the ring.
pub fn hash(key: &[u8]) -> u32 {
    let d = Md5::digest(key);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// Keys up to this long are remembered by [`KeyHashes`]; a longer one is hashed every time.
const CACHED_KEY: usize = 55;
/// Keys [`KeyHashes`] remembers (a power of two).
const CACHED_KEYS: usize = 4096;

/// One remembered key and its hash: 64 bytes, a cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Remembered {
    len: u8,
    key: [u8; CACHED_KEY],
    hash: u32,
}

/// The md5 [`hash`] of recently seen keys: metric names repeat (a host's clients send a few
/// thousand), and md5 is most of what sharding a line costs. Direct-mapped by a fast hash of the
/// key, each entry compared byte for byte, so what it answers is exactly what [`hash`] computes.
/// 256 KiB, one per sharding thread: no lock.
#[derive(Debug)]
pub struct KeyHashes {
    slots: Box<[Remembered]>,
}

impl Default for KeyHashes {
    fn default() -> Self {
        let empty = Remembered {
            len: u8::MAX,
            key: [0; CACHED_KEY],
            hash: 0,
        };
        Self {
            slots: vec![empty; CACHED_KEYS].into(),
        }
    }
}

impl KeyHashes {
    /// [`hash`] of `key`, remembered.
    pub fn hash(&mut self, key: &[u8]) -> u32 {
        if key.len() > CACHED_KEY {
            return hash(key);
        }
        let i = xxhash_rust::xxh3::xxh3_64(key) as usize & (CACHED_KEYS - 1);
        let slot = &mut self.slots[i];
        if usize::from(slot.len) == key.len() && &slot.key[..key.len()] == key {
            return slot.hash;
        }
        let h = hash(key);
        slot.len = key.len() as u8;
        slot.key[..key.len()].copy_from_slice(key);
        slot.hash = h;
        h
    }
}

/// The key of one line (without its `\n`): the bytes before its first `:`, or the whole line.
pub fn key(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == b':') {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Points each member gets in a ring of `n` members, as hashring 3.2.0 computes it.
pub fn points_per_member(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let n = n as f64;
    let total = WEIGHT * n;
    ((WEIGHT / total) * VNODES * n).floor() as usize
}

/// A built ring: points in ascending order, each with the index of its member.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: Box<[u32]>,
    owners: Box<[u16]>,
}

impl Ring {
    /// The ring of the members `(index, identity)` given (the live ones, in any order: the ring
    /// does not depend on it). Indexes are the caller's (its member list), at most `u16::MAX`.
    pub fn new<'a>(members: impl IntoIterator<Item = (usize, &'a str)>) -> Self {
        let members: Vec<(usize, &str)> = members.into_iter().collect();
        let per = points_per_member(members.len());
        let mut all: Vec<(u32, u16)> = Vec::with_capacity(per * members.len());
        for &(index, identity) in &members {
            let mut text = Vec::with_capacity(identity.len() + 8);
            for i in 0..per {
                text.clear();
                text.extend_from_slice(identity.as_bytes());
                text.push(b'-');
                text.extend_from_slice(i.to_string().as_bytes());
                all.push((hash(&text), index as u16));
            }
        }
        // Ties (two points of one value) keep their member order: stable, like the JS sort.
        all.sort_by_key(|&(p, _)| p);
        Self {
            points: all.iter().map(|&(p, _)| p).collect(),
            owners: all.iter().map(|&(_, o)| o).collect(),
        }
    }

    /// No member in the ring.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// All points, ascending.
    pub fn points(&self) -> &[u32] {
        &self.points
    }

    /// The point a hash lands on (the first at or above it, wrapping) and its member's index.
    pub fn locate(&self, hash: u32) -> Option<(usize, usize)> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|&p| p < hash);
        let i = if i == self.points.len() { 0 } else { i };
        Some((i, usize::from(self.owners[i])))
    }

    /// The index of the member a key belongs to, if any member is in the ring.
    pub fn member_of(&self, key: &[u8]) -> Option<usize> {
        self.locate(hash(key)).map(|(_, m)| m)
    }

    /// How many points member `index` holds.
    pub fn points_of(&self, index: usize) -> usize {
        self.owners
            .iter()
            .filter(|&&o| usize::from(o) == index)
            .count()
    }

    /// The share of the hash space member `index` owns, 0 to 1: a point owns the hashes above the
    /// point before it up to itself (the first point also owns those above the last).
    pub fn share(&self, index: usize) -> f64 {
        let n = self.points.len();
        let mut owned: u64 = 0;
        for i in 0..n {
            if usize::from(self.owners[i]) != index {
                continue;
            }
            let p = u64::from(self.points[i]);
            owned += if i == 0 {
                // (last, 2^32) wrapped, then [0, first].
                (1u64 << 32) - u64::from(self.points[n - 1]) + p
            } else {
                p - u64::from(self.points[i - 1])
            };
        }
        owned as f64 / (1u64 << 32) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "127.0.0.1:8127";
    const B: &str = "127.0.0.1:8129";
    const C: &str = "127.0.0.1:8131";

    fn three() -> Ring {
        Ring::new([(0, A), (1, B), (2, C)])
    }

    #[test]
    fn points_follow_hashring_3_2_0_in_double_arithmetic() {
        for n in 1..=20 {
            let want = if n == 7 || n == 14 { 39 } else { 40 };
            assert_eq!(points_per_member(n), want, "n = {n}");
        }
        assert_eq!(points_per_member(0), 0);
    }

    #[test]
    fn the_issue_vectors_hold() {
        let r = three();
        assert_eq!(r.points().len(), 120);
        assert_eq!(r.points()[0], 18286208);
        assert_eq!(r.locate(0).unwrap().1, 1);
        assert_eq!(*r.points().last().unwrap(), 4266742389);
        assert_eq!(r.owners[119], 2);
        assert_eq!(hash(b"page.views"), 506656135);
        let cases: [(&[u8], usize); 8] = [
            (b"page.views", 1),
            (b"users.online", 1),
            (b"api.latency", 2),
            (b"gorets", 0),
            (b"foo", 0),
            (b"a.b.c", 2),
            (b"_e{21,36}", 1),
            ("metric_ü".as_bytes(), 0),
        ];
        for (k, m) in cases {
            assert_eq!(r.member_of(k), Some(m), "{}", String::from_utf8_lossy(k));
        }
        let without_b = Ring::new([(0, A), (2, C)]);
        assert_eq!(without_b.member_of(b"page.views"), Some(2));
        assert_eq!(without_b.member_of(b"users.online"), Some(2));
        assert_eq!(without_b.member_of(b"gorets"), Some(0));
    }

    #[test]
    fn keys_are_the_name_before_the_first_colon() {
        assert_eq!(key(b"page.views:1|c|#a:b"), b"page.views");
        assert_eq!(key(b"_e{21,36}:title|text"), b"_e{21,36}");
        assert_eq!(key(b"_sc|name|0|#env:prod"), b"_sc|name|0|#env");
        assert_eq!(key(b"nocolon"), b"nocolon");
        assert_eq!(key(b":1|c"), b"");
    }

    #[test]
    fn shares_add_up_to_the_whole_space_and_an_empty_ring_owns_nothing() {
        let r = three();
        let total: f64 = (0..3).map(|i| r.share(i)).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        assert_eq!((0..3).map(|i| r.points_of(i)).sum::<usize>(), 120);
        let empty = Ring::new(std::iter::empty());
        assert!(empty.is_empty());
        assert_eq!(empty.member_of(b"x"), None);
    }

    #[test]
    fn a_hash_above_the_last_point_wraps_to_the_first() {
        let r = three();
        assert_eq!(r.locate(u32::MAX), Some((0, 1)));
        assert_eq!(r.locate(4266742389), Some((119, 2)));
        assert_eq!(r.locate(4266742390).unwrap().0, 0);
    }

    proptest::proptest! {
        /// What the cache answers is md5's answer, for any keys, however they collide in it:
        /// long and short, repeated, and more than it holds.
        #[test]
        fn remembered_hashes_are_md5s(
            keys in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..70), 1..300),
        ) {
            let mut cache = KeyHashes::default();
            for round in 0..2 {
                for k in &keys {
                    proptest::prop_assert_eq!(cache.hash(k), hash(k), "round {}", round);
                }
            }
        }
    }
}
