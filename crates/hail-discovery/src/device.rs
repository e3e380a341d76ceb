//! The tokio [`Device`]: the [`PeerTable`] driven over `hail-multicast` (adverts),
//! `hail-link` (one connection per peer) and `hail-rpc` (messages, questions, user calls).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{BoxFuture, join_all};
use hail_crypto::{GroupKey, KdfParams};
use hail_link::{
    CloseReason as LinkClose, Connection, Heartbeat, LinkConfig, LinkError, Server, ServerConfig,
    ServerEvent,
};
use hail_multicast::{Channel, MulticastError};
use hail_rpc::{
    Disconnect, Handlers, LinkClosed, Outgoing, PeerDriver, RpcConfig, RpcError, RpcPeer,
};
use hail_wire::Binary;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::advert::{LinkMessage, MAGIC};
use crate::config::{LocalDevice, PeerTableConfig};
use crate::error::{ConfigError, ResolveError};
use crate::format::{FormatError, MessageFormat};
use crate::id::{ConnId, DeviceId};
use crate::peer_table::{
    Action, Event, LeaveReason, LinkCloseReason, LinkOrigin, PeerInfo, PeerTable, Stats,
};

/// The default discovery group: `239.255.72.76:5676` (administratively scoped IPv4).
pub const DEFAULT_GROUP: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 72, 76)), 5676);
/// Default capacity of the event stream ([`DeviceBuilder::event_capacity`]): 1024
/// events. While the stream is full messages wait, at most 1 s at a time, and other
/// events are dropped and counted ([`Device::dropped_events`]); see [`DeviceEvents`].
pub const EVENT_CAPACITY: usize = 1024;
/// Capacity of the queue from link readers and dials to the device's task: 1024 items;
/// a full queue makes the link readers wait (TCP flow control slows the peers).
const INTERNAL_CAPACITY: usize = 1024;
/// The RPC method that carries [`Device::send`] messages.
const MSG_METHOD: &str = "hail/msg";
/// The RPC method that carries [`Device::ask`] questions.
const ASK_METHOD: &str = "hail/ask";

/// Counters of a [`Device`], from [`Device::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceStats {
    /// The peer table's counters: adverts handled and dropped (malformed, foreign
    /// version), peers rejected, protocol errors on links.
    pub discovery: Stats,
    /// The discovery channel's counters: adverts sent, delivered, and dropped as wrongly
    /// keyed (another passphrase), replayed or malformed. As of the device's last timer
    /// tick (at most about a second old); zero without multicast.
    pub multicast: hail_multicast::Stats,
    /// Incoming link handshakes that failed authentication (another passphrase).
    pub auth_failures: u64,
    /// Events dropped because the event stream was full.
    pub dropped_events: u64,
}

/// Something went wrong starting or running a [`Device`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The name or the discovery settings are invalid.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The discovery multicast channel could not be opened.
    #[error("multicast: {0}")]
    Multicast(#[from] MulticastError),
    /// The TCP listener could not be opened.
    #[error("link: {0}")]
    Link(#[from] LinkError),
    /// The group key could not be derived from the passphrase (bad KDF parameters).
    #[error("key derivation: {0}")]
    Key(#[from] hail_crypto::CryptoError),
    /// [`Device::on_question`] was called a second time.
    #[error("the question handler is already set")]
    QuestionHandlerSet,
}

/// Why a message could not be handed to a peer's link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No live device has this name.
    #[error("unknown name")]
    UnknownName,
    /// Two or more live devices have this name.
    #[error("ambiguous name")]
    AmbiguousName,
    /// The device is known but not connected right now.
    #[error("not connected")]
    NotConnected,
}

/// Why a question got no answer from one target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AskError {
    /// No answer within the timeout.
    #[error("no answer in time")]
    NoAnswer,
    /// The target is not connected, or its link was lost while asking.
    #[error("unreachable")]
    Unreachable,
    /// No live device has this name.
    #[error("unknown name")]
    UnknownName,
    /// Two or more live devices have this name.
    #[error("ambiguous name")]
    AmbiguousName,
    /// The target's question handler failed, or it has none.
    #[error("handler: {0}")]
    Handler(String),
    /// The answer arrived but is not a valid value in the device's
    /// [`MessageFormat`] ([`Device::ask_msg`]).
    #[error("undecodable answer: {0}")]
    Undecodable(FormatError),
}

/// Whom to send to or ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// One device by name.
    One(String),
    /// Several devices by name.
    Many(Vec<String>),
    /// Every joined peer.
    All,
}

impl From<&str> for Targets {
    fn from(name: &str) -> Self {
        Self::One(name.to_owned())
    }
}

impl From<Vec<String>> for Targets {
    fn from(names: Vec<String>) -> Self {
        Self::Many(names)
    }
}

impl From<&[&str]> for Targets {
    fn from(names: &[&str]) -> Self {
        Self::Many(names.iter().map(|n| (*n).to_owned()).collect())
    }
}

/// What a [`Device`] reports.
///
/// Order per peer: its `PeerJoined` comes before any `Message` from it (messages on a
/// link whose peer never joined are dropped), and every message it handed to its link
/// before shutting down comes before its `PeerLeft { reason: Goodbye }`: a goodbye heard
/// on the group waits for the peer's links to deliver what they carry, at most
/// [`goodbye_grace`](crate::PeerTableConfigBuilder::goodbye_grace) (500 ms by default).
/// One exception: a message that arrives while all of this device's handlers for that
/// peer are busy ([`RpcConfig::max_concurrent_handlers`], 64 by default, e.g. slow
/// question handlers) waits in the RPC queue; it is still delivered when a handler
/// finishes, within 5 s, but possibly after the `PeerLeft`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// The joined peers, sorted by name then id.
    PeersChanged(Vec<PeerInfo>),
    /// A peer is connected and ready.
    PeerJoined(PeerInfo),
    /// A peer left.
    PeerLeft {
        /// Who.
        peer: PeerInfo,
        /// Why.
        reason: LeaveReason,
    },
    /// Several live devices share a name.
    DuplicateName {
        /// The name.
        name: String,
        /// The ids that hold it.
        ids: Vec<DeviceId>,
    },
    /// A message from a peer ([`Device::send`] on its side).
    Message {
        /// The sender's name.
        from: String,
        /// The message.
        payload: Bytes,
    },
    /// Something went wrong; the device keeps running.
    Error(RunError),
}

