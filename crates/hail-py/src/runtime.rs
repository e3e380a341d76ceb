//! The module's one tokio runtime (pyo3-async-runtimes' own, so awaitables and blocking calls
//! share it), [`block_on`]: how a synchronous method waits without holding the GIL, and
//! [`run_blocking`]: how async code on the runtime calls into Python (a user's plain
//! handler) without stalling the runtime.

use std::future::Future;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::{Handle, RuntimeFlavor};

/// How often a blocking wait looks for Ctrl-C: 50 ms. Python runs signal handlers only on
/// its main thread between bytecodes, so a thread waiting in Rust must look for them itself
/// (`PyErr_CheckSignals`); this bounds how late a `KeyboardInterrupt` is raised.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// The runtime: built on first use by pyo3-async-runtimes (multi-threaded, a worker per
/// core, IO and time enabled); it lives as long as the process. Python code cannot change
/// its flavour (only Rust can, through `pyo3_async_runtimes::tokio::init`, and this crate
/// never does), but [`run_blocking`] does not rely on that.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Runs `fut` to its end on the runtime from a Python thread. The GIL is released while it
/// waits, and signals are checked every [`SIGNAL_CHECK`]: Ctrl-C raises `KeyboardInterrupt`
/// here and drops the future (every hail future is cancel-safe: a message is queued whole
/// or not at all).
pub(crate) fn block_on<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        // A blocking call from a thread of the runtime itself would stall it (tokio panics).
        return Err(PyRuntimeError::new_err(
            "a blocking hail call cannot run on hail's own runtime threads; use the async API",
        ));
    }
    let rt = runtime();
    let mut fut = std::pin::pin!(fut);
    loop {
        // The timer is made inside `block_on`: it needs the runtime's context.
        let step = py.detach(|| {
            rt.block_on(async { tokio::time::timeout(SIGNAL_CHECK, fut.as_mut()).await })
        });
        match step {
            Ok(out) => return Ok(out),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// Runs `f`, a call that may block (a user's plain Python handler: it takes the GIL and may
/// take its time), from async code, without holding up the other tasks of the runtime it
/// is polled on, whatever that runtime's flavour:
///
/// - on a multi-threaded runtime, right here, the runtime told that this thread blocks
///   (`block_in_place`: its other tasks move to another worker). A quick handler then
///   costs no trip to another thread (a `spawn_blocking` per call gave an `ask` p50 of
///   362 us against 259 us in two quick runs of `bench/bench.py`);
/// - on a current-thread runtime, where `block_in_place` panics, on a blocking thread of
///   the module's runtime, awaited;
/// - outside any runtime, right here: there is nothing to hold up.
pub(crate) async fn run_blocking<R, F>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        Ok(_) => match runtime().spawn_blocking(f).await {
            Ok(r) => r,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // The module's runtime lives as long as the process: its blocking tasks are
                // never cancelled.
                Err(e) => unreachable!("a blocking task of hail's runtime was cancelled: {e}"),
            },
        },
        Err(_) => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::run_blocking;

    /// A plain handler called from a current-thread runtime, as a `#[tokio::test]` or a
    /// program's own `#[tokio::main(flavor = "current_thread")]` polls it:
    /// `block_in_place` there panics ("can call blocking only when running on the
    /// multi-threaded runtime"), as `Handler::invoke` did before `run_blocking`.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocking_call_from_a_current_thread_runtime_runs_off_it() {
        let here = std::thread::current().id();
        let (value, there) = run_blocking(|| (42, std::thread::current().id())).await;
        assert_eq!(value, 42);
        assert_ne!(
            there, here,
            "it ran on a blocking thread of the module's runtime"
        );
    }

    /// On a multi-threaded runtime's worker, the call runs right there (no trip).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_call_from_a_multi_thread_worker_runs_in_place() {
        let here = std::thread::current().id();
        let there = run_blocking(|| std::thread::current().id()).await;
        assert_eq!(there, here);
    }

    /// Outside any runtime (a future polled by hand), right there too.
    #[test]
    fn a_blocking_call_outside_a_runtime_runs_in_place() {
        let here = std::thread::current().id();
        let fut = std::pin::pin!(run_blocking(|| std::thread::current().id()));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(fut, &mut cx) {
            std::task::Poll::Ready(there) => assert_eq!(there, here),
            std::task::Poll::Pending => panic!("it waited for nothing"),
        }
    }

    /// A panic in the call reaches the caller (the handler's panic is the RPC layer's to
    /// report), from the blocking thread too.
    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_off_the_current_thread_runtime_reaches_the_caller() {
        let caught = tokio::spawn(run_blocking(|| panic!("handler bug"))).await;
        let panic = caught.expect_err("the panic came back").into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"handler bug"));
    }
}
