//! The replica sender and its recovery session.
//!
//! One [`Sender`] per replica owns the replication channel to that replica and
//! is the authority for every recovery operation on it. A recovery attempt is a
//! [`Session`]; a sender holds at most one, and only an *active* session (one
//! that is neither completed nor invalidated) can be driven.
//!
//! # Flow
//! 1. [`Sender::attach_session`] (or [`Sender::supersede_session`]) creates a
//!    session of a [`SessionKind`] at the sender's epoch and returns its id.
//! 2. [`Sender::begin_connect`], then [`Sender::record_handshake`] with the
//!    replica's flushed LSN and the primary's [`RetainedHistory`]. The history
//!    decides the [`RecoveryOutcome`]: zero gap, catch-up (possibly with a
//!    truncation of a replica that is ahead), or needs-rebuild, which
//!    invalidates the session (`gap_exceeds_retention`) without an error.
//! 3. Catch-up sessions: [`Sender::begin_catch_up`] freezes the target, then
//!    [`Sender::record_catch_up_progress`], [`Sender::record_truncation`] if
//!    required, [`Sender::check_budget`] against an optional [`Budget`], and
//!    [`Sender::complete_session`] (also directly from the handshake when
//!    there is no gap).
//! 4. Rebuild sessions: [`Sender::select_rebuild_source`] (snapshot+tail or
//!    full base, from the history), [`Sender::record_transfer_progress`],
//!    [`Sender::begin_tail_replay`] and [`Sender::record_tail_progress`] for
//!    snapshot+tail, then [`Sender::complete_rebuild`].
//! 5. Lifecycle: [`Sender::advance_epoch`] (upward only),
//!    [`Sender::update_endpoint`] and [`Sender::stop`] invalidate the session;
//!    a [`Registry`] reconciles a set of replicas and bumps every epoch.
//!
//! # Authority
//! Every execution call names a [`SessionId`] and is checked *first*: it is
//! rejected if the sender is stopped, has no session, the id is not the
//! current session's, or that session is no longer active. Then the call's own
//! preconditions (kind, phase, arguments) are checked, all before anything is
//! changed: **a rejected call changes nothing**. Session ids are never reused
//! by a sender, and a [`Registry`] starts every sender it creates above every
//! id it issued before, so a stale id is never mistaken for a live one.
//!
//! # Shape
//! Sans-IO, and simpler than the broadcaster: the sender performs no IO of
//! its own (the driver connects, ships entries, truncates and transfers, and
//! reports back), so there are no effects to drain. Every call returns what it
//! did: an id, an [`Invalidation`], a [`HandshakeRecord`], a
//! [`BudgetViolation`]. Time comes in as [`Time`](crate::time::Time) arguments;
//! [`Sender::budget_deadline`] says when a budget check is next due.
//!
//! # simcast deviations from the reference
//! - The handshake outcome is derived from the same [`RecoverabilityProof`]
//!   the history produces, so they always agree; a gap reaching beyond the
//!   history's head is not recoverable in both. The retention start a caller
//!   advertises is not trusted.
//! - Budget tick arithmetic never underflows: time before the catch-up start
//!   (or before the last progress) counts as no time at all.
//! - Tail replay may begin only once the transfer has reached the snapshot
//!   LSN; progress never passes the frozen target (catch-up), the snapshot LSN
//!   (snapshot transfer) or the rebuild target (full-base transfer, tail).

mod budget;
mod catchup;
mod history;
mod rebuild;
mod registry;
mod session;

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::coverage::Coverage;

pub use self::budget::{Budget, BudgetUsage, BudgetViolation};
pub use self::history::{
    ProofReason, RecoverabilityProof, RecoveryOutcome, RetainedHistory, classify_handshake,
};
pub use self::rebuild::{Rebuild, RebuildPhase, RebuildSource};
pub use self::registry::{REGISTRY_TRANSITIONS, ReconcileReport, Registry, ReplicaAssignment};
pub use self::session::{Session, SessionKind, SessionPhase, Truncation};

