//! Discovery for hail: devices advertise themselves on a multicast group, find each other,
//! and keep exactly one link per pair.
//!
//! This crate holds the protocol logic, written sans-IO so it is tested without sockets
//! and without sleeping:
//!
//! - [`advert`]: the versioned discovery protocol. Adverts on the multicast group
//!   (announce, probe, goodbye) and messages on links (hello, peers gossip, goodbye), with
//!   their byte layout, limits and strict decoders that return typed [`AdvertError`]s.
//! - [`PeerTable`]: the state machine. It takes adverts, link events and the current
//!   [`Instant`](std::time::Instant), and says who joined, who left and why, whom to dial,
//!   which link to close, what to send, and when to wake it next.
//!
//! The tokio `Device` that drives the table over `hail-multicast`, `hail-link` and
//! `hail-rpc` is not part of this crate yet.
//!
//! # Example
//!
//! Two tables, wired by hand: `b` hears `a`'s announcement, dials, and both exchange
//! hellos over the link the driver made.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use hail_discovery::{
//!     Action, ConnId, DeviceId, Event, LinkOrigin, LocalDevice, PeerTable, PeerTableConfig,
//! };
//!
//! let now = Instant::now();
//! let ip = "127.0.0.1".parse()?;
//! let new_table = |name: &str, port| {
//!     let local = LocalDevice::new(DeviceId::random(), name, port).with_addresses([ip]);
//!     PeerTable::new(PeerTableConfig::default(), local, rand::random())
//! };
//! let mut a = new_table("lamp", 40001)?;
//! let mut b = new_table("switch", 40002)?;
//! a.start(now);
//! b.start(now);
//!
//! // The driver sends a's first action (its announcement) to the group; b receives it.
//! let Some(Action::Multicast(advert)) = a.poll_action() else { unreachable!() };
//! let a_src: SocketAddr = "127.0.0.1:5670".parse()?;
//! b.handle_datagram(&advert.to_bytes()?, a_src, now)?;
//!
//! // b wants to dial a; the driver connects and reports both ends of the link.
//! let a_listen: SocketAddr = "127.0.0.1:40001".parse()?;
//! let dial = std::iter::from_fn(|| b.poll_action())
//!     .find_map(|action| match action {
//!         Action::Dial { dial, addrs, .. } => Some((dial, addrs)),
//!         _ => None,
//!     });
//! let Some((dial, addrs)) = dial else { unreachable!("b dials a") };
//! assert_eq!(addrs, [a_listen]);
//! b.link_up(ConnId(1), LinkOrigin::Dialed(dial), a_listen, now);
//! a.link_up(ConnId(7), LinkOrigin::Accepted, "127.0.0.1:50123".parse()?, now);
//!
//! // Each side's hello goes over the link to the other.
//! let hello_of = |t: &mut PeerTable| {
//!     std::iter::from_fn(|| t.poll_action())
//!         .find_map(|action| match action {
//!             Action::Send { message, .. } => Some(message),
//!             _ => None,
//!         })
//!         .expect("a hello")
//! };
//! let (from_a, from_b) = (hello_of(&mut a), hello_of(&mut b));
//! a.link_message(ConnId(7), from_b, now);
//! b.link_message(ConnId(1), from_a, now);
//!
//! assert!(matches!(b.poll_event(), Some(Event::PeerJoined(p)) if p.name == "lamp"));
//! assert_eq!(b.resolve("lamp")?.1, ConnId(1));
//! assert_eq!(a.resolve("switch")?.1, ConnId(7));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Defaults
//!
//! Announcements at 0, ~100 and ~300 ms after start with a probe at 0, then every 1 s
//! (± 100 ms); a 3 s lease for unconnected peers; redial backoff from 100 ms to 5 s; a
//! 500 ms reconnect grace. Every default is on its [`PeerTableConfigBuilder`] setter.

pub mod advert;
mod config;
mod error;
mod id;
mod peer_table;

pub use advert::{
    Advert, Announce, Hello, Kind, LinkMessage, MAX_ADDRESSES, MAX_ADVERT_LEN,
    MAX_LINK_MESSAGE_LEN, MAX_NAME_LEN, MAX_PEER_RECORDS, PeerRecord, validate_name,
};
pub use config::{
    LocalDevice, MAX_BURST, MAX_LEASE, MAX_PEER_LEASE, MIN_PEER_LEASE, PeerTableConfig,
    PeerTableConfigBuilder,
};
pub use error::{AdvertError, ConfigError, NameError, ResolveError};
pub use id::{ConnId, DeviceId, DialId};
pub use peer_table::{
    Action, CloseReason, Event, LeaveReason, LinkCloseReason, LinkOrigin, PeerInfo, PeerTable,
    Stats,
};
