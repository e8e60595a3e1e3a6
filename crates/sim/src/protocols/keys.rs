//! Resource keys for workloads, and the naive conflict test invariants use.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use simcast_machines::locks::{Domain, LockRequest, ResourceKey};

use crate::engine::Core;
use crate::faults::ppm;

/// Naive conflict test, written independently of the lock table's: some
/// pair of keys names the same lock and is not shared on both sides.
pub fn clash(a: &LockRequest, b: &LockRequest) -> bool {
    a.keys().iter().any(|x| {
        b.keys()
            .iter()
            .any(|y| x.domain == y.domain && x.key == y.key && !(x.shared && y.shared))
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

    /// The engine form.
    pub fn space(&self) -> KeySpace {
        let names = Domain::ALL
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
        KeySpace {
            names: KeyNames(Arc::new(names)),
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
struct KeyNames(Arc<Vec<Vec<[ResourceKey; 2]>>>);

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
        let n = cx.between(1, u64::from(self.max_keys));
        let mut keys = Vec::with_capacity(n as usize + 1);
        for _ in 0..n {
            let domain = self.domains[cx.choose(self.domains.len() as u32) as usize];
            let i = cx.choose(self.keys_per_domain);
            let shared = cx.chance(self.shared_ppm);
            let d = Domain::ALL
                .iter()
                .position(|&x| x == domain)
                .expect("every domain is in Domain::ALL");
            keys.push(self.names.0[d][i as usize][usize::from(shared)].clone());
        }
        if cx.chance(self.exclusive_cluster_ppm) {
            keys.push(ResourceKey::exclusive_cluster());
        }
        keys
    }
}
