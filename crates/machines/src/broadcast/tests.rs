//! The broadcaster's rules, one test each, driven by a tiny harness that
//! plays the catalog and records what the machine asks for.

use core::time::Duration;
use std::collections::BTreeSet;

use super::*;
use crate::locks::ResourceKey;

const CC: ChannelId = ChannelId(0);
const V1: ChannelId = ChannelId(1);
const V2: ChannelId = ChannelId(2);

fn cfg() -> Config {
    Config::new(CC, [V1, V2])
}

fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn info(m: u64, tick: u64) -> AckInfo {
    AckInfo {
        message_id: MessageId(m),
        time_tick: TimeTick(tick),
    }
}

fn body(payload: u64, targets: &[ChannelId]) -> Body {
    Body {
        payload,
        targets: targets.iter().copied().collect(),
    }
}

fn db(name: &str) -> ResourceKey {
    ResourceKey::db(name, false)
}

/// Plays the catalog: writes are held until completed explicitly.
struct H {
    b: Broadcaster,
    now: Time,
    catalog: CatalogState,
    pending_writes: Vec<(WriteId, CatalogOp)>,
    out: Vec<Output>,
}

impl H {
    fn new(cfg: Config) -> H {
        let mut h = H {
            b: Broadcaster::new(cfg, Role::Primary, Time::ZERO),
            now: Time::ZERO,
            catalog: CatalogState::new(),
            pending_writes: Vec::new(),
            out: Vec::new(),
        };
        h.drain();
        h
    }

    fn recover(cfg: Config, role: Role, catalog: CatalogState) -> H {
        let mut h = H {
            b: Broadcaster::recover(cfg, role, t(1000), &catalog),
            now: t(1000),
            catalog,
            pending_writes: Vec::new(),
            out: Vec::new(),
        };
        h.drain();
        h
    }

    /// Moves outputs into `out`, writes into `pending_writes`.
    fn drain(&mut self) {
        while let Some(o) = self.b.poll_output() {
            if let Output::Write { write, op } = &o {
                self.pending_writes.push((*write, op.clone()));
            }
            self.out.push(o);
        }
    }

    fn take(&mut self) -> Vec<Output> {
        self.drain();
        std::mem::take(&mut self.out)
    }

    /// Completes every pending write successfully, repeatedly, until none
    /// is left.
    fn settle_writes(&mut self) {
        loop {
            self.drain();
            if self.pending_writes.is_empty() {
                return;
            }
            for (w, op) in std::mem::take(&mut self.pending_writes) {
                self.catalog.apply(&op);
                self.b.handle_write_done(self.now, w, Ok(()), Jitter(0));
            }
        }
    }

    fn fail_writes(&mut self) {
        self.drain();
        for (w, _) in std::mem::take(&mut self.pending_writes) {
            self.b
                .handle_write_done(self.now, w, Err(IoError::Failed), Jitter(0));
        }
        self.drain();
    }

    /// Starts with `keys` and returns the handle (keys must be free).
    fn started(&mut self, caller: u64, keys: Vec<ResourceKey>) -> BroadcastId {
        self.b.start(self.now, Caller(caller), keys).unwrap();
        self.settle_writes();
        let out = self.take();
        out.iter()
            .find_map(|o| match o {
                Output::Started { caller: c, id } if c.0 == caller => Some(*id),
                _ => None,
            })
            .expect("started")
    }

    fn at(&mut self, ms: u64) {
        self.now = t(ms);
        self.b.handle_timeout(self.now);
        self.drain();
    }

