//! Resource keys for workloads, and the naive conflict test invariants use.

use std::cell::RefCell;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use simcast_machines::locks::{Domain, LockRequest, ResourceKey};

use crate::engine::Core;
use crate::faults::ppm;

/// Naive conflict test, written independently of the lock table's: some
/// pair of keys names the same lock and is not shared on both sides (the
/// names compared last, only for pairs that would clash on the same lock).
pub fn clash(a: &LockRequest, b: &LockRequest) -> bool {
    a.keys().iter().any(|x| {
        b.keys()
            .iter()
            .any(|y| x.domain == y.domain && !(x.shared && y.shared) && x.key == y.key)
    })
}

fn all_domains() -> Vec<Domain> {
    Domain::ALL.to_vec()
}

/// How a workload draws resource keys (a part of its `[workload]` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Distinct keys per domain.
    pub keys_per_domain: u32,
    /// Keys per request, at most (at least 1).
    pub max_keys: u32,
    /// Domains keys are drawn from (repeat one to weight it).
    #[serde(default = "all_domains")]
    pub domains: Vec<Domain>,
    /// Probability that a key is wanted shared.
    pub shared_ratio: f64,
    /// Probability that a request takes the exclusive cluster key.
    #[serde(default)]
    pub exclusive_cluster_ratio: f64,
}

impl KeyConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.keys_per_domain == 0 {
            return Err("`keys_per_domain` must be at least 1".to_owned());
        }
        if self.max_keys == 0 {
            return Err("`max_keys` must be at least 1".to_owned());
        }
        if self.domains.is_empty() {
            return Err("`domains` must name at least one domain".to_owned());
        }
        for (key, p) in [
            ("shared_ratio", self.shared_ratio),
            ("exclusive_cluster_ratio", self.exclusive_cluster_ratio),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("`{key}` must be between 0 and 1, not {p}"));
            }
        }
        Ok(())
    }

    /// The engine form. Built once per thread and configuration (a world
    /// is built per seed, and naming and ranking every key costs more than
    /// a short run's events): the space is a pure function of `self`, and
    /// a per-thread copy keeps the keys' reference counts off the other
    /// threads' cache lines.
    pub fn space(&self) -> KeySpace {
        /// Configurations remembered per thread (a sweep has one per
        /// scenario at most).
        const REMEMBERED: usize = 16;
        thread_local! {
            static BUILT: RefCell<Vec<(KeyConfig, KeySpace)>> = const { RefCell::new(Vec::new()) };
        }
        BUILT.with(|built| {
            let mut built = built.borrow_mut();
            if let Some((_, space)) = built.iter().find(|(c, _)| c == self) {
                return space.clone();
            }
            let space = self.build_space();
            if built.len() == REMEMBERED {
                built.remove(0);
            }
            built.push((self.clone(), space.clone()));
            space
        })
    }

    fn build_space(&self) -> KeySpace {
        let table: Vec<Vec<[ResourceKey; 2]>> = Domain::ALL
            .iter()
            .map(|&domain| {
                (0..self.keys_per_domain)
                    .map(|i| {
                        let exclusive = key_of(domain, i, false);
                        let mut shared = exclusive.clone();
                        shared.shared = domain != Domain::Privilege;
                        [exclusive, shared]
                    })
                    .collect()
            })
            .collect();
        let ranks = Ranks::of(&table);
        KeySpace {
            names: KeyNames(Arc::new(Names { table, ranks })),
            keys_per_domain: self.keys_per_domain,
            max_keys: self.max_keys,
            domains: self.domains.clone(),
            shared_ppm: ppm(self.shared_ratio),
            exclusive_cluster_ppm: ppm(self.exclusive_cluster_ratio),
        }
    }
}

/// The `i`-th key of `domain` in a drawn key space.
fn key_of(domain: Domain, i: u32, shared: bool) -> ResourceKey {
    match domain {
        Domain::DbName => ResourceKey::db(&format!("db{i}"), shared),
        Domain::CollectionName => {
            let db = if i % 2 == 0 { "" } else { "db1" };
            ResourceKey::collection(db, &format!("c{i}"), shared)
        }
        Domain::Privilege => ResourceKey::privilege(),
        Domain::SnapshotName => ResourceKey::snapshot(i64::from(i), "snap", shared),
        Domain::Cluster => ResourceKey::cluster(shared),
    }
}

