//! [`Session`]: one connection's RPC state, fed inputs (`handle_*`, calls from the API) and
//! polled for what to send, what to do and when to wake.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Admit, Calls, Cancelled, Job, Outcome, PollState, Serve};
use crate::config::RpcConfig;
use crate::error::RpcError;
use crate::method::{Method, Opcode, RetCode, Status};
use crate::packet::{self, Packet, PacketError};

/// Why a connection under a peer went away, for [`Session::handle_link_down`] and
/// [`PeerDriver::disconnected`](crate::PeerDriver::disconnected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The connection dropped (closed, reset, heartbeat timeout). A reconnect may follow.
    Lost,
    /// The link could not authenticate the peer; calls fail with
    /// [`RpcError::AuthFailed`] until a connection is made.
    AuthFailed,
    /// The connection ended and no other will follow (the [`PeerDriver`](crate::PeerDriver)
    /// is dropped): calls fail with [`RpcError::Stale`] from now on.
    Ended,
}

/// Counters of one connection, for logs and tests. Nothing a peer does is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Packets that did not decode (dropped).
    pub malformed: u64,
    /// Replies for no call in flight (late after a cancel or timeout; dropped).
    pub unmatched_replies: u64,
    /// Requests refused with `BUSY` because the queue was full.
    pub busy: u64,
    /// Requests refused with `BUSY` because the peer reads its answers too slowly: the
    /// outbox held [`RpcConfig::max_outbox_bytes`] or more (see there).
    pub busy_slow_reader: u64,
    /// Requests dropped without an answer because the outbox held twice
    /// [`RpcConfig::max_outbox_bytes`] or more: the peer had not read its earlier answers.
    pub unanswered_slow_reader: u64,
    /// Notifications dropped because the queue was full.
    pub dropped_notifications: u64,
    /// Requests reusing a retcode still running or queued (dropped).
    pub duplicates: u64,
    /// Cancels received.
    pub cancels: u64,
}

/// A packet for the peer, from [`Session::poll_transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The encoded packet: one whole link frame.
    pub packet: Bytes,
    /// A cancel, sent best effort: when the link has no room for it now, it may be dropped
    /// (the remote then runs the handler to its end and its reply is dropped on arrival).
    /// Every other packet must be sent, waiting for room if need be.
    pub droppable: bool,
}

/// Names one handler run, to report its end with [`Session::handle_done`] and to attach
/// its abort handle with [`Session::attach`]. A ticket of an earlier connection is stale:
/// what is reported with it is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    retcode: Option<RetCode>,
    /// The call's run number ([`Serve::run_of`](crate::proto::Serve::run_of)); 0 for a
    /// notification.
    run: u64,
}

impl Ticket {
    /// The call's retcode; `None` for a notification (which gets no reply).
    pub fn retcode(&self) -> Option<RetCode> {
        self.retcode
    }
}

/// How a handler ended, for [`Session::handle_done`]: what the caller is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The result, postcard-encoded: answered [`Status::OK`].
    Ok(Bytes),
    /// No handler is bound to the method: [`Status::UNKNOWN_METHOD`].
    UnknownMethod,
    /// The arguments did not decode, and why: [`Status::BAD_ARGUMENTS`].
    BadArguments(String),
    /// The handler returned an error with this message: [`Status::HANDLER_ERROR`].
    Failed(String),
    /// The handler panicked: [`Status::HANDLER_PANICKED`].
    Panicked,
}

impl Answer {
    /// The reply's status and body.
    fn into_reply(self) -> (Status, Bytes) {
        match self {
            Self::Ok(body) => (Status::OK, body),
            Self::UnknownMethod => (Status::UNKNOWN_METHOD, Bytes::new()),
            Self::BadArguments(m) => (Status::BAD_ARGUMENTS, packet::message_body(&m)),
            Self::Failed(m) => (Status::HANDLER_ERROR, packet::message_body(&m)),
            Self::Panicked => (Status::HANDLER_PANICKED, Bytes::new()),
        }
    }
}

/// What the IO layer must do, from [`Session::poll_event`].
#[derive(Debug)]
pub enum SessionEvent<W, H> {
    /// Run the handler of `method` with `args`, then report its end with
    /// [`handle_done`](Session::handle_done).
    Run {
        /// Names this run.
        ticket: Ticket,
        /// The method whose handler to run.
        method: Method,
        /// Postcard-encoded arguments.
        args: Bytes,
        /// The job came with the packet just handled, and the IO layer may poll it inline;
        /// otherwise it waited in the queue and another job's end released it.
        fresh: bool,
    },
    /// Wake a caller with the outcome of its call.
    Wake(W, Outcome),
    /// Abort this running handler: its call was cancelled, or the connection lost.
    Abort(H),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Down(Disconnect),
}

