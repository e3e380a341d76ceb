//! hail: devices on a local network find each other and talk.
//!
//! Devices advertise themselves on a multicast group, connect to each other over framed,
//! Noise-secured TCP links, and send messages, ask questions and call methods by name; one
//! passphrase seals the adverts and secures the links. This crate is the one dependency
//! that brings every layer; each layer is also its own crate, for those who need only one.
//!
//! | module | crate | what it does |
//! |---|---|---|
//! | [`wire`] | `hail-wire` | length-prefixed framing and payload codecs (binary, text, JSON, postcard) |
//! | [`crypto`] | `hail-crypto` | a group key from a passphrase, sealed and replay-checked datagrams |
//! | [`multicast`] | `hail-multicast` | a UDP multicast channel, optionally sealed |
//! | [`link`] | `hail-link` | framed TCP links: server, reconnecting client, heartbeats, Noise |
//! | [`rpc`] | `hail-rpc` | opcode or named RPC with retcodes, `execute`, `send` + `poll`, `notify` |
//! | [`discovery`] | `hail-discovery` | devices that discover each other, send and ask by name |
//!
//! The [`prelude`] has the everyday types.
//!
//! # Quick start
//!
//! Two devices on the loopback interface discover each other; one answers questions, the
//! other sends it a message and asks it something:
//!
//! ```
//! # #[cfg(feature = "discovery")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::{Ipv4Addr, SocketAddr};
//! use std::time::Duration;
//! use hail::prelude::*;
//!
//! // Port 0 picks a free port for this run; real use keeps the default group.
//! let group = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 90), 0));
//! let start = |name: &str, group| {
//!     Device::builder(name)
//!         .group(group)
//!         .interface(Ipv4Addr::LOCALHOST) // default: every multicast interface
//!         .listen("127.0.0.1:0".parse().unwrap())
//!         .start()
//! };
//! let (lamp, mut lamp_events) = start("lamp", group).await?;
//! let (switch, mut events) = start("switch", lamp.group()).await?;
//! lamp.on_question(|_from, _question| async { Ok(bytes::Bytes::from_static(b"on")) })?;
//!
//! // Wait until the switch has discovered and connected to the lamp.
//! while switch.peers().is_empty() {
//!     events.recv().await;
//! }
//! switch.send("lamp", "hello".into()).await;
//! loop {
//!     if let Some(DeviceEvent::Message { from, payload, .. }) = lamp_events.recv().await {
//!         assert_eq!((&*from, &payload[..]), ("switch", &b"hello"[..]));
//!         break;
//!     }
//! }
//! let answers = switch.ask(Targets::All, "state?".into(), Duration::from_secs(1)).await;
//! assert_eq!(answers["lamp"].as_deref(), Ok(&b"on"[..]));
//! switch.close().await;
//! lamp.close().await;
//! # Ok(()) }
//! # #[cfg(not(feature = "discovery"))]
//! # fn main() {}
//! ```
//!
//! With a passphrase (`Device::builder(name).passphrase("...")`) adverts are sealed and
//! links secured; devices with another passphrase neither see nor reach each other.
//!
//! # Feature flags
//!
//! Every layer is behind a feature of its module's name; all are on by default. Turn them
//! off with `default-features = false` and pick the ones you need:
//!
//! - `wire`: the [`wire`] module (`hail-wire`).
//! - `crypto`: the [`crypto`] module (`hail-crypto`).
//! - `multicast`: the [`multicast`] module (`hail-multicast`; brings `hail-crypto` along).
//! - `link`: the [`link`] module (`hail-link`).
//! - `rpc`: the [`rpc`] module (`hail-rpc`; brings `hail-link` along).
//! - `discovery`: the [`discovery`] module (`hail-discovery`; brings every other layer
//!   along, though only the enabled features appear as modules here).
//!
//! The [`prelude`] holds the types of the enabled features only.

#[cfg(feature = "crypto")]
pub use hail_crypto as crypto;
#[cfg(feature = "discovery")]
pub use hail_discovery as discovery;
#[cfg(feature = "link")]
pub use hail_link as link;
#[cfg(feature = "multicast")]
pub use hail_multicast as multicast;
#[cfg(feature = "rpc")]
pub use hail_rpc as rpc;
#[cfg(feature = "wire")]
pub use hail_wire as wire;

/// The everyday types of the enabled layers: `use hail::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "crypto")]
    pub use hail_crypto::{CryptoError, GroupKey, KdfParams};
    #[cfg(feature = "discovery")]
    pub use hail_discovery::{
        AskError, Device, DeviceBuilder, DeviceCallbacks, DeviceError, DeviceEvent, DeviceEvents,
        DeviceId, DeviceStats, DialError, LeaveReason, MessageFormat, PeerInfo, PeerSender,
        RunError, SendError, Targets,
    };
    #[cfg(feature = "link")]
    pub use hail_link::{
        Client, ClientConfig, ClientEvent, Connection, LinkConfig, LinkError, Server, ServerConfig,
        ServerEvent,
    };
    #[cfg(feature = "multicast")]
    pub use hail_multicast::{Channel, ChannelConfig, Datagram, Interface, MulticastError};
    #[cfg(feature = "rpc")]
    pub use hail_rpc::{
        Handlers, Method, Opcode, RetCode, RpcClient, RpcConfig, RpcError, RpcPeer, RpcServer,
    };
    #[cfg(feature = "wire")]
    pub use hail_wire::{Binary, FrameCodec, Json, MessageCodec, Postcard, Text, WireError};
}
