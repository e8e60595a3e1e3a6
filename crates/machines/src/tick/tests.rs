//! The tick broadcaster's rules, one test each, then the machine against a
//! naive list model over random command and tick schedules.

use super::*;

const S1: SessionId = SessionId(1);
const S2: SessionId = SessionId(2);
const C1: ClientId = ClientId(1);
const C2: ClientId = ClientId(2);
const C3: ClientId = ClientId(3);

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn reg(session: SessionId, client: ClientId) -> Command {
    Command::Register { session, client }
}

fn unreg(session: SessionId, client: ClientId) -> Command {
    Command::Unregister { session, client }
}

fn count(session: Option<SessionId>) -> Command {
    Command::Count { session }
}

fn set(session: SessionId, value: i64) -> Command {
    Command::SetValue { session, value }
}

fn drain(b: &mut TickBroadcaster) -> Vec<Output> {
    std::iter::from_fn(|| b.poll_output()).collect()
}

fn replies(out: &[Output]) -> Vec<(CommandId, Result<Answer, TickError>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reply { command, result } => Some((*command, *result)),
            _ => None,
        })
        .collect()
}

fn sent(out: &[Output]) -> Vec<(ClientId, SessionId, i64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                client,
                session,
                value,
                ..
            } => Some((*client, *session, *value)),
            _ => None,
        })
        .collect()
}

fn ticks(out: &[Output]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Tick { tick, .. } => Some(*tick),
            _ => None,
        })
        .collect()
}

fn new() -> TickBroadcaster {
    TickBroadcaster::new(TickConfig::default(), t(0))
}

/// Submits and applies `commands`; returns the outputs.
fn run(b: &mut TickBroadcaster, commands: &[Command]) -> Vec<Output> {
    for c in commands {
        b.submit(*c).unwrap();
    }
    b.process(t(0));
    drain(b)
}

// ----- queue and barrier -------------------------------------------------

#[test]
fn defaults_are_fifty_millisecond_ticks_and_a_queue_of_256() {
    let c = TickConfig::default();
    assert_eq!(c.tick_interval, core::time::Duration::from_millis(50));
    assert_eq!(c.queue_capacity, 256);
    assert_eq!(c.flaw, None);
}

#[test]
fn a_submit_to_a_full_queue_is_refused_and_enqueues_nothing() {
    let mut b = new();
    for _ in 0..256 {
        b.submit(count(None)).unwrap();
    }
    let before = b.clone();
    assert_eq!(
        b.submit(reg(S1, C1)),
        Err(TickError::QueueFull { capacity: 256 })
    );
    assert_eq!(b, before);
    assert!(b.process_next(t(0)));
    assert!(b.submit(reg(S1, C1)).is_ok(), "room again");
}

#[test]
fn nothing_is_applied_before_the_owner_processes_the_queue() {
    let mut b = new();
    b.submit(reg(S1, C1)).unwrap();
    assert_eq!(b.client_count(None), 0);
    assert!(drain(&mut b).is_empty(), "no reply yet");
    assert_eq!(b.poll_timeout(), None);
    assert_eq!(b.process(t(0)), 1);
    assert_eq!(b.client_count(None), 1);
}

#[test]
fn commands_are_applied_in_submission_order_each_answered_once() {
    let mut b = new();
    let ids: Vec<CommandId> = [reg(S1, C1), set(S1, 5), unreg(S1, C1), unreg(S1, C1)]
        .iter()
        .map(|c| b.submit(*c).unwrap())
        .collect();
    b.process(t(0));
    assert_eq!(
        replies(&drain(&mut b)),
        [
            (ids[0], Ok(Answer::Registered)),
            (ids[1], Ok(Answer::ValueSet)),
            (
                ids[2],
                Ok(Answer::Unregistered {
                    was_registered: true
                })
            ),
            (
                ids[3],
                Ok(Answer::Unregistered {
                    was_registered: false
                })
            ),
        ]
    );
}

