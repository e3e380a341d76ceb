//! The Python package `hail`: PyO3 bindings over the hail crates, built by maturin as one
//! abi3 wheel for CPython 3.9 and later. The logic stays in Rust; this crate converts.
//!
//! - `device`: `hail.Device` (asyncio) and the device state both fronts share.
//! - `connect`: `hail.Connect`, pythonConnect's synchronous front, callbacks on a thread.
//! - `channel`: `hail.Channel`, the multicast channel on its own (multisock's job).
//! - `link`: `hail.Server` and `hail.Client`, framed links with callbacks (Python Comms').
//! - `event_stream`: `hail.Events`, the device's event stream as an async iterator.
//! - `events`: the event classes, and the one conversion of `DeviceEvent`s.
//! - `handler`: how users' handlers (questions, methods, callbacks) are called, on the
//!   event loop they were registered on or on a handler thread.
//! - `errors`: the exception classes under `hail.HailError`, and the conversions of the
//!   Rust errors.
//! - `runtime`: the module's tokio runtime and the blocking wait (GIL released, Ctrl-C).
//! - `python_threads`: the threads that call users' plain handlers (each keeps its Python
//!   thread state).
//! - `shutdown`: the interpreter's exit, after which hail's threads never attach again
//!   (registered with `atexit` on import).
//! - `bridge`: Rust futures as asyncio awaitables, completed on the loop's thread (no
//!   runtime thread waits for the GIL).
//!
//! `python/hail/` holds the Python side: `__init__.py` (re-exports), `_invoke.py` (calls
//! the user's handlers), `_aio.py` (each loop's waker, the event iterator), the type stubs
//! and `py.typed`.

mod bridge;
mod channel;
mod connect;
mod device;
mod errors;
mod event_stream;
mod events;
mod handler;
mod link;
mod python_threads;
mod returned;
mod runtime;
mod shutdown;

use pyo3::prelude::*;

/// The compiled part of the `hail` package (import `hail`, not `hail._hail`).
#[pymodule]
fn _hail(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<device::PyDevice>()?;
    m.add_class::<event_stream::Events>()?;
    m.add_class::<bridge::LoopWaker>()?;
    m.add_class::<connect::PyConnect>()?;
    m.add_class::<channel::PyChannel>()?;
    m.add_class::<link::PyServer>()?;
    m.add_class::<link::PyClient>()?;
    m.add_class::<events::Peer>()?;
    m.add_class::<events::Message>()?;
    m.add_class::<events::PeerJoined>()?;
    m.add_class::<events::PeerLeft>()?;
    m.add_class::<events::PeersChanged>()?;
    m.add_class::<events::DuplicateName>()?;
    m.add_class::<events::ErrorEvent>()?;
    for (class, kind) in errors::classes(py) {
        class.setattr("kind", kind)?;
        m.add(class.name()?, class)?;
    }
    m.add("DEST_ALL", connect::DEST_ALL)?;
    // Before the interpreter finalizes, hail's threads stop calling into it (`shutdown`).
    py.import("atexit")?
        .call_method1("register", (wrap_pyfunction!(shutdown::at_exit, m)?,))?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
