//! One recovery attempt for one replica at one epoch.
//!
//! A session is data plus its phase machine; every mutation goes through the
//! [`Sender`](super::Sender), which checks authority first. Phases:
//!
//! ```text
//! Init -> Connecting -> Handshake -> CatchUp -> Completed
//!                                 \----------> Completed   (no gap; rebuilds)
//! any active phase -> Invalidated
//! ```
//!
//! A rebuild session stays in `Handshake` while its [`Rebuild`] sub-machine
//! transfers and replays, and completes from there.

use core::fmt;

use serde::{Deserialize, Serialize};

use super::{Budget, BudgetUsage, Epoch, InvalidationReason, Lsn, Rebuild, SessionId};

/// Why a session was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SessionKind {
    /// A new replica's first sync.
    Bootstrap,
    /// A lagging replica catches up from the retained log.
    CatchUp,
    /// A replica is rebuilt from a snapshot or a full base copy.
    Rebuild,
    /// A replica reassigned (e.g. a new primary) re-establishes its position.
    Reassign,
}

impl SessionKind {
    /// The name used in traces.
    pub const fn name(self) -> &'static str {
        match self {
            SessionKind::Bootstrap => "bootstrap",
            SessionKind::CatchUp => "catch_up",
            SessionKind::Rebuild => "rebuild",
            SessionKind::Reassign => "reassign",
        }
    }

    /// Whether sessions of this kind use the rebuild calls (and no others).
    pub const fn is_rebuild(self) -> bool {
        matches!(self, SessionKind::Rebuild)
    }
}

impl fmt::Display for SessionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SessionPhase {
    /// Attached, nothing done yet.
    Init,
    /// Connecting to the replica; waiting for the handshake.
    Connecting,
    /// Handshake recorded: the range is known. Rebuild sessions stay here
    /// until they complete.
    Handshake,
    /// Catching up towards the frozen target.
    CatchUp,
    /// Done: the replica converged (terminal).
    Completed,
    /// Abandoned; see the reason (terminal).
    Invalidated,
}

impl SessionPhase {
    /// The name used in traces.
    pub const fn name(self) -> &'static str {
        match self {
            SessionPhase::Init => "init",
            SessionPhase::Connecting => "connecting",
            SessionPhase::Handshake => "handshake",
            SessionPhase::CatchUp => "catch_up",
            SessionPhase::Completed => "completed",
            SessionPhase::Invalidated => "invalidated",
        }
    }

    /// Whether a session in this phase can still be driven.
    pub const fn is_active(self) -> bool {
        !matches!(self, SessionPhase::Completed | SessionPhase::Invalidated)
    }

    /// Whether `self -> to` is a forward step of the phase machine
    /// (invalidation excluded: any active phase may be invalidated).
    pub const fn can_advance_to(self, to: SessionPhase) -> bool {
        matches!(
            (self, to),
            (SessionPhase::Init, SessionPhase::Connecting)
                | (SessionPhase::Connecting, SessionPhase::Handshake)
                | (SessionPhase::Handshake, SessionPhase::CatchUp)
                | (SessionPhase::Handshake, SessionPhase::Completed)
                | (SessionPhase::CatchUp, SessionPhase::Completed)
        )
    }
}

impl fmt::Display for SessionPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A truncation the replica must perform before it may complete: it was
/// ahead of the primary's committed LSN and holds a divergent tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Truncation {
    /// Truncate the replica's log to this LSN (the primary's committed LSN).
    pub to: Lsn,
    /// Whether the driver reported the truncation done.
    pub recorded: bool,
}

/// A recovery session. Read-only outside the module: the sender mutates it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Session {
    id: SessionId,
    epoch: Epoch,
    kind: SessionKind,
    phase: SessionPhase,
    start: Lsn,
    target: Lsn,
    frozen_target: Option<Lsn>,
    recovered_to: Lsn,
    truncation: Option<Truncation>,
    budget: Option<Budget>,
    usage: BudgetUsage,
    rebuild: Option<Rebuild>,
    invalidation: Option<InvalidationReason>,
}

