//! The set of senders of one primary, reconciled against assignments.
//!
//! # Rules
//! - Senders are keyed by stable [`ReplicaId`]; every walk is in id order, so
//!   reports and invalidations come out the same in every run.
//! - [`Registry::reconcile`] validates the whole assignment first (no replica
//!   named twice, no epoch below a live sender's), so a rejected reconcile
//!   changes nothing. Then: replicas not in the set are stopped and removed
//!   (id order); each kept replica gets the endpoint change, then the epoch
//!   change (so a session hit by both is invalidated `endpoint_changed`); new
//!   replicas, and kept replicas whose sender had been stopped, get a fresh
//!   sender at the assignment's epoch.
//! - Session ids: every sender the registry creates starts above every id any
//!   of its senders (live or removed) issued before, so a replica removed and
//!   added back never accepts an id from its previous sender. A driver that
//!   re-creates the registry itself (a primary restarting from durable state)
//!   carries the floor over with [`Registry::with_session_floor`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Endpoint, Epoch, Invalidation, ReplicaId, ReplicationError, ReplicationFlaw, Sender, SessionId,
};
use crate::coverage::Coverage;

/// The transitions of a registry, as recorded in [`Registry::coverage`].
pub const REGISTRY_TRANSITIONS: &[&str] = &[
    "reconcile: sender added",
    "reconcile: sender removed",
    "reconcile: stopped sender replaced",
    "reconcile: endpoint change applied",
    "reconcile: epoch change applied",
    "reconcile: rejected",
    "advance_epoch: live senders advanced",
];

/// Indices into [`REGISTRY_TRANSITIONS`].
#[derive(Clone, Copy)]
enum Tr {
    Added,
    Removed,
    Replaced,
    EndpointApplied,
    EpochApplied,
    Rejected,
    EpochAdvanced,
}

const _: () = assert!(REGISTRY_TRANSITIONS.len() == Tr::EpochAdvanced as usize + 1);

/// One replica of an assignment: its identity and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaAssignment {
    /// The replica.
    pub replica: ReplicaId,
    /// Its current endpoint.
    pub endpoint: Endpoint,
}

/// What a reconcile did, in the order it did it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Senders created (new replicas, and replicas whose sender was stopped),
    /// in id order.
    pub added: Vec<ReplicaId>,
    /// Replicas no longer assigned: stopped and dropped, in id order.
    pub removed: Vec<ReplicaId>,
    /// Every session invalidated, in the order it happened: removals first,
    /// then endpoint and epoch changes in id order.
    pub invalidated: Vec<(ReplicaId, Invalidation)>,
}

/// The senders of one primary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Registry {
    flaw: Option<ReplicationFlaw>,
    senders: BTreeMap<ReplicaId, Sender>,
    /// Every session id any sender of this registry issued is below this.
    session_floor: u64,
    /// The registry's own transitions (not state).
    cov: Coverage,
    /// Transitions of senders it removed (not state).
    removed_coverage: Coverage,
}

impl Registry {
    /// An empty registry of correct senders.
    pub fn new() -> Self {
        Registry::default()
    }

    /// An empty registry whose senders all carry `flaw` (`None` = correct).
    pub fn with_flaw(flaw: Option<ReplicationFlaw>) -> Self {
        Registry {
            flaw,
            ..Registry::default()
        }
    }

    /// Makes every sender created from now on start at or above `next`: for
    /// a driver that re-creates the registry (after a crash) and must not
    /// reissue an id a stale message may still carry. Never lowers the floor.
    #[must_use]
    pub fn with_session_floor(mut self, next: SessionId) -> Self {
        self.session_floor = self.session_floor.max(next.0);
        self
    }

    /// Every session id any sender of this registry issued so far is below
    /// this one (what to persist for [`Registry::with_session_floor`]).
    pub fn session_floor(&self) -> SessionId {
        let live = self.senders.values().map(|s| s.next_session_id().0);
        SessionId(live.fold(self.session_floor.max(1), u64::max))
    }

    /// The flaw the registry's senders are built with, if any.
    pub fn flaw(&self) -> Option<ReplicationFlaw> {
        self.flaw
    }

    /// The registry's own transitions (indices into
    /// [`REGISTRY_TRANSITIONS`]).
    pub fn coverage(&self) -> Coverage {
        self.cov
    }

    /// The transitions of every sender it holds or removed (indices into
    /// [`TRANSITIONS`](super::TRANSITIONS)).
    pub fn sender_coverage(&self) -> Coverage {
        let mut cov = self.removed_coverage;
        for s in self.senders.values() {
            cov.merge(s.coverage());
        }
        cov
    }

    fn hit(&mut self, t: Tr) {
        self.cov.hit(t as usize);
    }

    /// The sender of `replica`.
    pub fn sender(&self, replica: ReplicaId) -> Option<&Sender> {
        self.senders.get(&replica)
    }

