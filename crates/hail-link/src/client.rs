//! The reconnecting client.

use std::borrow::Borrow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use hail_wire::{Binary, FrameCodec, PayloadCodec};
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;

use crate::chan;
use crate::config::{ClientConfig, Framing};
use crate::conn::{Connection, encode_message};
use crate::error::{CloseReason, LinkError};
use crate::events::{ClientEvent, ClientEvents, Events, Sink};
use crate::handshake;
use crate::timing::BackoffState;

/// Client counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Successful reconnections (the first connection not counted).
    pub reconnects: u64,
    /// Failed connection attempts while reconnecting (or making the first connection in
    /// the background).
    pub failed_attempts: u64,
    /// Messages accepted into the outage buffer while disconnected.
    pub buffered_during_outage: u64,
    /// Messages accepted by `send` that were never written: buffered or queued when the
    /// client was closed or gave up. Also returned by [`Client::close`].
    pub discarded: u64,
    /// Frames from the server whose payload the codec could not decode, over every
    /// connection (each dropped and reported as
    /// [`ClientEvent::Undecodable`](crate::ClientEvent::Undecodable)).
    pub undecodable: u64,
}

enum State<P: PayloadCodec> {
    Connected(Connection<P>),
    Disconnected { outage: BytesMut, frames: u64 },
    Closed,
}

struct Inner<P: PayloadCodec> {
    cfg: ClientConfig,
    payload: P,
    frames: FrameCodec,
    addr: SocketAddr,
    state: Mutex<State<P>>,
    epoch: watch::Sender<u64>,
    stop: Notify,
    reconnects: AtomicU64,
    failed_attempts: AtomicU64,
    buffered: AtomicU64,
    discarded: AtomicU64,
    /// Undecodable frames of connections that have ended.
    undecodable_closed: AtomicU64,
}

impl<P: PayloadCodec> Inner<P> {
    fn state(&self) -> MutexGuard<'_, State<P>> {
        // State changes are single assignments; a poisoned lock holds a valid state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }
}

/// A client that reconnects by itself (exponential backoff with jitter, default 100 ms
/// doubling to 5 s) until [`close`](Self::close); over TCP, or in memory
/// ([`LinkConfig::transport`](crate::LinkConfig::transport)).
///
/// **What happens to a message** ("nothing lost"): [`send`](Self::send) returns `Ok` only
/// when the message is in a send queue that will be written:
/// * connected: in the connection's queue ([`LinkConfig::queue_bytes`](crate::LinkConfig::queue_bytes));
/// * disconnected: in the outage buffer ([`ClientConfig::outage_bytes`], default 256 KiB),
///   written first, in order, on the next connection. Frames still queued (not yet
///   written) when a connection dies move to the outage buffer too.
///
/// Otherwise it returns an error and nothing was queued: [`LinkError::NotConnected`] when
/// the outage buffer is full or reconnection is off, [`LinkError::Closed`] after `close`.
/// Messages buffered when the client is closed are counted and returned by `close`.
/// A frame that was already handed to the socket when the connection died may or may not
/// have reached the peer: TCP cannot tell, and hail-link does not resend it.
pub struct Client<P: PayloadCodec = Binary> {
    inner: Arc<Inner<P>>,
    task: AbortHandle,
}

