//! The multi-client server.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::BytesMut;
use hail_wire::{Binary, PayloadCodec};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::budget::{Budget, BudgetStats};
use crate::chan;
use crate::config::{ServerConfig, SlowClientPolicy};
use crate::conn::Connection;
use crate::error::{CloseReason, LinkError, RefuseReason};
use crate::events::{Events, OnClose, ServerEvent, ServerEvents, Sink};
use crate::handshake;
use crate::id::{ClientId, ConnId};
use crate::timing::AuthPenalty;
use crate::transport::{Link, Listener};

impl<T> Events<ServerEvent<T>> {
    /// Runs callbacks for every event until the server is gone (Python Comms style:
    /// `add_onconnect_callback`, `add_onmessage_callback`, `add_onclose_callback`).
    pub async fn run_callbacks(mut self, mut callbacks: Callbacks<T>) {
        while let Some(ev) = self.recv().await {
            match ev {
                ServerEvent::Connected { id, addr, .. } => {
                    if let Some(f) = &mut callbacks.on_connect {
                        f(id, addr);
                    }
                }
                ServerEvent::Message { id, msg } => {
                    if let Some(f) = &mut callbacks.on_message {
                        f(id, msg);
                    }
                }
                ServerEvent::Closed { id, reason } => {
                    if let Some(f) = &mut callbacks.on_close {
                        f(id, reason);
                    }
                }
                // Python Comms has no callback for it: counted in `ServerStats`.
                ServerEvent::Undecodable { id, error } => {
                    tracing::debug!(%id, %error, "undecodable frame, no callback for it");
                }
            }
        }
    }
}

type ConnectFn = Box<dyn FnMut(ClientId, SocketAddr) + Send>;
type MessageFn<T> = Box<dyn FnMut(ClientId, T) + Send>;
type CloseFn = Box<dyn FnMut(ClientId, CloseReason) + Send>;

/// Callbacks for [`run_callbacks`](Events::run_callbacks) on [`ServerEvents`]; each is optional.
pub struct Callbacks<T> {
    on_connect: Option<ConnectFn>,
    on_message: Option<MessageFn<T>>,
    on_close: Option<CloseFn>,
}

impl<T> Default for Callbacks<T> {
    fn default() -> Self {
        Self {
            on_connect: None,
            on_message: None,
            on_close: None,
        }
    }
}

impl<T> fmt::Debug for Callbacks<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_connect", &self.on_connect.is_some())
            .field("on_message", &self.on_message.is_some())
            .field("on_close", &self.on_close.is_some())
            .finish()
    }
}

impl<T> Callbacks<T> {
    /// Called with the id and address of each new client.
    pub fn on_connect(mut self, f: impl FnMut(ClientId, SocketAddr) + Send + 'static) -> Self {
        self.on_connect = Some(Box::new(f));
        self
    }

    /// Called with each message and its sender.
    pub fn on_message(mut self, f: impl FnMut(ClientId, T) + Send + 'static) -> Self {
        self.on_message = Some(Box::new(f));
        self
    }

    /// Called when a client's connection ends, with the reason.
    pub fn on_close(mut self, f: impl FnMut(ClientId, CloseReason) + Send + 'static) -> Self {
        self.on_close = Some(Box::new(f));
        self
    }
}