/// One connection's RPC state: [`Calls`], [`Serve`] and [`SessionStats`], and the packets and
/// events it has for the IO layer. See the [module docs](super) for how it is driven.
///
/// A new session is disconnected: calls fail with [`RpcError::NotConnected`] until
/// [`handle_link_up`](Self::handle_link_up).
#[derive(Debug)]
pub struct Session<W, G, H> {
    calls: Calls<W, G>,
    serve: Serve<H>,
    stats: SessionStats,
    link: Link,
    /// Bumped at every link up and down: tickets of an older connection are stale.
    epoch: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SessionEvent<W, H>>,
    /// Bytes the IO layer holds for the peer, as last reported by `set_outbox_bytes`.
    outbox_bytes: usize,
    max_outbox_bytes: usize,
}

impl<W, G, H> Session<W, G, H> {
    /// A fresh, disconnected session with the limits of `config`.
    pub fn new(config: &RpcConfig) -> Self {
        Self {
            calls: Calls::new(config),
            serve: Serve::new(config),
            stats: SessionStats::default(),
            link: Link::Down(Disconnect::Lost),
            epoch: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            outbox_bytes: 0,
            max_outbox_bytes: config.max_outbox_bytes,
        }
    }

    /// The IO layer holds `bytes` of packets for the peer that the link has not taken yet
    /// (its outbox). From [`RpcConfig::max_outbox_bytes`] on, the peer's new requests are
    /// answered `BUSY` without running, and from twice that dropped unanswered; see there.
    /// Report it whenever it changes; a new link starts at 0.
    pub fn set_outbox_bytes(&mut self, bytes: usize) {
        self.outbox_bytes = bytes;
    }

    /// The memory budget the IO layer draws on has room for `bytes` more of queued
    /// requests' arguments (see [`Serve::set_room`]): a request that must wait for a
    /// handler slot and needs more is answered `BUSY` (counted in [`SessionStats::busy`]), a
    /// notification dropped. Report it before each packet; the default is unlimited.
    pub fn set_budget_room(&mut self, bytes: usize) {
        self.serve.set_room(bytes);
    }

    /// True while the outbox holds [`RpcConfig::max_outbox_bytes`] or more: requests are
    /// refused.
    pub fn is_backed_up(&self) -> bool {
        self.outbox_bytes >= self.max_outbox_bytes
    }

    /// Makes `first` the next retcode handed out (default 1); see
    /// [`Calls::set_next_retcode`].
    pub fn set_next_retcode(&mut self, first: u32) {
        self.calls.set_next_retcode(first);
    }

    /// The caller's side: calls in flight, kept replies.
    pub fn calls(&self) -> &Calls<W, G> {
        &self.calls
    }

    /// The callee's side: running and queued handlers.
    pub fn serve(&self) -> &Serve<H> {
        &self.serve
    }

    /// What the remote sent that was dropped or refused.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// True while a link is up.
    pub fn is_connected(&self) -> bool {
        self.link == Link::Up
    }

    /// `Ok` while a link is up; otherwise why a call cannot be made now:
    /// [`RpcError::AuthFailed`] after a failed authentication, else
    /// [`RpcError::NotConnected`].
    pub fn check_connected(&self) -> Result<(), RpcError> {
        match self.link {
            Link::Up => Ok(()),
            Link::Down(Disconnect::AuthFailed) => Err(RpcError::AuthFailed),
            Link::Down(Disconnect::Ended) => Err(RpcError::Stale),
            Link::Down(Disconnect::Lost) => Err(RpcError::NotConnected),
        }
    }

    /// True when nothing is in flight, running or queued: no call of ours awaits a reply,
    /// no handler runs, no request waits for one and no answer waits in the IO layer's
    /// outbox. Kept replies do not count.
    pub fn is_idle(&self) -> bool {
        self.calls.in_flight() == 0 && !self.is_serving()
    }

    /// True while a handler runs, a request or notification waits for one, or answers wait
    /// in the IO layer's outbox ([`set_outbox_bytes`](Self::set_outbox_bytes)): what a
    /// graceful shutdown waits for, so that answers are handed to the link before it closes.
    pub fn is_serving(&self) -> bool {
        self.serve.running() > 0 || self.serve.queued() > 0 || self.outbox_bytes > 0
    }

