//! What the clones of one [`RpcPeer`] share: the [`Session`] behind a mutex, and how its
//! output is carried out once the mutex is released (packets sent, callers woken, handlers
//! started or aborted).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::handlers::{Failure, Handlers};
use super::outbox::Outbox;
use super::{RpcPeer, now};
use crate::config::RpcConfig;
use crate::error::RpcError;
use crate::method::{Method, RetCode};
use crate::outgoing::Outgoing;
use crate::proto::{Answer, Outcome, Session, SessionEvent, Ticket, Transmit};

type Waiter = oneshot::Sender<Outcome>;

/// The session as the tokio layer instantiates it.
pub(super) type PeerSession = Session<Waiter, OwnedSemaphorePermit, AbortHandle>;

/// The locked part. Every critical section that changes the session goes through
/// [`Inner::with`], which takes all of the session's output before it unlocks: so an API
/// call that queues a packet finds exactly its own in [`poll_transmit`](Session::poll_transmit).
pub(super) struct State {
    pub(super) session: PeerSession,
    /// The link, set exactly while the session is connected.
    pub(super) out: Option<Arc<dyn Outgoing>>,
    /// What the link had no room for, in order; its size is reported to the session.
    pub(super) outbox: Outbox,
    /// Counts what the peer keeps for the remote (queued requests' arguments, kept reply
    /// bodies, the outbox) in the link's memory budget, while a link is up.
    pub(super) hold: Option<hail_link::Hold>,
}

impl State {
    /// Tells the session how much more queued requests may hold: at most the budget's
    /// peer share for this peer, and never past three quarters of the whole budget, so
    /// what the RPC layer keeps alone never spends it (a spent budget stops every link
    /// reading, and a handler waiting for a reply from its peer would wait forever).
    pub(super) fn update_room(&mut self) {
        let room = self.hold.as_ref().map_or(usize::MAX, |hold| {
            let budget = hold.budget();
            let cap = budget.total() / 4 * 3;
            let global = cap.saturating_sub(budget.in_use());
            let own = budget.peer_share().saturating_sub(hold.bytes());
            global.min(own)
        });
        self.session.set_budget_room(room);
    }

    /// Whether the run of packets being handled under one lock may take the next one
    /// (see [`PeerDriver::packets`](crate::PeerDriver::packets)): not once every handler
    /// slot is taken (the run's handlers must first have their inline poll, which may
    /// free their slots), not after an answer of the session's own (a PING's, a
    /// refusal), which must reach the link or the outbox before the next request is
    /// admitted, and not while the outbox holds answers (a slow reader's requests are
    /// taken one by one, each seeing the outbox its predecessors' answers left).
    pub(super) fn takes_more_in_run(&self) -> bool {
        self.outbox.len() == 0
            && !self.session.has_transmit()
            && self.session.serve().has_free_slot()
    }

    /// Brings the hold up to date: one count when the bytes kept changed, none otherwise.
    fn update_hold(&mut self) {
        if let Some(hold) = &mut self.hold {
            let kept = self.session.serve().queued_bytes()
                + self.session.calls().kept_bytes()
                + self.outbox.bytes();
            hold.set(kept);
        }
    }
}

pub(super) struct Inner {
    pub(super) config: RpcConfig,
    pub(super) handlers: Handlers,
    state: Mutex<State>,
    in_flight: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
    /// Woken when the session may have become idle (see [`Inner::wait_for`]).
    idle: Notify,
    /// Tasks in `wait_for`: while there are none, nobody is woken.
    idle_waiters: AtomicUsize,
    /// What the peer's owner attached (see [`RpcPeer::set_context`]).
    pub(super) context: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

/// What one critical section left to carry out once the lock is released. Usually one
/// packet or one event: those stand alone, and anything more is boxed.
struct Work {
    /// The link the packets go to, and its outbox generation then.
    out: Option<(Arc<dyn Outgoing>, u64)>,
    transmit: Option<Transmit>,
    event: Option<PeerEvent>,
    more: Option<Box<More>>,
    wake_idle: bool,
}

/// The rest of a critical section's output, in order, when it had more than one of each.
struct More {
    transmits: Vec<Transmit>,
    events: Vec<PeerEvent>,
}

type PeerEvent = SessionEvent<Waiter, AbortHandle>;

/// What [`Inner::wait_for`] waits on, before and after a critical section.
#[derive(Clone, Copy)]
struct Activity {
    serving: bool,
    idle: bool,
}

impl Activity {
    fn of(session: &PeerSession) -> Self {
        Self {
            serving: session.is_serving(),
            idle: session.is_idle(),
        }
    }