    fn appends(&self) -> Vec<(BroadcastId, ChannelId, u32)> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Append {
                    id,
                    channel,
                    attempt,
                    ..
                } => Some((*id, *channel, *attempt)),
                _ => None,
            })
            .collect()
    }

    fn invoked(&self) -> Vec<BroadcastId> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::InvokeCallback { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn done(&self) -> Vec<BroadcastId> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Done { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn append_ok(&mut self, id: BroadcastId, ch: ChannelId, m: u64) {
        self.b
            .handle_append_result(self.now, id, ch, Ok(info(m, m)), Jitter(0));
        self.drain();
    }

    /// Broadcast to `targets`, persist, and ack every append (fast ack).
    fn run_through(&mut self, id: BroadcastId, targets: &[ChannelId], tick: u64) {
        self.b.broadcast(self.now, id, body(id.0, targets)).unwrap();
        self.settle_writes();
        for (i, ch) in targets.iter().enumerate() {
            self.append_ok(id, *ch, tick + i as u64);
        }
        self.settle_writes();
    }
}

#[test]
fn non_primary_rejects_new_broadcasts() {
    let mut h = H::new(cfg());
    h.b.set_role(Role::Secondary);
    assert_eq!(
        h.b.start(h.now, Caller(1), [db("a")]),
        Err(BroadcastError::NotPrimary)
    );
    // A handle started while primary is rejected after a demotion, and its
    // keys are released.
    h.b.set_role(Role::Primary);
    let id = h.started(2, vec![db("a")]);
    h.b.set_role(Role::Secondary);
    assert_eq!(
        h.b.broadcast(h.now, id, body(1, &[CC])),
        Err(BroadcastError::NotPrimary)
    );
    assert!(h.b.lock_table().is_idle());
}

#[test]
fn stopped_broadcaster_rejects_with_task_not_created_and_releases_keys() {
    let mut h = H::new(cfg());
    let open = h.started(1, vec![db("a")]);
    // A second start waits for `a`.
    h.b.start(h.now, Caller(2), [db("a")]).unwrap();
    h.take();
    h.b.stop(h.now);
    let out = h.take();
    assert!(out.contains(&Output::StartFailed {
        caller: Caller(2),
        error: BroadcastError::TaskNotCreated
    }));
    assert_eq!(
        h.b.start(h.now, Caller(3), [db("b")]),
        Err(BroadcastError::TaskNotCreated)
    );
    assert_eq!(
        h.b.broadcast(h.now, open, body(1, &[CC])),
        Err(BroadcastError::TaskNotCreated)
    );
    assert!(h.b.lock_table().is_idle(), "every key released");
}

#[test]
fn ids_are_allocated_after_locking_so_conflicting_broadcasts_get_increasing_ids() {
    let mut h = H::new(cfg());
    // Caller 1 takes `a`; caller 2 waits for it; caller 3 is unrelated.
    let first = h.started(1, vec![db("a")]);
    h.b.start(h.now, Caller(2), [db("a")]).unwrap();
    let third = h.started(3, vec![db("z")]);
    assert!(third > first);
    assert!(
        !h.take().iter().any(|o| matches!(
            o,
            Output::Started {
                caller: Caller(2),
                ..
            }
        )),
        "caller 2 has no id while it waits for its keys"
    );
    h.b.close(h.now, first).unwrap();
    h.settle_writes();
    let second = h
        .take()
        .iter()
        .find_map(|o| match o {
            Output::Started {
                caller: Caller(2),
                id,
            } => Some(*id),
            _ => None,
        })
        .expect("granted after close");
    assert!(second > third, "allocated when its keys were granted");
}

#[test]
fn close_releases_the_keys_of_an_unused_handle() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    assert!(!h.b.lock_table().is_idle());
    h.b.close(h.now, id).unwrap();
    assert!(h.b.lock_table().is_idle());
    assert_eq!(h.b.close(h.now, id), Err(BroadcastError::UnknownHandle(id)));
}

#[test]
fn a_bad_message_is_a_typed_error_and_releases_the_keys() {
    let mut h = H::new(cfg());
    for (targets, err) in [
        (vec![], BadMessage::NoTargets),
        (vec![V1], BadMessage::MissingControlChannel(CC)),
        (
            vec![CC, ChannelId(9)],
            BadMessage::UnknownChannel(ChannelId(9)),
        ),
    ] {
        let id = h.started(1, vec![db("a")]);
        assert_eq!(
            h.b.broadcast(h.now, id, body(1, &targets)),
            Err(BroadcastError::BadMessage(err))
        );
        assert!(h.b.lock_table().is_idle());
        assert_eq!(h.b.task_state(id), None, "no task created");
    }
    assert_eq!(
        h.b.broadcast(h.now, BroadcastId(99), body(1, &[CC])),
        Err(BroadcastError::UnknownHandle(BroadcastId(99)))
    );
}

