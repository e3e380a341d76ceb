//! The error types of `hail-discovery`, one per concern.

use std::time::Duration;

use hail_wire::WireError;

use crate::advert::Kind;

/// Why a device name is not acceptable.
///
/// A name is 1 to [`MAX_NAME_LEN`](crate::advert::MAX_NAME_LEN) bytes of UTF-8 without
/// control characters. The same rule holds for the local name and for names on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is the empty string.
    #[error("device name is empty")]
    Empty,
    /// The name is longer than the limit, in bytes of UTF-8.
    #[error("device name is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Length of the name in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The name contains a control character (newline, escape, NUL ...).
    #[error("device name contains a control character")]
    ControlCharacter,
}

/// A discovery message could not be encoded or decoded.
///
/// Every decode error concerns one datagram or one link message only: the peer table drops
/// the message, counts it in its [`Stats`](crate::Stats) and carries on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertError {
    /// The input is shorter than the 6-byte header.
    #[error("discovery message of {len} bytes is shorter than its 6-byte header")]
    TooShort {
        /// Length of the input in bytes.
        len: usize,
    },
    /// The input (decode) or the encoded message (encode) is longer than allowed.
    #[error("discovery message of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// Length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The input does not start with the magic bytes `HAIL`: not a hail discovery message.
    #[error("not a hail discovery message (bad magic)")]
    BadMagic,
    /// The message is of a protocol version this implementation does not speak.
    #[error("discovery protocol version {version} is not supported (this side speaks 1)")]
    UnsupportedVersion {
        /// The version byte that arrived.
        version: u8,
    },
    /// The kind byte names no message this transport carries (unknown, or link-only on
    /// multicast, or multicast-only on a link).
    #[error("unexpected discovery message kind {kind}")]
    UnknownKind {
        /// The kind byte that arrived.
        kind: Kind,
    },
    /// The body of a known kind could not be decoded (truncated, trailing bytes, bad varint,
    /// invalid UTF-8, nesting too deep ...).
    #[error("malformed {kind} body: {source}")]
    Malformed {
        /// The kind whose body failed.
        kind: Kind,
        /// What the strict postcard decoder reported.
        source: WireError,
    },
    /// A device name in the message is invalid.
    #[error("invalid device name: {0}")]
    InvalidName(#[from] NameError),
    /// A message lists more addresses than one advert may carry.
    #[error("{count} addresses listed, the limit is {max}")]
    TooManyAddresses {
        /// How many addresses were listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A gossip message lists more peers than one message may carry.
    #[error("{count} peer records listed, the limit is {max}")]
    TooManyPeers {
        /// How many records were listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// postcard failed to encode a body (out of memory in practice).
    #[error("encoding a {kind} body: {source}")]
    Encode {
        /// The kind being encoded.
        kind: Kind,
        /// The postcard error.
        source: WireError,
    },
}

/// A [`PeerTableConfig`](crate::PeerTableConfig) or [`LocalDevice`](crate::LocalDevice)
/// that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The local device name is invalid.
    #[error("invalid local device name: {0}")]
    InvalidName(#[from] NameError),
    /// A duration that must be positive is zero.
    #[error("{what} must be greater than zero")]
    Zero {
        /// The setting concerned.
        what: &'static str,
    },
    /// The lease is not longer than the beacon interval, so every peer would expire between
    /// two beacons.
    #[error("lease ({lease:?}) must be longer than the beacon interval ({interval:?})")]
    LeaseTooShort {
        /// The configured lease.
        lease: Duration,
        /// The configured beacon interval.
        interval: Duration,
    },
    /// A duration exceeds what its setting allows.
    #[error("{what} of {value:?} exceeds the limit of {max:?}")]
    TooLong {
        /// The setting concerned.
        what: &'static str,
        /// The configured value.
        value: Duration,
        /// The largest allowed value.
        max: Duration,
    },
    /// The beacon jitter is half the interval or more, so beacons could bunch up.
    #[error("beacon jitter ({jitter:?}) must be less than half the beacon interval ({interval:?})")]
    JitterTooLarge {
        /// The configured jitter.
        jitter: Duration,
        /// The configured beacon interval.
        interval: Duration,
    },
    /// The maximum redial delay is below the initial one.
    #[error("maximum redial delay ({max:?}) is below the initial delay ({initial:?})")]
    RedialRange {
        /// The initial delay.
        initial: Duration,
        /// The maximum delay.
        max: Duration,
    },
    /// The announcement burst has more entries than allowed.
    #[error("announcement burst of {len} entries exceeds the limit of {max}")]
    BurstTooLong {
        /// Entries configured.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The peer limit is zero.
    #[error("max_peers must be at least 1")]
    NoPeers,
}

/// A name could not be turned into one connected peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No live device has this name.
    #[error("no device named {0:?} is known")]
    UnknownName(String),
    /// The device is known (advertised) but no connection to it is up right now.
    #[error("device {0:?} is known but not connected")]
    NotConnected(String),
    /// Two or more live devices have this name (the local device may be one of them).
    #[error("{count} devices are named {name:?}; addressing that name is ambiguous")]
    AmbiguousName {
        /// The name.
        name: String,
        /// How many live devices have it.
        count: usize,
    },
}