    /// True when the handlers, or everything, came to an end between `self` and `now`.
    fn ended(self, now: Self) -> bool {
        (self.serving && !now.serving) || (!self.idle && now.idle)
    }
}

/// Counts a task in [`Inner::wait_for`] while it waits.
struct IdleWaiter<'a>(&'a AtomicUsize);

impl Drop for IdleWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `f`, given up at `due` (`None`: never).
async fn until<F: Future>(due: Option<Instant>, f: F) -> Option<F::Output> {
    match due {
        Some(due) => tokio::time::timeout_at(due, f).await.ok(),
        None => Some(f.await),
    }
}

/// A handler's result as the session's answer (`None`: no handler was bound).
fn answer(result: Option<Result<Bytes, Failure>>) -> Answer {
    match result {
        None => Answer::UnknownMethod,
        Some(Ok(body)) => Answer::Ok(body),
        Some(Err(Failure::BadArguments(m))) => Answer::BadArguments(m),
        Some(Err(Failure::Handler(m))) => Answer::Failed(m),
        Some(Err(Failure::Panicked)) => Answer::Panicked,
    }
}

impl Inner {
    pub(super) fn new(config: RpcConfig, handlers: Handlers, session: PeerSession) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            state: Mutex::new(State {
                session,
                out: None,
                outbox: Outbox::default(),
                hold: None,
            }),
            config,
            handlers,
            runtime: tokio::runtime::Handle::current(),
            idle: Notify::new(),
            idle_waiters: AtomicUsize::new(0),
            context: std::sync::OnceLock::new(),
        }
    }

    /// The state, for reading. Changes go through [`with`](Self::with).
    // Every critical section is a few table operations that cannot panic halfway, so a
    // poisoned lock (a panic elsewhere while holding it) leaves consistent state.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the locked state, then, unlocked, carries out what the session asked
    /// for meanwhile: so a handler never runs under the lock.
    pub(super) fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, work) = {
            let mut st = self.lock();
            // Read under the lock: a waiter registers before it locks to check, so it is
            // counted here whenever its check came first (see `wait_for`).
            let watched =
                (self.idle_waiters.load(Ordering::Relaxed) > 0).then(|| Activity::of(&st.session));
            let r = f(&mut st);
            st.update_hold();
            if st.session.is_backed_up() {
                Self::warn_slow_reader(&mut st);
            }
            // Woken only on a change, so a waiter's own check does not wake it again. Every
            // change of the session happens inside one `with`: none is missed.
            let wake_idle = watched.is_some_and(|before| before.ended(Activity::of(&st.session)));
            if !wake_idle && !st.session.has_output() {
                return r;
            }
            (r, Self::take_work(&mut st, wake_idle))
        };
        self.carry_out(work);
        r
    }

    /// [`with`](Self::with), applying the age limits of `send` calls and kept replies first.
    pub(super) fn with_expired<R>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        self.with(|st| {
            st.session.handle_timeout(now());
            f(st)
        })
    }

    fn take_work(st: &mut State, wake_idle: bool) -> Work {
        let transmit = st.session.poll_transmit();
        let event = st.session.poll_event();
        let more = st.session.has_output().then(|| {
            Box::new(More {
                transmits: std::iter::from_fn(|| st.session.poll_transmit()).collect(),
                events: std::iter::from_fn(|| st.session.poll_event()).collect(),
            })
        });
        let out = transmit
            .as_ref()
            .and(st.out.clone())
            .map(|out| (out, st.outbox.generation()));
        Work {
            out,
            transmit,
            event,
            more,
            wake_idle,
        }
    }

    /// One packet for the peer, from a context that cannot wait: on the link now if it has
    /// room; else a cancel is dropped (best effort), and any other packet joins the
    /// outbox, which one task per connection drains ([`drain`]). No order binds replies
    /// (each names its call), so one that fits the link may pass those waiting.
    fn route(self: &Arc<Self>, out: &Arc<dyn Outgoing>, generation: u64, t: Transmit) {
        if out.try_send(&t.packet) {
            return;
        }
        if t.droppable {
            tracing::debug!("cancel not sent: link queue full or closed");
            return;
        }
        let mut st = self.lock();
        // The link changed since: the packet was for the old one, which is gone.
        if st.outbox.generation() != generation {
            return;
        }
        let start = st.outbox.push(t.packet);
        let bytes = st.outbox.bytes();
        st.session.set_outbox_bytes(bytes);
        if start {
            let task = self
                .runtime
                .spawn(drain(self.clone(), out.clone(), generation));
            st.outbox.set_drainer(task.abort_handle());
        }
    }

    /// Logs, at most once a second, that the peer's requests are refused because it does
    /// not read its answers.
    fn warn_slow_reader(st: &mut State) {
        let stats = st.session.stats();
        let refused = stats.busy_slow_reader + stats.unanswered_slow_reader;
        if let Some(new) = st.outbox.warn_due(refused, Instant::now()) {
            tracing::warn!(
                refused = new,
                busy = stats.busy_slow_reader,
                unanswered = stats.unanswered_slow_reader,
                outbox_bytes = st.outbox.bytes(),
                "the peer does not read its answers: its requests are refused"
            );
        }
    }

    fn carry_out(self: &Arc<Self>, work: Work) {
        let Work {
            out,
            transmit,
            event,
            more,
            wake_idle,
        } = work;
        let (transmits, events) = match more {
            Some(m) => (m.transmits, m.events),
            None => (Vec::new(), Vec::new()),
        };
        if let Some((out, generation)) = &out {
            for t in transmit.into_iter().chain(transmits) {
                self.route(out, *generation, t);
            }
        }
        // Handlers that ended in their inline poll, reported together under one lock.
        let mut ended = Ended::default();
        for event in event.into_iter().chain(events) {
            match event {
                SessionEvent::Wake(w, outcome) => {
                    let _ = w.send(outcome);
                }
                SessionEvent::Abort(h) => h.abort(),
                SessionEvent::Run {
                    ticket,
                    method,
                    args,
                    fresh,
                } => {
                    if let Some(end) = self.run(ticket, method, args, fresh) {
                        ended.push(end);
                    }
                }
            }
        }
        if !ended.is_empty() {
            self.finish_all(ended);
        }
        // Last: a graceful shutdown waiting for the handlers finds their replies queued.
        if wake_idle {
            self.idle.notify_waiters();
        }
    }

    /// Waits until `done` holds for the session, woken by [`with`](Self::with) when the handlers or all activity end, rather than by polling. Unanswered `send` calls count until they expire, so the
    /// age limits are applied at each check, and again when the next one is due.
    pub(super) async fn wait_for(self: &Arc<Self>, done: impl Fn(&PeerSession) -> bool) {
        // Registered before the first check: a change after it sees this waiter.
        self.idle_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = IdleWaiter(&self.idle_waiters);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (done_now, due) =
                self.with_expired(|st| (done(&st.session), st.session.poll_timeout()));
            if done_now {
                return;
            }
            until(due.map(Instant::from_std), notified).await;
        }
    }

    /// Waits for room among the calls in flight; fails fast when disconnected.
    pub(super) async fn acquire(self: &Arc<Self>) -> Result<OwnedSemaphorePermit, RpcError> {
        // A free slot needs no check here: `start` checks the connection under the lock it
        // takes anyway, with the same error, so a call locks once on this path.
        if let Ok(permit) = self.in_flight.clone().try_acquire_owned() {
            return Ok(permit);
        }
        self.lock().session.check_connected()?;
        loop {
            // `send` calls past their age limit hold slots until expired: expire them now,
            // and again when the next is due. A call started from now on is due no sooner
            // than `keep_replies_for` from now.
            let due = self
                .with_expired(|st| st.session.poll_timeout())
                .map(Instant::from_std)
                .or_else(|| Instant::now().checked_add(self.config.keep_replies_for));
            match until(due, self.in_flight.clone().acquire_owned()).await {
                Some(permit) => return permit.map_err(|_| RpcError::NotConnected),
                None => self.lock().session.check_connected()?,
            }
        }
    }

    /// Registers a call and takes its encoded request, to send with backpressure. A `send`
    /// call (`keep`) applies the age limits first.
    pub(super) fn start(
        self: &Arc<Self>,
        method: Method,
        keep: bool,
        args: &[u8],
        waiter: Option<Waiter>,
        permit: OwnedSemaphorePermit,
    ) -> Result<(RetCode, Arc<dyn Outgoing>, Bytes), RpcError> {
        let start = |st: &mut State| {
            let retcode = st
                .session
                .start_call_with(method, args, keep, waiter, permit, now)?;
            match st.take_packet() {
                Some((out, request)) => Ok((retcode, out, request)),
                // The session is connected exactly while `out` is set: not reached.
                None => {
                    st.session.abandon(retcode);
                    Err(RpcError::NotConnected)
                }
            }
        };
        if keep {
            self.with_expired(start)
        } else {
            self.with(start)
        }
    }

    /// Runs the handler of `method`. With `inline`, the handler is first polled right here
    /// (on the connection's task): one that finishes without waiting costs no task, and
    /// its end is returned, for the caller to report ([`finish_all`](Self::finish_all));
    /// one that waits continues in a task of its own, which reports its end itself. So
    /// does a method without a handler (answered at once).
    fn run(
        self: &Arc<Self>,
        ticket: Ticket,
        method: Method,
        args: Bytes,
        inline: bool,
    ) -> Option<End> {
        let Some(handler) = self.handlers.get(&method) else {
            return Some((ticket, method, Answer::UnknownMethod));
        };
        let peer = RpcPeer {
            inner: self.clone(),
        };
        let mut fut = handler.call(peer, args);
        if inline
            && self.config.inline_first_poll
            && let Some(result) = (&mut fut).now_or_never()
        {
            return Some((ticket, method, answer(Some(result))));
        }
        let inner = self.clone();
        let task = self.runtime.spawn(async move {
            let result = fut.await;
            inner.finish(ticket, &method, answer(Some(result)));
        });
        if ticket.retcode().is_some()
            && let Some(h) = self.with(|st| st.session.attach(ticket, task.abort_handle()))
        {
            // Cancelled before the handle was attached, or the connection dropped between
            // the spawn and here (`disconnected` could not abort a handle it never saw).
            h.abort();
        }
        None
    }

    /// A handler ended: frees its slot (the next queued job starts, in a task) and sends
    /// the reply, if the caller still waits for one: now if the link has room, else
    /// through the outbox.
    fn finish(self: &Arc<Self>, ticket: Ticket, method: &Method, answer: Answer) {
        let panicked = answer == Answer::Panicked;
        let answered = self.with(|st| st.session.handle_done(ticket, answer));
        if panicked {
            warn_panicked(ticket, method, answered);
        }
    }

    /// [`finish`](Self::finish) for the handlers of a run of packets that ended in their
    /// inline poll, under one lock; their replies go to the link together.
    fn finish_all(self: &Arc<Self>, ended: Ended) {
        let panicked = self.with(|st| {
            let mut panicked = Vec::new();
            for (ticket, method, answer) in ended {
                let panic = answer == Answer::Panicked;
                let answered = st.session.handle_done(ticket, answer);
                if panic {
                    panicked.push((ticket, method, answered));
                }
            }
            panicked
        });
        for (ticket, method, answered) in panicked {
            warn_panicked(ticket, &method, answered);
        }
    }
}

