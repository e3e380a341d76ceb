//! hail-multicast: a UDP multicast channel, IPv4 or IPv6, optionally sealed by one passphrase.
//!
//! A [`ChannelConfig`] says how to join (interfaces by address, name or index, by default
//! every up, multicast-capable one; TTL; loopback; a key); its builder's `build()` checks it
//! and opens nothing. [`Channel::bind`] joins a group `(address, port)` with it and returns
//! the [`Channel`] handle, which sends, reports [`Stats`] and closes (cheap to clone, usable
//! from any task), and the [`Receiver`], which receives what others send (`recv`,
//! `recv_msg`, a `Stream`) straight from its socket. [`Channel::close`] ends the receiver:
//! its `recv` returns [`MulticastError::Closed`], its stream ends. Several channels, in one
//! process or several, can share a group and port (the sockets set `SO_REUSEADDR` and
//! `SO_REUSEPORT`).
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
//! use hail_multicast::{Channel, ChannelConfig};
//! use std::net::Ipv4Addr;
//!
//! # async fn demo() -> Result<(), hail_multicast::MulticastError> {
//! let key = GroupKey::derive("correct horse battery staple", "greenhouse"); // once; slow
//! let config = ChannelConfig::builder()
//!     .interface(Ipv4Addr::LOCALHOST) // default: every up multicast interface
//!     .key(key)
//!     .build()?;
//! let (chan, mut rx) = Channel::bind(("239.255.42.99".parse::<Ipv4Addr>().unwrap(), 4299), config)?;
//! chan.send(b"lamp on").await?;
//! let d = rx.recv().await?;
//! println!("{} bytes from {}", d.payload.len(), d.from);
//! chan.close(); // `rx` ends
//! # Ok(()) }
//! ```
//!
//! A runnable round trip on loopback:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hail_multicast::MulticastError> {
//! use hail_multicast::{Channel, ChannelConfig, MulticastError};
//! use std::net::Ipv4Addr;
//!
//! let config = ChannelConfig::builder().interface(Ipv4Addr::LOCALHOST).build()?;
//! let group = (Ipv4Addr::new(239, 255, 42, 98), 0); // port 0: pick a free one
//! let (a, mut a_rx) = Channel::bind(group, config.clone())?;
//! let (b, _b_rx) = Channel::bind(a.group(), config)?;
//! b.send_msg(&("temperature", 21.5f32)).await?;
//! let (msg, _from) = a_rx.recv_msg::<(String, f32)>().await?;
//! assert_eq!(msg, ("temperature".to_string(), 21.5));
//! a.close();
//! assert!(matches!(a_rx.recv().await, Err(MulticastError::Closed)));
//! # Ok(()) }
//! ```
//!
//! Configuration defaults: TTL (hop limit) 1, loopback on, no key, the system's receive
//! buffer, 256 tracked sender sessions when sealed.
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
//! [`memory::Bus`] is a LAN inside the process: channels configured with
//! [`ChannelConfigBuilder::memory`] join a group on it and behave as UDP channels do (same API,
//! sealing, statistics, limits, sender addresses, loopback), without sockets or timers, so
//! whatever runs on top can be tested deterministically under `tokio::time::pause`, with
//! loss on demand ([`memory::Loss`]).

mod channel;
mod config;
mod error;
mod iface;
pub mod memory;
mod open;
mod receiver;
mod stats;

pub use channel::{Channel, MAX_UDP_PAYLOAD_V4, MAX_UDP_PAYLOAD_V6};
pub use config::{ChannelConfig, ChannelConfigBuilder};
pub use error::MulticastError;
pub use iface::{Interface, InterfaceInfo, JoinedInterface, interfaces};
pub use receiver::{Datagram, Receiver};
pub use stats::Stats;