#[test]
fn the_task_is_persisted_as_pending_before_the_first_append() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    h.b.broadcast(h.now, id, body(7, &[CC, V1])).unwrap();
    let out = h.take();
    assert!(out.iter().any(|o| matches!(o, Output::Write { op: CatalogOp::PutTask(r), .. } if r.state == TaskState::Pending && r.id == id)));
    assert!(
        h.appends().is_empty(),
        "nothing appended before the write completes"
    );
    h.settle_writes();
    assert_eq!(h.appends(), [(id, CC, 1), (id, V1, 1)]);
}

#[test]
fn a_failed_task_write_is_retried_before_anything_is_appended() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    h.b.broadcast(h.now, id, body(7, &[CC])).unwrap();
    h.fail_writes();
    assert!(h.appends().is_empty());
    assert_eq!(h.b.poll_timeout(), Some(t(10)), "10 ms write backoff");
    h.at(10);
    h.settle_writes();
    assert_eq!(h.appends(), [(id, CC, 1)]);
}

#[test]
fn failed_appends_retry_with_doubling_backoff_forever() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    h.b.broadcast(h.now, id, body(7, &[CC])).unwrap();
    h.settle_writes();
    let mut at = 0;
    let mut expected = 10;
    for attempt in 1..=13u32 {
        h.b.handle_append_result(h.now, id, CC, Err(IoError::TimedOut), Jitter(0));
        assert_eq!(
            h.b.poll_timeout(),
            Some(t(at + expected)),
            "attempt {attempt}"
        );
        at += expected;
        h.at(at);
        assert_eq!(h.appends().last(), Some(&(id, CC, attempt + 1)));
        expected = (expected * 2).min(10_000);
    }
}

#[test]
fn stale_append_results_are_ignored() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    h.run_through(id, &[CC], 100);
    let before = h.b.clone();
    h.append_ok(id, CC, 555);
    h.b.handle_append_result(h.now, BroadcastId(42), CC, Ok(info(1, 1)), Jitter(0));
    assert_eq!(h.b, before);
}

#[test]
fn fast_ack_acks_from_append_results_and_persists_each_ack() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    h.b.broadcast(h.now, id, body(7, &[CC, V1])).unwrap();
    h.settle_writes();
    h.append_ok(id, V1, 11);
    h.settle_writes();
    let rec = &h.catalog.tasks[&id];
    assert_eq!(rec.acks.get(V1), Some(&info(11, 11)));
    assert!(h.invoked().is_empty(), "control channel not acked yet");
}

#[test]
fn with_ack_sync_up_only_consumer_acks_count_and_they_are_idempotent() {
    let mut c = cfg();
    c.ack_sync_up = true;
    let mut h = H::new(c);
    let id = h.started(1, vec![db("a")]);
    h.b.broadcast(h.now, id, body(7, &[CC, V1])).unwrap();
    h.settle_writes();
    h.append_ok(id, CC, 1);
    h.append_ok(id, V1, 2);
    h.settle_writes();
    assert!(h.catalog.tasks[&id].acks.is_empty(), "appends are not acks");
    let ack = |ch, m| Ack {
        id,
        channel: ch,
        info: info(m, m),
        replicate: None,
    };
    h.b.handle_ack(h.now, ack(CC, 1));
    h.b.handle_ack(h.now, ack(CC, 9)); // duplicate: ignored
    h.settle_writes();
    assert_eq!(h.catalog.tasks[&id].acks.get(CC), Some(&info(1, 1)));
    assert!(h.invoked().is_empty(), "V1 not acked yet");
    h.b.handle_ack(h.now, ack(V1, 2));
    h.settle_writes();
    assert_eq!(h.invoked(), [id]);
}

