//! Small maps and sets kept as sorted vectors: searched by bisection,
//! appended to when keys arrive in increasing order (write ids, broadcast
//! ids, lock request ids), with no tree to allocate or rebalance. For
//! bookkeeping of a handful to a few hundred entries: the broadcaster's
//! writes in flight, open handles, starts waiting for their keys, a task's
//! unacked channels, its timers and callback queue; the simulator's records
//! of a run. (Collections that may grow to thousands, like the
//! broadcaster's tombstones, stay in trees: inserting or removing in the
//! middle moves the entries after it.) [`DequeMap`] is the same over ring
//! buffers, for maps of sequential ids ([`SeqKey`]) that also lose their
//! oldest entries first (the broadcaster's tasks and the catalog's task
//! records: created in id order, deleted oldest first).

use std::collections::VecDeque;

/// A map with its entries in key order. Hashes and compares as the
/// `BTreeMap` with the same entries (length, then each `(key, value)`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord + Copy, V> VecMap<K, V> {
    /// Where `key` is (`Ok`), or would go (`Err`).
    fn search(&self, key: &K) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// Inserts `key` (replacing its value if present). Keys usually arrive
    /// in increasing order: then this is a push.
    /// Returns the value replaced, as `BTreeMap::insert` does.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.entries.last().is_none_or(|(last, _)| *last < key) {
            self.entries.push((key, value));
            return None;
        }
        match self.search(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`'s entry.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.search(key).ok()?;
        Some(self.entries.remove(i).1)
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &K) -> Option<&V> {
        let i = self.search(key).ok()?;
        Some(&self.entries[i].1)
    }

    /// The value of `key`, to change, if any.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.search(key).ok()?;
        Some(&mut self.entries[i].1)
    }

    /// The entry of the smallest key, if any.
    pub fn first(&self) -> Option<(&K, &V)> {
        self.entries.first().map(|(k, v)| (k, v))
    }

    /// Removes the entry of the smallest key.
    pub fn pop_first(&mut self) -> Option<(K, V)> {
        (!self.entries.is_empty()).then(|| self.entries.remove(0))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry (keeping the allocation).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The entries in key order, as a slice (to index into).
    pub fn as_slice(&self) -> &[(K, V)] {
        &self.entries
    }

    /// The entries in key order, values to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<K: Ord + Copy, V> FromIterator<(K, V)> for VecMap<K, V> {
    /// As a `BTreeMap` collects: the last value of a repeated key wins.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut map = VecMap {
            entries: Vec::with_capacity(iter.size_hint().0),
        };
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

/// A set kept as a sorted vector ([`VecMap`] without values). Hashes and
/// compares as the `BTreeSet` with the same keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VecSet<K>(VecMap<K, ()>);

impl<K> Default for VecSet<K> {
    fn default() -> Self {
        VecSet(VecMap::default())
    }
}

impl<K: Ord + Copy> VecSet<K> {
    /// Adds `key`; whether it was new.
    pub fn insert(&mut self, key: K) -> bool {
        self.0.insert(key, ()).is_none()
    }

    /// The smallest key, if any.
    pub fn first(&self) -> Option<&K> {
        self.0.first().map(|(k, ())| k)
    }

    /// Removes the smallest key.
    pub fn pop_first(&mut self) -> Option<K> {
        self.0.pop_first().map(|(k, ())| k)
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, key: &K) -> bool {
        self.0.remove(key).is_some()
    }

    /// Whether `key` is in.
    pub fn contains(&self, key: &K) -> bool {
        self.0.get(key).is_some()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every key (keeping the allocation).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The keys in order.
    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(k, ())| k)
    }
}

impl<K: Ord + Copy> FromIterator<K> for VecSet<K> {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        VecSet(iter.into_iter().map(|k| (k, ())).collect())
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    /// The entries in key order.
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// A map with its entries in key order in ring buffers: as [`VecMap`]
/// (bisection, appends for increasing keys), and removing the smallest key
/// moves nothing. The keys are kept apart from the values, so that a
/// search reads a run of keys, not a key per (possibly large) entry.
/// Hashes and compares as the `BTreeMap` with the same entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DequeMap<K, V> {
    keys: VecDeque<K>,
    values: VecDeque<V>,
}

impl<K, V> Default for DequeMap<K, V> {
    fn default() -> Self {
        DequeMap {
            keys: VecDeque::new(),
            values: VecDeque::new(),
        }
    }
}

/// As `BTreeMap`'s: the length, then each `(key, value)`.
impl<K: std::hash::Hash, V: std::hash::Hash> std::hash::Hash for DequeMap<K, V> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(self.keys.len());
        for (k, v) in self.keys.iter().zip(&self.values) {
            k.hash(state);
            v.hash(state);
        }
    }
}

/// Keys handed out in sequence (ids), whose distance apart is known: a
/// [`DequeMap`] of them looks first where a key would be if no key between
/// the first and it were missing, and bisects only when that misses.
pub trait SeqKey: Ord + Copy {
    /// How far `self` is past `first` (`None` if it is not past it, or
    /// too far to index).
    fn past(self, first: Self) -> Option<usize>;
}

impl SeqKey for u64 {
    #[inline]
    fn past(self, first: u64) -> Option<usize> {
        usize::try_from(self.checked_sub(first)?).ok()
    }
}

impl<K: SeqKey, V> DequeMap<K, V> {
    /// Where `key` is (`Ok`), or would go (`Err`).
    #[inline]
    fn search(&self, key: &K) -> Result<usize, usize> {
        if let Some(first) = self.keys.front()
            && let Some(i) = key.past(*first)
            && self.keys.get(i) == Some(key)
        {
            return Ok(i);
        }
        self.keys.binary_search(key)
    }

    /// Inserts `key` (replacing its value if present): a push when keys
    /// arrive in increasing order. Returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.keys.back().is_none_or(|last| *last < key) {
            self.keys.push_back(key);
            self.values.push_back(value);
            return None;
        }
        match self.search(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.values[i], value)),
            Err(i) => {
                self.keys.insert(i, key);
                self.values.insert(i, value);
                None
            }
        }
    }

    /// Removes `key`'s entry (moving the entries on its shorter side).
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.search(key).ok()?;
        self.keys.remove(i);
        self.values.remove(i)
    }

    /// The value of `key`, if any.
    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        let i = self.search(key).ok()?;
        Some(&self.values[i])
    }

    /// The value of `key`, to change, if any.
    #[inline]
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.search(key).ok()?;
        Some(&mut self.values[i])
    }

    /// Whether `key` has an entry.
    pub fn contains_key(&self, key: &K) -> bool {
        self.search(key).is_ok()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.keys.iter().zip(&self.values)
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter()
    }
}

/// Collects in key order (the last value of a repeated key wins), as a
/// `BTreeMap` does.
impl<K: SeqKey, V> FromIterator<(K, V)> for DequeMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = DequeMap::default();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

/// Serializes as the `BTreeMap` with the same entries (a map in key order).
impl<K: serde::Serialize, V: serde::Serialize> serde::Serialize for DequeMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.keys.iter().zip(&self.values))
    }
}

/// Deserializes what a `BTreeMap` with the same entries serializes to.
impl<'de, K, V> serde::Deserialize<'de> for DequeMap<K, V>
where
    K: SeqKey + serde::Deserialize<'de>,
    V: serde::Deserialize<'de>,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<K, V>::deserialize(d)?;
        Ok(map.into_iter().collect())
    }
}

impl<K: SeqKey, V> std::ops::Index<&K> for DequeMap<K, V> {
    type Output = V;

    /// The value of `key`.
    ///
    /// # Panics
    /// If `key` has no entry.
    fn index(&self, key: &K) -> &V {
        self.get(key).expect("no entry for the key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

    #[test]
    fn collects_as_a_btree_map_does() {
        let pairs = [(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd')];
        let a: VecMap<u32, char> = pairs.into_iter().collect();
        let m: BTreeMap<u32, char> = pairs.into_iter().collect();
        assert!(a.iter().eq(m.iter()));
        let mut a = a;
        a.clear();
        assert!(a.is_empty());
    }

    #[test]
    fn a_deque_map_serializes_as_a_btree_map() {
        let pairs = [(5u64, 'e'), (1, 'a'), (3, 'c'), (1, 'b')];
        let a: DequeMap<u64, char> = pairs.into_iter().collect();
        let m: BTreeMap<u64, char> = pairs.into_iter().collect();
        assert!(
            a.iter().eq(m.iter()),
            "collected in key order, last value wins"
        );
        let text = serde_json::to_string(&a).expect("serializes");
        assert_eq!(text, serde_json::to_string(&m).expect("serializes"));
        let back: DequeMap<u64, char> = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, a);
        assert!(serde_json::from_str::<DequeMap<u64, char>>("[1]").is_err());
    }

    /// The insertion that ops 0 to 2 of the map property tests make, if
    /// `op` is one: 0 and 1 a key past the last (mostly increasing keys),
    /// 2 the key `k` itself (anywhere, or over an existing one).
    fn insertion(op: u8, k: u64, next: &mut u64) -> Option<(u64, u64)> {
        match op {
            0 | 1 => {
                *next += 1 + k % 3;
                Some((*next, k))
            }
            2 => Some((k, k + 100)),
            _ => None,
        }
    }

    proptest! {
        /// Against a BTreeSet: same answers, same hash.
        #[test]
        fn a_set_behaves_and_hashes_as_a_btree_set(
            ops in prop::collection::vec((0u8..4, 0u64..20), 0..40),
        ) {
            let h = BuildHasherDefault::<DefaultHasher>::default();
            let mut a = VecSet::default();
            let mut m = BTreeSet::new();
            for (op, k) in ops {
                match op {
                    0 | 1 => prop_assert_eq!(a.insert(k), m.insert(k)),
                    2 => prop_assert_eq!(a.pop_first(), m.pop_first()),
                    _ => prop_assert_eq!(a.remove(&k), m.remove(&k)),
                }
                prop_assert_eq!(a.first(), m.first());
                prop_assert_eq!(a.contains(&k), m.contains(&k));
                prop_assert_eq!(a.len(), m.len());
                prop_assert!(a.iter().eq(m.iter()));
                prop_assert_eq!(h.hash_one(&a), h.hash_one(&m));
            }
        }

        /// Against a BTreeMap: same removals, same hash after each step,
        /// keys arriving mostly in increasing order.
        #[test]
        fn behaves_and_hashes_as_a_btree_map(
            ops in prop::collection::vec((0u8..4, 0u64..40), 0..60),
        ) {
            let h = BuildHasherDefault::<DefaultHasher>::default();
            let mut a = VecMap::default();
            let mut m = BTreeMap::new();
            let mut next = 0u64;
            for (op, k) in ops {
                if let Some((key, v)) = insertion(op, k, &mut next) {
                    prop_assert_eq!(a.insert(key, v), m.insert(key, v));
                } else if k % 5 == 0 {
                    prop_assert_eq!(a.pop_first(), m.pop_first());
                } else if k % 7 == 0 {
                    // Change every value above k in place.
                    for (key, v) in a.iter_mut().filter(|(key, _)| **key > k) {
                        *v += key;
                    }
                    for (key, v) in m.iter_mut().filter(|(key, _)| **key > k) {
                        *v += key;
                    }
                } else {
                    prop_assert_eq!(a.remove(&k), m.remove(&k));
                }
                prop_assert!(a.as_slice().iter().map(|(k, v)| (k, v)).eq(m.iter()));
                prop_assert_eq!(a.first(), m.first_key_value());
                prop_assert_eq!(a.len(), m.len());
                prop_assert_eq!(a.is_empty(), m.is_empty());
                prop_assert_eq!(a.get(&k), m.get(&k));
                prop_assert_eq!(a.get_mut(&k), m.get_mut(&k));
                prop_assert!(a.iter().eq(m.iter()));
                prop_assert_eq!(h.hash_one(&a), h.hash_one(&m));
            }
        }

        /// A DequeMap against a BTreeMap: keys mostly increasing, removals
        /// mostly of the oldest; same answers and hash after each step.
        #[test]
        fn a_deque_map_behaves_and_hashes_as_a_btree_map(
            ops in prop::collection::vec((0u8..5, 0u64..40), 0..80),
        ) {
            let h = BuildHasherDefault::<DefaultHasher>::default();
            let mut a = DequeMap::default();
            let mut m = BTreeMap::new();
            let mut next = 0u64;
            for (op, k) in ops {
                if let Some((key, v)) = insertion(op, k, &mut next) {
                    prop_assert_eq!(a.insert(key, v), m.insert(key, v));
                } else if op == 3 {
                    let oldest = m.first_key_value().map(|(k, _)| *k);
                    if let Some(o) = oldest {
                        prop_assert_eq!(a.remove(&o), m.remove(&o));
                    }
                } else {
                    prop_assert_eq!(a.remove(&k), m.remove(&k));
                }
                if let Some(v) = a.get_mut(&k) {
                    *v += 1;
                }
                if let Some(v) = m.get_mut(&k) {
                    *v += 1;
                }
                prop_assert_eq!(a.get(&k), m.get(&k));
                prop_assert_eq!(a.contains_key(&k), m.contains_key(&k));
                if m.contains_key(&k) {
                    prop_assert_eq!(&a[&k], &m[&k]);
                }
                prop_assert_eq!(a.len(), m.len());
                prop_assert_eq!(a.is_empty(), m.is_empty());
                prop_assert!(a.iter().eq(m.iter()));
                prop_assert!(a.values().eq(m.values()));
                prop_assert_eq!(h.hash_one(&a), h.hash_one(&m));
            }
        }
    }
}
