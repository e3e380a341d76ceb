//! Configuration of links, servers and clients. Every default is stated on its setter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hail_crypto::{GroupKey, Identity};
use hail_wire::{ByteOrder, DEFAULT_MAX_FRAME_LEN};

use crate::budget::Budget;
use crate::error::LinkConfigError;
use crate::identity::LocalIdentity;
use crate::seal::Pattern;
use crate::transport::Transport;

/// Default per-connection send queue: 512 KiB of encoded frames.
pub const DEFAULT_QUEUE_BYTES: usize = 512 * 1024;
/// Default heartbeat interval: 1 s of silence on our side sends a heartbeat.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default dead time: 3 s without any byte from the peer closes the link with `Timeout`.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(3);
/// Default handshake deadline: 5 s from TCP connect to an established link.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame accepted before the handshake is done: 4 KiB.
pub const PRE_AUTH_MAX_FRAME_LEN: u32 = 4 * 1024;
/// Default capacity of an incoming-message or event channel: 1024 items.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;
/// Default time a closing connection waits for the peer's end of stream: 2 s.
pub const DEFAULT_CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Default time a connection may stall on the memory budget (a partial frame, or a write
/// to a peer that reads nothing) before it is closed with
/// [`CloseReason::MemoryBudget`](crate::CloseReason::MemoryBudget): 10 s.
pub const DEFAULT_BUDGET_STALL: Duration = Duration::from_secs(10);

/// How frames are laid out on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Framing {
    /// hail's own framing (the default): a one-byte kind in front of each frame body, a
    /// hello/welcome exchange, heartbeats and close frames that carry a reason.
    /// See `docs/wire-format.md`.
    #[default]
    Hail,
    /// Bare frames, the body is the payload: byte-compatible with Python Comms
    /// (`ReliableCommunication`) when combined with a little-endian header and
    /// [`Json`](hail_wire::Json). No hello, no heartbeats, no close reasons, no encryption.
    Raw,
}

/// Heartbeat timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// After this long without sending anything we send a heartbeat. Default 1 s.
    pub interval: Duration,
    /// After this long without receiving any byte the peer is declared dead and the link
    /// closes with [`CloseReason::Timeout`](crate::CloseReason::Timeout). Default 3 s.
    pub dead_after: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval: DEFAULT_HEARTBEAT_INTERVAL,
            dead_after: DEFAULT_DEAD_AFTER,
        }
    }
}

/// A 32-byte pre-shared key for the Noise handshake. Zeroed on drop, never printed.
#[derive(Clone)]
pub(crate) struct Psk(Arc<PskBytes>);

pub(crate) struct PskBytes(pub(crate) [u8; 32]);

impl Drop for PskBytes {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Psk {
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0.0
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk([redacted])")
    }
}

/// Settings shared by every connection: framing, limits, heartbeats and security. Made by
/// [`LinkConfig::builder`], whose [`build`](LinkConfigBuilder::build) checks them, or by
/// [`LinkConfig::default`] (every default, stated on its setter in [`LinkConfigBuilder`]);
/// the getters of the same names read the settings back. A `LinkConfig` is valid by
/// construction: `connect` and `bind` do not check it again.
///
/// ```
/// use std::time::Duration;
/// use hail_link::{Heartbeat, LinkConfig};
///
/// let config = LinkConfig::builder()
///     .max_frame_len(1 << 20)
///     .heartbeat(Some(Heartbeat { interval: Duration::from_millis(500), dead_after: Duration::from_secs(2) }))
///     .psk([7; 32])
///     .build()?;
/// assert!(config.is_secure());
/// assert_eq!(config.max_frame_len(), 1 << 20);
/// # Ok::<(), hail_link::LinkConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LinkConfig {
    pub(crate) framing: Framing,
    pub(crate) byte_order: ByteOrder,
    pub(crate) max_frame_len: u32,
    pub(crate) queue_bytes: usize,
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) close_linger: Duration,
    pub(crate) incoming_capacity: usize,
    pub(crate) psk: Option<Psk>,
    /// The local identity (made by [`LinkConfigBuilder::identity`]).
    pub(crate) identity: Option<Arc<LocalIdentity>>,
    pub(crate) transport: Transport,
    pub(crate) budget: Option<Budget>,
    pub(crate) budget_stall: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            framing: Framing::Hail,
            byte_order: ByteOrder::BigEndian,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            heartbeat: Some(Heartbeat::default()),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            close_linger: DEFAULT_CLOSE_LINGER,
            incoming_capacity: DEFAULT_EVENT_CAPACITY,
            psk: None,
            identity: None,
            transport: Transport::tcp(),
            budget: None,
            budget_stall: DEFAULT_BUDGET_STALL,
        }
    }
}

