//! The tokio layer: [`RpcPeer`] (make calls, bind handlers) and [`PeerDriver`] (feed it
//! a connection), around the sans-IO [`Session`]. The shared state and how the session's
//! output is carried out (sending, waking, running handlers) are in `peer/inner.rs`.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::RpcConfig;
use crate::error::{BindError, RpcError};
use crate::method::{Method, RetCode};
use crate::outgoing::{LinkClosed, Outgoing};
use crate::packet;
use crate::proto::{Disconnect, Outcome, PollState, Session, SessionStats};

mod handlers;
mod inner;
mod outbox;

pub use handlers::Handlers;

use self::inner::{Inner, State};

/// One end of an RPC connection: make calls and bind handlers. Symmetric: both ends of a
/// connection have one, and which side dialed does not matter.
///
/// Cheap to clone (all clones share the connection). Calls are pipelined: any number of
/// tasks may call at once, up to [`RpcConfig::max_in_flight`] calls in flight, and replies
/// are matched to calls by retcode in whatever order they come.
///
/// A peer lives across reconnects of the link under it: calls made while disconnected fail
/// with [`RpcError::NotConnected`], calls in flight when the connection drops fail at
/// once with [`RpcError::ConnectionLost`], and calls after a reconnect work. Once its
/// [`PeerDriver`] is dropped nothing can reconnect it: calls fail with
/// [`RpcError::Stale`].
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
/// Dropping the driver disconnects the peer for good ([`Disconnect::Ended`]): its calls
/// fail with [`RpcError::Stale`] from then on.
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

/// The encoded arguments, in a plain `Vec`: they are copied into the request packet
/// and dropped, so they never become a `Bytes` (whose conversion from a `Vec` with room
/// to spare allocates a second time).
fn encode_args<A: Serialize>(args: &A) -> Result<Vec<u8>, RpcError> {
    packet::to_postcard_vec(args).map_err(|e| RpcError::Encode(e.to_string()))
}

/// Hands `packet` to the link: at once when its queue has room (no boxed future, which
/// [`Outgoing::send`] costs), else waiting for room. The same as `send` alone: the link's
/// `send` tries the same immediate push first, and a failed `try_send` changes nothing.
async fn send_packet(out: &dyn Outgoing, packet: Bytes) -> Result<(), LinkClosed> {
    if out.try_send(&packet) {
        return Ok(());
    }
    out.send(packet).await
}

