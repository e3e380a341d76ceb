//! RPC over `hail-link`: [`RpcClient`] (a reconnecting client, one peer) and
//! [`RpcServer`] (every client is a peer, callable by [`ClientId`]).
//!
//! Every frame on such a link is one RPC packet (the link carries `Binary` payloads).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hail_link::{
    Client, ClientConfig, ClientEvent, ClientId, CloseReason, Events, LinkError, Server,
    ServerConfig, ServerEvent,
};
use hail_wire::Binary;
use tokio::task::JoinHandle;

use crate::config::RpcConfig;
use crate::peer::Handlers;
use crate::peer::{PeerDriver, RpcPeer};
use crate::proto::Disconnect;

/// Events an [`RpcServer`] keeps in its [`RpcServerEvents`]: 1024. Beyond it the
/// oldest are not displaced; new ones are dropped and counted
/// ([`RpcServer::dropped_events`]). Peers work whether or not anyone reads events.
pub const SERVER_EVENT_CAPACITY: usize = 1024;

/// Events a link adapter takes from the link at most at once: its packets are fed to the
/// peer in runs ([`PeerDriver::packets`]). The link delivers what one read decoded as one
/// batch; this only caps the events the adapter holds while it feeds them.
const BATCH: usize = 256;

/// The consecutive packets of one client in a server's batch, fed to its peer as one run.
#[derive(Default)]
struct Run {
    id: Option<ClientId>,
    packets: Vec<Bytes>,
}

impl Run {
    /// Adds a packet from `id`, feeding the run of another client first.
    fn push(&mut self, drivers: &HashMap<ClientId, PeerDriver>, id: ClientId, packet: Bytes) {
        if self.id != Some(id) {
            self.feed(drivers);
            self.id = Some(id);
        }
        self.packets.push(packet);
    }

    /// Feeds the run to its client's peer (dropped if the client is gone) and empties it.
    fn feed(&mut self, drivers: &HashMap<ClientId, PeerDriver>) {
        match self.id.take().and_then(|id| drivers.get(&id)) {
            Some(driver) => driver.packets(self.packets.drain(..)),
            None => self.packets.clear(),
        }
    }
}

