//! Interpreter exit without a crash.
//!
//! CPython 3.9-3.13 ends a thread that waits to attach while the interpreter finalizes with
//! `pthread_exit`, whose forced unwinding aborts the process when it meets Rust frames. So no
//! thread of ours may be waiting to attach (the delivery threads) or about to re-attach (a
//! caller blocked in a `_blocking` call, the GIL released) when finalization starts: each such
//! stretch holds a [`Guard`], and [`exiting`], called at exit, stops new ones and waits until
//! the last guard is gone.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pyo3::prelude::*;

static EXITING: AtomicBool = AtomicBool::new(false);
/// How many guards are held. An atomic, not a mutex: a child process after `fork` inherits it
/// as it was, and must be able to reset it (a mutex held by another thread at the fork would
/// stay locked in the child for good).
static HELD: AtomicUsize = AtomicUsize::new(0);
/// How often exit looks whether the last guard is gone.
const POLL: Duration = Duration::from_millis(5);

/// How long exit waits for the guards: a caller still blocked after that (a flush on an
/// endpoint that never answers, with no timeout) is left to CPython.
const MOST_WAIT: Duration = Duration::from_secs(5);

/// Held while a thread of ours may attach to the interpreter.
pub(crate) struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        // Saturating: a guard held in the parent at a fork is dropped there, not in the child
        // whose count was reset.
        let _ = HELD.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| h.checked_sub(1));
    }
}

fn take() -> Guard {
    HELD.fetch_add(1, Ordering::SeqCst);
    Guard(())
}

/// In a child process after `fork`: no thread of the parent exists here, so none holds a guard
/// (without this, exit waited the full [`MOST_WAIT`] for a delivery thread of the parent that
/// was attaching when the fork happened).
pub(crate) fn after_fork_in_child() {
    HELD.store(0, Ordering::SeqCst);
}

/// A guard for the delivery thread's attachment, or `None` once the interpreter is exiting
/// (the outcomes are then not delivered).
pub(crate) fn attaching() -> Option<Guard> {
    let guard = take();
    // Checked after taking the guard: `exiting` sets the flag before it counts the guards, so
    // either it sees this guard or this sees the flag.
    (!EXITING.load(Ordering::SeqCst)).then_some(guard)
}

/// Runs `f` with the GIL released, counted as a thread that will re-attach.
pub(crate) fn detach<T: Send, F: Send + FnOnce() -> T>(py: Python<'_>, f: F) -> T {
    let _guard = take();
    py.detach(f)
}

/// At exit, after the producers were closed: no delivery thread attaches from now on, and
/// this waits (the GIL released, at most [`MOST_WAIT`]) for the threads that still might.
pub(crate) fn exiting(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        // At most MOST_WAIT, counted in sleeps (the library keeps off the clock).
        let polls = MOST_WAIT.as_millis() / POLL.as_millis();
        for _ in 0..polls {
            if HELD.load(Ordering::SeqCst) == 0 {
                break;
            }
            std::thread::sleep(POLL);
        }
    });
}