#[test]
fn the_callback_waits_for_every_channel_and_is_queued_once() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    h.b.broadcast(h.now, id, body(7, &[CC, V1, V2])).unwrap();
    h.settle_writes();
    h.append_ok(id, CC, 1);
    h.append_ok(id, V1, 2);
    h.settle_writes();
    assert!(h.invoked().is_empty(), "V2 not acked");
    h.append_ok(id, V2, 3);
    assert!(h.invoked().is_empty(), "the last ack is not durable yet");
    h.settle_writes();
    assert_eq!(h.invoked(), [id], "exactly one invocation");
}

#[test]
fn failed_callbacks_retry_with_backoff_by_half() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    h.run_through(id, &[CC], 1);
    assert_eq!(h.invoked(), [id]);
    let mut now = 0;
    for (attempt, delay_us) in [(2, 10_000u64), (3, 15_000), (4, 22_500)] {
        h.b.handle_callback_result(h.now, id, Err(IoError::Failed), Jitter(0));
        let due = h.b.poll_timeout().unwrap();
        assert_eq!(due.as_micros() - now, delay_us);
        now = due.as_micros();
        h.now = due;
        h.b.handle_timeout(due);
        h.drain();
        let last = h.out.iter().rev().find_map(|o| match o {
            Output::InvokeCallback { attempt, .. } => Some(*attempt),
            _ => None,
        });
        assert_eq!(last, Some(attempt));
    }
}

#[test]
fn tombstone_is_persisted_before_keys_are_released_and_the_caller_answered() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    h.run_through(id, &[CC, V1], 1);
    h.b.handle_callback_result(h.now, id, Ok(()), Jitter(0));
    h.drain();
    assert!(h.done().is_empty(), "tombstone not durable yet");
    assert!(
        !h.b.lock_table().is_idle(),
        "keys held until the tombstone is durable"
    );
    h.settle_writes();
    assert_eq!(h.done(), [id]);
    assert!(h.b.lock_table().is_idle());
    assert_eq!(h.catalog.tasks[&id].state, TaskState::Tombstone);
    assert!(h.b.is_quiescent());
}

#[test]
fn acks_of_unknown_ids_are_ignored_unless_they_carry_a_replicate_header() {
    let mut h = H::new(cfg());
    h.b.set_role(Role::Secondary);
    h.b.handle_ack(
        h.now,
        Ack {
            id: BroadcastId(5),
            channel: CC,
            info: info(1, 1),
            replicate: None,
        },
    );
    assert_eq!(h.b.task_state(BroadcastId(5)), None);
    let message = Message::new(5, [CC, V1].into(), LockRequest::for_broadcast([db("a")]));
    h.b.handle_ack(
        h.now,
        Ack {
            id: BroadcastId(5),
            channel: V1,
            info: info(2, 2),
            replicate: Some(message.clone()),
        },
    );
    assert_eq!(h.b.task_state(BroadcastId(5)), Some(TaskState::Replicated));
    assert!(h.b.lock_table().is_idle(), "replicated tasks hold no keys");
    h.settle_writes();
    assert!(h.appends().is_empty(), "replicated tasks are not appended");
    h.b.handle_ack(
        h.now,
        Ack {
            id: BroadcastId(5),
            channel: CC,
            info: info(3, 3),
            replicate: Some(message),
        },
    );
    h.settle_writes();
    assert_eq!(h.invoked(), [BroadcastId(5)]);
}

#[test]
fn acks_of_tombstones_are_ignored() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    h.run_through(id, &[CC], 1);
    h.b.handle_callback_result(h.now, id, Ok(()), Jitter(0));
    h.settle_writes();
    let before = h.b.clone();
    h.b.handle_ack(
        h.now,
        Ack {
            id,
            channel: CC,
            info: info(9, 9),
            replicate: None,
        },
    );
    assert_eq!(h.b, before);
}