/// The transitions of a sender, its sessions and their rebuilds, as recorded
/// in [`Sender::coverage`]: session kinds attached, session phases and how
/// each handshake classified, every invalidation reason, the authority
/// check's rejections, catch-up and rebuild steps, budget violations, and the
/// replica states the sender enters.
pub const TRANSITIONS: &[&str] = &[
    "attach: bootstrap session",
    "attach: catch_up session",
    "attach: rebuild session",
    "attach: reassign session",
    "attach: refused, a session is active",
    "session: Init -> Connecting",
    "session: Connecting -> Handshake (zero gap)",
    "session: Connecting -> Handshake (catch-up)",
    "session: Connecting -> Handshake (replica ahead, truncation required)",
    "session: Connecting -> Invalidated (gap exceeds retention)",
    "session: Connecting -> Handshake (rebuild)",
    "session: Handshake -> CatchUp",
    "session: Handshake -> Completed",
    "session: CatchUp -> Completed",
    "session: Handshake -> Completed (rebuild)",
    "session: -> Invalidated (epoch advanced)",
    "session: -> Invalidated (endpoint changed)",
    "session: -> Invalidated (sender stopped)",
    "session: -> Invalidated (superseded)",
    "session: -> Invalidated (budget)",
    "session: -> Invalidated (driver)",
    "authority: rejected, sender stopped",
    "authority: rejected, no session",
    "authority: rejected, session mismatch",
    "authority: rejected, session not active",
    "call: rejected, wrong phase",
    "progress: rejected, not past the current point",
    "catch-up: progress",
    "catch-up: truncation recorded",
    "catch-up: completion refused, truncation not recorded",
    "budget: duration exceeded",
    "budget: entries exceeded",
    "budget: progress stalled",
    "rebuild: source snapshot+tail",
    "rebuild: source full base",
    "rebuild: Transfer progress",
    "rebuild: Transfer -> TailReplay",
    "rebuild: TailReplay progress",
    "rebuild: TailReplay -> Completed",
    "rebuild: Transfer -> Completed (full base)",
    "replica: -> Connecting",
    "replica: -> CatchingUp",
    "replica: -> InSync",
    "replica: -> Disconnected",
    "replica: -> Degraded",
    "replica: -> NeedsRebuild",
    "epoch: advanced",
    "endpoint: changed",
    "sender: stopped",
];

/// Indices into [`TRANSITIONS`].
#[derive(Clone, Copy)]
pub(crate) enum Tr {
    AttachBootstrap,
    AttachCatchUp,
    AttachRebuild,
    AttachReassign,
    AttachRefusedActive,
    InitConnecting,
    HandshakeZeroGap,
    HandshakeCatchUp,
    HandshakeAhead,
    HandshakeNeedsRebuild,
    HandshakeRebuild,
    HandshakeToCatchUp,
    HandshakeCompleted,
    CatchUpCompleted,
    RebuildSessionCompleted,
    InvalidatedEpoch,
    InvalidatedEndpoint,
    InvalidatedStopped,
    InvalidatedSuperseded,
    InvalidatedBudget,
    InvalidatedDriver,
    RejectedStopped,
    RejectedNoSession,
    RejectedMismatch,
    RejectedNotActive,
    RejectedWrongPhase,
    RejectedRegression,
    CatchUpProgress,
    TruncationRecorded,
    CompletionRefusedTruncation,
    BudgetDuration,
    BudgetEntries,
    BudgetStalled,
    SourceSnapshotTail,
    SourceFullBase,
    TransferProgress,
    TransferToTailReplay,
    TailProgress,
    TailReplayCompleted,
    TransferCompleted,
    StateConnecting,
    StateCatchingUp,
    StateInSync,
    StateDisconnected,
    StateDegraded,
    StateNeedsRebuild,
    EpochAdvanced,
    EndpointChanged,
    Stopped,
}