/// Every key a space can draw, built once: `[domain][i][shared]`, sharing
/// one name between the two modes. A function of the other fields of
/// [`KeySpace`], so it adds nothing to its identity (equality, hash).
#[derive(Clone, Debug)]
struct KeyNames(Arc<Names>);

#[derive(Debug)]
struct Names {
    table: Vec<Vec<[ResourceKey; 2]>>,
    /// `None` if the space has more distinct keys than a [`Ranks`] mask holds.
    ranks: Option<Ranks>,
}

/// The distinct keys of a space in lock order, so that a request can be
/// drawn as a set of ranks (one bit each) and comes out sorted and without
/// duplicates: no sort, no intermediate vector.
#[derive(Debug)]
struct Ranks {
    /// `[domain][i][shared]`: the rank of that key.
    of: Vec<Vec<[u8; 2]>>,
    /// The keys by rank: sorted, distinct, the cluster keys included.
    keys: Vec<ResourceKey>,
    shared_cluster: u8,
    /// Ranks of Cluster-domain keys.
    cluster_domain: u128,
}

impl Ranks {
    fn of(table: &[Vec<[ResourceKey; 2]>]) -> Option<Ranks> {
        let mut keys: Vec<ResourceKey> = table.iter().flatten().flatten().cloned().collect();
        keys.push(ResourceKey::shared_cluster());
        keys.sort();
        keys.dedup();
        if keys.len() > 128 {
            return None;
        }
        let rank = |k: &ResourceKey| {
            u8::try_from(
                keys.binary_search(k)
                    .expect("every key of the table is ranked"),
            )
            .expect("at most 128 ranks")
        };
        let of = table
            .iter()
            .map(|row| row.iter().map(|[x, s]| [rank(x), rank(s)]).collect())
            .collect();
        let cluster_domain = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.domain == Domain::Cluster)
            .fold(0u128, |m, (i, _)| m | 1 << i);
        Some(Ranks {
            of,
            shared_cluster: rank(&ResourceKey::shared_cluster()),
            keys,
            cluster_domain,
        })
    }

    /// The broadcast request of the keys in `mask`: as
    /// [`LockRequest::for_broadcast`] (the shared cluster key added unless a
    /// Cluster-domain key is in).
    fn request(&self, mut mask: u128) -> LockRequest {
        if mask & self.cluster_domain == 0 {
            mask |= 1 << self.shared_cluster;
        }
        let mut rest = mask;
        let keys: Arc<[ResourceKey]> = (0..mask.count_ones())
            .map(|_| {
                let r = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                self.keys[r].clone()
            })
            .collect();
        // Ranks are positions in the sorted, distinct keys: taken in rank
        // order, keys are in normal form (the tests below check it).
        LockRequest::from_normalized_unchecked(keys)
    }
}

impl PartialEq for KeyNames {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for KeyNames {}

impl Hash for KeyNames {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// [`KeyConfig`] in engine units.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeySpace {
    names: KeyNames,
    keys_per_domain: u32,
    max_keys: u32,
    domains: Vec<Domain>,
    shared_ppm: u32,
    exclusive_cluster_ppm: u32,
}

impl KeySpace {
    /// Draws the keys of one request (before normalization).
    pub fn draw<E, N>(&self, cx: &mut Core<E, N>) -> Vec<ResourceKey>
    where
        E: Clone + Hash + fmt::Display,
        N: Clone + Hash + fmt::Display,
    {
        let mut keys = Vec::with_capacity(self.max_keys as usize + 1);
        self.draw_each(cx, |d, i, shared| {
            keys.push(self.names.0.table[d][i][usize::from(shared)].clone());
        });
        keys
    }

    /// Draws one broadcast request: the same decisions as [`KeySpace::draw`],
    /// normalized as [`LockRequest::for_broadcast`] does.
    pub fn draw_request<E, N>(&self, cx: &mut Core<E, N>) -> LockRequest
    where
        E: Clone + Hash + fmt::Display,
        N: Clone + Hash + fmt::Display,
    {
        let Some(ranks) = &self.names.0.ranks else {
            return LockRequest::for_broadcast(self.draw(cx));
        };
        let mut mask = 0u128;
        self.draw_each(cx, |d, i, shared| {
            mask |= 1 << ranks.of[d][i][usize::from(shared)];
        });
        ranks.request(mask)
    }

