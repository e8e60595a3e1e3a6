//! The sender's rules, one test each, then a property test driving random
//! call sequences (stale ids and epoch bumps included) against one sender.

use core::fmt::Debug;
use core::time::Duration;

use super::*;
use crate::time::Time;

const R1: ReplicaId = ReplicaId(1);

fn ep(version: u64) -> Endpoint {
    Endpoint::new(format!("r1:{version}"), "r1:ctrl", version)
}

fn sender() -> Sender {
    Sender::new(R1, ep(1), Epoch(1))
}

fn flawed(flaw: ReplicationFlaw) -> Sender {
    Sender::with_flaw(R1, ep(1), Epoch(1), Some(flaw))
}

fn t(us: u64) -> Time {
    Time::from_micros(us)
}

/// Entries `(tail, head]` retained, `committed`, no checkpoint.
fn history(tail: u64, head: u64, committed: u64) -> RetainedHistory {
    RetainedHistory {
        head: Lsn(head),
        tail: Lsn(tail),
        committed: Lsn(committed),
        checkpoint: Lsn(0),
        checkpoint_trusted: false,
    }
}

/// A handshake whose advertised retention start is honest for `h`.
fn hs(flushed: u64, h: &RetainedHistory) -> Handshake {
    Handshake {
        replica_flushed: Lsn(flushed),
        advertised_retention_start: h.retention_start(),
    }
}

/// Attaches a session of `kind`, connects, records the handshake.
fn handshaken(
    s: &mut Sender,
    kind: SessionKind,
    budget: Option<Budget>,
    flushed: u64,
    h: &RetainedHistory,
) -> (SessionId, HandshakeRecord) {
    let id = s.attach_session(s.epoch(), kind, budget).unwrap();
    s.begin_connect(id).unwrap();
    let record = s.record_handshake(id, hs(flushed, h), h).unwrap();
    (id, record)
}

/// A catch-up session from `flushed` to `committed`, catching up since `at`.
fn catching_up(
    s: &mut Sender,
    flushed: u64,
    committed: u64,
    budget: Option<Budget>,
    at: u64,
) -> SessionId {
    let h = history(0, committed, committed);
    let (id, record) = handshaken(s, SessionKind::CatchUp, budget, flushed, &h);
    assert_eq!(record.outcome, RecoveryOutcome::CatchUp);
    s.begin_catch_up(id, t(at)).unwrap();
    id
}

/// Asserts that `call` fails with `expected` and leaves the sender unchanged.
fn rejected<T: Debug>(
    s: &mut Sender,
    expected: ReplicationError,
    call: impl FnOnce(&mut Sender) -> Result<T, ReplicationError>,
) {
    let before = s.clone();
    assert_eq!(call(s).unwrap_err(), expected);
    assert_eq!(*s, before, "a rejected call changed the sender");
}

type Call = Box<dyn Fn(&mut Sender, SessionId) -> Result<(), ReplicationError>>;

/// Every execution call (each names a session), with plausible arguments.
fn every_execution_call() -> Vec<(&'static str, Call)> {
    let h = RetainedHistory {
        head: Lsn(100),
        tail: Lsn(0),
        committed: Lsn(100),
        checkpoint: Lsn(50),
        checkpoint_trusted: true,
    };
    vec![
        ("begin_connect", Box::new(|s, id| s.begin_connect(id))),
        (
            "record_handshake",
            Box::new(move |s, id| s.record_handshake(id, hs(10, &h), &h).map(drop)),
        ),
        (
            "begin_catch_up",
            Box::new(|s, id| s.begin_catch_up(id, t(5))),
        ),
        (
            "record_catch_up_progress",
            Box::new(|s, id| s.record_catch_up_progress(id, Lsn(11), t(6))),
        ),
        (
            "record_truncation",
            Box::new(|s, id| s.record_truncation(id, Lsn(5))),
        ),
        (
            "complete_session",
            Box::new(|s, id| s.complete_session(id).map(drop)),
        ),
        (
            "check_budget",
            Box::new(|s, id| s.check_budget(id, t(1_000_000)).map(drop)),
        ),
        (
            "invalidate_session",
            Box::new(|s, id| {
                s.invalidate_session(id, "driver", ReplicaState::Degraded)
                    .map(drop)
            }),
        ),
        (
            "select_rebuild_source",
            Box::new(move |s, id| s.select_rebuild_source(id, &h).map(drop)),
        ),
        (
            "record_transfer_progress",
            Box::new(|s, id| s.record_transfer_progress(id, Lsn(50))),
        ),
        (
            "begin_tail_replay",
            Box::new(|s, id| s.begin_tail_replay(id)),
        ),
        (
            "record_tail_progress",
            Box::new(|s, id| s.record_tail_progress(id, Lsn(60))),
        ),
        (
            "complete_rebuild",
            Box::new(|s, id| s.complete_rebuild(id).map(drop)),
        ),
    ]
}

/// Senders whose current session sits at interesting points, each with a
/// stale id (a session it issued before) and a never-issued id.
fn senders_with_stale_ids() -> Vec<(Sender, SessionId)> {
    let mut out = Vec::new();
    // Catch-up in progress, after a superseded session.
    let mut a = sender();
    let old = a
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    let (_, _) = a.supersede_session(SessionKind::CatchUp, None).unwrap();
    out.push((a.clone(), old));
    let id = a.session().unwrap().id();
    a.begin_connect(id).unwrap();
    a.record_handshake(id, hs(10, &history(0, 100, 100)), &history(0, 100, 100))
        .unwrap();
    a.begin_catch_up(id, t(0)).unwrap();
    out.push((a, old));
    // Rebuild replaying its tail, after a completed catch-up.
    let mut b = sender();
    let done = catching_up(&mut b, 10, 20, None, 0);
    b.record_catch_up_progress(done, Lsn(20), t(1)).unwrap();
    b.complete_session(done).unwrap();
    let h = RetainedHistory {
        head: Lsn(100),
        tail: Lsn(0),
        committed: Lsn(100),
        checkpoint: Lsn(50),
        checkpoint_trusted: true,
    };
    let (rb, _) = handshaken(&mut b, SessionKind::Rebuild, None, 0, &h);
    b.select_rebuild_source(rb, &h).unwrap();
    b.record_transfer_progress(rb, Lsn(50)).unwrap();
    b.begin_tail_replay(rb).unwrap();
    out.push((b, done));
    out
}

// ----- authority -----------------------------------------------------------

#[test]
fn stale_session_id_is_rejected_by_every_call() {
    for (s, stale) in senders_with_stale_ids() {
        let current = s.session().unwrap().id();
        assert_ne!(stale, current);
        for requested in [stale, SessionId(current.0 + 1), SessionId(0)] {
            for (name, call) in every_execution_call() {
                let mut s = s.clone();
                let before = s.clone();
                assert_eq!(
                    call(&mut s, requested),
                    Err(ReplicationError::SessionMismatch { current, requested }),
                    "{name} with {requested}"
                );
                assert_eq!(s, before, "{name} changed the sender");
            }
        }
    }
}

#[test]
fn calls_naming_a_finished_session_are_rejected_as_not_active() {
    let mut done = sender();
    let id = catching_up(&mut done, 10, 20, None, 0);
    done.record_catch_up_progress(id, Lsn(20), t(1)).unwrap();
    done.complete_session(id).unwrap();
    let mut gone = sender();
    let gid = gone
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    gone.invalidate_session(gid, "crash", ReplicaState::Disconnected)
        .unwrap();
    for (mut s, id, phase) in [
        (done, id, SessionPhase::Completed),
        (gone, gid, SessionPhase::Invalidated),
    ] {
        for (name, call) in every_execution_call() {
            let before = s.clone();
            assert_eq!(
                call(&mut s, id),
                Err(ReplicationError::NotActive { session: id, phase }),
                "{name}"
            );
            assert_eq!(s, before, "{name} changed the sender");
        }
    }
}

#[test]
fn every_call_is_rejected_without_a_session() {
    let mut s = sender();
    for (name, call) in every_execution_call() {
        let before = s.clone();
        assert_eq!(
            call(&mut s, SessionId(1)),
            Err(ReplicationError::NoSession),
            "{name}"
        );
        assert_eq!(s, before);
    }
}

#[test]
fn stop_invalidates_the_session_and_every_later_call_is_rejected() {
    let mut s = sender();
    let id = catching_up(&mut s, 10, 20, None, 0);
    let inv = s.stop().unwrap();
    assert_eq!(inv.session, id);
    assert_eq!(inv.reason.to_string(), "sender_stopped");
    assert!(s.is_stopped());
    assert_eq!(s.state(), ReplicaState::Disconnected);
    assert_eq!(s.session().unwrap().phase(), SessionPhase::Invalidated);
    assert_eq!(s.stop(), None, "stopping twice changes nothing");
    for (name, call) in every_execution_call() {
        let before = s.clone();
        assert_eq!(call(&mut s, id), Err(ReplicationError::Stopped), "{name}");
        assert_eq!(s, before);
    }
    rejected(&mut s, ReplicationError::Stopped, |s| {
        s.attach_session(Epoch(1), SessionKind::CatchUp, None)
    });
    rejected(&mut s, ReplicationError::Stopped, |s| {
        s.supersede_session(SessionKind::CatchUp, None)
    });
    rejected(&mut s, ReplicationError::Stopped, |s| {
        s.advance_epoch(Epoch(2))
    });
    rejected(&mut s, ReplicationError::Stopped, |s| {
        s.update_endpoint(ep(2))
    });
}

// ----- lifecycle -------------------------------------------------------------

#[test]
fn new_sender_is_disconnected_without_a_session() {
    let s = sender();
    assert_eq!(s.replica(), R1);
    assert_eq!(s.endpoint(), &ep(1));
    assert_eq!(s.epoch(), Epoch(1));
    assert_eq!(s.state(), ReplicaState::Disconnected);
    assert!(s.session().is_none() && !s.has_active_session() && !s.is_stopped());
    assert_eq!(s.next_session_id(), SessionId(1));
    assert_eq!(s.flaw(), None);
    assert_eq!(s.budget_deadline(), None);
}

#[test]
fn attach_requires_the_sender_epoch() {
    let mut s = sender();
    for epoch in [Epoch(0), Epoch(2)] {
        rejected(
            &mut s,
            ReplicationError::EpochMismatch {
                sender: Epoch(1),
                requested: epoch,
            },
            |s| s.attach_session(epoch, SessionKind::CatchUp, None),
        );
    }
    let id = s
        .attach_session(Epoch(1), SessionKind::Bootstrap, None)
        .unwrap();
    let session = s.active_session().unwrap();
    assert_eq!(
        (
            session.id(),
            session.epoch(),
            session.kind(),
            session.phase()
        ),
        (id, Epoch(1), SessionKind::Bootstrap, SessionPhase::Init)
    );
}

#[test]
fn attach_is_rejected_while_a_session_is_active() {
    let mut s = sender();
    let id = s
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    rejected(
        &mut s,
        ReplicationError::SessionActive { session: id },
        |s| s.attach_session(Epoch(1), SessionKind::Rebuild, None),
    );
}

