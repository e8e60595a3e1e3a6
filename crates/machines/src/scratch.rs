//! Buffers a machine reuses from one call to the next.

use core::fmt;
use core::hash::{Hash, Hasher};
use core::ops::{Deref, DerefMut};

/// A buffer kept only to reuse its allocation: never part of the owner's
/// state. It is empty between calls, a copy starts empty, every two compare
/// equal and it adds nothing to a hash, so deriving `Clone`, `PartialEq` and
/// `Hash` on the owner still compares and fingerprints the state alone.
#[derive(Default)]
pub struct Scratch<T: Default>(T);

impl<T: Default> Scratch<T> {
    /// Takes the buffer out, leaving an empty one (put it back with
    /// [`Scratch::put`] to keep its allocation).
    pub fn take(&mut self) -> T {
        core::mem::take(&mut self.0)
    }

    /// Puts a (cleared) buffer back.
    pub fn put(&mut self, buffer: T) {
        self.0 = buffer;
    }
}

impl<T: Default> Clone for Scratch<T> {
    fn clone(&self) -> Self {
        Scratch(T::default())
    }
}

impl<T: Default> PartialEq for Scratch<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T: Default> Eq for Scratch<T> {}

impl<T: Default> Hash for Scratch<T> {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

impl<T: Default> fmt::Debug for Scratch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scratch")
    }
}

impl<T: Default> Deref for Scratch<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Default> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
    struct Owner {
        state: u32,
        buf: Scratch<Vec<u32>>,
    }

    #[test]
    fn owners_compare_and_hash_by_state_alone_and_copies_start_empty() {
        let mut a = Owner::default();
        a.buf.push(7);
        let b = Owner::default();
        assert_eq!(a, b);
        let hash = |o: &Owner| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            o.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&b));
        assert!(a.clone().buf.is_empty());
        let mut c = a.clone();
        c.state = 1;
        assert_ne!(a, c);
    }
}
