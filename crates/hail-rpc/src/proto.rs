//! The sans-IO core of one RPC connection: no sockets, no tasks, no clock of its own.
//!
//! [`Session`] takes decoded-or-not packet bytes and an [`Instant`] and says what to do:
//! run a handler, send a packet, wake a waiting caller. It holds the caller's side
//! ([`Calls`]: retcodes, calls in flight, kept replies) and the callee's side ([`Serve`]:
//! running and queued handlers). [`RpcPeer`](crate::RpcPeer) is the thin tokio layer
//! around it; this module is public so the state machine can be driven by a fuzzer or
//! another runtime.
//!
//! The type parameters are what the IO layer attaches: `W` wakes a caller waiting for a
//! reply (a oneshot sender), `G` is held while a call is in flight (a semaphore permit),
//! `H` aborts a running handler (a task's abort handle). Tests use plain values.
//!
//! Memory is bounded by the configuration whatever the peer sends: at most
//! `max_in_flight` calls, `max_kept_replies` kept replies holding at most
//! `max_kept_bytes` of bodies (plus one larger reply alone; and a record of up to
//! `4 × max_kept_replies` expired retcodes), `max_concurrent_handlers` running and
//! `max_queued_requests` queued requests holding at most `max_queued_bytes` of arguments.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::config::RpcConfig;
use crate::error::RpcError;
use crate::method::{Method, Opcode, RetCode, Status};
use crate::packet::{self, Packet, PacketError};

/// What became of a call: the reply body (postcard of the result) or why there is none.
pub type Outcome = Result<Bytes, RpcError>;

/// A call this side made that awaits its reply.
#[derive(Debug)]
struct InFlight<W, G> {
    method: Method,
    started: Instant,
    keep: bool,
    waiter: Option<W>,
    _guard: G,
}

/// A reply kept for `poll`.
#[derive(Debug)]
struct Kept {
    at: Instant,
    outcome: Outcome,
}

fn body_len(outcome: &Outcome) -> usize {
    outcome.as_ref().map_or(0, Bytes::len)
}

/// Where a call stands, as `poll` sees it.
#[derive(Debug)]
pub enum PollState {
    /// The reply is here (and now taken).
    Ready(Outcome),
    /// The call is still in flight.
    InFlight,
    /// The call's reply was evicted, or the call expired unanswered.
    Expired,
    /// Not in flight, not kept, not recently expired.
    Unknown,
}

/// The caller's side: retcodes, calls in flight, replies kept for `poll`.
#[derive(Debug)]
pub struct Calls<W, G = ()> {
    next: u32,
    max_in_flight: usize,
    max_kept: usize,
    max_kept_bytes: usize,
    kept_bytes: usize,
    keep_for: std::time::Duration,
    in_flight: HashMap<RetCode, InFlight<W, G>>,
    /// Start times of `send` calls in flight, oldest first (entries may be stale).
    keep_started: VecDeque<(RetCode, Instant)>,
    kept: HashMap<RetCode, Kept>,
    /// Arrival order of kept replies, oldest first (entries may be stale).
    kept_order: VecDeque<RetCode>,
    expired: HashSet<RetCode>,
    expired_order: VecDeque<RetCode>,
}

impl<W, G> Calls<W, G> {
    /// An empty table with the limits of `config`.
    pub fn new(config: &RpcConfig) -> Self {
        Self {
            next: 1,
            max_in_flight: config.max_in_flight,
            max_kept: config.max_kept_replies,
            max_kept_bytes: config.max_kept_bytes,
            kept_bytes: 0,
            keep_for: config.keep_replies_for,
            in_flight: HashMap::new(),
            keep_started: VecDeque::new(),
            kept: HashMap::new(),
            kept_order: VecDeque::new(),
            expired: HashSet::new(),
            expired_order: VecDeque::new(),
        }
    }