/// A handler's end: what [`Inner::run`] returns when the handler ended in its inline poll.
type End = (Ticket, Method, Answer);

/// The ends of the handlers of one critical section's output: usually one, which stands
/// alone (a run of one packet allocates nothing for it).
#[derive(Default)]
struct Ended {
    first: Option<End>,
    rest: Vec<End>,
}

impl Ended {
    fn push(&mut self, end: End) {
        if self.first.is_none() {
            self.first = Some(end);
        } else {
            self.rest.push(end);
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }
}

impl IntoIterator for Ended {
    type Item = End;
    type IntoIter = std::iter::Chain<std::option::IntoIter<End>, std::vec::IntoIter<End>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

fn warn_panicked(ticket: Ticket, method: &Method, answered: bool) {
    match ticket.retcode() {
        Some(retcode) if answered => {
            tracing::warn!(%method, %retcode, "handler panicked; answered HANDLER_PANICKED");
        }
        Some(retcode) => {
            tracing::warn!(%method, %retcode, "handler panicked after its call ended");
        }
        None => tracing::warn!(%method, "notification handler panicked"),
    }
}

/// The one task that hands a connection's outbox to its link, oldest first, waiting for
/// room; it ends when the outbox is empty, when the link changes (the outbox is reset and
/// this task aborted), or when the link refuses a packet (closed: the driver reports the
/// end, which resets the outbox).
async fn drain(inner: Arc<Inner>, out: Arc<dyn Outgoing>, generation: u64) {
    loop {
        let packet = {
            let st = inner.lock();
            match st.outbox.front() {
                Some(p) if st.outbox.generation() == generation => p,
                _ => return,
            }
        };
        if out.send(packet).await.is_err() {
            return;
        }
        // Through `with`: an empty outbox may end `idle` and a graceful shutdown's wait.
        let more = inner.with(|st| {
            if st.outbox.generation() != generation {
                return false;
            }
            let empty = st.outbox.pop();
            let bytes = st.outbox.bytes();
            st.session.set_outbox_bytes(bytes);
            !empty
        });
        if !more {
            return;
        }
    }
}