/// What went wrong while a [`Device`] runs (in [`DeviceEvent::Error`]); the device keeps
/// running.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunError {
    /// A link failed the handshake's authentication: the other side has another
    /// passphrase, or none. `addr` is the address this device dialed; `None` for
    /// connections it accepted (counted since the last report, checked at each timer
    /// tick of the device, at least once a second).
    AuthFailed {
        /// The address dialed, if this device dialed.
        addr: Option<SocketAddr>,
        /// How many handshakes failed this way.
        count: u64,
    },
    /// Dials to one peer (or one static address) failed this many times in a row.
    /// Reported after 3, 6, 12, 24 ... failures, while redials go on with backoff.
    DialFailed {
        /// The device expected at the other end, if known.
        peer: Option<DeviceId>,
        /// The addresses of the last attempt.
        addrs: Vec<SocketAddr>,
        /// Failures in a row.
        failures: u32,
        /// The last attempt's error.
        error: String,
    },
    /// Events were dropped because the event stream was full (not read fast enough);
    /// reported once there is room again. [`Device::dropped_events`] counts them all.
    EventsDropped {
        /// Events dropped since the last report.
        count: u64,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AuthFailed {
                addr: Some(a),
                count,
            } => write!(
                f,
                "{count} link handshake(s) with {a} failed authentication"
            ),
            Self::AuthFailed { addr: None, count } => write!(
                f,
                "{count} incoming link handshake(s) failed authentication"
            ),
            Self::DialFailed {
                addrs,
                failures,
                error,
                ..
            } => write!(f, "{failures} dials in a row to {addrs:?} failed: {error}"),
            Self::EventsDropped { count } => {
                write!(f, "{count} events dropped: the event stream was full")
            }
        }
    }
}

/// The event stream of a [`Device`]; ends when the device shuts down. A
/// [`Stream`](futures_core::Stream) as well (`StreamExt::next`, combinators).
///
/// Read it continuously: it holds [`DeviceBuilder::event_capacity`] events
/// ([`EVENT_CAPACITY`], 1024, by default). While it is full, messages wait: the device
/// stops reading its links (their readers, then TCP flow control, slow the senders
/// down; order is kept), for at most 1 s at a time. A stream not read for longer no
/// longer holds the device up: further events are then dropped, counted, and reported
/// as [`RunError::EventsDropped`] once there is room. Other events (peers joining and
/// leaving, errors) never wait: they are dropped and counted while the stream is full.
#[derive(Debug)]
pub struct DeviceEvents {
    rx: mpsc::Receiver<DeviceEvent>,
}

impl futures_core::Stream for DeviceEvents {
    type Item = DeviceEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<DeviceEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl DeviceEvents {
    /// The next event, or `None` once the device is shut down.
    pub async fn recv(&mut self) -> Option<DeviceEvent> {
        self.rx.recv().await
    }

    /// An event if one is waiting, without waiting; `None` when none is (or the device
    /// is shut down).
    pub fn try_recv(&mut self) -> Option<DeviceEvent> {
        self.rx.try_recv().ok()
    }

    /// Runs callbacks for every event until the device is gone (pythonConnect style:
    /// message, peers changed, peer joined and left, duplicate name, error).
    pub async fn run_callbacks(mut self, mut callbacks: Callbacks) {
        while let Some(event) = self.rx.recv().await {
            match event {
                DeviceEvent::Message { from, payload } => {
                    if let Some(f) = &mut callbacks.on_message {
                        f(from, payload);
                    }
                }
                DeviceEvent::PeersChanged(peers) => {
                    if let Some(f) = &mut callbacks.on_peers_changed {
                        f(peers);
                    }
                }
                DeviceEvent::PeerJoined(peer) => {
                    if let Some(f) = &mut callbacks.on_joined {
                        f(peer);
                    }
                }
                DeviceEvent::PeerLeft { peer, reason } => {
                    if let Some(f) = &mut callbacks.on_left {
                        f(peer, reason);
                    }
                }
                DeviceEvent::DuplicateName { name, ids } => {
                    if let Some(f) = &mut callbacks.on_duplicate {
                        f(name, ids);
                    }
                }
                DeviceEvent::Error(e) => {
                    if let Some(f) = &mut callbacks.on_error {
                        f(e);
                    }
                }
            }
        }
    }
}

type MessageFn = Box<dyn FnMut(String, Bytes) + Send>;
type PeersFn = Box<dyn FnMut(Vec<PeerInfo>) + Send>;
type JoinedFn = Box<dyn FnMut(PeerInfo) + Send>;
type LeftFn = Box<dyn FnMut(PeerInfo, LeaveReason) + Send>;
type DuplicateFn = Box<dyn FnMut(String, Vec<DeviceId>) + Send>;
type ErrorFn = Box<dyn FnMut(RunError) + Send>;

/// Callbacks for [`DeviceEvents::run_callbacks`]; each is optional.
#[derive(Default)]
pub struct Callbacks {
    on_message: Option<MessageFn>,
    on_peers_changed: Option<PeersFn>,
    on_joined: Option<JoinedFn>,
    on_left: Option<LeftFn>,
    on_duplicate: Option<DuplicateFn>,
    on_error: Option<ErrorFn>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_message", &self.on_message.is_some())
            .field("on_peers_changed", &self.on_peers_changed.is_some())
            .field("on_joined", &self.on_joined.is_some())
            .field("on_left", &self.on_left.is_some())
            .field("on_duplicate", &self.on_duplicate.is_some())
            .field("on_error", &self.on_error.is_some())
            .finish()
    }
}

impl Callbacks {
    /// Called with the sender's name and each message.
    pub fn on_message(mut self, f: impl FnMut(String, Bytes) + Send + 'static) -> Self {
        self.on_message = Some(Box::new(f));
        self
    }

    /// Called with the joined peers whenever they change.
    pub fn on_peers_changed(mut self, f: impl FnMut(Vec<PeerInfo>) + Send + 'static) -> Self {
        self.on_peers_changed = Some(Box::new(f));
        self
    }

    /// Called when a peer joins.
    pub fn on_joined(mut self, f: impl FnMut(PeerInfo) + Send + 'static) -> Self {
        self.on_joined = Some(Box::new(f));
        self
    }

    /// Called when a peer leaves, with the reason.
    pub fn on_left(mut self, f: impl FnMut(PeerInfo, LeaveReason) + Send + 'static) -> Self {
        self.on_left = Some(Box::new(f));
        self
    }

    /// Called when several live devices share a name.
    pub fn on_duplicate(mut self, f: impl FnMut(String, Vec<DeviceId>) + Send + 'static) -> Self {
        self.on_duplicate = Some(Box::new(f));
        self
    }

    /// Called when something goes wrong while the device runs (it keeps running).
    pub fn on_error(mut self, f: impl FnMut(RunError) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }
}

type QuestionFn = dyn Fn(String, Bytes) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync;

/// A passphrase, never printed.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Configures and starts a [`Device`]; from [`Device::builder`].
#[derive(Debug, Clone)]
pub struct DeviceBuilder {
    name: String,
    group: SocketAddr,
    interface: Option<Ipv4Addr>,
    ttl: u32,
    listen: SocketAddr,
    advertise: Vec<IpAddr>,
    passphrase: Option<Secret>,
    kdf: KdfParams,
    key: Option<GroupKey>,
    table: PeerTableConfig,
    rpc: RpcConfig,
    multicast: bool,
    format: MessageFormat,
    event_capacity: usize,
}