    /// A link is up: packets go out from now on.
    pub fn handle_link_up(&mut self) {
        self.epoch += 1;
        self.link = Link::Up;
        self.outbox_bytes = 0;
    }

    /// The link dropped: every call in flight ends with
    /// [`ConnectionLost`](RpcError::ConnectionLost) now (a [`SessionEvent::Wake`] each, or the
    /// outcome kept for `poll`), running handlers are aborted ([`SessionEvent::Abort`]), queued
    /// requests and unsent packets dropped (nobody could receive their replies), and
    /// every [`Ticket`] handed out so far is stale.
    pub fn handle_link_down(&mut self, why: Disconnect, now: Instant) {
        self.epoch += 1;
        self.link = Link::Down(why);
        self.transmits.clear();
        self.outbox_bytes = 0;
        self.events
            .retain(|e| !matches!(e, SessionEvent::Run { .. }));
        for (w, outcome) in self.calls.connection_lost(now) {
            self.events.push_back(SessionEvent::Wake(w, outcome));
        }
        for h in self.serve.connection_lost() {
            self.events.push_back(SessionEvent::Abort(h));
        }
    }

    /// Takes one packet (one whole link frame) from the peer. A packet that does not
    /// decode is counted and its error returned; the session is unchanged and the
    /// connection may go on.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), PacketError> {
        self.handle_packet_with(|| now, packet)
    }

    /// [`handle_packet`](Self::handle_packet), reading the clock (`now`) only when the
    /// packet needs the time: a reply kept for `poll`. Requests, notifications, cancels
    /// and the replies of `execute` calls read none.
    pub(crate) fn handle_packet_with(
        &mut self,
        now: impl FnOnce() -> Instant,
        packet: &[u8],
    ) -> Result<(), PacketError> {
        let packet = match Packet::decode(packet) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        match packet {
            // Whatever the method: a slow reader's requests would only add to its backlog.
            Packet::Request { .. }
                if self.outbox_bytes >= self.max_outbox_bytes.saturating_mul(2) =>
            {
                self.stats.unanswered_slow_reader += 1;
            }
            Packet::Request { retcode, .. } if self.is_backed_up() => {
                self.stats.busy_slow_reader += 1;
                self.reply(retcode, Status::BUSY, &[]);
            }
            // PING takes a handler slot like any method: answered in `run`.
            Packet::Request {
                retcode,
                method,
                args,
            } => self.admit(Job::Call {
                retcode,
                method,
                args,
            }),
            Packet::Notification { method, args } => self.admit(Job::Notify { method, args }),
            Packet::Reply {
                retcode,
                status,
                body,
            } => match self.calls.on_reply_with(retcode, status, body, now) {
                (Some((w, outcome)), _) => self.events.push_back(SessionEvent::Wake(w, outcome)),
                (None, true) => {}
                (None, false) => self.stats.unmatched_replies += 1,
            },
            Packet::Cancel { retcode } => {
                self.stats.cancels += 1;
                if let (Cancelled::Running(h), next) = self.serve.cancel(retcode) {
                    if let Some(h) = h {
                        self.events.push_back(SessionEvent::Abort(h));
                    }
                    if let Some(job) = next {
                        self.run(job, false);
                    }
                }
            }
        }
        Ok(())
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work (a kept reply or an
    /// unanswered `send` call reaches [`RpcConfig::keep_replies_for`]); `None` when
    /// nothing ages. Calling it earlier or more often is harmless.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.calls.next_expiry()
    }

    /// Applies the age limits at `now`: kept replies past it are evicted, and `send` calls
    /// unanswered that long expire, each with a cancel for the peer and, if a `poll` waits
    /// on it, a [`SessionEvent::Wake`] with [`RpcError::Expired`].
    pub fn handle_timeout(&mut self, now: Instant) {
        for (retcode, waiter) in self.calls.expire(now) {
            if let Some(w) = waiter {
                self.events
                    .push_back(SessionEvent::Wake(w, Err(RpcError::Expired)));
            }
            self.cancel_packet(retcode);
        }
    }

    /// Starts a call of ours: picks its retcode and queues its request. `keep` marks a
    /// `send` call, whose reply is kept for [`poll_call`](Self::poll_call); `waiter` is
    /// woken with the outcome; `guard` is held while the call is in flight. Fails when no
    /// link is up ([`check_connected`](Self::check_connected)) or with
    /// [`RpcError::Busy`] when [`RpcConfig::max_in_flight`] calls are in flight.
    pub fn start_call(
        &mut self,
        method: Method,
        args: &[u8],
        keep: bool,
        waiter: Option<W>,
        guard: G,
        now: Instant,
    ) -> Result<RetCode, RpcError> {
        self.start_call_with(method, args, keep, waiter, guard, || now)
    }

    /// [`start_call`](Self::start_call), reading the clock (`now`) only for a `send` call
    /// (`keep`): an `execute` call's start time is never read.
    pub(crate) fn start_call_with(
        &mut self,
        method: Method,
        args: &[u8],
        keep: bool,
        waiter: Option<W>,
        guard: G,
        now: impl FnOnce() -> Instant,
    ) -> Result<RetCode, RpcError> {
        self.check_connected()?;
        let retcode = self
            .calls
            .start_with(method.clone(), keep, waiter, guard, now)
            .ok_or(RpcError::Busy)?;
        self.transmit(false, |b| packet::encode_request(b, retcode, &method, args));
        Ok(retcode)
    }

    /// Forgets a call whose request never left (the link refused it): no cancel is sent.
    /// Returns whether it was in flight.
    pub fn abandon(&mut self, retcode: RetCode) -> bool {
        self.calls.abandon(retcode)
    }

    /// The caller stopped waiting for `retcode` (an `execute` timed out or was dropped):
    /// the call is forgotten and, if it was still in flight, a cancel queued (droppable).
    /// Returns whether it was in flight.
    pub fn cancel(&mut self, retcode: RetCode) -> bool {
        let in_flight = self.calls.abandon(retcode);
        if in_flight {
            self.cancel_packet(retcode);
        }
        in_flight
    }

    /// Queues a notification: `method` runs on the remote with `args`, no reply. Fails when
    /// no link is up.
    pub fn notify(&mut self, method: &Method, args: &[u8]) -> Result<(), RpcError> {
        self.check_connected()?;
        self.transmit(false, |b| packet::encode_notification(b, method, args));
        Ok(())
    }

    /// Where the `send` call `retcode` stands; a kept reply is taken. See [`Calls::poll`].
    pub fn poll_call(&mut self, retcode: RetCode) -> PollState {
        self.calls.poll(retcode)
    }

    /// When the `send` call `retcode`, still in flight, expires unanswered.
    pub fn expiry(&self, retcode: RetCode) -> Option<Instant> {
        self.calls.expiry(retcode)
    }

    /// Attaches the waiter of a `poll` to a `send` call in flight; see
    /// [`Calls::set_poller`].
    pub fn set_poller(&mut self, retcode: RetCode, waiter: W) -> Result<(), W> {
        self.calls.set_poller(retcode, waiter)
    }

    /// Detaches the waiter of a `poll` that stopped waiting.
    pub fn clear_poller(&mut self, retcode: RetCode) {
        self.calls.clear_poller(retcode);
    }

    /// Takes every kept reply, oldest first.
    pub fn take_ready(&mut self) -> Vec<(RetCode, Outcome)> {
        self.calls.take_ready()
    }

    /// Forgets the `send` call `retcode`: drops its kept reply, or cancels it if still in
    /// flight (a cancel is queued and its reply will be dropped). Returns whether there
    /// was anything to forget.
    pub fn flush(&mut self, retcode: RetCode) -> bool {
        match self.calls.poll(retcode) {
            PollState::Ready(_) => true,
            PollState::InFlight => self.cancel(retcode),
            PollState::Expired | PollState::Unknown => false,
        }
    }

    /// Attaches the abort handle of a call's handler once it runs, so a cancel or a lost
    /// connection can abort it. Returns the handle back when the handler must be aborted
    /// now: its call ended (cancelled) before the handle came, or the ticket is stale. A
    /// notification's handler is never aborted: its handle is dropped.
    pub fn attach(&mut self, ticket: Ticket, handle: H) -> Option<H> {
        match ticket.retcode {
            None => None,
            Some(_) if ticket.epoch != self.epoch => Some(handle),
            Some(retcode) => self.serve.attach(retcode, ticket.run, handle),
        }
    }

    /// A handler started by a [`SessionEvent::Run`] ended with `answer`. Frees its slot (the
    /// next queued job comes out as a `SessionEvent::Run`) and queues the reply, unless the call
    /// was cancelled meanwhile or it was a notification. A stale ticket is ignored.
    /// Returns whether a reply was queued.
    pub fn handle_done(&mut self, ticket: Ticket, answer: Answer) -> bool {
        if ticket.epoch != self.epoch {
            return false;
        }
        let Some(retcode) = ticket.retcode else {
            if let Some(job) = self.serve.finish_notification() {
                self.run(job, false);
            }
            return false;
        };
        let (reply, next) = self.serve.finish_call(retcode, ticket.run);
        if let Some(job) = next {
            self.run(job, false);
        }
        if !reply || !self.is_connected() {
            return false;
        }
        let (status, body) = answer.into_reply();
        self.reply(retcode, status, &body);
        true
    }

    /// The next packet to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing to do, oldest first.
    pub fn poll_event(&mut self) -> Option<SessionEvent<W, H>> {
        self.events.pop_front()
    }

    /// True when [`poll_transmit`](Self::poll_transmit) has a packet.
    pub fn has_transmit(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// True when [`poll_transmit`](Self::poll_transmit) or
    /// [`poll_event`](Self::poll_event) has something.
    pub fn has_output(&self) -> bool {
        !self.transmits.is_empty() || !self.events.is_empty()
    }

    fn admit(&mut self, job: Job) {
        match self.serve.admit(job) {
            Admit::Run(job) => self.run(job, true),
            Admit::Queued => {}
            Admit::Busy(retcode) => {
                self.stats.busy += 1;
                self.reply(retcode, Status::BUSY, &[]);
            }
            Admit::Dropped => self.stats.dropped_notifications += 1,
            Admit::Duplicate(_) => self.stats.duplicates += 1,
        }
    }

    /// Starts `job` in the slot `serve` gave it. The session answers itself what needs no
    /// handler, freeing the slot at once, and then starts the next queued job: a PING (its
    /// arguments come back as the reply body), and a queued request that reaches its slot
    /// while the peer is backed up (answered `BUSY`). A loop, not recursion: a queue of
    /// such jobs runs out in one go on a flat stack.
    fn run(&mut self, mut job: Job, mut fresh: bool) {
        let ping = Method::Opcode(Opcode::PING);
        loop {
            let next = match job {
                Job::Call {
                    retcode,
                    method,
                    args,
                } if method == ping || (!fresh && self.is_backed_up()) => {
                    let run = self.serve.run_of(retcode).unwrap_or(0);
                    let (reply, next) = self.serve.finish_call(retcode, run);
                    if reply && self.is_backed_up() {
                        self.stats.busy_slow_reader += 1;
                        self.reply(retcode, Status::BUSY, &[]);
                    } else if reply {
                        self.reply(retcode, Status::OK, &args);
                    }
                    next
                }
                Job::Notify { method, .. } if method == ping => self.serve.finish_notification(),
                job => {
                    let (retcode, method, args) = match job {
                        Job::Call {
                            retcode,
                            method,
                            args,
                        } => (Some(retcode), method, args),
                        Job::Notify { method, args } => (None, method, args),
                    };
                    let ticket = Ticket {
                        epoch: self.epoch,
                        retcode,
                        run: retcode.and_then(|r| self.serve.run_of(r)).unwrap_or(0),
                    };
                    self.events.push_back(SessionEvent::Run {
                        ticket,
                        method,
                        args,
                        fresh,
                    });
                    return;
                }
            };
            match next {
                Some(j) => {
                    job = j;
                    fresh = false;
                }
                None => return,
            }
        }
    }

    fn reply(&mut self, retcode: RetCode, status: Status, body: &[u8]) {
        self.transmit(false, |b| packet::encode_reply(b, retcode, status, body));
    }

    fn cancel_packet(&mut self, retcode: RetCode) {
        self.transmit(true, |b| packet::encode_cancel(b, retcode));
    }

    /// Queues a packet, if a link is up to carry it.
    fn transmit(&mut self, droppable: bool, encode: impl FnOnce(&mut BytesMut)) {
        if self.link != Link::Up {
            return;
        }
        let mut b = BytesMut::new();
        encode(&mut b);
        self.transmits.push_back(Transmit {
            packet: exact(b),
            droppable,
        });
    }
}

/// `b` as a `Bytes` whose allocation is exactly its length: one allocation, no more. A
/// frozen `BytesMut` with room to spare keeps its buffer and adds a second allocation
/// for the count of its owners; a packet kept in an outbox (20 peers that never read
/// their `BUSY` answers keep hundreds of thousands) would cost three times its length.
fn exact(b: BytesMut) -> Bytes {
    let mut v = Vec::from(b);
    v.shrink_to_fit();
    Bytes::from(v)
}

#[cfg(test)]
#[path = "tests/session.rs"]
mod tests;
