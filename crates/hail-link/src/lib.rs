//! Framed links for hail, over TCP or in memory: a multi-client [`Server`], a reconnecting
//! [`Client`], and the [`Connection`] handle both are made of.
//!
//! What Python Comms' server and client and CLOVIS' server were meant to be: whole messages
//! (any `hail-wire` payload codec: [`Binary`](hail_wire::Binary), [`Text`](hail_wire::Text),
//! [`Json`](hail_wire::Json), [`Postcard`](hail_wire::Postcard)), senders told apart by
//! [`ClientId`], a real client limit, heartbeats that find dead peers, bounded queues with
//! backpressure, graceful shutdown, and, with a passphrase or an identity, a Noise handshake
//! (`NNpsk0`, `XX` or `XXpsk0`) after which every byte is encrypted and authenticated.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use hail_link::{Client, ClientConfig, ClientEvent, Server, ServerConfig, ServerEvent};
//! use hail_wire::Binary;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hail_link::LinkError> {
//! let (server, mut events) =
//!     Server::bind("127.0.0.1:0".parse().unwrap(), ServerConfig::default(), Binary).await?;
//! let (client, mut client_events) =
//!     Client::connect(server.local_addr(), ClientConfig::default(), Binary).await?;
//!
//! client.send(Bytes::from_static(b"hello")).await?;
//! let id = loop {
//!     match events.recv().await {
//!         Some(ServerEvent::Message { id, msg }) => {
//!             assert_eq!(&msg[..], b"hello");
//!             break id;
//!         }
//!         Some(_) => continue,
//!         None => unreachable!("the server is running"),
//!     }
//! };
//! server.send_to(id, Bytes::from_static(b"hi, client")).await?;
//! loop {
//!     if let Some(ClientEvent::Message(msg)) = client_events.recv().await {
//!         assert_eq!(&msg[..], b"hi, client");
//!         break;
//!     }
//! }
//! client.close().await;
//! server.close(std::time::Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Event streams
//!
//! A server's events ([`ServerEvents`]), a client's ([`ClientEvents`]) and the messages
//! of one connection ([`Incoming`]) are one type, [`Events<T>`]: bounded in events (1024
//! by default), `recv`, `try_recv`, `recv_many`, and a [`Stream`](futures_core::Stream).
//! [`Events::channel`] makes one for your own events.
//!
//! # Transports: TCP, or in memory
//!
//! Links listen and dial over TCP by default. With
//! [`LinkConfigBuilder::transport`]`(`[`Transport::memory`]`(&net))` they run over a
//! [`memory::MemoryNetwork`] instead: listeners and connections inside the process
//! (`tokio::io::duplex` pairs with 64 KiB buffered each way, so backpressure stays),
//! addressed by `SocketAddr` as over IP, with refused dials and unreachable hosts. The
//! handshake, Noise, heartbeats, limits, graceful close and reconnection are the same
//! code over both; in memory, many servers and clients run in one test under
//! `tokio::time::pause()`, in virtual time.
//!
//! ```
//! use hail_link::memory::MemoryNetwork;
//! use hail_link::{Connection, LinkConfig, Server, ServerConfig, Transport};
//! use hail_wire::Binary;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hail_link::LinkError> {
//! tokio::time::pause();
//! let net = MemoryNetwork::new();
//! let link = LinkConfig::builder().transport(Transport::memory(&net)).build()?;
//! let config = ServerConfig::builder().link(link.clone()).build()?;
//! let (server, _events) = Server::bind("10.0.0.1:7000".parse().unwrap(), config, Binary).await?;
//! let (conn, _incoming) = Connection::connect(server.local_addr(), link, Binary).await?;
//! // An hour of virtual time: heartbeats keep the idle link up.
//! tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
//! assert!(conn.close_reason().is_none());
//! # Ok(())
//! # }
//! ```
//!
//! # Security
//!
//! Set the same key on both sides with [`LinkConfigBuilder::group_key`] (from a passphrase with
//! [`hail_crypto::GroupKey`]) or [`LinkConfigBuilder::psk`]. A peer with another passphrase fails
//! with [`LinkError::AuthFailed`] on both sides.
//!
//! With [`LinkConfigBuilder::identity`] on both sides, each end proves its identity key
//! ([`hail_crypto::Identity`]) in the handshake (Noise `XX`, or `XXpsk0` with a key too),
//! and learns the other's: [`Connection::peer_key`], and `peer_key` in
//! [`ServerEvent::Connected`] and [`ClientEvent::Connected`]. A peer without an identity,
//! or whose identity does not verify, fails with [`LinkError::AuthFailed`] on both sides.
//!
//! ```
//! use hail_crypto::Identity;
//! use hail_link::memory::MemoryNetwork;
//! use hail_link::{Connection, LinkConfig, Server, ServerConfig, ServerEvent, Transport};
//! use hail_wire::Binary;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let net = MemoryNetwork::new();
//! let (ours, theirs) = (Identity::generate()?, Identity::generate()?);
//! let link = LinkConfig::builder().transport(Transport::memory(&net));
//! let server_link = link.clone().identity(&theirs).build()?;
//! let (server, mut events) = Server::bind(
//!     "10.0.0.1:7000".parse()?,
//!     ServerConfig::builder().link(server_link).build()?,
//!     Binary,
//! )
//! .await?;
//! let (conn, _incoming) =
//!     Connection::connect(server.local_addr(), link.identity(&ours).build()?, Binary).await?;
//! assert_eq!(conn.peer_key(), Some(theirs.public()));
//! if let Some(ServerEvent::Connected { peer_key, .. }) = events.recv().await {
//!     assert_eq!(peer_key.as_deref(), Some(&ours.public()));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A server admits a client (counts it against the client limit, emits `Connected`) only
//! once the client proved itself, so a replayed handshake message never holds more than a
//! pending handshake slot until the handshake deadline. See `docs/security.md`.
//!
//! # Python Comms
//!
//! [`LinkConfigBuilder::python_comms`] (little-endian u32 header, bare frames, no heartbeats) with
//! [`Json`](hail_wire::Json) payloads talks to a Python Comms (`ReliableCommunication`) peer.
//!
//! # Feature flags
//!
//! * `fuzzing` (off): exposes the `fuzzing` module, entry points for the cargo-fuzz
//!   targets. Not a stable API.
//!
//! The byte layout of everything on the wire is in the [`wire`] module docs and in
//! `docs/wire-format.md`.