/// The session's clock, as the session reads it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl fmt::Debug for RpcPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("RpcPeer")
            .field("connected", &st.session.is_connected())
            .field("in_flight", &st.session.calls().in_flight())
            .field("kept", &st.session.calls().kept())
            .field("running", &st.session.serve().running())
            .field("outbox_bytes", &st.outbox.bytes())
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
        session.set_next_retcode(random_u32());
        let inner = Arc::new(Inner::new(config, handlers, session));
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

    /// Attaches a value to this peer, once: what its owner knows about the other end
    /// (who it is, which link), for handlers, which are handed the calling peer (see
    /// [`bind_with`](Self::bind_with)). Returns the value back if one is attached already.
    pub fn set_context<T: std::any::Any + Send + Sync>(&self, value: T) -> Result<(), T> {
        if self.inner.context.get().is_some() {
            return Err(value);
        }
        let mut value = Some(value);
        let _ = self.inner.context.get_or_init(|| {
            Box::new(value.take().expect("taken once")) as Box<dyn std::any::Any + Send + Sync>
        });
        value.map_or(Ok(()), Err)
    }

    /// The value attached with [`set_context`](Self::set_context), if it is a `T`.
    pub fn context<T: std::any::Any>(&self) -> Option<&T> {
        self.inner.context.get()?.downcast_ref()
    }

    /// The handler table this peer serves from.
    pub fn handlers(&self) -> &Handlers {
        &self.inner.handlers
    }

    /// True while a connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.lock().session.is_connected()
    }

    /// Counters of what the remote sent that was dropped or refused.
    pub fn stats(&self) -> SessionStats {
        self.inner.lock().session.stats()
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().session.calls().in_flight()
    }

    /// Requests and notifications from the remote waiting for a handler slot.
    pub fn queued_requests(&self) -> usize {
        self.inner.lock().session.serve().queued()
    }

    /// Bytes of packets for the remote waiting in this connection's outbox because the
    /// link had no room, each packet counted with 64 bytes of bookkeeping besides its
    /// length: at most about twice [`RpcConfig::max_outbox_bytes`] (see there).
    pub fn outbox_bytes(&self) -> usize {
        self.inner.lock().outbox.bytes()
    }

    /// Packets waiting in this connection's outbox (see [`outbox_bytes`](Self::outbox_bytes)).
    pub fn outbox_len(&self) -> usize {
        self.inner.lock().outbox.len()
    }

    /// Handlers running now for the remote's calls and notifications.
    pub fn running_handlers(&self) -> usize {
        self.inner.lock().session.serve().running()
    }

    /// Waits until nothing is in flight, running or queued on this peer: no call of ours
    /// awaits its reply ([`in_flight`](Self::in_flight) is 0), and no handler runs or
    /// waits for the remote ([`running_handlers`](Self::running_handlers) and
    /// [`queued_requests`](Self::queued_requests) are 0), and no answer waits in the outbox
    /// for room in the link ([`outbox_len`](Self::outbox_len) is 0; a remote that never
    /// reads keeps it waiting). Resolves at once when that already holds.
    ///
    /// Replies kept for [`poll`](Self::poll) do not count. A [`send`](Self::send) call
    /// nobody answers counts until it expires ([`RpcConfig::keep_replies_for`]); a lost
    /// connection ends every call and handler, so a disconnected peer is idle. Woken by the
    /// peer itself when its last call or handler ends, never by polling on a timer;
    /// another call may start right after, so check again if that matters. Bound the
    /// wait with `tokio::time::timeout`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use hail_rpc::{RpcConfig, memory};
    ///
    /// let (a, b, _link) = memory::pair(RpcConfig::default(), RpcConfig::default());
    /// b.bind("note", |_: String| async { Ok::<_, String>(()) })?;
    /// a.notify("note", "written down").await?;
    /// // Before `b` shuts down, let its handlers finish.
    /// b.idle().await;
    /// assert_eq!(b.running_handlers() + b.queued_requests(), 0);
    /// # Ok(()) }
    /// ```
    pub async fn idle(&self) {
        self.inner.wait_for(Session::is_idle).await;
    }

    /// Waits until no handler runs and no request or notification waits for one
    /// ([`running_handlers`](Self::running_handlers) and
    /// [`queued_requests`](Self::queued_requests) are 0); calls of ours may still be in
    /// flight. What a graceful server shutdown waits for, and what a closed link's
    /// owner waits for before it disconnects the peer, so what the remote sent before it
    /// closed is served. Woken by the peer itself, never by polling; resolves at once
    /// when that already holds. Bound the wait with `tokio::time::timeout`.
    pub async fn done_serving(&self) {
        self.inner.wait_for(|s| !s.is_serving()).await;
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
            let (retcode, out, request) =
                self.inner.start(method, false, &args, Some(tx), permit)?;
            let mut guard = CancelOnDrop {
                inner: &self.inner,
                retcode,
                armed: true,
            };
            if send_packet(&*out, request).await.is_err() {
                guard.armed = false;
                self.inner.with(|st| st.session.abandon(retcode));
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
        let (retcode, out, request) = self.inner.start(method, true, &args, None, permit)?;
        if send_packet(&*out, request).await.is_err() {
            self.inner.with(|st| st.session.abandon(retcode));
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
        let waiting = self.inner.with_expired(|st| {
            let expiry = st.session.expiry(retcode);
            match st.session.poll_call(retcode) {
                PollState::Ready(outcome) => Err(outcome),
                PollState::Expired => Err(Err(RpcError::Expired)),
                PollState::Unknown => Err(Err(RpcError::UnknownRetCode(retcode))),
                PollState::InFlight => {
                    let (tx, rx) = oneshot::channel();
                    match st.session.set_poller(retcode, tx) {
                        Ok(()) => Ok((rx, expiry)),
                        Err(_) => Err(Err(RpcError::UnknownRetCode(retcode))),
                    }
                }
            }
        });
        let (rx, expiry) = match waiting {
            Ok(waiting) => waiting,
            Err(outcome) => return decode_outcome(outcome),
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
                self.inner.with_expired(|_| ());
                Err(RpcError::Expired)
            }
            Err(_) => Err(RpcError::Timeout),
        }
    }

    /// Forgets the [`send`](Self::send) call `retcode`: drops its kept reply, or cancels
    /// it if still in flight (its reply will be discarded). Returns whether there was
    /// anything to forget.
    pub fn flush(&self, retcode: RetCode) -> bool {
        self.inner.with_expired(|st| st.session.flush(retcode))
    }

    /// Takes every reply kept for `poll` so far, oldest first.
    pub fn take_ready(&self) -> Vec<(RetCode, Reply)> {
        self.inner
            .with_expired(|st| st.session.take_ready())
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
        let (out, packet) = self.inner.with(|st| {
            st.session.notify(&method, &args)?;
            st.take_packet().ok_or(RpcError::NotConnected)
        })?;
        send_packet(&*out, packet)
            .await
            .map_err(|LinkClosed| RpcError::NotConnected)
    }
}

