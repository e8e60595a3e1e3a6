//! What the broadcaster keeps durably, and how a catalog applies its writes.
//!
//! The broadcaster names its durable records explicitly: task records, the
//! broadcast-id reservation, and the set of deleted ids (the graveyard). A
//! catalog (the simulator's in-memory one, the adapters' files) applies
//! [`CatalogOp`]s with [`CatalogState::apply`], so every catalog has the same
//! semantics. After a crash the broadcaster is rebuilt from a
//! [`CatalogState`] alone.

use serde::{Deserialize, Serialize};

use super::acks::AckSet;
use super::{BroadcastId, Message};
use crate::time::Time;
use crate::vecmap::DequeMap;

/// The durable state of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Created by a broadcast on this cluster; holds its resource keys.
    Pending,
    /// Created from a replicated message (secondary cluster); holds no keys.
    Replicated,
    /// Its ack callback has completed; waits for garbage collection.
    Tombstone,
}

/// A task as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The broadcast.
    pub id: BroadcastId,
    /// Its state.
    pub state: TaskState,
    /// The message: payload, targets, resource keys.
    pub message: Message,
    /// Acks recorded so far.
    pub acks: AckSet,
    /// When it became a tombstone (for garbage collection by age).
    pub tombstoned_at: Option<Time>,
}

/// One write to the catalog. Each is atomic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CatalogOp {
    /// Create or overwrite a task record.
    PutTask(TaskRecord),
    /// Delete a tombstone and record its id as deleted, in one step.
    DeleteTask(BroadcastId),
    /// Raise the broadcast-id reservation: ids below it may have been handed
    /// out and are never handed out again.
    ReserveIds(u64),
}

/// Deleted broadcast ids, as sorted disjoint inclusive ranges (deletion is
/// oldest first, so ranges stay few).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdRanges {
    ranges: Vec<(u64, u64)>,
}

impl IdRanges {
    /// Whether `id` is in the set.
    pub fn contains(&self, id: BroadcastId) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < id.0);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= id.0)
    }

    /// Adds `id`, merging adjacent ranges.
    pub fn insert(&mut self, id: BroadcastId) {
        let x = id.0;
        let i = self
            .ranges
            .partition_point(|&(_, hi)| hi.saturating_add(1) < x);
        match self.ranges.get_mut(i) {
            Some((lo, hi)) if *lo <= x.saturating_add(1) => {
                *lo = (*lo).min(x);
                *hi = (*hi).max(x);
                // Merge with the next range if they now touch.
                if let Some(&(nlo, nhi)) = self.ranges.get(i + 1)
                    && nlo <= self.ranges[i].1.saturating_add(1)
                {
                    self.ranges[i].1 = self.ranges[i].1.max(nhi);
                    self.ranges.remove(i + 1);
                }
            }
            _ => self.ranges.insert(i, (x, x)),
        }
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

/// Everything a broadcaster's catalog holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CatalogState {
    /// Task records by id (created in id order, mostly; deleted oldest
    /// first).
    pub tasks: DequeMap<BroadcastId, TaskRecord>,
    /// The broadcast-id reservation.
    pub id_limit: u64,
    /// Ids of deleted tombstones.
    pub graveyard: IdRanges,
}

impl CatalogState {
    /// An empty catalog.
    pub fn new() -> Self {
        CatalogState::default()
    }

    /// Applies one write.
    pub fn apply(&mut self, op: &CatalogOp) {
        self.apply_owned(op.clone());
    }

    /// Applies one write, keeping its record (no copy).
    pub fn apply_owned(&mut self, op: CatalogOp) {
        match op {
            CatalogOp::PutTask(r) => {
                self.tasks.insert(r.id, r);
            }
            CatalogOp::DeleteTask(id) => {
                self.tasks.remove(&id);
                self.graveyard.insert(id);
            }
            CatalogOp::ReserveIds(limit) => {
                self.id_limit = self.id_limit.max(limit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn id_ranges_behave_like_a_set(ids in prop::collection::vec(0u64..200, 0..80), probe in 0u64..220) {
            let mut r = IdRanges::default();
            let mut set = std::collections::BTreeSet::new();
            for id in ids {
                r.insert(BroadcastId(id));
                set.insert(id);
                prop_assert_eq!(r.contains(BroadcastId(probe)), set.contains(&probe));
                for w in r.ranges().windows(2) {
                    prop_assert!(w[0].1 + 1 < w[1].0, "disjoint, sorted, not touching: {:?}", r.ranges());
                }
            }
            let total: u64 = r.ranges().iter().map(|(lo, hi)| hi - lo + 1).sum();
            prop_assert_eq!(total, set.len() as u64);
        }
    }

    #[test]
    fn delete_records_the_id_in_the_graveyard() {
        let mut c = CatalogState::new();
        c.apply(&CatalogOp::ReserveIds(10));
        c.apply(&CatalogOp::ReserveIds(5));
        assert_eq!(c.id_limit, 10, "the reservation never goes down");
        c.apply(&CatalogOp::DeleteTask(BroadcastId(3)));
        assert!(c.graveyard.contains(BroadcastId(3)));
        assert!(!c.graveyard.contains(BroadcastId(4)));
    }
}
