//! The callee's side of a session: which handlers run, which requests wait, the
//! concurrency limit.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::config::RpcConfig;
use crate::method::{Method, RetCode};

/// Work for a handler: a call to answer or a notification to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// A request: run the handler and reply with `retcode`.
    Call {
        /// The caller's correlation id.
        retcode: RetCode,
        /// The method.
        method: Method,
        /// Postcard-encoded arguments.
        args: Bytes,
    },
    /// A notification: run the handler, discard its result.
    Notify {
        /// The method.
        method: Method,
        /// Postcard-encoded arguments.
        args: Bytes,
    },
}

impl Job {
    fn args_len(&self) -> usize {
        match self {
            Self::Call { args, .. } | Self::Notify { args, .. } => args.len(),
        }
    }
}

/// What became of an incoming request or notification.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Run it now.
    Run(Job),
    /// Waiting for a handler slot.
    Queued,
    /// Queue full: a request is answered [`Status::BUSY`](crate::Status::BUSY) with this retcode.
    Busy(RetCode),
    /// Queue full: a notification is dropped (and counted).
    Dropped,
    /// The retcode is already running or queued: the peer broke the protocol; dropped.
    Duplicate(RetCode),
}

/// What a cancel did.
#[derive(Debug, PartialEq, Eq)]
pub enum Cancelled<H> {
    /// The handler was running: abort it with this (if attached yet). No reply is sent.
    Running(Option<H>),
    /// The request was still queued: removed, it will not run.
    Dequeued,
    /// No such call (already answered, or never seen).
    Unknown,
}

#[derive(Debug)]
enum Slot<H> {
    Queued,
    /// Running as the `run`th call started (see [`Serve::run_of`]), with its handler's
    /// abort handle once attached.
    Running(u64, Option<H>),
}

/// The callee's side: which handlers run, which requests wait, the concurrency limit.
#[derive(Debug)]
pub struct Serve<H> {
    max_running: usize,
    max_queued: usize,
    max_queued_bytes: usize,
    queued_bytes: usize,
    /// Bytes of arguments one more queued request may hold, from the memory budget the IO
    /// layer draws on (unlimited without one): see [`Serve::set_room`].
    room: usize,
    calls: HashMap<RetCode, Slot<H>>,
    running: usize,
    queue: VecDeque<Job>,
    /// Calls started so far: a retcode reused after a cancel runs under another number,
    /// so what its cancelled run reports later is told apart.
    started: u64,
}

impl<H> Serve<H> {
    /// An empty table with the limits of `config`.
    pub fn new(config: &RpcConfig) -> Self {
        Self {
            max_running: config.max_concurrent_handlers,
            max_queued: config.max_queued_requests,
            max_queued_bytes: config.max_queued_bytes,
            queued_bytes: 0,
            room: usize::MAX,
            calls: HashMap::new(),
            running: 0,
            queue: VecDeque::new(),
            started: 0,
        }
    }

    /// The run number of `retcode`'s call if it is running: what
    /// [`attach`](Self::attach) and [`finish_call`](Self::finish_call) take, so that the
    /// handler of a cancelled run can never act for a later call with the same retcode.
    pub fn run_of(&self, retcode: RetCode) -> Option<u64> {
        match self.calls.get(&retcode) {
            Some(Slot::Running(run, _)) => Some(*run),
            _ => None,
        }
    }

    fn start(&mut self, retcode: RetCode) {
        self.started += 1;
        self.calls
            .insert(retcode, Slot::Running(self.started, None));
    }

    /// Handlers running now (calls and notifications).
    pub fn running(&self) -> usize {
        self.running
    }

    /// True while a handler slot is free: a request or notification admitted now runs at
    /// once rather than waiting in the queue.
    pub fn has_free_slot(&self) -> bool {
        self.running < self.max_running
    }

