//! Rust futures as asyncio awaitables, completed without the GIL on the runtime's threads:
//! [`awaitable`], for the paths a program takes per message or per question.
//!
//! pyo3-async-runtimes' `future_into_py` completes an awaitable through two spawned tasks,
//! a trip to a blocking thread (which takes the GIL) and `loop.call_soon_threadsafe`. Here
//! the future runs in one task; its output goes, with a conversion to run later and
//! without the GIL, into the queue of the event loop's [`LoopWaker`], which writes one byte
//! to a socket the loop watches (`loop.add_reader`) when the queue was empty. The loop then
//! drains the queue on its own thread with the GIL it holds anyway: it converts each
//! output and sets each future's result. No runtime thread waits for the GIL, and a burst
//! of completions costs one wake-up of the loop.
//!
//! A loop that cannot watch a socket (`add_reader` raises, as Windows' proactor loop does)
//! gets its outputs, and the jobs of [`LoopQueue::run`], through `call_soon_threadsafe`
//! instead (which takes the GIL on the runtime's thread); what becomes of an output is the
//! same either way (an undelivered one is handed back, see [`awaitable_giving_back`]). Cancelling the awaitable aborts the task (every hail
//! future is cancel-safe); a task that ends without an output (a panic) fails its
//! awaitable with `RuntimeError` rather than leaving it waiting.

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tokio::task::AbortHandle;

use crate::runtime::runtime;
use crate::shutdown;

/// A future's output waiting for its loop, and what becomes of it there.
trait Output: Send {
    /// The awaitable's result (or exception), made on the loop's thread with the GIL.
    fn convert(self: Box<Self>, py: Python<'_>) -> PyResult<Py<PyAny>>;
    /// The awaitable was done (cancelled) before the output reached it.
    fn undelivered(self: Box<Self>);
}

/// An [`Output`] of a value, its conversion and where it goes when undelivered.
struct Value<T, C, G> {
    out: T,
    convert: C,
    give_back: G,
}

impl<T, C, G> Output for Value<T, C, G>
where
    T: Send,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send,
    G: FnOnce(T) + Send,
{
    fn convert(self: Box<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        (self.convert)(py, self.out)
    }

    fn undelivered(self: Box<Self>) {
        (self.give_back)(self.out);
    }
}

/// The output of a task that ended without one (it panicked).
struct Panicked;

impl Output for Panicked {
    fn convert(self: Box<Self>, _: Python<'_>) -> PyResult<Py<PyAny>> {
        Err(PyRuntimeError::new_err(
            "hail's task for this awaitable ended without a result (it panicked)",
        ))
    }

    fn undelivered(self: Box<Self>) {}
}

/// A future's output waiting for its loop: the asyncio future and what to set it to.
/// Dropped unsettled (its loop closed), the output is undelivered.
struct Done {
    fut: Py<PyAny>,
    /// `None` once settled.
    output: Option<Box<dyn Output>>,
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(output) = self.output.take() {
            output.undelivered();
        }
    }
}

