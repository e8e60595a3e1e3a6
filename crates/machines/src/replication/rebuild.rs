//! The rebuild inside a rebuild session, and the sender's rebuild calls.
//!
//! ```text
//! (handshake) -> select source -> Transfer --(snapshot+tail, transfer at snapshot)--> TailReplay -> Completed
//!                                    \-------------------(full base, transfer at target)-------> Completed
//! ```
//!
//! # Rules
//! - The source is selected from the [`RetainedHistory`] once, in the
//!   session's handshake phase; the history's committed LSN becomes the
//!   session's frozen target.
//! - Transfer progress strictly increases; it never passes the snapshot LSN
//!   (snapshot+tail: the transfer copies the base image) or the target (full
//!   base).
//! - Tail replay is for snapshot+tail only and begins once the transfer has
//!   reached the snapshot LSN; it replays `(snapshot, target]`, strictly
//!   increasing, never past the target.
//! - Completion: snapshot+tail once the tail is replayed to the target; full
//!   base once the transfer reached the target.

use serde::{Deserialize, Serialize};

use super::{
    Lsn, ReplicaState, ReplicationError, RetainedHistory, Sender, Session, SessionId, SessionKind,
    SessionPhase, Tr,
};

/// Where a rebuild gets its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RebuildSource {
    /// Copy the trusted base image at `snapshot`, then replay the retained
    /// log `(snapshot, target]`.
    SnapshotTail {
        /// The checkpoint LSN of the base image.
        snapshot: Lsn,
    },
    /// Copy everything up to the target from the primary.
    FullBase,
}

/// Where a rebuild stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RebuildPhase {
    /// Copying the base image (or the full base).
    Transfer,
    /// Replaying the retained log after the snapshot.
    TailReplay,
    /// Done.
    Completed,
}

/// A rebuild's progress. Read-only outside the module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rebuild {
    source: RebuildSource,
    phase: RebuildPhase,
    target: Lsn,
    transferred_to: Lsn,
    tail_replayed_to: Lsn,
}

impl Rebuild {
    fn new(source: RebuildSource, target: Lsn) -> Self {
        Rebuild {
            source,
            phase: RebuildPhase::Transfer,
            target,
            transferred_to: Lsn(0),
            tail_replayed_to: Lsn(0),
        }
    }

    /// The selected source.
    pub fn source(&self) -> RebuildSource {
        self.source
    }

    /// Where it stands.
    pub fn phase(&self) -> RebuildPhase {
        self.phase
    }

    /// The committed LSN frozen at source selection.
    pub fn target(&self) -> Lsn {
        self.target
    }

    /// How far the base transfer got.
    pub fn transferred_to(&self) -> Lsn {
        self.transferred_to
    }

    /// How far the tail replay got (the snapshot LSN when it begins; 0 before).
    pub fn tail_replayed_to(&self) -> Lsn {
        self.tail_replayed_to
    }

    /// The furthest the transfer may go.
    fn transfer_limit(&self) -> Lsn {
        match self.source {
            RebuildSource::SnapshotTail { snapshot } => snapshot,
            RebuildSource::FullBase => self.target,
        }
    }

