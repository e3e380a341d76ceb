//! The crate's error type.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::InterfaceInfo;

/// What went wrong configuring, binding or using a [`Channel`](crate::Channel).
///
/// Bad datagrams from the network are never errors: they are dropped and counted in
/// [`Stats`](crate::Stats).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MulticastError {
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The group address is not a multicast address.
    #[error("{0} is not a multicast address")]
    NotMulticast(IpAddr),
    /// No interface named, numbered or addressed so exists on this host.
    #[error("interface {wanted} not found; this host has: {}", list(available))]
    InterfaceNotFound {
        /// The interface asked for, as it prints (`eth9`, `#7`, `192.0.2.1`).
        wanted: String,
        /// The host's interfaces with their addresses.
        available: Vec<InterfaceInfo>,
    },
    /// The interface exists but has no address of the group's family.
    #[error("interface {interface} has no {} address", if *ipv6 { "IPv6" } else { "IPv4" })]
    InterfaceLacksFamily {
        /// The interface's name.
        interface: String,
        /// True when the group is IPv6 (and the interface has no IPv6 address).
        ipv6: bool,
    },
    /// Text that names no interface (see [`Interface`](crate::Interface)'s `FromStr`).
    #[error("{text:?} is not an interface name, index or address: {reason}")]
    InvalidInterface {
        /// The text.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No interface was given and none is up and multicast-capable.
    #[error("no up, multicast-capable interface with an address of the group's family")]
    NoInterface,
    /// The channel was bound outside a tokio runtime (its sockets need the runtime's reactor).
    #[error("a Channel must be bound inside a tokio runtime")]
    NoRuntime,
    /// A TTL (hop limit) over 255 was configured: the field is one byte.
    #[error("TTL {0} is out of range (0 to 255)")]
    InvalidTtl(u32),
    /// The channel was closed ([`Channel::close`](crate::Channel::close)): no more sends,
    /// and its receiver has ended.
    #[error("the channel is closed")]
    Closed,
    /// The payload does not fit in one datagram.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes per datagram")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The largest payload this channel can send (65,507 bytes for IPv4 and 65,527 for
        /// IPv6, minus 45 bytes when sealed).
        max: usize,
    },
    /// Sealing failed (the session counter ran out, or the random generator failed).
    #[error("sealing failed: {0}")]
    Crypto(#[from] hail_crypto::CryptoError),
    /// A message could not be encoded with postcard.
    #[error("message encoding failed: {0}")]
    Encode(#[from] postcard::Error),
}

fn list(interfaces: &[InterfaceInfo]) -> String {
    if interfaces.is_empty() {
        return "no interfaces".into();
    }
    let mut out = String::new();
    for (n, i) in interfaces.iter().enumerate() {
        if n > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "{i}");
    }
    out
}