/// Server counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Clients admitted since start.
    pub accepted: u64,
    /// Clients refused because `max_clients` were connected.
    pub refused_full: u64,
    /// Connections closed at once because `max_pending` handshakes were running.
    pub refused_pending: u64,
    /// Handshakes that failed authentication: wrong passphrase, a replayed message, a
    /// pattern mismatch (an identity on one side only), a forged or missing identity, a
    /// plaintext peer on a secured server.
    pub auth_failures: u64,
    /// Handshakes that failed otherwise (deadline, protocol, I/O).
    pub handshake_failures: u64,
    /// Broadcast messages skipped for a slow client ([`SlowClientPolicy::DropMessage`]).
    pub broadcast_dropped: u64,
    /// Clients disconnected as slow consumers ([`SlowClientPolicy::Disconnect`]).
    pub slow_disconnects: u64,
    /// Clients connected now.
    pub clients: usize,
    /// Connections in their handshake now (at most [`ServerConfig::max_pending`](crate::ServerConfig::max_pending),
    /// each for at most the handshake deadline): not yet proven, so not counted in `clients`.
    pub pending: usize,
    /// Bytes waiting in all send queues now.
    pub queued_bytes: usize,
    /// Memory held by all receive buffers now, in bytes.
    pub rx_buffered_bytes: usize,
    /// Frames from clients whose payload the codec could not decode, since start (each
    /// dropped and reported as [`ServerEvent::Undecodable`](crate::ServerEvent::Undecodable)).
    pub undecodable: u64,
    /// Clients closed with [`CloseReason::MemoryBudget`] since start: a partial frame, or a
    /// send queue the client did not read, stalled on the memory budget for the stall time.
    pub budget_closes: u64,
    /// Failed `accept` calls since start (out of file descriptors and the like): each is
    /// followed by a 50 ms pause; logged at warn level at most once per
    /// [`ACCEPT_WARN_EVERY`] with the count since the last line.
    pub accept_errors: u64,
    /// The memory budget the server's connections draw on (shared with whatever else
    /// was given the same [`Budget`]): bytes held now and at most, and its limits.
    pub budget: BudgetStats,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused_full: AtomicU64,
    refused_pending: AtomicU64,
    auth_failures: AtomicU64,
    handshake_failures: AtomicU64,
    broadcast_dropped: AtomicU64,
    slow_disconnects: AtomicU64,
    /// Undecodable frames of connections that have closed.
    undecodable_closed: AtomicU64,
    budget_closes: AtomicU64,
    accept_errors: AtomicU64,
}

/// How often a failing `accept` is logged at most (10 s): a peer can cause it by holding
/// connections until the open-file limit, so each failure is counted
/// ([`ServerStats::accept_errors`]) and summarised, not logged one by one.
pub const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// What a broadcast did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Clients whose queue took the message.
    pub queued: usize,
    /// Clients that did not get it because their queue was full (disconnected or skipped,
    /// per the [`SlowClientPolicy`]).
    pub slow: Vec<ClientId>,
}

struct Inner<P: PayloadCodec> {
    cfg: ServerConfig,
    payload: P,
    clients: Mutex<HashMap<ConnId, Connection<P>>>,
    /// Admitted clients, counted from admission to the end of the connection.
    admitted: AtomicUsize,
    pending: AtomicUsize,
    shutting_down: AtomicBool,
    penalty: Mutex<AuthPenalty>,
    counters: Counters,
    events: chan::Sender<ServerEvent<P::Item>>,
}

impl<P: PayloadCodec> Inner<P> {
    fn clients(&self) -> MutexGuard<'_, HashMap<ConnId, Connection<P>>> {
        // Map updates are single calls; a poisoned lock holds a consistent map.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A multi-client server exchanging whole messages, over TCP or in memory
/// ([`LinkConfig::transport`](crate::LinkConfig::transport)).
///
/// * Each client gets a [`ClientId`]; [`send_to`](Self::send_to),
///   [`broadcast`](Self::broadcast), [`clients`](Self::clients), [`disconnect`](Self::disconnect).
/// * A real client limit ([`ServerConfig::max_clients`], default 1024): a client over it
///   is refused with [`RefuseReason::ServerFull`], which it reads from the close frame.
/// * [`broadcast`](Self::broadcast) encodes once and queues without waiting; a client whose
///   queue is full gets the [`SlowClientPolicy`] (default: disconnected, counted).
/// * With a pre-shared key every client runs the Noise handshake first; failures are
///   counted and repeated failures from one address are answered ever more slowly
///   (100 ms doubling per failure, capped at half the handshake deadline, forgotten after
///   60 s without failure).
///
/// Dropping the server closes everything at once; [`close`](Self::close) is graceful.
pub struct Server<P: PayloadCodec = Binary> {
    inner: Arc<Inner<P>>,
    local: SocketAddr,
    /// The accept loop, which owns the listener: aborted on drop, and awaited by
    /// [`close`](Self::close) so that the listener is gone when it returns.
    accept: JoinHandle<()>,
}

impl<P: PayloadCodec> fmt::Debug for Server<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local", &self.local)
            .field("clients", &self.inner.clients().len())
            .finish_non_exhaustive()
    }
}

