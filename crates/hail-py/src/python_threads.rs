//! The threads that call users' plain (non-async) Python handlers: [`call`].
//!
//! A handler is called from async code on the runtime (a peer's question, an RPC method, a
//! link's callback), but it may block (it takes the GIL, and may take its time), so it is
//! never called on a runtime thread: [`call`] hands it to a thread of its own and awaits
//! the result. This works the same whatever runtime polls the caller: a multi-threaded or
//! a current-thread one (where `tokio::task::block_in_place`, used here before, panics), or
//! none.
//!
//! Each thread keeps its Python thread state for its life (it is attached once, then
//! detached while it waits). `Python::attach` on a thread Python does not know makes a
//! thread state and frees it again: on CPython 3.11 an mmap and a munmap of its frame stack,
//! with a TLB shoot-down, which was most of a question's cost on the answering side (perf,
//! `bench/bench.py`'s ask). Here a call costs a hand-over to a waiting thread and back.
//!
//! Threads are started as calls need them, up to [`MAX_THREADS`], and end after
//! [`IDLE`] without work; past the limit, calls wait for a thread.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::shutdown;

/// Most threads calling handlers at once: 256 (a thread each for handlers that block,
/// e.g. sleep; more calls wait for one). As many as the RPC layer's concurrent handlers of
/// four peers (64 each by default); each thread costs its stack (8 MiB reserved, little
/// used) and a Python thread state.
pub(crate) const MAX_THREADS: usize = 256;

/// How long a thread without work waits before it ends: 10 s (tokio's blocking threads'
/// default): a steady stream of calls keeps its threads, an idle program keeps none.
pub(crate) const IDLE: Duration = Duration::from_secs(10);

/// A call, boxed for the queue.
type Job = Box<dyn FnOnce() + Send>;

/// The queue the threads take calls from.
struct Pool {
    state: Mutex<State>,
    /// Signalled when a call is queued.
    work: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    /// Threads waiting for a call.
    idle: usize,
    /// Threads running (waiting or calling).
    threads: usize,
}

static POOL: Pool = Pool {
    state: Mutex::new(State {
        jobs: VecDeque::new(),
        idle: 0,
        threads: 0,
    }),
    work: Condvar::new(),
};

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job`, and starts a thread for it if none waits and the limit allows.
    fn submit(&'static self, job: Job) {
        let mut st = self.lock();
        st.jobs.push_back(job);
        if st.jobs.len() > st.idle && st.threads < MAX_THREADS {
            let started = std::thread::Builder::new()
                .name("hail-python".into())
                .spawn(move || self.run());
            // Cannot start one (out of threads): the call waits for a running thread; with
            // none at all it waits for the next call that can start one.
            if started.is_ok() {
                st.threads += 1;
            }
        }
        drop(st);
        self.work.notify_one();
    }

    /// A thread: attached to Python once, detached while it waits; calls until [`IDLE`]
    /// passes without one. Each call is let into Python by [`shutdown`]: once the
    /// interpreter's exit has begun the thread parks instead (a job then waits for good).
    fn run(&'static self) {
        shutdown::with_thread_state(|| {
            let mut st = self.lock();
            loop {
                if let Some(job) = st.jobs.pop_front() {
                    drop(st);
                    let entered = shutdown::enter_or_park();
                    job();
                    drop(entered);
                    st = self.lock();
                    continue;
                }
                st.idle += 1;
                let (guard, wait) = self
                    .work
                    .wait_timeout(st, IDLE)
                    .unwrap_or_else(|p| p.into_inner());
                st = guard;
                st.idle -= 1;
                if wait.timed_out() && st.jobs.is_empty() {
                    st.threads -= 1;
                    return;
                }
            }
        });
    }
}

/// Runs `f` (a call into Python: it attaches itself) on one of the handler threads and
/// returns its result; a panic in `f` is resumed here. Never blocks the caller's thread.
pub(crate) async fn call<R, F>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    POOL.submit(Box::new(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    }));
    match rx.await {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => resume_unwind(panic),
        // A job is only dropped unrun if its thread died, which `catch_unwind` prevents.
        Err(_) => unreachable!("a handler thread dropped a call"),
    }
}

#[cfg(test)]
mod tests {
    use super::call;
    use pyo3::prelude::*;

    fn python_thread() -> bool {
        std::thread::current().name() == Some("hail-python")
    }

    /// A plain handler called from a current-thread runtime, as a `#[tokio::test]` or a
    /// program's own `#[tokio::main(flavor = "current_thread")]` polls it: the
    /// `block_in_place` used before panicked there ("can call blocking only when running
    /// on the multi-threaded runtime").
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_from_a_current_thread_runtime_runs_on_a_handler_thread() {
        Python::initialize();
        let (v, there) = call(|| {
            Python::attach(|py| {
                (
                    py.eval(c"6 * 7", None, None)
                        .and_then(|v| v.extract::<i32>()),
                    python_thread(),
                )
            })
        })
        .await;
        assert_eq!(v.expect("Python ran it"), 42);
        assert!(there);
    }

    /// From a multi-threaded runtime's worker, the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_from_a_multi_thread_worker_runs_on_a_handler_thread() {
        Python::initialize();
        assert!(call(python_thread).await);
    }

    /// Calls that block run side by side on threads of their own: one does not hold up
    /// the next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_calls_do_not_wait_for_each_other() {
        Python::initialize();
        let wait = std::time::Duration::from_secs(10);
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn(call(move || {
            started_tx.send(()).expect("the test waits");
            rx.recv_timeout(wait)
        }));
        started_rx
            .recv_timeout(wait)
            .expect("the first call started");
        // Queued behind the first, this would wait for it, which waits for this (10 s,
        // then the first fails and this one's send panics).
        call(move || tx.send(()).expect("the first call waits")).await;
        assert!(first.await.expect("no panic").is_ok());
    }

    /// A panic in the call reaches the caller (the RPC layer reports a handler's panic).
    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_in_a_call_reaches_the_caller() {
        Python::initialize();
        let caught = tokio::spawn(call(|| panic!("handler bug"))).await;
        let panic = caught.expect_err("the panic came back").into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"handler bug"));
    }
}