impl LinkConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> LinkConfigBuilder {
        LinkConfigBuilder {
            config: Self::default(),
            identity: None,
        }
    }

    /// Frame layout (see [`LinkConfigBuilder::framing`]).
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Byte order of the u32 frame header (see [`LinkConfigBuilder::byte_order`]).
    pub fn byte_order(&self) -> ByteOrder {
        self.byte_order
    }

    /// Largest frame body accepted or sent (see [`LinkConfigBuilder::max_frame_len`]).
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Bound of the per-connection send queue in bytes (see
    /// [`LinkConfigBuilder::queue_bytes`]).
    pub fn queue_bytes(&self) -> usize {
        self.queue_bytes
    }

    /// Heartbeat timing, `None` when off (see [`LinkConfigBuilder::heartbeat`]). With
    /// [`Framing::Raw`] the setting is kept but no heartbeats run.
    pub fn heartbeat(&self) -> Option<Heartbeat> {
        self.heartbeat
    }

    /// Deadline from TCP connect to an established link (see
    /// [`LinkConfigBuilder::handshake_timeout`]).
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// How long a closing connection waits for the peer's end of stream (see
    /// [`LinkConfigBuilder::close_linger`]).
    pub fn close_linger(&self) -> Duration {
        self.close_linger
    }

    /// Capacity of a connection's incoming channel in messages (see
    /// [`LinkConfigBuilder::incoming_capacity`]).
    pub fn incoming_capacity(&self) -> usize {
        self.incoming_capacity
    }

    /// Where servers listen and clients dial (see [`LinkConfigBuilder::transport`]).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The budget set with [`LinkConfigBuilder::budget`], if any.
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }

    /// How long a connection may stall on the memory budget before it is closed (see
    /// [`LinkConfigBuilder::budget_stall`]).
    pub fn budget_stall(&self) -> Duration {
        self.budget_stall
    }

    /// The config with a budget: the one set, or a new default one (32 MiB).
    pub(crate) fn with_budget(mut self) -> Self {
        if self.budget.is_none() {
            self.budget = Some(Budget::default());
        }
        self
    }

    /// True when links are encrypted and authenticated: a pre-shared key or an identity
    /// is set.
    pub fn is_secure(&self) -> bool {
        self.psk.is_some() || self.identity.is_some()
    }

    /// True when links prove both ends' identity keys ([`LinkConfigBuilder::identity`] is
    /// set).
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// The handshake pattern, `None` for a plaintext link.
    pub(crate) fn pattern(&self) -> Option<Pattern> {
        Pattern::of(self.psk.is_some(), self.identity.is_some())
    }

    /// The local identity, if one is set.
    pub(crate) fn local_identity(&self) -> Option<&LocalIdentity> {
        self.identity.as_deref()
    }

    pub(crate) fn heartbeat_active(&self) -> Option<Heartbeat> {
        match self.framing {
            Framing::Hail => self.heartbeat,
            Framing::Raw => None,
        }
    }
}

