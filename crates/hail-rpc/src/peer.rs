//! The tokio layer: [`RpcPeer`] (make calls, bind handlers) and [`PeerDriver`] (feed it
//! a connection), around the sans-IO [`Session`](crate::proto::Session).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::config::RpcConfig;
use crate::error::{BindError, RpcError};
use crate::handler::{Failure, Handlers};
use crate::method::{Method, RetCode, Status};
use crate::packet;
use crate::proto::{Action, Job, Outcome, PollState, Session, Stats};

/// The link under a peer: where its packets go. `hail-link` connections implement it;
/// so can any ordered, reliable, message-preserving transport.
pub trait Outgoing: Send + Sync + 'static {
    /// Sends one packet (one link frame), waiting for room in the link's queue.
    /// An error means the packet was not accepted: the connection is gone.
    fn send(
        &self,
        packet: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<(), LinkClosed>> + Send + '_>>;

    /// Queues one packet without waiting; false when there is no room or no connection.
    /// Used for cancels sent from `Drop`, where waiting is impossible.
    fn try_send(&self, packet: Bytes) -> bool;
}

/// The link refused a packet because the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link is closed")]
pub struct LinkClosed;

/// Why a connection under a peer went away, for [`PeerDriver::disconnected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// The connection dropped (closed, reset, heartbeat timeout). A reconnect may follow.
    Lost,
    /// The link could not authenticate the peer; calls fail with
    /// [`RpcError::AuthFailed`] until a connection is made.
    AuthFailed,
}

type Waiter = oneshot::Sender<Outcome>;

enum LinkState {
    Connected(Arc<dyn Outgoing>),
    Disconnected { auth_failed: bool },
}

struct State {
    session: Session<Waiter, OwnedSemaphorePermit, AbortHandle>,
    link: LinkState,
    /// Bumped at every connect and disconnect: work of an older connection is discarded.
    epoch: u64,
}

struct Inner {
    config: RpcConfig,
    handlers: Handlers,
    state: Mutex<State>,
    in_flight: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
}

/// One end of an RPC connection: make calls and bind handlers. Symmetric: both ends of a
/// connection have one, and which side dialed does not matter.
///
/// Cheap to clone (all clones share the connection). Calls are pipelined: any number of
/// tasks may call at once, up to [`RpcConfig::max_in_flight`] calls in flight, and replies
/// are matched to calls by retcode in whatever order they come.
///
/// A peer lives across reconnects of the link under it: calls made while disconnected fail
/// with [`RpcError::NotConnected`], calls in flight when the connection drops fail at
/// once with [`RpcError::ConnectionLost`], and calls after a reconnect work.
#[derive(Clone)]
pub struct RpcPeer {
    inner: Arc<Inner>,
}

/// A weak handle to an [`RpcPeer`], for handlers and tasks that must not keep it alive.
#[derive(Clone)]
pub struct WeakRpcPeer {
    inner: Weak<Inner>,
}

/// Feeds one connection's events to an [`RpcPeer`]: whoever reads the link owns it.
///
/// Dropping the driver disconnects the peer ([`Disconnect::Lost`]).
pub struct PeerDriver {
    inner: Arc<Inner>,
}

/// A reply taken by [`RpcPeer::take_ready`]: decode it as the call's result type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    outcome: Outcome,
}

impl Reply {
    /// The result, decoded as `R`, or why there is none.
    pub fn decode<R: DeserializeOwned>(self) -> Result<R, RpcError> {
        decode_outcome(self.outcome)
    }

    /// The raw outcome: postcard bytes of the result, or the error.
    pub fn into_outcome(self) -> Outcome {
        self.outcome
    }
}

/// A random starting retcode, from the standard library's per-process hash keys.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    // Keep clear of the top so a peer's first billions of calls do not wrap.
    (h.finish() as u32) & 0x7fff_ffff
}

fn decode_outcome<R: DeserializeOwned>(outcome: Outcome) -> Result<R, RpcError> {
    let body = outcome?;
    hail_wire::postcard_from_slice(&body, hail_wire::DEFAULT_MAX_DEPTH)
        .map_err(|e| RpcError::Decode(e.to_string()))
}

fn encode_args<A: Serialize>(args: &A) -> Result<Bytes, RpcError> {
    packet::to_postcard(args).map_err(|e| RpcError::Encode(e.to_string()))
}