fn why(reason: &CloseReason) -> Disconnect {
    match reason {
        CloseReason::AuthFailed => Disconnect::AuthFailed,
        _ => Disconnect::Lost,
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An RPC peer over a reconnecting `hail-link` client. Derefs to its [`RpcPeer`]: bind
/// handlers and make calls on it directly.
///
/// Calls while the link reconnects fail with [`NotConnected`](crate::RpcError::NotConnected);
/// calls in flight when it drops end with [`ConnectionLost`](crate::RpcError::ConnectionLost)
/// at once; calls after the reconnect work. Dropping the client (or [`close`](Self::close))
/// ends the connection and its background task; once the link will not come back (closed,
/// or it gave up reconnecting), calls fail with [`Stale`](crate::RpcError::Stale).
#[derive(Debug)]
pub struct RpcClient {
    peer: RpcPeer,
    link: Arc<Client<Binary>>,
    _router: AbortOnDrop,
}

impl Deref for RpcClient {
    type Target = RpcPeer;

    fn deref(&self) -> &RpcPeer {
        &self.peer
    }
}

impl RpcClient {
    /// Connects to the [`RpcServer`] (or any `hail-link` server speaking RPC) at `addr`.
    /// The first attempt must succeed; later ones follow the link's reconnect policy.
    pub async fn connect(
        addr: SocketAddr,
        link: ClientConfig,
        config: RpcConfig,
    ) -> Result<Self, LinkError> {
        Self::connect_with_handlers(addr, link, config, Handlers::new()).await
    }

    /// Like [`connect`](Self::connect), serving the methods of `handlers`.
    pub async fn connect_with_handlers(
        addr: SocketAddr,
        link: ClientConfig,
        config: RpcConfig,
        handlers: Handlers,
    ) -> Result<Self, LinkError> {
        let (client, mut events) = Client::connect(addr, link, Binary).await?;
        let client = Arc::new(client);
        let (peer, driver) = RpcPeer::with_handlers(config, handlers);
        driver.connected(client.clone());
        let out = Arc::downgrade(&client);
        let router = tokio::spawn(async move {
            let mut up = true;
            let mut batch = Vec::new();
            // The packets of a batch are fed in runs (one lock of the session per run).
            let mut run = Vec::new();
            'events: while events.recv_many(&mut batch, BATCH).await > 0 {
                for event in batch.drain(..) {
                    let event = match event {
                        ClientEvent::Message(packet) => {
                            run.push(packet);
                            continue;
                        }
                        other => other,
                    };
                    driver.packets(run.drain(..));
                    match event {
                        ClientEvent::Connected { .. } if !up => {
                            let Some(client) = out.upgrade() else {
                                break 'events;
                            };
                            driver.connected(client);
                            up = true;
                        }
                        ClientEvent::Disconnected { reason } => {
                            driver.disconnected(why(&reason));
                            up = false;
                        }
                        _ => {}
                    }
                }
                driver.packets(run.drain(..));
            }
        });
        Ok(Self {
            peer,
            link: client,
            _router: AbortOnDrop(router),
        })
    }

    /// The peer (also reachable through `Deref`).
    pub fn peer(&self) -> &RpcPeer {
        &self.peer
    }

    /// The link client under the peer.
    pub fn link(&self) -> &Client<Binary> {
        &self.link
    }

    /// Stops reconnecting and closes the connection gracefully (queued packets go out
    /// first). Calls in flight end with `ConnectionLost`.
    pub async fn close(&self) {
        self.link.close().await;
    }
}

/// What happens on an [`RpcServer`].
#[derive(Debug)]
#[non_exhaustive]
pub enum RpcServerEvent {
    /// A client connected; `peer` calls it and serves it. A reconnecting client comes
    /// back as a new client: once this connection has ended, `peer`'s calls fail with
    /// [`Stale`](crate::RpcError::Stale).
    Connected {
        /// The client's link id.
        id: ClientId,
        /// The client's address.
        addr: SocketAddr,
        /// The client's peer.
        peer: RpcPeer,
    },
    /// A client's connection ended; its calls in flight ended with `ConnectionLost`.
    Disconnected {
        /// The client's link id.
        id: ClientId,
        /// Why it ended.
        reason: CloseReason,
    },
}

/// The connects and disconnects of an [`RpcServer`], from [`RpcServer::listen`]: the same
/// bounded stream type as the link layer's (`recv`, `try_recv`, `recv_many`, a `Stream`),
/// holding at most [`SERVER_EVENT_CAPACITY`]. It ends once the server has stopped.
pub type RpcServerEvents = Events<RpcServerEvent>;

type Peers = Arc<Mutex<HashMap<ClientId, RpcPeer>>>;

/// An RPC server over a `hail-link` server: every client is an [`RpcPeer`], served by one
/// shared handler table ([`bind`](Self::bind) on the server binds for every client), and
/// callable by its [`ClientId`] ([`peer`](Self::peer)).
///
/// Dropping the server stops accepting and drops every client connection.
#[derive(Debug)]
pub struct RpcServer {
    link: Arc<Server<Binary>>,
    handlers: Handlers,
    peers: Peers,
    dropped_events: Arc<AtomicU64>,
    _router: AbortOnDrop,
}

impl RpcServer {
    /// Listens on `addr` (port 0 picks a free port). Returns the server and its events,
    /// the shape of `hail_link::Server::bind` (the name `bind` is taken by the handler
    /// binding, [`bind`](Self::bind)).
    pub async fn listen(
        addr: SocketAddr,
        link: ServerConfig,
        config: RpcConfig,
    ) -> Result<(Self, RpcServerEvents), LinkError> {
        let (server, mut link_events) = Server::bind(addr, link, Binary).await?;
        let server = Arc::new(server);
        let handlers = Handlers::new();
        let peers: Peers = Arc::default();
        let (tx, events) = Events::channel(SERVER_EVENT_CAPACITY);
        let dropped_events = Arc::new(AtomicU64::new(0));
        let router = {
            let weak = Arc::downgrade(&server);
            let handlers = handlers.clone();
            let peers = peers.clone();
            let dropped = dropped_events.clone();
            tokio::spawn(async move {
                let mut drivers: HashMap<ClientId, PeerDriver> = HashMap::new();
                let emit = |e| {
                    if tx.try_send(e).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                };
                let mut batch = Vec::new();
                // Consecutive packets of one client are fed as a run (one lock of its
                // session per run).
                let mut run = Run::default();
                while link_events.recv_many(&mut batch, BATCH).await > 0 {
                    for event in batch.drain(..) {
                        let event = match event {
                            ServerEvent::Message { id, msg } => {
                                run.push(&drivers, id, msg);
                                continue;
                            }
                            other => other,
                        };
                        run.feed(&drivers);
                        match event {
                            ServerEvent::Connected { id, addr, .. } => {
                                let (peer, driver) =
                                    RpcPeer::with_handlers(config.clone(), handlers.clone());
                                // The link registers a client before it announces it, so
                                // its connection is there (unless it closed meanwhile:
                                // then the peer stays disconnected, and `Closed` follows).
                                if let Some(conn) = weak.upgrade().and_then(|s| s.connection(id)) {
                                    driver.connected(Arc::new(conn));
                                }
                                drivers.insert(id, driver);
                                lock(&peers).insert(id, peer.clone());
                                emit(RpcServerEvent::Connected { id, addr, peer });
                            }
                            ServerEvent::Closed { id, reason } => {
                                lock(&peers).remove(&id);
                                if let Some(d) = drivers.remove(&id) {
                                    d.disconnected(why(&reason));
                                }
                                emit(RpcServerEvent::Disconnected { id, reason });
                            }
                            _ => {}
                        }
                    }
                    run.feed(&drivers);
                }
            })
        };
        Ok((
            Self {
                link: server,
                handlers,
                peers,
                dropped_events,
                _router: AbortOnDrop(router),
            },
            events,
        ))
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.link.local_addr()
    }

    /// The link server under the peers.
    pub fn link(&self) -> &Server<Binary> {
        &self.link
    }

    /// The handler table every client is served from.
    pub fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    /// Binds an async handler for every client. See [`RpcPeer::bind`].
    pub fn bind<A, R, E, F, Fut>(
        &self,
        method: impl Into<crate::Method>,
        handler: F,
    ) -> Result<(), crate::BindError>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: serde::de::DeserializeOwned + Send + 'static,
        R: serde::Serialize + 'static,
        E: std::fmt::Display + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.handlers.bind(method, handler)
    }

    /// The peer of a connected client, to call it.
    pub fn peer(&self, id: ClientId) -> Option<RpcPeer> {
        lock(&self.peers).get(&id).cloned()
    }

    /// The connected clients, by id.
    pub fn clients(&self) -> Vec<ClientId> {
        let mut ids: Vec<_> = lock(&self.peers).keys().copied().collect();
        ids.sort();
        ids
    }

    /// Events dropped because nobody took them and [`SERVER_EVENT_CAPACITY`] were waiting.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }

    /// Closes gracefully within `deadline`: first lets the handlers running for clients
    /// finish and their replies reach the link (woken as each peer's last handler ends and
    /// its outbox empties; a client that never reads holds this until the deadline), then closes
    /// the link (stops accepting, writes what is queued, closes every connection; see
    /// `hail_link::Server::close`). What still runs at the deadline is aborted, and
    /// calls in flight on either side end with `ConnectionLost`.
    pub async fn close(self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        let handlers_done = async {
            // Peers may come and go meanwhile: look again after each one is done.
            loop {
                let busy = lock(&self.peers)
                    .values()
                    .find(|p| {
                        p.running_handlers() > 0 || p.queued_requests() > 0 || p.outbox_len() > 0
                    })
                    .cloned();
                match busy {
                    Some(peer) => peer.done_serving().await,
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout_at(until, handlers_done).await;
        let Self { link, _router, .. } = self;
        match Arc::try_unwrap(link) {
            Ok(server) => {
                server
                    .close(until.saturating_duration_since(tokio::time::Instant::now()))
                    .await;
            }
            // Peers hold only weak references, so this does not happen; dropping closes.
            Err(shared) => drop(shared),
        }
    }

    /// Closes one client's connection; its calls in flight end with `ConnectionLost`.
    /// False if no such client.
    pub fn disconnect(&self, id: ClientId) -> bool {
        self.link.disconnect(id)
    }
}

// The table is changed by single inserts and removes: a poisoned lock holds a usable map.
fn lock(peers: &Peers) -> std::sync::MutexGuard<'_, HashMap<ClientId, RpcPeer>> {
    peers.lock().unwrap_or_else(|e| e.into_inner())
}
