//! How users' Python handlers are called from Rust: [`Handler`], a callable with the event
//! loop it was registered on, and [`Handler::invoke`], the one way a question handler, an
//! RPC method or a link's callback is called (on that loop, or on a handler thread).

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use pyo3_async_runtimes::TaskLocals;

use crate::bridge::{CallOnce, LoopQueue};
use crate::python_threads;

/// A Python callable and the event loop to run its coroutines on.
#[derive(Clone)]
pub(crate) struct Handler {
    f: Arc<Py<PyAny>>,
    /// The loop running when the handler was registered (its task locals, for the
    /// registration's context) and its queue (`bridge`: without the GIL on a runtime
    /// thread where the loop can watch a socket); `None`: call it on a handler thread
    /// (`python_threads`).
    on_loop: Option<(TaskLocals, LoopQueue)>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("on_loop", &self.on_loop.is_some())
            .finish_non_exhaustive()
    }
}

impl Handler {
    pub(crate) fn new(py: Python<'_>, f: Py<PyAny>) -> PyResult<Self> {
        if !f.bind(py).is_callable() {
            return Err(PyTypeError::new_err("the handler must be callable"));
        }
        let on_loop = match LoopQueue::running(py) {
            Some(queue) => Some((pyo3_async_runtimes::tokio::get_current_locals(py)?, queue)),
            None => None,
        };
        Ok(Self {
            f: Arc::new(f),
            on_loop,
        })
    }

    /// Calls it through `hail._invoke.<helper>` with the arguments `args` makes, and
    /// returns what `out` makes of its result, or its exception as text (or `args`' error,
    /// without calling it): `start*` on the loop it was registered on, handed over through
    /// that loop's [`LoopQueue`], or `call*` on a handler thread (see [`python_threads`]).
    /// Neither takes the GIL on a runtime thread (but for a loop that cannot watch a
    /// socket); each call is one trip into Python.
    pub(crate) async fn invoke<T: Send + 'static>(
        &self,
        helper: Helper,
        args: impl FnOnce(Python<'_>) -> Result<Vec<Py<PyAny>>, String> + Send + 'static,
        out: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let f = self.f.clone();
        // `(helper, f, *args)`: what to call, with what.
        let call_args = move |py: Python<'_>, via: Via| {
            let args = args(py)?;
            let mut all: Vec<Py<PyAny>> = Vec::with_capacity(args.len() + 2);
            all.push(
                helper
                    .get(py, via)
                    .map_err(|e| describe(&e))?
                    .clone()
                    .unbind(),
            );
            all.push(f.clone_ref(py));
            all.extend(args);
            PyTuple::new(py, all)
                .map(Bound::unbind)
                .map_err(|e| describe(&e))
        };
        match &self.on_loop {
            Some((locals, on_loop)) => {
                // A loop that has not drained its queue for a second may be closed (a
                // handler outlives the `asyncio.run` it was registered in): then its calls
                // would wait for ever, and pile up with each question. Asked of the loop
                // (with the GIL, on a handler thread) only then.
                if on_loop.stuck() {
                    let locals = locals.clone();
                    let closed = python_threads::call(move || {
                        Python::attach(|py| {
                            let is_closed = locals.event_loop(py).call_method0("is_closed");
                            is_closed.and_then(|c| c.is_truthy()).unwrap_or(true)
                        })
                    })
                    .await;
                    if closed {
                        on_loop.clear();
                        return Err("RuntimeError: the event loop the handler was registered \
                                    on is closed"
                            .into());
                    }
                }
                // Handed to the loop's thread without the GIL here: called there (in the
                // registration's context, as a task of it would be), its result converted
                // there; a coroutine function's coroutine is run as a task, its result
                // converted when it ends.
                let (tx, rx) = tokio::sync::oneshot::channel();
                // Taken by whichever answers: the call, the task's end, or a failure.
                let slot = Arc::new(Mutex::new(Some(tx)));
                let answer = move |r: Result<T, String>| {
                    let tx = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(tx) = tx {
                        let _ = tx.send(r);
                    }
                };
                let locals = locals.clone();
                on_loop.run(move |py| {
                    let on_end = answer.clone();
                    let r = (|| {
                        let context = locals.context(py);
                        let all = call_args(py, Via::LoopStart)?.into_bound(py);
                        let started = context.call_method1("run", all).map_err(|e| describe(&e))?;
                        let (pending, value): (bool, Bound<'_, PyAny>) =
                            started.extract().map_err(|e| describe(&e))?;
                        if !pending {
                            return out(py, &value).map(Some);
                        }
                        let ensure = py
                            .import("asyncio")
                            .and_then(|a| a.getattr("ensure_future"))
                            .and_then(|ensure| context.call_method1("run", (ensure, value)))
                            .map_err(|e| describe(&e))?;
                        let done = CallOnce::new(move |py, task| {
                            on_end(
                                task.call_method0("result")
                                    .map_err(|e| describe(&e))
                                    .and_then(|v| out(py, &v)),
                            );
                        });
                        ensure
                            .call_method1("add_done_callback", (done,))
                            .map_err(|e| describe(&e))?;
                        Ok(None)
                    })();
                    match r {
                        Ok(Some(v)) => answer(Ok(v)),
                        Ok(None) => {} // the task answers when it ends
                        Err(e) => answer(Err(e)),
                    }
                });
                rx.await.unwrap_or_else(|_| {
                    Err("the handler's event loop did not run it (it was closed)".into())
                })
            }
            None => {
                python_threads::call(move || {
                    Python::attach(|py| {
                        out(py, &call_all(&call_args(py, Via::Thread)?.into_bound(py))?)
                    })
                })
                .await
            }
        }
    }
}

/// Calls `all[0](*all[1:])`.
fn call_all<'py>(all: &Bound<'py, PyTuple>) -> Result<Bound<'py, PyAny>, String> {
    let rest = all.get_slice(1, all.len());
    all.get_item(0)
        .and_then(|h| h.call1(rest))
        .map_err(|e| describe(&e))
}

/// How a handler is called: which of `hail._invoke`'s helpers.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// On a handler thread (`call*`).
    Thread,
    /// Called on the loop's thread, a returned awaitable run as a task (`start*`).
    LoopStart,
}

/// Which of `hail._invoke`'s helpers calls a handler.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Helper {
    /// `call` / `start`: the handler's arguments as they are.
    Call,
    /// `call_json` / `start_json`: one argument decoded from JSON text, the result
    /// encoded to it.
    CallJson,
}

impl Helper {
    /// The helper function, looked up once.
    fn get<'py>(self, py: Python<'py>, via: Via) -> PyResult<&'py Bound<'py, PyAny>> {
        static HELPERS: [PyOnceLock<Py<PyAny>>; 4] = [
            PyOnceLock::new(),
            PyOnceLock::new(),
            PyOnceLock::new(),
            PyOnceLock::new(),
        ];
        let (i, name) = match (self, via) {
            (Self::Call, Via::Thread) => (0, "call"),
            (Self::Call, Via::LoopStart) => (1, "start"),
            (Self::CallJson, Via::Thread) => (2, "call_json"),
            (Self::CallJson, Via::LoopStart) => (3, "start_json"),
        };
        HELPERS[i]
            .get_or_try_init(py, || {
                py.import("hail._invoke")?.getattr(name).map(Bound::unbind)
            })
            .map(|f| f.bind(py))
    }
}

/// An exception as `Type: message`, for the peer that asked.
pub(crate) fn describe(e: &PyErr) -> String {
    Python::attach(|py| {
        let name = e
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "Exception".into());
        format!("{name}: {}", e.value(py))
    })
}
