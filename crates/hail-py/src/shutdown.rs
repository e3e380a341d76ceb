//! The interpreter's exit: once it has begun, hail's own threads never attach to Python
//! again.
//!
//! hail's threads (the handler threads of `python_threads`, `hail.Connect`'s callback
//! thread, the runtime's) call into Python while the program runs. A thread that takes the
//! GIL while the interpreter finalizes is ended by CPython on the spot (3.11, 3.12: its
//! stack unwound by `pthread_exit`, through Rust frames whose drops call Python:
//! `Fatal Python error: PyThreadState_Get` or `PyGILState_Release`, and an abort); one that
//! attaches after finalization panics in PyO3, and its unwinding releases a thread state
//! that is gone. Both were seen: a plain handler still running at exit, and an open
//! `Connect` whose callback thread woke when the device was dropped with the module.
//!
//! So every attach of those threads goes through [`enter`], and `hail` registers
//! [`at_exit`] with `atexit` when it is imported. `atexit` runs before finalization, with
//! the interpreter whole; [`at_exit`] closes the gate and waits (GIL released, Ctrl-C
//! ends the wait) for the calls into Python in flight, as `concurrent.futures` waits for
//! its workers' calls and `threading` for its non-daemon threads. From then on a thread
//! that would attach (a question arriving, an idle handler thread ending, a blocking call
//! of a daemon thread returning) parks for good instead: it holds no GIL, and the process
//! exits around it. Only the thread that closed the gate (the one finalizing) goes on.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Duration;

use pyo3::prelude::*;

/// The gate's state.
struct Gate {
    /// Set by [`at_exit`]: the thread that closed the gate, the one that finalizes.
    closed_by: Option<ThreadId>,
    /// Threads between [`enter`] and the end of their [`Entered`].
    inside: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    closed_by: None,
    inside: 0,
});

/// Signalled when `inside` drops to 0.
static LEFT: Condvar = Condvar::new();

thread_local! {
    /// How many [`Entered`] this thread holds: a nested [`enter`] (a handler's blocking
    /// call inside a handler call) always passes, or the exit would wait for itself.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

fn gate() -> MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A thread's leave to attach to Python, until dropped ([`enter`]). Dropped on the thread
/// that took it.
#[derive(Debug)]
pub(crate) struct Entered {
    /// Counted in `inside` (the outermost of this thread's, on any thread but the closer).
    counted: bool,
}

impl Drop for Entered {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
        if self.counted {
            let mut g = gate();
            g.inside -= 1;
            if g.inside == 0 {
                LEFT.notify_all();
            }
        }
    }
}

/// Leave for this thread to attach to Python, and to stay attached or call into Python
/// until the [`Entered`] is dropped; `None` once the interpreter's exit has begun (on any
/// thread but the one exiting, and but one already inside).
pub(crate) fn enter() -> Option<Entered> {
    let me = std::thread::current().id();
    let nested = DEPTH.with(Cell::get) > 0;
    let counted = {
        let mut g = gate();
        match g.closed_by {
            Some(closer) if closer == me => false,
            Some(_) if !nested => return None,
            _ if nested => false,
            _ => {
                g.inside += 1;
                true
            }
        }
    };
    DEPTH.with(|d| d.set(d.get() + 1));
    Some(Entered { counted })
}

/// [`enter`], or, once the exit has begun, never return: the thread parks for good
/// (it holds no GIL; the process exits around it). For threads with nothing to do but
/// call into Python.
pub(crate) fn enter_or_park() -> Entered {
    match enter() {
        Some(e) => e,
        None => loop {
            std::thread::park();
        },
    }
}

/// `Python::attach(f)` if the interpreter is not exiting (see [`enter`]); `None` if it
/// is. For the runtime's threads, which must not park.
pub(crate) fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    let _entered = enter()?;
    Some(Python::attach(f))
}

/// Runs `body` on a thread of hail's own with a Python thread state kept for the thread's
/// life: attached once, detached while `body` runs (which calls [`enter_or_park`] around
/// each call into Python), attached again to end. Not attached at all once the exit has
/// begun; `body` then does not run.
pub(crate) fn with_thread_state(body: impl FnOnce() + Send) {
    let Some(start) = enter() else { return };
    let end = Python::attach(|py| {
        py.detach(move || {
            // Attached and detached again: nothing of Python runs on this thread until
            // `body` enters.
            drop(start);
            body();
            // Held while `detach` attaches again and `attach` releases the thread state.
            enter_or_park()
        })
    });
    drop(end);
}

/// How often the wait in [`at_exit`] looks for Ctrl-C: 50 ms (as `runtime::block_on`).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Called by `atexit` (registered when `hail` is imported): closes the gate, then waits
/// for the calls into Python in flight on hail's threads to end (Ctrl-C ends the wait:
/// `KeyboardInterrupt`, and the exit goes on).
#[pyfunction]
pub(crate) fn at_exit(py: Python<'_>) -> PyResult<()> {
    gate().closed_by = Some(std::thread::current().id());
    loop {
        let done = py.detach(|| {
            let g = gate();
            let (g, _) = LEFT
                .wait_timeout_while(g, SIGNAL_CHECK, |g| g.inside > 0)
                .unwrap_or_else(|p| p.into_inner());
            g.inside == 0
        });
        if done {
            return Ok(());
        }
        py.check_signals()?;
    }
}

/// Whether the interpreter's exit has begun (a thread of hail's that would attach parks).
pub(crate) fn exiting() -> bool {
    gate().closed_by.is_some()
}
