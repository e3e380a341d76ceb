//! Real-socket tests of hail-multicast. Every multicast socket here is bound to the loopback
//! interface (127.0.0.1) with TTL 0 or 1, or lives in a network namespace the test created.

mod loopback;
mod netns;
mod process;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hail_crypto::GroupKey;
use hail_multicast::{Channel, ChannelConfig, ChannelConfigBuilder, MulticastError, Receiver};

/// Upper bound for any wait in these tests: prevents hangs, never measures speed.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A test key (derivation is tested in hail-crypto; PBKDF2 here would only slow tests).
pub(crate) fn key(byte: u8) -> GroupKey {
    GroupKey::from_bytes([byte; 32])
}

/// An administratively scoped IPv4 group for these tests; `port` 0 picks one.
pub(crate) fn g4(group_last: u8, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(239, 255, 77, group_last), port))
}

/// A configuration on loopback, TTL 0.
pub(crate) fn lo() -> ChannelConfigBuilder {
    ChannelConfig::builder()
        .interface(Ipv4Addr::LOCALHOST)
        .ttl(0)
        .recv_buffer_size(1 << 20)
}

/// A channel on `group` as `config` says.
pub(crate) fn bind(
    group: SocketAddr,
    config: ChannelConfigBuilder,
) -> Result<(Channel, Receiver), MulticastError> {
    Channel::bind(group, config.build()?)
}