/// A replica, by its stable identity (not its address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId(pub u32);

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// A recovery session. Ids increase with every session a sender attaches and
/// are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// A primary epoch (term). Only ever moves upward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// A log sequence number: the position of an entry in the replicated log.
/// LSN 0 is "nothing": the first entry is LSN 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a replica is reached. Any field changing is an endpoint change.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Address of the data (log shipping) channel.
    pub data_addr: String,
    /// Address of the control channel.
    pub ctrl_addr: String,
    /// Version of the assignment that produced this endpoint.
    pub version: u64,
}

impl Endpoint {
    /// An endpoint with explicit parts.
    pub fn new(data_addr: impl Into<String>, ctrl_addr: impl Into<String>, version: u64) -> Self {
        Endpoint {
            data_addr: data_addr.into(),
            ctrl_addr: ctrl_addr.into(),
            version,
        }
    }
}

/// What the sender knows about its replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReplicaState {
    /// No channel: new, after an epoch advance or endpoint change, or stopped.
    Disconnected,
    /// A session is connecting and handshaking.
    Connecting,
    /// A catch-up or rebuild session is shipping data.
    CatchingUp,
    /// The last session completed: the replica holds the primary's log up to
    /// that session's target.
    InSync,
    /// The driver gave up on a session and reported the replica degraded
    /// (see [`Sender::invalidate_session`]).
    Degraded,
    /// Catch-up is impossible (gap beyond retention) or over budget: only a
    /// rebuild session can bring the replica back.
    NeedsRebuild,
}

impl ReplicaState {
    /// The name used in traces.
    pub const fn name(self) -> &'static str {
        match self {
            ReplicaState::Disconnected => "disconnected",
            ReplicaState::Connecting => "connecting",
            ReplicaState::CatchingUp => "catching_up",
            ReplicaState::InSync => "in_sync",
            ReplicaState::Degraded => "degraded",
            ReplicaState::NeedsRebuild => "needs_rebuild",
        }
    }
}

impl fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a session was invalidated. `Display` gives the reason string of the
/// semantics (`epoch_advanced_1_to_2`, `budget_progress_stalled`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InvalidationReason {
    /// The sender's epoch advanced past the session's (`epoch_advanced_<old>_to_<new>`).
    EpochAdvanced {
        /// The sender's epoch before the advance.
        from: Epoch,
        /// The sender's epoch after it.
        to: Epoch,
    },
    /// The replica's endpoint changed (`endpoint_changed`).
    EndpointChanged,
    /// The sender was stopped (`sender_stopped`).
    SenderStopped,
    /// The handshake found a gap the retained history cannot fill
    /// (`gap_exceeds_retention`).
    GapExceedsRetention,
    /// The catch-up budget was exceeded (`budget_<violation>`).
    Budget(BudgetViolation),
    /// A new session replaced it (`superseded`).
    Superseded,
    /// The driver invalidated it, with its own reason string.
    Requested(String),
}

impl fmt::Display for InvalidationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidationReason::EpochAdvanced { from, to } => {
                write!(f, "epoch_advanced_{}_to_{}", from.0, to.0)
            }
            InvalidationReason::EndpointChanged => f.write_str("endpoint_changed"),
            InvalidationReason::SenderStopped => f.write_str("sender_stopped"),
            InvalidationReason::GapExceedsRetention => f.write_str("gap_exceeds_retention"),
            InvalidationReason::Budget(v) => write!(f, "budget_{}", v.name()),
            InvalidationReason::Superseded => f.write_str("superseded"),
            InvalidationReason::Requested(reason) => f.write_str(reason),
        }
    }
}

/// A session that a call invalidated, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Invalidation {
    /// The session.
    pub session: SessionId,
    /// Why.
    pub reason: InvalidationReason,
}