/// Builds a [`LinkConfig`]; every setter states its default, and
/// [`build`](Self::build) checks the settings together.
#[derive(Debug, Clone)]
pub struct LinkConfigBuilder {
    config: LinkConfig,
    /// The local identity made by [`identity`](Self::identity).
    identity: Option<Arc<LocalIdentity>>,
}

impl LinkConfigBuilder {
    /// Python Comms' format (`ReliableCommunication.py`): [`Framing::Raw`], a u32
    /// little-endian length header, no hello, no heartbeats, no encryption (a
    /// [`psk`](Self::psk), [`group_key`](Self::group_key) or [`identity`](Self::identity)
    /// with it fails [`build`](Self::build) with [`LinkConfigError::RawEncrypted`]).
    ///
    /// The payload codec that matches each Python Comms mode: `"json"` (its default)
    /// [`Json`](hail_wire::Json) (for any value, `Json<serde_json::Value>`); `"string"`
    /// [`Text`](hail_wire::Text); `"bytes"` [`Binary`](hail_wire::Binary). A frame the codec
    /// cannot decode (a string-mode peer on a `Json` link) is dropped, counted in
    /// [`ConnStats::undecodable`](crate::ConnStats) and logged.
    ///
    /// What it can promise: without acknowledgements or heartbeats, a sent message is
    /// *written to the socket*, not known to be delivered. A peer that stops reading, or
    /// whose process is gone while its socket lingers, is noticed only when TCP reports
    /// the error; what was written meanwhile is lost without being counted as discarded.
    ///
    /// Python Comms' own limits, with the settings that work: its `recv` is not looped, so
    /// frames much larger than a socket read (1 MiB fails, 16 KiB works) break it in both
    /// directions: keep [`max_frame_len`](Self::max_frame_len) at 16 KiB or so. Its client
    /// retries a reconnect once after 1 s, so a hail server it talks to should shut down
    /// well within that (a `Server::close` deadline of 250 ms).
    pub fn python_comms(self) -> Self {
        self.framing(Framing::Raw)
            .byte_order(ByteOrder::LittleEndian)
            .heartbeat(None)
    }

    /// Frame layout. Default [`Framing::Hail`].
    pub fn framing(mut self, framing: Framing) -> Self {
        self.config.framing = framing;
        self
    }

    /// Byte order of the u32 frame header. Default big-endian.
    pub fn byte_order(mut self, order: ByteOrder) -> Self {
        self.config.byte_order = order;
        self
    }

    /// Largest frame body accepted or sent, in bytes (at least 1). Default 16 MiB
    /// ([`hail_wire::DEFAULT_MAX_FRAME_LEN`]). Memory is only used as bytes arrive.
    pub fn max_frame_len(mut self, max: u32) -> Self {
        self.config.max_frame_len = max;
        self
    }

