//! The sender's execution calls shared by every session kind (connect,
//! handshake, invalidate) and those of catch-up sessions (catch-up, progress,
//! truncation, budget, completion).
//!
//! Every call checks authority first, then the session kind, then the phase,
//! then its arguments, and changes nothing unless all of them pass.

use super::budget::TickArithmetic;
use super::{
    BudgetViolation, Handshake, HandshakeRecord, Invalidation, InvalidationReason, Lsn,
    RecoveryOutcome, ReplicaState, ReplicationError, ReplicationFlaw, RetainedHistory, Sender,
    SessionId, SessionKind, SessionPhase, Tr, classify_handshake,
};
use crate::time::Time;

impl Sender {
    /// The driver starts connecting to the replica. Any kind of session.
    ///
    /// # Errors
    /// Authority errors, or [`ReplicationError::WrongPhase`] unless the
    /// session is new.
    pub fn begin_connect(&mut self, session: SessionId) -> Result<(), ReplicationError> {
        let s = self.authorized(session)?;
        if s.phase() != SessionPhase::Init {
            let e = ReplicationError::WrongPhase {
                call: "begin_connect",
                phase: s.phase(),
            };
            return Err(self.refuse(Tr::RejectedWrongPhase, e));
        }
        s.advance(SessionPhase::Connecting);
        self.hit(Tr::InitConnecting);
        self.set_state(ReplicaState::Connecting);
        Ok(())
    }

    /// Records the handshake and decides the recovery path from the
    /// replica's flushed LSN `F` and the primary's `history` (committed `C`).
    ///
    /// For a catch-up session (any kind but rebuild):
    /// - zero gap (`F == C`): range `[F, F]`; the session may complete now;
    /// - catch-up, `F < C`: range `[F, C]`;
    /// - catch-up, replica ahead (`F > C`): range `[C, C]` and a required
    ///   truncation to `C`;
    /// - needs rebuild: the session is invalidated (`gap_exceeds_retention`)
    ///   and the replica is `NeedsRebuild`. This is an outcome, not an error.
    ///
    /// For a rebuild session the outcome is only reported: the range is
    /// `[0, C]` and the source is chosen by [`Sender::select_rebuild_source`].
    ///
    /// The outcome comes from `history.prove(F)`; the handshake's advertised
    /// retention start is ignored (see [`Handshake`]).
    ///
    /// # Errors
    /// Authority errors, or [`ReplicationError::WrongPhase`] unless
    /// connecting.
    pub fn record_handshake(
        &mut self,
        session: SessionId,
        handshake: Handshake,
        history: &RetainedHistory,
    ) -> Result<HandshakeRecord, ReplicationError> {
        let trust_caller = self.flaw == Some(ReplicationFlaw::TrustCallerRetention);
        let s = self.authorized(session)?;
        if s.phase() != SessionPhase::Connecting {
            let e = ReplicationError::WrongPhase {
                call: "record_handshake",
                phase: s.phase(),
            };
            return Err(self.refuse(Tr::RejectedWrongPhase, e));
        }
        let flushed = handshake.replica_flushed;
        let committed = history.committed;
        let proof = history.prove(flushed);
        let outcome = if trust_caller {
            classify_handshake(flushed, committed, handshake.advertised_retention_start)
        } else {
            proof.outcome()
        };
        let record = HandshakeRecord { outcome, proof };
        if s.kind().is_rebuild() {
            s.advance(SessionPhase::Handshake);
            s.set_range(Lsn(0), committed);
            self.hit(Tr::HandshakeRebuild);
            return Ok(record);
        }
        match outcome {
            RecoveryOutcome::ZeroGap => {
                s.advance(SessionPhase::Handshake);
                s.set_range(flushed, flushed);
                self.hit(Tr::HandshakeZeroGap);
            }
            RecoveryOutcome::CatchUp if flushed > committed => {
                s.advance(SessionPhase::Handshake);
                s.set_range(committed, committed);
                s.require_truncation(committed);
                self.hit(Tr::HandshakeAhead);
            }
            RecoveryOutcome::CatchUp => {
                s.advance(SessionPhase::Handshake);
                s.set_range(flushed, committed);
                self.hit(Tr::HandshakeCatchUp);
            }
            RecoveryOutcome::NeedsRebuild => {
                s.invalidate(InvalidationReason::GapExceedsRetention);
                self.hit_invalidation(&InvalidationReason::GapExceedsRetention);
                self.set_state(ReplicaState::NeedsRebuild);
            }
        }
        Ok(record)
    }