#[test]
fn attach_after_completion_replaces_the_finished_session() {
    let mut s = sender();
    let h = history(0, 10, 10);
    let (first, record) = handshaken(&mut s, SessionKind::CatchUp, None, 10, &h);
    assert_eq!(record.outcome, RecoveryOutcome::ZeroGap);
    s.complete_session(first).unwrap();
    assert_eq!(s.session().unwrap().id(), first, "kept for inspection");
    let second = s
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    assert_eq!(s.active_session().unwrap().id(), second);
}

#[test]
fn budget_on_a_rebuild_session_is_rejected() {
    let mut s = sender();
    let budget = Some(Budget {
        max_entries: 5,
        ..Budget::UNLIMITED
    });
    let kind = SessionKind::Rebuild;
    rejected(
        &mut s,
        ReplicationError::WrongKind {
            call: "attach_session",
            kind,
        },
        |s| s.attach_session(Epoch(1), kind, budget),
    );
    rejected(
        &mut s,
        ReplicationError::WrongKind {
            call: "supersede_session",
            kind,
        },
        |s| s.supersede_session(kind, budget),
    );
}

#[test]
fn session_ids_are_never_reused() {
    let mut s = sender();
    let mut seen = Vec::new();
    for round in 0..6u64 {
        let id = match round % 3 {
            0 => s.supersede_session(SessionKind::CatchUp, None).unwrap().0,
            1 => s.supersede_session(SessionKind::Rebuild, None).unwrap().0,
            _ => {
                s.advance_epoch(Epoch(s.epoch().0 + 1)).unwrap();
                s.attach_session(s.epoch(), SessionKind::Reassign, None)
                    .unwrap()
            }
        };
        assert!(seen.iter().all(|old| *old < id), "{id} after {seen:?}");
        seen.push(id);
    }
    assert_eq!(s.next_session_id(), SessionId(7));
}

#[test]
fn session_floor_only_raises_the_next_id() {
    let s = sender().with_session_floor(SessionId(40));
    assert_eq!(s.next_session_id(), SessionId(40));
    let s = s.with_session_floor(SessionId(3));
    assert_eq!(s.next_session_id(), SessionId(40));
}

#[test]
fn supersede_invalidates_the_old_session_and_attaches_a_new_one() {
    let mut s = sender();
    let old = catching_up(&mut s, 10, 20, None, 0);
    let (new, inv) = s.supersede_session(SessionKind::Rebuild, None).unwrap();
    let inv = inv.unwrap();
    assert_eq!(inv.session, old);
    assert_eq!(inv.reason, InvalidationReason::Superseded);
    assert_eq!(inv.reason.to_string(), "superseded");
    assert!(new > old);
    let session = s.active_session().unwrap();
    assert_eq!((session.id(), session.kind()), (new, SessionKind::Rebuild));
    // Without an active session there is nothing to invalidate.
    s.invalidate_session(new, "x", ReplicaState::Disconnected)
        .unwrap();
    assert_eq!(
        s.supersede_session(SessionKind::CatchUp, None).unwrap().1,
        None
    );
}

#[test]
fn epoch_advance_invalidates_the_session_and_disconnects() {
    let mut s = sender();
    let id = catching_up(&mut s, 10, 20, None, 0);
    let inv = s.advance_epoch(Epoch(3)).unwrap().unwrap();
    assert_eq!(inv.session, id);
    assert_eq!(inv.reason.to_string(), "epoch_advanced_1_to_3");
    assert_eq!(s.epoch(), Epoch(3));
    assert_eq!(s.state(), ReplicaState::Disconnected);
    assert!(!s.has_active_session());
    rejected(
        &mut s,
        ReplicationError::NotActive {
            session: id,
            phase: SessionPhase::Invalidated,
        },
        |s| s.record_catch_up_progress(id, Lsn(11), t(1)),
    );
    // A new session needs the new epoch.
    rejected(
        &mut s,
        ReplicationError::EpochMismatch {
            sender: Epoch(3),
            requested: Epoch(1),
        },
        |s| s.attach_session(Epoch(1), SessionKind::CatchUp, None),
    );
    s.attach_session(Epoch(3), SessionKind::CatchUp, None)
        .unwrap();
}

#[test]
fn epoch_only_moves_upward() {
    let mut s = sender();
    s.advance_epoch(Epoch(5)).unwrap();
    let id = s
        .attach_session(Epoch(5), SessionKind::CatchUp, None)
        .unwrap();
    rejected(
        &mut s,
        ReplicationError::EpochRegression {
            current: Epoch(5),
            requested: Epoch(4),
        },
        |s| s.advance_epoch(Epoch(4)),
    );
    let before = s.clone();
    assert_eq!(s.advance_epoch(Epoch(5)), Ok(None), "same epoch: no-op");
    assert_eq!(s, before);
    assert_eq!(s.active_session().unwrap().id(), id);
}

#[test]
fn epoch_advance_without_a_session_keeps_the_replica_state() {
    let mut s = sender();
    let h = history(0, 10, 10);
    let (id, _) = handshaken(&mut s, SessionKind::CatchUp, None, 10, &h);
    s.complete_session(id).unwrap();
    assert_eq!(s.advance_epoch(Epoch(2)), Ok(None));
    assert_eq!(s.state(), ReplicaState::InSync);
    assert_eq!(s.session().unwrap().phase(), SessionPhase::Completed);
}

#[test]
fn endpoint_change_invalidates_the_session() {
    for changed in [
        Endpoint::new("r1:9", "r1:ctrl", 1),
        Endpoint::new("r1:1", "elsewhere", 1),
        Endpoint::new("r1:1", "r1:ctrl", 2),
    ] {
        let mut s = sender();
        let id = catching_up(&mut s, 10, 20, None, 0);
        let inv = s.update_endpoint(changed.clone()).unwrap().unwrap();
        assert_eq!(
            (inv.session, inv.reason.to_string()),
            (id, "endpoint_changed".into())
        );
        assert_eq!(s.endpoint(), &changed);
        assert_eq!(s.state(), ReplicaState::Disconnected);
        assert!(!s.has_active_session());
    }
}

#[test]
fn unchanged_endpoint_keeps_the_session() {
    let mut s = sender();
    catching_up(&mut s, 10, 20, None, 0);
    let before = s.clone();
    assert_eq!(s.update_endpoint(ep(1)), Ok(None));
    assert_eq!(s, before);
}

#[test]
fn endpoint_change_without_a_session_only_moves_the_endpoint() {
    let mut s = sender();
    assert_eq!(s.update_endpoint(ep(2)), Ok(None));
    assert_eq!(s.endpoint(), &ep(2));
    assert_eq!(s.state(), ReplicaState::Disconnected);
}

#[test]
fn invalidate_session_leaves_the_fallback_state_the_driver_names() {
    for state in [
        ReplicaState::Disconnected,
        ReplicaState::Degraded,
        ReplicaState::NeedsRebuild,
    ] {
        let mut s = sender();
        let id = catching_up(&mut s, 10, 20, None, 0);
        let inv = s.invalidate_session(id, "replica_crashed", state).unwrap();
        assert_eq!(inv.reason.to_string(), "replica_crashed");
        assert_eq!(s.state(), state);
        assert_eq!(
            s.session().unwrap().invalidation(),
            Some(&InvalidationReason::Requested("replica_crashed".into()))
        );
    }
    for state in [
        ReplicaState::Connecting,
        ReplicaState::CatchingUp,
        ReplicaState::InSync,
    ] {
        let mut s = sender();
        let id = catching_up(&mut s, 10, 20, None, 0);
        rejected(
            &mut s,
            ReplicationError::InvalidFallbackState { state },
            |s| s.invalidate_session(id, "x", state),
        );
    }
}

#[test]
fn invalidation_reasons_render_as_specified() {
    let cases = [
        (
            InvalidationReason::EpochAdvanced {
                from: Epoch(7),
                to: Epoch(9),
            },
            "epoch_advanced_7_to_9",
        ),
        (InvalidationReason::EndpointChanged, "endpoint_changed"),
        (InvalidationReason::SenderStopped, "sender_stopped"),
        (
            InvalidationReason::GapExceedsRetention,
            "gap_exceeds_retention",
        ),
        (
            InvalidationReason::Budget(BudgetViolation::DurationExceeded),
            "budget_duration_exceeded",
        ),
        (
            InvalidationReason::Budget(BudgetViolation::EntriesExceeded),
            "budget_entries_exceeded",
        ),
        (
            InvalidationReason::Budget(BudgetViolation::ProgressStalled),
            "budget_progress_stalled",
        ),
        (InvalidationReason::Superseded, "superseded"),
        (InvalidationReason::Requested("why".into()), "why"),
    ];
    for (reason, text) in cases {
        assert_eq!(reason.to_string(), text);
    }
}

// ----- handshake ---------------------------------------------------------------

#[test]
fn phases_must_be_taken_in_order() {
    let mut s = sender();
    let h = history(0, 100, 100);
    let id = s
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    let wrong = |call, phase| ReplicationError::WrongPhase { call, phase };
    let init = SessionPhase::Init;
    rejected(&mut s, wrong("record_handshake", init), |s| {
        s.record_handshake(id, hs(10, &h), &h)
    });
    rejected(&mut s, wrong("begin_catch_up", init), |s| {
        s.begin_catch_up(id, t(0))
    });
    rejected(&mut s, wrong("record_catch_up_progress", init), |s| {
        s.record_catch_up_progress(id, Lsn(11), t(0))
    });
    rejected(&mut s, wrong("complete_session", init), |s| {
        s.complete_session(id)
    });
    s.begin_connect(id).unwrap();
    assert_eq!(s.state(), ReplicaState::Connecting);
    let connecting = SessionPhase::Connecting;
    rejected(&mut s, wrong("begin_connect", connecting), |s| {
        s.begin_connect(id)
    });
    rejected(&mut s, wrong("begin_catch_up", connecting), |s| {
        s.begin_catch_up(id, t(0))
    });
    s.record_handshake(id, hs(10, &h), &h).unwrap();
    let handshake = SessionPhase::Handshake;
    rejected(&mut s, wrong("record_handshake", handshake), |s| {
        s.record_handshake(id, hs(10, &h), &h)
    });
    rejected(&mut s, wrong("record_catch_up_progress", handshake), |s| {
        s.record_catch_up_progress(id, Lsn(11), t(0))
    });
    s.begin_catch_up(id, t(0)).unwrap();
    rejected(
        &mut s,
        wrong("begin_catch_up", SessionPhase::CatchUp),
        |s| s.begin_catch_up(id, t(0)),
    );
}

#[test]
fn zero_gap_handshake_completes_directly_from_handshake() {
    let mut s = sender();
    let h = history(0, 40, 40);
    let (id, record) = handshaken(&mut s, SessionKind::Reassign, None, 40, &h);
    assert_eq!(record.outcome, RecoveryOutcome::ZeroGap);
    assert_eq!(record.proof.reason, ProofReason::ZeroGap);
    let session = s.active_session().unwrap();
    assert_eq!((session.start(), session.target()), (Lsn(40), Lsn(40)));
    assert_eq!(s.complete_session(id), Ok(Lsn(40)));
    assert_eq!(s.state(), ReplicaState::InSync);
    assert_eq!(s.session().unwrap().phase(), SessionPhase::Completed);
}