fn replicated_ack(
    id: u64,
    ch: ChannelId,
    tick: u64,
    keys: &[ResourceKey],
    targets: &[ChannelId],
) -> Ack {
    Ack {
        id: BroadcastId(id),
        channel: ch,
        info: info(tick, tick),
        replicate: Some(Message::new(
            id,
            targets.iter().copied().collect(),
            LockRequest::for_broadcast(keys.iter().cloned()),
        )),
    }
}

/// Two conflicting replicated tasks: the earlier (by control tick) waits
/// for a vchannel ack while the later one is complete.
fn overtake_setup(flaw: Option<BroadcastFlaw>) -> H {
    let mut c = cfg();
    c.flaw = flaw;
    let mut h = H::new(c);
    h.b.set_role(Role::Secondary);
    h.b.handle_ack(h.now, replicated_ack(1, CC, 10, &[db("a")], &[CC, V1]));
    h.b.handle_ack(h.now, replicated_ack(2, CC, 20, &[db("a")], &[CC]));
    h.b.handle_ack(h.now, replicated_ack(3, CC, 30, &[db("z")], &[CC]));
    h.settle_writes();
    h
}

#[test]
fn a_waiting_callback_reserves_its_keys_against_later_conflicting_tasks() {
    let mut h = overtake_setup(None);
    assert_eq!(
        h.invoked(),
        [BroadcastId(3)],
        "only the non-conflicting task runs"
    );
    h.b.handle_ack(h.now, replicated_ack(1, V1, 11, &[db("a")], &[CC, V1]));
    h.settle_writes();
    assert_eq!(h.invoked(), [BroadcastId(3), BroadcastId(1)]);
    h.b.handle_callback_result(h.now, BroadcastId(1), Ok(()), Jitter(0));
    h.drain();
    assert_eq!(
        h.invoked(),
        [BroadcastId(3), BroadcastId(1), BroadcastId(2)],
        "the later one runs once the earlier succeeded, never overlapping"
    );
}

#[test]
fn flaw_callback_overtake_lets_a_later_conflicting_task_run_first() {
    let h = overtake_setup(Some(BroadcastFlaw::CallbackOvertake));
    assert_eq!(h.invoked(), [BroadcastId(2), BroadcastId(3)]);
}

#[test]
fn conflicting_callbacks_never_overlap_even_when_both_are_ready() {
    let mut h = H::new(cfg());
    h.b.set_role(Role::Secondary);
    h.b.handle_ack(h.now, replicated_ack(1, CC, 10, &[db("a")], &[CC]));
    h.b.handle_ack(h.now, replicated_ack(2, CC, 20, &[db("a")], &[CC]));
    h.settle_writes();
    assert_eq!(h.invoked(), [BroadcastId(1)]);
    h.b.handle_callback_result(h.now, BroadcastId(1), Err(IoError::Failed), Jitter(0));
    h.settle_writes();
    assert_eq!(
        h.invoked(),
        [BroadcastId(1)],
        "a retrying callback still holds its place"
    );
}

#[test]
fn flaw_callback_before_all_acks_runs_on_the_control_ack() {
    let mut c = cfg();
    c.flaw = Some(BroadcastFlaw::CallbackBeforeAllAcks);
    let mut h = H::new(c);
    let id = h.started(1, vec![db("a")]);
    h.b.broadcast(h.now, id, body(1, &[CC, V1])).unwrap();
    h.settle_writes();
    h.append_ok(id, CC, 1);
    assert_eq!(h.invoked(), [id]);
}

#[test]
fn flaw_persist_after_append_appends_first() {
    let mut c = cfg();
    c.flaw = Some(BroadcastFlaw::PersistAfterAppend);
    let mut h = H::new(c);
    let id = h.started(1, vec![db("a")]);
    h.b.broadcast(h.now, id, body(1, &[CC])).unwrap();
    let out = h.take();
    let append = out.iter().position(|o| matches!(o, Output::Append { .. }));
    let write = out.iter().position(|o| matches!(o, Output::Write { .. }));
    assert!(append < write);
}

fn gc_cfg() -> Config {
    let mut c = cfg();
    c.gc = GcConfig {
        max_count: 2,
        max_lifetime: Duration::from_secs(10),
        check_interval: Duration::from_secs(1),
    };
    c
}