impl<P: PayloadCodec> fmt::Debug for Client<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl<P: PayloadCodec> Drop for Client<P> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<P> Client<P>
where
    P: PayloadCodec + Clone + Send + Sync + 'static,
    P::Item: Send + 'static,
{
    /// Connects to `addr`. The first attempt must succeed (its error is returned), unless
    /// [`ClientConfig::connect_in_background`] is on; afterwards the client reconnects by
    /// itself if [`ClientConfig::reconnect`] is on.
    pub async fn connect(
        addr: SocketAddr,
        config: ClientConfig,
        payload: P,
    ) -> Result<(Self, ClientEvents<P::Item>), LinkError> {
        let mut config = config;
        // One budget for all the client's successive connections.
        config.link = config.link.with_budget();
        let (tx, rx) = chan::channel(config.link.incoming_capacity);
        let conn = if config.background_connect {
            None
        } else {
            let est = handshake::dial(addr, &config.link, config.connect_timeout).await?;
            let _ = tx.try_send(ClientEvent::Connected {
                addr,
                peer_key: est.peer_key.map(Box::new),
            });
            Some(Connection::start(
                est,
                &config.link,
                payload.clone(),
                Sink::Client(tx.clone()),
                None,
                None,
            ))
        };
        let state = match &conn {
            Some(c) => State::Connected(c.clone()),
            None => State::Disconnected {
                outage: BytesMut::new(),
                frames: 0,
            },
        };
        let frames = FrameCodec::builder()
            .byte_order(config.link.byte_order)
            .max_frame_len(config.link.max_frame_len)
            .build();
        let inner = Arc::new(Inner {
            cfg: config,
            payload,
            frames,
            addr,
            state: Mutex::new(state),
            epoch: watch::Sender::new(0),
            stop: Notify::new(),
            reconnects: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            buffered: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            undecodable_closed: AtomicU64::new(0),
        });
        let task = tokio::spawn(supervise(Arc::clone(&inner), conn, tx)).abort_handle();
        Ok((Self { inner, task }, Events::new(rx)))
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The current connection, if connected.
    pub fn connection(&self) -> Option<Connection<P>> {
        match &*self.inner.state() {
            State::Connected(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.connection().is_some_and(|c| !c.is_closed())
    }

    fn buffer(
        &self,
        outage: &mut BytesMut,
        frames: &mut u64,
        msg: &P::Item,
    ) -> Result<(), LinkError> {
        if self.inner.cfg.reconnect.is_none() {
            return Err(LinkError::NotConnected);
        }
        let before = outage.len();
        encode_message(
            &self.inner.frames,
            self.inner.cfg.link.framing == Framing::Hail,
            &self.inner.payload,
            msg,
            outage,
        )
        .map_err(LinkError::Encode)?;
        if outage.len() > self.inner.cfg.outage_bytes {
            outage.truncate(before);
            return Err(LinkError::NotConnected);
        }
        *frames += 1;
        self.inner.buffered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends `msg`: queued on the connection (waiting while its queue is full), or in the
    /// outage buffer while disconnected. See the type docs for the exact policy.
    pub async fn send(&self, msg: impl Borrow<P::Item>) -> Result<(), LinkError> {
        let msg = msg.borrow();
        loop {
            let mut epoch = self.inner.epoch.subscribe();
            let conn = {
                let mut st = self.inner.state();
                epoch.borrow_and_update();
                match &mut *st {
                    State::Connected(c) => c.clone(),
                    State::Disconnected { outage, frames } => {
                        return self.buffer(outage, frames, msg);
                    }
                    State::Closed => return Err(LinkError::Closed(CloseReason::Closed)),
                }
            };
            match conn.send(msg).await {
                // The connection just died: wait until the client has noticed, then retry.
                Err(LinkError::Closed(_)) => {
                    let _ = epoch.changed().await;
                }
                other => return other,
            }
        }
    }

    /// Like [`send`](Self::send) but never waits: [`LinkError::Full`] when the
    /// connection's queue is full.
    pub fn try_send(&self, msg: impl Borrow<P::Item>) -> Result<(), LinkError> {
        let msg = msg.borrow();
        let mut st = self.inner.state();
        match &mut *st {
            State::Connected(c) => match c.try_send(msg) {
                Err(LinkError::Closed(_)) => Err(LinkError::NotConnected),
                other => other,
            },
            State::Disconnected { outage, frames } => self.buffer(outage, frames, msg),
            State::Closed => Err(LinkError::Closed(CloseReason::Closed)),
        }
    }

    /// Stops reconnecting and closes gracefully (queued messages are written first, for
    /// up to the close linger). Returns how many accepted messages were never written
    /// (outage buffer, or a connection that died meanwhile); they are counted in
    /// [`ClientStats::discarded`] too.
    pub async fn close(&self) -> u64 {
        let old = std::mem::replace(&mut *self.inner.state(), State::Closed);
        self.inner.bump();
        self.inner.stop.notify_waiters();
        let discarded = match old {
            State::Connected(c) => {
                c.close();
                c.closed().await;
                c.shared().take_unsent().1
            }
            State::Disconnected { frames, .. } => frames,
            State::Closed => 0,
        };
        self.inner.discarded.fetch_add(discarded, Ordering::Relaxed);
        discarded
    }

    /// The memory budget of the client's connections: its
    /// [`LinkConfig::budget`](crate::LinkConfig::budget), or the one it made (32 MiB),
    /// the same across reconnections.
    pub fn budget(&self) -> &crate::Budget {
        self.inner
            .cfg
            .link
            .budget
            .as_ref()
            .expect("connect gives the config a budget")
    }

    /// The client's counters.
    pub fn stats(&self) -> ClientStats {
        let i = &self.inner;
        ClientStats {
            reconnects: i.reconnects.load(Ordering::Relaxed),
            failed_attempts: i.failed_attempts.load(Ordering::Relaxed),
            buffered_during_outage: i.buffered.load(Ordering::Relaxed),
            discarded: i.discarded.load(Ordering::Relaxed),
            undecodable: i.undecodable_closed.load(Ordering::Relaxed)
                + self.connection().map_or(0, |c| c.stats().undecodable),
        }
    }
}

/// Watches the connection and reconnects; starts with `first`, or with no connection yet
/// (state `Disconnected`) when the first connection is made in the background.
async fn supervise<P>(
    inner: Arc<Inner<P>>,
    first: Option<Connection<P>>,
    events: chan::Sender<ClientEvent<P::Item>>,
) where
    P: PayloadCodec + Clone + Send + Sync + 'static,
    P::Item: Send + 'static,
{
    let mut conn = match first {
        Some(c) => c,
        None => match redial(&inner, &events, true).await {
            Some(c) => c,
            None => return,
        },
    };
    loop {
        let reason = conn.closed().await;
        inner
            .undecodable_closed
            .fetch_add(conn.stats().undecodable, Ordering::Relaxed);
        let (unsent, n) = conn.shared().take_unsent();
        let closed_by_user = {
            let mut st = inner.state();
            if matches!(*st, State::Closed) {
                true
            } else {
                *st = State::Disconnected {
                    outage: unsent,
                    frames: n,
                };
                false
            }
        };
        if closed_by_user {
            let _ = events.send(ClientEvent::Disconnected { reason }).await;
            return;
        }
        inner.bump();
        let _ = events.send(ClientEvent::Disconnected { reason }).await;
        if inner.cfg.reconnect.is_none() {
            if let State::Disconnected { frames, .. } =
                std::mem::replace(&mut *inner.state(), State::Closed)
            {
                inner.discarded.fetch_add(frames, Ordering::Relaxed);
            }
            inner.bump();
            return;
        }
        conn = match redial(&inner, &events, false).await {
            Some(c) => c,
            None => return,
        };
    }
}

/// Dials `inner.addr` with the reconnect backoff until a connection is up (and is the
/// client's state), or `None` once the client is closed or has no backoff. `first`: the
/// first connection, made in the background (not counted as a reconnection).
async fn redial<P>(
    inner: &Arc<Inner<P>>,
    events: &chan::Sender<ClientEvent<P::Item>>,
    first: bool,
) -> Option<Connection<P>>
where
    P: PayloadCodec + Clone + Send + Sync + 'static,
    P::Item: Send + 'static,
{
    let mut backoff = BackoffState::new(inner.cfg.reconnect?);
    loop {
        let delay = backoff.next_delay(rand::random::<f64>());
        let stop = inner.stop.notified();
        tokio::pin!(stop);
        stop.as_mut().enable();
        if matches!(*inner.state(), State::Closed) {
            return None;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut stop => return None,
        }
        match handshake::dial(inner.addr, &inner.cfg.link, inner.cfg.connect_timeout).await {
            Ok(est) => {
                if events
                    .send(ClientEvent::Connected {
                        addr: inner.addr,
                        peer_key: est.peer_key.map(Box::new),
                    })
                    .await
                    .is_err()
                {
                    tracing::debug!("client events dropped; still reconnecting for sends");
                }
                let started = {
                    let mut st = inner.state();
                    match std::mem::replace(&mut *st, State::Closed) {
                        State::Disconnected { outage, frames } => {
                            let c = Connection::start(
                                est,
                                &inner.cfg.link,
                                inner.payload.clone(),
                                Sink::Client(events.clone()),
                                Some((outage, frames)),
                                None,
                            );
                            *st = State::Connected(c.clone());
                            Some(c)
                        }
                        State::Closed | State::Connected(_) => None,
                    }
                };
                let c = started?;
                inner.bump();
                if !first {
                    inner.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                return Some(c);
            }
            Err(e) => {
                inner.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(addr = %inner.addr, error = %e, "reconnect failed");
            }
        }
    }
}