    /// Whether [`Sender::complete_rebuild`] would succeed, and if not, why.
    fn ready(&self) -> Result<(), ReplicationError> {
        match self.source {
            RebuildSource::SnapshotTail { .. } => {
                if self.phase != RebuildPhase::TailReplay {
                    return Err(ReplicationError::WrongRebuildPhase {
                        call: "complete_rebuild",
                        phase: Some(self.phase),
                    });
                }
                if self.tail_replayed_to < self.target {
                    return Err(ReplicationError::NotConverged {
                        recovered_to: self.tail_replayed_to,
                        target: self.target,
                    });
                }
            }
            RebuildSource::FullBase => {
                if self.phase != RebuildPhase::Transfer {
                    return Err(ReplicationError::WrongRebuildPhase {
                        call: "complete_rebuild",
                        phase: Some(self.phase),
                    });
                }
                if self.transferred_to < self.target {
                    return Err(ReplicationError::NotConverged {
                        recovered_to: self.transferred_to,
                        target: self.target,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Sender {
    /// Selects the rebuild source from `history` and freezes the target at
    /// `history.committed`; the transfer begins. The replica is
    /// `CatchingUp` from here on.
    ///
    /// # Errors
    /// Authority errors; [`ReplicationError::WrongKind`] on a non-rebuild
    /// session; [`ReplicationError::WrongPhase`] outside the handshake phase;
    /// [`ReplicationError::WrongRebuildPhase`] if a source was already selected.
    pub fn select_rebuild_source(
        &mut self,
        session: SessionId,
        history: &RetainedHistory,
    ) -> Result<RebuildSource, ReplicationError> {
        const CALL: &str = "select_rebuild_source";
        let s = self.authorized(session)?;
        require_rebuild_kind(CALL, s.kind())?;
        if s.phase() != SessionPhase::Handshake {
            let e = ReplicationError::WrongPhase {
                call: CALL,
                phase: s.phase(),
            };
            return Err(self.refuse(Tr::RejectedWrongPhase, e));
        }
        if let Some(r) = s.rebuild() {
            let e = ReplicationError::WrongRebuildPhase {
                call: CALL,
                phase: Some(r.phase()),
            };
            return Err(self.refuse(Tr::RejectedWrongPhase, e));
        }
        let source = history.rebuild_source();
        s.freeze_target(history.committed);
        s.start_rebuild(Rebuild::new(source, history.committed));
        self.hit(match source {
            RebuildSource::SnapshotTail { .. } => Tr::SourceSnapshotTail,
            RebuildSource::FullBase => Tr::SourceFullBase,
        });
        self.set_state(ReplicaState::CatchingUp);
        Ok(source)
    }

    /// Records that the base transfer reached `to`.
    ///
    /// # Errors
    /// Authority errors; [`ReplicationError::WrongKind`];
    /// [`ReplicationError::WrongRebuildPhase`] unless transferring;
    /// [`ReplicationError::ProgressRegression`] unless `to` passes the
    /// progress so far; [`ReplicationError::BeyondFrozenTarget`] past the
    /// snapshot LSN (snapshot+tail) or the target (full base).
    pub fn record_transfer_progress(
        &mut self,
        session: SessionId,
        to: Lsn,
    ) -> Result<(), ReplicationError> {
        let r = self.rebuild_in("record_transfer_progress", session, RebuildPhase::Transfer)?;
        if to <= r.transferred_to {
            let e = ReplicationError::ProgressRegression {
                current: r.transferred_to,
                requested: to,
            };
            return Err(self.refuse(Tr::RejectedRegression, e));
        }
        if to > r.transfer_limit() {
            return Err(ReplicationError::BeyondFrozenTarget {
                target: r.transfer_limit(),
                requested: to,
            });
        }
        r.transferred_to = to;
        self.hit(Tr::TransferProgress);
        Ok(())
    }

    /// Begins replaying the retained log after the snapshot (snapshot+tail
    /// only, once the transfer reached the snapshot LSN).
    ///
    /// # Errors
    /// Authority errors; [`ReplicationError::WrongKind`];
    /// [`ReplicationError::WrongRebuildPhase`] unless transferring;
    /// [`ReplicationError::NotSnapshotTail`] for a full base;
    /// [`ReplicationError::TransferIncomplete`] before the snapshot LSN.
    pub fn begin_tail_replay(&mut self, session: SessionId) -> Result<(), ReplicationError> {
        let r = self.rebuild_in("begin_tail_replay", session, RebuildPhase::Transfer)?;
        let RebuildSource::SnapshotTail { snapshot } = r.source else {
            return Err(ReplicationError::NotSnapshotTail);
        };
        if r.transferred_to < snapshot {
            return Err(ReplicationError::TransferIncomplete {
                transferred_to: r.transferred_to,
                snapshot,
            });
        }
        r.phase = RebuildPhase::TailReplay;
        r.tail_replayed_to = snapshot;
        self.hit(Tr::TransferToTailReplay);
        Ok(())
    }

    /// Records that the tail replay reached `to`.
    ///
    /// # Errors
    /// Authority errors; [`ReplicationError::WrongKind`];
    /// [`ReplicationError::WrongRebuildPhase`] unless replaying the tail;
    /// [`ReplicationError::ProgressRegression`];
    /// [`ReplicationError::BeyondFrozenTarget`] past the target.
    pub fn record_tail_progress(
        &mut self,
        session: SessionId,
        to: Lsn,
    ) -> Result<(), ReplicationError> {
        let r = self.rebuild_in("record_tail_progress", session, RebuildPhase::TailReplay)?;
        if to <= r.tail_replayed_to {
            let e = ReplicationError::ProgressRegression {
                current: r.tail_replayed_to,
                requested: to,
            };
            return Err(self.refuse(Tr::RejectedRegression, e));
        }
        if to > r.target {
            return Err(ReplicationError::BeyondFrozenTarget {
                target: r.target,
                requested: to,
            });
        }
        r.tail_replayed_to = to;
        self.hit(Tr::TailProgress);
        Ok(())
    }

    /// Completes the rebuild: the session completes, the replica is `InSync`
    /// at the target, which is returned.
    ///
    /// # Errors
    /// Authority errors; [`ReplicationError::WrongKind`];
    /// [`ReplicationError::WrongRebuildPhase`] with no source selected, or a
    /// snapshot+tail rebuild not replaying its tail yet;
    /// [`ReplicationError::NotConverged`] short of the target.
    pub fn complete_rebuild(&mut self, session: SessionId) -> Result<Lsn, ReplicationError> {
        const CALL: &str = "complete_rebuild";
        let s = self.authorized(session)?;
        require_rebuild_kind(CALL, s.kind())?;
        let Some(r) = s.rebuild_mut() else {
            return Err(ReplicationError::WrongRebuildPhase {
                call: CALL,
                phase: None,
            });
        };
        r.ready()?;
        let from = r.phase;
        r.phase = RebuildPhase::Completed;
        let target = r.target;
        s.set_recovered_to(target);
        s.advance(SessionPhase::Completed);
        self.hit(if from == RebuildPhase::TailReplay {
            Tr::TailReplayCompleted
        } else {
            Tr::TransferCompleted
        });
        self.hit(Tr::RebuildSessionCompleted);
        self.set_state(ReplicaState::InSync);
        Ok(target)
    }

    /// Authority, kind, and a selected rebuild in `phase`.
    fn rebuild_in(
        &mut self,
        call: &'static str,
        session: SessionId,
        phase: RebuildPhase,
    ) -> Result<&mut Rebuild, ReplicationError> {
        let s = self.authorized(session)?;
        require_rebuild_kind(call, s.kind())?;
        let current = s.rebuild().map(|r| r.phase);
        if current != Some(phase) {
            let e = ReplicationError::WrongRebuildPhase {
                call,
                phase: current,
            };
            return Err(self.refuse(Tr::RejectedWrongPhase, e));
        }
        Ok(self
            .session
            .as_mut()
            .and_then(Session::rebuild_mut)
            .expect("checked above"))
    }
}

fn require_rebuild_kind(call: &'static str, kind: SessionKind) -> Result<(), ReplicationError> {
    if kind.is_rebuild() {
        Ok(())
    } else {
        Err(ReplicationError::WrongKind { call, kind })
    }
}