impl DeviceBuilder {
    /// The discovery group. Default: [`DEFAULT_GROUP`], `239.255.72.76:5676`. Port 0 picks
    /// a free port (tests; read it back with [`Device::group`]).
    pub fn group(mut self, group: SocketAddr) -> Self {
        self.group = group;
        self
    }

    /// The IPv4 interface (by address) adverts are sent and received on. Default: every
    /// up, multicast-capable interface (`hail-multicast`'s default). Tests set
    /// `127.0.0.1`.
    pub fn interface(mut self, addr: Ipv4Addr) -> Self {
        self.interface = Some(addr);
        self
    }

    /// Multicast TTL. Default: 1 (the local network only).
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// TCP listen address for links. Default: `0.0.0.0:0`, every interface on an
    /// ephemeral port, so many devices share a host.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Addresses to advertise. Default: none beyond what peers see (they dial the source
    /// address of each advert, which is the interface it was sent on).
    pub fn advertise(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.advertise = addrs.into_iter().collect();
        self
    }

    /// Seals adverts and secures links with a group key derived from `passphrase`
    /// (PBKDF2, 600,000 iterations by default, see [`kdf`](Self::kdf): hundreds of
    /// milliseconds, once, in [`start`](Self::start), on a blocking thread). Default:
    /// none (plaintext, anyone on the LAN may join).
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.passphrase = Some(Secret(passphrase.into()));
        self
    }

    /// Key derivation parameters for [`passphrase`](Self::passphrase). Default:
    /// [`KdfParams::default`], PBKDF2 with 600,000 iterations; at least
    /// [`KdfParams::MIN_ITERATIONS`] (10,000) for small devices and tests. Every device of
    /// a group must use the same count (it changes the key).
    pub fn kdf(mut self, params: KdfParams) -> Self {
        self.kdf = params;
        self
    }

    /// Seals adverts and secures links with this group key (derived beforehand, e.g. with
    /// [`GroupKey::derive`] for the group name `"hail-discovery"` to match
    /// [`passphrase`](Self::passphrase)). Takes precedence over a passphrase. Default: none.
    pub fn group_key(mut self, key: GroupKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Discovery timing, limits and static peers. Default: [`PeerTableConfig::default`].
    /// The links' heartbeats follow the lease: a heartbeat every lease / 3 (1 s by
    /// default) and a silent peer declared dead after one lease (3 s by default), so a
    /// crashed peer is noticed within the lease whether connected or not.
    pub fn table(mut self, config: PeerTableConfig) -> Self {
        self.table = config;
        self
    }

    /// RPC settings for every peer link. Default: [`RpcConfig::default`].
    pub fn rpc(mut self, config: RpcConfig) -> Self {
        self.rpc = config;
        self
    }

    /// How typed messages, questions and answers are encoded ([`Device::send_msg`],
    /// [`Device::ask_msg`], [`Device::decode`]). Default: [`MessageFormat::Postcard`].
    /// The bytes API is the same in every format.
    pub fn format(mut self, format: MessageFormat) -> Self {
        self.format = format;
        self
    }

    /// How many events the [`DeviceEvents`] stream holds; while it is full, messages
    /// wait (at most 1 s at a time) and other events are dropped (counted, reported as
    /// [`RunError::EventsDropped`]), see [`DeviceEvents`]. Default: [`EVENT_CAPACITY`],
    /// 1024; at least 1. An application that reads in bursts sets more (each waiting
    /// event holds its payload).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Whether to use multicast at all; off, only static peers and gossip find peers.
    /// Default: on.
    pub fn multicast(mut self, on: bool) -> Self {
        self.multicast = on;
        self
    }

    /// Derives the key (if any), opens the multicast channel and the TCP listener, and
    /// starts discovery. Returns the device and its event stream.
    pub async fn start(self) -> Result<(Device, DeviceEvents), DeviceError> {
        let key = match (&self.key, &self.passphrase) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(p)) => {
                let (p, kdf) = (p.clone(), self.kdf);
                // PBKDF2 takes a while: off the runtime's threads.
                let derived = tokio::task::spawn_blocking(move || {
                    GroupKey::derive_with(&p.0, "hail-discovery", kdf)
                })
                .await
                .expect("key derivation does not panic")?;
                Some(derived)
            }
            (None, None) => None,
        };
        // A connected peer's liveness is its link: make the link notice a silent peer
        // within the lease, as the table's docs ask of its driver.
        let lease = self.table.lease();
        let mut link = LinkConfig::default().heartbeat(Some(Heartbeat {
            interval: lease / 3,
            dead_after: lease,
        }));
        if let Some(k) = &key {
            link = link.group_key(k);
        }
        let channel = if self.multicast {
            let mut b = Channel::builder(self.group).ttl(self.ttl);
            if let Some(i) = self.interface {
                b = b.interface(i);
            }
            if let Some(k) = key.clone() {
                b = b.key(k);
            }
            Some(b.build()?)
        } else {
            None
        };
        let group = channel.as_ref().map_or(self.group, Channel::group);
        let (server, server_events) = Server::bind(
            self.listen,
            ServerConfig::default().link(link.clone()),
            Binary,
        )
        .await?;
        let port = server.local_addr().port();
        let mut advertise = self.advertise.clone();
        if advertise.is_empty() {
            if let Some(i) = self.interface {
                advertise.push(IpAddr::V4(i));
            }
        }
        let local =
            LocalDevice::new(DeviceId::random(), self.name.clone(), port).with_addresses(advertise);
        let mut table = PeerTable::new(self.table.clone(), local, rand::random())?;
        table.start(Instant::now());
        let (events_tx, events_rx) = mpsc::channel(self.event_capacity);
        let shared = Arc::new(Shared {
            table: Mutex::new(table),
            links: Mutex::new(HashMap::new()),
            question: OnceLock::new(),
            handlers: Handlers::new(),
            events: events_tx,
            msg_permit: Mutex::new(None),
            dropped_events: AtomicU64::new(0),
            unreported_drops: AtomicU64::new(0),
            counters: Mutex::new(Default::default()),
            rpc: self.rpc.clone(),
            link,
        });
        bind_builtin(&shared);
        let (internal_tx, internal_rx) = mpsc::channel(INTERNAL_CAPACITY);
        let (stop_tx, stop_rx) = oneshot::channel();
        let server = Arc::new(server);
        let task = tokio::spawn(run(
            shared.clone(),
            channel,
            server.clone(),
            server_events,
            internal_tx,
            internal_rx,
            stop_rx,
        ));
        let id = lock(&shared.table).local().id;
        Ok((
            Device {
                shared,
                id,
                name: self.name,
                local_addr: server.local_addr(),
                group,
                format: self.format,
                stop: Some(stop_tx),
                task: Some(task),
            },
            DeviceEvents { rx: events_rx },
        ))
    }
}