#[test]
fn count_is_a_barrier_reflecting_every_earlier_command_and_no_later_one() {
    let mut b = new();
    b.submit(reg(S1, C1)).unwrap();
    b.submit(reg(S1, C2)).unwrap();
    let q = b.submit(count(Some(S1))).unwrap();
    b.submit(reg(S1, C3)).unwrap();
    assert!(replies(&drain(&mut b)).is_empty(), "not answered at submit");
    b.process(t(0));
    let r = replies(&drain(&mut b));
    assert_eq!(r[2], (q, Ok(Answer::Count(2))));
}

#[test]
fn process_next_applies_one_command_at_a_time() {
    let mut b = new();
    b.submit(reg(S1, C1)).unwrap();
    b.submit(count(None)).unwrap();
    assert!(b.process_next(t(0)));
    assert_eq!(replies(&drain(&mut b)).len(), 1);
    assert!(b.process_next(t(0)));
    assert!(!b.process_next(t(0)));
    assert_eq!(b.queue_len(), 0);
}

// ----- registrations ---------------------------------------------------------

#[test]
fn registering_twice_changes_nothing() {
    let mut b = new();
    let out = run(&mut b, &[reg(S1, C1), reg(S1, C1), count(Some(S1))]);
    assert_eq!(replies(&out)[1].1, Ok(Answer::Registered));
    assert_eq!(replies(&out)[2].1, Ok(Answer::Count(1)));
}

#[test]
fn a_full_session_rejects_an_extra_client_but_not_a_registered_one() {
    let cfg = TickConfig {
        max_clients_per_session: 2,
        ..TickConfig::default()
    };
    let mut b = TickBroadcaster::new(cfg, t(0));
    let out = run(
        &mut b,
        &[
            reg(S1, C1),
            reg(S1, C2),
            reg(S1, C3),
            reg(S1, C1),
            reg(S2, C3),
        ],
    );
    let r: Vec<Result<Answer, TickError>> = replies(&out).into_iter().map(|x| x.1).collect();
    assert_eq!(
        r,
        [
            Ok(Answer::Registered),
            Ok(Answer::Registered),
            Err(TickError::SessionFull {
                session: S1,
                limit: 2
            }),
            Ok(Answer::Registered),
            Ok(Answer::Registered),
        ]
    );
    assert_eq!(b.clients(S1).collect::<Vec<_>>(), [C1, C2]);
}

#[test]
fn a_client_may_be_in_several_sessions_and_counts_in_each() {
    let mut b = new();
    let out = run(
        &mut b,
        &[reg(S1, C1), reg(S2, C1), count(None), count(Some(S2))],
    );
    let r = replies(&out);
    assert_eq!(r[2].1, Ok(Answer::Count(2)));
    assert_eq!(r[3].1, Ok(Answer::Count(1)));
}

#[test]
fn a_session_with_a_zero_client_limit_accepts_nobody() {
    let cfg = TickConfig {
        max_clients_per_session: 0,
        ..TickConfig::default()
    };
    let mut b = TickBroadcaster::new(cfg, t(0));
    let out = run(&mut b, &[reg(S1, C1)]);
    assert!(replies(&out)[0].1.is_err());
    assert_eq!(b.sessions().count(), 0);
    assert_eq!(b.poll_timeout(), None);
}

// ----- ticks -----------------------------------------------------------------

#[test]
fn every_tick_sends_each_sessions_value_to_each_of_its_clients() {
    let mut b = new();
    run(
        &mut b,
        &[
            reg(S2, C3),
            reg(S1, C2),
            reg(S1, C1),
            set(S1, 7),
            set(S2, -3),
        ],
    );
    assert_eq!(b.poll_timeout(), Some(t(50)));
    b.handle_timeout(t(50));
    let out = drain(&mut b);
    assert_eq!(out[0], Output::Tick { tick: 1, at: t(50) });
    assert_eq!(sent(&out), [(C1, S1, 7), (C2, S1, 7), (C3, S2, -3)]);
    b.handle_timeout(t(100));
    assert_eq!(sent(&drain(&mut b)).len(), 3, "and again next tick");
}

