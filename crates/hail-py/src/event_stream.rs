//! `hail.Events`: a device's event stream as an async iterator (`dev.events()`), with the
//! events a cancelled wait handed back ([`Returned`]).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hail_discovery::{DeviceEvent, DeviceEvents};
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;

use crate::bridge::{awaitable_giving_back, ready};
use crate::events::{Senders, event_to_py};

/// The device's events, an async iterator (`dev.events()`).
#[pyclass(module = "hail", frozen)]
#[derive(Debug)]
pub(crate) struct Events {
    pub(crate) stream: Arc<tokio::sync::Mutex<DeviceEvents>>,
    pub(crate) returned: Arc<Returned>,
    pub(crate) senders: Arc<Senders>,
}

/// Events a wait took from the stream but could not hand over, its awaitable cancelled
/// first (cancelling aborts the wait's task only once the loop runs the awaitable's done
/// callbacks: until then the task may still take an event). They are handed over before
/// the stream's, so cancelling a wait loses no event. One per device, shared by its
/// `Events`.
#[derive(Debug, Default)]
pub(crate) struct Returned {
    events: Mutex<VecDeque<DeviceEvent>>,
    /// Whether `events` may hold any: read before taking the lock, so the hot path (none
    /// ever handed back) costs a load per event, not a lock (a lock was 0.9% of a
    /// receiving process at 1 KiB, perf).
    any: AtomicBool,
    /// Wakes a wait that is waiting on the stream when events come back.
    back: tokio::sync::Notify,
    /// Events already made Python objects and set on a wait's future, whose task was
    /// cancelled before it resumed (a timeout in the same turn of the loop): handed back
    /// by `hail._aio` (`Events._give_back`), they come first.
    objects: Mutex<VecDeque<Py<PyAny>>>,
    /// Whether `objects` may hold any (as `any`).
    any_objects: AtomicBool,
}

impl Returned {
    fn lock(&self) -> MutexGuard<'_, VecDeque<DeviceEvent>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pop(&self) -> Option<DeviceEvent> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut events = self.lock();
        let e = events.pop_front();
        if events.is_empty() {
            self.any.store(false, Ordering::Release);
        }
        e
    }

    /// Hands `events` back, after those already back.
    fn give_back(&self, events: impl IntoIterator<Item = DeviceEvent>) {
        let mut back = self.lock();
        back.extend(events);
        if !back.is_empty() {
            self.any.store(true, Ordering::Release);
        }
        drop(back);
        self.back.notify_waiters();
    }

    /// The next event handed back as a Python object, if any.
    fn pop_object(&self) -> Option<Py<PyAny>> {
        if !self.any_objects.load(Ordering::Acquire) {
            return None;
        }
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        let o = objects.pop_front();
        if objects.is_empty() {
            self.any_objects.store(false, Ordering::Release);
        }
        o
    }

    /// Hands Python objects back, after those already back.
    fn give_back_objects(&self, items: impl IntoIterator<Item = Py<PyAny>>) {
        let mut objects = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        objects.extend(items);
        if !objects.is_empty() {
            self.any_objects.store(true, Ordering::Release);
        }
    }

    /// The next event: one handed back, else the stream's (`None` once it ends).
    async fn next(&self, s: &mut DeviceEvents) -> Option<DeviceEvent> {
        loop {
            let back = self.back.notified();
            let mut back = std::pin::pin!(back);
            back.as_mut().enable(); // before the look, so a give_back after it wakes us
            if let Some(e) = self.pop() {
                return Some(e);
            }
            tokio::select! {
                biased;
                () = back => {}
                e = s.recv() => return e,
            }
        }
    }
}

impl Events {
    /// Events waiting now, up to `max`: those handed back first, then the stream's if no
    /// other read is in flight (it holds the stream; waiting for it would break the order).
    fn take_ready(&self, max: usize) -> Vec<DeviceEvent> {
        let mut ready = Vec::new();
        while ready.len() < max
            && let Some(e) = self.returned.pop()
        {
            ready.push(e);
        }
        if ready.len() < max
            && let Ok(mut s) = self.stream.try_lock()
        {
            while ready.len() < max
                && let Some(e) = waiting(&mut s)
            {
                ready.push(e);
            }
        }
        ready
    }

    /// The next event waiting now, as `take_ready(1)` without the list.
    fn take_one(&self) -> Option<DeviceEvent> {
        self.returned
            .pop()
            .or_else(|| waiting(&mut *self.stream.try_lock().ok()?))
    }

    /// The next event waiting now as a Python object: one handed back as an object
    /// first, then [`take_one`](Self::take_one)'s.
    fn take_object(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if let Some(o) = self.returned.pop_object() {
            return Ok(Some(o));
        }
        self.take_one()
            .map(|e| event_to_py(py, e, &self.senders))
            .transpose()
    }

    /// Events waiting now as Python objects, up to `max`: those handed back as objects
    /// first, then [`take_ready`](Self::take_ready)'s.
    fn take_ready_objects(&self, py: Python<'_>, max: usize) -> PyResult<Vec<Py<PyAny>>> {
        let mut ready = Vec::new();
        while ready.len() < max
            && let Some(o) = self.returned.pop_object()
        {
            ready.push(o);
        }
        for e in self.take_ready(max - ready.len()) {
            ready.push(event_to_py(py, e, &self.senders)?);
        }
        Ok(ready)
    }
}