impl<P: PayloadCodec> Drop for Server<P> {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, c) in self.inner.clients().drain() {
            c.kill(CloseReason::Shutdown);
        }
    }
}

impl<P> Server<P>
where
    P: PayloadCodec + Clone + Send + Sync + 'static,
    P::Item: Send + 'static,
{
    /// Binds `addr` (IPv4 or IPv6; port 0 picks a free port) on the link config's
    /// [`transport`](crate::LinkConfig::transport) and starts accepting.
    pub async fn bind(
        addr: SocketAddr,
        config: ServerConfig,
        payload: P,
    ) -> Result<(Self, ServerEvents<P::Item>), LinkError> {
        let mut config = config;
        config.link = config.link.with_budget();
        let listener = config.link.transport.bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, rx) = chan::channel(config.event_capacity);
        let cap = config.link.handshake_timeout / 2;
        let inner = Arc::new(Inner {
            cfg: config,
            payload,
            clients: Mutex::new(HashMap::new()),
            admitted: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            penalty: Mutex::new(AuthPenalty::new(cap)),
            counters: Counters::default(),
            events: tx,
        });
        let accept = tokio::spawn(accept_loop(Arc::downgrade(&inner), listener));
        Ok((
            Self {
                inner,
                local,
                accept,
            },
            Events::new(rx),
        ))
    }
}