#[test]
fn zero_gap_holds_even_with_nothing_retained() {
    let mut s = sender();
    let h = history(40, 40, 40);
    let (_, record) = handshaken(&mut s, SessionKind::CatchUp, None, 40, &h);
    assert_eq!(record.outcome, RecoveryOutcome::ZeroGap);
}

#[test]
fn gap_from_exactly_the_tail_is_caught_up() {
    let mut s = sender();
    // Entries (30, 100] retained: a replica at 30 needs 31.. and gets them.
    let h = history(30, 100, 100);
    let (id, record) = handshaken(&mut s, SessionKind::CatchUp, None, 30, &h);
    assert_eq!(record.outcome, RecoveryOutcome::CatchUp);
    assert_eq!(record.proof.reason, ProofReason::GapWithinRetention);
    assert!(record.proof.recoverable());
    let session = s.active_session().unwrap();
    assert_eq!(
        (session.start(), session.target(), session.recovered_to()),
        (Lsn(30), Lsn(100), Lsn(30))
    );
    assert_eq!(session.truncation(), None);
    assert_eq!(s.state(), ReplicaState::Connecting);
    rejected(
        &mut s,
        ReplicationError::NotConverged {
            recovered_to: Lsn(30),
            target: Lsn(100),
        },
        |s| s.complete_session(id),
    );
}

#[test]
fn gap_from_one_below_the_tail_needs_rebuild_without_an_error() {
    let mut s = sender();
    let h = history(30, 100, 100);
    let (id, record) = handshaken(&mut s, SessionKind::CatchUp, None, 29, &h);
    assert_eq!(record.outcome, RecoveryOutcome::NeedsRebuild);
    assert_eq!(record.proof.reason, ProofReason::GapBeyondRetention);
    assert!(!record.proof.recoverable());
    assert_eq!(s.state(), ReplicaState::NeedsRebuild);
    let session = s.session().unwrap();
    assert_eq!(session.id(), id);
    assert_eq!(session.phase(), SessionPhase::Invalidated);
    assert_eq!(
        session.invalidation().map(ToString::to_string).as_deref(),
        Some("gap_exceeds_retention")
    );
}

#[test]
fn gap_reaching_beyond_the_head_needs_rebuild_and_the_proof_agrees() {
    let mut s = sender();
    // Committed 100 but the log only reaches 90: (90, 100] is nowhere.
    let h = history(0, 90, 100);
    let (_, record) = handshaken(&mut s, SessionKind::CatchUp, None, 50, &h);
    assert_eq!(record.proof.reason, ProofReason::GapBeyondRetention);
    assert_eq!(record.outcome, RecoveryOutcome::NeedsRebuild);
    assert_eq!(record.outcome, record.proof.outcome());
    assert_eq!(s.state(), ReplicaState::NeedsRebuild);
    // The reference's formula alone would have said catch-up.
    assert_eq!(
        classify_handshake(Lsn(50), Lsn(100), h.retention_start()),
        RecoveryOutcome::CatchUp
    );
}

#[test]
fn replica_ahead_requires_truncation_before_completion() {
    let mut s = sender();
    let h = history(0, 100, 80);
    let (id, record) = handshaken(&mut s, SessionKind::CatchUp, None, 95, &h);
    assert_eq!(record.outcome, RecoveryOutcome::CatchUp);
    assert_eq!(
        record.proof.reason,
        ProofReason::ReplicaAheadNeedsTruncation
    );
    let session = s.active_session().unwrap();
    assert_eq!((session.start(), session.target()), (Lsn(80), Lsn(80)));
    assert_eq!(
        session.truncation(),
        Some(Truncation {
            to: Lsn(80),
            recorded: false
        })
    );
    rejected(
        &mut s,
        ReplicationError::TruncationNotRecorded { to: Lsn(80) },
        |s| s.complete_session(id),
    );
    rejected(
        &mut s,
        ReplicationError::TruncationMismatch {
            expected: Lsn(80),
            requested: Lsn(95),
        },
        |s| s.record_truncation(id, Lsn(95)),
    );
    s.record_truncation(id, Lsn(80)).unwrap();
    let before = s.clone();
    s.record_truncation(id, Lsn(80)).unwrap();
    assert_eq!(s, before, "recording it again changes nothing");
    assert_eq!(s.complete_session(id), Ok(Lsn(80)));
    assert_eq!(s.state(), ReplicaState::InSync);
    assert!(s.session().unwrap().truncation().unwrap().recorded);
}

#[test]
fn replica_ahead_may_also_complete_through_catch_up_after_truncation() {
    let mut s = sender();
    let h = history(0, 100, 80);
    let (id, _) = handshaken(&mut s, SessionKind::CatchUp, None, 95, &h);
    s.begin_catch_up(id, t(0)).unwrap();
    // Nothing to replay: the target is where the replica truncates to.
    rejected(
        &mut s,
        ReplicationError::ProgressRegression {
            current: Lsn(80),
            requested: Lsn(80),
        },
        |s| s.record_catch_up_progress(id, Lsn(80), t(1)),
    );
    rejected(
        &mut s,
        ReplicationError::TruncationNotRecorded { to: Lsn(80) },
        |s| s.complete_session(id),
    );
    s.record_truncation(id, Lsn(80)).unwrap();
    assert_eq!(s.complete_session(id), Ok(Lsn(80)));
}

#[test]
fn truncation_is_rejected_when_not_required() {
    let mut s = sender();
    let id = catching_up(&mut s, 10, 20, None, 0);
    rejected(&mut s, ReplicationError::TruncationNotRequired, |s| {
        s.record_truncation(id, Lsn(20))
    });
}

#[test]
fn advertised_retention_start_is_not_trusted() {
    let mut s = sender();
    // The primary advertised "everything retained", but has since recycled
    // up to 60.
    let h = history(60, 100, 100);
    let id = s
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    s.begin_connect(id).unwrap();
    let stale = Handshake {
        replica_flushed: Lsn(20),
        advertised_retention_start: Lsn(0),
    };
    let record = s.record_handshake(id, stale, &h).unwrap();
    assert_eq!(record.outcome, RecoveryOutcome::NeedsRebuild);
    assert_eq!(s.state(), ReplicaState::NeedsRebuild);
}

// ----- catch-up ----------------------------------------------------------------

#[test]
fn catch_up_freezes_the_target_when_it_begins() {
    let mut s = sender();
    let id = catching_up(&mut s, 10, 50, None, 0);
    let session = s.active_session().unwrap();
    assert_eq!(session.frozen_target(), Some(Lsn(50)));
    assert_eq!(s.state(), ReplicaState::CatchingUp);
    // The primary commits more meanwhile; the session does not chase it.
    rejected(
        &mut s,
        ReplicationError::BeyondFrozenTarget {
            target: Lsn(50),
            requested: Lsn(51),
        },
        |s| s.record_catch_up_progress(id, Lsn(51), t(1)),
    );
    s.record_catch_up_progress(id, Lsn(50), t(1)).unwrap();
    assert_eq!(s.complete_session(id), Ok(Lsn(50)));
}

#[test]
fn progress_must_strictly_increase() {
    let mut s = sender();
    let id = catching_up(&mut s, 10, 50, None, 0);
    rejected(
        &mut s,
        ReplicationError::ProgressRegression {
            current: Lsn(10),
            requested: Lsn(10),
        },
        |s| s.record_catch_up_progress(id, Lsn(10), t(1)),
    );
    s.record_catch_up_progress(id, Lsn(30), t(1)).unwrap();
    for to in [29, 30] {
        rejected(
            &mut s,
            ReplicationError::ProgressRegression {
                current: Lsn(30),
                requested: Lsn(to),
            },
            |s| s.record_catch_up_progress(id, Lsn(to), t(2)),
        );
    }
    assert_eq!(s.active_session().unwrap().recovered_to(), Lsn(30));
}

#[test]
fn completion_requires_convergence() {
    let mut s = sender();
    let id = catching_up(&mut s, 10, 50, None, 0);
    s.record_catch_up_progress(id, Lsn(49), t(1)).unwrap();
    rejected(
        &mut s,
        ReplicationError::NotConverged {
            recovered_to: Lsn(49),
            target: Lsn(50),
        },
        |s| s.complete_session(id),
    );
    s.record_catch_up_progress(id, Lsn(50), t(2)).unwrap();
    assert!(s.active_session().unwrap().is_converged());
    assert_eq!(s.complete_session(id), Ok(Lsn(50)));
    assert_eq!(s.state(), ReplicaState::InSync);
}

#[test]
fn catch_up_calls_are_rejected_on_rebuild_sessions() {
    let mut s = sender();
    let h = history(0, 100, 100);
    let (id, record) = handshaken(&mut s, SessionKind::Rebuild, None, 10, &h);
    assert_eq!(record.outcome, RecoveryOutcome::CatchUp, "reported only");
    assert!(s.has_active_session());
    let kind = SessionKind::Rebuild;
    let wrong = |call| ReplicationError::WrongKind { call, kind };
    rejected(&mut s, wrong("begin_catch_up"), |s| {
        s.begin_catch_up(id, t(0))
    });
    rejected(&mut s, wrong("record_catch_up_progress"), |s| {
        s.record_catch_up_progress(id, Lsn(11), t(0))
    });
    rejected(&mut s, wrong("record_truncation"), |s| {
        s.record_truncation(id, Lsn(10))
    });
    rejected(&mut s, wrong("complete_session"), |s| {
        s.complete_session(id)
    });
    rejected(&mut s, wrong("check_budget"), |s| s.check_budget(id, t(0)));
}

#[test]
fn rebuild_calls_are_rejected_on_catch_up_sessions() {
    for kind in [
        SessionKind::Bootstrap,
        SessionKind::CatchUp,
        SessionKind::Reassign,
    ] {
        let mut s = sender();
        let h = history(0, 100, 100);
        let (id, _) = handshaken(&mut s, kind, None, 10, &h);
        let wrong = |call| ReplicationError::WrongKind { call, kind };
        rejected(&mut s, wrong("select_rebuild_source"), |s| {
            s.select_rebuild_source(id, &h)
        });
        rejected(&mut s, wrong("record_transfer_progress"), |s| {
            s.record_transfer_progress(id, Lsn(1))
        });
        rejected(&mut s, wrong("begin_tail_replay"), |s| {
            s.begin_tail_replay(id)
        });
        rejected(&mut s, wrong("record_tail_progress"), |s| {
            s.record_tail_progress(id, Lsn(1))
        });
        rejected(&mut s, wrong("complete_rebuild"), |s| {
            s.complete_rebuild(id)
        });
    }
}

// ----- budget ------------------------------------------------------------------

fn budget(duration_us: u64, entries: u64, deadline_us: u64) -> Option<Budget> {
    Some(Budget {
        max_duration: Duration::from_micros(duration_us),
        max_entries: entries,
        progress_deadline: Duration::from_micros(deadline_us),
    })
}