/// The next event waiting in `s`, without waiting: `recv` polled once with a waker that
/// does nothing, rather than `try_recv`, so what waits is taken from the device's stream up
/// to 64 at a time and a burst frees the stream (and wakes the device waiting for room)
/// once per 64 events, not once per event.
fn waiting(s: &mut DeviceEvents) -> Option<DeviceEvent> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(s.recv()).poll(&mut cx) {
        std::task::Poll::Ready(e) => e,
        std::task::Poll::Pending => None,
    }
}

#[pymethods]
impl Events {
    /// `async for event in dev.events()`: a generator (`hail._aio.iterate`) that hands
    /// over each event already waiting with no await on the runtime, and awaits
    /// `__anext__` only when none is.
    fn __aiter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        static ITERATE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let iterate = ITERATE.get_or_try_init(py, || {
            py.import("hail._aio")?
                .getattr("iterate")
                .map(Bound::unbind)
        })?;
        Ok(iterate.bind(py).call1((slf,))?.unbind())
    }

    /// `await events.__anext__()`: the next event; raises `StopAsyncIteration` once the
    /// device is closed. An event already waiting comes in a future completed at once;
    /// else a coroutine (`hail._aio.next_event`) waits on [`_next`](Self::_next) and hands
    /// the event back if its task is cancelled after the event came but before it resumed.
    fn __anext__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if let Some(e) = slf.get().take_object(py)? {
            return ready(py, e);
        }
        static NEXT_EVENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        aio(py, &NEXT_EVENT, "next_event")?.call1((slf,))
    }

    /// Internal (`hail._aio`): the next event's future: completed at once when one is
    /// waiting, else on hail's runtime (cancelling it hands back an event its task took).
    fn _next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(e) = self.take_object(py)? {
            return ready(py, e);
        }
        let (stream, returned) = (self.stream.clone(), self.returned.clone());
        let senders = self.senders.clone();
        let back = returned.clone();
        let next = async move { returned.next(&mut *stream.lock().await).await };
        let convert = move |py: Python<'_>, event| match event {
            Some(e) => event_to_py(py, e, &senders),
            None => Err(PyStopAsyncIteration::new_err(())),
        };
        awaitable_giving_back(py, next, convert, move |e| back.give_back(e))
    }

    /// Internal (`hail._aio`): hands back `item`, an event (or a list of events) whose
    /// wait's task was cancelled after it was set: it comes first, before the stream's.
    fn _give_back(&self, item: &Bound<'_, PyAny>) -> PyResult<()> {
        let items: Vec<Py<PyAny>> = match item.cast::<PyList>() {
            Ok(list) => list.iter().map(Bound::unbind).collect(),
            Err(_) => vec![item.clone().unbind()],
        };
        self.returned.give_back_objects(items);
        Ok(())
    }

    /// `try_next()`: the next event if one is waiting now, else `None` (also once the
    /// device is closed, or while another read of the stream is in flight). Never waits.
    fn try_next(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.take_object(py)
    }

    /// `await events.batch(max=256)`: every event waiting now, up to `max`, as a list (at
    /// least one: it waits for the first). An empty list once the device is closed. For
    /// a receiver of many messages: one await per batch rather than per event. When it
    /// waits, a coroutine (`hail._aio.next_batch`), as `__anext__`'s.
    #[pyo3(signature = (max=256))]
    fn batch<'py>(slf: &Bound<'py, Self>, max: usize) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let now = slf.get().take_ready_objects(py, max.max(1))?;
        if !now.is_empty() {
            return ready(py, PyList::new(py, now)?.into_any().unbind());
        }
        static NEXT_BATCH: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        aio(py, &NEXT_BATCH, "next_batch")?.call1((slf, max))
    }

    /// Internal (`hail._aio`): `batch`'s future, as [`_next`](Self::_next) is `__anext__`'s.
    #[pyo3(signature = (max=256))]
    fn _batch<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyAny>> {
        let max = max.max(1);
        let now = self.take_ready_objects(py, max)?;
        if !now.is_empty() {
            return ready(py, PyList::new(py, now)?.into_any().unbind());
        }
        let (stream, returned) = (self.stream.clone(), self.returned.clone());
        let senders = self.senders.clone();
        let back = returned.clone();
        let next = async move {
            let mut s = stream.lock().await;
            let mut ready = Vec::new();
            if let Some(first) = returned.next(&mut s).await {
                ready.push(first);
                while ready.len() < max
                    && let Some(e) = returned.pop().or_else(|| s.try_recv())
                {
                    ready.push(e);
                }
            }
            ready
        };
        let convert = move |py: Python<'_>, ready| {
            Ok(events_to_list(py, ready, &senders)?.into_any().unbind())
        };
        awaitable_giving_back(py, next, convert, move |ready| back.give_back(ready))
    }
}

/// `hail._aio.<name>`, looked up once into `cell`.
fn aio<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        py.import("hail._aio")?.getattr(name).map(Bound::unbind)
    })
    .map(|f| f.bind(py))
}

/// Events as a Python list.
fn events_to_list<'py>(
    py: Python<'py>,
    events: Vec<DeviceEvent>,
    senders: &Senders,
) -> PyResult<Bound<'py, PyList>> {
    let objs = events
        .into_iter()
        .map(|e| event_to_py(py, e, senders))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, objs)
}
