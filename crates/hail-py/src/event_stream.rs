//! `hail.Events`: a device's event stream as an async iterator (`dev.events()`), with the
//! events a cancelled wait handed back ([`Returned`]).

use std::future::Future;
use std::sync::Arc;

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

/// Events a wait took from the stream but could not hand over (see [`crate::returned`]).
/// One per device, shared by its `Events`.
pub(crate) type Returned = crate::returned::Returned<DeviceEvent>;

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
        let next = async move {
            let mut s = stream.lock().await;
            returned.next(Some, s.recv()).await
        };
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
            if let Some(first) = returned.next(Some, s.recv()).await {
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