#[test]
fn budget_duration_is_exceeded_only_strictly_after_the_limit() {
    let mut s = sender();
    let id = catching_up(&mut s, 10, 50, budget(100, 0, 0), 1_000);
    assert_eq!(
        s.check_budget(id, t(1_100)),
        Ok(None),
        "exactly at the limit"
    );
    assert_eq!(s.state(), ReplicaState::CatchingUp);
    assert_eq!(
        s.check_budget(id, t(1_101)),
        Ok(Some(BudgetViolation::DurationExceeded))
    );
    assert_eq!(s.state(), ReplicaState::NeedsRebuild);
    let session = s.session().unwrap();
    assert_eq!(session.phase(), SessionPhase::Invalidated);
    assert_eq!(
        session.invalidation().unwrap().to_string(),
        "budget_duration_exceeded"
    );
}

#[test]
fn budget_entries_count_only_what_this_session_replayed() {
    let mut s = sender();
    // The replica already holds 40 entries; it needs 10 more.
    let id = catching_up(&mut s, 40, 60, budget(0, 10, 0), 0);
    s.record_catch_up_progress(id, Lsn(45), t(1)).unwrap();
    s.record_catch_up_progress(id, Lsn(50), t(2)).unwrap();
    assert_eq!(
        s.active_session().unwrap().budget_usage().entries_replayed,
        10
    );
    assert_eq!(s.check_budget(id, t(3)), Ok(None), "exactly at the limit");
    s.record_catch_up_progress(id, Lsn(51), t(4)).unwrap();
    assert_eq!(
        s.check_budget(id, t(5)),
        Ok(Some(BudgetViolation::EntriesExceeded))
    );
    assert_eq!(
        s.session().unwrap().invalidation().unwrap().to_string(),
        "budget_entries_exceeded"
    );
}

#[test]
fn budget_stall_is_measured_from_the_last_progress() {
    let mut s = sender();
    let id = catching_up(&mut s, 10, 50, budget(0, 0, 20), 100);
    assert_eq!(s.check_budget(id, t(120)), Ok(None));
    s.record_catch_up_progress(id, Lsn(11), t(115)).unwrap();
    assert_eq!(s.check_budget(id, t(135)), Ok(None));
    assert_eq!(s.budget_deadline(), Some(t(136)));
    // Progress stamped earlier than the last does not move it back.
    s.record_catch_up_progress(id, Lsn(12), t(50)).unwrap();
    assert_eq!(
        s.active_session().unwrap().budget_usage().last_progress_at,
        t(115)
    );
    assert_eq!(
        s.check_budget(id, t(136)),
        Ok(Some(BudgetViolation::ProgressStalled))
    );
    assert_eq!(
        s.session().unwrap().invalidation().unwrap().to_string(),
        "budget_progress_stalled"
    );
}

#[test]
fn budget_violations_are_checked_in_order_duration_entries_stall() {
    let all = budget(10, 1, 10);
    let mut s = sender();
    let id = catching_up(&mut s, 10, 50, all, 0);
    s.record_catch_up_progress(id, Lsn(20), t(0)).unwrap();
    assert_eq!(
        s.check_budget(id, t(11)),
        Ok(Some(BudgetViolation::DurationExceeded))
    );
    let mut s = sender();
    let id = catching_up(&mut s, 10, 50, budget(100, 1, 10), 0);
    s.record_catch_up_progress(id, Lsn(20), t(0)).unwrap();
    assert_eq!(
        s.check_budget(id, t(11)),
        Ok(Some(BudgetViolation::EntriesExceeded))
    );
}

#[test]
fn zero_budget_limits_are_unlimited() {
    let mut s = sender();
    let id = catching_up(&mut s, 0, 1_000, Some(Budget::UNLIMITED), 0);
    s.record_catch_up_progress(id, Lsn(1_000), t(1)).unwrap();
    assert_eq!(s.check_budget(id, Time::MAX), Ok(None));
    assert_eq!(s.budget_deadline(), None);
    assert_eq!(s.complete_session(id), Ok(Lsn(1_000)));
}

#[test]
fn budget_is_not_checked_before_catch_up_or_without_one() {
    let mut s = sender();
    let h = history(0, 50, 50);
    let (id, _) = handshaken(&mut s, SessionKind::CatchUp, budget(1, 1, 1), 10, &h);
    let before = s.clone();
    assert_eq!(s.check_budget(id, Time::MAX), Ok(None));
    assert_eq!(s, before);
    assert_eq!(s.budget_deadline(), None);
    let mut s = sender();
    let id = catching_up(&mut s, 10, 50, None, 0);
    assert_eq!(s.check_budget(id, Time::MAX), Ok(None));
}

#[test]
fn budget_tick_arithmetic_never_underflows() {
    let mut s = sender();
    let id = catching_up(&mut s, 10, 50, budget(10, 0, 10), 1_000);
    s.record_catch_up_progress(id, Lsn(11), t(1_005)).unwrap();
    // `now` before the start and before the last progress: no time elapsed.
    for now in [0, 999, 1_004] {
        assert_eq!(s.check_budget(id, t(now)), Ok(None), "now = {now}");
    }
    assert!(s.has_active_session());
}

#[test]
fn budget_deadline_is_the_first_violating_instant() {
    let mut s = sender();
    let id = catching_up(&mut s, 10, 50, budget(100, 0, 30), 1_000);
    assert_eq!(s.budget_deadline(), Some(t(1_031)));
    s.record_catch_up_progress(id, Lsn(11), t(1_080)).unwrap();
    assert_eq!(
        s.budget_deadline(),
        Some(t(1_101)),
        "duration comes first now"
    );
    let mut early = s.clone();
    assert_eq!(early.check_budget(id, t(1_100)), Ok(None));
    assert_eq!(
        s.check_budget(id, t(1_101)),
        Ok(Some(BudgetViolation::DurationExceeded))
    );
    assert_eq!(s.budget_deadline(), None, "no active session any more");
}

// ----- rebuild -------------------------------------------------------------------

fn checkpointed(
    tail: u64,
    head: u64,
    committed: u64,
    checkpoint: u64,
    trusted: bool,
) -> RetainedHistory {
    RetainedHistory {
        head: Lsn(head),
        tail: Lsn(tail),
        committed: Lsn(committed),
        checkpoint: Lsn(checkpoint),
        checkpoint_trusted: trusted,
    }
}

#[test]
fn snapshot_tail_rebuild_runs_transfer_then_tail_replay_to_the_target() {
    let mut s = sender();
    let h = checkpointed(30, 100, 100, 50, true);
    let (id, _) = handshaken(&mut s, SessionKind::Rebuild, None, 5, &h);
    assert_eq!(
        s.select_rebuild_source(id, &h),
        Ok(RebuildSource::SnapshotTail { snapshot: Lsn(50) })
    );
    assert_eq!(s.state(), ReplicaState::CatchingUp);
    assert_eq!(s.active_session().unwrap().frozen_target(), Some(Lsn(100)));
    s.record_transfer_progress(id, Lsn(20)).unwrap();
    rejected(
        &mut s,
        ReplicationError::TransferIncomplete {
            transferred_to: Lsn(20),
            snapshot: Lsn(50),
        },
        |s| s.begin_tail_replay(id),
    );
    rejected(
        &mut s,
        ReplicationError::BeyondFrozenTarget {
            target: Lsn(50),
            requested: Lsn(51),
        },
        |s| s.record_transfer_progress(id, Lsn(51)),
    );
    s.record_transfer_progress(id, Lsn(50)).unwrap();
    rejected(
        &mut s,
        ReplicationError::WrongRebuildPhase {
            call: "complete_rebuild",
            phase: Some(RebuildPhase::Transfer),
        },
        |s| s.complete_rebuild(id),
    );
    s.begin_tail_replay(id).unwrap();
    let r = *s.active_session().unwrap().rebuild().unwrap();
    assert_eq!(
        (r.phase(), r.tail_replayed_to()),
        (RebuildPhase::TailReplay, Lsn(50))
    );
    rejected(
        &mut s,
        ReplicationError::WrongRebuildPhase {
            call: "record_transfer_progress",
            phase: Some(RebuildPhase::TailReplay),
        },
        |s| s.record_transfer_progress(id, Lsn(51)),
    );
    s.record_tail_progress(id, Lsn(75)).unwrap();
    rejected(
        &mut s,
        ReplicationError::NotConverged {
            recovered_to: Lsn(75),
            target: Lsn(100),
        },
        |s| s.complete_rebuild(id),
    );
    rejected(
        &mut s,
        ReplicationError::BeyondFrozenTarget {
            target: Lsn(100),
            requested: Lsn(101),
        },
        |s| s.record_tail_progress(id, Lsn(101)),
    );
    s.record_tail_progress(id, Lsn(100)).unwrap();
    assert_eq!(s.complete_rebuild(id), Ok(Lsn(100)));
    assert_eq!(s.state(), ReplicaState::InSync);
    let session = s.session().unwrap();
    assert_eq!(session.phase(), SessionPhase::Completed);
    assert_eq!(session.recovered_to(), Lsn(100));
    assert_eq!(session.rebuild().unwrap().phase(), RebuildPhase::Completed);
}

#[test]
fn full_base_rebuild_completes_once_the_transfer_reaches_the_target() {
    let mut s = sender();
    let h = checkpointed(30, 100, 100, 50, false);
    let (id, _) = handshaken(&mut s, SessionKind::Rebuild, None, 5, &h);
    assert_eq!(s.select_rebuild_source(id, &h), Ok(RebuildSource::FullBase));
    rejected(&mut s, ReplicationError::NotSnapshotTail, |s| {
        s.begin_tail_replay(id)
    });
    rejected(
        &mut s,
        ReplicationError::WrongRebuildPhase {
            call: "record_tail_progress",
            phase: Some(RebuildPhase::Transfer),
        },
        |s| s.record_tail_progress(id, Lsn(60)),
    );
    s.record_transfer_progress(id, Lsn(60)).unwrap();
    rejected(
        &mut s,
        ReplicationError::NotConverged {
            recovered_to: Lsn(60),
            target: Lsn(100),
        },
        |s| s.complete_rebuild(id),
    );
    rejected(
        &mut s,
        ReplicationError::BeyondFrozenTarget {
            target: Lsn(100),
            requested: Lsn(101),
        },
        |s| s.record_transfer_progress(id, Lsn(101)),
    );
    s.record_transfer_progress(id, Lsn(100)).unwrap();
    assert_eq!(s.complete_rebuild(id), Ok(Lsn(100)));
    assert_eq!(s.state(), ReplicaState::InSync);
}

#[test]
fn rebuild_transfer_progress_must_strictly_increase() {
    let mut s = sender();
    let h = checkpointed(0, 100, 100, 0, false);
    let (id, _) = handshaken(&mut s, SessionKind::Rebuild, None, 0, &h);
    s.select_rebuild_source(id, &h).unwrap();
    s.record_transfer_progress(id, Lsn(40)).unwrap();
    for to in [0, 39, 40] {
        rejected(
            &mut s,
            ReplicationError::ProgressRegression {
                current: Lsn(40),
                requested: Lsn(to),
            },
            |s| s.record_transfer_progress(id, Lsn(to)),
        );
    }
}