impl fmt::Debug for RpcPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("RpcPeer")
            .field("connected", &matches!(st.link, LinkState::Connected(_)))
            .field("in_flight", &st.session.calls.in_flight())
            .field("kept", &st.session.calls.kept())
            .field("running", &st.session.serve.running())
            .field("handlers", &self.inner.handlers)
            .finish()
    }
}

impl fmt::Debug for WeakRpcPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakRpcPeer")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}

impl fmt::Debug for PeerDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerDriver").finish_non_exhaustive()
    }
}

impl WeakRpcPeer {
    /// The peer, if it is still alive.
    pub fn upgrade(&self) -> Option<RpcPeer> {
        self.inner.upgrade().map(|inner| RpcPeer { inner })
    }
}

impl RpcPeer {
    /// A disconnected peer with its own handler table, and the driver that connects it.
    ///
    /// Must be called inside a tokio runtime: handlers are spawned on it.
    pub fn new(config: RpcConfig) -> (Self, PeerDriver) {
        Self::with_handlers(config, Handlers::new())
    }

    /// Like [`RpcPeer::new`], serving the methods of a shared `handlers` table (a server
    /// gives every client peer the same table).
    pub fn with_handlers(config: RpcConfig, handlers: Handlers) -> (Self, PeerDriver) {
        let mut session = Session::new(&config);
        session.calls.set_next_retcode(random_u32());
        let inner = Arc::new(Inner {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            state: Mutex::new(State {
                session,
                link: LinkState::Disconnected { auth_failed: false },
                epoch: 0,
            }),
            config,
            handlers,
            runtime: tokio::runtime::Handle::current(),
        });
        (
            Self {
                inner: inner.clone(),
            },
            PeerDriver { inner },
        )
    }

    /// A weak handle that does not keep the peer alive.
    pub fn downgrade(&self) -> WeakRpcPeer {
        WeakRpcPeer {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// The limits this peer runs with.
    pub fn config(&self) -> &RpcConfig {
        &self.inner.config
    }

    /// The handler table this peer serves from.
    pub fn handlers(&self) -> &Handlers {
        &self.inner.handlers
    }

    /// True while a connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(self.inner.lock().link, LinkState::Connected(_))
    }

    /// Counters of what the remote sent that was dropped or refused.
    pub fn stats(&self) -> Stats {
        self.inner.lock().session.stats
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().session.calls.in_flight()
    }

    /// Requests and notifications from the remote waiting for a handler slot.
    pub fn queued_requests(&self) -> usize {
        self.inner.lock().session.serve.queued()
    }

    /// Handlers running now for the remote's calls and notifications.
    pub fn running_handlers(&self) -> usize {
        self.inner.lock().session.serve.running()
    }

    /// Binds an async handler to `method`: it takes the decoded arguments and returns
    /// `Ok(result)` or `Err(message)`; any `E: Display` serves as the message.
    ///
    /// ```
    /// # async fn demo(rpc: hail_rpc::RpcPeer) -> Result<(), hail_rpc::BindError> {
    /// use hail_rpc::Opcode;
    /// const ADD: Opcode = Opcode(1);
    /// rpc.bind(ADD, |(a, b): (i32, i32)| async move { Ok::<_, String>(a + b) })?;
    /// rpc.bind("greet", |name: String| async move { Ok::<_, String>(format!("hi {name}")) })?;
    /// # Ok(()) }
    /// ```
    ///
    /// Arguments that do not decode as `A` are answered
    /// [`BadArguments`](RpcError::BadArguments) without running the handler; a panic is
    /// answered [`HandlerPanicked`](RpcError::HandlerPanicked) and the connection lives on.
    /// Binding a bound method is [`BindError::AlreadyBound`]; opcodes from `0xff00` are
    /// reserved. The table is the peer's [`Handlers`] (shared by all clients of a server).
    pub fn bind<A, R, E, F, Fut>(
        &self,
        method: impl Into<Method>,
        handler: F,
    ) -> Result<(), BindError>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: fmt::Display + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.inner.handlers.bind(method, handler)
    }

    /// Binds an async handler that also receives the [`RpcPeer`] the call came from, to
    /// call back (CLOVIS style) without capturing a peer.
    pub fn bind_with<A, R, E, F, Fut>(
        &self,
        method: impl Into<Method>,
        handler: F,
    ) -> Result<(), BindError>
    where
        F: Fn(Self, A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        E: fmt::Display + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.inner.handlers.bind_with(method, handler)
    }