    /// Requests and notifications waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of arguments held by queued requests and notifications.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The memory budget the IO layer draws on has room for `bytes` more queued arguments
    /// (`usize::MAX`, the default, for no budget): a request that would need more is
    /// refused like one past [`RpcConfig::max_queued_bytes`].
    pub fn set_room(&mut self, bytes: usize) {
        self.room = bytes;
    }

    /// An incoming request or notification: run it, queue it, or refuse it.
    pub fn admit(&mut self, job: Job) -> Admit {
        if let Job::Call { retcode, .. } = &job
            && self.calls.contains_key(retcode)
        {
            return Admit::Duplicate(*retcode);
        }
        if self.running < self.max_running {
            self.running += 1;
            if let Job::Call { retcode, .. } = &job {
                self.start(*retcode);
            }
            return Admit::Run(job);
        }
        let size = job.args_len();
        if self.queue.len() >= self.max_queued
            || self.queued_bytes + size > self.max_queued_bytes
            || size > self.room
        {
            return match job {
                Job::Call { retcode, .. } => Admit::Busy(retcode),
                Job::Notify { .. } => Admit::Dropped,
            };
        }
        if let Job::Call { retcode, .. } = &job {
            self.calls.insert(*retcode, Slot::Queued);
        }
        self.queued_bytes += size;
        self.queue.push_back(job);
        Admit::Queued
    }

    /// Attaches the abort handle of run `run` of a call's handler once spawned. Returns it
    /// back if that run ended (finished or cancelled) in the meantime, whatever runs under
    /// the retcode now.
    pub fn attach(&mut self, retcode: RetCode, run: u64, handle: H) -> Option<H> {
        match self.calls.get_mut(&retcode) {
            Some(Slot::Running(r, h)) if *r == run => {
                *h = Some(handle);
                None
            }
            _ => Some(handle),
        }
    }

    /// The caller cancelled `retcode`.
    pub fn cancel(&mut self, retcode: RetCode) -> (Cancelled<H>, Option<Job>) {
        match self.calls.remove(&retcode) {
            Some(Slot::Running(_, h)) => (Cancelled::Running(h), self.release()),
            Some(Slot::Queued) => {
                if let Some(i) = self
                    .queue
                    .iter()
                    .position(|j| matches!(j, Job::Call { retcode: r, .. } if *r == retcode))
                    && let Some(job) = self.queue.remove(i)
                {
                    self.queued_bytes -= job.args_len();
                }
                (Cancelled::Dequeued, None)
            }
            None => (Cancelled::Unknown, None),
        }
    }

    /// Run `run` of a call's handler finished. Returns whether the reply should still be
    /// sent (false after a cancel, also when the retcode runs again since) and the next job
    /// to run in the freed slot.
    pub fn finish_call(&mut self, retcode: RetCode, run: u64) -> (bool, Option<Job>) {
        match self.calls.get(&retcode) {
            Some(Slot::Running(r, _)) if *r == run => {
                self.calls.remove(&retcode);
                (true, self.release())
            }
            _ => (false, None),
        }
    }

    /// A notification's handler finished; returns the next job to run in the freed slot.
    pub fn finish_notification(&mut self) -> Option<Job> {
        self.release()
    }

    /// One slot freed: hand it to the next queued job, if any.
    fn release(&mut self) -> Option<Job> {
        self.running = self.running.saturating_sub(1);
        let job = self.queue.pop_front()?;
        self.queued_bytes -= job.args_len();
        self.running += 1;
        if let Job::Call { retcode, .. } = &job {
            self.start(*retcode);
        }
        Some(job)
    }

    /// The connection dropped: nobody can receive replies. Clears the queue and returns
    /// the abort handles of every running call.
    pub fn connection_lost(&mut self) -> Vec<H> {
        self.queue.clear();
        self.queued_bytes = 0;
        self.running = 0;
        self.calls
            .drain()
            .filter_map(|(_, s)| match s {
                Slot::Running(_, h) => h,
                Slot::Queued => None,
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "tests/serve.rs"]
mod tests;