#[test]
fn rebuild_tail_progress_must_strictly_increase() {
    let mut s = sender();
    let h = checkpointed(0, 100, 100, 50, true);
    let (id, _) = handshaken(&mut s, SessionKind::Rebuild, None, 0, &h);
    s.select_rebuild_source(id, &h).unwrap();
    s.record_transfer_progress(id, Lsn(50)).unwrap();
    s.begin_tail_replay(id).unwrap();
    rejected(
        &mut s,
        ReplicationError::ProgressRegression {
            current: Lsn(50),
            requested: Lsn(50),
        },
        |s| s.record_tail_progress(id, Lsn(50)),
    );
}

#[test]
fn rebuild_source_is_selected_once_in_the_handshake_phase() {
    let mut s = sender();
    let h = checkpointed(0, 100, 100, 50, true);
    let id = s
        .attach_session(Epoch(1), SessionKind::Rebuild, None)
        .unwrap();
    rejected(
        &mut s,
        ReplicationError::WrongPhase {
            call: "select_rebuild_source",
            phase: SessionPhase::Init,
        },
        |s| s.select_rebuild_source(id, &h),
    );
    s.begin_connect(id).unwrap();
    rejected(
        &mut s,
        ReplicationError::WrongPhase {
            call: "select_rebuild_source",
            phase: SessionPhase::Connecting,
        },
        |s| s.select_rebuild_source(id, &h),
    );
    for call in [
        "record_transfer_progress",
        "begin_tail_replay",
        "complete_rebuild",
    ] {
        let expected = ReplicationError::WrongRebuildPhase { call, phase: None };
        rejected(&mut s, expected, |s| match call {
            "record_transfer_progress" => s.record_transfer_progress(id, Lsn(1)),
            "begin_tail_replay" => s.begin_tail_replay(id),
            _ => s.complete_rebuild(id).map(drop),
        });
    }
    s.record_handshake(id, hs(0, &h), &h).unwrap();
    s.select_rebuild_source(id, &h).unwrap();
    rejected(
        &mut s,
        ReplicationError::WrongRebuildPhase {
            call: "select_rebuild_source",
            phase: Some(RebuildPhase::Transfer),
        },
        |s| s.select_rebuild_source(id, &h),
    );
}

#[test]
fn rebuild_handshake_beyond_retention_keeps_the_session() {
    let mut s = sender();
    let h = checkpointed(60, 100, 100, 70, true);
    let (id, record) = handshaken(&mut s, SessionKind::Rebuild, None, 0, &h);
    assert_eq!(record.outcome, RecoveryOutcome::NeedsRebuild);
    let session = s.active_session().unwrap();
    assert_eq!(
        (session.id(), session.phase()),
        (id, SessionPhase::Handshake)
    );
    assert_eq!((session.start(), session.target()), (Lsn(0), Lsn(100)));
}

#[test]
fn snapshot_at_the_committed_lsn_has_an_empty_tail() {
    let mut s = sender();
    let h = checkpointed(0, 100, 100, 100, true);
    let (id, _) = handshaken(&mut s, SessionKind::Rebuild, None, 0, &h);
    s.select_rebuild_source(id, &h).unwrap();
    s.record_transfer_progress(id, Lsn(100)).unwrap();
    s.begin_tail_replay(id).unwrap();
    assert_eq!(s.complete_rebuild(id), Ok(Lsn(100)));
}

// ----- retained history ------------------------------------------------------------

#[test]
fn range_is_recoverable_iff_from_at_or_after_tail_and_to_at_or_before_head() {
    let h = history(30, 100, 100);
    assert!(h.is_recoverable(Lsn(30), Lsn(100)));
    assert!(h.is_recoverable(Lsn(99), Lsn(99)));
    assert!(!h.is_recoverable(Lsn(29), Lsn(100)));
    assert!(!h.is_recoverable(Lsn(30), Lsn(101)));
}

#[test]
fn retention_start_is_one_past_the_tail_or_zero() {
    assert_eq!(history(0, 10, 10).retention_start(), Lsn(0));
    assert_eq!(history(30, 100, 100).retention_start(), Lsn(31));
    assert_eq!(history(u64::MAX, 0, 0).retention_start(), Lsn(u64::MAX));
}

#[test]
fn classify_handshake_follows_the_reference_formula() {
    let c = |f, committed, r| classify_handshake(Lsn(f), Lsn(committed), Lsn(r));
    assert_eq!(c(10, 10, 50), RecoveryOutcome::ZeroGap);
    assert_eq!(
        c(5, 10, 0),
        RecoveryOutcome::CatchUp,
        "R == 0: all retained"
    );
    assert_eq!(c(30, 100, 31), RecoveryOutcome::CatchUp, "F + 1 == R");
    assert_eq!(c(29, 100, 31), RecoveryOutcome::NeedsRebuild);
    assert_eq!(
        c(u64::MAX, 1, u64::MAX),
        RecoveryOutcome::CatchUp,
        "no overflow"
    );
}

#[test]
fn proof_reasons_render_as_documented() {
    let h = history(30, 90, 100);
    assert_eq!(h.prove(Lsn(100)).to_string(), "zero_gap at 100");
    assert_eq!(
        h.prove(Lsn(120)).to_string(),
        "replica_ahead_needs_truncation: 120 > committed 100"
    );
    assert_eq!(
        h.prove(Lsn(40)).to_string(),
        "gap_beyond_retention: need (40, 100], retained (30, 90]"
    );
    let ok = history(30, 100, 100);
    assert_eq!(
        ok.prove(Lsn(40)).to_string(),
        "gap_within_retention: need (40, 100], retained (30, 100]"
    );
    assert_eq!(
        ProofReason::GapWithinRetention.name(),
        "gap_within_retention"
    );
}

#[test]
fn rebuild_source_is_snapshot_tail_only_from_a_usable_checkpoint() {
    let snap = |c| RebuildSource::SnapshotTail { snapshot: Lsn(c) };
    let cases = [
        (checkpointed(30, 100, 100, 50, true), snap(50)),
        (checkpointed(30, 100, 100, 30, true), snap(30)),
        (
            checkpointed(30, 100, 100, 50, false),
            RebuildSource::FullBase,
        ),
        (checkpointed(30, 100, 100, 0, true), RebuildSource::FullBase),
        (
            checkpointed(30, 100, 100, 29, true),
            RebuildSource::FullBase,
        ),
        (checkpointed(30, 90, 100, 50, true), RebuildSource::FullBase),
        (checkpointed(30, 100, 40, 50, true), RebuildSource::FullBase),
        (checkpointed(0, 0, 0, 0, true), RebuildSource::FullBase),
    ];
    for (h, expected) in cases {
        assert_eq!(h.rebuild_source(), expected, "{h:?}");
    }
}

// ----- registry ------------------------------------------------------------------

fn assign(ids: &[(u32, u64)]) -> Vec<ReplicaAssignment> {
    ids.iter()
        .map(|&(id, version)| ReplicaAssignment {
            replica: ReplicaId(id),
            endpoint: Endpoint::new(format!("r{id}:{version}"), format!("r{id}:c"), version),
        })
        .collect()
}

#[test]
fn reconcile_adds_new_replicas_in_id_order() {
    let mut reg = Registry::new();
    let report = reg
        .reconcile(&assign(&[(3, 1), (1, 1), (2, 1)]), Epoch(4))
        .unwrap();
    assert_eq!(report.added, [ReplicaId(1), ReplicaId(2), ReplicaId(3)]);
    assert!(report.removed.is_empty() && report.invalidated.is_empty());
    assert_eq!(reg.len(), 3);
    assert_eq!(
        reg.replicas().collect::<Vec<_>>(),
        [ReplicaId(1), ReplicaId(2), ReplicaId(3)]
    );
    for s in reg.senders() {
        assert_eq!(s.epoch(), Epoch(4));
        assert_eq!(s.state(), ReplicaState::Disconnected);
    }
    assert_eq!(reg.sender(ReplicaId(2)).unwrap().endpoint().version, 1);
}

#[test]
fn reconcile_stops_and_removes_replicas_not_in_the_set() {
    let mut reg = Registry::new();
    reg.reconcile(&assign(&[(1, 1), (2, 1), (3, 1)]), Epoch(1))
        .unwrap();
    let r3 = reg.sender_mut(ReplicaId(3)).unwrap();
    let sid = r3
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    let report = reg.reconcile(&assign(&[(2, 1)]), Epoch(1)).unwrap();
    assert_eq!(report.removed, [ReplicaId(1), ReplicaId(3)]);
    assert_eq!(
        report.invalidated,
        [(
            ReplicaId(3),
            Invalidation {
                session: sid,
                reason: InvalidationReason::SenderStopped
            }
        )]
    );
    assert!(report.added.is_empty());
    assert!(reg.sender(ReplicaId(1)).is_none() && reg.sender(ReplicaId(3)).is_none());
    assert_eq!(reg.len(), 1);
}

#[test]
fn reconcile_applies_the_endpoint_change_before_the_epoch_change() {
    let mut reg = Registry::new();
    reg.reconcile(&assign(&[(1, 1), (2, 1)]), Epoch(1)).unwrap();
    let mut sessions = Vec::new();
    for id in [1, 2] {
        let s = reg.sender_mut(ReplicaId(id)).unwrap();
        sessions.push(
            s.attach_session(Epoch(1), SessionKind::CatchUp, None)
                .unwrap(),
        );
    }
    // r1 moves and the epoch advances; r2 only sees the epoch advance.
    let report = reg.reconcile(&assign(&[(1, 2), (2, 1)]), Epoch(2)).unwrap();
    let reasons: Vec<(ReplicaId, SessionId, String)> = report
        .invalidated
        .iter()
        .map(|(r, inv)| (*r, inv.session, inv.reason.to_string()))
        .collect();
    assert_eq!(
        reasons,
        [
            (ReplicaId(1), sessions[0], "endpoint_changed".to_string()),
            (
                ReplicaId(2),
                sessions[1],
                "epoch_advanced_1_to_2".to_string()
            ),
        ]
    );
    for s in reg.senders() {
        assert_eq!(s.epoch(), Epoch(2));
        assert!(!s.has_active_session());
    }
    assert_eq!(reg.sender(ReplicaId(1)).unwrap().endpoint().version, 2);
}

#[test]
fn rejected_reconcile_changes_nothing() {
    let mut reg = Registry::new();
    reg.reconcile(&assign(&[(1, 1), (2, 1)]), Epoch(3)).unwrap();
    let before = reg.clone();
    assert_eq!(
        reg.reconcile(&assign(&[(1, 1), (1, 2)]), Epoch(3)),
        Err(ReplicationError::DuplicateReplica(ReplicaId(1)))
    );
    assert_eq!(reg, before);
    assert_eq!(
        reg.reconcile(&assign(&[(2, 1), (5, 1)]), Epoch(2)),
        Err(ReplicationError::EpochRegression {
            current: Epoch(3),
            requested: Epoch(2)
        })
    );
    assert_eq!(reg, before);
    assert_eq!(
        reg.advance_epoch(Epoch(1)),
        Err(ReplicationError::EpochRegression {
            current: Epoch(3),
            requested: Epoch(1)
        })
    );
    assert_eq!(reg, before);
}