#[test]
fn a_value_is_zero_until_set_and_applies_from_the_next_tick() {
    let mut b = new();
    run(&mut b, &[reg(S1, C1)]);
    b.handle_timeout(t(50));
    assert_eq!(sent(&drain(&mut b)), [(C1, S1, 0)]);
    b.submit(set(S1, 9)).unwrap();
    b.handle_timeout(t(100));
    assert_eq!(sent(&drain(&mut b)), [(C1, S1, 0)], "queued, not applied");
    b.process(t(100));
    b.handle_timeout(t(150));
    assert_eq!(sent(&drain(&mut b)), [(C1, S1, 9)]);
}

#[test]
fn values_outlive_clients() {
    let mut b = new();
    run(
        &mut b,
        &[set(S1, 4), reg(S1, C1), unreg(S1, C1), reg(S1, C2)],
    );
    assert_eq!(b.value(S1), 4);
    b.handle_timeout(t(50));
    assert_eq!(sent(&drain(&mut b)), [(C2, S1, 4)]);
}

#[test]
fn an_unregistered_client_is_sent_nothing_more() {
    let mut b = new();
    run(&mut b, &[reg(S1, C1), reg(S1, C2)]);
    b.handle_timeout(t(50));
    drain(&mut b);
    run(&mut b, &[unreg(S1, C1)]);
    for ms in [100, 150, 200] {
        b.handle_timeout(t(ms));
        assert_eq!(sent(&drain(&mut b)), [(C2, S1, 0)]);
    }
}

#[test]
fn early_and_spurious_timeouts_do_nothing() {
    let mut b = new();
    run(&mut b, &[reg(S1, C1)]);
    let before = b.clone();
    b.handle_timeout(t(49));
    b.handle_timeout(t(0));
    assert_eq!(b, before);
}

#[test]
fn a_late_tick_fires_once_and_skips_the_missed_grid_points() {
    let mut b = new();
    run(&mut b, &[reg(S1, C1)]);
    b.handle_timeout(t(175));
    let out = drain(&mut b);
    assert_eq!(ticks(&out), [3]);
    assert_eq!(sent(&out).len(), 1);
    assert_eq!(b.poll_timeout(), Some(t(200)));
}

#[test]
fn with_nobody_registered_there_is_no_timer_and_ticking_resumes_on_the_grid() {
    let mut b = new();
    assert_eq!(b.poll_timeout(), None);
    run(&mut b, &[reg(S1, C1)]);
    b.handle_timeout(t(50));
    drain(&mut b);
    run(&mut b, &[unreg(S1, C1)]);
    assert_eq!(b.poll_timeout(), None);
    b.handle_timeout(t(500));
    assert!(drain(&mut b).is_empty());
    b.submit(reg(S1, C2)).unwrap();
    b.process(t(1010));
    assert_eq!(b.poll_timeout(), Some(t(1050)), "next grid point after now");
    b.handle_timeout(t(1050));
    assert_eq!(ticks(&drain(&mut b)), [21]);
}

#[test]
fn a_due_tick_is_not_skipped_when_commands_are_processed_first() {
    let mut b = new();
    run(&mut b, &[reg(S1, C1)]);
    b.submit(reg(S1, C2)).unwrap();
    b.process(t(60));
    assert_eq!(b.poll_timeout(), Some(t(50)), "still due");
    b.handle_timeout(t(60));
    assert_eq!(sent(&drain(&mut b)), [(C1, S1, 0), (C2, S1, 0)]);
}

// ----- flaws -----------------------------------------------------------------

#[test]
fn flaw_eager_count_answers_before_earlier_commands_are_applied() {
    let mut good = new();
    good.submit(reg(S1, C1)).unwrap();
    good.submit(count(None)).unwrap();
    assert!(drain(&mut good).is_empty());

    let mut b = TickBroadcaster::with_flaw(TickConfig::default(), t(0), Some(TickFlaw::EagerCount));
    b.submit(reg(S1, C1)).unwrap();
    let q = b.submit(count(None)).unwrap();
    assert_eq!(replies(&drain(&mut b)), [(q, Ok(Answer::Count(0)))]);
}

