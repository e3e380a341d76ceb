//! hail-multicast: a UDP multicast channel, IPv4 or IPv6, optionally sealed by one passphrase.
//!
//! A [`Channel`] joins a group `(address, port)` on chosen interfaces (by address, name or
//! index; by default every up, multicast-capable interface), sends payloads to it and
//! receives what others send. Several channels, in one process or several, can share a group
//! and port (the sockets set `SO_REUSEADDR` and `SO_REUSEPORT`).
//!
//! - Without a key, a datagram is exactly its payload: `socat`, Python's `socket` module and
//!   multisock in plaintext mode interoperate.
//! - With a [`GroupKey`](hail_crypto::GroupKey), each datagram is sealed with AES-256-GCM
//!   (layout in `hail_crypto::datagram` and `docs/wire-format.md`). Received datagrams that
//!   are malformed, sealed for another group, tampered or replayed are dropped, counted by
//!   reason in [`Channel::stats`] and logged at debug level; they never stop the channel.
//!
//! ```no_run
//! use hail_crypto::GroupKey;
//! use hail_multicast::Channel;
//! use std::net::Ipv4Addr;
//!
//! # async fn demo() -> Result<(), hail_multicast::MulticastError> {
//! let key = GroupKey::derive("correct horse battery staple", "greenhouse"); // once; slow
//! let mut chan = Channel::builder(("239.255.42.99".parse::<Ipv4Addr>().unwrap(), 4299))
//!     .interface(Ipv4Addr::LOCALHOST) // default: every up multicast interface
//!     .key(key)
//!     .build()?;
//! chan.send(b"lamp on").await?;
//! let d = chan.recv().await?;
//! println!("{} bytes from {}", d.payload.len(), d.from);
//! # Ok(()) }
//! ```
//!
//! A runnable round trip on loopback:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hail_multicast::MulticastError> {
//! use hail_multicast::Channel;
//! use std::net::Ipv4Addr;
//!
//! let group = (Ipv4Addr::new(239, 255, 42, 98), 0); // port 0: pick a free one
//! let mut a = Channel::builder(group).interface(Ipv4Addr::LOCALHOST).build()?;
//! let b = Channel::builder(a.group()).interface(Ipv4Addr::LOCALHOST).build()?;
//! b.send_msg(&("temperature", 21.5f32)).await?;
//! let (msg, _from) = a.recv_msg::<(String, f32)>().await?;
//! assert_eq!(msg, ("temperature".to_string(), 21.5));
//! # Ok(()) }
//! ```
//!
//! Builder defaults: TTL (hop limit) 1, loopback on, no key, the system's receive buffer,
//! 256 tracked sender sessions when sealed.
//!
//! # Interfaces
//!
//! An [`Interface`] is named as users name it: `eth0`, `3`, `192.168.1.20`, `::1` (it
//! implements `FromStr`, and `From` an address or an index). [`interfaces`] lists the host's
//! interfaces with their addresses; naming one that does not exist is
//! [`MulticastError::InterfaceNotFound`], whose message lists them.
//!
//! # In memory
//!
//! [`memory::Bus`] is a LAN inside the process: channels built with
//! [`ChannelBuilder::memory`] join a group on it and behave as UDP channels do (same API,
//! sealing, statistics, limits, sender addresses, loopback), without sockets or timers, so
//! whatever runs on top can be tested deterministically under `tokio::time::pause`, with
//! loss on demand ([`memory::Loss`]).

mod builder;
mod channel;
mod error;
mod iface;
pub mod memory;
mod sender;
mod stats;

pub use builder::ChannelBuilder;
pub use channel::{Channel, Datagram, MAX_UDP_PAYLOAD_V4, MAX_UDP_PAYLOAD_V6};
pub use error::MulticastError;
pub use iface::{Interface, InterfaceInfo, JoinedInterface, interfaces};
pub use sender::Sender;
pub use stats::Stats;