fn tombstones(h: &mut H, n: u64) -> Vec<BroadcastId> {
    (0..n)
        .map(|i| {
            let id = h.started(100 + i, vec![db(&format!("k{i}"))]);
            h.run_through(id, &[CC], 10 * (i + 1));
            h.b.handle_callback_result(h.now, id, Ok(()), Jitter(0));
            h.settle_writes();
            id
        })
        .collect()
}

#[test]
fn gc_deletes_oldest_tombstones_beyond_the_count_at_each_check() {
    let mut h = H::new(gc_cfg());
    let ids = tombstones(&mut h, 4);
    assert_eq!(h.b.tombstone_count(), 4);
    h.at(999);
    assert_eq!(h.b.tombstone_count(), 4, "not before the check interval");
    h.at(1000);
    h.settle_writes();
    assert_eq!(h.b.tombstone_count(), 2);
    assert!(h.b.is_deleted(ids[0]) && h.b.is_deleted(ids[1]));
    assert!(!h.catalog.tasks.contains_key(&ids[0]));
    assert!(h.catalog.tasks.contains_key(&ids[2]));
    assert!(h.catalog.graveyard.contains(ids[0]));
}

#[test]
fn gc_deletes_tombstones_older_than_the_lifetime() {
    let mut h = H::new(gc_cfg());
    tombstones(&mut h, 1);
    for s in 1..=10 {
        h.at(s * 1000);
        h.settle_writes();
    }
    assert_eq!(h.b.tombstone_count(), 1, "exactly 10 s old is not older");
    h.at(11_000);
    h.settle_writes();
    assert_eq!(h.b.tombstone_count(), 0);
}

#[test]
fn a_failed_delete_leaves_the_rest_for_the_next_check() {
    let mut h = H::new(gc_cfg());
    let ids = tombstones(&mut h, 4);
    h.at(1000);
    h.fail_writes();
    assert_eq!(h.b.tombstone_count(), 4);
    assert!(h.pending_writes.is_empty(), "no further delete this round");
    h.at(2000);
    h.settle_writes();
    assert_eq!(h.b.tombstone_count(), 2);
    assert!(h.b.is_deleted(ids[0]));
}

#[test]
fn a_replicated_ack_for_a_deleted_tombstone_does_not_resurrect_it() {
    let mut h = H::new(gc_cfg());
    h.b.set_role(Role::Secondary);
    for i in 1..=3 {
        h.b.handle_ack(h.now, replicated_ack(i, CC, i * 10, &[db("a")], &[CC]));
        h.settle_writes();
        h.b.handle_callback_result(h.now, BroadcastId(i), Ok(()), Jitter(0));
        h.settle_writes();
    }
    h.at(1000);
    h.settle_writes();
    assert!(h.b.is_deleted(BroadcastId(1)));
    h.b.handle_ack(h.now, replicated_ack(1, CC, 10, &[db("a")], &[CC]));
    assert_eq!(h.b.task_state(BroadcastId(1)), None);
    // Also after a crash: the graveyard is durable.
    let mut r = H::recover(gc_cfg(), Role::Secondary, h.catalog.clone());
    r.b.handle_ack(r.now, replicated_ack(1, CC, 10, &[db("a")], &[CC]));
    assert_eq!(r.b.task_state(BroadcastId(1)), None);
}

#[test]
fn ids_are_never_reused_across_a_crash() {
    let mut h = H::new(cfg());
    let a = h.started(1, vec![db("a")]);
    h.b.close(h.now, a).unwrap();
    let mut r = H::recover(cfg(), Role::Primary, h.catalog.clone());
    let b = r.started(2, vec![db("a")]);
    assert!(b > a, "{b} after {a}");
    assert!(r.catalog.id_limit > b.0);
}