#[test]
fn flaw_lazy_unregister_sends_one_more_value_after_unregister() {
    let mut b =
        TickBroadcaster::with_flaw(TickConfig::default(), t(0), Some(TickFlaw::LazyUnregister));
    run(&mut b, &[reg(S1, C1), reg(S1, C2)]);
    let out = run(&mut b, &[unreg(S1, C1), count(Some(S1))]);
    assert_eq!(replies(&out)[1].1, Ok(Answer::Count(1)), "count is right");
    b.handle_timeout(t(50));
    assert_eq!(sent(&drain(&mut b)), [(C2, S1, 0), (C1, S1, 0)]);
    b.handle_timeout(t(100));
    assert_eq!(sent(&drain(&mut b)), [(C2, S1, 0)]);
}

// ----- coverage --------------------------------------------------------------

#[test]
fn transitions_are_named_and_recorded() {
    assert_eq!(TRANSITIONS.len(), Tr::TimeoutNothing as usize + 1);
    let mut b = new();
    run(&mut b, &[reg(S1, C1), reg(S1, C1), count(None)]);
    b.handle_timeout(t(10));
    b.handle_timeout(t(120));
    run(&mut b, &[unreg(S1, C1)]);
    let cov = b.coverage();
    for tr in [
        Tr::Queued,
        Tr::RegisterAdded,
        Tr::RegisterAlready,
        Tr::Count,
        Tr::Wake,
        Tr::TimeoutNothing,
        Tr::TickLate,
        Tr::UnregisterRemoved,
        Tr::Idle,
    ] {
        assert!(cov.has(tr as usize), "{}", TRANSITIONS[tr as usize]);
    }
    assert!(!cov.has(Tr::QueueFull as usize));
}

// ----- model -----------------------------------------------------------------