    /// Binds a blocking closure, run on tokio's blocking thread pool so it never stalls
    /// the async workers. A cancel cannot stop it once started (its result is discarded).
    pub fn bind_blocking<A, R, E, F>(
        &self,
        method: impl Into<Method>,
        handler: F,
    ) -> Result<(), BindError>
    where
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: fmt::Display + 'static,
    {
        self.inner.handlers.bind_blocking(method, handler)
    }

    /// Removes the handler of `method`; returns whether one was bound.
    pub fn unbind(&self, method: impl Into<Method>) -> bool {
        self.inner.handlers.unbind(method)
    }

    /// Calls `method` with `args` and waits up to `timeout` for the result (including any
    /// wait for room among the calls in flight).
    ///
    /// On timeout, or when this future is dropped before the reply, a cancel is sent and
    /// the remote aborts the handler where it can: best effort, since a handler may have
    /// finished, and a blocking one cannot be stopped.
    pub async fn execute<A, R>(
        &self,
        method: impl Into<Method>,
        args: A,
        timeout: Duration,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
        R: DeserializeOwned,
    {
        let method = method.into();
        let args = encode_args(&args)?;
        let call = async {
            let permit = self.inner.acquire().await?;
            let (tx, rx) = oneshot::channel();
            let (retcode, out, bytes) = self.inner.start(method, true, &args, Some(tx), permit)?;
            let mut guard = CancelOnDrop {
                inner: &self.inner,
                retcode,
                armed: true,
            };
            if out.send(bytes).await.is_err() {
                guard.inner.lock().session.calls.abandon(retcode);
                guard.armed = false;
                return Err(RpcError::NotConnected);
            }
            let outcome = rx.await.unwrap_or(Err(RpcError::ConnectionLost));
            guard.armed = false;
            outcome
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(outcome) => decode_outcome(outcome),
            Err(_) => Err(RpcError::Timeout),
        }
    }

    /// Sends a call and returns its retcode at once, without waiting for the reply: the
    /// reply is kept for [`poll`](Self::poll), [`take_ready`](Self::take_ready) or
    /// [`flush`](Self::flush), within the limits of
    /// [`RpcConfig::max_kept_replies`] and [`RpcConfig::keep_replies_for`].
    ///
    /// Waits only for room: among the calls in flight, and in the link's send queue.
    pub async fn send<A: Serialize>(
        &self,
        method: impl Into<Method>,
        args: A,
    ) -> Result<RetCode, RpcError> {
        let method = method.into();
        let args = encode_args(&args)?;
        let permit = self.inner.acquire().await?;
        let (retcode, out, bytes) = self.inner.start(method, false, &args, None, permit)?;
        if out.send(bytes).await.is_err() {
            self.inner.lock().session.calls.abandon(retcode);
            return Err(RpcError::NotConnected);
        }
        Ok(retcode)
    }

    /// Waits up to `timeout` for the reply to the [`send`](Self::send) call `retcode` and
    /// takes it. A timeout leaves the call in flight: poll again later.
    ///
    /// Never hangs on a reply that cannot come: an evicted or expired reply answers
    /// [`Expired`](RpcError::Expired), a retcode not in flight or kept (already taken,
    /// never issued, or polled by another task now) answers
    /// [`UnknownRetCode`](RpcError::UnknownRetCode), and a connection loss answers
    /// [`ConnectionLost`](RpcError::ConnectionLost) at once.
    pub async fn poll<R: DeserializeOwned>(
        &self,
        retcode: RetCode,
        timeout: Duration,
    ) -> Result<R, RpcError> {
        let (rx, expiry) = {
            let mut st = self.inner.lock_expired();
            let expiry = st.session.calls.expiry(retcode);
            match st.session.calls.poll(retcode) {
                PollState::Ready(outcome) => return decode_outcome(outcome),
                PollState::Expired => return Err(RpcError::Expired),
                PollState::Unknown => return Err(RpcError::UnknownRetCode(retcode)),
                PollState::InFlight => {
                    let (tx, rx) = oneshot::channel();
                    if st.session.calls.set_poller(retcode, tx).is_err() {
                        return Err(RpcError::UnknownRetCode(retcode));
                    }
                    (rx, expiry)
                }
            }
        };
        let _guard = ClearPoller {
            inner: &self.inner,
            retcode,
        };
        // Wait no longer than the call may live: at its expiry, answer Expired.
        let timeout_at = Instant::now() + timeout;
        let deadline = match expiry.map(Instant::from_std) {
            Some(e) if e < timeout_at => e,
            _ => timeout_at,
        };
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(outcome) => decode_outcome(outcome.unwrap_or(Err(RpcError::ConnectionLost))),
            Err(_) if deadline < timeout_at => {
                drop(self.inner.lock_expired());
                Err(RpcError::Expired)
            }
            Err(_) => Err(RpcError::Timeout),
        }
    }