fn record(
    id: u64,
    state: TaskState,
    keys: &[ResourceKey],
    targets: &[ChannelId],
    acked: &[(ChannelId, u64)],
) -> TaskRecord {
    let message = Message::new(
        id,
        targets.iter().copied().collect(),
        LockRequest::for_broadcast(keys.iter().cloned()),
    );
    let mut acks = AckSet::new();
    for (c, tick) in acked {
        acks.ack(&message.targets, *c, info(*tick, *tick));
    }
    TaskRecord {
        id: BroadcastId(id),
        state,
        message,
        acks,
        tombstoned_at: (state == TaskState::Tombstone).then_some(t(500)),
    }
}

/// One task in every state the catalog can hold.
fn every_state_catalog() -> CatalogState {
    let all = [CC, V1, V2];
    let mut c = CatalogState::new();
    for r in [
        record(1, TaskState::Pending, &[db("p1")], &all, &[]),
        record(2, TaskState::Pending, &[db("p2")], &all, &[(V1, 21)]),
        record(
            3,
            TaskState::Pending,
            &[db("p3")],
            &all,
            &[(CC, 31), (V1, 32)],
        ),
        record(
            4,
            TaskState::Pending,
            &[db("p4")],
            &all,
            &[(CC, 41), (V1, 42), (V2, 43)],
        ),
        record(5, TaskState::Replicated, &[db("r5")], &[CC, V1], &[]),
        record(
            6,
            TaskState::Replicated,
            &[db("r6")],
            &[CC, V1],
            &[(CC, 61), (V1, 62)],
        ),
        record(7, TaskState::Tombstone, &[db("t7")], &[CC], &[(CC, 71)]),
    ] {
        c.apply(&CatalogOp::PutTask(r));
    }
    c.apply(&CatalogOp::ReserveIds(8));
    c
}

#[test]
fn recovery_resumes_every_task_state_from_the_catalog_alone() {
    let mut h = H::recover(cfg(), Role::Primary, every_state_catalog());
    let out = h.take();
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::RecoveryConflict { .. }))
    );
    // Pending tasks re-take their keys; replicated ones and tombstones hold none.
    let held: Vec<String> =
        h.b.lock_table()
            .held()
            .map(|r| h.b.lock_table().request(r).unwrap().keys()[0].to_string())
            .collect();
    assert_eq!(
        held,
        ["DBName:p1@X", "DBName:p2@X", "DBName:p3@X", "DBName:p4@X"]
    );
    // Only channels not yet acked are appended again.
    h.out = out;
    let appends: BTreeSet<(u64, u32)> = h.appends().iter().map(|(id, c, _)| (id.0, c.0)).collect();
    let expected: BTreeSet<(u64, u32)> = [(1, 0), (1, 1), (1, 2), (2, 0), (2, 2), (3, 2)].into();
    assert_eq!(appends, expected);
    // Complete, durable acks: callbacks start in control-tick order; the
    // tombstone's callback is not run again.
    assert_eq!(h.invoked(), [BroadcastId(4), BroadcastId(6)]);
    assert_eq!(h.b.tombstone_count(), 1);
    assert_eq!(h.b.task_state(BroadcastId(7)), Some(TaskState::Tombstone));
    // Task 3 is queued (control acked) and runs once V2 is acked.
    h.append_ok(BroadcastId(3), V2, 33);
    h.settle_writes();
    assert_eq!(
        h.invoked(),
        [BroadcastId(4), BroadcastId(6), BroadcastId(3)]
    );
    // Task 5 waits for the replication stream.
    assert_eq!(h.b.task_state(BroadcastId(5)), Some(TaskState::Replicated));
}

#[test]
fn recovered_callbacks_of_conflicting_tasks_run_in_control_tick_order() {
    let mut c = CatalogState::new();
    // Replicated tasks (no keys held) that conflict, persisted out of order.
    c.apply(&CatalogOp::PutTask(record(
        2,
        TaskState::Replicated,
        &[db("a")],
        &[CC],
        &[(CC, 10)],
    )));
    c.apply(&CatalogOp::PutTask(record(
        1,
        TaskState::Replicated,
        &[db("a")],
        &[CC],
        &[(CC, 20)],
    )));
    let mut h = H::recover(cfg(), Role::Secondary, c);
    assert_eq!(
        h.invoked(),
        [BroadcastId(2)],
        "tick 10 first, though its id is larger"
    );
    h.b.handle_callback_result(h.now, BroadcastId(2), Ok(()), Jitter(0));
    h.drain();
    assert_eq!(h.invoked(), [BroadcastId(2), BroadcastId(1)]);
}