#[test]
fn a_removed_replica_added_back_never_accepts_an_old_session_id() {
    let mut reg = Registry::new();
    reg.reconcile(&assign(&[(1, 1), (2, 1)]), Epoch(1)).unwrap();
    let mut old = Vec::new();
    for _ in 0..3 {
        let s = reg.sender_mut(ReplicaId(1)).unwrap();
        old.push(s.supersede_session(SessionKind::CatchUp, None).unwrap().0);
    }
    reg.reconcile(&assign(&[(2, 1)]), Epoch(1)).unwrap();
    let report = reg.reconcile(&assign(&[(1, 1), (2, 1)]), Epoch(1)).unwrap();
    assert_eq!(report.added, [ReplicaId(1)]);
    let s = reg.sender_mut(ReplicaId(1)).unwrap();
    let fresh = s
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    assert!(
        old.iter().all(|o| *o < fresh),
        "{fresh} reuses one of {old:?}"
    );
    for o in old {
        assert!(matches!(
            s.begin_connect(o),
            Err(ReplicationError::SessionMismatch { .. })
        ));
    }
}

#[test]
fn reconcile_replaces_a_stopped_sender() {
    let mut reg = Registry::new();
    reg.reconcile(&assign(&[(1, 1)]), Epoch(2)).unwrap();
    reg.sender_mut(ReplicaId(1)).unwrap().stop();
    // A stopped sender's epoch does not block a lower one.
    let report = reg.reconcile(&assign(&[(1, 1)]), Epoch(2)).unwrap();
    assert_eq!(report.added, [ReplicaId(1)]);
    assert!(!reg.sender(ReplicaId(1)).unwrap().is_stopped());
}

#[test]
fn registry_epoch_bump_invalidates_every_older_session() {
    let mut reg = Registry::new();
    reg.reconcile(&assign(&[(1, 1), (2, 1), (3, 1)]), Epoch(1))
        .unwrap();
    let a = reg
        .sender_mut(ReplicaId(1))
        .unwrap()
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    let c = reg
        .sender_mut(ReplicaId(3))
        .unwrap()
        .attach_session(Epoch(1), SessionKind::Rebuild, None)
        .unwrap();
    reg.sender_mut(ReplicaId(2)).unwrap().stop();
    let invalidated = reg.advance_epoch(Epoch(2)).unwrap();
    assert_eq!(
        invalidated
            .iter()
            .map(|(r, inv)| (*r, inv.session))
            .collect::<Vec<_>>(),
        [(ReplicaId(1), a), (ReplicaId(3), c)]
    );
    assert_eq!(reg.sender(ReplicaId(1)).unwrap().epoch(), Epoch(2));
    assert_eq!(
        reg.sender(ReplicaId(2)).unwrap().epoch(),
        Epoch(1),
        "stopped"
    );
    assert_eq!(
        reg.advance_epoch(Epoch(2)),
        Ok(Vec::new()),
        "same epoch again"
    );
}

#[test]
fn registry_hands_its_flaw_to_every_sender() {
    let mut reg = Registry::with_flaw(Some(ReplicationFlaw::IgnoreSessionId));
    assert!(reg.is_empty());
    reg.reconcile(&assign(&[(1, 1)]), Epoch(1)).unwrap();
    assert_eq!(reg.flaw(), Some(ReplicationFlaw::IgnoreSessionId));
    assert_eq!(
        reg.sender(ReplicaId(1)).unwrap().flaw(),
        Some(ReplicationFlaw::IgnoreSessionId)
    );
}

// ----- flaws ---------------------------------------------------------------------

#[test]
fn flaws_are_off_by_default_and_named() {
    assert_eq!(sender().flaw(), None);
    assert_eq!(Registry::new().flaw(), None);
    let names: Vec<&str> = ReplicationFlaw::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        [
            "ignore-session-id",
            "complete-without-truncation",
            "epoch-bump-keeps-session",
            "trust-caller-retention",
            "budget-underflow"
        ]
    );
}

#[test]
fn flaw_ignore_session_id_accepts_a_stale_id() {
    let mut s = flawed(ReplicationFlaw::IgnoreSessionId);
    let stale = s
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    let (current, _) = s.supersede_session(SessionKind::CatchUp, None).unwrap();
    assert!(stale < current);
    s.begin_connect(stale).unwrap();
    assert_eq!(
        s.active_session().unwrap().phase(),
        SessionPhase::Connecting
    );
    // The correct sender refuses the same call.
    let mut ok = sender();
    let stale = ok
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    let (current, _) = ok.supersede_session(SessionKind::CatchUp, None).unwrap();
    rejected(
        &mut ok,
        ReplicationError::SessionMismatch {
            current,
            requested: stale,
        },
        |s| s.begin_connect(stale),
    );
}

#[test]
fn flaw_complete_without_truncation_reports_a_divergent_replica_in_sync() {
    let mut s = flawed(ReplicationFlaw::CompleteWithoutTruncation);
    let h = history(0, 100, 80);
    let (id, _) = handshaken(&mut s, SessionKind::CatchUp, None, 95, &h);
    assert_eq!(s.complete_session(id), Ok(Lsn(80)));
    assert_eq!(s.state(), ReplicaState::InSync);
    let t = s.session().unwrap().truncation().unwrap();
    assert!(!t.recorded, "completed with the truncation outstanding");
}

#[test]
fn flaw_epoch_bump_keeps_session_lets_the_old_epoch_complete() {
    let mut s = flawed(ReplicationFlaw::EpochBumpKeepsSession);
    let id = catching_up(&mut s, 10, 20, None, 0);
    assert_eq!(s.advance_epoch(Epoch(2)), Ok(None));
    assert_eq!(s.epoch(), Epoch(2));
    let session = s.active_session().unwrap();
    assert_eq!((session.id(), session.epoch()), (id, Epoch(1)));
    s.record_catch_up_progress(id, Lsn(20), t(1)).unwrap();
    assert_eq!(s.complete_session(id), Ok(Lsn(20)));
    assert_eq!(s.state(), ReplicaState::InSync);
}

#[test]
fn flaw_trust_caller_retention_catches_up_beyond_the_retained_tail() {
    let h = history(60, 100, 100);
    let stale = Handshake {
        replica_flushed: Lsn(20),
        advertised_retention_start: Lsn(0),
    };
    let mut s = flawed(ReplicationFlaw::TrustCallerRetention);
    let id = s
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    s.begin_connect(id).unwrap();
    let record = s.record_handshake(id, stale, &h).unwrap();
    assert_eq!(record.outcome, RecoveryOutcome::CatchUp);
    assert_eq!(
        record.proof.outcome(),
        RecoveryOutcome::NeedsRebuild,
        "disagree"
    );
    // Entries 21..=60 are gone, yet the session catches up and completes.
    s.begin_catch_up(id, t(0)).unwrap();
    s.record_catch_up_progress(id, Lsn(100), t(1)).unwrap();
    assert_eq!(s.complete_session(id), Ok(Lsn(100)));
    // Beyond the head, too.
    let mut s = flawed(ReplicationFlaw::TrustCallerRetention);
    let short = history(0, 90, 100);
    let (_, record) = handshaken(&mut s, SessionKind::CatchUp, None, 50, &short);
    assert_eq!(record.outcome, RecoveryOutcome::CatchUp);
    assert!(s.has_active_session());
}

#[test]
fn flaw_budget_underflow_lets_a_real_violation_pass() {
    for (limits, now) in [(budget(100, 0, 0), 1_101), (budget(0, 0, 30), 1_031)] {
        let mut ok = sender();
        let id = catching_up(&mut ok, 10, 50, limits, 1_000);
        assert!(ok.check_budget(id, t(now)).unwrap().is_some());
        let mut s = flawed(ReplicationFlaw::BudgetUnderflow);
        let id = catching_up(&mut s, 10, 50, limits, 1_000);
        assert_eq!(s.budget_deadline(), ok_deadline(limits));
        for later in [now, now + 1_000_000, u64::MAX] {
            assert_eq!(s.check_budget(id, t(later)), Ok(None), "at {later}");
        }
        assert!(s.has_active_session());
    }
    // The entries limit involves no tick arithmetic and still holds.
    let mut s = flawed(ReplicationFlaw::BudgetUnderflow);
    let id = catching_up(&mut s, 10, 50, budget(0, 1, 0), 0);
    s.record_catch_up_progress(id, Lsn(12), t(1)).unwrap();
    assert_eq!(
        s.check_budget(id, t(1)),
        Ok(Some(BudgetViolation::EntriesExceeded))
    );
}

fn ok_deadline(limits: Option<Budget>) -> Option<Time> {
    limits.unwrap().deadline(&BudgetUsage {
        started_at: t(1_000),
        last_progress_at: t(1_000),
        entries_replayed: 0,
    })
}

// ----- coverage ------------------------------------------------------------------

fn covered(cov: crate::coverage::Coverage, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| cov.has(*i))
        .map(|(_, n)| (*n).to_owned())
        .collect()
}

#[test]
fn transitions_are_named_once_each() {
    assert_eq!(TRANSITIONS.len(), Tr::Stopped as usize + 1);
    assert!(TRANSITIONS.len() <= 128);
    let unique: std::collections::BTreeSet<_> = TRANSITIONS.iter().collect();
    assert_eq!(unique.len(), TRANSITIONS.len());
    let unique: std::collections::BTreeSet<_> = REGISTRY_TRANSITIONS.iter().collect();
    assert_eq!(unique.len(), REGISTRY_TRANSITIONS.len());
}

#[test]
fn a_catch_up_with_truncation_records_its_transitions() {
    let mut s = sender();
    let h = history(0, 10, 10);
    let (id, _) = handshaken(&mut s, SessionKind::CatchUp, None, 12, &h);
    assert!(s.complete_session(id).is_err());
    s.record_truncation(id, Lsn(10)).unwrap();
    s.complete_session(id).unwrap();
    let _ = s.begin_connect(id);
    let got = covered(s.coverage(), TRANSITIONS);
    for t in [
        "attach: catch_up session",
        "session: Init -> Connecting",
        "session: Connecting -> Handshake (replica ahead, truncation required)",
        "catch-up: completion refused, truncation not recorded",
        "catch-up: truncation recorded",
        "session: Handshake -> Completed",
        "authority: rejected, session not active",
        "replica: -> Connecting",
        "replica: -> InSync",
    ] {
        assert!(got.iter().any(|g| g == t), "{t} not in {got:?}");
    }
    assert!(!got.iter().any(|g| g == "session: CatchUp -> Completed"));
}

