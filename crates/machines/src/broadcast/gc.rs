//! Tombstone garbage collection: every `check_interval`, delete tombstones
//! oldest first while there are more than `max_count` or they are older than
//! `max_lifetime`. Deletes go one at a time; a failed delete ends the round
//! and leaves the rest for the next check.

use super::{BroadcastId, Broadcaster, CatalogOp, IoError, Timer, Tr, WriteFor};
use crate::time::Time;

impl Broadcaster {
    pub(super) fn arm_gc(&mut self, now: Time) {
        let at = now + self.cfg.gc.check_interval;
        self.timers.insert((at, Timer::TombstoneGc));
    }

    pub(super) fn gc_check(&mut self, now: Time) {
        self.arm_gc(now);
        if self.deleting.is_some() || !self.gc_round.is_empty() {
            return;
        }
        let gc = self.cfg.gc;
        let mut count = self.tombstones.len();
        for &(at, id) in &self.tombstones {
            if count > gc.max_count || now - at > gc.max_lifetime {
                self.gc_round.push_back(id);
                count -= 1;
            } else {
                // Oldest first: everything after is younger.
                break;
            }
        }
        self.delete_next();
    }

    fn delete_next(&mut self) {
        if let Some(id) = self.gc_round.pop_front() {
            let write = self.write(WriteFor::Delete { id }, CatalogOp::DeleteTask(id));
            self.deleting = Some(write);
        }
    }

    pub(super) fn on_deleted(&mut self, _now: Time, id: BroadcastId, result: Result<(), IoError>) {
        self.deleting = None;
        match result {
            Ok(()) => {
                if let Some(task) = self.tasks.remove(&id) {
                    let at = task.record.tombstoned_at.unwrap_or(Time::ZERO);
                    self.tombstones.remove(&(at, id));
                }
                self.graveyard.insert(id);
                self.hit(Tr::TombstoneDeleted);
                self.delete_next();
            }
            Err(_) => {
                self.hit(Tr::GcDeleteFailed);
                self.gc_round.clear();
            }
        }
    }

    /// Number of tombstones waiting for GC.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Whether `id` was deleted by GC (durably).
    pub fn is_deleted(&self, id: BroadcastId) -> bool {
        self.graveyard.contains(id)
    }
}