mod model {
    //! The broadcaster against a naive model: a FIFO of commands, a flat list
    //! of (session, client) registrations, a list of values. Every reply and
    //! every tick's sends must match the model exactly.
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        Submit(Command),
        ProcessOne,
        ProcessAll,
        Advance(u64),
    }

    fn command() -> impl Strategy<Value = Command> {
        let s = (0..3u64).prop_map(SessionId);
        let c = (0..4u64).prop_map(ClientId);
        prop_oneof![
            4 => (s.clone(), c.clone()).prop_map(|(session, client)| Command::Register { session, client }),
            2 => (s.clone(), c).prop_map(|(session, client)| Command::Unregister { session, client }),
            2 => prop::option::of(s.clone()).prop_map(|session| Command::Count { session }),
            1 => (s, -5..5i64).prop_map(|(session, value)| Command::SetValue { session, value }),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => command().prop_map(Step::Submit),
            2 => Just(Step::ProcessOne),
            2 => Just(Step::ProcessAll),
            3 => (0..130u64).prop_map(Step::Advance),
        ]
    }

    const CAPACITY: usize = 5;
    const LIMIT: usize = 2;

    #[derive(Default)]
    struct Naive {
        queue: Vec<(u64, Command)>,
        next_id: u64,
        regs: Vec<(SessionId, ClientId)>,
        values: Vec<(SessionId, i64)>,
    }

    impl Naive {
        fn apply(&mut self, c: Command) -> Result<Answer, TickError> {
            match c {
                Command::Register { session, client } => {
                    if self.regs.contains(&(session, client)) {
                        return Ok(Answer::Registered);
                    }
                    if self.regs.iter().filter(|r| r.0 == session).count() >= LIMIT {
                        return Err(TickError::SessionFull {
                            session,
                            limit: LIMIT,
                        });
                    }
                    self.regs.push((session, client));
                    Ok(Answer::Registered)
                }
                Command::Unregister { session, client } => {
                    let before = self.regs.len();
                    self.regs.retain(|r| *r != (session, client));
                    Ok(Answer::Unregistered {
                        was_registered: self.regs.len() < before,
                    })
                }
                Command::Count { session } => Ok(Answer::Count(
                    self.regs
                        .iter()
                        .filter(|r| session.is_none_or(|s| r.0 == s))
                        .count(),
                )),
                Command::SetValue { session, value } => {
                    self.values.retain(|v| v.0 != session);
                    self.values.push((session, value));
                    Ok(Answer::ValueSet)
                }
            }
        }

        fn expected_sends(&self) -> Vec<(ClientId, SessionId, i64)> {
            let mut v: Vec<(SessionId, ClientId, i64)> = self
                .regs
                .iter()
                .map(|(s, c)| {
                    let value = self.values.iter().find(|v| v.0 == *s).map_or(0, |v| v.1);
                    (*s, *c, value)
                })
                .collect();
            v.sort();
            v.into_iter().map(|(s, c, x)| (c, s, x)).collect()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn broadcaster_agrees_with_the_naive_model(steps in prop::collection::vec(step(), 1..100)) {
            let cfg = TickConfig {
                queue_capacity: CAPACITY,
                max_clients_per_session: LIMIT,
                ..TickConfig::default()
            };
            let mut b = TickBroadcaster::new(cfg, Time::ZERO);
            let mut m = Naive { next_id: 1, ..Naive::default() };
            let mut now = Time::ZERO;
            let mut last_tick = 0;
            for st in steps {
                let mut expect_replies = Vec::new();
                match st {
                    Step::Submit(c) => {
                        let r = b.submit(c);
                        if m.queue.len() >= CAPACITY {
                            prop_assert_eq!(r, Err(TickError::QueueFull { capacity: CAPACITY }));
                        } else {
                            prop_assert_eq!(r, Ok(CommandId(m.next_id)));
                            m.queue.push((m.next_id, c));
                            m.next_id += 1;
                        }
                    }
                    Step::ProcessOne | Step::ProcessAll => {
                        let n = if matches!(st, Step::ProcessOne) { 1.min(m.queue.len()) } else { m.queue.len() };
                        for (id, c) in m.queue.drain(..n).collect::<Vec<_>>() {
                            expect_replies.push((CommandId(id), m.apply(c)));
                        }
                        if matches!(st, Step::ProcessOne) {
                            prop_assert_eq!(b.process_next(now), n == 1);
                        } else {
                            prop_assert_eq!(b.process(now), n);
                        }
                    }
                    Step::Advance(ms) => {
                        now = now + core::time::Duration::from_millis(ms);
                        let due = b.poll_timeout().is_some_and(|at| at <= now);
                        b.handle_timeout(now);
                        let out = drain(&mut b);
                        if due {
                            let tk = ticks(&out);
                            prop_assert_eq!(tk.len(), 1);
                            prop_assert!(tk[0] > last_tick, "tick numbers increase");
                            prop_assert_eq!(tk[0], now.as_micros() / 50_000, "latest grid point");
                            last_tick = tk[0];
                            prop_assert_eq!(sent(&out), m.expected_sends(), "tick.every_client_each_tick");
                        } else {
                            prop_assert!(out.is_empty());
                        }
                        prop_assert!(b.poll_timeout().is_none_or(|at| at > now), "no due tick left");
                        continue;
                    }
                }
                let out = drain(&mut b);
                prop_assert_eq!(replies(&out), expect_replies, "replies and barrier answers");
                prop_assert_eq!(out.len(), replies(&out).len());
                // A timer runs exactly when someone is registered, within one
                // interval.
                match b.poll_timeout() {
                    None => prop_assert!(m.regs.is_empty()),
                    Some(at) => {
                        prop_assert!(!m.regs.is_empty());
                        prop_assert!(at <= now + core::time::Duration::from_millis(50));
                    }
                }
            }
        }
    }
}