    /// Bound of the per-connection send queue, in bytes of encoded frames (at least 1).
    /// Default 512 KiB ([`DEFAULT_QUEUE_BYTES`]). `send().await` waits while the queue is
    /// full, `try_send` fails with [`LinkError::Full`](crate::LinkError::Full). One message
    /// larger than the bound is accepted when the queue is empty. Memory: at most twice
    /// this per connection (queue plus the batch being written), allocated only while
    /// traffic flows.
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.config.queue_bytes = bytes;
        self
    }

    /// Heartbeat timing, or `None` for no heartbeats and no dead-peer detection.
    /// Default 1 s interval, 3 s dead time. The interval must be non-zero and `dead_after`
    /// longer than it. Ignored (always off, and not checked) with [`Framing::Raw`].
    pub fn heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.config.heartbeat = heartbeat;
        self
    }

    /// Deadline from TCP connect to an established link (hello or Noise handshake), more
    /// than zero. Default 5 s. Until then frames are limited to [`PRE_AUTH_MAX_FRAME_LEN`]
    /// (4 KiB).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// How long a closing connection waits for the peer to finish (its end of stream)
    /// after our last frame went out. Default 2 s.
    pub fn close_linger(mut self, linger: Duration) -> Self {
        self.config.close_linger = linger;
        self
    }

    /// Capacity of a connection's incoming channel ([`Incoming`](crate::Incoming) or a
    /// client's event stream), in messages (at least 1). Default 1024. When it is full the
    /// connection stops reading, and TCP flow control slows the peer down.
    pub fn incoming_capacity(mut self, capacity: usize) -> Self {
        self.config.incoming_capacity = capacity;
        self
    }

    /// Encrypts and authenticates the link with a Noise handshake keyed by a 32-byte
    /// pre-shared key: `NNpsk0` alone, `XXpsk0` with an [`identity`](Self::identity).
    /// Default: none (plaintext, or `XX` with an identity).
    pub fn psk(mut self, psk: [u8; 32]) -> Self {
        self.config.psk = Some(Psk(Arc::new(PskBytes(psk))));
        self
    }

    /// Secures the link with the group key's link sub-key ([`GroupKey::link_psk`]).
    pub fn group_key(self, key: &GroupKey) -> Self {
        self.psk(*key.link_psk().as_bytes())
    }

    /// Proves this end's identity key on every link made with this config, and learns the
    /// peer's: links run the Noise `XX` handshake (without a key) or `XXpsk0` (with
    /// [`psk`](Self::psk) or [`group_key`](Self::group_key)), in which both ends prove
    /// their static key, which is their identity key as X25519, and send the identity key
    /// for the other to check against it (no signature; see `docs/security.md`). The
    /// peer's proven key is [`Connection::peer_key`](crate::Connection::peer_key) and is
    /// in the `Connected` events. A peer that offers no identity (a config without one)
    /// fails the handshake with [`LinkError::AuthFailed`](crate::LinkError::AuthFailed) on
    /// both sides.
    ///
    /// The Noise static key is the identity itself as X25519
    /// ([`Identity::noise_static_secret`](hail_crypto::Identity::noise_static_secret)),
    /// derived once, here; the built config's clones share it. Default: none. Costs per
    /// link: two more DH than `NNpsk0` on each side (a key check, no signature), and a
    /// third handshake message.
    pub fn identity(mut self, identity: &Identity) -> Self {
        self.identity = Some(Arc::new(LocalIdentity::new(identity)));
        self
    }

    /// Where servers listen and clients dial: TCP (the default, [`Transport::tcp`]) or an
    /// in-memory network ([`Transport::memory`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.config.transport = transport;
        self
    }

    /// The memory budget links made with this config draw on: their partial frames, send
    /// queues and received messages not yet taken (see [`Budget`] for the rules). Give
    /// the same budget to every server, client and connection that should share one (a
    /// device's, say).
    ///
    /// Default: none set, and then a [`Server`](crate::Server) makes one of
    /// [`DEFAULT_BUDGET_BYTES`](crate::DEFAULT_BUDGET_BYTES) (32 MiB, a quarter per peer)
    /// for all its connections, a [`Client`](crate::Client) one for all its successive
    /// connections, and [`Connection::connect`](crate::Connection::connect) one per
    /// connection.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.config.budget = Some(budget);
        self
    }

    /// How long a connection may stall on the memory budget before it is closed with
    /// [`CloseReason::MemoryBudget`](crate::CloseReason::MemoryBudget): holding a partial
    /// frame while the budget keeps it from reading (and none of its messages wait for the
    /// application), or writing to a peer that reads nothing (no batch written) while the
    /// budget is spent. Default 10 s ([`DEFAULT_BUDGET_STALL`]): a peer that announces a
    /// large frame and does not finish it, or does not read, while the budget is held
    /// gives its part back within that time.
    pub fn budget_stall(mut self, stall: Duration) -> Self {
        self.config.budget_stall = stall;
        self
    }

    /// Checks the settings and returns the config: the first wrong setting is the error
    /// ([`LinkConfigError::Zero`] for a zero `max_frame_len`, `queue_bytes`,
    /// `incoming_capacity` or `handshake_timeout`; [`LinkConfigError::Heartbeat`];
    /// [`LinkConfigError::RawEncrypted`]).
    pub fn build(self) -> Result<LinkConfig, LinkConfigError> {
        let mut c = self.config;
        c.identity = self.identity;
        if c.framing == Framing::Raw && c.is_secure() {
            return Err(LinkConfigError::RawEncrypted);
        }
        for (what, zero) in [
            ("max_frame_len", c.max_frame_len == 0),
            ("queue_bytes", c.queue_bytes == 0),
            ("incoming_capacity", c.incoming_capacity == 0),
            ("handshake_timeout", c.handshake_timeout.is_zero()),
        ] {
            if zero {
                return Err(LinkConfigError::Zero { what });
            }
        }
        if let Some(h) = c.heartbeat_active()
            && (h.interval.is_zero() || h.dead_after <= h.interval)
        {
            return Err(LinkConfigError::Heartbeat {
                interval: h.interval,
                dead_after: h.dead_after,
            });
        }
        Ok(c)
    }
}

