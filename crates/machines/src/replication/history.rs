//! The primary's retained log, as the recovery decisions see it.
//!
//! # Rules
//! - Entries `(tail, head]` are retained: `tail` is exclusive (everything up
//!   to and including it was recycled; 0 means nothing was), `head` is the
//!   newest entry written. `committed` is the lineage-safe boundary that
//!   recovery targets.
//! - A range is recoverable, [`RetainedHistory::is_recoverable`], iff
//!   `from >= tail && to <= head`: every entry after `from` (which the
//!   recipient already holds) up to `to` is still there.
//! - A replica that flushed `F` is proven ([`RetainedHistory::prove`]):
//!   `F == committed` zero gap; `F > committed` ahead, recoverable by
//!   truncating to `committed`; otherwise within retention iff
//!   `is_recoverable(F, committed)`, else beyond retention.
//! - **simcast:** the handshake outcome is the proof's outcome
//!   ([`RecoverabilityProof::outcome`]), so the two always agree. A committed
//!   LSN beyond the head is not recoverable by catch-up in either (the
//!   reference's outcome looked only at the tail and could disagree).
//! - Rebuild source: snapshot+tail from the checkpoint if it is trusted,
//!   non-zero, not past `committed`, and `[checkpoint, committed]` is
//!   recoverable; otherwise full base.

use core::fmt;

use serde::{Deserialize, Serialize};

use super::{Lsn, RebuildSource};

/// The primary's log retention state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetainedHistory {
    /// The newest LSN written to the primary's log.
    pub head: Lsn,
    /// The retention boundary, exclusive: entries `<= tail` are recycled.
    pub tail: Lsn,
    /// The highest LSN acknowledged as durable: what recovery converges to.
    pub committed: Lsn,
    /// The highest LSN with a durable base image (0 = none).
    pub checkpoint: Lsn,
    /// Whether that base image is known good.
    pub checkpoint_trusted: bool,
}

/// The recovery path a handshake leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecoveryOutcome {
    /// The replica holds exactly the committed log.
    ZeroGap,
    /// The replica can be caught up from the retained log (possibly after
    /// truncating a divergent tail).
    CatchUp,
    /// Only a rebuild can recover the replica.
    NeedsRebuild,
}

impl RecoveryOutcome {
    /// The name used in traces.
    pub const fn name(self) -> &'static str {
        match self {
            RecoveryOutcome::ZeroGap => "zero_gap",
            RecoveryOutcome::CatchUp => "catch_up",
            RecoveryOutcome::NeedsRebuild => "needs_rebuild",
        }
    }
}

impl fmt::Display for RecoveryOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a replica is, or is not, recoverable from the retained log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ProofReason {
    /// `F == committed` (`zero_gap`).
    ZeroGap,
    /// `F > committed`: recoverable by truncating to `committed`
    /// (`replica_ahead_needs_truncation`).
    ReplicaAheadNeedsTruncation,
    /// `(F, committed]` is retained (`gap_within_retention`).
    GapWithinRetention,
    /// Some entry of `(F, committed]` is recycled or beyond the head
    /// (`gap_beyond_retention`).
    GapBeyondRetention,
}

impl ProofReason {
    /// The reason string of the semantics.
    pub const fn name(self) -> &'static str {
        match self {
            ProofReason::ZeroGap => "zero_gap",
            ProofReason::ReplicaAheadNeedsTruncation => "replica_ahead_needs_truncation",
            ProofReason::GapWithinRetention => "gap_within_retention",
            ProofReason::GapBeyondRetention => "gap_beyond_retention",
        }
    }
}

impl fmt::Display for ProofReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An explicit answer to "can this replica be recovered from the log, and
/// why": the inputs and the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecoverabilityProof {
    /// The replica's flushed LSN.
    pub replica_flushed: Lsn,
    /// The primary's committed LSN.
    pub committed: Lsn,
    /// The history's tail (exclusive).
    pub tail: Lsn,
    /// The history's head.
    pub head: Lsn,
    /// The verdict.
    pub reason: ProofReason,
}

impl RecoverabilityProof {
    /// Whether the replica can be recovered without a rebuild.
    pub fn recoverable(&self) -> bool {
        self.reason != ProofReason::GapBeyondRetention
    }

