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
    /// device is closed.
    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // An event already waiting is handed over in a future completed at once, with no
        // trip through the runtime's threads.
        if let Some(e) = self.take_one() {
            return ready(py, event_to_py(py, e, &self.senders)?);
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

    /// `try_next()`: the next event if one is waiting now, else `None` (also once the
    /// device is closed, or while another read of the stream is in flight). Never waits.
    fn try_next(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.take_one()
            .map(|e| event_to_py(py, e, &self.senders))
            .transpose()
    }

    /// `await events.batch(max=256)`: every event waiting now, up to `max`, as a list (at
    /// least one: it waits for the first). An empty list once the device is closed. For
    /// a receiver of many messages: one await per batch rather than per event.
    #[pyo3(signature = (max=256))]
    fn batch<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyAny>> {
        let max = max.max(1);
        let now = self.take_ready(max);
        if !now.is_empty() {
            return ready(
                py,
                events_to_list(py, now, &self.senders)?.into_any().unbind(),
            );
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