/// What the server does to a client whose send queue is full during a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowClientPolicy {
    /// Close the slow client with [`CloseReason::SlowConsumer`](crate::CloseReason::SlowConsumer)
    /// and count it (the default): it never silently misses messages in the middle of its
    /// stream, and the others go on at full speed.
    #[default]
    Disconnect,
    /// Skip the message for that client and count it in
    /// [`ServerStats::broadcast_dropped`](crate::ServerStats::broadcast_dropped).
    DropMessage,
}

/// Default maximum number of clients of a server: 1024.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;
/// Default maximum number of connections in their handshake at once: 256.
pub const DEFAULT_MAX_PENDING: usize = 256;

/// Server settings. Made by [`ServerConfig::builder`], whose
/// [`build`](ServerConfigBuilder::build) checks them, or by [`ServerConfig::default`]
/// (every default, stated on its setter in [`ServerConfigBuilder`]); the getters of the
/// same names read them back.
///
/// ```
/// use hail_link::{LinkConfig, ServerConfig};
///
/// let config = ServerConfig::builder()
///     .link(LinkConfig::builder().psk([7; 32]).build()?)
///     .max_clients(64)
///     .build()?;
/// assert_eq!(config.max_clients(), 64);
/// assert!(config.link().is_secure());
/// # Ok::<(), hail_link::LinkConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    pub(crate) link: LinkConfig,
    pub(crate) max_clients: usize,
    pub(crate) max_pending: usize,
    pub(crate) slow_policy: SlowClientPolicy,
    pub(crate) event_capacity: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            link: LinkConfig::default(),
            max_clients: DEFAULT_MAX_CLIENTS,
            max_pending: DEFAULT_MAX_PENDING,
            slow_policy: SlowClientPolicy::Disconnect,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }
}

impl ServerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ServerConfigBuilder {
        ServerConfigBuilder {
            config: Self::default(),
        }
    }

    /// Link settings for every client connection (see [`ServerConfigBuilder::link`]).
    pub fn link(&self) -> &LinkConfig {
        &self.link
    }

    /// Maximum number of connected clients (see [`ServerConfigBuilder::max_clients`]).
    pub fn max_clients(&self) -> usize {
        self.max_clients
    }

    /// Maximum number of connections still in their handshake (see
    /// [`ServerConfigBuilder::max_pending`]).
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Treatment of a slow client during a broadcast (see
    /// [`ServerConfigBuilder::slow_client_policy`]).
    pub fn slow_client_policy(&self) -> SlowClientPolicy {
        self.slow_policy
    }

    /// Capacity of the server's event stream (see [`ServerConfigBuilder::event_capacity`]).
    pub fn event_capacity(&self) -> usize {
        self.event_capacity
    }
}

/// Builds a [`ServerConfig`]; every setter states its default, and
/// [`build`](Self::build) checks the settings.
#[derive(Debug, Clone)]
pub struct ServerConfigBuilder {
    config: ServerConfig,
}

