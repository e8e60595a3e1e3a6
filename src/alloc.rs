//! The process's global allocator: the system allocator, counting
//! allocations per thread (for `bench`'s allocations per event).
//!
//! The count lives in a thread-local `Cell` (constant-initialized, no
//! destructor, so reading it never allocates or registers anything): no
//! shared atomic for the threads of a parallel sweep to fight over. A
//! thread reads its own count with [`allocations`].
//!
//! This module is the only `unsafe` code of the crate: implementing
//! [`GlobalAlloc`] requires it. Every method forwards to [`System`]
//! unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
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

/// [`System`], counting.
struct Counting;

// SAFETY: every method forwards its arguments to `System`, which upholds
// `GlobalAlloc`'s contract; counting touches only a thread-local `Cell`
// that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
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
