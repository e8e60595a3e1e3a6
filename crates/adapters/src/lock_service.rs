//! A blocking lock-table service: the machines' [`LockTable`] shared by
//! many threads, each of which blocks until its request is granted.
//!
//! The table decides *who* gets the keys (all-or-nothing, fair: FIFO among
//! conflicting requests); this service only adds waiting. One mutex guards
//! the table and the set of grants not yet collected; one condition variable
//! announces grants. A waiter re-checks its own grant under the mutex after
//! every wake-up, and every change that can grant a request (a release, a
//! cancel) notifies *all* waiters while still holding the mutex, after the
//! table has recorded the grant. That order is what makes a wake-up
//! impossible to lose; the loom models in `tests/loom.rs` check it, and check
//! that the deliberately broken [`LockServiceFlaw`]s are caught.

use std::collections::BTreeSet;

use simcast_machines::locks::{LockError, LockEvent, LockRequest, LockTable, OwnerId, RequestId};

use crate::sync::{Arc, Condvar, Mutex, MutexGuard, lock};

/// Deliberately broken variants, to show that the loom models catch them.
/// Never enable one outside a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockServiceFlaw {
    /// A release notifies the waiters *before* it takes the mutex and
    /// records the grant: a waiter that wakes and checks in between goes back
    /// to sleep, and the grant's own wake-up never comes (a lost wake-up).
    NotifyBeforeGrant,
    /// A release wakes one waiter instead of all: it may wake a thread whose
    /// request is still blocked while the granted one sleeps on.
    NotifyOne,
}

struct State {
    table: LockTable,
    /// Granted requests whose waiter has not collected the grant yet.
    granted: BTreeSet<RequestId>,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    flaw: Option<LockServiceFlaw>,
}

/// The service; clone it into every thread that takes locks.
#[derive(Clone)]
pub struct LockService {
    inner: Arc<Inner>,
}

impl Default for LockService {
    fn default() -> Self {
        LockService::new()
    }
}

impl LockService {
    /// A correct service over an empty table.
    pub fn new() -> LockService {
        LockService::with_flaw(None)
    }

    /// A service with a deliberate flaw (`None` = correct).
    pub fn with_flaw(flaw: Option<LockServiceFlaw>) -> LockService {
        LockService {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    table: LockTable::new(),
                    granted: BTreeSet::new(),
                }),
                changed: Condvar::new(),
                flaw,
            }),
        }
    }

    /// Takes every key of `request` for `owner`, blocking until they are all
    /// held. The keys are released when the guard drops.
    pub fn acquire(&self, owner: OwnerId, request: LockRequest) -> LockGuard {
        let mut s = lock(&self.inner.state);
        let id = s.table.acquire(owner, request);
        collect_grants(&mut s);
        while !s.granted.remove(&id) {
            s = self.wait(s);
        }
        LockGuard {
            service: self.clone(),
            id: Some(id),
        }
    }

    /// Takes every key of `request` now, or none.
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] naming a holder or an earlier waiter in the
    /// way (the request never overtakes a waiter).
    pub fn try_acquire(
        &self,
        owner: OwnerId,
        request: LockRequest,
    ) -> Result<LockGuard, LockError> {
        let mut s = lock(&self.inner.state);
        let id = s.table.try_acquire(owner, request)?;
        collect_grants(&mut s);
        Ok(LockGuard {
            service: self.clone(),
            id: Some(id),
        })
    }

    /// Number of requests holding keys.
    pub fn held_len(&self) -> usize {
        lock(&self.inner.state).table.held_len()
    }

    /// Number of requests waiting for keys.
    pub fn waiting_len(&self) -> usize {
        lock(&self.inner.state).table.waiting_len()
    }

    /// The keys of every request holding keys now (to check exclusion).
    pub fn held(&self) -> Vec<LockRequest> {
        let s = lock(&self.inner.state);
        s.table
            .held()
            .filter_map(|id| s.table.request(id).cloned())
            .collect()
    }

    fn wait<'a>(&'a self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        match self.inner.changed.wait(guard) {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn release(&self, id: RequestId) {
        let flaw = self.inner.flaw;
        if flaw == Some(LockServiceFlaw::NotifyBeforeGrant) {
            self.inner.changed.notify_all();
        }
        let mut s = lock(&self.inner.state);
        let released = s.table.release(id);
        debug_assert!(released.is_ok(), "a guard releases a held request once");
        let granted = collect_grants(&mut s);
        match flaw {
            None if granted => self.inner.changed.notify_all(),
            Some(LockServiceFlaw::NotifyOne) if granted => self.inner.changed.notify_one(),
            _ => {}
        }
        drop(s);
    }
}

/// Moves the table's grant events into the grant set; whether there were any.
fn collect_grants(s: &mut State) -> bool {
    let mut any = false;
    while let Some(LockEvent::Granted { request, .. }) = s.table.poll_event() {
        s.granted.insert(request);
        any = true;
    }
    any
}

/// Holds a request's keys; dropping it releases them (and wakes whoever
/// that grants).
pub struct LockGuard {
    service: LockService,
    id: Option<RequestId>,
}

impl LockGuard {
    /// The table's id of the held request.
    pub fn request(&self) -> RequestId {
        self.id.expect("held until dropped")
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.service.release(id);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use simcast_machines::locks::ResourceKey;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn x(key: &str) -> LockRequest {
        LockRequest::new([ResourceKey::collection("db", key, false)]).unwrap()
    }

    #[test]
    fn conflicting_threads_never_hold_together_and_all_finish() {
        let service = LockService::new();
        let inside = std::sync::Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let service = service.clone();
                let inside = inside.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _g = service.acquire(OwnerId(t), x("c"));
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "exclusion");
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(service.held_len(), 0);
        assert_eq!(service.waiting_len(), 0);
    }

    #[test]
    fn try_acquire_refuses_while_held_and_succeeds_after_release() {
        let service = LockService::new();
        let g = service.acquire(OwnerId(1), x("c"));
        assert!(matches!(
            service.try_acquire(OwnerId(2), x("c")),
            Err(LockError::WouldBlock(_))
        ));
        let other = service
            .try_acquire(OwnerId(2), x("d"))
            .expect("no conflict");
        drop(g);
        drop(other);
        assert!(service.try_acquire(OwnerId(2), x("c")).is_ok());
    }
}