impl ServerConfigBuilder {
    /// Link settings for every client connection (built and checked already). Default
    /// [`LinkConfig::default`].
    pub fn link(mut self, link: LinkConfig) -> Self {
        self.config.link = link;
        self
    }

    /// Maximum number of connected clients, at least 1. Default 1024
    /// ([`DEFAULT_MAX_CLIENTS`]). A client over the limit is refused with
    /// [`RefuseReason::ServerFull`](crate::RefuseReason) (after its handshake, so it can
    /// read the reason) and counted.
    pub fn max_clients(mut self, max: usize) -> Self {
        self.config.max_clients = max;
        self
    }

    /// Maximum number of connections still in their handshake, at least 1. Default 256
    /// ([`DEFAULT_MAX_PENDING`]); a connection over it is closed at once and counted.
    pub fn max_pending(mut self, max: usize) -> Self {
        self.config.max_pending = max;
        self
    }

    /// Treatment of a client whose queue is full during [`broadcast`](crate::Server::broadcast).
    /// Default [`SlowClientPolicy::Disconnect`].
    pub fn slow_client_policy(mut self, policy: SlowClientPolicy) -> Self {
        self.config.slow_policy = policy;
        self
    }

    /// Capacity of the server's event stream, at least 1. Default 1024 events. When it is
    /// full, connections stop reading until the application takes events.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.config.event_capacity = capacity;
        self
    }

    /// Checks the settings and returns the config: [`LinkConfigError::Zero`] for a zero
    /// `max_clients`, `max_pending` or `event_capacity`.
    pub fn build(self) -> Result<ServerConfig, LinkConfigError> {
        let c = self.config;
        for (what, n) in [
            ("max_clients", c.max_clients),
            ("max_pending", c.max_pending),
            ("event_capacity", c.event_capacity),
        ] {
            if n == 0 {
                return Err(LinkConfigError::Zero { what });
            }
        }
        Ok(c)
    }
}

/// Reconnection backoff: exponential with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay after a failed attempt or a lost connection. Default 100 ms.
    pub initial: Duration,
    /// The delay never grows beyond this. Default 5 s.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Default bound of a client's outage buffer: 256 KiB of encoded frames.
pub const DEFAULT_OUTAGE_BYTES: usize = 256 * 1024;

/// Client settings. Made by [`ClientConfig::builder`], whose
/// [`build`](ClientConfigBuilder::build) checks them, or by [`ClientConfig::default`]
/// (every default, stated on its setter in [`ClientConfigBuilder`]); the getters of the
/// same names read them back.
///
/// ```
/// use std::time::Duration;
/// use hail_link::{ClientConfig, LinkConfigError};
///
/// let config = ClientConfig::builder().connect_timeout(Duration::from_secs(1)).build()?;
/// assert_eq!(config.connect_timeout(), Duration::from_secs(1));
/// let err = ClientConfig::builder().reconnect(None).connect_in_background(true).build();
/// assert_eq!(err.unwrap_err(), LinkConfigError::BackgroundNeedsReconnect);
/// # Ok::<(), LinkConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    pub(crate) link: LinkConfig,
    pub(crate) reconnect: Option<Backoff>,
    pub(crate) outage_bytes: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) background_connect: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            link: LinkConfig::default(),
            reconnect: Some(Backoff::default()),
            outage_bytes: DEFAULT_OUTAGE_BYTES,
            connect_timeout: Duration::from_secs(5),
            background_connect: false,
        }
    }
}

