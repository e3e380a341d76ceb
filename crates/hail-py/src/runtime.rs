//! The module's one tokio runtime (pyo3-async-runtimes' own, so awaitables and blocking calls
//! share it), and [`block_on`]: how a synchronous method waits without holding the GIL.

use std::future::Future;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::shutdown;

/// How often a blocking wait looks for Ctrl-C: 50 ms. Python runs signal handlers only on
/// its main thread between bytecodes, so a thread waiting in Rust must look for them itself
/// (`PyErr_CheckSignals`); this bounds how late a `KeyboardInterrupt` is raised.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// The runtime: built on first use by pyo3-async-runtimes (multi-threaded, a worker per
/// core, IO and time enabled); it lives as long as the process. Python code cannot change
/// its flavour (only Rust can, through `pyo3_async_runtimes::tokio::init`, and this crate
/// never does); nothing here relies on it (users' handlers run on threads of their own,
/// see `python_threads`).
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
        // The timer is made inside `block_on`: it needs the runtime's context. A daemon
        // thread still waiting here when the interpreter exits parks rather than attach
        // again (`shutdown`).
        let (step, entered) = py.detach(|| {
            let step =
                rt.block_on(async { tokio::time::timeout(SIGNAL_CHECK, fut.as_mut()).await });
            (step, shutdown::enter_or_park())
        });
        drop(entered);
        match step {
            Ok(out) => return Ok(out),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}