/// A device on the network: advertises itself, discovers and connects to peers, sends to
/// them by name and asks them questions.
///
/// ```no_run
/// # async fn demo() -> Result<(), hail_discovery::DeviceError> {
/// use hail_discovery::{Device, DeviceEvent};
/// let (lamp, mut events) = Device::builder("lamp").start().await?;
/// while let Some(event) = events.recv().await {
///     if let DeviceEvent::PeerJoined(peer) = event {
///         lamp.send(peer.name.as_str(), "hello".into()).await;
///     }
/// }
/// # Ok(()) }
/// ```
///
/// Dropping the device stops it at once (no goodbye); [`shutdown`](Self::shutdown) says
/// goodbye first.
#[derive(Debug)]
pub struct Device {
    shared: Arc<Shared>,
    id: DeviceId,
    name: String,
    local_addr: SocketAddr,
    group: SocketAddr,
    format: MessageFormat,
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Device {
    /// A builder for a device named `name` (1 to 64 bytes of UTF-8, no control characters).
    pub fn builder(name: impl Into<String>) -> DeviceBuilder {
        DeviceBuilder {
            name: name.into(),
            group: DEFAULT_GROUP,
            interface: None,
            ttl: 1,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            advertise: Vec::new(),
            passphrase: None,
            kdf: KdfParams::default(),
            key: None,
            table: PeerTableConfig::default(),
            rpc: RpcConfig::default(),
            multicast: true,
            format: MessageFormat::default(),
            event_capacity: EVENT_CAPACITY,
        }
    }

    /// This run's id.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TCP address links are accepted on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The discovery group (with the port actually bound).
    pub fn group(&self) -> SocketAddr {
        self.group
    }

    /// The device's counters.
    pub fn stats(&self) -> DeviceStats {
        let (multicast, auth_failures) = *lock(&self.shared.counters);
        DeviceStats {
            discovery: lock(&self.shared.table).stats().clone(),
            multicast,
            auth_failures,
            dropped_events: self.dropped_events(),
        }
    }

    /// Events dropped because the event stream was full (or no longer read).
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// Links open to peers right now. A link dropped by the one-link-per-pair rule counts
    /// until it is closed (at least 500 ms after the rule dropped it, longer while calls
    /// on it are still running).
    pub fn links(&self) -> usize {
        lock(&self.shared.links).len()
    }

    /// The joined peers, sorted by name then id.
    pub fn peers(&self) -> Vec<PeerInfo> {
        lock(&self.shared.table).peers()
    }

    /// An RPC handle to the joined peer with this name, to call the methods it bound on
    /// its [`handlers`](Self::handlers). The handle follows the link that is up now; after
    /// a reconnect ask for it again.
    pub fn peer(&self, name: &str) -> Result<RpcPeer, ResolveError> {
        self.shared.resolve_rpc(name)
    }

    /// The methods this device answers on every link: bind the user's own opcodes and
    /// named commands here (names starting with `hail/` are taken by the device).
    pub fn handlers(&self) -> &Handlers {
        &self.shared.handlers
    }

    /// Sets the handler for [`ask`](Self::ask) from peers: it gets the asker's name and the
    /// question. Once per device.
    pub fn on_question<F, Fut>(&self, handler: F) -> Result<(), DeviceError>
    where
        F: Fn(String, Bytes) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Bytes, String>> + Send + 'static,
    {
        let f: Arc<QuestionFn> = Arc::new(move |from, q| Box::pin(handler(from, q)));
        self.shared
            .question
            .set(f)
            .map_err(|_| DeviceError::QuestionHandlerSet)
    }

    /// Hands `msg` to the link of each target; the result says, per target name, whether
    /// it was handed over or why not.
    ///
    /// Order: messages to one peer arrive in the order they were sent while they travel
    /// on one link. Right after two devices dialed each other at the same moment, both
    /// links exist for a short while (until the duplicate is drained and closed); two
    /// messages sent in that window can take different links and arrive swapped. None is
    /// lost either way.
    pub async fn send(
        &self,
        targets: impl Into<Targets>,
        msg: Bytes,
    ) -> Vec<(String, Result<(), SendError>)> {
        let names = self.target_names(targets.into());
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let r = match self.shared.resolve_rpc(&name) {
                Ok(peer) => peer
                    .notify(MSG_METHOD, (&self.name, msg.as_ref()))
                    .await
                    .map_err(|_| SendError::NotConnected),
                Err(e) => Err(send_error(e)),
            };
            out.push((name, r));
        }
        out
    }

    /// Asks each target `question` and waits for all answers, at most `timeout`. Returns
    /// as soon as every target answered or failed; a peer already gone fails at once.
    pub async fn ask(
        &self,
        targets: impl Into<Targets>,
        question: Bytes,
        timeout: Duration,
    ) -> HashMap<String, Result<Bytes, AskError>> {
        let names = self.target_names(targets.into());
        let calls = names.into_iter().map(|name| {
            let q = (self.name.clone(), question.to_vec());
            let peer = self.shared.resolve_rpc(&name);
            async move {
                let r = match peer {
                    Err(e) => Err(match e {
                        ResolveError::UnknownName(_) => AskError::UnknownName,
                        ResolveError::AmbiguousName { .. } => AskError::AmbiguousName,
                        _ => AskError::Unreachable,
                    }),
                    Ok(peer) => match peer.execute::<_, Vec<u8>>(ASK_METHOD, q, timeout).await {
                        Ok(answer) => Ok(Bytes::from(answer)),
                        Err(RpcError::Timeout) => Err(AskError::NoAnswer),
                        Err(RpcError::Handler(m)) => Err(AskError::Handler(m)),
                        Err(RpcError::UnknownMethod(_)) => {
                            Err(AskError::Handler("no question handler".into()))
                        }
                        Err(_) => Err(AskError::Unreachable),
                    },
                };
                (name, r)
            }
        });
        join_all(calls).await.into_iter().collect()
    }

    /// The format of typed messages ([`DeviceBuilder::format`]).
    pub fn format(&self) -> MessageFormat {
        self.format
    }

    /// Encodes `msg` in the device's [`MessageFormat`] and [`send`](Self::send)s it.
    /// Fails, sending nothing, when the value cannot be encoded in the format.
    pub async fn send_msg<T: Serialize + ?Sized>(
        &self,
        targets: impl Into<Targets>,
        msg: &T,
    ) -> Result<Vec<(String, Result<(), SendError>)>, FormatError> {
        let bytes = self.format.encode(msg)?;
        Ok(self.send(targets, bytes).await)
    }

