//! The error types of `hail-discovery`, one per concern (the advert codec's
//! [`AdvertError`](crate::AdvertError) stands beside its [`Kind`](crate::Kind) in `advert`,
//! the name rule's [`NameError`](crate::NameError) beside it in `advert/name.rs`).

use std::time::Duration;

/// A [`PeerTableConfig`](crate::PeerTableConfig) or [`LocalDevice`](crate::LocalDevice)
/// that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The local device name is invalid.
    #[error("invalid local device name: {0}")]
    InvalidName(#[from] crate::advert::NameError),
    /// The local device's metadata is invalid.
    #[error("invalid local metadata: {0}")]
    InvalidMetadata(#[from] crate::advert::MetadataError),
    /// The local device's incarnation has no sequence number left for signing (more than
    /// 2^32 adverts in one run), or its announce does not encode.
    #[error("the local device's announce cannot be signed (sequence numbers exhausted)")]
    Unsignable,
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