    /// Makes `first` the next retcode handed out (default 1). A peer starts at a random
    /// value, so a stale reply from an earlier connection of the same client is unlikely
    /// to match a call of a new one.
    pub fn set_next_retcode(&mut self, first: u32) {
        self.next = first;
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Replies kept for `poll`.
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    /// Bytes of reply bodies kept for `poll`.
    pub fn kept_bytes(&self) -> usize {
        self.kept_bytes
    }

    /// Registers a call and picks its retcode, or `None` when `max_in_flight` calls are
    /// already in flight. `keep` marks a `send` call, whose reply is kept for `poll`;
    /// `waiter` is woken with the outcome (for `execute`, and for a `poll` in progress).
    pub fn start(
        &mut self,
        method: Method,
        keep: bool,
        waiter: Option<W>,
        guard: G,
        now: Instant,
    ) -> Option<RetCode> {
        if self.in_flight.len() >= self.max_in_flight {
            return None;
        }
        let retcode = loop {
            let r = RetCode(self.next);
            self.next = self.next.wrapping_add(1);
            // Bounded: in flight plus kept is far below 2^32.
            if !self.in_flight.contains_key(&r) && !self.kept.contains_key(&r) {
                break r;
            }
        };
        self.expired.remove(&retcode);
        if keep {
            self.keep_started.push_back((retcode, now));
            // Answered calls stay in the queue until they reach its front: drop them in bulk.
            if self.keep_started.len() > 2 * self.max_in_flight + 16 {
                let live = &self.in_flight;
                self.keep_started.retain(|(r, _)| live.contains_key(r));
            }
        }
        self.in_flight.insert(
            retcode,
            InFlight {
                method,
                started: now,
                keep,
                waiter,
                _guard: guard,
            },
        );
        Some(retcode)
    }

    /// A reply arrived. Returns the waiter to wake with its outcome, if any; a reply to a
    /// `send` without a waiting `poll` is kept. `false` in the second field means no call
    /// had this retcode (a late reply after a cancel, or a confused peer): it is dropped.
    pub fn on_reply(
        &mut self,
        retcode: RetCode,
        status: Status,
        body: Bytes,
        now: Instant,
    ) -> (Option<(W, Outcome)>, bool) {
        let Some(call) = self.in_flight.remove(&retcode) else {
            return (None, false);
        };
        let outcome = match status {
            Status::OK => Ok(body),
            Status::UNKNOWN_METHOD => Err(RpcError::UnknownMethod(call.method)),
            Status::BAD_ARGUMENTS => Err(RpcError::BadArguments(packet::decode_message(&body))),
            Status::HANDLER_ERROR => Err(RpcError::Handler(packet::decode_message(&body))),
            Status::HANDLER_PANICKED => Err(RpcError::HandlerPanicked),
            Status::BUSY => Err(RpcError::Busy),
            other => Err(RpcError::UnknownStatus(other)),
        };
        (
            self.settle(retcode, call.keep, call.waiter, outcome, now),
            true,
        )
    }

    /// Hands `outcome` to the waiter, or keeps it for `poll`.
    fn settle(
        &mut self,
        retcode: RetCode,
        keep: bool,
        waiter: Option<W>,
        outcome: Outcome,
        now: Instant,
    ) -> Option<(W, Outcome)> {
        match waiter {
            Some(w) => Some((w, outcome)),
            None if keep => {
                self.keep(retcode, outcome, now);
                None
            }
            None => None,
        }
    }

    fn keep(&mut self, retcode: RetCode, outcome: Outcome, now: Instant) {
        let size = body_len(&outcome);
        while self.kept.len() >= self.max_kept
            || (!self.kept.is_empty() && self.kept_bytes + size > self.max_kept_bytes)
        {
            let Some(oldest) = self.kept_order.pop_front() else {
                break;
            };
            if let Some(k) = self.kept.remove(&oldest) {
                self.kept_bytes -= body_len(&k.outcome);
                self.remember_expired(oldest);
            }
        }
        self.kept_bytes += size;
        self.kept.insert(retcode, Kept { at: now, outcome });
        self.kept_order.push_back(retcode);
        // Entries taken by `poll` stay in the order queue until here: drop them in bulk.
        if self.kept_order.len() > 2 * self.max_kept + 16 {
            let kept = &self.kept;
            self.kept_order.retain(|r| kept.contains_key(r));
        }
    }

    fn remember_expired(&mut self, retcode: RetCode) {
        if self.expired.insert(retcode) {
            self.expired_order.push_back(retcode);
        }
        while self.expired_order.len() > 4 * self.max_kept {
            if let Some(old) = self.expired_order.pop_front() {
                self.expired.remove(&old);
            }
        }
    }

    /// The caller stopped waiting (`execute` timed out or was dropped). Returns true when
    /// the call was still in flight, so a cancel should be sent.
    pub fn abandon(&mut self, retcode: RetCode) -> bool {
        self.in_flight.remove(&retcode).is_some()
    }

    /// Evicts kept replies older than `keep_replies_for` and expires `send` calls that
    /// waited that long for a reply. Returns the expired calls, to be cancelled, each with
    /// the waiter of a `poll` in progress to wake with [`RpcError::Expired`].
    pub fn expire(&mut self, now: Instant) -> Vec<(RetCode, Option<W>)> {
        let keep_for = self.keep_for;
        let old = |at: Instant| now.saturating_duration_since(at) >= keep_for;
        while let Some(&r) = self.kept_order.front() {
            match self.kept.get(&r) {
                None => {
                    self.kept_order.pop_front();
                }
                Some(k) if old(k.at) => {
                    self.kept_bytes -= body_len(&k.outcome);
                    self.kept_order.pop_front();
                    self.kept.remove(&r);
                    self.remember_expired(r);
                }
                Some(_) => break,
            }
        }
        let mut out = Vec::new();
        while let Some(&(r, at)) = self.keep_started.front() {
            let live = self.in_flight.get(&r).is_some_and(|c| c.keep);
            if live && !old(at) {
                break;
            }
            self.keep_started.pop_front();
            if live {
                let call = self.in_flight.remove(&r).expect("checked live just above");
                self.remember_expired(r);
                out.push((r, call.waiter));
            }
        }
        out
    }

    /// Where `retcode` stands; a kept reply is taken.
    pub fn poll(&mut self, retcode: RetCode) -> PollState {
        if let Some(k) = self.kept.remove(&retcode) {
            self.kept_bytes -= body_len(&k.outcome);
            return PollState::Ready(k.outcome);
        }
        match self.in_flight.get(&retcode) {
            Some(c) if c.keep => PollState::InFlight,
            Some(_) => PollState::Unknown, // an `execute` call: not ours to poll
            None if self.expired.contains(&retcode) => PollState::Expired,
            None => PollState::Unknown,
        }
    }

    /// When the `send` call `retcode`, still in flight, expires unanswered.
    pub fn expiry(&self, retcode: RetCode) -> Option<Instant> {
        match self.in_flight.get(&retcode) {
            Some(c) if c.keep => Some(c.started + self.keep_for),
            _ => None,
        }
    }

    /// Attaches the waiter of a `poll` to a `send` call in flight. Fails (giving the
    /// waiter back) when the call is not in flight or another poll already waits on it.
    pub fn set_poller(&mut self, retcode: RetCode, waiter: W) -> Result<(), W> {
        match self.in_flight.get_mut(&retcode) {
            Some(c) if c.keep && c.waiter.is_none() => {
                c.waiter = Some(waiter);
                Ok(())
            }
            _ => Err(waiter),
        }
    }

    /// Detaches the waiter of a `poll` that stopped waiting (timeout or drop).
    pub fn clear_poller(&mut self, retcode: RetCode) {
        if let Some(c) = self.in_flight.get_mut(&retcode)
            && c.keep
        {
            c.waiter = None;
        }
    }

    /// Takes every kept reply, oldest first.
    pub fn take_ready(&mut self) -> Vec<(RetCode, Outcome)> {
        let mut out = Vec::with_capacity(self.kept.len());
        for r in self.kept_order.drain(..) {
            if let Some(k) = self.kept.remove(&r) {
                out.push((r, k.outcome));
            }
        }
        self.kept_bytes = 0;
        out
    }

    /// The connection dropped: every call in flight ends with
    /// [`RpcError::ConnectionLost`] now. Returns the waiters to wake; `send` calls nobody
    /// waits on keep that outcome for `poll`.
    pub fn connection_lost(&mut self, now: Instant) -> Vec<(W, Outcome)> {
        let mut wake = Vec::new();
        let calls: Vec<_> = self.in_flight.drain().collect();
        self.keep_started.clear();
        for (r, call) in calls {
            if let Some(w) = self.settle(
                r,
                call.keep,
                call.waiter,
                Err(RpcError::ConnectionLost),
                now,
            ) {
                wake.push(w);
            }
        }
        wake
    }
}

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
    /// Queue full: a request is answered [`Status::BUSY`] with this retcode.
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
    Running(Option<H>),
}

