//! The caller's side of a session: retcodes, calls in flight, replies kept for `poll`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Outcome;
use crate::config::RpcConfig;
use crate::error::RpcError;
use crate::method::{Method, RetCode, Status};
use crate::packet;

/// Hashes the retcodes of this side's calls with one multiplication (Fibonacci hashing)
/// in place of SipHash (about 1 % of the samples of `rpc/throughput-64B` in issue 13's
/// profile; a call hashes its retcode four to five times). Safe here: every key inserted
/// is a retcode this side picked (sequential, from 1 or the start a peer sets), so a peer
/// cannot choose keys that collide, and the probe length of any lookup depends on those
/// keys alone; a reply naming any other retcode is one failed lookup. The server's table
/// (`Serve`), keyed by the peer's retcodes, keeps SipHash.
#[derive(Debug, Default, Clone, Copy)]
struct RetCodeHasher(u64);

/// 2^64 divided by the golden ratio, odd: consecutive retcodes land in distinct buckets.
const FIBONACCI: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for RetCodeHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(FIBONACCI);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type ByRetCode = BuildHasherDefault<RetCodeHasher>;

/// A call this side made that awaits its reply.
#[derive(Debug)]
struct InFlight<W, G> {
    method: Method,
    /// When a `send` call (`keep`) started; `None` for an `execute` call, whose age
    /// nothing reads (the clock is read only for `send` calls).
    started: Option<Instant>,
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
    keep_for: Duration,
    in_flight: HashMap<RetCode, InFlight<W, G>, ByRetCode>,
    /// Start times of `send` calls in flight, oldest first (entries may be stale).
    keep_started: VecDeque<(RetCode, Instant)>,
    kept: HashMap<RetCode, Kept, ByRetCode>,
    /// Arrival order of kept replies, oldest first (entries may be stale).
    kept_order: VecDeque<RetCode>,
    expired: HashSet<RetCode, ByRetCode>,
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
            in_flight: HashMap::default(),
            keep_started: VecDeque::new(),
            kept: HashMap::default(),
            kept_order: VecDeque::new(),
            expired: HashSet::default(),
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
        self.start_with(method, keep, waiter, guard, || now)
    }

    /// [`start`](Self::start), reading the clock (`now`) only for a `send` call: an
    /// `execute` call's start time is never read.
    pub(crate) fn start_with(
        &mut self,
        method: Method,
        keep: bool,
        waiter: Option<W>,
        guard: G,
        now: impl FnOnce() -> Instant,
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
        let started = keep.then(now);
        if let Some(now) = started {
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
                started,
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
        self.on_reply_with(retcode, status, body, || now)
    }

    /// [`on_reply`](Self::on_reply), reading the clock (`now`) only when the reply is
    /// kept for `poll` (a `send` call's reply that no `poll` waits for).
    pub(crate) fn on_reply_with(
        &mut self,
        retcode: RetCode,
        status: Status,
        body: Bytes,
        now: impl FnOnce() -> Instant,
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
        now: impl FnOnce() -> Instant,
    ) -> Option<(W, Outcome)> {
        match waiter {
            Some(w) => Some((w, outcome)),
            None if keep => {
                self.keep(retcode, outcome, now());
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

    /// When [`expire`](Self::expire) next has work: the earliest moment a kept reply or an
    /// unanswered `send` call reaches the age limit, or `None` when there is neither.
    /// Takes `&mut self` to drop the stale entries of its queues on the way (they would
    /// otherwise be skipped again at every call).
    pub fn next_expiry(&mut self) -> Option<Instant> {
        while let Some(r) = self.kept_order.front() {
            if self.kept.contains_key(r) {
                break;
            }
            self.kept_order.pop_front();
        }
        while let Some((r, _)) = self.keep_started.front() {
            if self.in_flight.get(r).is_some_and(|c| c.keep) {
                break;
            }
            self.keep_started.pop_front();
        }
        let kept = self
            .kept_order
            .front()
            .and_then(|r| self.kept.get(r))
            .map(|k| k.at);
        let started = self.keep_started.front().map(|&(_, at)| at);
        let oldest = match (kept, started) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Past the clock's range means never.
        oldest.and_then(|at| at.checked_add(self.keep_for))
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
            Some(c) if c.keep => c.started.and_then(|at| at.checked_add(self.keep_for)),
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
                || now,
            ) {
                wake.push(w);
            }
        }
        wake
    }
}

#[cfg(test)]
#[path = "tests/calls.rs"]
mod tests;