    /// Forgets the [`send`](Self::send) call `retcode`: drops its kept reply, or cancels
    /// it if still in flight (its reply will be discarded). Returns whether there was
    /// anything to forget.
    pub fn flush(&self, retcode: RetCode) -> bool {
        let mut st = self.inner.lock_expired();
        match st.session.calls.poll(retcode) {
            PollState::Ready(_) => true,
            PollState::InFlight => {
                st.session.calls.abandon(retcode);
                let out = st.link.outgoing();
                drop(st);
                if let Some(out) = out {
                    send_cancel(&*out, retcode);
                }
                true
            }
            PollState::Expired | PollState::Unknown => false,
        }
    }

    /// Takes every reply kept for `poll` so far, oldest first.
    pub fn take_ready(&self) -> Vec<(RetCode, Reply)> {
        self.inner
            .lock_expired()
            .session
            .calls
            .take_ready()
            .into_iter()
            .map(|(r, outcome)| (r, Reply { outcome }))
            .collect()
    }

    /// Runs `method` on the remote with `args`, expecting no reply (fire and forget):
    /// the handler's result is discarded, and so are its errors. Waits only for room in
    /// the link's send queue.
    pub async fn notify<A: Serialize>(
        &self,
        method: impl Into<Method>,
        args: A,
    ) -> Result<(), RpcError> {
        let method = method.into();
        let args = encode_args(&args)?;
        let out = self.inner.outgoing()?;
        let mut b = BytesMut::new();
        packet::encode_notification(&mut b, &method, &args);
        out.send(b.freeze())
            .await
            .map_err(|LinkClosed| RpcError::NotConnected)
    }
}

impl LinkState {
    fn outgoing(&self) -> Option<Arc<dyn Outgoing>> {
        match self {
            Self::Connected(o) => Some(o.clone()),
            Self::Disconnected { .. } => None,
        }
    }
}

fn send_cancel(out: &dyn Outgoing, retcode: RetCode) {
    let mut b = BytesMut::new();
    packet::encode_cancel(&mut b, retcode);
    if !out.try_send(b.freeze()) {
        tracing::debug!(%retcode, "cancel not sent: link queue full or closed");
    }
}

/// Sends the cancel of an `execute` that stopped waiting (timeout or drop).
struct CancelOnDrop<'a> {
    inner: &'a Inner,
    retcode: RetCode,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.inner.lock();
        if st.session.calls.abandon(self.retcode) {
            let out = st.link.outgoing();
            drop(st);
            if let Some(out) = out {
                send_cancel(&*out, self.retcode);
            }
        }
    }
}

/// Detaches a `poll` that stopped waiting, so another poll may wait on the call.
struct ClearPoller<'a> {
    inner: &'a Inner,
    retcode: RetCode,
}

impl Drop for ClearPoller<'_> {
    fn drop(&mut self) {
        self.inner.lock().session.calls.clear_poller(self.retcode);
    }
}

impl Inner {
    // Every critical section is a few table operations that cannot panic halfway, so a
    // poisoned lock (a panic elsewhere while holding it) leaves consistent state.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks and applies the age limits of `send` calls and kept replies first.
    fn lock_expired(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        let expired = st.session.calls.expire(Instant::now().into_std());
        if !expired.is_empty() {
            let out = st.link.outgoing();
            for (retcode, waiter) in expired {
                if let Some(w) = waiter {
                    let _ = w.send(Err(RpcError::Expired));
                }
                if let Some(out) = &out {
                    send_cancel(&**out, retcode);
                }
            }
        }
        st
    }

    fn outgoing(&self) -> Result<Arc<dyn Outgoing>, RpcError> {
        match &self.lock().link {
            LinkState::Connected(o) => Ok(o.clone()),
            LinkState::Disconnected { auth_failed: true } => Err(RpcError::AuthFailed),
            LinkState::Disconnected { auth_failed: false } => Err(RpcError::NotConnected),
        }
    }