async fn accept_loop<P>(inner: Weak<Inner<P>>, mut listener: Listener)
where
    P: PayloadCodec + Clone + Send + Sync + 'static,
    P::Item: Send + 'static,
{
    let mut handshakes = JoinSet::new();
    // The last accept warning and the failures since it.
    let mut warned: Option<tokio::time::Instant> = None;
    let mut unlogged = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        let link = match accepted {
            Ok(link) => link,
            Err(e) => {
                // Out of file descriptors and the like: counted, logged at most once per
                // ACCEPT_WARN_EVERY, and a short pause rather than a spin.
                let Some(server) = inner.upgrade() else {
                    return;
                };
                server
                    .counters
                    .accept_errors
                    .fetch_add(1, Ordering::Relaxed);
                drop(server);
                unlogged += 1;
                let now = tokio::time::Instant::now();
                if warned.is_none_or(|at| now.duration_since(at) >= ACCEPT_WARN_EVERY) {
                    tracing::warn!(error = %e, failures = unlogged, "accept failed");
                    warned = Some(now);
                    unlogged = 0;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(server) = inner.upgrade() else {
            return;
        };
        if server.pending.load(Ordering::Relaxed) >= server.cfg.max_pending {
            server
                .counters
                .refused_pending
                .fetch_add(1, Ordering::Relaxed);
            drop(link);
            continue;
        }
        server.pending.fetch_add(1, Ordering::Relaxed);
        handshakes.spawn(admit(server, link));
    }
}

async fn admit<P>(server: Arc<Inner<P>>, link: Link)
where
    P: PayloadCodec + Clone + Send + Sync + 'static,
    P::Item: Send + 'static,
{
    struct Pending<'a>(&'a AtomicUsize);
    impl Drop for Pending<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let pending = Pending(&server.pending);
    let peer = link.peer;
    let cfg = &server.cfg.link;
    // tokio's clock, as every timer of a link: the penalty's memory follows paused time.
    let delay = lock_penalty(&server).delay(peer.ip(), now());
    let admit_check = || {
        if server.shutting_down.load(Ordering::Relaxed) {
            return Err(RefuseReason::ShuttingDown);
        }
        let prev = server.admitted.fetch_add(1, Ordering::AcqRel);
        if prev >= server.cfg.max_clients {
            server.admitted.fetch_sub(1, Ordering::AcqRel);
            server.counters.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(RefuseReason::ServerFull);
        }
        Ok(())
    };
    let result = tokio::time::timeout(
        cfg.handshake_timeout,
        handshake::respond(link, cfg, delay, admit_check),
    )
    .await;
    // Only the handshake counts against `max_pending`.
    drop(pending);
    let est = match result {
        Ok(Ok(est)) => est,
        Ok(Err(rej)) => {
            if rej.auth_failed {
                server
                    .counters
                    .auth_failures
                    .fetch_add(1, Ordering::Relaxed);
                lock_penalty(&server).failed(peer.ip(), now());
            } else if !matches!(rej.error, LinkError::Refused(_)) {
                server
                    .counters
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(%peer, error = %rej.error, "handshake failed");
            return;
        }
        Err(_) => {
            server
                .counters
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "handshake timed out");
            return;
        }
    };
    if cfg.is_secure() {
        lock_penalty(&server).succeeded(peer.ip());
    }
    server.counters.accepted.fetch_add(1, Ordering::Relaxed);
    let id = ConnId::fresh();
    let weak = Arc::downgrade(&server);
    let on_close: OnClose = Box::new(move |reason| {
        let Some(server) = weak.upgrade() else {
            return Box::new(()) as Box<dyn std::any::Any + Send>;
        };
        if matches!(reason, CloseReason::MemoryBudget) {
            server
                .counters
                .budget_closes
                .fetch_add(1, Ordering::Relaxed);
        }
        server.admitted.fetch_sub(1, Ordering::AcqRel);
        let removed = server.clients().remove(&id);
        if let Some(conn) = &removed {
            // Kept in the server's count once the connection is gone.
            server
                .counters
                .undecodable_closed
                .fetch_add(conn.stats().undecodable, Ordering::Relaxed);
        }
        Box::new(removed)
    });
    let sink = Sink::Server {
        tx: server.events.clone(),
        id,
        on_close: Some(on_close),
    };
    // The client is in `clients()` (so `send_to` works) once `Connected` is out, and the
    // reader waits for `Connected` to be out before it delivers anything.
    let (go, gate) = oneshot::channel();
    let peer_key = est.peer_key;
    let conn = Connection::start(est, cfg, server.payload.clone(), sink, None, Some(gate));
    server.clients().insert(id, conn.clone());
    if server
        .events
        .send(ServerEvent::Connected {
            id,
            addr: peer,
            peer_key: peer_key.map(Box::new),
        })
        .await
        .is_err()
    {
        conn.kill(CloseReason::Shutdown);
    }
    let _ = go.send(());
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn lock_penalty<P: PayloadCodec>(server: &Inner<P>) -> MutexGuard<'_, AuthPenalty> {
    // The table is updated by single calls; a poisoned lock still holds a usable table.
    server.penalty.lock().unwrap_or_else(|p| p.into_inner())
}

impl<P> Server<P>
where
    P: PayloadCodec + Clone + Send + Sync + 'static,
    P::Item: Send + 'static,
{
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The connected clients and their addresses.
    pub fn clients(&self) -> Vec<(ClientId, SocketAddr)> {
        let mut v: Vec<_> = self
            .inner
            .clients()
            .iter()
            .map(|(id, c)| (*id, c.peer_addr()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// The connection handle of one client (to send, close or watch it directly).
    pub fn connection(&self, id: ClientId) -> Option<Connection<P>> {
        self.inner.clients().get(&id).cloned()
    }

    /// Sends `msg` to one client, waiting while its send queue is full.
    pub async fn send_to(
        &self,
        id: ClientId,
        msg: impl std::borrow::Borrow<P::Item>,
    ) -> Result<(), LinkError> {
        let conn = self.connection(id).ok_or(LinkError::UnknownClient)?;
        conn.send(msg).await
    }

    /// Sends `msg` to one client if its queue has room ([`LinkError::Full`] otherwise).
    pub fn try_send_to(
        &self,
        id: ClientId,
        msg: impl std::borrow::Borrow<P::Item>,
    ) -> Result<(), LinkError> {
        let conn = self.connection(id).ok_or(LinkError::UnknownClient)?;
        conn.try_send(msg)
    }

    /// Queues `msg` for every client without waiting: encoded once, copied into each
    /// client's queue. A client whose queue is full gets the [`SlowClientPolicy`]
    /// (default [`SlowClientPolicy::Disconnect`]); the report lists them.
    pub fn broadcast(
        &self,
        msg: impl std::borrow::Borrow<P::Item>,
    ) -> Result<BroadcastReport, LinkError> {
        let conns: Vec<Connection<P>> = self.inner.clients().values().cloned().collect();
        let mut report = BroadcastReport::default();
        let Some(first) = conns.first() else {
            return Ok(report);
        };
        let mut frame = BytesMut::new();
        first.encode_to(msg.borrow(), &mut frame)?;
        for c in &conns {
            match c.try_send_frame(&frame) {
                Ok(()) => report.queued += 1,
                Err(LinkError::Full) => {
                    report.slow.push(c.id());
                    match self.inner.cfg.slow_policy {
                        SlowClientPolicy::Disconnect => {
                            self.inner
                                .counters
                                .slow_disconnects
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(client = %c.id(), "slow consumer disconnected");
                            c.kill(CloseReason::SlowConsumer);
                        }
                        SlowClientPolicy::DropMessage => {
                            self.inner
                                .counters
                                .broadcast_dropped
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // Closing or closed: its Closed event reports it.
                Err(_) => {}
            }
        }
        Ok(report)
    }

    /// Closes one client gracefully (its queued messages go out first). False if unknown.
    pub fn disconnect(&self, id: ClientId) -> bool {
        match self.connection(id) {
            Some(c) => {
                c.close();
                true
            }
            None => false,
        }
    }

    /// The server's counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.counters;
        let clients = self.inner.clients();
        let (queued, rx, undecodable) = clients.values().fold((0, 0, 0), |(q, r, u), conn| {
            let s = conn.stats();
            (
                q + s.queued_bytes,
                r + s.rx_buffered_bytes,
                u + s.undecodable,
            )
        });
        ServerStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused_full: c.refused_full.load(Ordering::Relaxed),
            refused_pending: c.refused_pending.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            handshake_failures: c.handshake_failures.load(Ordering::Relaxed),
            broadcast_dropped: c.broadcast_dropped.load(Ordering::Relaxed),
            slow_disconnects: c.slow_disconnects.load(Ordering::Relaxed),
            clients: clients.len(),
            pending: self.inner.pending.load(Ordering::Relaxed),
            queued_bytes: queued,
            rx_buffered_bytes: rx,
            undecodable: undecodable + c.undecodable_closed.load(Ordering::Relaxed),
            budget_closes: c.budget_closes.load(Ordering::Relaxed),
            accept_errors: c.accept_errors.load(Ordering::Relaxed),
            budget: self.budget().stats(),
        }
    }

    /// The memory budget this server's connections draw on: the one of its
    /// [`LinkConfig::budget`](crate::LinkConfig::budget), or the one it made (32 MiB).
    pub fn budget(&self) -> &Budget {
        self.inner
            .cfg
            .link
            .budget
            .as_ref()
            .expect("bind gives the config a budget")
    }

    /// Closes gracefully within `deadline`: stops accepting, lets every queued
    /// outgoing message go out and every message already sent by a client be delivered
    /// (clients are told with a close frame and finish their side), then closes whatever
    /// is left when the deadline passes. Every connection ends with a `Closed` event
    /// (reason [`CloseReason::Shutdown`]); the event stream ends after the last one.
    /// The listener is closed when this returns: its address can be bound again.
    pub async fn close(mut self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        self.accept.abort();
        // The aborted task drops the listener (and its pending handshakes) the next time
        // the runtime gets to it; wait for that, so the address is free when this returns.
        // Its result is `Cancelled`, or a panic of the loop's already reported by tokio.
        let _ = (&mut self.accept).await;
        let conns: Vec<Connection<P>> = self.inner.clients().values().cloned().collect();
        for c in &conns {
            c.close_with(CloseReason::Shutdown);
        }
        for c in &conns {
            if tokio::time::timeout_at(until, c.closed()).await.is_err() {
                c.kill(CloseReason::Shutdown);
                c.closed().await;
            }
        }
    }
}
