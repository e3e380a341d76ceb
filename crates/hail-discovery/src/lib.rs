//! Discovery for hail: devices advertise themselves on a multicast group, find each other,
//! keep exactly one link per pair, send to each other by name and ask each other questions.
//!
//! - [`Device`]: the tokio device. It advertises on a `hail-multicast` channel (sealed
//!   when a passphrase is set), connects over `hail-link` (Noise-secured with the same
//!   passphrase), carries messages and questions over `hail-rpc`, and reports peers
//!   joining and leaving as [`DeviceEvent`]s. Its [`DeviceEvents`] are a `Stream`
//!   (peers changed, joined, left and why, messages, duplicate names, errors as
//!   [`RunError`]), with pythonConnect-style [`DeviceCallbacks`] over them. Messages,
//!   questions and answers are bytes; [`Device::send_msg`], [`Device::ask_msg`] and
//!   [`Device::decode`] type them in the device's [`MessageFormat`] (postcard by
//!   default; JSON, text, bytes).
//! - [`advert`]: the versioned discovery protocol. Adverts on the multicast group
//!   (announce, probe, goodbye) and messages on links (hello, peers gossip, goodbye), with
//!   their byte layout, limits and strict decoders that return typed [`AdvertError`]s.
//! - [`PeerTable`]: the sans-IO state machine under the device. It takes adverts, link
//!   events and the current [`Instant`](std::time::Instant), and says who joined, who left
//!   and why, whom to dial, which link to close, what to send, and when to wake it next.
//!
//! # A device
//!
//! Two devices on the loopback interface find each other and talk:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::{Ipv4Addr, SocketAddr};
//! use std::time::Duration;
//! use bytes::Bytes;
//! use hail_discovery::{Device, DeviceEvent};
//!
//! let group = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 78), 0)); // 0: a free port
//! let start = |name: &str, group| {
//!     Device::builder(name)
//!         .group(group)
//!         .interface(Ipv4Addr::LOCALHOST) // default: every multicast interface
//!         .listen("127.0.0.1:0".parse().unwrap())
//!         .start()
//! };
//! let (lamp, _lamp_events) = start("lamp", group).await?;
//! let (switch, mut events) = start("switch", lamp.group()).await?;
//! lamp.on_question(|_from, _question| async { Ok(Bytes::from_static(b"on")) })?;
//!
//! while switch.peers().is_empty() {
//!     events.recv().await; // PeersChanged, PeerJoined ...
//! }
//! let answers = switch.ask("lamp", Bytes::from_static(b"state?"), Duration::from_secs(1)).await;
//! assert_eq!(answers["lamp"], Ok(Bytes::from_static(b"on")));
//! lamp.close().await;
//! loop {
//!     if let Some(DeviceEvent::PeerLeft { reason, .. }) = events.recv().await {
//!         assert_eq!(reason, hail_discovery::LeaveReason::Goodbye);
//!         break;
//!     }
//! }
//! # switch.close().await;
//! # Ok(()) }
//! ```
//!
//! # The peer table alone
//!
//! Two tables, wired by hand: `b` hears `a`'s signed announcement, dials (at once: the
//! example turns off `dial_yield`, with which one of the two, chosen by their ids, would
//! first wait for the other's dial), the driver connects and tells each side which key
//! the link's handshake proved, and both exchange hellos over the link.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use hail_crypto::Identity;
//! use hail_discovery::{
//!     Action, LinkId, Event, LinkOrigin, LocalDevice, PeerTable, PeerTableConfig,
//! };
//!
//! let now = Instant::now();
//! let ip = "127.0.0.1".parse()?;
//! let config = PeerTableConfig::builder().dial_yield(Duration::ZERO).build()?;
//! let new_table = |name: &str, port| {
//!     let identity = Arc::new(Identity::generate().expect("a key"));
//!     let local = LocalDevice::new(identity, name, port).with_addresses([ip]);
//!     PeerTable::new(config.clone(), local, rand::random())
//! };
//! let mut a = new_table("lamp", 40001)?;
//! let mut b = new_table("switch", 40002)?;
//! let (a_id, b_id) = (a.local().id(), b.local().id());
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
//! b.link_up(LinkId(1), LinkOrigin::Dialed(dial), a_listen, a_id, now);
//! a.link_up(LinkId(7), LinkOrigin::Accepted, "127.0.0.1:50123".parse()?, b_id, now);
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
//! a.link_message(LinkId(7), from_b, now);
//! b.link_message(LinkId(1), from_a, now);
//!
//! assert!(matches!(b.poll_event(), Some(Event::PeerJoined(p)) if p.name == "lamp"));
//! assert_eq!(b.resolve("lamp")?.1, LinkId(1));
//! assert_eq!(a.resolve("switch")?.1, LinkId(7));
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
mod device;
mod error;
mod format;
mod id;
mod listen;
mod peer_table;

pub use advert::{
    Advert, AdvertError, Announce, AnnounceBody, Goodbye, Hello, Kind, LinkMessage, MAX_ADDRESSES,
    MAX_ADVERT_LEN, MAX_LINK_MESSAGE_LEN, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_LEN,
    MAX_METADATA_LEN, MAX_NAME_LEN, MAX_PEER_RECORDS, Metadata, MetadataError, NameError,
    PeerRecord, normalize_name, validate_metadata, validate_name,
};
pub use config::{
    DEFAULT_PEERS_PER_HOST, DIAL_BURST, LocalDevice, MAX_BURST, MAX_DIAL_ADDRESSES,
    MAX_DIALS_IN_FLIGHT, MAX_DIALS_PER_SECOND, MAX_LEASE, MAX_PEER_LEASE, MIN_PEER_LEASE,
    PeerTableConfig, PeerTableConfigBuilder, Trust,
};
pub use device::{
    AskError, Caller, DEFAULT_GROUP, DEFAULT_GROUP_V6, Device, DeviceBuilder, DeviceCallbacks,
    DeviceError, DeviceEvent, DeviceEvents, DeviceStats, DialError, EVENT_CAPACITY, FD_HEADROOM,
    INTERFACE_CHECK, KnownDevicesError, MESSAGE_COST, PeerSender, RunError, SendError, Targets,
    caller,
};
pub use error::{ConfigError, ResolveError};
pub use format::{FormatError, MessageFormat};
/// How [`DeviceBuilder::interface`] names an interface (from hail-multicast).
pub use hail_multicast::Interface;
pub use id::{DeviceId, DialId, LinkId};
pub use listen::listen_ip;
pub use peer_table::{
    Action, Event, LeaveReason, LinkCloseReason, LinkOrigin, PeerInfo, PeerTable, PeerTableStats,
    TableCloseReason,
};
pub use peer_table::{
    DIAL_RESERVE, VERIFY_PER_SECOND, VERIFY_PER_SOURCE, VERIFY_REPEATS_PER_SECOND,
};