    /// Waits for room among the calls in flight; fails fast when disconnected.
    async fn acquire(&self) -> Result<OwnedSemaphorePermit, RpcError> {
        self.outgoing()?;
        if let Ok(permit) = self.in_flight.clone().try_acquire_owned() {
            return Ok(permit);
        }
        loop {
            // `send` calls past their age limit hold slots until expired: expire them now,
            // and again every second while waiting (the caller's timeout bounds the wait).
            drop(self.lock_expired());
            let wait = self.in_flight.clone().acquire_owned();
            match tokio::time::timeout(Duration::from_secs(1), wait).await {
                Ok(permit) => return permit.map_err(|_| RpcError::NotConnected),
                Err(_) => {
                    self.outgoing()?;
                }
            }
        }
    }

    /// Registers a call and encodes its request.
    fn start(
        &self,
        method: Method,
        wait: bool,
        args: &[u8],
        waiter: Option<Waiter>,
        permit: OwnedSemaphorePermit,
    ) -> Result<(RetCode, Arc<dyn Outgoing>, Bytes), RpcError> {
        let mut st = if wait {
            self.lock()
        } else {
            self.lock_expired()
        };
        let out = match &st.link {
            LinkState::Connected(o) => o.clone(),
            LinkState::Disconnected { auth_failed: true } => return Err(RpcError::AuthFailed),
            LinkState::Disconnected { auth_failed: false } => return Err(RpcError::NotConnected),
        };
        let mut b = BytesMut::new();
        let now = Instant::now().into_std();
        // The permit guarantees room; `None` would mean the semaphore and table disagree.
        let Some(retcode) = st
            .session
            .calls
            .start(method.clone(), !wait, waiter, permit, now)
        else {
            return Err(RpcError::Busy);
        };
        packet::encode_request(&mut b, retcode, &method, args);
        Ok((retcode, out, b.freeze()))
    }

    /// Sends a packet from a context that cannot wait: now if there is room, else from a
    /// task.
    fn send_soon(&self, out: Arc<dyn Outgoing>, bytes: Bytes) {
        if !out.try_send(bytes.clone()) {
            self.runtime.spawn(async move {
                let _ = out.send(bytes).await;
            });
        }
    }

    /// Runs the handler of `job`. With `inline`, the handler is first polled right here
    /// (on the connection's task): one that finishes without waiting costs no task; one
    /// that waits continues in a task of its own.
    fn run(self: &Arc<Self>, epoch: u64, job: Job, inline: bool) {
        let (retcode, method, args) = match job {
            Job::Call {
                retcode,
                method,
                args,
            } => (Some(retcode), method, args),
            Job::Notify { method, args } => (None, method, args),
        };
        let Some(handler) = self.handlers.get(&method) else {
            self.complete_soon(epoch, retcode, &method, None);
            return;
        };
        let peer = RpcPeer {
            inner: self.clone(),
        };
        let mut fut = handler.call(peer, args);
        if inline
            && self.config.inline_first_poll
            && let Some(result) = (&mut fut).now_or_never()
        {
            self.complete_soon(epoch, retcode, &method, Some(result));
            return;
        }
        let inner = self.clone();
        let task = self.runtime.spawn(async move {
            let result = fut.await;
            if let Some((out, reply)) = inner.complete(epoch, retcode, &method, Some(result)) {
                // A closed link means the connection dropped; the caller learns it there.
                let _ = out.send(reply).await;
            }
        });
        if let Some(r) = retcode {
            let mut st = self.lock();
            if st.epoch != epoch {
                // The connection dropped between the spawn and here: `disconnected` could
                // not abort a handle it never saw, so abort now.
                drop(st);
                task.abort();
            } else if let Some(h) = st.session.serve.attach(r, task.abort_handle()) {
                // Cancelled before the handle was attached (or already done): abort now.
                h.abort();
            }
        }
    }

    /// [`complete`](Self::complete), sending the reply without waiting.
    fn complete_soon(
        self: &Arc<Self>,
        epoch: u64,
        retcode: Option<RetCode>,
        method: &Method,
        result: Option<Result<Bytes, Failure>>,
    ) {
        if let Some((out, reply)) = self.complete(epoch, retcode, method, result) {
            self.send_soon(out, reply);
        }
    }

