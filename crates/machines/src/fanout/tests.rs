//! The fanout's rules, one test each, then the broker and backends against a
//! naive list model over random schedules.

use core::time::Duration;

use super::*;

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn key(name: &str) -> BackendKey {
    BackendKey::new("svc-1", name, "v1")
}

fn release() -> Operation {
    Operation::release_handles("/data/x")
}

fn quiesce() -> Operation {
    Operation::quiesce(QuiesceReason::Maintenance)
}

fn drain(b: &mut Broker) -> Vec<BrokerOutput> {
    std::iter::from_fn(|| b.poll_output()).collect()
}

fn sends(out: &[BrokerOutput]) -> Vec<BackendKey> {
    out.iter()
        .filter_map(|o| match o {
            BrokerOutput::Send { backend, .. } => Some(backend.clone()),
            BrokerOutput::Done(_) => None,
        })
        .collect()
}

fn done(out: &[BrokerOutput]) -> Vec<FanoutResult> {
    out.iter()
        .filter_map(|o| match o {
            BrokerOutput::Done(r) => Some(r.clone()),
            BrokerOutput::Send { .. } => None,
        })
        .collect()
}

fn only_done(out: &[BrokerOutput]) -> FanoutResult {
    let d = done(out);
    assert_eq!(d.len(), 1, "exactly one result in {out:?}");
    d[0].clone()
}

fn broker(keys: &[(&str, bool)]) -> Broker {
    let mut b = Broker::new(Policy::default(), 1);
    for (k, live) in keys {
        b.register(key(k), *live);
    }
    b
}

fn ack(id: OperationId) -> Reply {
    Reply {
        id,
        answer: Answer::Ack,
    }
}

fn fail(id: OperationId, reason: FailureReason) -> Reply {
    Reply {
        id,
        answer: Answer::Failure(reason),
    }
}

fn backend_drain(b: &mut Backend) -> Vec<BackendOutput> {
    std::iter::from_fn(|| b.poll_output()).collect()
}

fn req(seq: u64, op: Operation) -> Request {
    Request {
        id: OperationId {
            incarnation: 1,
            seq,
        },
        op,
    }
}

fn replies(out: &[BackendOutput]) -> Vec<Answer> {
    out.iter()
        .filter_map(|o| match o {
            BackendOutput::Reply(r) => Some(r.answer),
            BackendOutput::Apply { .. } => None,
        })
        .collect()
}

fn applies(out: &[BackendOutput]) -> Vec<OperationId> {
    out.iter()
        .filter_map(|o| match o {
            BackendOutput::Apply { id, .. } => Some(*id),
            BackendOutput::Reply(_) => None,
        })
        .collect()
}

// ----- policy and registry ----------------------------------------------

#[test]
fn default_policy_waits_five_seconds() {
    let p = Policy::default();
    assert_eq!(p.ack_timeout(), Duration::from_secs(5));
    assert_eq!(p.retransmit_interval(), Duration::from_millis(500));
}

#[test]
fn zero_durations_are_clamped_to_one_millisecond() {
    let p = Policy::new(Duration::ZERO).with_retransmit_interval(Duration::ZERO);
    assert_eq!(p.ack_timeout(), Duration::from_millis(1));
    assert_eq!(p.retransmit_interval(), Duration::from_millis(1));
    assert_eq!(Policy::default().with_max_in_flight(0).max_in_flight(), 1);
}

#[test]
fn a_policy_that_skipped_the_constructor_is_still_clamped() {
    // As a deserialized policy would be.
    let p = Policy {
        ack_timeout: Duration::ZERO,
        retransmit_interval: Duration::ZERO,
        max_in_flight: 0,
    };
    assert_eq!(p.ack_timeout(), Duration::from_millis(1));
    assert_eq!(p.retransmit_interval(), Duration::from_millis(1));
    assert_eq!(p.max_in_flight(), 1);
    let mut b = Broker::new(p, 1);
    b.register(key("a"), true);
    b.start(t(0), release()).unwrap();
    drain(&mut b);
    assert_eq!(b.poll_timeout(), Some(Time::from_micros(1_000)));
    b.handle_timeout(t(1));
    assert_eq!(only_done(&drain(&mut b)).timeouts, [key("a")]);
}

#[test]
fn registering_an_existing_key_replaces_it_in_place() {
    let mut b = broker(&[("a", true), ("b", true), ("c", true)]);
    assert_eq!(b.register(key("b"), false), Some(true));
    let order: Vec<(BackendKey, bool)> = b.backends().map(|(k, l)| (k.clone(), l)).collect();
    assert_eq!(
        order,
        [(key("a"), true), (key("b"), false), (key("c"), true)]
    );
    assert_eq!(b.register(key("d"), true), None, "a new key goes last");
    assert_eq!(b.backends().last().map(|(k, _)| k.clone()), Some(key("d")));
}

#[test]
fn liveness_change_of_an_unknown_backend_is_an_error() {
    let mut b = broker(&[("a", true)]);
    let before = b.clone();
    assert_eq!(
        b.set_live(&key("zz"), false),
        Err(FanoutError::UnknownBackend(key("zz")))
    );
    assert_eq!(b, before);
    assert_eq!(b.set_live(&key("a"), false), Ok(()));
    assert_eq!(b.is_live(&key("a")), Some(false));
}