/// What the handshake revealed, as the driver received it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Handshake {
    /// The highest LSN the replica has durably flushed (`F`).
    pub replica_flushed: Lsn,
    /// The retention start (`R`: the oldest LSN still in the primary's log, 0
    /// meaning "everything") that the primary advertised when the reply was
    /// assembled, e.g. [`RetainedHistory::retention_start`] at that moment.
    ///
    /// **simcast:** a correct sender does not trust it: it classifies against
    /// the [`RetainedHistory`] passed with the handshake, which may have been
    /// recycled since. Only [`ReplicationFlaw::TrustCallerRetention`] uses it.
    pub advertised_retention_start: Lsn,
}

/// What [`Sender::record_handshake`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HandshakeRecord {
    /// The recovery path. For a rebuild session it is informational: a
    /// rebuild does not depend on the gap.
    pub outcome: RecoveryOutcome,
    /// The history's proof for the replica's flushed LSN. A correct sender's
    /// outcome always equals `proof.outcome()`.
    pub proof: RecoverabilityProof,
}

/// Deliberately broken variants of the sender, for mutation testing of the
/// simulator. Off by default; never enable one outside a simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReplicationFlaw {
    /// The authority check ignores the session id: a stale id is accepted as
    /// if it named the current session (breaks
    /// `replication.stale_session_rejected`).
    IgnoreSessionId,
    /// Completion does not require a required truncation to be recorded: a
    /// replica that was ahead is reported in sync with its divergent tail
    /// (breaks `replication.truncate_before_complete`).
    CompleteWithoutTruncation,
    /// An epoch advance does not invalidate the session: the old epoch's
    /// session stays active and can still complete (breaks
    /// `replication.stale_session_rejected`).
    EpochBumpKeepsSession,
    /// Handshake classification trusts the caller's advertised retention start
    /// (`F == C` zero gap, else `R == 0 || F + 1 >= R` catch-up) instead of the
    /// retained history, so a gap beyond what is actually retained, or beyond
    /// the head, is classified as catch-up (breaks
    /// `replication.converged_matches_primary`).
    TrustCallerRetention,
    /// Budget tick arithmetic wraps: the remaining time `limit - elapsed` is
    /// computed with wrapping subtraction, so an overdrawn budget looks like a
    /// huge remainder and a real duration or stall violation passes (time
    /// before the start wraps too and passes as well). A stalled catch-up is
    /// never escalated to a rebuild (breaks `replication.eventually_in_sync`).
    BudgetUnderflow,
}

impl ReplicationFlaw {
    /// Every flaw.
    pub const ALL: [ReplicationFlaw; 5] = [
        ReplicationFlaw::IgnoreSessionId,
        ReplicationFlaw::CompleteWithoutTruncation,
        ReplicationFlaw::EpochBumpKeepsSession,
        ReplicationFlaw::TrustCallerRetention,
        ReplicationFlaw::BudgetUnderflow,
    ];

    /// A stable kebab-case name, e.g. `ignore-session-id`.
    pub const fn name(self) -> &'static str {
        match self {
            ReplicationFlaw::IgnoreSessionId => "ignore-session-id",
            ReplicationFlaw::CompleteWithoutTruncation => "complete-without-truncation",
            ReplicationFlaw::EpochBumpKeepsSession => "epoch-bump-keeps-session",
            ReplicationFlaw::TrustCallerRetention => "trust-caller-retention",
            ReplicationFlaw::BudgetUnderflow => "budget-underflow",
        }
    }
}