    /// The sender of `replica`, to drive its sessions.
    pub fn sender_mut(&mut self, replica: ReplicaId) -> Option<&mut Sender> {
        self.senders.get_mut(&replica)
    }

    /// Every sender, in replica id order.
    pub fn senders(&self) -> impl Iterator<Item = &Sender> + '_ {
        self.senders.values()
    }

    /// Every replica, in id order.
    pub fn replicas(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.senders.keys().copied()
    }

    /// Number of senders.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether there are no senders.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Makes the registry's senders match `replicas` at `epoch` (see the
    /// module rules for the order).
    ///
    /// # Errors
    /// [`ReplicationError::DuplicateReplica`], or
    /// [`ReplicationError::EpochRegression`] if `epoch` is below a kept,
    /// live sender's epoch. Either way nothing changed.
    pub fn reconcile(
        &mut self,
        replicas: &[ReplicaAssignment],
        epoch: Epoch,
    ) -> Result<ReconcileReport, ReplicationError> {
        let mut wanted = BTreeMap::new();
        for a in replicas {
            if wanted.insert(a.replica, &a.endpoint).is_some() {
                self.hit(Tr::Rejected);
                return Err(ReplicationError::DuplicateReplica(a.replica));
            }
        }
        for id in wanted.keys() {
            if let Some(s) = self.senders.get(id)
                && !s.is_stopped()
                && epoch < s.epoch()
            {
                let e = ReplicationError::EpochRegression {
                    current: s.epoch(),
                    requested: epoch,
                };
                self.hit(Tr::Rejected);
                return Err(e);
            }
        }

        let mut report = ReconcileReport::default();
        let gone: Vec<ReplicaId> = self
            .senders
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            let Some(mut sender) = self.senders.remove(&id) else {
                continue;
            };
            if let Some(inv) = sender.stop() {
                report.invalidated.push((id, inv));
            }
            self.session_floor = self.session_floor.max(sender.next_session_id().0);
            self.removed_coverage.merge(sender.coverage());
            report.removed.push(id);
            self.cov.hit(Tr::Removed as usize);
        }

        for (id, endpoint) in wanted {
            match self.senders.get_mut(&id) {
                Some(sender) if !sender.is_stopped() => {
                    if sender.endpoint() != endpoint {
                        self.cov.hit(Tr::EndpointApplied as usize);
                    }
                    if sender.epoch() != epoch {
                        self.cov.hit(Tr::EpochApplied as usize);
                    }
                    let changes = [
                        sender.update_endpoint(endpoint.clone()),
                        sender.advance_epoch(epoch),
                    ];
                    for change in changes {
                        // Validated above: a live sender accepts both.
                        debug_assert!(change.is_ok(), "{change:?}");
                        if let Ok(Some(inv)) = change {
                            report.invalidated.push((id, inv));
                        }
                    }
                }
                existing => {
                    let replaced = existing.is_some();
                    let floor = self.floor();
                    let sender = Sender::with_flaw(id, endpoint.clone(), epoch, self.flaw)
                        .with_session_floor(SessionId(floor));
                    if let Some(old) = self.senders.insert(id, sender) {
                        self.removed_coverage.merge(old.coverage());
                    }
                    self.hit(if replaced { Tr::Replaced } else { Tr::Added });
                    report.added.push(id);
                }
            }
        }
        Ok(report)
    }

    /// Advances every live sender to `epoch`, in id order; returns the
    /// sessions invalidated. Senders already at `epoch` are unchanged;
    /// stopped senders are skipped.
    ///
    /// # Errors
    /// [`ReplicationError::EpochRegression`] if a live sender is at a higher
    /// epoch; nothing changed.
    pub fn advance_epoch(
        &mut self,
        epoch: Epoch,
    ) -> Result<Vec<(ReplicaId, Invalidation)>, ReplicationError> {
        if let Some(s) = self
            .senders
            .values()
            .find(|s| !s.is_stopped() && epoch < s.epoch())
        {
            return Err(ReplicationError::EpochRegression {
                current: s.epoch(),
                requested: epoch,
            });
        }
        self.hit(Tr::EpochAdvanced);
        let mut invalidated = Vec::new();
        for (id, sender) in self.senders.iter_mut().filter(|(_, s)| !s.is_stopped()) {
            let change = sender.advance_epoch(epoch);
            debug_assert!(change.is_ok(), "{change:?}");
            if let Ok(Some(inv)) = change {
                invalidated.push((*id, inv));
            }
        }
        Ok(invalidated)
    }

    /// The first session id a new sender may issue: above every id issued by
    /// any sender so far.
    fn floor(&mut self) -> u64 {
        let live = self
            .senders
            .values()
            .map(|s| s.next_session_id().0)
            .max()
            .unwrap_or(1);
        self.session_floor = self.session_floor.max(live).max(1);
        self.session_floor
    }
}