/// Sends the cancel of an `execute` that stopped waiting (timeout or drop).
struct CancelOnDrop<'a> {
    inner: &'a Arc<Inner>,
    retcode: RetCode,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.with(|st| st.session.cancel(self.retcode));
        }
    }
}

/// Detaches a `poll` that stopped waiting, so another poll may wait on the call.
struct ClearPoller<'a> {
    inner: &'a Arc<Inner>,
    retcode: RetCode,
}

impl Drop for ClearPoller<'_> {
    fn drop(&mut self) {
        self.inner.with(|st| st.session.clear_poller(self.retcode));
    }
}

impl State {
    /// The packet an API call just queued, with the link to send it on (with backpressure).
    fn take_packet(&mut self) -> Option<(Arc<dyn Outgoing>, Bytes)> {
        let packet = self.session.poll_transmit()?.packet;
        Some((self.out.clone()?, packet))
    }
}

impl PeerDriver {
    /// The peer this driver feeds.
    pub fn peer(&self) -> RpcPeer {
        RpcPeer {
            inner: self.inner.clone(),
        }
    }

    /// A connection is up: packets go to `out` from now on. A `hail-link`
    /// `Connection<Binary>` or `Client<Binary>` serves as it is (see [`Outgoing`]).
    pub fn connected(&self, out: Arc<dyn Outgoing>) {
        self.inner.with(|st| {
            // What the peer keeps for the remote counts in the link's budget.
            st.hold = out.hold();
            st.out = Some(out);
            st.outbox.reset();
            st.session.handle_link_up();
        });
    }

    /// The connection dropped: every call in flight ends with
    /// [`ConnectionLost`](RpcError::ConnectionLost) now, running handlers are aborted and
    /// queued requests dropped (nobody could receive their replies).
    pub fn disconnected(&self, why: Disconnect) {
        self.inner.with(|st| {
            st.out = None;
            st.hold = None;
            st.outbox.reset();
            st.session.handle_link_down(why, now());
        });
    }

    /// One packet (one whole link frame) arrived from the peer. Never waits: a handler is
    /// polled once here ([`RpcConfig::inline_first_poll`]) and continues in a task if it
    /// must wait; replies are handed to waiting callers. A malformed packet is dropped and
    /// counted in [`RpcPeer::stats`]; the connection goes on.
    pub fn packet(&self, frame: &[u8]) {
        self.packets([frame]);
    }

    /// Packets that arrived together (a batch the link delivered), in order: each is
    /// handled as [`packet`](Self::packet) handles one, but a run of them under one lock
    /// of the session, their inline handlers polled after the run and their ends
    /// reported under one more lock, their callers woken and their answers handed to the
    /// link in one go. The link adapters ([`RpcClient`](crate::RpcClient),
    /// [`RpcServer`](crate::RpcServer)) feed every batch they receive this way.
    ///
    /// A packet gets what it would get alone, within the same bounds. A run ends before a
    /// packet that finds every handler slot taken (that one waits until the handlers of
    /// the run have had their inline poll, which frees the slots of those that end, as
    /// they would have), after an answer the session gives itself (a PING's or a
    /// refusal: it goes to the link before the next request is admitted), and while
    /// answers wait in the outbox (a slow reader's requests are taken one by one). So
    /// the requests of a run are admitted before their handlers' answers meet a full link:
    /// past [`RpcConfig::max_outbox_bytes`] the outbox may take the answers of one run's
    /// handlers, at most [`RpcConfig::max_concurrent_handlers`], which its bound allows for
    /// (the replies of the handlers running when it filled). A cancel in the same run as
    /// its request is handled before the request's handler runs, and that handler's
    /// answer is not sent, as if the cancel had come first.
    pub fn packets<I>(&self, frames: I)
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut frames = frames.into_iter().peekable();
        while frames.peek().is_some() {
            self.inner.with(|st| {
                let mut first = true;
                while let Some(frame) = frames.next_if(|_| first || st.takes_more_in_run()) {
                    first = false;
                    st.update_room();
                    if let Err(e) = st.session.handle_packet_with(now, frame.as_ref()) {
                        tracing::debug!(error = %e, "dropped a malformed RPC packet");
                    }
                }
            });
        }
    }
}

impl Drop for PeerDriver {
    fn drop(&mut self) {
        self.disconnected(Disconnect::Ended);
    }
}