// ----- fanout ----------------------------------------------------------

#[test]
fn fanout_with_no_backends_is_done_at_once_and_all_acked() {
    let mut b = broker(&[]);
    let id = b.start(t(0), quiesce()).unwrap();
    let r = only_done(&drain(&mut b));
    assert_eq!(r.id, id);
    assert_eq!(r.sent_count(), 0);
    assert!(r.all_live_acked());
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn fanout_with_only_dead_backends_sends_nothing_and_is_done_at_once() {
    let mut b = broker(&[("a", false), ("b", false)]);
    b.start(t(0), release()).unwrap();
    let out = drain(&mut b);
    assert_eq!(sends(&out), []);
    let r = only_done(&out);
    assert_eq!(r.skipped_dead, [key("a"), key("b")]);
    assert!(r.all_live_acked());
}

#[test]
fn live_backends_receive_the_operation_in_registration_order_dead_ones_nothing() {
    let mut b = broker(&[("c", true), ("a", false), ("b", true)]);
    let id = b.start(t(0), release()).unwrap();
    let out = drain(&mut b);
    assert_eq!(sends(&out), [key("c"), key("b")]);
    for o in &out {
        if let BrokerOutput::Send { request, .. } = o {
            assert_eq!(request, &Request { id, op: release() });
        }
    }
    assert!(done(&out).is_empty());
}

#[test]
fn every_backend_lands_in_exactly_one_bucket() {
    let mut b = broker(&[("a", true), ("b", false), ("c", true), ("d", true)]);
    let id = b.start(t(0), release()).unwrap();
    drain(&mut b);
    assert_eq!(
        b.handle_reply(t(1), &key("a"), ack(id)),
        ReplyOutcome::Recorded
    );
    assert_eq!(
        b.handle_reply(t(2), &key("d"), fail(id, FailureReason::Rejected)),
        ReplyOutcome::Recorded
    );
    b.handle_timeout(t(5000));
    let r = only_done(&drain(&mut b));
    assert_eq!(r.acks, [key("a")]);
    assert_eq!(r.timeouts, [key("c")]);
    assert_eq!(
        r.failures,
        [BackendFailure {
            key: key("d"),
            reason: FailureReason::Rejected
        }]
    );
    assert_eq!(r.skipped_dead, [key("b")]);
    assert_eq!(r.sent_count(), 3);
    assert!(!r.all_live_acked());
    assert_eq!(r.operation, release());
}

#[test]
fn a_failure_does_not_stop_the_fanout() {
    let mut b = broker(&[("a", true), ("b", true)]);
    let id = b.start(t(0), quiesce()).unwrap();
    drain(&mut b);
    b.handle_reply(t(1), &key("a"), fail(id, FailureReason::BackendError));
    assert!(done(&drain(&mut b)).is_empty(), "b still awaited");
    b.handle_reply(t(2), &key("b"), ack(id));
    let r = only_done(&drain(&mut b));
    assert_eq!(r.acks, [key("b")]);
    assert_eq!(r.failures.len(), 1);
}

#[test]
fn buckets_follow_registration_order_not_answer_order() {
    let mut b = broker(&[("a", true), ("b", true), ("c", true)]);
    let id = b.start(t(0), release()).unwrap();
    drain(&mut b);
    for k in ["c", "a", "b"] {
        b.handle_reply(t(1), &key(k), ack(id));
    }
    let r = only_done(&drain(&mut b));
    assert_eq!(r.acks, [key("a"), key("b"), key("c")]);
}

#[test]
fn result_is_reported_as_soon_as_every_live_backend_answered() {
    let mut b = broker(&[("a", true), ("b", true)]);
    let id = b.start(t(0), release()).unwrap();
    drain(&mut b);
    b.handle_reply(t(10), &key("a"), ack(id));
    b.handle_reply(t(20), &key("b"), ack(id));
    let r = only_done(&drain(&mut b));
    assert_eq!(r.finished_at, t(20));
    assert!(r.all_live_acked());
    assert_eq!(b.poll_timeout(), None, "timers disarmed");
    assert_eq!(b.in_flight().count(), 0);
}

#[test]
fn a_silent_backend_times_out_exactly_at_the_deadline() {
    let mut b = broker(&[("a", true)]);
    b.start(t(100), release()).unwrap();
    drain(&mut b);
    b.handle_timeout(t(5099));
    assert!(done(&drain(&mut b)).is_empty());
    b.handle_timeout(t(5100));
    let r = only_done(&drain(&mut b));
    assert_eq!(r.timeouts, [key("a")]);
    assert_eq!(r.finished_at, t(5100));
    assert_eq!(r.ack_timeout, Duration::from_secs(5));
}

#[test]
fn result_comes_within_the_timeout_when_timers_are_on_time() {
    let mut b = Broker::new(Policy::new(Duration::from_millis(700)), 1);
    b.register(key("a"), true);
    b.start(t(3), release()).unwrap();
    drain(&mut b);
    let mut result = None;
    while let Some(at) = b.poll_timeout() {
        b.handle_timeout(at);
        if let Some(r) = done(&drain(&mut b)).pop() {
            result = Some(r);
        }
    }
    let r = result.expect("a result");
    assert!(r.finished_at <= r.started_at + r.ack_timeout);
}

#[test]
fn an_answer_at_or_after_the_deadline_is_late_and_ignored() {
    let mut b = broker(&[("a", true)]);
    let id = b.start(t(0), release()).unwrap();
    drain(&mut b);
    // No handle_timeout call: the reply call itself fires the deadline first.
    assert_eq!(
        b.handle_reply(t(5000), &key("a"), ack(id)),
        ReplyOutcome::Late
    );
    let r = only_done(&drain(&mut b));
    assert_eq!(r.timeouts, [key("a")]);
    assert_eq!(
        b.handle_reply(t(6000), &key("a"), ack(id)),
        ReplyOutcome::Late
    );
    assert!(drain(&mut b).is_empty());
}

#[test]
fn only_the_first_answer_of_a_backend_counts() {
    let mut b = broker(&[("a", true), ("b", true)]);
    let id = b.start(t(0), release()).unwrap();
    drain(&mut b);
    assert_eq!(
        b.handle_reply(t(1), &key("a"), ack(id)),
        ReplyOutcome::Recorded
    );
    assert_eq!(
        b.handle_reply(t(2), &key("a"), fail(id, FailureReason::Rejected)),
        ReplyOutcome::Duplicate
    );
    b.handle_reply(t(3), &key("b"), ack(id));
    assert_eq!(only_done(&drain(&mut b)).acks, [key("a"), key("b")]);
}

#[test]
fn replies_from_skipped_unknown_or_foreign_sources_are_unexpected() {
    let mut b = broker(&[("a", true), ("dead", false)]);
    let id = b.start(t(0), release()).unwrap();
    drain(&mut b);
    assert_eq!(
        b.handle_reply(t(1), &key("dead"), ack(id)),
        ReplyOutcome::Unexpected
    );
    assert_eq!(
        b.handle_reply(t(1), &key("stranger"), ack(id)),
        ReplyOutcome::Unexpected
    );
    let foreign = OperationId {
        incarnation: 0,
        seq: 1,
    };
    assert_eq!(
        b.handle_reply(t(1), &key("a"), ack(foreign)),
        ReplyOutcome::Unexpected,
        "an id of an earlier incarnation"
    );
    assert!(drain(&mut b).is_empty());
    assert_eq!(b.in_flight().collect::<Vec<_>>(), [id]);
}

#[test]
fn silent_live_backends_get_retransmissions_until_the_deadline() {
    let mut b = broker(&[("a", true), ("b", true)]);
    let id = b.start(t(0), release()).unwrap();
    let mut sent_to_a = sends(&drain(&mut b))
        .iter()
        .filter(|k| **k == key("a"))
        .count();
    b.handle_reply(t(1), &key("b"), ack(id));
    let mut last = t(0);
    while let Some(at) = b.poll_timeout() {
        b.handle_timeout(at);
        let out = drain(&mut b);
        let s = sends(&out);
        assert!(s.iter().all(|k| *k == key("a")), "b answered: not resent");
        if !s.is_empty() {
            last = at;
        }
        sent_to_a += s.len();
    }
    // At 0, 500, ..., 4500 ms: ten sends, the last before the deadline.
    assert_eq!(sent_to_a, 10);
    assert_eq!(last, t(4500));
}

#[test]
fn a_backend_that_dies_during_a_fanout_gets_no_more_retransmissions() {
    let mut b = broker(&[("a", true)]);
    let id = b.start(t(0), release()).unwrap();
    drain(&mut b);
    b.set_live(&key("a"), false).unwrap();
    b.handle_timeout(t(500));
    assert_eq!(sends(&drain(&mut b)), []);
    // Its answer, already on its way, still counts.
    assert_eq!(
        b.handle_reply(t(600), &key("a"), ack(id)),
        ReplyOutcome::Recorded
    );
    assert_eq!(only_done(&drain(&mut b)).acks, [key("a")]);
}

#[test]
fn a_backend_revived_during_a_fanout_gets_retransmissions_again() {
    let mut b = broker(&[("a", true)]);
    b.start(t(0), release()).unwrap();
    drain(&mut b);
    b.set_live(&key("a"), false).unwrap();
    b.handle_timeout(t(500));
    assert_eq!(sends(&drain(&mut b)), []);
    b.set_live(&key("a"), true).unwrap();
    b.handle_timeout(t(1000));
    assert_eq!(sends(&drain(&mut b)), [key("a")]);
    b.handle_timeout(t(5000));
    assert_eq!(only_done(&drain(&mut b)).timeouts, [key("a")]);
}

#[test]
fn fanouts_keep_the_backends_they_started_with() {
    let mut b = broker(&[("a", true)]);
    let id = b.start(t(0), release()).unwrap();
    drain(&mut b);
    b.register(key("late"), true);
    b.set_live(&key("a"), false).unwrap();
    b.handle_timeout(t(500));
    assert_eq!(sends(&drain(&mut b)), [], "late joiner is not part of it");
    assert_eq!(
        b.handle_reply(t(600), &key("late"), ack(id)),
        ReplyOutcome::Unexpected
    );
    b.handle_timeout(t(5000));
    let r = only_done(&drain(&mut b));
    assert_eq!(r.timeouts, [key("a")], "dead after the start: a timeout");
    assert_eq!(r.skipped_dead, []);
}

#[test]
fn operation_ids_are_unique_and_carry_the_incarnation() {
    let mut b = Broker::new(Policy::default(), 7);
    let a = b.start(t(0), release()).unwrap();
    let c = b.start(t(0), quiesce()).unwrap();
    assert_ne!(a, c);
    assert_eq!((a.incarnation, a.seq), (7, 1));
    assert_eq!((c.incarnation, c.seq), (7, 2));
    assert_eq!(a.to_string(), "op7.1");
}

#[test]
fn starting_beyond_the_in_flight_bound_is_refused() {
    let mut b = Broker::new(Policy::default().with_max_in_flight(2), 1);
    b.register(key("a"), true);
    b.start(t(0), release()).unwrap();
    b.start(t(0), release()).unwrap();
    drain(&mut b);
    let before = b.clone();
    assert_eq!(
        b.start(t(0), release()),
        Err(FanoutError::TooManyInFlight { max: 2 })
    );
    assert_eq!(b, before);
}

#[test]
fn concurrent_fanouts_are_answered_independently() {
    let mut b = broker(&[("a", true)]);
    let x = b.start(t(0), release()).unwrap();
    let y = b.start(t(0), quiesce()).unwrap();
    drain(&mut b);
    b.handle_reply(t(1), &key("a"), ack(y));
    let r = only_done(&drain(&mut b));
    assert_eq!((r.id, r.operation), (y, quiesce()));
    b.handle_reply(
        t(2),
        &key("a"),
        fail(x, FailureReason::UnsupportedOperation),
    );
    assert_eq!(only_done(&drain(&mut b)).id, x);
}

#[test]
fn spurious_and_backwards_timeouts_do_nothing() {
    let mut b = broker(&[("a", true)]);
    b.start(t(100), release()).unwrap();
    drain(&mut b);
    let before = b.clone();
    b.handle_timeout(t(0));
    b.handle_timeout(t(599));
    assert_eq!(b, before);
    assert!(drain(&mut b).is_empty());
}

// ----- backend ---------------------------------------------------------

#[test]
fn backend_applies_an_operation_then_acknowledges_it() {
    let mut be = Backend::new(key("a"), BackendConfig::default());
    be.handle_request(req(1, release()));
    let out = backend_drain(&mut be);
    assert_eq!(
        out,
        [BackendOutput::Apply {
            id: req(1, release()).id,
            op: release()
        }]
    );
    be.handle_applied(req(1, release()).id, ApplyResult::Applied)
        .unwrap();
    assert_eq!(replies(&backend_drain(&mut be)), [Answer::Ack]);
}

#[test]
fn backend_applies_each_operation_once_and_reanswers_duplicates() {
    let mut be = Backend::new(key("a"), BackendConfig::default());
    be.handle_request(req(1, release()));
    be.handle_applied(req(1, release()).id, ApplyResult::Applied)
        .unwrap();
    backend_drain(&mut be);
    be.handle_request(req(1, release()));
    let out = backend_drain(&mut be);
    assert_eq!(applies(&out), []);
    assert_eq!(replies(&out), [Answer::Ack]);
}

#[test]
fn a_duplicate_while_applying_waits_for_the_completion() {
    let mut be = Backend::new(key("a"), BackendConfig::default());
    be.handle_request(req(1, release()));
    be.handle_request(req(1, release()));
    assert_eq!(applies(&backend_drain(&mut be)).len(), 1);
    be.handle_applied(req(1, release()).id, ApplyResult::Applied)
        .unwrap();
    assert_eq!(replies(&backend_drain(&mut be)), [Answer::Ack]);
}

#[test]
fn a_failed_apply_is_answered_backend_error_and_never_retried() {
    let mut be = Backend::new(key("a"), BackendConfig::default());
    be.handle_request(req(1, release()));
    be.handle_applied(req(1, release()).id, ApplyResult::Failed)
        .unwrap();
    let err = Answer::Failure(FailureReason::BackendError);
    assert_eq!(replies(&backend_drain(&mut be)), [err]);
    be.handle_request(req(1, release()));
    let out = backend_drain(&mut be);
    assert_eq!((applies(&out), replies(&out)), (vec![], vec![err]));
}

#[test]
fn an_unsupported_operation_is_refused_without_being_applied() {
    let cfg = BackendConfig {
        supported: [OperationKind::ReleaseHandles].into(),
    };
    let mut be = Backend::new(key("a"), cfg);
    be.handle_request(req(1, quiesce()));
    let out = backend_drain(&mut be);
    assert_eq!(applies(&out), []);
    assert_eq!(
        replies(&out),
        [Answer::Failure(FailureReason::UnsupportedOperation)]
    );
    assert!(!be.is_quiesced());
}

#[test]
fn a_quiesced_backend_rejects_new_work_without_applying_it() {
    let mut be = Backend::new(key("a"), BackendConfig::default());
    be.handle_request(req(1, quiesce()));
    be.handle_applied(req(1, quiesce()).id, ApplyResult::Applied)
        .unwrap();
    backend_drain(&mut be);
    assert!(be.is_quiesced());
    be.handle_request(req(2, release()));
    let out = backend_drain(&mut be);
    assert_eq!(applies(&out), []);
    assert_eq!(replies(&out), [Answer::Failure(FailureReason::Rejected)]);
}

#[test]
fn a_draining_backend_rejects_new_work() {
    let mut be = Backend::new(key("a"), BackendConfig::default());
    be.handle_request(req(1, quiesce()));
    backend_drain(&mut be);
    assert!(be.is_draining());
    be.handle_request(req(2, release()));
    be.handle_request(req(3, quiesce()));
    let out = backend_drain(&mut be);
    assert_eq!(applies(&out), []);
    assert_eq!(replies(&out), [Answer::Failure(FailureReason::Rejected); 2]);
}

#[test]
fn another_quiesce_of_a_quiesced_backend_is_acked_without_applying() {
    let mut be = Backend::new(key("a"), BackendConfig::default());
    be.handle_request(req(1, quiesce()));
    be.handle_applied(req(1, quiesce()).id, ApplyResult::Applied)
        .unwrap();
    backend_drain(&mut be);
    be.handle_request(req(2, Operation::quiesce(QuiesceReason::BrokerShutdown)));
    let out = backend_drain(&mut be);
    assert_eq!((applies(&out), replies(&out)), (vec![], vec![Answer::Ack]));
}

#[test]
fn a_failed_quiesce_leaves_the_backend_accepting_work() {
    let mut be = Backend::new(key("a"), BackendConfig::default());
    be.handle_request(req(1, quiesce()));
    be.handle_applied(req(1, quiesce()).id, ApplyResult::Failed)
        .unwrap();
    backend_drain(&mut be);
    assert!(!be.is_quiesced() && !be.is_draining());
    be.handle_request(req(2, release()));
    assert_eq!(applies(&backend_drain(&mut be)).len(), 1);
}

#[test]
fn a_completion_without_an_apply_is_an_error_that_changes_nothing() {
    let mut be = Backend::new(key("a"), BackendConfig::default());
    let id = req(9, release()).id;
    let before = be.clone();
    assert_eq!(
        be.handle_applied(id, ApplyResult::Applied),
        Err(FanoutError::NotApplying(id))
    );
    assert_eq!(be, before);
}

#[test]
fn a_recovered_backend_keeps_its_answers_and_quiescence_not_its_applies() {
    let mut be = Backend::new(key("a"), BackendConfig::default());
    be.handle_request(req(1, quiesce()));
    be.handle_applied(req(1, quiesce()).id, ApplyResult::Applied)
        .unwrap();
    let mut other = Backend::new(key("b"), BackendConfig::default());
    other.handle_request(req(1, release()));
    backend_drain(&mut be);
    backend_drain(&mut other);

    let mut be = Backend::recover(key("a"), BackendConfig::default(), None, be.durable());
    assert!(be.is_quiesced());
    be.handle_request(req(1, quiesce()));
    assert_eq!(replies(&backend_drain(&mut be)), [Answer::Ack]);

    // The apply in flight at the crash is forgotten: asked again, applied.
    let mut other = Backend::recover(key("b"), BackendConfig::default(), None, other.durable());
    assert!(
        other
            .handle_applied(req(1, release()).id, ApplyResult::Applied)
            .is_err()
    );
    other.handle_request(req(1, release()));
    assert_eq!(applies(&backend_drain(&mut other)).len(), 1);
}

// ----- end to end ------------------------------------------------------

#[test]
fn over_a_lossy_network_retransmission_gets_an_ack_and_the_op_is_applied_once() {
    let mut b = broker(&[("a", true)]);
    let mut be = Backend::new(key("a"), BackendConfig::default());
    let id = b.start(t(0), release()).unwrap();
    drain(&mut b); // the first send is lost
    b.handle_timeout(t(500));
    let resent = drain(&mut b);
    let BrokerOutput::Send { request, .. } = &resent[0] else {
        panic!("a retransmission");
    };
    // Delivered twice (a network duplicate); the first reply is lost.
    be.handle_request(request.clone());
    be.handle_applied(id, ApplyResult::Applied).unwrap();
    backend_drain(&mut be);
    be.handle_request(request.clone());
    let out = backend_drain(&mut be);
    assert_eq!(applies(&out), []);
    let BackendOutput::Reply(reply) = out[0] else {
        panic!("a reply");
    };
    assert_eq!(
        b.handle_reply(t(600), &key("a"), reply),
        ReplyOutcome::Recorded
    );
    assert!(only_done(&drain(&mut b)).all_live_acked());
}

// ----- flaws -----------------------------------------------------------

#[test]
fn flaw_send_to_dead_sends_to_a_dead_backend() {
    let mut good = broker(&[("a", true), ("dead", false)]);
    good.start(t(0), release()).unwrap();
    assert_eq!(sends(&drain(&mut good)), [key("a")]);

    let mut b = Broker::with_flaw(Policy::default(), 1, Some(FanoutFlaw::SendToDead));
    b.register(key("a"), true);
    b.register(key("dead"), false);
    let id = b.start(t(0), release()).unwrap();
    assert_eq!(sends(&drain(&mut b)), [key("a"), key("dead")]);
    b.handle_reply(t(1), &key("a"), ack(id));
    assert_eq!(only_done(&drain(&mut b)).skipped_dead, [key("dead")]);
}

#[test]
fn flaw_backend_no_dedup_applies_a_retransmission_twice() {
    let mut be = Backend::with_flaw(
        key("a"),
        BackendConfig::default(),
        Some(FanoutFlaw::BackendNoDedup),
    );
    for _ in 0..2 {
        be.handle_request(req(1, release()));
        be.handle_applied(req(1, release()).id, ApplyResult::Applied)
            .unwrap();
    }
    let out = backend_drain(&mut be);
    assert_eq!(applies(&out).len(), 2, "applied twice");
    // Still no work after quiescing, even flawed.
    be.handle_request(req(2, quiesce()));
    be.handle_applied(req(2, quiesce()).id, ApplyResult::Applied)
        .unwrap();
    backend_drain(&mut be);
    be.handle_request(req(1, release()));
    assert_eq!(applies(&backend_drain(&mut be)), []);
}

#[test]
fn each_machine_ignores_the_other_machines_flaw() {
    let mut b = Broker::with_flaw(Policy::default(), 1, Some(FanoutFlaw::BackendNoDedup));
    b.register(key("dead"), false);
    b.start(t(0), release()).unwrap();
    assert_eq!(sends(&drain(&mut b)), []);
    let mut be = Backend::with_flaw(
        key("a"),
        BackendConfig::default(),
        Some(FanoutFlaw::SendToDead),
    );
    be.handle_request(req(1, release()));
    be.handle_applied(req(1, release()).id, ApplyResult::Applied)
        .unwrap();
    be.handle_request(req(1, release()));
    assert_eq!(applies(&backend_drain(&mut be)).len(), 1);
}

// ----- coverage --------------------------------------------------------

#[test]
fn transitions_are_named_and_recorded() {
    assert_eq!(BROKER_TRANSITIONS.len(), Tr::DoneAtDeadline as usize + 1);
    assert_eq!(BACKEND_TRANSITIONS.len(), backend::Tr::Recover as usize + 1);
    let mut b = broker(&[("a", true), ("b", false)]);
    let id = b.start(t(0), release()).unwrap();
    let _ = drain(&mut b);
    b.handle_reply(t(1), &key("a"), ack(id));
    b.handle_reply(t(2), &key("a"), ack(id));
    let cov = b.coverage();
    for tr in [
        Tr::RegisterNew,
        Tr::StartSkipped,
        Tr::StartAwaiting,
        Tr::Acked,
        Tr::DoneAllAnswered,
        Tr::ReplyLate,
    ] {
        assert!(cov.has(tr as usize), "{}", BROKER_TRANSITIONS[tr as usize]);
    }
    assert!(!cov.has(Tr::TimedOut as usize));

    let mut be = Backend::new(key("a"), BackendConfig::default());
    be.handle_request(req(1, quiesce()));
    be.handle_request(req(2, release()));
    be.handle_applied(req(1, quiesce()).id, ApplyResult::Applied)
        .unwrap();
    be.handle_request(req(3, release()));
    let be = Backend::recover(key("a"), BackendConfig::default(), None, be.durable());
    assert!(be.coverage().has(backend::Tr::Recover as usize));
    let mut be2 = Backend::new(key("a"), BackendConfig::default());
    be2.handle_request(req(1, quiesce()));
    be2.handle_request(req(2, release()));
    be2.handle_applied(req(1, quiesce()).id, ApplyResult::Applied)
        .unwrap();
    be2.handle_request(req(3, release()));
    let cov = be2.coverage();
    for tr in [
        backend::Tr::Applying,
        backend::Tr::Quiesced,
        backend::Tr::DrainingRejected,
        backend::Tr::QuiescedRejected,
    ] {
        assert!(cov.has(tr as usize), "{}", BACKEND_TRANSITIONS[tr as usize]);
    }
    assert!(
        !cov.has(backend::Tr::Recover as usize),
        "new is not recover"
    );
}

// ----- model -----------------------------------------------------------

mod model {
    //! Broker and backends over a lossy, duplicating, reordering network,
    //! against a deliberately naive model: a list of registrations, a list
    //! snapshot per fanout, and per backend a list of answers given.
    use proptest::prelude::*;

    use super::*;

    const KEYS: usize = 4;

    #[derive(Clone, Debug)]
    enum Step {
        Register(usize, bool),
        SetLive(usize, bool),
        Start(bool),
        DeliverRequest(usize),
        DeliverReply(usize),
        Drop(usize),
        Duplicate(usize),
        Advance(u64),
        CrashBackend(usize),
    }

    #[derive(Clone, Debug)]
    enum Msg {
        Req(BackendKey, Request),
        Rep(BackendKey, Reply),
    }

    /// The naive backend: applies if supported and not quiesced.
    #[derive(Clone, Debug, Default)]
    struct NaiveBackend {
        answers: Vec<(OperationId, Answer)>,
        quiesced: bool,
        applied: Vec<OperationId>,
    }

    struct NaiveFanout {
        id: OperationId,
        deadline: Time,
        /// (key, live at start, first answer in time)
        rows: Vec<(BackendKey, bool, Option<Answer>)>,
    }

    impl NaiveFanout {
        fn expected(
            &self,
        ) -> (
            Vec<BackendKey>,
            Vec<BackendKey>,
            Vec<BackendFailure>,
            Vec<BackendKey>,
        ) {
            let (mut a, mut t, mut f, mut s) = (vec![], vec![], vec![], vec![]);
            for (k, live, ans) in &self.rows {
                match (live, ans) {
                    (false, _) => s.push(k.clone()),
                    (true, None) => t.push(k.clone()),
                    (true, Some(Answer::Ack)) => a.push(k.clone()),
                    (true, Some(Answer::Failure(reason))) => f.push(BackendFailure {
                        key: k.clone(),
                        reason: *reason,
                    }),
                }
            }
            (a, t, f, s)
        }

        fn complete(&self) -> bool {
            self.rows
                .iter()
                .all(|(_, live, ans)| !live || ans.is_some())
        }
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..KEYS, prop::bool::weighted(0.75)).prop_map(|(k, l)| Step::Register(k, l)),
            2 => (0..KEYS, any::<bool>()).prop_map(|(k, l)| Step::SetLive(k, l)),
            3 => any::<bool>().prop_map(Step::Start),
            6 => any::<usize>().prop_map(Step::DeliverRequest),
            6 => any::<usize>().prop_map(Step::DeliverReply),
            2 => any::<usize>().prop_map(Step::Drop),
            2 => any::<usize>().prop_map(Step::Duplicate),
            3 => prop_oneof![0..600u64, 4000..6000u64].prop_map(Step::Advance),
            1 => (0..KEYS).prop_map(Step::CrashBackend),
        ]
    }

    fn backend_cfg(bits: u8) -> (BackendConfig, bool) {
        let mut supported = BTreeSet::new();
        if bits & 1 == 0 {
            supported.insert(OperationKind::ReleaseHandles);
        }
        if bits & 2 == 0 {
            supported.insert(OperationKind::Quiesce);
        }
        (BackendConfig { supported }, bits & 4 != 0)
    }

    struct World {
        now: Time,
        broker: Broker,
        backends: Vec<(Backend, bool, NaiveBackend)>,
        cfgs: Vec<(BackendConfig, bool)>,
        net: Vec<Msg>,
        registry: Vec<(BackendKey, bool)>,
        open: Vec<NaiveFanout>,
        results: usize,
    }

    impl World {
        fn key(i: usize) -> BackendKey {
            BackendKey::new("svc", format!("b{i}"), "1")
        }

        fn index(k: &BackendKey) -> usize {
            k.name[1..].parse().unwrap()
        }

        /// Drains the broker, checking sends and results against the model.
        fn drain(&mut self) -> Result<(), TestCaseError> {
            while let Some(o) = self.broker.poll_output() {
                match o {
                    BrokerOutput::Send { backend, request } => {
                        let live = self.registry.iter().any(|(k, l)| *k == backend && *l);
                        prop_assert!(live, "no delivery to dead: {backend}");
                        prop_assert!(self.open.iter().any(|f| f.id == request.id));
                        self.net.push(Msg::Req(backend, request));
                    }
                    BrokerOutput::Done(r) => {
                        let pos = self.open.iter().position(|f| f.id == r.id);
                        prop_assert!(pos.is_some(), "result of a known open fanout");
                        let f = self.open.remove(pos.unwrap());
                        prop_assert!(f.complete() || self.now >= f.deadline, "finished early");
                        prop_assert!(r.finished_at <= f.deadline.max(self.now));
                        let (a, t, fl, s) = f.expected();
                        prop_assert_eq!(&r.acks, &a);
                        prop_assert_eq!(&r.timeouts, &t);
                        prop_assert_eq!(&r.failures, &fl);
                        prop_assert_eq!(&r.skipped_dead, &s);
                        prop_assert_eq!(r.all_live_acked(), t.is_empty() && fl.is_empty());
                        self.results += 1;
                    }
                }
            }
            // Every fanout the model considers finished has been reported.
            Ok(())
        }

        /// Fanouts the broker must have finished after a call at `now`.
        fn check_none_overdue(&self, fired: bool) -> Result<(), TestCaseError> {
            for f in &self.open {
                prop_assert!(!f.complete(), "complete fanout {} not reported", f.id);
                if fired {
                    prop_assert!(
                        self.now < f.deadline,
                        "overdue fanout {} not reported",
                        f.id
                    );
                }
            }
            Ok(())
        }

        fn naive_answer(&mut self, i: usize, request: &Request) -> Answer {
            let (cfg, fails) = self.cfgs[i].clone();
            let nb = &mut self.backends[i].2;
            if let Some((_, a)) = nb.answers.iter().find(|(id, _)| *id == request.id) {
                return *a;
            }
            let kind = request.op.kind();
            let answer = if !cfg.supported.contains(&kind) {
                Answer::Failure(FailureReason::UnsupportedOperation)
            } else if nb.quiesced {
                if kind == OperationKind::Quiesce {
                    Answer::Ack
                } else {
                    Answer::Failure(FailureReason::Rejected)
                }
            } else if fails {
                Answer::Failure(FailureReason::BackendError)
            } else {
                if kind == OperationKind::Quiesce {
                    nb.quiesced = true;
                }
                Answer::Ack
            };
            nb.answers.push((request.id, answer));
            answer
        }

        fn step(&mut self, s: Step) -> Result<(), TestCaseError> {
            match s {
                Step::Register(i, live) => {
                    let k = Self::key(i);
                    let prev = self.broker.register(k.clone(), live);
                    match self.registry.iter_mut().find(|(rk, _)| *rk == k) {
                        Some(entry) => {
                            prop_assert_eq!(prev, Some(entry.1));
                            entry.1 = live;
                        }
                        None => {
                            prop_assert_eq!(prev, None);
                            self.registry.push((k, live));
                        }
                    }
                }
                Step::SetLive(i, live) => {
                    let k = Self::key(i);
                    let r = self.broker.set_live(&k, live);
                    match self.registry.iter_mut().find(|(rk, _)| *rk == k) {
                        Some(entry) => {
                            prop_assert!(r.is_ok());
                            entry.1 = live;
                        }
                        None => prop_assert_eq!(r, Err(FanoutError::UnknownBackend(k))),
                    }
                }
                Step::Start(q) => {
                    let op = if q { quiesce() } else { release() };
                    match self.broker.start(self.now, op) {
                        Ok(id) => self.open.push(NaiveFanout {
                            id,
                            deadline: self.now + self.broker.policy().ack_timeout(),
                            rows: self
                                .registry
                                .iter()
                                .map(|(k, l)| (k.clone(), *l, None))
                                .collect(),
                        }),
                        Err(e) => prop_assert_eq!(
                            e,
                            FanoutError::TooManyInFlight {
                                max: self.broker.policy().max_in_flight()
                            }
                        ),
                    }
                }
                Step::DeliverRequest(n) | Step::DeliverReply(n) => {
                    let want_req = matches!(s, Step::DeliverRequest(_));
                    let idx: Vec<usize> = (0..self.net.len())
                        .filter(|&j| matches!(self.net[j], Msg::Req(..)) == want_req)
                        .collect();
                    if idx.is_empty() {
                        return Ok(());
                    }
                    match self.net.remove(idx[n % idx.len()]) {
                        Msg::Req(k, request) => {
                            let i = Self::index(&k);
                            let expect = self.naive_answer(i, &request);
                            let (be, fails, nb) = &mut self.backends[i];
                            be.handle_request(request.clone());
                            while let Some(o) = be.poll_output() {
                                match o {
                                    BackendOutput::Apply { id, op } => {
                                        prop_assert!(!nb.applied.contains(&id), "applied once");
                                        prop_assert!(
                                            !nb.quiesced || op.kind() == OperationKind::Quiesce,
                                            "quiesced accepts nothing"
                                        );
                                        nb.applied.push(id);
                                        let res = if *fails {
                                            ApplyResult::Failed
                                        } else {
                                            ApplyResult::Applied
                                        };
                                        be.handle_applied(id, res).unwrap();
                                    }
                                    BackendOutput::Reply(r) => {
                                        prop_assert_eq!(r.id, request.id);
                                        prop_assert_eq!(r.answer, expect);
                                        self.net.push(Msg::Rep(k.clone(), r));
                                    }
                                }
                            }
                        }
                        Msg::Rep(k, reply) => {
                            let outcome = self.broker.handle_reply(self.now, &k, reply);
                            // Model: timers first, then the first answer in time.
                            let now = self.now;
                            let mut expect = ReplyOutcome::Unexpected;
                            if let Some(f) = self.open.iter_mut().find(|f| f.id == reply.id) {
                                if now >= f.deadline {
                                    expect = ReplyOutcome::Late;
                                } else if let Some(row) =
                                    f.rows.iter_mut().find(|(rk, live, _)| *rk == k && *live)
                                {
                                    expect = if row.2.is_some() {
                                        ReplyOutcome::Duplicate
                                    } else {
                                        row.2 = Some(reply.answer);
                                        ReplyOutcome::Recorded
                                    };
                                }
                            } else {
                                expect = ReplyOutcome::Late;
                            }
                            prop_assert_eq!(outcome, expect);
                            self.drain()?;
                            self.check_none_overdue(true)?;
                        }
                    }
                }
                Step::Drop(n) => {
                    if !self.net.is_empty() {
                        let len = self.net.len();
                        self.net.remove(n % len);
                    }
                }
                Step::Duplicate(n) => {
                    if !self.net.is_empty() {
                        let m = self.net[n % self.net.len()].clone();
                        self.net.push(m);
                    }
                }
                Step::Advance(ms) => {
                    self.now = self.now + Duration::from_millis(ms);
                    self.broker.handle_timeout(self.now);
                    self.drain()?;
                    self.check_none_overdue(true)?;
                }
                Step::CrashBackend(i) => {
                    let (cfg, _) = self.cfgs[i].clone();
                    let be = &mut self.backends[i].0;
                    *be = Backend::recover(Self::key(i), cfg, None, be.durable());
                }
            }
            self.drain()?;
            self.check_none_overdue(false)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn broker_and_backends_agree_with_the_naive_model(
            bits in prop::collection::vec(0..8u8, KEYS),
            steps in prop::collection::vec(step(), 1..80),
        ) {
            let cfgs: Vec<(BackendConfig, bool)> = bits.iter().map(|b| backend_cfg(*b)).collect();
            let mut w = World {
                now: Time::ZERO,
                broker: Broker::new(Policy::default().with_max_in_flight(3), 1),
                backends: (0..KEYS)
                    .map(|i| {
                        let (cfg, fails) = cfgs[i].clone();
                        (Backend::new(World::key(i), cfg), fails, NaiveBackend::default())
                    })
                    .collect(),
                cfgs,
                net: Vec::new(),
                registry: Vec::new(),
                open: Vec::new(),
                results: 0,
            };
            for s in steps {
                w.step(s)?;
            }
            // Heal: past every deadline, everything is reported.
            w.step(Step::Advance(6000))?;
            prop_assert!(w.open.is_empty());
            prop_assert_eq!(w.broker.poll_timeout(), None);
        }
    }
}