impl ClientConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder {
            config: Self::default(),
        }
    }

    /// Link settings (see [`ClientConfigBuilder::link`]).
    pub fn link(&self) -> &LinkConfig {
        &self.link
    }

    /// The reconnection backoff, `None` when off (see [`ClientConfigBuilder::reconnect`]).
    pub fn reconnect(&self) -> Option<Backoff> {
        self.reconnect
    }

    /// Bound of the outage buffer in bytes (see [`ClientConfigBuilder::outage_bytes`]).
    pub fn outage_bytes(&self) -> usize {
        self.outage_bytes
    }

    /// Deadline of one connection attempt (see [`ClientConfigBuilder::connect_timeout`]).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Whether the first connection is made in the background (see
    /// [`ClientConfigBuilder::connect_in_background`]).
    pub fn connect_in_background(&self) -> bool {
        self.background_connect
    }
}

/// Builds a [`ClientConfig`]; every setter states its default, and
/// [`build`](Self::build) checks the settings.
#[derive(Debug, Clone)]
pub struct ClientConfigBuilder {
    config: ClientConfig,
}

impl ClientConfigBuilder {
    /// Link settings (built and checked already). Default [`LinkConfig::default`].
    pub fn link(mut self, link: LinkConfig) -> Self {
        self.config.link = link;
        self
    }

    /// Automatic reconnection with this backoff, or `None` to stay disconnected after the
    /// first loss. Default: on, 100 ms doubling to 5 s, each delay drawn uniformly from
    /// its upper half (jitter), reset after a successful connection. The initial delay
    /// must be non-zero and the maximum at least the initial delay.
    pub fn reconnect(mut self, backoff: Option<Backoff>) -> Self {
        self.config.reconnect = backoff;
        self
    }

    /// Bound of the outage buffer, in bytes of encoded frames. Default 256 KiB
    /// ([`DEFAULT_OUTAGE_BYTES`]). While disconnected (with reconnection on), `send`
    /// appends to this buffer; it is written first after the next connection. When it is
    /// full, `send` fails with [`LinkError::NotConnected`](crate::LinkError::NotConnected).
    /// Set 0 to fail every send while disconnected.
    pub fn outage_bytes(mut self, bytes: usize) -> Self {
        self.config.outage_bytes = bytes;
        self
    }

    /// Deadline of one connection attempt (TCP connect, or an in-memory dial), more than
    /// zero. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Makes the first connection in the background, for a device that may boot before
    /// its server. Default off: [`Client::connect`](crate::Client::connect) returns the
    /// first attempt's error.
    ///
    /// When on, `connect` returns at once, disconnected; the first connection is tried
    /// with the [`reconnect`](Self::reconnect) backoff, like every reconnection, until it
    /// succeeds or the client is closed. Meanwhile `send` fills the outage buffer
    /// ([`outage_bytes`](Self::outage_bytes)), written first once connected;
    /// [`ClientEvent::Connected`](crate::ClientEvent::Connected) tells when that happens,
    /// and failed tries count in [`ClientStats::failed_attempts`](crate::ClientStats).
    /// Needs reconnection on: with `reconnect(None)`, [`build`](Self::build) fails with
    /// [`LinkConfigError::BackgroundNeedsReconnect`].
    pub fn connect_in_background(mut self, on: bool) -> Self {
        self.config.background_connect = on;
        self
    }

    /// Checks the settings and returns the config: [`LinkConfigError::Zero`] for a zero
    /// `connect_timeout` or backoff `initial`, [`LinkConfigError::BackoffRange`],
    /// [`LinkConfigError::BackgroundNeedsReconnect`].
    pub fn build(self) -> Result<ClientConfig, LinkConfigError> {
        let c = self.config;
        if c.connect_timeout.is_zero() {
            return Err(LinkConfigError::Zero {
                what: "connect_timeout",
            });
        }
        if let Some(b) = c.reconnect {
            if b.initial.is_zero() {
                return Err(LinkConfigError::Zero {
                    what: "reconnect initial",
                });
            }
            if b.max < b.initial {
                return Err(LinkConfigError::BackoffRange {
                    initial: b.initial,
                    max: b.max,
                });
            }
        }
        if c.background_connect && c.reconnect.is_none() {
            return Err(LinkConfigError::BackgroundNeedsReconnect);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests;