    /// Decodes a payload (a [`DeviceEvent::Message`]'s, a question, an answer) in the
    /// device's [`MessageFormat`].
    pub fn decode<T: DeserializeOwned>(&self, payload: &[u8]) -> Result<T, FormatError> {
        self.format.decode(payload)
    }

    /// [`ask`](Self::ask) with a typed question and typed answers, both in the device's
    /// [`MessageFormat`]; an answer that does not decode is
    /// [`AskError::Undecodable`]. Fails, asking nobody, when the question cannot be
    /// encoded.
    pub async fn ask_msg<Q: Serialize + ?Sized, A: DeserializeOwned>(
        &self,
        targets: impl Into<Targets>,
        question: &Q,
        timeout: Duration,
    ) -> Result<HashMap<String, Result<A, AskError>>, FormatError> {
        let q = self.format.encode(question)?;
        let format = self.format;
        Ok(self
            .ask(targets, q, timeout)
            .await
            .into_iter()
            .map(|(name, r)| {
                let r = r.and_then(|a| format.decode(&a).map_err(AskError::Undecodable));
                (name, r)
            })
            .collect())
    }

    /// Says goodbye to every peer and on the group, closes every link and stops.
    ///
    /// After the goodbyes the device keeps reading its links until every peer has closed
    /// its side, at most 500 ms: a message a peer's [`send`](Self::send) handed to its
    /// link before it heard the goodbye is still delivered (a
    /// [`DeviceEvent::Message`] in the stream before it ends; dropped and counted if the
    /// stream is full then, shutdown waits for no room); once a peer heard the
    /// goodbye, its sends to this device fail ([`SendError::UnknownName`] or
    /// [`SendError::NotConnected`]). Returns when that is done and the links are closed
    /// (queued messages written, at most another 500 ms).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn target_names(&self, targets: Targets) -> Vec<String> {
        match targets {
            Targets::One(n) => vec![n],
            Targets::Many(v) => v,
            Targets::All => {
                let mut names: Vec<String> = self.peers().into_iter().map(|p| p.name).collect();
                names.dedup();
                names
            }
        }
    }
}

/// Binds the methods behind `send` and `ask`. Both carry the sender's name: the group
/// key authenticates the group, not the member, so the name is what the sender says it
/// is (as in its adverts and hello).
fn bind_builtin(shared: &Arc<Shared>) {
    let sink = Arc::downgrade(shared);
    // Emitted before the handler returns: messages from one peer keep their order. With
    // the room the driver reserved for it: a full stream makes the driver wait, not drop.
    let _ = shared
        .handlers
        .bind(MSG_METHOD, move |(from, payload): (String, Vec<u8>)| {
            if let Some(s) = sink.upgrade() {
                let e = DeviceEvent::Message {
                    from,
                    payload: Bytes::from(payload),
                };
                let permit = lock(&s.msg_permit).take();
                match permit {
                    Some(p) => {
                        s.report_drops();
                        p.send(e);
                    }
                    None => s.emit(e),
                }
            }
            async { Ok::<(), String>(()) }
        });
    let weak = Arc::downgrade(shared);
    let _ = shared
        .handlers
        .bind(ASK_METHOD, move |(from, q): (String, Vec<u8>)| {
            let handler = weak.upgrade().and_then(|s| s.question.get().cloned());
            async move {
                let Some(h) = handler else {
                    return Err("no question handler".to_string());
                };
                h(from, Bytes::from(q)).await.map(|b| b.to_vec())
            }
        });
}

fn send_error(e: ResolveError) -> SendError {
    match e {
        ResolveError::UnknownName(_) => SendError::UnknownName,
        ResolveError::AmbiguousName { .. } => SendError::AmbiguousName,
        _ => SendError::NotConnected,
    }
}

/// One link to a peer, as the driver keeps it.
struct LinkEntry {
    conn: Connection<Binary>,
    /// Shared so packets are fed without holding the links lock; the last clone's drop
    /// disconnects the peer.
    driver: Arc<PeerDriver>,
    /// The table asked to close it; it is kept until it is closed.
    closing: bool,
    /// The peer's hello made it a joined peer's link: only then are its RPC packets
    /// served, so a message never comes from a peer that was not reported joined.
    joined: bool,
}

struct Shared {
    table: Mutex<PeerTable>,
    links: Mutex<HashMap<ConnId, LinkEntry>>,
    question: OnceLock<Arc<QuestionFn>>,
    /// What every link answers: messages, questions and the user's own methods.
    handlers: Handlers,
    events: mpsc::Sender<DeviceEvent>,
    /// Room in the event stream the driver reserved before handing a link frame to the
    /// RPC layer: the `hail/msg` handler it runs delivers its message with it.
    msg_permit: Mutex<Option<mpsc::OwnedPermit<DeviceEvent>>>,
    dropped_events: AtomicU64,
    /// Drops not yet reported as [`RunError::EventsDropped`].
    unreported_drops: AtomicU64,
    /// The multicast channel's counters and the listener's authentication failures, as of
    /// the last timer tick.
    counters: Mutex<(hail_multicast::Stats, u64)>,
    rpc: RpcConfig,
    link: LinkConfig,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    fn resolve_rpc(&self, name: &str) -> Result<RpcPeer, ResolveError> {
        let (_, conn) = lock(&self.table).resolve(name)?;
        lock(&self.links)
            .get(&conn)
            .map(|l| l.driver.peer())
            .ok_or_else(|| ResolveError::NotConnected(name.to_owned()))
    }

    fn emit(&self, e: DeviceEvent) {
        self.report_drops();
        if self.events.try_send(e).is_err() {
            self.dropped_events.fetch_add(1, Ordering::Relaxed);
            self.unreported_drops.fetch_add(1, Ordering::Relaxed);
            debug!("device event dropped: the stream is full or closed");
        }
    }