    /// Draws the picks of one request as `[domain][i][shared]` indices into
    /// the table (the exclusive cluster key, if drawn, is its Cluster entry
    /// `[Cluster][0][false]`).
    fn draw_each<E, N>(&self, cx: &mut Core<E, N>, mut pick: impl FnMut(usize, usize, bool))
    where
        E: Clone + Hash + fmt::Display,
        N: Clone + Hash + fmt::Display,
    {
        let n = cx.between(1, u64::from(self.max_keys));
        for _ in 0..n {
            let domain = self.domains[cx.choose(self.domains.len() as u32) as usize];
            let i = cx.choose(self.keys_per_domain);
            let shared = cx.chance(self.shared_ppm);
            let d = Domain::ALL
                .iter()
                .position(|&x| x == domain)
                .expect("every domain is in Domain::ALL");
            pick(d, i as usize, shared);
        }
        if cx.chance(self.exclusive_cluster_ppm) {
            let d = Domain::ALL
                .iter()
                .position(|&x| x == Domain::Cluster)
                .expect("the Cluster domain is in Domain::ALL");
            pick(d, 0, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(keys_per_domain: u32) -> KeyConfig {
        KeyConfig {
            keys_per_domain,
            max_keys: 4,
            domains: all_domains(),
            shared_ratio: 0.5,
            exclusive_cluster_ratio: 0.1,
        }
    }

    #[test]
    fn a_remembered_space_is_the_one_built_for_its_configuration() {
        let a = config(3);
        let mut b = config(3);
        b.shared_ratio = 0.25;
        for c in [&a, &b, &a] {
            let space = c.space();
            let built = c.build_space();
            assert_eq!(space, built);
            assert_eq!(space.names.0.table, built.names.0.table);
            assert_eq!(space.shared_ppm, ppm(c.shared_ratio));
        }
        assert!(Arc::ptr_eq(&a.space().names.0, &a.space().names.0));
    }

    #[test]
    fn spaces_too_wide_for_a_mask_have_no_ranks() {
        assert!(config(6).space().names.0.ranks.is_some());
        // 4 named domains x 40 keys x 2 modes: more than 128 distinct keys.
        assert!(config(40).space().names.0.ranks.is_none());
    }

    proptest! {
        /// A request built from ranks is the one `for_broadcast` makes of
        /// the same picks: same keys, same digest.
        #[test]
        fn a_ranked_request_is_the_normalized_broadcast_request(
            keys_per_domain in 1u32..12,
            picks in prop::collection::vec((0usize..5, 0u32..12, any::<bool>()), 0..8),
        ) {
            let space = config(keys_per_domain).space();
            let names = &space.names.0;
            let ranks = names.ranks.as_ref().expect("small spaces are ranked");
            let mut keys = Vec::new();
            let mut mask = 0u128;
            for (d, i, shared) in picks {
                let i = (i % keys_per_domain) as usize;
                keys.push(names.table[d][i][usize::from(shared)].clone());
                mask |= 1 << ranks.of[d][i][usize::from(shared)];
            }
            let expected = LockRequest::for_broadcast(keys);
            let got = ranks.request(mask);
            prop_assert_eq!(got.digest(), expected.digest());
            prop_assert_eq!(got, expected);
        }

        /// The naive test agrees with the lock table's rule
        /// (`LockRequest::conflicts_with`), and is symmetric: names given
        /// as separate allocations, so no pointer decides it.
        #[test]
        fn clash_is_the_lock_rule(
            a in prop::collection::vec((0usize..5, 0u8..3, any::<bool>()), 1..5),
            b in prop::collection::vec((0usize..5, 0u8..3, any::<bool>()), 1..5),
        ) {
            let request = |picks: &[(usize, u8, bool)]| {
                LockRequest::new(picks.iter().map(|&(d, i, shared)| {
                    ResourceKey::new(Domain::ALL[d], format!("k{i}"), shared)
                }))
                .expect("a non-empty request")
            };
            let (a, b) = (request(&a), request(&b));
            prop_assert_eq!(clash(&a, &b), a.conflicts_with(&b));
            prop_assert_eq!(clash(&a, &b), clash(&b, &a));
        }
    }
}
