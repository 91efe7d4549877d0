//! A global allocator that counts live heap bytes, so the memory buffered records cost is
//! measured exactly rather than through the resident size, which the allocator's reuse of
//! freed memory hides. Shared by `tests/memory.rs` and `benches/engine.rs`; each makes it its
//! global allocator with `#[global_allocator] static A: Counting = Counting;`.
#![allow(dead_code)]
// A global allocator is `unsafe` by nature: the one place in the crate that needs it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// The counting allocator (the system's, plus a counter).
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Counting is on only while memory is measured: a counter shared by every thread would
/// otherwise slow the throughput measurements down.
static ON: AtomicBool = AtomicBool::new(false);

/// Starts or stops counting.
pub fn count(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Live heap bytes counted so far (allocations minus frees while counting was on).
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