    /// Reports drops not yet reported, if there is room: they go first, as soon as
    /// there is.
    fn report_drops(&self) {
        let unreported = self.unreported_drops.swap(0, Ordering::Relaxed);
        if unreported > 0 {
            let report = DeviceEvent::Error(RunError::EventsDropped { count: unreported });
            if self.events.try_send(report).is_err() {
                self.unreported_drops
                    .fetch_add(unreported, Ordering::Relaxed);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Packets of a peer's RPC go out on its link.
struct LinkOut(Connection<Binary>);

impl Outgoing for LinkOut {
    fn send(
        &self,
        packet: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), LinkClosed>> + Send + '_>>
    {
        Box::pin(async move { self.0.send(packet).await.map_err(|_| LinkClosed) })
    }

    fn try_send(&self, packet: Bytes) -> bool {
        self.0.try_send(packet).is_ok()
    }
}

enum Internal {
    Dialed {
        dial: crate::id::DialId,
        target: DialKey,
        addrs: Vec<SocketAddr>,
        result: Result<(Connection<Binary>, hail_link::Incoming<Bytes>), (SocketAddr, LinkError)>,
    },
    Frame {
        conn: ConnId,
        frame: Bytes,
    },
    Ended {
        conn: ConnId,
    },
}

fn close_reason(r: &LinkClose) -> LinkCloseReason {
    match r {
        LinkClose::Timeout => LinkCloseReason::Timeout,
        _ => LinkCloseReason::Lost,
    }
}

#[allow(clippy::too_many_arguments)] // the driver's resources, moved in once
async fn run(
    shared: Arc<Shared>,
    mut channel: Option<Channel>,
    server: Arc<Server<Binary>>,
    mut server_events: hail_link::ServerEvents<Bytes>,
    internal_tx: mpsc::Sender<Internal>,
    mut internal: mpsc::Receiver<Internal>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let sender = channel.as_ref().map(Channel::sender);
    let mut ctx = Ctx {
        shared: shared.clone(),
        internal_tx,
        sender,
        dial_failures: HashMap::new(),
        auth_failures_seen: 0,
    };
    ctx.pump().await;
    // Set by a graceful stop: who to tell once the links are drained.
    let mut stopping: Option<Option<oneshot::Sender<()>>> = None;
    // Room for one message event, reserved before a link frame is read: while the
    // stream is full, link frames wait (their readers, then TCP, slow the peers down).
    let mut permit: Option<mpsc::OwnedPermit<DeviceEvent>> = None;
    // The application dropped its stream: frames go on (their events are dropped).
    let mut events_gone = false;
    // Since when link frames wait for room, and whether they waited EVENT_STALL_LIMIT
    // and go on without it (their messages dropped and counted) until there is room.
    let mut stalled_until: Option<tokio::time::Instant> = None;
    let mut overflow = false;
    loop {
        if permit.is_none() && !events_gone && stalled_until.is_none() {
            stalled_until = Some(tokio::time::Instant::now() + EVENT_STALL_LIMIT);
        }
        let frames_go = permit.is_some() || events_gone || overflow;
        let deadline = lock(&shared.table).poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = &mut stop => {
                lock(&shared.table).shutdown(Instant::now());
                ctx.pump().await;
                stopping = Some(done.ok());
                break;
            }
            d = async { match channel.as_mut() { Some(c) => c.recv().await, None => std::future::pending().await } } => {
                match d {
                    Ok(d) => {
                        let from = d.from;
                        let r = lock(&shared.table).handle_datagram(&d.payload, from, Instant::now());
                        if let Err(e) = r {
                            debug!(%from, error = %e, "dropped an advert");
                        }
                    }
                    Err(e) => warn!(error = %e, "multicast receive failed"),
                }
            }
            p = shared.events.clone().reserve_owned(), if permit.is_none() && !events_gone => {
                match p {
                    Ok(p) => permit = Some(p),
                    Err(_) => events_gone = true,
                }
                stalled_until = None;
                overflow = false;
            }
            () = sleep_until_opt(stalled_until), if !frames_go => {
                debug!("event stream full for {EVENT_STALL_LIMIT:?}: messages are dropped until there is room");
                overflow = true;
            }
            e = server_events.recv(), if frames_go => {
                *lock(&shared.msg_permit) = permit.take();
                match e {
                    Some(ServerEvent::Connected { id, addr }) => {
                        if let Some(conn) = server.connection(id) {
                            ctx.link_up(conn, LinkOrigin::Accepted, addr);
                        }
                    }
                    Some(ServerEvent::Message { id, msg }) => ctx.frame(ConnId(id.get()), &msg),
                    Some(ServerEvent::Closed { id, reason }) => ctx.closed(ConnId(id.get()), &reason),
                    Some(_) => {}
                    None => break,
                }
                permit = lock(&shared.msg_permit).take();
            }
            Some(m) = internal.recv(), if frames_go => {
                *lock(&shared.msg_permit) = permit.take();
                match m {
                    Internal::Dialed { dial, target, result: Ok((conn, mut incoming)), .. } => {
                        ctx.dial_failures.remove(&target);
                        let id = ConnId(conn.id().get());
                        let tx = ctx.internal_tx.clone();
                        // Holds no handle: the link lives as long as the driver keeps it.
                        tokio::spawn(async move {
                            while let Some(frame) = incoming.recv().await {
                                // Waits when the driver is behind: TCP flow control then
                                // slows the peer down, memory stays bounded.
                                if tx.send(Internal::Frame { conn: id, frame }).await.is_err() {
                                    return;
                                }
                            }
                            let _ = tx.send(Internal::Ended { conn: id }).await;
                        });
                        let remote = conn.peer_addr();
                        ctx.link_up(conn, LinkOrigin::Dialed(dial), remote);
                    }
                    Internal::Dialed { dial, target, addrs, result: Err((addr, error)) } => {
                        ctx.dial_failed(target, addrs, addr, &error);
                        lock(&shared.table).dial_failed(dial, Instant::now());
                    }
                    Internal::Frame { conn, frame } => ctx.frame(conn, &frame),
                    Internal::Ended { conn } => {
                        let reason = lock(&shared.links).get(&conn).and_then(|l| l.conn.close_reason());
                        ctx.closed(conn, &reason.unwrap_or(LinkClose::PeerClosed));
                    }
                }
                permit = lock(&shared.msg_permit).take();
            }
            () = sleep => {
                lock(&shared.table).handle_timeout(Instant::now());
                // Handshakes of accepted links that failed authentication.
                let failed = server.stats().auth_failures;
                *lock(&shared.counters) = (
                    channel.as_ref().map(Channel::stats).unwrap_or_default(),
                    failed,
                );
                if failed > ctx.auth_failures_seen {
                    let count = failed - ctx.auth_failures_seen;
                    ctx.auth_failures_seen = failed;
                    shared.emit(DeviceEvent::Error(RunError::AuthFailed { addr: None, count }));
                }
            }
        }
        ctx.pump().await;
    }
    // While draining, messages wait for no room: shutdown stays bounded.
    drop(permit);
    if let Some(done) = stopping {
        drain_links(&mut ctx, &server, &mut server_events, &mut internal).await;
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
    let links: Vec<LinkEntry> = lock(&shared.links).drain().map(|(_, l)| l).collect();
    for l in &links {
        l.conn.close();
        l.driver.disconnected(Disconnect::Lost);
    }
    // Let goodbyes and queued messages go out before the handles drop.
    let flushed = join_all(links.iter().map(|l| l.conn.closed()));
    let _ = tokio::time::timeout(SHUTDOWN_LINGER, flushed).await;
    if let Ok(server) = Arc::try_unwrap(server) {
        server.shutdown(SHUTDOWN_LINGER).await;
    }
}

/// After a graceful stop sent its goodbyes and closed its side of every link: keeps
/// reading the links and delivering what they carry (messages become events, handlers
/// run) until every peer has closed its side too, at most [`SHUTDOWN_LINGER`] (500 ms).
/// A peer's `send` that returned `Ok` handed its message to the link before the peer saw
/// the goodbye, and the peer's link writes it before its close: so it is delivered. New
/// links are closed at once.
async fn drain_links(
    ctx: &mut Ctx,
    server: &Server<Binary>,
    server_events: &mut hail_link::ServerEvents<Bytes>,
    internal: &mut mpsc::Receiver<Internal>,
) {
    let until = tokio::time::Instant::now() + SHUTDOWN_LINGER;
    while !lock(&ctx.shared.links).is_empty() {
        tokio::select! {
            () = tokio::time::sleep_until(until) => {
                debug!(links = lock(&ctx.shared.links).len(), "links still open after the shutdown linger");
                break;
            }
            e = server_events.recv() => {
                match e {
                    Some(ServerEvent::Connected { id, .. }) => {
                        if let Some(conn) = server.connection(id) {
                            conn.close();
                        }
                    }
                    Some(ServerEvent::Message { id, msg }) => ctx.frame(ConnId(id.get()), &msg),
                    Some(ServerEvent::Closed { id, reason }) => ctx.closed(ConnId(id.get()), &reason),
                    Some(_) => {}
                    None => break,
                }
            }
            Some(m) = internal.recv() => {
                match m {
                    Internal::Dialed { result: Ok((conn, _incoming)), .. } => conn.close(),
                    Internal::Dialed { result: Err(_), .. } => {}
                    Internal::Frame { conn, frame } => ctx.frame(conn, &frame),
                    Internal::Ended { conn } => {
                        let reason = lock(&ctx.shared.links).get(&conn).and_then(|l| l.conn.close_reason());
                        ctx.closed(conn, &reason.unwrap_or(LinkClose::PeerClosed));
                    }
                }
            }
        }
        ctx.pump().await;
    }
}

/// Sleeps until `at`, forever without one.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Longest link frames wait for room in a full event stream before they go on without
/// it (their messages dropped and counted, until there is room again): 1 s. A stream
/// read slowly slows the senders down; one not read at all does not stop the device.
const EVENT_STALL_LIMIT: Duration = Duration::from_secs(1);

/// How long a duplicate link stays open after the one-link rule dropped it: 500 ms.
const DUPLICATE_LINGER: Duration = Duration::from_millis(500);
/// Longest a duplicate link is kept open for the calls and handlers still running on it:
/// 5 s.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// How long shutdown keeps reading links after its goodbyes (until the peers close
/// their side), and then waits for queued messages to go out: 500 ms each.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(500);

/// Whom a dial was for, to count its failures in a row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum DialKey {
    Peer(DeviceId),
    Addrs(Vec<SocketAddr>),
}

/// Most dial targets whose failures are counted; past it the counts start over: 1024.
const MAX_DIAL_COUNTS: usize = 1024;

struct Ctx {
    shared: Arc<Shared>,
    internal_tx: mpsc::Sender<Internal>,
    sender: Option<hail_multicast::Sender>,
    /// Failed dials in a row per target (reset by a link that comes up).
    dial_failures: HashMap<DialKey, u32>,
    /// The listener's authentication failures already reported.
    auth_failures_seen: u64,
}

impl Ctx {
    /// Counts a failed dial; reports an authentication failure at once (the first in a
    /// row) and the run of failures after 3, 6, 12 ... of them.
    fn dial_failed(
        &mut self,
        target: DialKey,
        addrs: Vec<SocketAddr>,
        addr: SocketAddr,
        error: &LinkError,
    ) {
        if self.dial_failures.len() >= MAX_DIAL_COUNTS && !self.dial_failures.contains_key(&target)
        {
            self.dial_failures.clear();
        }
        let peer = match &target {
            DialKey::Peer(id) => Some(*id),
            DialKey::Addrs(_) => None,
        };
        let n = self.dial_failures.entry(target).or_insert(0);
        *n = n.saturating_add(1);
        let n = *n;
        debug!(%addr, error = %error, failures = n, "dial failed");
        if n == 1 && matches!(error, LinkError::AuthFailed) {
            self.shared.emit(DeviceEvent::Error(RunError::AuthFailed {
                addr: Some(addr),
                count: 1,
            }));
        }
        if n >= 3 && n % 3 == 0 && (n / 3).is_power_of_two() {
            self.shared.emit(DeviceEvent::Error(RunError::DialFailed {
                peer,
                addrs,
                failures: n,
                error: error.to_string(),
            }));
        }
    }

    fn link_up(&mut self, conn: Connection<Binary>, origin: LinkOrigin, remote: SocketAddr) {
        let id = ConnId(conn.id().get());
        let (_peer, driver) =
            RpcPeer::with_handlers(self.shared.rpc.clone(), self.shared.handlers.clone());
        driver.connected(Arc::new(LinkOut(conn.clone())));
        lock(&self.shared.links).insert(
            id,
            LinkEntry {
                conn,
                driver: Arc::new(driver),
                closing: false,
                joined: false,
            },
        );
        lock(&self.shared.table).link_up(id, origin, remote, Instant::now());
    }

    fn frame(&mut self, conn: ConnId, frame: &[u8]) {
        if frame.starts_with(&MAGIC) {
            let Some(closing) = lock(&self.shared.links).get(&conn).map(|l| l.closing) else {
                return;
            };
            match LinkMessage::decode(frame) {
                // On a link being closed only a goodbye still counts: the peer may have
                // taken this duplicate for the link to keep.
                Ok(m) if closing && !matches!(m, LinkMessage::Goodbye { .. }) => {}
                Ok(m) => {
                    let joined = {
                        let mut table = lock(&self.shared.table);
                        table.link_message(conn, m, Instant::now());
                        table.peer_of(conn).is_some()
                    };
                    if joined {
                        if let Some(l) = lock(&self.shared.links).get_mut(&conn) {
                            l.joined = true;
                        }
                    }
                }
                Err(e) => debug!(%conn, error = %e, "dropped a discovery message"),
            }
        } else {
            // The join (and anything else the table has to say) is reported before
            // what the peer sent after its hello.
            self.forward_events();
            // Also on a link being closed: what the peer sent before it closed is served.
            // Handlers run inline here and may use the device: no lock is held.
            let driver = match lock(&self.shared.links).get(&conn) {
                Some(l) if l.joined => Some(l.driver.clone()),
                Some(_) => {
                    debug!(%conn, "dropped an RPC packet from a link without a joined peer");
                    None
                }
                None => None,
            };
            if let Some(d) = driver {
                d.packet(frame);
            }
        }
    }

    fn closed(&mut self, conn: ConnId, reason: &LinkClose) {
        let entry = lock(&self.shared.links).remove(&conn);
        if let Some(l) = entry {
            let peer = l.driver.peer();
            if peer.queued_requests() == 0 {
                l.driver.disconnected(Disconnect::Lost);
            } else {
                // What the peer sent before it closed waits behind busy handlers (all of
                // RpcConfig::max_concurrent_handlers running): let the queue run (its
                // messages are delivered, late), at most DRAIN_LIMIT, then disconnect.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(DRAIN_LIMIT, async {
                        while peer.queued_requests() > 0 {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    })
                    .await;
                    l.driver.disconnected(Disconnect::Lost);
                });
            }
        }
        lock(&self.shared.table).link_closed(conn, close_reason(reason), Instant::now());
    }