/// The callee's side: which handlers run, which requests wait, the concurrency limit.
#[derive(Debug)]
pub struct Serve<H> {
    max_running: usize,
    max_queued: usize,
    max_queued_bytes: usize,
    queued_bytes: usize,
    calls: HashMap<RetCode, Slot<H>>,
    running: usize,
    queue: VecDeque<Job>,
}

impl<H> Serve<H> {
    /// An empty table with the limits of `config`.
    pub fn new(config: &RpcConfig) -> Self {
        Self {
            max_running: config.max_concurrent_handlers,
            max_queued: config.max_queued_requests,
            max_queued_bytes: config.max_queued_bytes,
            queued_bytes: 0,
            calls: HashMap::new(),
            running: 0,
            queue: VecDeque::new(),
        }
    }

    /// Handlers running now (calls and notifications).
    pub fn running(&self) -> usize {
        self.running
    }

    /// Requests and notifications waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of arguments held by queued requests and notifications.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
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
                self.calls.insert(*retcode, Slot::Running(None));
            }
            return Admit::Run(job);
        }
        let size = job.args_len();
        if self.queue.len() >= self.max_queued || self.queued_bytes + size > self.max_queued_bytes {
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

    /// Attaches the abort handle of a call's handler once spawned. Returns it back if the
    /// call ended (finished or cancelled) in the meantime.
    pub fn attach(&mut self, retcode: RetCode, handle: H) -> Option<H> {
        match self.calls.get_mut(&retcode) {
            Some(Slot::Running(h)) => {
                *h = Some(handle);
                None
            }
            _ => Some(handle),
        }
    }

    /// The caller cancelled `retcode`.
    pub fn cancel(&mut self, retcode: RetCode) -> (Cancelled<H>, Option<Job>) {
        match self.calls.remove(&retcode) {
            Some(Slot::Running(h)) => (Cancelled::Running(h), self.release()),
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

    /// A call's handler finished. Returns whether the reply should still be sent (false
    /// after a cancel) and the next job to run in the freed slot.
    pub fn finish_call(&mut self, retcode: RetCode) -> (bool, Option<Job>) {
        match self.calls.get(&retcode) {
            Some(Slot::Running(_)) => {
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
            self.calls.insert(*retcode, Slot::Running(None));
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
                Slot::Running(h) => h,
                Slot::Queued => None,
            })
            .collect()
    }
}

/// Counters of one connection, for logs and tests. Nothing a peer does is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Packets that did not decode (dropped).
    pub malformed: u64,
    /// Replies for no call in flight (late after a cancel or timeout; dropped).
    pub unmatched_replies: u64,
    /// Requests refused with `BUSY` because the queue was full.
    pub busy: u64,
    /// Notifications dropped because the queue was full.
    pub dropped_notifications: u64,
    /// Requests reusing a retcode still running or queued (dropped).
    pub duplicates: u64,
    /// Cancels received.
    pub cancels: u64,
}

/// What the IO layer must do after [`Session::on_packet`].
#[derive(Debug)]
pub enum Action<W, H> {
    /// Nothing (a packet dropped and counted, a cancel of an unknown call, a queued job).
    Nothing,
    /// Spawn the handler for this job.
    Run(Job),
    /// Send this packet to the peer.
    Send(Bytes),
    /// Wake a caller with the outcome of its call.
    Wake(W, Outcome),
    /// Abort this running handler (cancelled); then run the next job if any.
    Abort(Option<H>, Option<Job>),
}

/// One connection's RPC state: [`Calls`], [`Serve`] and [`Stats`], fed packet by packet.
#[derive(Debug)]
pub struct Session<W, G, H> {
    /// The caller's side.
    pub calls: Calls<W, G>,
    /// The callee's side.
    pub serve: Serve<H>,
    /// Counters.
    pub stats: Stats,
}

impl<W, G, H> Session<W, G, H> {
    /// A fresh session with the limits of `config`.
    pub fn new(config: &RpcConfig) -> Self {
        Self {
            calls: Calls::new(config),
            serve: Serve::new(config),
            stats: Stats::default(),
        }
    }

    /// Takes one packet from the peer. A packet that does not decode is counted and its
    /// error returned; the session is unchanged and the connection may go on.
    pub fn on_packet(&mut self, frame: &[u8], now: Instant) -> Result<Action<W, H>, PacketError> {
        let packet = match Packet::decode(frame) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        Ok(match packet {
            Packet::Request {
                retcode,
                method: Method::Opcode(Opcode::PING),
                args,
            } => {
                let mut b = BytesMut::new();
                packet::encode_reply(&mut b, retcode, Status::OK, &args);
                Action::Send(b.freeze())
            }
            Packet::Request {
                retcode,
                method,
                args,
            } => self.admit(Job::Call {
                retcode,
                method,
                args,
            }),
            Packet::Notification {
                method: Method::Opcode(Opcode::PING),
                ..
            } => Action::Nothing,
            Packet::Notification { method, args } => self.admit(Job::Notify { method, args }),
            Packet::Reply {
                retcode,
                status,
                body,
            } => match self.calls.on_reply(retcode, status, body, now) {
                (Some((w, outcome)), _) => Action::Wake(w, outcome),
                (None, true) => Action::Nothing,
                (None, false) => {
                    self.stats.unmatched_replies += 1;
                    Action::Nothing
                }
            },
            Packet::Cancel { retcode } => {
                self.stats.cancels += 1;
                match self.serve.cancel(retcode) {
                    (Cancelled::Running(h), next) => Action::Abort(h, next),
                    (Cancelled::Dequeued | Cancelled::Unknown, _) => Action::Nothing,
                }
            }
        })
    }

    fn admit(&mut self, job: Job) -> Action<W, H> {
        match self.serve.admit(job) {
            Admit::Run(job) => Action::Run(job),
            Admit::Queued => Action::Nothing,
            Admit::Busy(retcode) => {
                self.stats.busy += 1;
                let mut b = BytesMut::new();
                packet::encode_reply(&mut b, retcode, Status::BUSY, &[]);
                Action::Send(b.freeze())
            }
            Admit::Dropped => {
                self.stats.dropped_notifications += 1;
                Action::Nothing
            }
            Admit::Duplicate(_) => {
                self.stats.duplicates += 1;
                Action::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> RpcConfig {
        RpcConfig::default()
            .max_in_flight(4)
            .max_kept_replies(3)
            .keep_replies_for(Duration::from_secs(10))
            .max_concurrent_handlers(2)
            .max_queued_requests(2)
    }

    fn ok(b: &'static [u8]) -> (Status, Bytes) {
        (Status::OK, Bytes::from_static(b))
    }

    #[test]
    fn retcodes_are_unique_and_in_flight_is_bounded() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config());
        let rs: Vec<_> = (0..4)
            .map(|i| c.start(Opcode(1).into(), false, Some(i), (), t).unwrap())
            .collect();
        assert_eq!(rs, [RetCode(1), RetCode(2), RetCode(3), RetCode(4)]);
        assert_eq!(c.start(Opcode(1).into(), false, Some(9), (), t), None);
        let (s, b) = ok(b"x");
        let (woken, known) = c.on_reply(RetCode(2), s, b, t);
        assert!(known);
        assert_eq!(woken.unwrap(), (1, Ok(Bytes::from_static(b"x"))));
        assert_eq!(c.in_flight(), 3);
        assert_eq!(
            c.start(Opcode(1).into(), false, Some(5), (), t),
            Some(RetCode(5))
        );
    }

    #[test]
    fn retcodes_wrap_and_skip_those_in_use() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config());
        c.next = u32::MAX;
        assert_eq!(
            c.start("a".into(), false, Some(0), (), t),
            Some(RetCode(u32::MAX))
        );
        assert_eq!(c.start("a".into(), false, Some(0), (), t), Some(RetCode(0)));
        // Force a wrap onto codes still in use: 0 and u32::MAX are skipped.
        c.next = u32::MAX;
        assert_eq!(c.start("a".into(), false, Some(0), (), t), Some(RetCode(1)));
    }

    #[test]
    fn statuses_become_errors() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config().max_in_flight(16));
        let cases = [
            (
                Status::UNKNOWN_METHOD,
                Bytes::new(),
                RpcError::UnknownMethod("m".into()),
            ),
            (
                Status::BAD_ARGUMENTS,
                packet::message_body("missing field"),
                RpcError::BadArguments("missing field".into()),
            ),
            (
                Status::HANDLER_ERROR,
                packet::message_body("nope"),
                RpcError::Handler("nope".into()),
            ),
            (
                Status::HANDLER_PANICKED,
                Bytes::new(),
                RpcError::HandlerPanicked,
            ),
            (Status::BUSY, Bytes::new(), RpcError::Busy),
            (
                Status(77),
                Bytes::new(),
                RpcError::UnknownStatus(Status(77)),
            ),
        ];
        for (i, (status, body, want)) in cases.into_iter().enumerate() {
            let r = c.start("m".into(), false, Some(i as u32), (), t).unwrap();
            let (woken, _) = c.on_reply(r, status, body, t);
            assert_eq!(woken.unwrap(), (i as u32, Err(want)));
        }
    }

    #[test]
    fn unmatched_and_abandoned_replies_are_dropped() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config());
        let r = c.start("m".into(), false, Some(1), (), t).unwrap();
        assert!(c.abandon(r));
        assert!(!c.abandon(r));
        let (s, b) = ok(b"late");
        assert_eq!(c.on_reply(r, s, b, t), (None, false));
        assert_eq!(c.kept(), 0);
    }

    #[test]
    fn kept_replies_are_polled_once() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config());
        let r = c.start("m".into(), true, None, (), t).unwrap();
        assert!(matches!(c.poll(r), PollState::InFlight));
        let (s, b) = ok(b"v");
        assert_eq!(c.on_reply(r, s, b, t), (None, true));
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.kept(), 1);
        assert!(matches!(c.poll(r), PollState::Ready(Ok(b)) if &b[..] == b"v"));
        assert!(matches!(c.poll(r), PollState::Unknown));
        assert!(matches!(c.poll(RetCode(999)), PollState::Unknown));
    }

    #[test]
    fn a_waiting_poll_gets_the_reply_directly() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config());
        let r = c.start("m".into(), true, None, (), t).unwrap();
        assert_eq!(c.expiry(r), Some(t + Duration::from_secs(10)));
        c.set_poller(r, 7).unwrap();
        assert_eq!(c.set_poller(r, 8), Err(8), "one poll at a time");
        c.clear_poller(r);
        c.set_poller(r, 9).unwrap();
        let (s, b) = ok(b"v");
        let (woken, _) = c.on_reply(r, s, b, t);
        assert_eq!(woken.unwrap().0, 9);
        assert_eq!(c.kept(), 0);
        // An `execute` call cannot be polled.
        let e = c.start("m".into(), false, Some(1), (), t).unwrap();
        assert_eq!(c.set_poller(e, 2), Err(2));
        assert!(matches!(c.poll(e), PollState::Unknown));
    }

    #[test]
    fn kept_replies_are_evicted_by_count() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config().max_in_flight(16));
        let rs: Vec<_> = (0..5)
            .map(|_| c.start("m".into(), true, None, (), t).unwrap())
            .collect();
        for &r in &rs {
            let (s, b) = ok(b"v");
            c.on_reply(r, s, b, t);
        }
        assert_eq!(c.kept(), 3);
        assert!(matches!(c.poll(rs[0]), PollState::Expired));
        assert!(matches!(c.poll(rs[1]), PollState::Expired));
        assert!(matches!(c.poll(rs[2]), PollState::Ready(Ok(_))));
        let ready: Vec<_> = c.take_ready().into_iter().map(|(r, _)| r).collect();
        assert_eq!(ready, [rs[3], rs[4]]);
        assert!(c.take_ready().is_empty());
    }

    #[test]
    fn kept_replies_are_evicted_by_bytes() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config().max_in_flight(16).max_kept_bytes(10));
        let rs: Vec<_> = (0..4)
            .map(|_| c.start("m".into(), true, None, (), t).unwrap())
            .collect();
        for (&r, body) in rs
            .iter()
            .zip([&b"1234"[..], b"5678", b"90", b"abcdefghijklmnop"])
        {
            c.on_reply(r, Status::OK, Bytes::copy_from_slice(body), t);
            assert!(
                c.kept_bytes() <= 10 || c.kept() == 1,
                "{} bytes",
                c.kept_bytes()
            );
        }
        // The 16-byte reply alone exceeds the limit: everything older was evicted for it.
        assert_eq!((c.kept(), c.kept_bytes()), (1, 16));
        assert!(matches!(c.poll(rs[0]), PollState::Expired));
        assert!(matches!(c.poll(rs[2]), PollState::Expired));
        assert!(matches!(c.poll(rs[3]), PollState::Ready(Ok(_))));
        assert_eq!(c.kept_bytes(), 0);
    }

    #[test]
    fn kept_replies_and_unanswered_sends_expire_by_age() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config());
        let answered = c.start("m".into(), true, None, (), t).unwrap();
        let unanswered = c.start("m".into(), true, None, (), t).unwrap();
        let polled = c
            .start("m".into(), true, None, (), t + Duration::from_secs(1))
            .unwrap();
        c.set_poller(polled, 42).unwrap();
        let (s, b) = ok(b"v");
        c.on_reply(answered, s, b, t + Duration::from_secs(2));

        assert!(c.expire(t + Duration::from_secs(9)).is_empty());
        assert_eq!(c.kept(), 1);
        // 10 s after its start the unanswered call expires and must be cancelled.
        let gone = c.expire(t + Duration::from_secs(10));
        assert_eq!(gone, [(unanswered, None)]);
        let gone = c.expire(t + Duration::from_secs(11));
        assert_eq!(gone, [(polled, Some(42))]);
        assert_eq!(c.kept(), 1, "kept 2 s after start, 10 s not yet over");
        assert!(c.expire(t + Duration::from_secs(12)).is_empty());
        assert_eq!(c.kept(), 0);
        assert!(matches!(c.poll(answered), PollState::Expired));
        assert!(matches!(c.poll(unanswered), PollState::Expired));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn bookkeeping_stays_bounded_under_churn() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config());
        for i in 0..10_000u32 {
            let r = c.start("m".into(), true, None, (), t).unwrap();
            let (s, b) = ok(b"v");
            c.on_reply(r, s, b, t);
            if i % 2 == 0 {
                assert!(matches!(c.poll(r), PollState::Ready(_)));
            }
        }
        assert!(c.kept_order.len() <= 2 * 3 + 17);
        assert!(c.expired.len() <= 12);
        assert!(c.keep_started.len() <= 2 * 4 + 17);
    }

    #[test]
    fn connection_lost_ends_every_call_at_once() {
        let t = Instant::now();
        let mut c = Calls::<u32, ()>::new(&config());
        let a = c.start("m".into(), false, Some(1), (), t).unwrap();
        let b = c.start("m".into(), true, None, (), t).unwrap();
        let p = c.start("m".into(), true, None, (), t).unwrap();
        c.set_poller(p, 3).unwrap();
        let mut woken = c.connection_lost(t);
        woken.sort_by_key(|(w, _)| *w);
        assert_eq!(
            woken,
            [
                (1, Err(RpcError::ConnectionLost)),
                (3, Err(RpcError::ConnectionLost))
            ]
        );
        assert_eq!(c.in_flight(), 0);
        assert!(matches!(
            c.poll(b),
            PollState::Ready(Err(RpcError::ConnectionLost))
        ));
        assert!(matches!(c.poll(a), PollState::Unknown));
    }

    #[test]
    fn guards_are_released_when_calls_leave_flight() {
        use std::rc::Rc;
        let t = Instant::now();
        let guard = Rc::new(());
        let mut c = Calls::<u32, Rc<()>>::new(&config());
        let a = c
            .start("m".into(), false, Some(1), guard.clone(), t)
            .unwrap();
        let b = c.start("m".into(), true, None, guard.clone(), t).unwrap();
        let _d = c.start("m".into(), true, None, guard.clone(), t).unwrap();
        assert_eq!(Rc::strong_count(&guard), 4);
        c.abandon(a);
        let (s, body) = ok(b"v");
        c.on_reply(b, s, body, t);
        assert_eq!(
            Rc::strong_count(&guard),
            2,
            "a kept reply is no longer in flight"
        );
        c.connection_lost(t);
        assert_eq!(Rc::strong_count(&guard), 1);
    }

    fn call(r: u32) -> Job {
        Job::Call {
            retcode: RetCode(r),
            method: "m".into(),
            args: Bytes::new(),
        }
    }

    fn note() -> Job {
        Job::Notify {
            method: "n".into(),
            args: Bytes::new(),
        }
    }

    #[test]
    fn handlers_are_limited_then_queued_then_busy() {
        let mut s = Serve::<&str>::new(&config());
        assert_eq!(s.admit(call(1)), Admit::Run(call(1)));
        assert_eq!(s.admit(note()), Admit::Run(note()));
        assert_eq!(s.admit(call(2)), Admit::Queued);
        assert_eq!(s.admit(call(2)), Admit::Duplicate(RetCode(2)));
        assert_eq!(s.admit(call(1)), Admit::Duplicate(RetCode(1)));
        assert_eq!(s.admit(note()), Admit::Queued);
        assert_eq!(s.admit(call(3)), Admit::Busy(RetCode(3)));
        assert_eq!(s.admit(note()), Admit::Dropped);
        assert_eq!((s.running(), s.queued()), (2, 2));
        // Slots pass to the queue in order.
        assert_eq!(s.finish_call(RetCode(1)), (true, Some(call(2))));
        assert_eq!(s.finish_notification(), Some(note()));
        assert_eq!(s.finish_call(RetCode(2)), (true, None));
        assert_eq!(s.finish_notification(), None);
        assert_eq!((s.running(), s.queued()), (0, 0));
    }

    #[test]
    fn queued_arguments_are_bounded_in_bytes() {
        let mut s = Serve::<&str>::new(&config().max_queued_requests(100).max_queued_bytes(8));
        let big = |r: u32, n: usize| Job::Call {
            retcode: RetCode(r),
            method: "m".into(),
            args: Bytes::from(vec![0; n]),
        };
        assert!(
            matches!(s.admit(big(1, 100)), Admit::Run(_)),
            "running jobs are not queued"
        );
        assert!(matches!(s.admit(big(2, 100)), Admit::Run(_)));
        assert_eq!(s.admit(big(3, 5)), Admit::Queued);
        assert_eq!(s.admit(big(4, 4)), Admit::Busy(RetCode(4)));
        assert_eq!(s.admit(big(5, 3)), Admit::Queued);
        assert_eq!(s.queued_bytes(), 8);
        assert_eq!(s.cancel(RetCode(3)), (Cancelled::Dequeued, None));
        assert_eq!(s.queued_bytes(), 3);
        assert!(matches!(s.finish_call(RetCode(1)), (true, Some(_))));
        assert_eq!(s.queued_bytes(), 0);
        s.admit(big(6, 2));
        s.connection_lost();
        assert_eq!(s.queued_bytes(), 0);
    }

    #[test]
    fn cancel_aborts_running_and_dequeues_waiting() {
        let mut s = Serve::<&str>::new(&config());
        s.admit(call(1));
        s.admit(call(2));
        assert_eq!(s.attach(RetCode(1), "h1"), None);
        s.admit(call(3));
        s.admit(call(4));
        assert_eq!(s.cancel(RetCode(4)), (Cancelled::Dequeued, None));
        assert_eq!(s.queued(), 1);
        assert_eq!(
            s.cancel(RetCode(1)),
            (Cancelled::Running(Some("h1")), Some(call(3)))
        );
        // The aborted handler's late finish sends nothing and frees nothing twice.
        assert_eq!(s.finish_call(RetCode(1)), (false, None));
        assert_eq!(s.running(), 2);
        assert_eq!(s.cancel(RetCode(1)), (Cancelled::Unknown, None));
        // Cancelled before its handle was attached: the handle comes back to abort.
        assert_eq!(s.cancel(RetCode(2)), (Cancelled::Running(None), None));
        assert_eq!(s.attach(RetCode(2), "h2"), Some("h2"));
        s.attach(RetCode(3), "h3");
        assert_eq!(s.connection_lost(), ["h3"]);
        assert_eq!((s.running(), s.queued()), (0, 0));
    }

    #[test]
    fn session_dispatches_packets() {
        let t = Instant::now();
        let mut s = Session::<u32, (), &str>::new(&config());
        let r = s.calls.start("m".into(), false, Some(5), (), t).unwrap();
        let reply = Packet::Reply {
            retcode: r,
            status: Status::OK,
            body: Bytes::from_static(b"ok"),
        };
        assert!(matches!(
            s.on_packet(&reply.to_bytes(), t),
            Ok(Action::Wake(5, Ok(b))) if &b[..] == b"ok"
        ));
        assert!(matches!(
            s.on_packet(&reply.to_bytes(), t),
            Ok(Action::Nothing)
        ));
        assert_eq!(s.stats.unmatched_replies, 1);

        let ping = Packet::Request {
            retcode: RetCode(9),
            method: Opcode::PING.into(),
            args: Bytes::from_static(b"abc"),
        };
        let Ok(Action::Send(pong)) = s.on_packet(&ping.to_bytes(), t) else {
            panic!("ping is answered at once");
        };
        assert_eq!(
            Packet::decode(&pong).unwrap(),
            Packet::Reply {
                retcode: RetCode(9),
                status: Status::OK,
                body: Bytes::from_static(b"abc")
            }
        );

        let req = |r| {
            Packet::Request {
                retcode: RetCode(r),
                method: "work".into(),
                args: Bytes::new(),
            }
            .to_bytes()
        };
        assert!(matches!(s.on_packet(&req(1), t), Ok(Action::Run(_))));
        assert!(matches!(s.on_packet(&req(2), t), Ok(Action::Run(_))));
        assert!(matches!(s.on_packet(&req(3), t), Ok(Action::Nothing)));
        assert!(matches!(s.on_packet(&req(4), t), Ok(Action::Nothing)));
        let Ok(Action::Send(busy)) = s.on_packet(&req(5), t) else {
            panic!("a full queue answers BUSY");
        };
        assert!(matches!(
            Packet::decode(&busy).unwrap(),
            Packet::Reply {
                retcode: RetCode(5),
                status: Status::BUSY,
                ..
            }
        ));
        assert_eq!(s.stats.busy, 1);
        let cancel = Packet::Cancel {
            retcode: RetCode(1),
        }
        .to_bytes();
        assert!(matches!(
            s.on_packet(&cancel, t),
            Ok(Action::Abort(
                None,
                Some(Job::Call {
                    retcode: RetCode(3),
                    ..
                })
            ))
        ));
        assert!(matches!(
            s.on_packet(&[1, 99], t),
            Err(PacketError::Malformed(_))
        ));
        assert_eq!(s.stats.malformed, 1);
        assert_eq!(s.stats.cancels, 1);
    }
}