/// What the loop does next: set a future, or run a job (with the GIL, on its thread).
enum Item {
    Done(Done),
    Run(Box<dyn FnOnce(Python<'_>) + Send>),
}

/// One loop's queue, shared by its [`LoopWaker`] and the tasks that fill it.
struct Queue {
    /// The end the runtime's threads write a byte to.
    tx: UnixStream,
    items: Mutex<Items>,
}

/// The queued items, and since when the queue has not been empty.
#[derive(Default)]
struct Items {
    items: Vec<Item>,
    since: Option<Instant>,
}

/// How long a loop may leave its queue undrained before [`LoopQueue::stuck`] says so: 1 s
/// (a running loop drains within its next turn; one that long behind is closed, or blocked
/// by code that does not yield).
const STUCK: Duration = Duration::from_secs(1);

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Items> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`; wakes the loop if the queue was empty (else a wake-up is on its way:
    /// [`LoopWaker::drain`] reads the socket before it takes the queue).
    fn push(&self, item: Item) {
        let first = {
            let mut q = self.lock();
            q.items.push(item);
            q.since.get_or_insert_with(Instant::now);
            q.items.len() == 1
        };
        if first {
            // WouldBlock: the socket holds unread wake-ups already; the loop will drain.
            let _ = (&self.tx).write(&[1]);
        }
    }
}

/// The completions of one event loop (internal, `hail._hail._LoopWaker`: `hail._aio.waker`
/// makes one per loop and has the loop call `drain` when its socket is readable).
#[pyclass(module = "hail._hail", name = "_LoopWaker", frozen)]
pub(crate) struct LoopWaker {
    /// The end the loop watches.
    rx: UnixStream,
    queue: Arc<Queue>,
}

impl std::fmt::Debug for LoopWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopWaker")
            .field("fd", &self.rx.as_raw_fd())
            .finish_non_exhaustive()
    }
}

#[pymethods]
impl LoopWaker {
    /// A waker with a socket pair of its own (both ends non-blocking).
    #[new]
    fn new() -> PyResult<Self> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Self {
            rx,
            queue: Arc::new(Queue {
                tx,
                items: Mutex::new(Items::default()),
            }),
        })
    }

    /// The socket the loop watches.
    fn fileno(&self) -> i32 {
        self.rx.as_raw_fd()
    }

    /// Sets the result of every future completed since the last call, and runs the jobs
    /// queued (the loop calls it when the socket is readable). The wake-ups are read first, then the queue taken, so
    /// a completion queued meanwhile is either taken now or wakes the loop again.
    fn drain(&self, py: Python<'_>) {
        let mut buf = [0u8; 256];
        loop {
            match (&self.rx).read(&mut buf) {
                Ok(n) if n == buf.len() => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => break, // drained (short read, WouldBlock), or closed
            }
        }
        let items = std::mem::take(&mut *self.queue.lock()).items;
        for item in items {
            match item {
                Item::Done(d) => settle(py, d),
                Item::Run(job) => job(py),
            }
        }
    }
}

/// Sets an asyncio future to a converted output, unless it is done already (cancelled:
/// then the output is handed back, see [`awaitable_giving_back`]).
fn settle(py: Python<'_>, mut d: Done) {
    let fut = d.fut.bind(py);
    let r = (|| {
        if fut.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
            return Ok(()); // `d`'s drop hands the output back
        }
        let Some(output) = d.output.take() else {
            return Ok(());
        };
        match output.convert(py) {
            Ok(v) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,))?,
            Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),))?,
        };
        Ok::<_, PyErr>(())
    })();
    if let Err(e) = r {
        e.write_unraisable(py, Some(fut));
    }
}

/// Completes one awaitable: with its output, or, if its task ends without one (it
/// panicked, or was aborted because the awaitable was cancelled), with `RuntimeError`
/// (which a cancelled awaitable ignores), so an awaitable never waits for nothing.
struct Completer {
    queue: LoopQueue,
    /// `None` once completed.
    fut: Option<Py<PyAny>>,
}

impl Completer {
    fn complete(mut self, output: Box<dyn Output>) {
        if let Some(fut) = self.fut.take() {
            self.queue.settle(Done {
                fut,
                output: Some(output),
            });
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            self.queue.settle(Done {
                fut,
                output: Some(Box::new(Panicked)),
            });
        }
    }
}

/// Aborts the task behind an awaitable once the awaitable is done: a no-op when the task
/// finished it, the end of the task when the awaitable was cancelled.
#[pyclass(module = "hail._hail", name = "_AbortOnDone", frozen)]
struct AbortOnDone(AbortHandle);

#[pymethods]
impl AbortOnDone {
    fn __call__(&self, _fut: &Bound<'_, PyAny>) {
        self.0.abort();
    }
}

/// A running event loop, kept to run jobs on its thread from any thread
/// ([`LoopQueue::run`]): through its waker's queue without the GIL where the loop can watch
/// a socket, else through the loop's `call_soon_threadsafe`.
#[derive(Clone)]
pub(crate) struct LoopQueue(Route);

/// How a [`LoopQueue`] reaches its loop.
#[derive(Clone)]
enum Route {
    /// The loop's waker's queue.
    Queue(Arc<Queue>),
    /// A loop that cannot watch a socket (Windows' proactor loop): its jobs go through
    /// `call_soon_threadsafe`, which takes the GIL on the caller's thread.
    CallSoon(Arc<Py<PyAny>>),
}

impl std::fmt::Debug for LoopQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let via = match self.0 {
            Route::Queue(_) => "queue",
            Route::CallSoon(_) => "call_soon_threadsafe",
        };
        f.debug_struct("LoopQueue")
            .field("via", &via)
            .finish_non_exhaustive()
    }
}

impl LoopQueue {
    /// The running loop's queue; `None` without a running loop.
    pub(crate) fn running(py: Python<'_>) -> Option<Self> {
        let event_loop = pyo3_async_runtimes::get_running_loop(py).ok()?;
        Some(Self::of(py, event_loop))
    }

    /// `event_loop`'s queue.
    fn of(py: Python<'_>, event_loop: Bound<'_, PyAny>) -> Self {
        Self(match waker(py, &event_loop) {
            Some(queue) => Route::Queue(queue),
            None => Route::CallSoon(Arc::new(event_loop.unbind())),
        })
    }

    /// Settles `d` on the loop's thread at its next turn ([`settle`]); dropped unsettled
    /// (its output undelivered, so handed back) when the loop is gone, as [`run`]'s jobs.
    ///
    /// [`run`]: Self::run
    fn settle(&self, d: Done) {
        match &self.0 {
            Route::Queue(q) => q.push(Item::Done(d)),
            Route::CallSoon(_) => self.run(move |py| settle(py, d)),
        }
    }

    /// Runs `job` on the loop's thread, with the GIL, at its next turn. A job still queued
    /// when the loop's waker goes (the loop was closed and dropped), when [`clear`] is
    /// called, or that the loop refuses (closed), is dropped unrun. Nothing of Python is
    /// made until the job runs, so nothing is left for a closed loop (a coroutine never
    /// awaited).
    ///
    /// [`clear`]: Self::clear
    pub(crate) fn run(&self, job: impl FnOnce(Python<'_>) + Send + 'static) {
        match &self.0 {
            Route::Queue(q) => q.push(Item::Run(Box::new(job))),
            Route::CallSoon(event_loop) => {
                let call = CallOnce::new(move |py, _| job(py));
                // Refused (closed), or the interpreter is exiting: `job` is dropped, at once
                // (the error, whose traceback holds it, is dropped here with the GIL).
                shutdown::attach(|py| {
                    let _refused = event_loop
                        .bind(py)
                        .call_method1(pyo3::intern!(py, "call_soon_threadsafe"), (call, py.None()));
                });
            }
        }
    }

    /// Whether the loop has left its queue undrained for longer than [`STUCK`] (1 s): it
    /// is closed, or blocked. Needs no GIL. Always false through `call_soon_threadsafe`
    /// (a closed loop refuses the job at once).
    pub(crate) fn stuck(&self) -> bool {
        match &self.0 {
            Route::Queue(q) => q.lock().since.is_some_and(|t| t.elapsed() > STUCK),
            Route::CallSoon(_) => false,
        }
    }

    /// Drops everything queued (the loop is closed): jobs unrun, results unset.
    pub(crate) fn clear(&self) {
        if let Route::Queue(q) = &self.0 {
            let items = std::mem::take(&mut *q.lock());
            drop(items);
        }
    }
}

/// Calls a Rust closure once, with the one argument it is called with: a task, as a done
/// callback (`Task.add_done_callback`), or `None` from `call_soon_threadsafe` (`hail._hail`'s
/// internal `_CallOnce`). Dropped uncalled, it drops the closure.
#[pyclass(module = "hail._hail", name = "_CallOnce", frozen)]
pub(crate) struct CallOnce(Mutex<Option<OnceCallback>>);

/// What a [`CallOnce`] calls.
type OnceCallback = Box<dyn FnOnce(Python<'_>, &Bound<'_, PyAny>) + Send>;

impl CallOnce {
    pub(crate) fn new(f: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) + Send + 'static) -> Self {
        Self(Mutex::new(Some(Box::new(f))))
    }
}

#[pymethods]
impl CallOnce {
    fn __call__(&self, arg: &Bound<'_, PyAny>) {
        let f = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = f {
            f(arg.py(), arg);
        }
    }
}

/// The waker of the running loop (`hail._aio.waker`), or `None` where the loop cannot
/// watch a socket.
fn waker(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> Option<Arc<Queue>> {
    static WAKER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let f = WAKER
        .get_or_try_init(py, || {
            py.import("hail._aio")?.getattr("waker").map(Bound::unbind)
        })
        .ok()?;
    let w = f.bind(py).call1((event_loop,)).ok()?;
    let w = w.cast::<LoopWaker>().ok()?;
    Some(w.get().queue.clone())
}

/// `fut` as an awaitable on the running event loop: it runs on the module's runtime, and
/// `convert` turns its output into the awaitable's result (or exception) on the loop's
/// thread, with the GIL. Fails (`RuntimeError`) without a running loop. An output whose
/// awaitable was cancelled first is dropped (see [`awaitable_giving_back`]).
pub(crate) fn awaitable<'py, T, F, C>(
    py: Python<'py>,
    fut: F,
    convert: C,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    awaitable_giving_back(py, fut, convert, drop)
}

/// [`awaitable`], where an output that reaches its awaitable after the awaitable was
/// cancelled goes to `give_back` (on the loop's thread) rather than being dropped: for a
/// future that took something (an event) that must not be lost. Cancelling aborts the
/// task, but only once the loop runs the awaitable's done callbacks: until then it may
/// still finish. So too where the loop cannot watch a socket (outputs go through
/// `call_soon_threadsafe`).
pub(crate) fn awaitable_giving_back<'py, T, F, C, G>(
    py: Python<'py>,
    fut: F,
    convert: C,
    give_back: G,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
    G: FnOnce(T) + Send + 'static,
{
    let event_loop = pyo3_async_runtimes::get_running_loop(py)?;
    let py_fut = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    let completer = Completer {
        queue: LoopQueue::of(py, event_loop),
        fut: Some(py_fut.clone().unbind()),
    };
    let task = runtime().spawn(async move {
        let out = fut.await;
        completer.complete(Box::new(Value {
            out,
            convert,
            give_back,
        }));
    });
    py_fut.call_method1(
        pyo3::intern!(py, "add_done_callback"),
        (AbortOnDone(task.abort_handle()),),
    )?;
    Ok(py_fut)
}

/// [`awaitable`] for a future whose output converts by itself (`Ok(value)` as `value`,
/// `Err(exception)` raised).
pub(crate) fn awaitable_result<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    awaitable(py, fut, |py, out| out.and_then(|v| v.into_py_any(py)))
}

/// An awaitable already done with `value`: a future of the running loop with its result
/// set (awaiting it does not yield to the loop).
pub(crate) fn ready<'py>(py: Python<'py>, value: Py<PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let fut = pyo3_async_runtimes::get_running_loop(py)?
        .call_method0(pyo3::intern!(py, "create_future"))?;
    fut.call_method1(pyo3::intern!(py, "set_result"), (value,))?;
    Ok(fut)
}
