//! Transition coverage: which declared transitions a machine has taken.
//!
//! Each machine declares its transitions as a fixed list of names (its
//! `TRANSITIONS` constant) and records each one it takes in a [`Coverage`]
//! set. The simulator collects the sets to report, per protocol, which
//! transitions a sweep reached. Coverage is bookkeeping, not state: it is
//! ignored by equality and hashing, so it never splits a state the explorer
//! would otherwise merge.

use core::hash::{Hash, Hasher};

/// A set of transition indices (at most 128 per machine).
#[derive(Clone, Copy, Debug, Default)]
pub struct Coverage(u128);

impl Coverage {
    /// The empty set.
    pub const fn new() -> Self {
        Coverage(0)
    }

    /// Records transition `index`.
    #[inline]
    pub fn hit(&mut self, index: usize) {
        debug_assert!(index < 128, "at most 128 transitions per machine");
        self.0 |= 1u128 << index;
    }

    /// Whether transition `index` was taken.
    pub fn has(&self, index: usize) -> bool {
        index < 128 && self.0 & (1u128 << index) != 0
    }

    /// Adds every transition of `other`.
    pub fn merge(&mut self, other: Coverage) {
        self.0 |= other.0;
    }

    /// The raw bits (bit `i` = transition `i`).
    pub fn bits(&self) -> u128 {
        self.0
    }

    /// Number of transitions taken.
    pub fn count(&self) -> u32 {
        self.0.count_ones()
    }
}

impl PartialEq for Coverage {
    /// Always equal: coverage is not state.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Coverage {}

impl Hash for Coverage {
    /// Hashes nothing: coverage is not state.
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_merges_but_is_not_state() {
        let mut a = Coverage::new();
        a.hit(3);
        a.hit(127);
        let mut b = Coverage::new();
        b.hit(5);
        assert_eq!(a, b, "equality ignores coverage");
        b.merge(a);
        assert!(b.has(3) && b.has(5) && b.has(127) && !b.has(4));
        assert_eq!(b.count(), 3);
    }
}