#[test]
fn recovery_reports_pending_tasks_whose_keys_conflict() {
    let mut c = CatalogState::new();
    c.apply(&CatalogOp::PutTask(record(
        1,
        TaskState::Pending,
        &[db("a")],
        &[CC],
        &[],
    )));
    c.apply(&CatalogOp::PutTask(record(
        2,
        TaskState::Pending,
        &[db("a")],
        &[CC],
        &[],
    )));
    let mut h = H::recover(cfg(), Role::Primary, c);
    let out = h.take();
    assert!(out.contains(&Output::RecoveryConflict { id: BroadcastId(2) }));
}

#[test]
fn flaw_recovery_reruns_tombstones() {
    let mut c = cfg();
    c.flaw = Some(BroadcastFlaw::RecoveryRerunsTombstones);
    let h = H::recover(c, Role::Primary, every_state_catalog());
    assert!(h.invoked().contains(&BroadcastId(7)));
}

#[test]
fn time_is_an_input_and_spurious_timeouts_do_nothing() {
    let mut h = H::new(cfg());
    let before = h.b.clone();
    h.b.handle_timeout(t(1));
    h.b.handle_timeout(Time::ZERO);
    assert_eq!(h.b, before);
}

#[test]
fn unknown_write_completions_are_ignored() {
    let mut h = H::new(cfg());
    let before = h.b.clone();
    h.b.handle_write_done(h.now, WriteId(999), Ok(()), Jitter(0));
    assert_eq!(h.b, before);
}

#[test]
fn every_transition_is_named() {
    assert_eq!(TRANSITIONS.len(), Tr::RecoverConflict as usize + 1);
}

#[test]
fn transitions_taken_are_recorded() {
    let mut h = H::new(cfg());
    let id = h.started(1, vec![db("a")]);
    h.run_through(id, &[CC], 1);
    h.b.handle_callback_result(h.now, id, Ok(()), Jitter(0));
    h.settle_writes();
    let cov = h.b.coverage();
    for t in [
        Tr::Started,
        Tr::NewPending,
        Tr::AppendStart,
        Tr::AppendFastAck,
        Tr::CallbackQueued,
        Tr::CallbackRunning,
        Tr::CallbackDone,
        Tr::PendingTombstone,
    ] {
        assert!(cov.has(t as usize), "{}", TRANSITIONS[t as usize]);
    }
    assert!(!cov.has(Tr::ReplicatedTombstone as usize));
}

#[test]
fn a_catalog_keeps_the_last_record_of_a_live_task_and_the_highest_reservation() {
    let all = [CC, V1, V2];
    let b_done = record(2, TaskState::Tombstone, &[db("b")], &all, &[(CC, 5)]);
    let mut c = CatalogState::new();
    for op in [
        CatalogOp::ReserveIds(64),
        CatalogOp::PutTask(record(1, TaskState::Pending, &[db("a")], &all, &[])),
        CatalogOp::PutTask(record(2, TaskState::Pending, &[db("b")], &all, &[(CC, 5)])),
        CatalogOp::PutTask(record(
            1,
            TaskState::Tombstone,
            &[db("a")],
            &all,
            &[(CC, 3)],
        )),
        CatalogOp::ReserveIds(32),
        CatalogOp::DeleteTask(BroadcastId(1)),
        CatalogOp::PutTask(b_done.clone()),
    ] {
        c.apply_owned(op);
    }
    assert_eq!(c.id_limit, 64);
    assert!(c.graveyard.contains(BroadcastId(1)));
    assert_eq!(c.tasks.len(), 1);
    assert_eq!(c.tasks.get(&BroadcastId(2)), Some(&b_done));
}