    /// Begins catching up at `now`: the target is frozen, the budget clock
    /// starts, the replica is `CatchingUp`.
    ///
    /// # Errors
    /// Authority errors; [`ReplicationError::WrongKind`] on a rebuild
    /// session; [`ReplicationError::WrongPhase`] unless in the handshake
    /// phase.
    pub fn begin_catch_up(
        &mut self,
        session: SessionId,
        now: Time,
    ) -> Result<(), ReplicationError> {
        const CALL: &str = "begin_catch_up";
        let s = self.authorized(session)?;
        require_catch_up_kind(CALL, s.kind())?;
        if s.phase() != SessionPhase::Handshake {
            let e = ReplicationError::WrongPhase {
                call: CALL,
                phase: s.phase(),
            };
            return Err(self.refuse(Tr::RejectedWrongPhase, e));
        }
        s.advance(SessionPhase::CatchUp);
        let target = s.target();
        s.freeze_target(target);
        let usage = s.usage_mut();
        usage.started_at = now;
        usage.last_progress_at = now;
        usage.entries_replayed = 0;
        self.hit(Tr::HandshakeToCatchUp);
        self.set_state(ReplicaState::CatchingUp);
        Ok(())
    }

    /// Records that the replica has recovered up to `to` at `now`. The
    /// entries between the previous point and `to` are charged to the
    /// budget. A `now` earlier than the last progress does not move it back.
    ///
    /// # Errors
    /// Authority errors; [`ReplicationError::WrongKind`];
    /// [`ReplicationError::WrongPhase`] unless catching up;
    /// [`ReplicationError::ProgressRegression`] unless `to` passes the
    /// current point; [`ReplicationError::BeyondFrozenTarget`] past the
    /// frozen target.
    pub fn record_catch_up_progress(
        &mut self,
        session: SessionId,
        to: Lsn,
        now: Time,
    ) -> Result<(), ReplicationError> {
        const CALL: &str = "record_catch_up_progress";
        let s = self.authorized(session)?;
        require_catch_up_kind(CALL, s.kind())?;
        if s.phase() != SessionPhase::CatchUp {
            let e = ReplicationError::WrongPhase {
                call: CALL,
                phase: s.phase(),
            };
            return Err(self.refuse(Tr::RejectedWrongPhase, e));
        }
        let current = s.recovered_to();
        if to <= current {
            let e = ReplicationError::ProgressRegression {
                current,
                requested: to,
            };
            return Err(self.refuse(Tr::RejectedRegression, e));
        }
        let frozen = s.frozen_target().unwrap_or(s.target());
        if to > frozen {
            return Err(ReplicationError::BeyondFrozenTarget {
                target: frozen,
                requested: to,
            });
        }
        s.set_recovered_to(to);
        let usage = s.usage_mut();
        usage.entries_replayed = usage.entries_replayed.saturating_add(to.0 - current.0);
        usage.last_progress_at = usage.last_progress_at.max(now);
        self.hit(Tr::CatchUpProgress);
        Ok(())
    }

    /// Records that the replica truncated its log to `to`, as the handshake
    /// required. Recording it again changes nothing.
    ///
    /// # Errors
    /// Authority errors; [`ReplicationError::WrongKind`];
    /// [`ReplicationError::TruncationNotRequired`];
    /// [`ReplicationError::TruncationMismatch`] for another LSN.
    pub fn record_truncation(
        &mut self,
        session: SessionId,
        to: Lsn,
    ) -> Result<(), ReplicationError> {
        let s = self.authorized(session)?;
        require_catch_up_kind("record_truncation", s.kind())?;
        let Some(required) = s.truncation() else {
            return Err(ReplicationError::TruncationNotRequired);
        };
        if required.to != to {
            return Err(ReplicationError::TruncationMismatch {
                expected: required.to,
                requested: to,
            });
        }
        s.record_truncation();
        self.hit(Tr::TruncationRecorded);
        Ok(())
    }

    /// Completes a catch-up session: the replica is `InSync` at the returned
    /// target. From the handshake phase only if there is no gap; from
    /// catch-up once converged (recovered to the frozen target). Either way a
    /// required truncation must be recorded.
    ///
    /// # Errors
    /// Authority errors; [`ReplicationError::WrongKind`];
    /// [`ReplicationError::WrongPhase`] before the handshake;
    /// [`ReplicationError::NotConverged`];
    /// [`ReplicationError::TruncationNotRecorded`].
    pub fn complete_session(&mut self, session: SessionId) -> Result<Lsn, ReplicationError> {
        const CALL: &str = "complete_session";
        let skip_truncation = self.flaw == Some(ReplicationFlaw::CompleteWithoutTruncation);
        let s = self.authorized(session)?;
        require_catch_up_kind(CALL, s.kind())?;
        let from = s.phase();
        let target = match from {
            SessionPhase::Handshake => s.target(),
            SessionPhase::CatchUp => s.frozen_target().unwrap_or(s.target()),
            phase => {
                let e = ReplicationError::WrongPhase { call: CALL, phase };
                return Err(self.refuse(Tr::RejectedWrongPhase, e));
            }
        };
        if s.recovered_to() < target {
            return Err(ReplicationError::NotConverged {
                recovered_to: s.recovered_to(),
                target,
            });
        }
        if let Some(t) = s.truncation()
            && !t.recorded
            && !skip_truncation
        {
            let e = ReplicationError::TruncationNotRecorded { to: t.to };
            return Err(self.refuse(Tr::CompletionRefusedTruncation, e));
        }
        debug_assert!(s.is_converged());
        s.advance(SessionPhase::Completed);
        self.hit(if from == SessionPhase::Handshake {
            Tr::HandshakeCompleted
        } else {
            Tr::CatchUpCompleted
        });
        self.set_state(ReplicaState::InSync);
        Ok(target)
    }

