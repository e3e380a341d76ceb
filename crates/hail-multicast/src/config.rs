//! [`ChannelConfig`]: the settings of a [`Channel`](crate::Channel), made by
//! [`ChannelConfigBuilder`] and checked by its `build()`, before any socket is opened.

use std::net::SocketAddr;

use hail_crypto::{GroupKey, OpenerConfig};

use crate::MulticastError;
use crate::iface::{self, Interface, InterfaceInfo, JoinedInterface};
use crate::memory::Bus;

/// The largest TTL (IPv4) or hop limit (IPv6): both are one byte on the wire.
const MAX_TTL: u32 = 255;

/// The settings of a [`Channel`](crate::Channel): interfaces, TTL, loopback, sealing,
/// buffers, transport. Made by [`ChannelConfig::builder`] (or `Default`: every default
/// below) and valid by construction; [`Channel::bind`](crate::Channel::bind) opens a channel
/// with it on a group. Cheap to clone (the key is shared), so one configuration can open
/// several channels, or the same channel again.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub(crate) interfaces: Vec<Interface>,
    pub(crate) ttl: u32,
    pub(crate) loopback: bool,
    pub(crate) key: Option<GroupKey>,
    pub(crate) recv_buffer_size: Option<usize>,
    pub(crate) max_sessions: usize,
    pub(crate) transport: Transport,
}

/// UDP sockets, or a membership of an in-memory [`Bus`].
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    Udp,
    Memory { bus: Bus, addr: Option<SocketAddr> },
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            ttl: 1,
            loopback: true,
            key: None,
            recv_buffer_size: None,
            max_sessions: OpenerConfig::DEFAULT_MAX_SESSIONS,
            transport: Transport::Udp,
        }
    }
}

impl ChannelConfig {
    /// Starts a configuration from the defaults (each stated on its setter).
    pub fn builder() -> ChannelConfigBuilder {
        ChannelConfigBuilder {
            config: Self::default(),
        }
    }

    /// The interfaces [`Channel::bind`](crate::Channel::bind) would join `group` on now,
    /// looked up as it looks them up (on a bus: none). Compared with a channel's
    /// [`Channel::interfaces`](crate::Channel::interfaces), it tells whether the host's
    /// interfaces changed under the channel; one `getifaddrs` call.
    ///
    /// # Errors
    /// [`MulticastError::InterfaceNotFound`], [`MulticastError::InterfaceLacksFamily`],
    /// [`MulticastError::NoInterface`], [`MulticastError::Io`] as `bind`.
    pub fn resolve(&self, group: SocketAddr) -> Result<Vec<JoinedInterface>, MulticastError> {
        match self.transport {
            Transport::Memory { .. } => Ok(Vec::new()),
            Transport::Udp => self.resolve_in(group, &iface::interfaces()?),
        }
    }

    /// As [`resolve`](Self::resolve), against the listing `table` of the host's interfaces
    /// (taken with [`interfaces`](crate::interfaces), once for several uses, or a test's).
    ///
    /// # Errors
    /// [`MulticastError::InterfaceNotFound`] (listing `table`),
    /// [`MulticastError::InterfaceLacksFamily`], [`MulticastError::NoInterface`].
    pub fn resolve_in(
        &self,
        group: SocketAddr,
        table: &[InterfaceInfo],
    ) -> Result<Vec<JoinedInterface>, MulticastError> {
        match self.transport {
            Transport::Memory { .. } => Ok(Vec::new()),
            Transport::Udp => iface::resolve(&self.interfaces, group.is_ipv4(), table),
        }
    }
}

/// Builds a [`ChannelConfig`]; from [`ChannelConfig::builder`]. Every setter states its
/// default; [`build`](Self::build) checks the settings (no IO: interfaces are looked up by
/// [`Channel::bind`](crate::Channel::bind), which needs the group's family and the host).
#[derive(Debug, Clone)]
#[must_use]
pub struct ChannelConfigBuilder {
    config: ChannelConfig,
}