#[test]
fn a_snapshot_tail_rebuild_records_its_transitions() {
    let mut s = sender();
    let h = checkpointed(2, 10, 10, 6, true);
    let (id, _) = handshaken(&mut s, SessionKind::Rebuild, None, 0, &h);
    s.select_rebuild_source(id, &h).unwrap();
    s.record_transfer_progress(id, Lsn(6)).unwrap();
    s.begin_tail_replay(id).unwrap();
    s.record_tail_progress(id, Lsn(10)).unwrap();
    s.complete_rebuild(id).unwrap();
    let got = covered(s.coverage(), TRANSITIONS);
    for t in [
        "attach: rebuild session",
        "session: Connecting -> Handshake (rebuild)",
        "rebuild: source snapshot+tail",
        "rebuild: Transfer progress",
        "rebuild: Transfer -> TailReplay",
        "rebuild: TailReplay progress",
        "rebuild: TailReplay -> Completed",
        "session: Handshake -> Completed (rebuild)",
        "replica: -> CatchingUp",
    ] {
        assert!(got.iter().any(|g| g == t), "{t} not in {got:?}");
    }
}

#[test]
fn invalidations_are_recorded_by_reason() {
    let mut s = sender();
    let a = s
        .attach_session(Epoch(1), SessionKind::Bootstrap, None)
        .unwrap();
    s.advance_epoch(Epoch(2)).unwrap();
    let b = s
        .attach_session(Epoch(2), SessionKind::Reassign, None)
        .unwrap();
    assert!(s.record_truncation(a, Lsn(1)).is_err());
    s.update_endpoint(ep(2)).unwrap();
    s.supersede_session(SessionKind::CatchUp, None).unwrap();
    s.supersede_session(SessionKind::CatchUp, None).unwrap();
    let _ = b;
    s.stop();
    let got = covered(s.coverage(), TRANSITIONS);
    for t in [
        "session: -> Invalidated (epoch advanced)",
        "session: -> Invalidated (endpoint changed)",
        "session: -> Invalidated (superseded)",
        "session: -> Invalidated (sender stopped)",
        "authority: rejected, session mismatch",
        "epoch: advanced",
        "endpoint: changed",
        "sender: stopped",
        "replica: -> Disconnected",
    ] {
        assert!(got.iter().any(|g| g == t), "{t} not in {got:?}");
    }
}

#[test]
fn coverage_is_not_state() {
    let mut a = sender();
    let b = a.clone();
    let _ = a.begin_connect(SessionId(9));
    assert_eq!(a, b, "a rejected call is recorded but changes nothing");
}

#[test]
fn registry_keeps_the_coverage_of_removed_senders_and_records_its_own() {
    let mut reg = Registry::new();
    reg.reconcile(&assign(&[(1, 1), (2, 1)]), Epoch(1)).unwrap();
    reg.sender_mut(ReplicaId(2))
        .unwrap()
        .attach_session(Epoch(1), SessionKind::Rebuild, None)
        .unwrap();
    reg.reconcile(&assign(&[(1, 2)]), Epoch(2)).unwrap();
    reg.advance_epoch(Epoch(3)).unwrap();
    let senders = covered(reg.sender_coverage(), TRANSITIONS);
    assert!(senders.iter().any(|t| t == "attach: rebuild session"));
    let own = covered(reg.coverage(), REGISTRY_TRANSITIONS);
    for t in [
        "reconcile: sender added",
        "reconcile: sender removed",
        "reconcile: endpoint change applied",
        "reconcile: epoch change applied",
        "advance_epoch: live senders advanced",
    ] {
        assert!(own.iter().any(|g| g == t), "{t} not in {own:?}");
    }
}

#[test]
fn a_recreated_registry_never_reissues_an_old_session_id() {
    let mut reg = Registry::new();
    reg.reconcile(&assign(&[(1, 1)]), Epoch(1)).unwrap();
    let s = reg.sender_mut(ReplicaId(1)).unwrap();
    let old = s
        .attach_session(Epoch(1), SessionKind::CatchUp, None)
        .unwrap();
    let floor = reg.session_floor();
    assert!(floor > old);
    let mut again = Registry::new().with_session_floor(floor);
    again.reconcile(&assign(&[(1, 1)]), Epoch(2)).unwrap();
    let s = again.sender_mut(ReplicaId(1)).unwrap();
    let fresh = s
        .attach_session(Epoch(2), SessionKind::Reassign, None)
        .unwrap();
    assert!(fresh > old, "{fresh} <= {old}");
    assert!(matches!(
        s.begin_connect(old),
        Err(ReplicationError::SessionMismatch { .. })
    ));
    assert_eq!(
        Registry::new()
            .with_session_floor(SessionId(5))
            .with_session_floor(SessionId(2))
            .session_floor(),
        SessionId(5),
        "never lowered"
    );
}

// ----- properties ------------------------------------------------------------------

mod model {
    //! Random call sequences against one correct sender, with the history
    //! moving underneath, checking the invariants after every call.
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use proptest::test_runner::{RngAlgorithm, TestError, TestRng, TestRunner};

    use super::*;

    #[derive(Clone, Copy, Debug)]
    enum Who {
        /// The current session's id (or 1 if none).
        Current,
        /// A session issued earlier, picked by index.
        Issued(usize),
        /// An id never issued.
        Unknown,
    }

    #[derive(Clone, Debug)]
    enum Call {
        Connect,
        Handshake {
            flushed: u64,
            advertised: u64,
        },
        BeginCatchUp,
        Progress(Arg),
        Truncate(Arg),
        Complete,
        CheckBudget,
        Invalidate(u8),
        Select,
        Transfer(Arg),
        BeginTail,
        Tail(Arg),
        CompleteRebuild,
        /// The natural next step for the current session's kind and phase.
        Next(u64),
    }

    #[derive(Clone, Debug)]
    enum Op {
        Attach {
            kind: u8,
            budget: bool,
            epoch_off: bool,
        },
        Supersede {
            kind: u8,
        },
        Epoch(u8),
        Endpoint(u8),
        Stop,
        History {
            tail: u64,
            head: u64,
            committed: u64,
            checkpoint: u64,
            trusted: bool,
        },
        Exec {
            who: Who,
            call: Call,
            now: u64,
        },
    }

    const KINDS: [SessionKind; 4] = [
        SessionKind::Bootstrap,
        SessionKind::CatchUp,
        SessionKind::Rebuild,
        SessionKind::Reassign,
    ];

    /// An LSN argument: absolute, a step past the current progress, or the
    /// limit progress may reach (so random runs get deep into sessions).
    #[derive(Clone, Copy, Debug)]
    enum Arg {
        Abs(u64),
        Plus(u64),
        Limit,
    }

    impl Arg {
        fn resolve(self, current: Lsn, limit: Lsn) -> Lsn {
            match self {
                Arg::Abs(n) => Lsn(n),
                Arg::Plus(k) => Lsn(current.0 + k),
                Arg::Limit => limit,
            }
        }
    }

    fn arg() -> impl Strategy<Value = Arg> {
        prop_oneof![
            1 => lsn().prop_map(Arg::Abs),
            2 => (0..8u64).prop_map(Arg::Plus),
            2 => Just(Arg::Limit),
        ]
    }

    fn lsn() -> impl Strategy<Value = u64> {
        0..40u64
    }

    fn who() -> impl Strategy<Value = Who> {
        prop_oneof![
            8 => Just(Who::Current),
            2 => any::<usize>().prop_map(Who::Issued),
            1 => Just(Who::Unknown),
        ]
    }

