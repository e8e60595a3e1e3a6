//! Recovery: the broadcaster rebuilt from its catalog alone.
//!
//! - `Pending` tasks re-take their keys (a conflict cannot happen unless
//!   something is broken: it is reported and the task waits for its keys),
//!   re-append only the channels not yet acked, and continue.
//! - Tasks whose control channel is acked are queued for their callback; the
//!   queue orders them by control-channel time tick.
//! - `Replicated` tasks hold no keys and wait for their acks.
//! - `Tombstone` tasks go to GC; their callbacks are **not** run again.
//! - Ids below the durable reservation are never handed out again, and ids
//!   in the graveyard never come back.

use super::{
    BroadcastFlaw, Broadcaster, CallbackProgress, CatalogState, ChannelProgress, Config, Role,
    Task, TaskState, Tr,
};
use crate::locks::OwnerId;
use crate::time::Time;

/// Owners of recovered tasks' lock requests live at the top of the owner
/// space, away from callers' tokens.
const RECOVERY_OWNER: u64 = 1 << 63;

impl Broadcaster {
    /// Rebuilds a broadcaster from its durable state, at time `now`.
    pub fn recover(cfg: Config, role: Role, now: Time, catalog: &CatalogState) -> Broadcaster {
        let mut b = Broadcaster::empty(cfg, role);
        b.id_limit = catalog.id_limit.max(1);
        b.next_id = b.id_limit;
        b.graveyard = catalog.graveyard.clone();
        let control = b.cfg.control;
        let rerun_tombstones = b.cfg.flaw == Some(BroadcastFlaw::RecoveryRerunsTombstones);
        let mut pending = Vec::new();
        for record in catalog.tasks.values() {
            let id = record.id;
            let waiting = match record.state {
                TaskState::Pending => ChannelProgress::Idle,
                _ => ChannelProgress::AwaitingAck,
            };
            let mut task = Task {
                record: record.clone(),
                durable: Some(record.state),
                durable_acks: record.acks.len(),
                writing: None,
                dirty: false,
                write_failures: 0,
                lock: None,
                channels: record
                    .acks
                    .missing(&record.message.targets)
                    .map(|c| (c, waiting))
                    .collect(),
                callback: CallbackProgress::NotQueued,
                caller: None,
            };
            b.hit(match record.state {
                TaskState::Pending => Tr::RecoverPending,
                TaskState::Replicated => Tr::RecoverReplicated,
                TaskState::Tombstone => Tr::RecoverTombstone,
            });
            match record.state {
                TaskState::Tombstone => {
                    task.channels.clear();
                    task.callback = CallbackProgress::Done;
                    let at = record.tombstoned_at.unwrap_or(now);
                    b.tombstones.insert((at, id));
                }
                TaskState::Pending => {
                    let owner = OwnerId(RECOVERY_OWNER | id.0);
                    let keys = record.message.keys.clone();
                    task.lock = Some(match b.locks.try_acquire(owner, keys.clone()) {
                        Ok(rid) => rid,
                        Err(_) => {
                            b.hit(Tr::RecoverConflict);
                            b.outputs.push_back(super::Output::RecoveryConflict { id });
                            b.locks.acquire(owner, keys)
                        }
                    });
                    pending.push(id);
                }
                TaskState::Replicated => {}
            }
            let queue_it = record.state != TaskState::Tombstone || rerun_tombstones;
            if queue_it && let Some(ack) = record.acks.get(control) {
                task.callback = CallbackProgress::Queued;
                b.queue.push(ack.time_tick, id, record.message.keys.clone());
            }
            b.tasks.insert(id, task);
        }
        // Recovered tasks that had to wait for keys are not `start`s.
        while b.locks.poll_event().is_some() {}
        for id in pending {
            b.append_idle(id);
        }
        b.arm_gc(now);
        b.schedule_callbacks();
        b
    }
}
