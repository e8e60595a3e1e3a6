//! The process's global allocator: mimalloc, counting allocations per
//! thread (for `bench`'s allocations per event). mimalloc rather than the
//! system's: a broadcast world allocates about 0.7 times per event (the
//! keys and targets of each broadcast, copy-on-write ack sets), and glibc's
//! malloc and free cost a sweep of it about 7% more.
//!
//! The count lives in a thread-local `Cell` (constant-initialized, no
//! destructor, so reading it never allocates or registers anything): no
//! shared atomic for the threads of a parallel sweep to fight over. A
//! thread reads its own count with [`allocations`].
//!
//! This module is the only `unsafe` code of the crate: implementing
//! [`GlobalAlloc`] requires it. Every method forwards to [`MiMalloc`]
//! unchanged.
#![allow(unsafe_code)]

use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread being torn down may still allocate.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

/// Allocations (including reallocations) made by the calling thread since
/// it started.
pub fn allocations() -> u64 {
    ALLOCATIONS.try_with(Cell::get).unwrap_or(0)
}

/// [`MiMalloc`], counting.
struct Counting;

// SAFETY: every method forwards its arguments to `MiMalloc`, which upholds
// `GlobalAlloc`'s contract; counting touches only a thread-local `Cell`
// that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_on_this_thread_are_counted_and_other_threads_are_not() {
        let before = allocations();
        let v: Vec<Box<u64>> = (0..10).map(Box::new).collect();
        let mine = allocations() - before;
        assert!(mine >= 10, "{mine} allocations counted for 10 boxes");
        let before = allocations();
        std::thread::spawn(|| (0..100).map(Box::new).collect::<Vec<_>>())
            .join()
            .expect("thread");
        // Spawning and joining allocate a little here; the other thread's
        // hundred boxes are not ours.
        assert!(allocations() - before < 50);
        drop(v);
    }
}