impl fmt::Display for ReplicationFlaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the sender and the registry. A call that returns one changed
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ReplicationError {
    /// The sender is stopped: it accepts nothing any more.
    #[error("the sender is stopped")]
    Stopped,
    /// The sender has no session at all.
    #[error("no session")]
    NoSession,
    /// The call names a session that is not the sender's current one (stale
    /// or never issued).
    #[error("session {requested} is not the current session {current}")]
    SessionMismatch {
        /// The sender's current session.
        current: SessionId,
        /// The session the call named.
        requested: SessionId,
    },
    /// The named session is the current one but already completed or
    /// invalidated.
    #[error("session {session} is no longer active (phase {phase})")]
    NotActive {
        /// The session.
        session: SessionId,
        /// Its final phase.
        phase: SessionPhase,
    },
    /// Attach at an epoch other than the sender's.
    #[error("cannot attach at epoch {requested}: the sender is at {sender}")]
    EpochMismatch {
        /// The sender's epoch.
        sender: Epoch,
        /// The epoch asked for.
        requested: Epoch,
    },
    /// Attach while a session is active (supersede it instead).
    #[error("session {session} is still active")]
    SessionActive {
        /// The active session.
        session: SessionId,
    },
    /// An epoch lower than the current one: epochs only move upward.
    #[error("epoch {requested} is below the current epoch {current}")]
    EpochRegression {
        /// The current epoch.
        current: Epoch,
        /// The epoch asked for.
        requested: Epoch,
    },
    /// The call does not apply to the session's current phase.
    #[error("{call} is not allowed in phase {phase}")]
    WrongPhase {
        /// The call.
        call: &'static str,
        /// The session's phase.
        phase: SessionPhase,
    },
    /// The call does not apply to this session kind (catch-up calls on a
    /// rebuild session, rebuild calls on any other, or a budget on a rebuild).
    #[error("{call} does not apply to a {kind} session")]
    WrongKind {
        /// The call.
        call: &'static str,
        /// The session's kind.
        kind: SessionKind,
    },
    /// The call does not apply to the rebuild's current phase (`None`: no
    /// source selected yet).
    #[error("{call} is not allowed in rebuild phase {phase:?}")]
    WrongRebuildPhase {
        /// The call.
        call: &'static str,
        /// The rebuild's phase, if a source was selected.
        phase: Option<RebuildPhase>,
    },
    /// Progress that does not strictly increase.
    #[error("progress to {requested} does not pass {current}")]
    ProgressRegression {
        /// Progress so far.
        current: Lsn,
        /// The progress reported.
        requested: Lsn,
    },
    /// Progress past the frozen limit: the catch-up's frozen target, the
    /// rebuild target, or (for a snapshot transfer) the snapshot LSN.
    #[error("progress to {requested} passes the frozen target {target}")]
    BeyondFrozenTarget {
        /// The limit.
        target: Lsn,
        /// The progress reported.
        requested: Lsn,
    },
    /// Completion before the replica reached the target.
    #[error("not converged: recovered to {recovered_to}, target {target}")]
    NotConverged {
        /// How far the replica got.
        recovered_to: Lsn,
        /// Where it has to get.
        target: Lsn,
    },
    /// A truncation recorded on a session that requires none.
    #[error("no truncation is required")]
    TruncationNotRequired,
    /// A truncation to another LSN than the one required.
    #[error("truncation to {requested} recorded, {expected} required")]
    TruncationMismatch {
        /// The required truncation point.
        expected: Lsn,
        /// The one reported.
        requested: Lsn,
    },
    /// Completion while a required truncation is not recorded.
    #[error("truncation to {to} is required before completion")]
    TruncationNotRecorded {
        /// The required truncation point.
        to: Lsn,
    },
    /// Tail replay on a full-base rebuild.
    #[error("tail replay applies to snapshot+tail rebuilds only")]
    NotSnapshotTail,
    /// Tail replay before the transfer reached the snapshot LSN.
    #[error("transfer reached {transferred_to}, the snapshot is at {snapshot}")]
    TransferIncomplete {
        /// How far the transfer got.
        transferred_to: Lsn,
        /// The snapshot LSN it must reach.
        snapshot: Lsn,
    },
    /// An invalidation that would leave the replica in a state only a
    /// session's own progress may set.
    #[error("a session cannot be invalidated into state {state}")]
    InvalidFallbackState {
        /// The state asked for.
        state: ReplicaState,
    },
    /// A reconcile naming the same replica twice.
    #[error("replica {0} is named twice")]
    DuplicateReplica(ReplicaId),
}