    /// The recovery path the proof implies.
    pub fn outcome(&self) -> RecoveryOutcome {
        match self.reason {
            ProofReason::ZeroGap => RecoveryOutcome::ZeroGap,
            ProofReason::ReplicaAheadNeedsTruncation | ProofReason::GapWithinRetention => {
                RecoveryOutcome::CatchUp
            }
            ProofReason::GapBeyondRetention => RecoveryOutcome::NeedsRebuild,
        }
    }
}

impl fmt::Display for RecoverabilityProof {
    /// The reason, then the range needed and the range retained, e.g.
    /// `gap_beyond_retention: need (3, 9], retained (5, 12]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            ProofReason::ZeroGap => write!(f, "zero_gap at {}", self.committed),
            ProofReason::ReplicaAheadNeedsTruncation => write!(
                f,
                "replica_ahead_needs_truncation: {} > committed {}",
                self.replica_flushed, self.committed
            ),
            ProofReason::GapWithinRetention | ProofReason::GapBeyondRetention => write!(
                f,
                "{}: need ({}, {}], retained ({}, {}]",
                self.reason, self.replica_flushed, self.committed, self.tail, self.head
            ),
        }
    }
}

impl RetainedHistory {
    /// Whether every entry after `from` up to `to` is retained:
    /// `from >= tail && to <= head`.
    pub fn is_recoverable(&self, from: Lsn, to: Lsn) -> bool {
        from >= self.tail && to <= self.head
    }

    /// The oldest retained LSN, as a primary advertises it: `tail + 1`, or 0
    /// when nothing was ever recycled (the reference's "retention start").
    pub fn retention_start(&self) -> Lsn {
        if self.tail.0 == 0 {
            Lsn(0)
        } else {
            Lsn(self.tail.0.saturating_add(1))
        }
    }

    /// Proves whether a replica that flushed `replica_flushed` can be
    /// recovered from this history, and why.
    pub fn prove(&self, replica_flushed: Lsn) -> RecoverabilityProof {
        let reason = if replica_flushed == self.committed {
            ProofReason::ZeroGap
        } else if replica_flushed > self.committed {
            ProofReason::ReplicaAheadNeedsTruncation
        } else if self.is_recoverable(replica_flushed, self.committed) {
            ProofReason::GapWithinRetention
        } else {
            ProofReason::GapBeyondRetention
        };
        RecoverabilityProof {
            replica_flushed,
            committed: self.committed,
            tail: self.tail,
            head: self.head,
            reason,
        }
    }

    /// Where a rebuild should start: snapshot+tail from the checkpoint if it is
    /// trusted, non-zero, at or below `committed`, and
    /// `[checkpoint, committed]` is recoverable; otherwise a full base copy.
    ///
    /// (A checkpoint past `committed` would carry uncommitted data into the
    /// rebuilt replica, so simcast does not use it.)
    pub fn rebuild_source(&self) -> RebuildSource {
        let usable = self.checkpoint_trusted
            && self.checkpoint.0 > 0
            && self.checkpoint <= self.committed
            && self.is_recoverable(self.checkpoint, self.committed);
        if usable {
            RebuildSource::SnapshotTail {
                snapshot: self.checkpoint,
            }
        } else {
            RebuildSource::FullBase
        }
    }
}

/// The reference's handshake classification from caller-supplied numbers:
/// `F == C` zero gap; else `R == 0 || F + 1 >= R` catch-up; else rebuild.
///
/// It knows nothing of the head and trusts `retention_start`. A correct sender
/// never uses it (it uses [`RetainedHistory::prove`]); it is what the
/// [`TrustCallerRetention`](super::ReplicationFlaw::TrustCallerRetention)
/// flaw classifies with, and it agrees with the proof whenever
/// `retention_start` is the history's own, `head >= committed` and
/// `tail <= committed`.
pub fn classify_handshake(
    replica_flushed: Lsn,
    committed: Lsn,
    retention_start: Lsn,
) -> RecoveryOutcome {
    if replica_flushed == committed {
        RecoveryOutcome::ZeroGap
    } else if retention_start.0 == 0 || replica_flushed.0.saturating_add(1) >= retention_start.0 {
        RecoveryOutcome::CatchUp
    } else {
        RecoveryOutcome::NeedsRebuild
    }
}
