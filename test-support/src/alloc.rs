//! An allocator that counts allocations per thread, for tests that assert a path allocates
//! nothing. The test binary installs it:
//!
//! ```
//! use test_support::alloc::{allocations_in, Counting};
//!
//! #[global_allocator]
//! static GLOBAL: Counting = Counting;
//!
//! let v = vec![1u8; 4];
//! assert_eq!(allocations_in(|| { std::hint::black_box(&v); }), 0);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting each allocation and reallocation on the calling thread.
pub struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract, passed on
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract, passed on
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// How many times `f` allocated on this thread (with [`Counting`] installed).
pub fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

/// Allocations counted on this thread so far.
pub fn allocations() -> usize {
    ALLOCS.with(Cell::get)
}