/// The sender for one replica: the authority for its recovery sessions.
///
/// Every call is complete when it returns; there is nothing to drain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sender {
    flaw: Option<ReplicationFlaw>,
    replica: ReplicaId,
    endpoint: Endpoint,
    epoch: Epoch,
    state: ReplicaState,
    /// The current session, kept after it completes or is invalidated so its
    /// outcome can be read, until the next one replaces it.
    session: Option<Session>,
    /// The id the next session gets.
    next_session: u64,
    stopped: bool,
    /// Transitions taken (not state: ignored by equality and hashing).
    cov: Coverage,
}

impl Sender {
    /// A correct sender: `Disconnected`, no session, first session id 1.
    pub fn new(replica: ReplicaId, endpoint: Endpoint, epoch: Epoch) -> Self {
        Sender::with_flaw(replica, endpoint, epoch, None)
    }

    /// A sender with a deliberate flaw (`None` = correct).
    pub fn with_flaw(
        replica: ReplicaId,
        endpoint: Endpoint,
        epoch: Epoch,
        flaw: Option<ReplicationFlaw>,
    ) -> Self {
        Sender {
            flaw,
            replica,
            endpoint,
            epoch,
            state: ReplicaState::Disconnected,
            session: None,
            next_session: 1,
            stopped: false,
            cov: Coverage::new(),
        }
    }

    /// Makes the next session id at least `next`. For a driver that re-creates
    /// a sender (after a crash, or a replica removed and added back) and must
    /// not reissue an id a stale message may still carry. Never lowers it.
    #[must_use]
    pub fn with_session_floor(mut self, next: SessionId) -> Self {
        self.next_session = self.next_session.max(next.0);
        self
    }

    // ----- reads ---------------------------------------------------------

    /// The transitions taken so far (indices into [`TRANSITIONS`]).
    pub fn coverage(&self) -> Coverage {
        self.cov
    }

    /// The flaw this sender was built with, if any.
    pub fn flaw(&self) -> Option<ReplicationFlaw> {
        self.flaw
    }

    /// The replica.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// Where the replica is reached.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The sender's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// What the sender knows about the replica.
    pub fn state(&self) -> ReplicaState {
        self.state
    }

    /// Whether the sender was stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The current session: the active one, or the last one (completed or
    /// invalidated) until another is attached.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The current session if it is active.
    pub fn active_session(&self) -> Option<&Session> {
        self.session.as_ref().filter(|s| s.is_active())
    }

    /// Whether a session is active.
    pub fn has_active_session(&self) -> bool {
        self.active_session().is_some()
    }

    /// The id the next attached session will get. Every id issued so far is
    /// below it.
    pub fn next_session_id(&self) -> SessionId {
        SessionId(self.next_session)
    }

    // ----- lifecycle -----------------------------------------------------

    /// Attaches a new session of `kind` at `epoch`, which must be the sender's
    /// epoch, with an optional catch-up budget.
    ///
    /// # Errors
    /// [`ReplicationError::Stopped`], [`ReplicationError::EpochMismatch`],
    /// [`ReplicationError::SessionActive`], or [`ReplicationError::WrongKind`]
    /// for a budget on a rebuild session.
    pub fn attach_session(
        &mut self,
        epoch: Epoch,
        kind: SessionKind,
        budget: Option<Budget>,
    ) -> Result<SessionId, ReplicationError> {
        if self.stopped {
            return Err(ReplicationError::Stopped);
        }
        if epoch != self.epoch {
            return Err(ReplicationError::EpochMismatch {
                sender: self.epoch,
                requested: epoch,
            });
        }
        if let Some(active) = self.active_session() {
            let session = active.id();
            self.hit(Tr::AttachRefusedActive);
            return Err(ReplicationError::SessionActive { session });
        }
        check_budget_kind("attach_session", kind, budget)?;
        Ok(self.install(kind, budget))
    }