mod budget;
mod chan;
mod client;
mod config;
mod conn;
mod error;
mod events;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod handshake;
mod id;
mod identity;
pub mod memory;
mod noise;
mod proto;
mod rx;
mod seal;
mod server;
mod stream;
mod timing;
mod transport;

/// A small deterministic generator for the unit tests' random sequences (xorshift32):
/// the same `seed`, the same numbers.
#[cfg(test)]
pub(crate) fn test_rng(mut seed: u32) -> impl FnMut() -> usize {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as usize
    }
}

pub use budget::{
    Budget, BudgetStats, DEFAULT_BUDGET_BYTES, DEFAULT_PEER_SHARE_DIVISOR, Hold, RESERVE_DIVISOR,
    SMALL_HOLDER,
};
pub use client::{Client, ClientStats};
pub use config::{
    Backoff, ClientConfig, ClientConfigBuilder, DEFAULT_BUDGET_STALL, DEFAULT_CLOSE_LINGER,
    DEFAULT_DEAD_AFTER, DEFAULT_EVENT_CAPACITY, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_PENDING, DEFAULT_OUTAGE_BYTES,
    DEFAULT_QUEUE_BYTES, Framing, Heartbeat, LinkConfig, LinkConfigBuilder, PRE_AUTH_MAX_FRAME_LEN,
    ServerConfig, ServerConfigBuilder, SlowClientPolicy,
};
pub use conn::{ConnStats, Connection, ReadGate, SEND_COPY_BELOW};
pub use error::{CloseReason, LinkConfigError, LinkError, ProtocolError, RefuseReason};
pub use events::{
    ClientEvent, ClientEvents, EventSender, Events, Incoming, ServerEvent, ServerEvents,
};
pub use id::{ClientId, ConnId};
pub use server::{ACCEPT_WARN_EVERY, BroadcastReport, Callbacks, Server, ServerStats};
pub use transport::Transport;

pub mod wire;
