//! Opcode and named-command RPC with retcodes for hail: symmetric, pipelined, typed.
//!
//! Once two ends are connected, each holds an [`RpcPeer`]: both can [`bind`](RpcPeer::bind)
//! handlers and make calls, whichever side dialed. A method is a numeric [`Opcode`]
//! (TCPTalks style) or a name (CLOVIS style). Arguments and results are any serde types,
//! postcard on the wire. Calls are pipelined and matched to replies by [`RetCode`], so
//! many can be in flight on one connection and answered in any order.
//!
//! - [`execute`](RpcPeer::execute) waits for the result, up to a timeout; a timed-out or
//!   dropped call sends a cancel and the remote aborts the handler (best effort).
//! - [`send`](RpcPeer::send) returns a [`RetCode`] at once; the reply is kept for
//!   [`poll`](RpcPeer::poll), [`take_ready`](RpcPeer::take_ready) or
//!   [`flush`](RpcPeer::flush), bounded in number and age (see [`RpcConfig`]).
//! - [`notify`](RpcPeer::notify) expects no reply.
//!
//! Every failure is an [`RpcError`] that says what is known: the remote has no such
//! method, could not decode the arguments, returned an error, panicked (the connection
//! lives on), was busy; the call timed out; the connection was lost with the call in flight
//! (every such call ends at once, not at its timeout).
//!
//! # Example
//!
//! Two peers joined in memory ([`memory::pair`]); over a network the same [`RpcPeer`]
//! runs on a `hail-link` connection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use hail_rpc::{Opcode, RpcConfig, RpcError, memory};
//!
//! const ADD: Opcode = Opcode(1);
//! let (alice, bob, _link) = memory::pair(RpcConfig::default(), RpcConfig::default());
//!
//! // TCPTalks style: an opcode, `execute`, or `send` then `poll`.
//! bob.bind(ADD, |(a, b): (i32, i32)| async move { Ok::<_, String>(a + b) })?;
//! let sum: i32 = alice.execute(ADD, (2, 3), Duration::from_secs(1)).await?;
//! assert_eq!(sum, 5);
//! let retcode = alice.send(ADD, (40, 2)).await?;
//! let sum: i32 = alice.poll(retcode, Duration::from_secs(1)).await?;
//! assert_eq!(sum, 42);
//!
//! // CLOVIS style: named commands on both sides.
//! alice.bind("whoami", |(): ()| async { Ok::<_, String>("alice".to_string()) })?;
//! let name: String = bob.execute("whoami", (), Duration::from_secs(1)).await?;
//! assert_eq!(name, "alice");
//!
//! // Errors say what happened.
//! let err = alice.execute::<_, ()>("nope", (), Duration::from_secs(1)).await.unwrap_err();
//! assert_eq!(err, RpcError::UnknownMethod("nope".into()));
//! # Ok(()) }
//! ```
//!
//! # Over the network
//!
//! [`RpcServer`] serves every `hail-link` client as a peer (one shared handler table; the
//! server calls a client through [`RpcServer::peer`] by its `ClientId`), and
//! [`RpcClient`] is a peer over a reconnecting link client. A passphrase set on the link
//! config authenticates and encrypts everything.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use hail_link::{ClientConfig, ServerConfig};
//! use hail_rpc::{RpcClient, RpcConfig, RpcServer, RpcServerEvent};
//!
//! let (server, mut events) =
//!     RpcServer::listen("127.0.0.1:0".parse()?, ServerConfig::default(), RpcConfig::default())
//!         .await?;
//! server.bind("greet", |name: String| async move { Ok::<_, String>(format!("hello {name}")) })?;
//!
//! let client =
//!     RpcClient::connect(server.local_addr(), ClientConfig::default(), RpcConfig::default())
//!         .await?;
//! client.bind("status", |(): ()| async { Ok::<_, String>("idle") })?;
//!
//! let hi: String = client.execute("greet", "lamp", Duration::from_secs(1)).await?;
//! assert_eq!(hi, "hello lamp");
//!
//! // The server calls its client back.
//! let Some(RpcServerEvent::Connected { peer, .. }) = events.recv().await else {
//!     unreachable!("the first event is the connection")
//! };
//! let status: String = peer.execute("status", (), Duration::from_secs(1)).await?;
//! assert_eq!(status, "idle");
//! # Ok(()) }
//! ```
//!
//! # Limits and defaults
//!
//! Per connection ([`RpcConfig`]): 1024 calls in flight (callers wait beyond); 64 handlers
//! running, then 1024 requests or 64 MiB of arguments queued (then `Busy`); 1024 kept
//! replies or 64 MiB of bodies, each kept at most 60 s; 1 MiB of answers waiting for room
//! in the link (one outbox, drained by one task), past which the peer's requests are
//! refused `Busy` ([`RpcConfig::max_outbox_bytes`] says the whole rule). Built-in methods
//! such as PING count against the same limits. Whatever a peer sends, the memory one
//! connection holds stays within these bounds, and no task is spawned per packet.
//!
//! The packet format is in the [`packet`] module docs and in `docs/wire-format.md`; the
//! state machine under [`RpcPeer`] is the sans-IO [`proto`] module.
//!
//! # Feature flags
//!
//! * `fuzzing` (off): exposes the `fuzzing` module, the entry point of the cargo-fuzz
//!   target that drives a [`proto::Session`] with arbitrary bytes. Not a stable API.

mod config;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod link;
pub mod memory;
mod method;
mod outgoing;
pub mod packet;
mod peer;
pub mod proto;

pub use config::{RpcConfig, RpcConfigBuilder};
pub use error::{BindError, RpcError};
pub use link::{RpcClient, RpcServer, RpcServerEvent, RpcServerEvents, SERVER_EVENT_CAPACITY};
pub use method::{MAX_METHOD_NAME_LEN, Method, Opcode, RetCode, Status};
pub use outgoing::{LinkClosed, Outgoing};
pub use packet::{Packet, PacketError};
pub use peer::Handlers;
pub use peer::{PeerDriver, Reply, RpcPeer, WeakRpcPeer};
pub use proto::Disconnect;