    /// Invalidates the active session, if any (`superseded`), and attaches a
    /// new one of `kind` at the sender's epoch. Returns the new id and the
    /// invalidation.
    ///
    /// # Errors
    /// [`ReplicationError::Stopped`], or [`ReplicationError::WrongKind`] for a
    /// budget on a rebuild session.
    pub fn supersede_session(
        &mut self,
        kind: SessionKind,
        budget: Option<Budget>,
    ) -> Result<(SessionId, Option<Invalidation>), ReplicationError> {
        if self.stopped {
            return Err(ReplicationError::Stopped);
        }
        check_budget_kind("supersede_session", kind, budget)?;
        let old = self.invalidate_active(InvalidationReason::Superseded);
        let id = self.install(kind, budget);
        Ok((id, old))
    }

    /// Advances the sender's epoch. An active session of an older epoch is
    /// invalidated (`epoch_advanced_<old>_to_<new>`) and the replica becomes
    /// `Disconnected`. The same epoch again changes nothing.
    ///
    /// # Errors
    /// [`ReplicationError::Stopped`], or [`ReplicationError::EpochRegression`]
    /// for a lower epoch.
    pub fn advance_epoch(
        &mut self,
        epoch: Epoch,
    ) -> Result<Option<Invalidation>, ReplicationError> {
        if self.stopped {
            return Err(ReplicationError::Stopped);
        }
        if epoch < self.epoch {
            return Err(ReplicationError::EpochRegression {
                current: self.epoch,
                requested: epoch,
            });
        }
        if epoch == self.epoch {
            return Ok(None);
        }
        let from = self.epoch;
        self.epoch = epoch;
        self.hit(Tr::EpochAdvanced);
        if self.flaw == Some(ReplicationFlaw::EpochBumpKeepsSession) {
            return Ok(None);
        }
        let stale = self.active_session().is_some_and(|s| s.epoch() < epoch);
        if !stale {
            return Ok(None);
        }
        let invalidation =
            self.invalidate_active(InvalidationReason::EpochAdvanced { from, to: epoch });
        self.set_state(ReplicaState::Disconnected);
        debug_assert!(!self.has_active_session());
        Ok(invalidation)
    }

    /// Points the sender at a new endpoint. If it differs in any field, an
    /// active session is invalidated (`endpoint_changed`) and the replica
    /// becomes `Disconnected`.
    ///
    /// # Errors
    /// [`ReplicationError::Stopped`].
    pub fn update_endpoint(
        &mut self,
        endpoint: Endpoint,
    ) -> Result<Option<Invalidation>, ReplicationError> {
        if self.stopped {
            return Err(ReplicationError::Stopped);
        }
        if endpoint == self.endpoint {
            return Ok(None);
        }
        self.endpoint = endpoint;
        self.hit(Tr::EndpointChanged);
        let invalidation = self.invalidate_active(InvalidationReason::EndpointChanged);
        if invalidation.is_some() {
            self.set_state(ReplicaState::Disconnected);
        }
        Ok(invalidation)
    }

    /// Stops the sender for good: an active session is invalidated
    /// (`sender_stopped`), the replica becomes `Disconnected`, and every later
    /// call is rejected with [`ReplicationError::Stopped`]. Stopping twice
    /// changes nothing.
    pub fn stop(&mut self) -> Option<Invalidation> {
        if self.stopped {
            return None;
        }
        self.stopped = true;
        self.hit(Tr::Stopped);
        self.set_state(ReplicaState::Disconnected);
        self.invalidate_active(InvalidationReason::SenderStopped)
    }

    // ----- internals -----------------------------------------------------

    fn install(&mut self, kind: SessionKind, budget: Option<Budget>) -> SessionId {
        debug_assert!(!self.stopped);
        debug_assert!(!self.has_active_session());
        let id = SessionId(self.next_session);
        // u64 ids do not run out in any run; saturate rather than wrap so an
        // id can never come back.
        self.next_session = self.next_session.saturating_add(1);
        self.session = Some(Session::new(id, self.epoch, kind, budget));
        self.hit(match kind {
            SessionKind::Bootstrap => Tr::AttachBootstrap,
            SessionKind::CatchUp => Tr::AttachCatchUp,
            SessionKind::Rebuild => Tr::AttachRebuild,
            SessionKind::Reassign => Tr::AttachReassign,
        });
        id
    }