impl Session {
    pub(super) fn new(
        id: SessionId,
        epoch: Epoch,
        kind: SessionKind,
        budget: Option<Budget>,
    ) -> Self {
        debug_assert!(budget.is_none() || !kind.is_rebuild());
        Session {
            id,
            epoch,
            kind,
            phase: SessionPhase::Init,
            start: Lsn(0),
            target: Lsn(0),
            frozen_target: None,
            recovered_to: Lsn(0),
            truncation: None,
            budget,
            usage: BudgetUsage::default(),
            rebuild: None,
            invalidation: None,
        }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The epoch it was attached at.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Why it was created.
    pub fn kind(&self) -> SessionKind {
        self.kind
    }

    /// Where it stands.
    pub fn phase(&self) -> SessionPhase {
        self.phase
    }

    /// Whether it can still be driven (neither completed nor invalidated).
    pub fn is_active(&self) -> bool {
        self.phase.is_active()
    }

    /// Where recovery starts: the replica's flushed LSN (or the committed LSN
    /// it truncates to). 0 before the handshake and for rebuilds.
    pub fn start(&self) -> Lsn {
        self.start
    }

    /// The primary's committed LSN the session recovers to (from the
    /// handshake; for a rebuild, from source selection).
    pub fn target(&self) -> Lsn {
        self.target
    }

    /// The target as frozen when catch-up began or the rebuild source was
    /// selected; progress never passes it. `None` before that.
    pub fn frozen_target(&self) -> Option<Lsn> {
        self.frozen_target
    }

    /// How far the replica has recovered. Never decreases. For a rebuild it
    /// stays 0 until completion (see [`Session::rebuild`] for progress).
    pub fn recovered_to(&self) -> Lsn {
        self.recovered_to
    }

    /// Whether the replica has reached the (frozen) target.
    pub fn is_converged(&self) -> bool {
        self.recovered_to >= self.frozen_target.unwrap_or(self.target)
    }

    /// The truncation the replica must perform, if it was ahead.
    pub fn truncation(&self) -> Option<Truncation> {
        self.truncation
    }

    /// The catch-up budget, if any.
    pub fn budget(&self) -> Option<Budget> {
        self.budget
    }

    /// What the session has used of its budget (zero before catch-up).
    pub fn budget_usage(&self) -> BudgetUsage {
        self.usage
    }

    /// The rebuild sub-machine, once a rebuild source was selected.
    pub fn rebuild(&self) -> Option<&Rebuild> {
        self.rebuild.as_ref()
    }

    /// Why it was invalidated, if it was.
    pub fn invalidation(&self) -> Option<&InvalidationReason> {
        self.invalidation.as_ref()
    }

    // ----- mutation, for the sender ----------------------------------------

    pub(super) fn advance(&mut self, to: SessionPhase) {
        debug_assert!(
            self.phase.can_advance_to(to),
            "{} -> {} is not a phase step",
            self.phase,
            to
        );
        self.phase = to;
    }

    /// Sets the recovery range at the handshake; recovery counts from
    /// `start`, so the entries budget charges only what this session replays.
    pub(super) fn set_range(&mut self, start: Lsn, target: Lsn) {
        debug_assert!(self.recovered_to <= start || self.kind.is_rebuild());
        self.start = start;
        self.target = target;
        self.recovered_to = start;
    }

    pub(super) fn require_truncation(&mut self, to: Lsn) {
        self.truncation = Some(Truncation {
            to,
            recorded: false,
        });
    }

    pub(super) fn record_truncation(&mut self) {
        if let Some(t) = &mut self.truncation {
            t.recorded = true;
        }
    }

    pub(super) fn freeze_target(&mut self, target: Lsn) {
        self.target = target;
        self.frozen_target = Some(target);
    }

    pub(super) fn set_recovered_to(&mut self, lsn: Lsn) {
        debug_assert!(lsn >= self.recovered_to, "recovery went backwards");
        debug_assert!(self.frozen_target.is_none_or(|t| lsn <= t));
        self.recovered_to = lsn;
    }

    pub(super) fn usage_mut(&mut self) -> &mut BudgetUsage {
        &mut self.usage
    }

    pub(super) fn rebuild_mut(&mut self) -> Option<&mut Rebuild> {
        self.rebuild.as_mut()
    }

    pub(super) fn start_rebuild(&mut self, rebuild: Rebuild) {
        debug_assert!(self.kind.is_rebuild() && self.rebuild.is_none());
        self.rebuild = Some(rebuild);
    }

    /// Invalidates an active session; a terminal one is left as it is.
    pub(super) fn invalidate(&mut self, reason: InvalidationReason) {
        if !self.is_active() {
            return;
        }
        self.phase = SessionPhase::Invalidated;
        self.invalidation = Some(reason);
    }
}