    /// Checks the catch-up budget at `now`. A violation invalidates the
    /// session (`budget_<violation>`) and the replica `NeedsRebuild`; it is
    /// returned, not an error. Before catch-up begins, or without a budget,
    /// there is nothing to check.
    ///
    /// # Errors
    /// Authority errors, or [`ReplicationError::WrongKind`] on a rebuild
    /// session.
    pub fn check_budget(
        &mut self,
        session: SessionId,
        now: Time,
    ) -> Result<Option<BudgetViolation>, ReplicationError> {
        let arithmetic = self.tick_arithmetic();
        let s = self.authorized(session)?;
        require_catch_up_kind("check_budget", s.kind())?;
        let Some(budget) = s.budget() else {
            return Ok(None);
        };
        if s.phase() != SessionPhase::CatchUp {
            return Ok(None);
        }
        let Some(violation) = budget.check_with(&s.budget_usage(), now, arithmetic) else {
            return Ok(None);
        };
        let reason = InvalidationReason::Budget(violation);
        s.invalidate(reason.clone());
        self.hit_invalidation(&reason);
        self.hit(match violation {
            BudgetViolation::DurationExceeded => Tr::BudgetDuration,
            BudgetViolation::EntriesExceeded => Tr::BudgetEntries,
            BudgetViolation::ProgressStalled => Tr::BudgetStalled,
        });
        self.set_state(ReplicaState::NeedsRebuild);
        Ok(Some(violation))
    }

    /// When the active session's budget is next due for a check: the first
    /// instant from which [`Sender::check_budget`] reports a violation if no
    /// progress is recorded meanwhile ([`Time::ZERO`] if the entries limit is
    /// already exceeded: check now). `None` without an active catching-up
    /// session with a limit to reach. A check at `now` finds a violation iff
    /// the deadline is at or before `now`.
    ///
    /// The deadline is the same under the `BudgetUnderflow` flaw, whose check
    /// then passes: a driver should arm a timer only for a deadline later than
    /// its last check.
    pub fn budget_deadline(&self) -> Option<Time> {
        let s = self.active_session()?;
        if s.phase() != SessionPhase::CatchUp {
            return None;
        }
        s.budget()?.deadline(&s.budget_usage())
    }

    /// The driver gives up on the session: it is invalidated with `reason`
    /// and the replica is left in `state`, which must be `Disconnected`,
    /// `Degraded` or `NeedsRebuild` (only a session's own progress can make a
    /// replica connecting, catching up or in sync).
    ///
    /// # Errors
    /// Authority errors, or [`ReplicationError::InvalidFallbackState`].
    pub fn invalidate_session(
        &mut self,
        session: SessionId,
        reason: impl Into<String>,
        state: ReplicaState,
    ) -> Result<Invalidation, ReplicationError> {
        let s = self.authorized(session)?;
        if !matches!(
            state,
            ReplicaState::Disconnected | ReplicaState::Degraded | ReplicaState::NeedsRebuild
        ) {
            return Err(ReplicationError::InvalidFallbackState { state });
        }
        let reason = InvalidationReason::Requested(reason.into());
        s.invalidate(reason.clone());
        let id = s.id();
        self.hit_invalidation(&reason);
        self.set_state(state);
        Ok(Invalidation {
            session: id,
            reason,
        })
    }

    fn tick_arithmetic(&self) -> TickArithmetic {
        if self.flaw == Some(ReplicationFlaw::BudgetUnderflow) {
            TickArithmetic::Wrapping
        } else {
            TickArithmetic::Checked
        }
    }
}

fn require_catch_up_kind(call: &'static str, kind: SessionKind) -> Result<(), ReplicationError> {
    if kind.is_rebuild() {
        Err(ReplicationError::WrongKind { call, kind })
    } else {
        Ok(())
    }
}