    /// A handler ended (`None`: there was none): frees its slot, starts the next job in
    /// a task, and returns the reply to send, if the caller still waits for one.
    fn complete(
        self: &Arc<Self>,
        epoch: u64,
        retcode: Option<RetCode>,
        method: &Method,
        result: Option<Result<Bytes, Failure>>,
    ) -> Option<(Arc<dyn Outgoing>, Bytes)> {
        let (reply, next, out) = {
            let mut st = self.lock();
            if st.epoch != epoch {
                return None;
            }
            let (reply, next) = match retcode {
                Some(r) => st.session.serve.finish_call(r),
                None => (false, st.session.serve.finish_notification()),
            };
            (reply, next, st.link.outgoing())
        };
        if let Some(job) = next {
            // Never inline here: a queue of instant handlers would recurse.
            self.run(epoch, job, false);
        }
        let (Some(retcode), true, Some(out)) = (retcode, reply, out) else {
            if let Some(Err(Failure::Panicked)) = result {
                tracing::warn!(%method, "notification handler panicked");
            }
            return None;
        };
        let (status, body) = match result {
            None => (Status::UNKNOWN_METHOD, Bytes::new()),
            Some(Ok(body)) => (Status::OK, body),
            Some(Err(Failure::BadArguments(m))) => {
                (Status::BAD_ARGUMENTS, packet::message_body(&m))
            }
            Some(Err(Failure::Handler(m))) => (Status::HANDLER_ERROR, packet::message_body(&m)),
            Some(Err(Failure::Panicked)) => {
                tracing::warn!(%method, %retcode, "handler panicked; answered HANDLER_PANICKED");
                (Status::HANDLER_PANICKED, Bytes::new())
            }
        };
        let mut b = BytesMut::with_capacity(body.len() + 16);
        packet::encode_reply(&mut b, retcode, status, &body);
        Some((out, b.freeze()))
    }
}

impl PeerDriver {
    /// The peer this driver feeds.
    pub fn peer(&self) -> RpcPeer {
        RpcPeer {
            inner: self.inner.clone(),
        }
    }

    /// A connection is up: packets go to `out` from now on.
    pub fn connected(&self, out: Arc<dyn Outgoing>) {
        let mut st = self.inner.lock();
        st.epoch += 1;
        st.link = LinkState::Connected(out);
    }

    /// The connection dropped: every call in flight ends with
    /// [`ConnectionLost`](RpcError::ConnectionLost) now, running handlers are aborted and
    /// queued requests dropped (nobody could receive their replies).
    pub fn disconnected(&self, why: Disconnect) {
        let (wake, aborts) = {
            let mut st = self.inner.lock();
            st.epoch += 1;
            st.link = LinkState::Disconnected {
                auth_failed: why == Disconnect::AuthFailed,
            };
            let now = Instant::now().into_std();
            let wake = st.session.calls.connection_lost(now);
            (wake, st.session.serve.connection_lost())
        };
        for (w, outcome) in wake {
            let _ = w.send(outcome);
        }
        for h in aborts {
            h.abort();
        }
    }

    /// One packet (one whole link frame) arrived from the peer. Never waits: a handler is
    /// polled once here ([`RpcConfig::inline_first_poll`]) and continues in a task if it
    /// must wait; replies are handed to waiting callers. A malformed packet is dropped and
    /// counted in [`RpcPeer::stats`]; the connection goes on.
    pub fn packet(&self, frame: &[u8]) {
        let mut st = self.inner.lock();
        let now = Instant::now().into_std();
        let action = match st.session.on_packet(frame, now) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "dropped a malformed RPC packet");
                return;
            }
        };
        let epoch = st.epoch;
        match action {
            Action::Nothing => {}
            Action::Run(job) => {
                drop(st);
                self.inner.run(epoch, job, true);
            }
            Action::Send(bytes) => {
                let out = st.link.outgoing();
                drop(st);
                if let Some(out) = out {
                    self.inner.send_soon(out, bytes);
                }
            }
            Action::Wake(w, outcome) => {
                drop(st);
                let _ = w.send(outcome);
            }
            Action::Abort(h, next) => {
                drop(st);
                if let Some(h) = h {
                    h.abort();
                }
                if let Some(job) = next {
                    self.inner.run(epoch, job, false);
                }
            }
        }
    }
}

impl Drop for PeerDriver {
    fn drop(&mut self) {
        self.disconnected(Disconnect::Lost);
    }
}
