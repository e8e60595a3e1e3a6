//! A stable 64-bit hash for trace digests, scenario hashes and world
//! fingerprints.
//!
//! `std`'s `DefaultHasher` is randomly keyed per process and its algorithm
//! may change between Rust releases, so nothing that is compared across runs
//! or stored in a file may use it. [`StableHasher`] is a fixed, documented
//! function of the bytes and words written to it: the same input gives the
//! same value in every process, build profile and platform of the same
//! pointer width.

use std::hash::{Hash, Hasher};

const K: u64 = 0x9E37_79B9_7F4A_7C15;
const SEED: u64 = 0x5157_4D43_4153_5431; // "QWMCAST1"

/// The `Hasher` writes of a hasher that absorbs 64-bit words
/// (`self.absorb(u64)`): integers as one word each, bytes 8 at a time
/// (little-endian), the tail padded and tagged with its length so "ab" and
/// "ab\0" differ.
macro_rules! word_writes {
    () => {
        fn write(&mut self, bytes: &[u8]) {
            let mut chunks = bytes.chunks_exact(8);
            for c in &mut chunks {
                self.absorb(u64::from_le_bytes(c.try_into().expect("8 bytes")));
            }
            let rest = chunks.remainder();
            if !rest.is_empty() {
                let mut buf = [0u8; 8];
                buf[..rest.len()].copy_from_slice(rest);
                self.absorb(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
            }
        }

        #[inline]
        fn write_u8(&mut self, i: u8) {
            self.absorb(u64::from(i));
        }
        #[inline]
        fn write_u16(&mut self, i: u16) {
            self.absorb(u64::from(i));
        }
        #[inline]
        fn write_u32(&mut self, i: u32) {
            self.absorb(u64::from(i));
        }
        #[inline]
        fn write_u64(&mut self, i: u64) {
            self.absorb(i);
        }
        #[inline]
        fn write_usize(&mut self, i: usize) {
            self.absorb(i as u64);
        }
        #[inline]
        fn write_i64(&mut self, i: i64) {
            self.absorb(i as u64);
        }
    };
}

/// A fixed-algorithm 64-bit hasher (multiply-rotate absorption, murmur3
/// finalizer).
#[derive(Clone, Debug)]
pub struct StableHasher {
    state: u64,
    len: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher::new()
    }
}

impl StableHasher {
    /// A hasher in its initial state.
    pub const fn new() -> Self {
        StableHasher {
            state: SEED,
            len: 0,
        }
    }

    #[inline]
    fn absorb(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(K).rotate_left(29);
        self.len = self.len.wrapping_add(1);
    }
}

/// The murmur3 64-bit finalizer: every input bit affects every output bit.
#[inline]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

impl Hasher for StableHasher {
    #[inline]
    fn finish(&self) -> u64 {
        mix64(self.state ^ self.len.wrapping_mul(K))
    }

    word_writes!();
}

/// A fast, fixed-algorithm 64-bit hasher for world fingerprints: three
/// interleaved multiply-rotate lanes, so that consecutive words feed
/// independent dependency chains (a fingerprint absorbs a hundred words or
/// so per state, and one chain would wait on every multiply), then a
/// murmur3 finish of all three. Like [`StableHasher`] it is the same in
/// every process, but it is a different function: fingerprints are only
/// compared within one exploration, never stored.
#[derive(Clone, Debug)]
pub struct Fingerprinter {
    lanes: [u64; 3],
    len: u64,
}

impl Default for Fingerprinter {
    fn default() -> Self {
        Fingerprinter::new()
    }
}

impl Fingerprinter {
    /// A hasher in its initial state.
    pub const fn new() -> Self {
        Fingerprinter {
            lanes: [SEED, SEED ^ K, SEED.rotate_left(32)],
            len: 0,
        }
    }

    #[inline]
    fn absorb(&mut self, word: u64) {
        let [a, b, c] = self.lanes;
        let t = (a ^ word).wrapping_mul(K).rotate_left(29);
        self.lanes = [b, c, t];
        self.len = self.len.wrapping_add(1);
    }
}

impl Hasher for Fingerprinter {
    #[inline]
    fn finish(&self) -> u64 {
        let [a, b, c] = self.lanes;
        mix64(a.rotate_left(21) ^ b.rotate_left(42) ^ c ^ self.len.wrapping_mul(K))
    }

    word_writes!();
}

/// The stable hash of one value.
pub fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = StableHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Chains a step's hash onto a running digest.
#[inline]
pub const fn chain(digest: u64, step_hash: u64) -> u64 {
    mix64(digest.rotate_left(17) ^ step_hash.wrapping_mul(K))
}

/// A digest as the 16-digit lowercase hex string used in files and JSON.
pub fn hex64(v: u64) -> String {
    format!("{v:016x}")
}

/// Parses [`hex64`]'s output.
pub fn parse_hex64(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_are_pinned() {
        // These are stored in seed files: changing them breaks every file.
        assert_eq!(hex64(stable_hash(&0u64)), "cf1ebe6e08a7ab52");
        assert_eq!(hex64(stable_hash("simcast")), "ba2d59a793e8b7e3");
    }

    #[test]
    fn tail_bytes_are_length_tagged() {
        let mut a = StableHasher::new();
        a.write(b"ab");
        let mut b = StableHasher::new();
        b.write(b"ab\0");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn hex_round_trips() {
        for v in [0, 1, u64::MAX, 0xdead_beef] {
            assert_eq!(parse_hex64(&hex64(v)), Some(v));
        }
        assert_eq!(parse_hex64("xyz"), None);
    }
}