    /// Carries out the table's actions and forwards its events.
    async fn pump(&mut self) {
        loop {
            let action = lock(&self.shared.table).poll_action();
            let Some(action) = action else { break };
            match action {
                Action::Multicast(advert) => {
                    if let (Some(s), Ok(bytes)) = (&self.sender, advert.to_bytes()) {
                        if let Err(e) = s.send(&bytes).await {
                            debug!(error = %e, "advert not sent");
                        }
                    }
                }
                Action::Send { conn, message } => {
                    let c = lock(&self.shared.links).get(&conn).map(|l| l.conn.clone());
                    if let (Some(c), Ok(bytes)) = (c, message.to_bytes()) {
                        if c.try_send(Bytes::from(bytes)).is_err() {
                            debug!(%conn, "discovery message not queued");
                        }
                    }
                }
                Action::Dial { dial, addrs, peer } => {
                    let tx = self.internal_tx.clone();
                    let config = self.shared.link.clone();
                    let target = match peer {
                        Some(id) => DialKey::Peer(id),
                        None => DialKey::Addrs(addrs.clone()),
                    };
                    tokio::spawn(async move {
                        let result = dial_any(addrs.clone(), config).await;
                        let _ = tx
                            .send(Internal::Dialed {
                                dial,
                                target,
                                addrs,
                                result,
                            })
                            .await;
                    });
                }
                Action::Close { conn, reason } => {
                    // The entry stays until the link is closed, so RPC packets already on
                    // their way are still served. A duplicate carries no new calls from
                    // this side (names resolve to the kept link); it stays open for
                    // DUPLICATE_LINGER, so the peer, which may not have the kept link's
                    // hello yet, is not cut off meanwhile, then closes once its calls and
                    // handlers are done: nothing in flight is lost to the one-link rule.
                    if let Some(l) = lock(&self.shared.links).get_mut(&conn) {
                        l.closing = true;
                        // A duplicate is a joined peer's link too (both hellos arrived).
                        l.joined |= reason == crate::peer_table::CloseReason::Duplicate;
                        let c = l.conn.clone();
                        if reason == crate::peer_table::CloseReason::Duplicate {
                            let peer = l.driver.peer().downgrade();
                            tokio::spawn(async move {
                                tokio::time::sleep(DUPLICATE_LINGER).await;
                                let _ = tokio::time::timeout(DRAIN_LIMIT, async {
                                    while peer
                                        .upgrade()
                                        .is_some_and(|p| p.in_flight() + p.running_handlers() > 0)
                                    {
                                        tokio::time::sleep(Duration::from_millis(10)).await;
                                    }
                                })
                                .await;
                                c.close();
                            });
                        } else {
                            c.close();
                        }
                    }
                }
            }
        }
        self.forward_events();
    }