    fn call() -> impl Strategy<Value = Call> {
        prop_oneof![
            3 => Just(Call::Connect),
            3 => (lsn(), lsn()).prop_map(|(flushed, advertised)| Call::Handshake { flushed, advertised }),
            2 => Just(Call::BeginCatchUp),
            4 => arg().prop_map(Call::Progress),
            1 => arg().prop_map(Call::Truncate),
            2 => Just(Call::Complete),
            2 => Just(Call::CheckBudget),
            1 => (0..6u8).prop_map(Call::Invalidate),
            2 => Just(Call::Select),
            3 => arg().prop_map(Call::Transfer),
            2 => Just(Call::BeginTail),
            3 => arg().prop_map(Call::Tail),
            2 => Just(Call::CompleteRebuild),
            30 => any::<u64>().prop_map(Call::Next),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        // Stop is rare: a stopped sender rejects everything after it.
        prop_oneof![
            20 => (0..4u8, any::<bool>(), prop::bool::weighted(0.1))
                .prop_map(|(kind, budget, epoch_off)| Op::Attach { kind, budget, epoch_off }),
            5 => (0..4u8).prop_map(|kind| Op::Supersede { kind }),
            4 => (0..3u8).prop_map(Op::Epoch),
            4 => (0..3u8).prop_map(Op::Endpoint),
            1 => Just(Op::Stop),
            // Mostly coherent (tail <= checkpoint <= committed <= head).
            10 => (lsn(), lsn(), lsn(), lsn(), any::<bool>(), prop::bool::weighted(0.75)).prop_map(
                |(tail, head, committed, checkpoint, trusted, coherent)| {
                    let mut v = [tail, checkpoint, committed, head];
                    if coherent {
                        v.sort_unstable();
                    }
                    Op::History { tail: v[0], checkpoint: v[1], committed: v[2], head: v[3], trusted }
                }
            ),
            200 => (who(), call(), 0..200u64).prop_map(|(who, call, now)| Op::Exec { who, call, now }),
        ]
    }

    /// The call that moves the current session on (it may still be
    /// rejected, e.g. when the id is stale).
    fn next_call(s: &Sender, k: u64, h: &RetainedHistory) -> Call {
        let Some(x) = s.session() else {
            return Call::Connect;
        };
        let step = |from: Lsn, limit: Lsn| Arg::Abs((from.0 + 1 + k % 6).min(limit.0));
        match (x.kind().is_rebuild(), x.phase()) {
            (_, SessionPhase::Init) => Call::Connect,
            (_, SessionPhase::Connecting) => {
                let c = h.committed.0;
                let flushed = match k % 4 {
                    0 => c,
                    1 => c + 1 + k % 5,
                    _ => c.saturating_sub(1 + k % 10),
                };
                Call::Handshake {
                    flushed,
                    advertised: h.retention_start().0,
                }
            }
            (false, SessionPhase::Handshake | SessionPhase::CatchUp) => {
                if x.truncation().is_some_and(|t| !t.recorded) {
                    Call::Truncate(Arg::Limit)
                } else if x.is_converged() {
                    Call::Complete
                } else if x.phase() == SessionPhase::Handshake {
                    Call::BeginCatchUp
                } else {
                    let limit = x.frozen_target().unwrap_or(x.target());
                    Call::Progress(step(x.recovered_to(), limit))
                }
            }
            (true, SessionPhase::Handshake) => {
                let Some(r) = x.rebuild() else {
                    return Call::Select;
                };
                match (r.source(), r.phase()) {
                    (RebuildSource::SnapshotTail { snapshot }, RebuildPhase::Transfer) => {
                        if r.transferred_to() < snapshot {
                            Call::Transfer(step(r.transferred_to(), snapshot))
                        } else {
                            Call::BeginTail
                        }
                    }
                    (RebuildSource::FullBase, RebuildPhase::Transfer)
                        if r.transferred_to() < r.target() =>
                    {
                        Call::Transfer(step(r.transferred_to(), r.target()))
                    }
                    (_, RebuildPhase::TailReplay) if r.tail_replayed_to() < r.target() => {
                        Call::Tail(step(r.tail_replayed_to(), r.target()))
                    }
                    _ => Call::CompleteRebuild,
                }
            }
            _ => Call::Connect,
        }
    }

    /// Highest progress seen per session: recovered-to, transferred, tail.
    type Seen = BTreeMap<SessionId, (Lsn, Lsn, Lsn)>;

    fn exec(
        s: &mut Sender,
        id: SessionId,
        call: &Call,
        now: Time,
        h: &RetainedHistory,
    ) -> Result<(), ReplicationError> {
        match *call {
            Call::Connect => s.begin_connect(id),
            Call::Handshake {
                flushed,
                advertised,
            } => {
                let hs = Handshake {
                    replica_flushed: Lsn(flushed),
                    advertised_retention_start: Lsn(advertised),
                };
                let record = s.record_handshake(id, hs, h)?;
                assert_eq!(
                    record.outcome,
                    record.proof.outcome(),
                    "outcome and proof agree"
                );
                assert_eq!(record.proof, h.prove(Lsn(flushed)));
                Ok(())
            }
            Call::BeginCatchUp => s.begin_catch_up(id, now),
            Call::Progress(to) => {
                let (current, limit) = s.session().map_or((Lsn(0), Lsn(0)), |x| {
                    (x.recovered_to(), x.frozen_target().unwrap_or(x.target()))
                });
                s.record_catch_up_progress(id, to.resolve(current, limit), now)
            }
            Call::Truncate(to) => {
                let limit = s
                    .session()
                    .and_then(Session::truncation)
                    .map_or(Lsn(0), |t| t.to);
                s.record_truncation(id, to.resolve(limit, limit))
            }
            Call::Complete => s.complete_session(id).map(drop),
            Call::CheckBudget => s.check_budget(id, now).map(drop),
            Call::Invalidate(state) => {
                let states = [
                    ReplicaState::Disconnected,
                    ReplicaState::Connecting,
                    ReplicaState::CatchingUp,
                    ReplicaState::InSync,
                    ReplicaState::Degraded,
                    ReplicaState::NeedsRebuild,
                ];
                s.invalidate_session(id, "driver", states[state as usize])
                    .map(drop)
            }
            Call::Select => s.select_rebuild_source(id, h).map(drop),
            Call::Transfer(to) => {
                let r = s.session().and_then(Session::rebuild).copied();
                let (current, limit) = r.map_or((Lsn(0), Lsn(0)), |r| match r.source() {
                    RebuildSource::SnapshotTail { snapshot } => (r.transferred_to(), snapshot),
                    RebuildSource::FullBase => (r.transferred_to(), r.target()),
                });
                s.record_transfer_progress(id, to.resolve(current, limit))
            }
            Call::BeginTail => s.begin_tail_replay(id),
            Call::Tail(to) => {
                let r = s.session().and_then(Session::rebuild).copied();
                let (current, limit) =
                    r.map_or((Lsn(0), Lsn(0)), |r| (r.tail_replayed_to(), r.target()));
                s.record_tail_progress(id, to.resolve(current, limit))
            }
            Call::CompleteRebuild => s.complete_rebuild(id).map(drop),
            Call::Next(k) => {
                let next = next_call(s, k, h);
                exec(s, id, &next, now, h)
            }
        }
    }

    fn check_invariants(
        s: &Sender,
        issued: &[SessionId],
        seen: &mut Seen,
    ) -> Result<(), TestCaseError> {
        // Ids strictly increase: never reused.
        prop_assert!(issued.windows(2).all(|w| w[0] < w[1]), "{issued:?}");
        prop_assert!(issued.last().is_none_or(|last| *last < s.next_session_id()));
        let Some(session) = s.session() else {
            return Ok(());
        };
        // Single active session: only the newest can be active, at the
        // sender's epoch.
        prop_assert_eq!(Some(&session.id()), issued.last());
        if session.is_active() {
            prop_assert!(!s.is_stopped());
            prop_assert_eq!(session.epoch(), s.epoch());
        }
        // Progress never decreases within a session, never passes the
        // frozen target.
        let rebuild = session.rebuild();
        let now = (
            session.recovered_to(),
            rebuild.map_or(Lsn(0), |r| r.transferred_to()),
            rebuild.map_or(Lsn(0), |r| r.tail_replayed_to()),
        );
        let before = seen.insert(session.id(), now).unwrap_or_default();
        prop_assert!(
            now.0 >= before.0 && now.1 >= before.1 && now.2 >= before.2,
            "{before:?} -> {now:?}"
        );
        if let Some(frozen) = session.frozen_target() {
            prop_assert!(session.recovered_to() <= frozen);
        }
        if let Some(r) = rebuild {
            prop_assert_eq!(session.frozen_target(), Some(r.target()));
            prop_assert!(r.tail_replayed_to() <= r.target());
            match r.source() {
                RebuildSource::SnapshotTail { snapshot } => {
                    prop_assert!(r.transferred_to() <= snapshot)
                }
                RebuildSource::FullBase => prop_assert!(r.transferred_to() <= r.target()),
            }
        }
        // Truncate before complete; completion means in sync and converged.
        if session.phase() == SessionPhase::Completed {
            if let Some(t) = session.truncation() {
                prop_assert!(t.recorded);
            }
            prop_assert!(session.is_converged());
        }
        Ok(())
    }

    /// Drives `s` through `ops`, checking every invariant after every call.
    fn run_model(mut s: Sender, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut h = history(0, 20, 20);
        let mut issued: Vec<SessionId> = Vec::new();
        let mut seen = Seen::new();
        for op in ops {
            let before = s.clone();
            let result: Result<(), ReplicationError> = match op {
                Op::Attach {
                    kind,
                    budget: b,
                    epoch_off,
                } => {
                    let epoch = Epoch(s.epoch().0 + u64::from(epoch_off));
                    let budget = b.then_some(Budget {
                        max_duration: Duration::from_micros(120),
                        max_entries: 15,
                        progress_deadline: Duration::from_micros(40),
                    });
                    s.attach_session(epoch, KINDS[kind as usize], budget)
                        .map(drop)
                }
                Op::Supersede { kind } => s.supersede_session(KINDS[kind as usize], None).map(drop),
                Op::Epoch(step) => {
                    let epoch = Epoch((s.epoch().0 + u64::from(step)).saturating_sub(1));
                    let had = before.active_session().map(Session::id);
                    let r = s.advance_epoch(epoch);
                    if let Ok(inv) = &r {
                        prop_assert_eq!(
                            inv.as_ref().map(|i| i.session),
                            if epoch > before.epoch() { had } else { None }
                        );
                        prop_assert!(epoch <= before.epoch() || !s.has_active_session());
                    }
                    r.map(drop)
                }
                Op::Endpoint(v) => s.update_endpoint(ep(u64::from(v))).map(drop),
                Op::Stop => {
                    s.stop();
                    Ok(())
                }
                Op::History {
                    tail,
                    head,
                    committed,
                    checkpoint,
                    trusted,
                } => {
                    h = RetainedHistory {
                        head: Lsn(head),
                        tail: Lsn(tail),
                        committed: Lsn(committed),
                        checkpoint: Lsn(checkpoint),
                        checkpoint_trusted: trusted,
                    };
                    Ok(())
                }
                Op::Exec { who, call, now } => {
                    let current = before.session().map(Session::id);
                    let id = match who {
                        Who::Current => current.unwrap_or(SessionId(1)),
                        Who::Issued(i) if !issued.is_empty() => issued[i % issued.len()],
                        Who::Issued(_) | Who::Unknown => before.next_session_id(),
                    };
                    let live = before.active_session().is_some_and(|a| a.id() == id)
                        && !before.is_stopped();
                    let r = exec(&mut s, id, &call, t(now), &h);
                    // Stale ids (or a finished session's) are always rejected.
                    if !live {
                        prop_assert!(
                            matches!(
                                r,
                                Err(ReplicationError::Stopped
                                    | ReplicationError::NoSession
                                    | ReplicationError::SessionMismatch { .. }
                                    | ReplicationError::NotActive { .. })
                            ),
                            "{:?} on {:?} gave {:?}",
                            call,
                            id,
                            r
                        );
                    }
                    if r.is_ok() && matches!(call, Call::Complete | Call::CompleteRebuild) {
                        prop_assert_eq!(s.state(), ReplicaState::InSync);
                    }
                    // A budget check finds a violation iff it is due.
                    if r.is_ok() && matches!(call, Call::CheckBudget) {
                        let due = before.budget_deadline().is_some_and(|d| d <= t(now));
                        prop_assert_eq!(
                            due,
                            !s.has_active_session(),
                            "deadline {:?} at {}",
                            before.budget_deadline(),
                            now
                        );
                        if due {
                            prop_assert_eq!(s.state(), ReplicaState::NeedsRebuild);
                        }
                    }
                    r
                }
            };
            if result.is_err() {
                prop_assert_eq!(&s, &before, "a rejected call changed the sender");
            }
            if let Some(session) = s.session()
                && issued.last() != Some(&session.id())
            {
                issued.push(session.id());
            }
            check_invariants(&s, &issued, &mut seen)?;
        }
        Ok(())
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(op(), 1..120)
    }

    /// The model has teeth: each flaw makes it fail.
    #[test]
    fn model_catches_every_flaw() {
        for flaw in ReplicationFlaw::ALL {
            let mut runner = TestRunner::new_with_rng(
                ProptestConfig {
                    cases: 512,
                    failure_persistence: None,
                    ..ProptestConfig::default()
                },
                TestRng::deterministic_rng(RngAlgorithm::ChaCha),
            );
            let result = runner.run(&ops(), |ops| run_model(flawed(flaw), ops));
            assert!(
                matches!(result, Err(TestError::Fail(..))),
                "{flaw} was not caught"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn sender_invariants_hold_under_random_calls(ops in ops()) {
            run_model(sender(), ops)?;
        }

        #[test]
        fn handshake_outcome_always_matches_the_proof(
            tail in 0..30u64, head in 0..30u64, committed in 0..30u64, flushed in 0..30u64,
        ) {
            let h = history(tail, head, committed);
            let mut s = sender();
            let (_, record) = handshaken(&mut s, SessionKind::CatchUp, None, flushed, &h);
            prop_assert_eq!(record.outcome, record.proof.outcome());
            prop_assert_eq!(record.proof.recoverable(), record.outcome != RecoveryOutcome::NeedsRebuild);
            prop_assert_eq!(
                s.state() == ReplicaState::NeedsRebuild,
                record.outcome == RecoveryOutcome::NeedsRebuild
            );
            // Where the reference's formula has all it needs, it agrees.
            if head >= committed && tail <= committed {
                prop_assert_eq!(
                    classify_handshake(Lsn(flushed), Lsn(committed), h.retention_start()),
                    record.outcome
                );
            }
        }
    }
}