impl ChannelConfigBuilder {
    /// Adds an interface to join on (by address, name or index; text such as `"eth0"`, `"3"`
    /// or `"127.0.0.1"` is read as [`Interface`]'s `FromStr` reads it). May be called several
    /// times. Default: none given means every up, multicast-capable interface with an
    /// address of the group's family (on Linux that excludes `lo`, which has no `MULTICAST`
    /// flag: name it, e.g. `.interface(Ipv4Addr::LOCALHOST)`, to use loopback).
    ///
    /// A channel joined on several interfaces sends each payload on every one of them. On an
    /// in-memory bus ([`memory`](Self::memory)) interfaces have no meaning and are not
    /// looked up.
    pub fn interface(mut self, interface: impl Into<Interface>) -> Self {
        self.config.interfaces.push(interface.into());
        self
    }

    /// Time to live (IPv4) or hop limit (IPv6) of sent datagrams, 0 to 255 (checked by
    /// [`build`](Self::build)). Default: 1 (this link only). A bus has one hop; the TTL does
    /// not matter there.
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Whether the channel receives the datagrams it sent itself. Default: `true`.
    ///
    /// Other channels and programs on the same host receive this channel's datagrams either
    /// way (the sockets keep `IP_MULTICAST_LOOP` on); `false` only hides a channel's own
    /// datagrams from its own [`Receiver`](crate::Receiver). The same holds on a bus.
    pub fn loopback(mut self, on: bool) -> Self {
        self.config.loopback = on;
        self
    }

    /// Seals every datagram with this group key, and accepts only datagrams sealed with it.
    /// Default: no key, datagrams are the raw payload (plain UDP tools interoperate).
    pub fn key(mut self, key: GroupKey) -> Self {
        self.config.key = Some(key);
        self
    }

    /// `SO_RCVBUF` of the receiving socket in bytes. Default: the operating system's
    /// (`net.core.rmem_default`, often 208 KiB on Linux); raise it for bursts. On a bus it
    /// is the receive queue's size (default
    /// [`memory::DEFAULT_BUS_QUEUE_BYTES`](crate::memory::DEFAULT_BUS_QUEUE_BYTES), 208 KiB).
    pub fn recv_buffer_size(mut self, bytes: usize) -> Self {
        self.config.recv_buffer_size = Some(bytes);
        self
    }

    /// Sender sessions a sealed channel tracks for replay protection. Default: 256
    /// ([`OpenerConfig::DEFAULT_MAX_SESSIONS`]), clamped to 1..=65,536; the least recently
    /// heard is forgotten first.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.config.max_sessions = n.clamp(1, OpenerConfig::MAX_SESSIONS_LIMIT);
        self
    }

    /// Joins the group on an in-memory [`Bus`] instead of the network, with an address the
    /// bus assigns (see [`Bus`]). Default: UDP sockets.
    pub fn memory(mut self, bus: &Bus) -> Self {
        self.config.transport = Transport::Memory {
            bus: bus.clone(),
            addr: None,
        };
        self
    }

    /// Joins the group on an in-memory [`Bus`] with this address: what receivers see as the
    /// sender's. It must be of the group's family and not used by another member of the bus
    /// (checked by [`Channel::bind`](crate::Channel::bind)).
    pub fn memory_at(mut self, bus: &Bus, addr: SocketAddr) -> Self {
        self.config.transport = Transport::Memory {
            bus: bus.clone(),
            addr: Some(addr),
        };
        self
    }

    /// Checks the settings and returns the configuration. Opens nothing.
    ///
    /// # Errors
    /// [`MulticastError::InvalidTtl`] for a TTL over 255.
    pub fn build(self) -> Result<ChannelConfig, MulticastError> {
        if self.config.ttl > MAX_TTL {
            return Err(MulticastError::InvalidTtl(self.config.ttl));
        }
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_refuses_a_ttl_that_does_not_fit_a_byte_and_opens_nothing() {
        // No runtime here: building a configuration needs none, as it opens nothing.
        assert!(ChannelConfig::builder().ttl(255).build().is_ok());
        assert!(matches!(
            ChannelConfig::builder().ttl(256).build(),
            Err(MulticastError::InvalidTtl(256))
        ));
        // Interfaces are looked up by bind, not build: a name that exists nowhere builds.
        assert!(
            ChannelConfig::builder()
                .interface("no-such-if0")
                .build()
                .is_ok()
        );
    }
}
