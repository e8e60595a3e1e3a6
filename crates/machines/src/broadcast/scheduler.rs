//! The ack-callback scheduler: conflicting tasks' callbacks run in
//! control-channel time-tick order and never overlap.
//!
//! A task enters the queue when its control channel is acked and leaves it
//! when its callback succeeds. Walking the queue in (tick, id) order, a
//! queued task starts when its acks are complete and durable and no earlier
//! entry conflicts with it. **simcast:** every earlier entry counts, running
//! or still waiting for acks: a waiting callback reserves its keys, so a
//! later conflicting task cannot overtake it. (The reference lets a later
//! task with currently free keys overtake; that is the `CallbackOvertake`
//! flaw.)

use super::{BroadcastFlaw, BroadcastId, Broadcaster, CallbackProgress, TimeTick, Tr};
use crate::locks::LockRequest;
use crate::scratch::Scratch;
use crate::vecmap::VecMap;

/// Tasks whose control channel is acked and whose callback has not
/// succeeded, in control-tick order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct CallbackQueue {
    entries: VecMap<(TimeTick, BroadcastId), LockRequest>,
    tick_of: VecMap<BroadcastId, TimeTick>,
    /// `schedule_callbacks`' buffers: the entries (by position) whose keys
    /// block later tasks, the tasks to start.
    blockers: Scratch<Vec<usize>>,
    start: Scratch<Vec<BroadcastId>>,
}

impl CallbackQueue {
    pub(super) fn push(&mut self, tick: TimeTick, id: BroadcastId, keys: LockRequest) {
        if self.tick_of.insert(id, tick).is_none() {
            self.entries.insert((tick, id), keys);
        }
    }

    pub(super) fn remove(&mut self, id: BroadcastId) {
        if let Some(tick) = self.tick_of.remove(&id) {
            self.entries.remove(&(tick, id));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Broadcaster {
    /// Starts every callback the ordering rule allows now.
    pub(super) fn schedule_callbacks(&mut self) {
        let overtake = self.cfg.flaw == Some(BroadcastFlaw::CallbackOvertake);
        let before_acks = self.cfg.flaw == Some(BroadcastFlaw::CallbackBeforeAllAcks);
        // The entries whose keys block later tasks, by position: no clone of
        // their keys.
        let mut blockers = self.queue.blockers.take();
        let mut start = self.queue.start.take();
        let mut held_back = false;
        let entries = self.queue.entries.as_slice();
        for (i, ((_, id), keys)) in entries.iter().enumerate() {
            let task = &self.tasks[id];
            if task.callback == CallbackProgress::Queued
                && (before_acks || task.acks_complete_and_durable())
            {
                if !blockers
                    .iter()
                    .any(|&b: &usize| entries[b].1.conflicts_with(keys))
                {
                    start.push(*id);
                    blockers.push(i);
                    continue;
                }
                held_back = true;
            }
            let in_progress = matches!(
                task.callback,
                CallbackProgress::Running { .. } | CallbackProgress::Backoff { .. }
            );
            if !overtake || in_progress {
                blockers.push(i);
            }
        }
        blockers.clear();
        self.queue.blockers.put(blockers);
        if held_back {
            self.hit(Tr::CallbackHeldBack);
        }
        for id in start.drain(..) {
            self.hit(Tr::CallbackRunning);
            self.invoke(id, 1);
        }
        self.queue.start.put(start);
        debug_assert!(self.queue.len() == self.queue.tick_of.len());
    }
}