    /// Forwards the table's events to the event stream.
    fn forward_events(&self) {
        loop {
            let event = lock(&self.shared.table).poll_event();
            let Some(event) = event else { break };
            let e = match event {
                Event::PeerJoined(p) => DeviceEvent::PeerJoined(p),
                Event::PeerLeft { peer, reason } => DeviceEvent::PeerLeft { peer, reason },
                Event::PeersChanged(s) => DeviceEvent::PeersChanged(s),
                Event::DuplicateName { name, ids } => DeviceEvent::DuplicateName { name, ids },
            };
            self.shared.emit(e);
        }
    }
}

/// How long each of a dial's first attempts (per address) may take before it is
/// abandoned and tried again: 300 ms, well under TCP's 1 s initial SYN retransmission, so
/// a lost SYN or SYN-ACK (a lossy LAN, a partition just healed) costs about 0.3 s instead
/// of 1 s. A LAN handshake takes milliseconds.
const DIAL_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
/// How many attempts of a dial get [`DIAL_ATTEMPT_TIMEOUT`]: 2. The attempt after them
/// has only the link's own timeouts, so a slow path still connects (0.6 s late).
const DIAL_QUICK_ATTEMPTS: u32 = 2;

/// Runs `attempt` up to `quick` times with `timeout` each, then once without a timeout.
/// An attempt that finishes (even with an error, e.g. refused) ends it at once.
async fn with_quick_retries<T, F, Fut>(quick: u32, timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..quick {
        if let Ok(r) = tokio::time::timeout(timeout, attempt()).await {
            return r;
        }
    }
    attempt().await
}

/// Dials every address at once; the first link that comes up wins. On failure, the
/// last attempt's address and error.
async fn dial_any(
    addrs: Vec<SocketAddr>,
    config: LinkConfig,
) -> Result<(Connection<Binary>, hail_link::Incoming<Bytes>), (SocketAddr, LinkError)> {
    let attempts = addrs.into_iter().map(|a| {
        let config = config.clone();
        Box::pin(async move {
            with_quick_retries(DIAL_QUICK_ATTEMPTS, DIAL_ATTEMPT_TIMEOUT, || {
                Connection::connect(a, &config, Binary)
            })
            .await
            .map_err(|e| (a, e))
        })
    });
    if attempts.len() == 0 {
        let none = std::io::Error::other("no address to dial");
        return Err((SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), none.into()));
    }
    futures_util::future::select_ok(attempts)
        .await
        .map(|(pair, _rest)| pair)
}

#[cfg(test)]
mod dial_tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::with_quick_retries;

    #[tokio::test]
    async fn quick_attempts_are_abandoned_then_the_last_has_no_timeout() {
        let n = AtomicU32::new(0);
        // The first two attempts hang (a lost SYN), the third finishes.
        let r = with_quick_retries(2, Duration::from_millis(10), || {
            let i = n.fetch_add(1, Ordering::Relaxed);
            async move {
                if i < 2 {
                    std::future::pending::<()>().await;
                }
                i
            }
        })
        .await;
        assert_eq!((r, n.load(Ordering::Relaxed)), (2, 3));
        // A finished attempt (an error such as refused) is not retried.
        let n = AtomicU32::new(0);
        let r: Result<(), &str> = with_quick_retries(2, Duration::from_millis(10), || {
            n.fetch_add(1, Ordering::Relaxed);
            async { Err("refused") }
        })
        .await;
        assert_eq!((r, n.load(Ordering::Relaxed)), (Err("refused"), 1));
    }
}