    /// Records transition `t`.
    pub(crate) fn hit(&mut self, t: Tr) {
        self.cov.hit(t as usize);
    }

    /// Records the refusal `t` and returns the error `e`.
    pub(crate) fn refuse(&mut self, t: Tr, e: ReplicationError) -> ReplicationError {
        self.hit(t);
        e
    }

    /// Moves the replica to `state`, recording the state entered.
    pub(crate) fn set_state(&mut self, state: ReplicaState) {
        self.hit(match state {
            ReplicaState::Disconnected => Tr::StateDisconnected,
            ReplicaState::Connecting => Tr::StateConnecting,
            ReplicaState::CatchingUp => Tr::StateCatchingUp,
            ReplicaState::InSync => Tr::StateInSync,
            ReplicaState::Degraded => Tr::StateDegraded,
            ReplicaState::NeedsRebuild => Tr::StateNeedsRebuild,
        });
        self.state = state;
    }

    /// Records the invalidation of a session for `reason`.
    pub(crate) fn hit_invalidation(&mut self, reason: &InvalidationReason) {
        self.hit(match reason {
            InvalidationReason::EpochAdvanced { .. } => Tr::InvalidatedEpoch,
            InvalidationReason::EndpointChanged => Tr::InvalidatedEndpoint,
            InvalidationReason::SenderStopped => Tr::InvalidatedStopped,
            InvalidationReason::GapExceedsRetention => Tr::HandshakeNeedsRebuild,
            InvalidationReason::Budget(_) => Tr::InvalidatedBudget,
            InvalidationReason::Superseded => Tr::InvalidatedSuperseded,
            InvalidationReason::Requested(_) => Tr::InvalidatedDriver,
        });
    }

    /// Invalidates the active session, if any. The replica state is the
    /// caller's business.
    fn invalidate_active(&mut self, reason: InvalidationReason) -> Option<Invalidation> {
        let session = self.session.as_mut().filter(|s| s.is_active())?;
        session.invalidate(reason.clone());
        let id = session.id();
        self.hit_invalidation(&reason);
        Some(Invalidation {
            session: id,
            reason,
        })
    }

    /// The authority check every execution call makes first: not stopped, a
    /// session, the same id, still active. Returns that session.
    fn authorized(&mut self, id: SessionId) -> Result<&mut Session, ReplicationError> {
        let ignore_id = self.flaw == Some(ReplicationFlaw::IgnoreSessionId);
        let refusal = match &self.session {
            _ if self.stopped => Some((Tr::RejectedStopped, ReplicationError::Stopped)),
            None => Some((Tr::RejectedNoSession, ReplicationError::NoSession)),
            Some(s) if s.id() != id && !ignore_id => Some((
                Tr::RejectedMismatch,
                ReplicationError::SessionMismatch {
                    current: s.id(),
                    requested: id,
                },
            )),
            Some(s) if !s.is_active() => Some((
                Tr::RejectedNotActive,
                ReplicationError::NotActive {
                    session: s.id(),
                    phase: s.phase(),
                },
            )),
            Some(_) => None,
        };
        if let Some((t, e)) = refusal {
            self.hit(t);
            return Err(e);
        }
        Ok(self.session.as_mut().expect("checked above"))
    }
}

/// A budget is a catch-up budget: a rebuild session cannot carry one.
fn check_budget_kind(
    call: &'static str,
    kind: SessionKind,
    budget: Option<Budget>,
) -> Result<(), ReplicationError> {
    if budget.is_some() && kind == SessionKind::Rebuild {
        return Err(ReplicationError::WrongKind { call, kind });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
