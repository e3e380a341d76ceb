//! [`Returned`]: what a cancelled wait took but could not hand over, given back to come
//! first (a device's events, a channel's datagrams).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;

/// Items a wait took from its source (a device's event stream, a channel's receiver) but
/// could not hand over: its awaitable cancelled first (cancelling aborts the wait's task
/// only once the loop runs the awaitable's done callbacks: until then the task may still
/// take an item), or its result set but its task cancelled before it resumed (a timeout in
/// the same turn of the loop; those come back as Python objects, through `hail._aio`).
/// They are handed over before the source's, in order, so cancelling a wait loses nothing.
#[derive(Debug)]
pub(crate) struct Returned<T> {
    items: Mutex<VecDeque<T>>,
    /// Whether `items` may hold any: read before taking the lock, so the hot path (none
    /// ever handed back) costs a load per item, not a lock (a lock was 0.9% of a
    /// receiving process at 1 KiB, perf).
    any: AtomicBool,
    /// Wakes a wait that is waiting on the source when items come back.
    back: tokio::sync::Notify,
    /// Items already made Python objects and set on a wait's future, handed back by
    /// `hail._aio` (`_give_back`): they come first.
    objects: Mutex<VecDeque<Py<PyAny>>>,
    /// Whether `objects` may hold any (as `any`).
    any_objects: AtomicBool,
}

impl<T> Default for Returned<T> {
    fn default() -> Self {
        Self {
            items: Mutex::default(),
            any: AtomicBool::new(false),
            back: tokio::sync::Notify::new(),
            objects: Mutex::default(),
            any_objects: AtomicBool::new(false),
        }
    }
}

/// Pops the front of `queue`, if `any` says it may hold one; `any` goes false when it is
/// left empty.
fn pop_if_any<U>(queue: &Mutex<VecDeque<U>>, any: &AtomicBool) -> Option<U> {
    if !any.load(Ordering::Acquire) {
        return None;
    }
    let mut q = lock(queue);
    let item = q.pop_front();
    if q.is_empty() {
        any.store(false, Ordering::Release);
    }
    item
}

/// Appends `items` to `queue`; `any` goes true when it holds some.
fn push_all<U>(queue: &Mutex<VecDeque<U>>, any: &AtomicBool, items: impl IntoIterator<Item = U>) {
    let mut q = lock(queue);
    q.extend(items);
    if !q.is_empty() {
        any.store(true, Ordering::Release);
    }
}

fn lock<U>(queue: &Mutex<VecDeque<U>>) -> MutexGuard<'_, VecDeque<U>> {
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T> Returned<T> {
    /// The next item handed back, if any.
    pub(crate) fn pop(&self) -> Option<T> {
        pop_if_any(&self.items, &self.any)
    }

    /// Hands `items` back, after those already back, and wakes a waiting wait.
    pub(crate) fn give_back(&self, items: impl IntoIterator<Item = T>) {
        push_all(&self.items, &self.any, items);
        self.back.notify_waiters();
    }

    /// The next item handed back as a Python object, if any.
    pub(crate) fn pop_object(&self) -> Option<Py<PyAny>> {
        pop_if_any(&self.objects, &self.any_objects)
    }

    /// Hands Python objects back, after those already back.
    pub(crate) fn give_back_objects(&self, items: impl IntoIterator<Item = Py<PyAny>>) {
        push_all(&self.objects, &self.any_objects, items);
    }

    /// Drops everything handed back (the source is closed: nothing is taken after).
    pub(crate) fn clear(&self) {
        drop(std::mem::take(&mut *lock(&self.items)));
        self.any.store(false, Ordering::Release);
        drop(std::mem::take(&mut *lock(&self.objects)));
        self.any_objects.store(false, Ordering::Release);
    }

    /// The next item: one handed back (as `found` makes it), else what `recv`, the
    /// source's receive, gives.
    pub(crate) async fn next<R>(&self, found: impl Fn(T) -> R, recv: impl Future<Output = R>) -> R {
        let mut recv = std::pin::pin!(recv);
        loop {
            let back = self.back.notified();
            let mut back = std::pin::pin!(back);
            back.as_mut().enable(); // before the look, so a give_back after it wakes us
            if let Some(item) = self.pop() {
                return found(item);
            }
            tokio::select! {
                biased;
                () = back => {}
                r = &mut recv => return r,
            }
        }
    }
}
