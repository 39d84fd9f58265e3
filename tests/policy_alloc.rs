//! `Policy::evaluate` promises no allocation for a plain path that no rule
//! matches. This binary has its own global allocator, which counts the
//! allocations made on the current thread while counting is on, to hold it to
//! that promise.
//!
//! To see where an unexpected allocation comes from, run
//! `ARBITER_ALLOC_BACKTRACE=1 cargo test --test policy_alloc -- --nocapture`:
//! every counted allocation then prints a backtrace.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use arbiter::policy::{Action, Policy};

struct Counting;

thread_local! {
    /// Whether allocations on this thread are being counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// How many were counted.
    static COUNT: Cell<usize> = const { Cell::new(0) };
    /// Print a backtrace for each counted allocation.
    static TRACE: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    // `try_with`: an allocation during thread teardown is simply not counted.
    let Ok(true) = COUNTING.try_with(Cell::get) else {
        return;
    };
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    if TRACE.try_with(Cell::get).unwrap_or(false) {
        // Capturing and printing allocate: stop counting meanwhile.
        COUNTING.set(false);
        eprintln!(
            "allocation while counting:\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        COUNTING.set(true);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting only touches
// const-initialized thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How many allocations (including reallocations) `f` makes on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    TRACE.set(std::env::var_os("ARBITER_ALLOC_BACKTRACE").is_some());
    COUNT.set(0);
    COUNTING.set(true);
    f();
    COUNTING.set(false);
    COUNT.get()
}

#[test]
fn the_counter_counts() {
    assert_eq!(allocations_in(|| {}), 0);
    assert_eq!(
        allocations_in(|| drop(black_box(Vec::<u8>::with_capacity(1)))),
        1
    );
    assert_eq!(
        allocations_in(|| {
            let mut v = black_box(Vec::<u64>::with_capacity(1));
            v.extend([1, 2, 3]);
            black_box(v);
        }),
        2,
        "an allocation and a reallocation"
    );
    assert_eq!(allocations_in(|| drop(black_box(String::new()))), 0);
}

#[test]
fn a_plain_read_that_is_allowed_allocates_nothing() {
    let policy = Policy::built_in();
    let action = Action::ReadFile {
        path: "src/main.rs",
    };
    // Warm up: the matchers' per-thread caches are made on first use.
    let first = policy.evaluate(&action);
    assert!(first.is_allowed(), "{first:?}");
    assert!(first.matched.is_empty(), "{first:?}");

    // Control: the counter sees allocations in this very thread and setup, so
    // a zero below is not the counter being off.
    let control = allocations_in(|| {
        for _ in 0..1_000 {
            drop(black_box(Vec::<u8>::with_capacity(1)));
        }
    });
    assert_eq!(control, 1_000, "the allocation counter does not count");

    let mut all_allowed = true;
    let count = allocations_in(|| {
        for _ in 0..1_000 {
            let decision = policy.evaluate(black_box(&action));
            all_allowed &= decision.is_allowed();
            black_box(decision);
        }
    });
    assert!(all_allowed, "src/main.rs was not allowed");
    assert_eq!(
        count, 0,
        "{count} allocations in 1,000 allowed reads of src/main.rs \
         (ARBITER_ALLOC_BACKTRACE=1 shows where)"
    );
}
