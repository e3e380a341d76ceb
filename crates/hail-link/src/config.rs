//! Configuration of links, servers and clients. Every default is stated on its setter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hail_crypto::{GroupKey, Identity};
use hail_wire::{ByteOrder, DEFAULT_MAX_FRAME_LEN};

use crate::budget::Budget;
use crate::error::LinkError;
use crate::identity::{KeygenFailed, LocalIdentity};
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

/// Settings shared by every connection: framing, limits, heartbeats and security.
///
/// ```
/// use std::time::Duration;
/// use hail_link::{Heartbeat, LinkConfig};
///
/// let config = LinkConfig::default()
///     .max_frame_len(1 << 20)
///     .heartbeat(Some(Heartbeat { interval: Duration::from_millis(500), dead_after: Duration::from_secs(2) }))
///     .psk([7; 32]);
/// assert!(config.is_secure());
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
    /// The local identity (made by [`LinkConfig::identity`]), or why it could not be made.
    pub(crate) identity: Option<Result<Arc<LocalIdentity>, KeygenFailed>>,
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
    /// Python Comms' format (`ReliableCommunication.py`): [`Framing::Raw`], a u32
    /// little-endian length header, no hello, no heartbeats, no encryption.
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
    pub fn python_comms() -> Self {
        Self::default()
            .framing(Framing::Raw)
            .byte_order(ByteOrder::LittleEndian)
            .heartbeat(None)
    }

    /// Frame layout. Default [`Framing::Hail`].
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Byte order of the u32 frame header. Default big-endian.
    pub fn byte_order(mut self, order: ByteOrder) -> Self {
        self.byte_order = order;
        self
    }

    /// Largest frame body accepted or sent, in bytes. Default 16 MiB
    /// ([`hail_wire::DEFAULT_MAX_FRAME_LEN`]). Memory is only used as bytes arrive.
    pub fn max_frame_len(mut self, max: u32) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Bound of the per-connection send queue, in bytes of encoded frames. Default 512 KiB
    /// ([`DEFAULT_QUEUE_BYTES`]). `send().await` waits while the queue is full, `try_send`
    /// fails with [`LinkError::Full`]. One message larger than the bound is accepted when
    /// the queue is empty. Memory: at most twice this per connection (queue plus the batch
    /// being written), allocated only while traffic flows.
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Heartbeat timing, or `None` for no heartbeats and no dead-peer detection.
    /// Default 1 s interval, 3 s dead time. Ignored (always off) with [`Framing::Raw`].
    pub fn heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Deadline from TCP connect to an established link (hello or Noise handshake).
    /// Default 5 s. Until then frames are limited to [`PRE_AUTH_MAX_FRAME_LEN`] (4 KiB).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a closing connection waits for the peer to finish (its end of stream)
    /// after our last frame went out. Default 2 s.
    pub fn close_linger(mut self, linger: Duration) -> Self {
        self.close_linger = linger;
        self
    }

    /// Capacity of a connection's incoming channel ([`Incoming`](crate::Incoming) or a
    /// client's event stream), in messages. Default 1024. When it is full the connection
    /// stops reading, and TCP flow control slows the peer down.
    pub fn incoming_capacity(mut self, capacity: usize) -> Self {
        self.incoming_capacity = capacity;
        self
    }

    /// Encrypts and authenticates the link with a Noise handshake keyed by a 32-byte
    /// pre-shared key: `NNpsk0` alone, `XXpsk0` with an [`identity`](Self::identity).
    /// Default: none (plaintext, or `XX` with an identity).
    pub fn psk(mut self, psk: [u8; 32]) -> Self {
        self.psk = Some(Psk(Arc::new(PskBytes(psk))));
        self
    }

    /// Secures the link with the group key's link sub-key ([`GroupKey::link_psk`]).
    pub fn group_key(self, key: &GroupKey) -> Self {
        self.psk(*key.link_psk().as_bytes())
    }

    /// Proves this end's identity key on every link made with this config, and learns the
    /// peer's: links run the Noise `XX` handshake (without a key) or `XXpsk0` (with
    /// [`psk`](Self::psk) or [`group_key`](Self::group_key)), in which both ends prove
    /// their static key and sign it with their identity (see `docs/security.md`). The
    /// peer's proven key is [`Connection::peer_key`](crate::Connection::peer_key) and is
    /// in the `Connected` events. A peer that offers no identity (a config without one)
    /// fails the handshake with [`LinkError::AuthFailed`] on both sides.
    ///
    /// Makes the Noise static key pair and its binding signature once, here; the config's
    /// clones share them (one per process and identity, not per link). If the system's
    /// random number generator fails, `connect` and `bind` with this config fail with
    /// [`LinkError::Config`]. Default: none. Costs per link: one signature check (Ed25519)
    /// and one more DH than `NNpsk0` on each side, and a third handshake message.
    pub fn identity(mut self, identity: &Identity) -> Self {
        self.identity = Some(LocalIdentity::new(identity).map(Arc::new));
        self
    }

    /// Where servers listen and clients dial: TCP (the default, [`Transport::tcp`]) or an
    /// in-memory network ([`Transport::memory`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The memory budget links made with this config draw on: their partial frames, send
    /// queues and received messages not yet taken (see [`Budget`] for the rules). Give
    /// the same budget to every server, client and connection that should share one (a
    /// device's, say).
    ///
    /// Default: none set, and then a [`Server`](crate::Server) makes one of
    /// [`DEFAULT_BUDGET_BYTES`](crate::DEFAULT_BUDGET_BYTES) (48 MiB, a quarter per peer)
    /// for all its connections, a [`Client`](crate::Client) one for all its successive
    /// connections, and [`Connection::connect`](crate::Connection::connect) one per
    /// connection.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The budget set with [`budget`](Self::budget), if any.
    pub fn memory_budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }

    /// How long a connection may stall on the memory budget before it is closed with
    /// [`CloseReason::MemoryBudget`](crate::CloseReason::MemoryBudget): holding a partial
    /// frame while the budget keeps it from reading (and none of its messages wait for the
    /// application), or writing to a peer that reads nothing (no batch written) while the
    /// budget is spent. Default 10 s ([`DEFAULT_BUDGET_STALL`]): a peer that announces a
    /// large frame and does not finish it, or does not read, while the budget is held
    /// gives its part back within that time.
    pub fn budget_stall(mut self, stall: Duration) -> Self {
        self.budget_stall = stall;
        self
    }

    /// The config with a budget: the one set, or a new default one (48 MiB).
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

    /// True when links prove both ends' identity keys ([`identity`](Self::identity) is set).
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// The handshake pattern, `None` for a plaintext link.
    pub(crate) fn pattern(&self) -> Option<Pattern> {
        Pattern::of(self.psk.is_some(), self.identity.is_some())
    }

    /// The local identity, once [`validate`](Self::validate) passed.
    pub(crate) fn local_identity(&self) -> Option<&LocalIdentity> {
        match &self.identity {
            Some(Ok(local)) => Some(local),
            _ => None,
        }
    }

    pub(crate) fn heartbeat_active(&self) -> Option<Heartbeat> {
        match self.framing {
            Framing::Hail => self.heartbeat,
            Framing::Raw => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), LinkError> {
        if self.framing == Framing::Raw && self.is_secure() {
            return Err(LinkError::Config(
                "raw framing (Python Comms) cannot be encrypted",
            ));
        }
        if let Some(Err(KeygenFailed)) = &self.identity {
            return Err(LinkError::Config(
                "could not make the Noise static key for the identity (random number generator failed)",
            ));
        }
        if self.queue_bytes == 0 || self.incoming_capacity == 0 {
            return Err(LinkError::Config(
                "queue_bytes and incoming_capacity must be positive",
            ));
        }
        if let Some(h) = self.heartbeat_active()
            && (h.interval.is_zero() || h.dead_after <= h.interval)
        {
            return Err(LinkError::Config(
                "heartbeat dead_after must exceed a non-zero interval",
            ));
        }
        Ok(())
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

/// Server settings.
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
    /// Link settings for every client connection. Default [`LinkConfig::default`].
    pub fn link(mut self, link: LinkConfig) -> Self {
        self.link = link;
        self
    }

    /// Maximum number of connected clients. Default 1024 ([`DEFAULT_MAX_CLIENTS`]).
    /// A client over the limit is refused with [`RefuseReason::ServerFull`](crate::RefuseReason)
    /// (after its handshake, so it can read the reason) and counted.
    pub fn max_clients(mut self, max: usize) -> Self {
        self.max_clients = max;
        self
    }

    /// Maximum number of connections still in their handshake. Default 256
    /// ([`DEFAULT_MAX_PENDING`]); a connection over it is closed at once and counted.
    pub fn max_pending(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// Treatment of a client whose queue is full during [`broadcast`](crate::Server::broadcast).
    /// Default [`SlowClientPolicy::Disconnect`].
    pub fn slow_client_policy(mut self, policy: SlowClientPolicy) -> Self {
        self.slow_policy = policy;
        self
    }

    /// Capacity of the server's event stream. Default 1024 events. When it is full,
    /// connections stop reading until the application takes events.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
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

/// Client settings.
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
    /// Link settings. Default [`LinkConfig::default`].
    pub fn link(mut self, link: LinkConfig) -> Self {
        self.link = link;
        self
    }

    /// Automatic reconnection with this backoff, or `None` to stay disconnected after the
    /// first loss. Default: on, 100 ms doubling to 5 s, each delay drawn uniformly from
    /// its upper half (jitter), reset after a successful connection.
    pub fn reconnect(mut self, backoff: Option<Backoff>) -> Self {
        self.reconnect = backoff;
        self
    }

    /// Bound of the outage buffer, in bytes of encoded frames. Default 256 KiB
    /// ([`DEFAULT_OUTAGE_BYTES`]). While disconnected (with reconnection on), `send`
    /// appends to this buffer; it is written first after the next connection. When it is
    /// full, `send` fails with [`LinkError::NotConnected`]. Set 0 to fail every send while
    /// disconnected.
    pub fn outage_bytes(mut self, bytes: usize) -> Self {
        self.outage_bytes = bytes;
        self
    }

    /// Deadline of one connection attempt (TCP connect, or an in-memory dial). Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
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
    /// Needs reconnection on: with `reconnect(None)`, `connect` fails with
    /// [`LinkError::Config`].
    pub fn connect_in_background(mut self, on: bool) -> Self {
        self.background_connect = on;
        self
    }
}
