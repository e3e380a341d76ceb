//! [`ChannelBuilder`]: the options of a [`Channel`], and the sockets (or bus membership) it
//! opens.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex};

use hail_crypto::{GroupKey, OVERHEAD, Opener, OpenerConfig, Sealer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::channel::{Channel, RecvPath};
use crate::iface::{self, Interface, InterfaceInfo, JoinedInterface};
use crate::memory::{self, Bus};
use crate::sender::{SendInner, SendPath, Sender};
use crate::stats::Counters;
use crate::{MAX_UDP_PAYLOAD_V4, MAX_UDP_PAYLOAD_V6, MulticastError};

/// Builds a [`Channel`]; from [`Channel::builder`].
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    group: SocketAddr,
    interfaces: Vec<Interface>,
    ttl: u32,
    loopback: bool,
    key: Option<GroupKey>,
    recv_buffer_size: Option<usize>,
    max_sessions: usize,
    transport: Transport,
}

/// UDP sockets, or a membership of an in-memory [`Bus`].
#[derive(Debug, Clone)]
enum Transport {
    Udp,
    Memory { bus: Bus, addr: Option<SocketAddr> },
}

impl Channel {
    /// Starts building a channel on `group` (a multicast address and port), e.g.
    /// `"239.255.42.99:4299"` or `"[ff02::4a1]:4299"`.
    pub fn builder(group: impl Into<SocketAddr>) -> ChannelBuilder {
        ChannelBuilder::new(group.into())
    }
}

impl ChannelBuilder {
    pub(crate) fn new(group: SocketAddr) -> Self {
        Self {
            group,
            interfaces: Vec::new(),
            ttl: 1,
            loopback: true,
            key: None,
            recv_buffer_size: None,
            max_sessions: OpenerConfig::DEFAULT_MAX_SESSIONS,
            transport: Transport::Udp,
        }
    }

    /// Adds an interface to join on (by address, name or index; text such as `"eth0"`, `"3"`
    /// or `"127.0.0.1"` is read as [`Interface`]'s `FromStr` reads it). May be called several
    /// times. Default: none given means every up, multicast-capable interface with an
    /// address of the group's family (on Linux that excludes `lo`, which has no `MULTICAST`
    /// flag: name it, e.g. `.interface(Ipv4Addr::LOCALHOST)`, to use loopback).
    ///
    /// A channel joined on several interfaces sends each payload on every one of them. On an
    /// in-memory bus ([`ChannelBuilder::memory`]) interfaces have no meaning and are not
    /// looked up.
    #[must_use]
    pub fn interface(mut self, interface: impl Into<Interface>) -> Self {
        self.interfaces.push(interface.into());
        self
    }

    /// Time to live (IPv4) or hop limit (IPv6) of sent datagrams. Default: 1 (this link
    /// only). A bus has one hop; the TTL does not matter there.
    #[must_use]
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// Whether this channel receives the datagrams it sent itself. Default: `true`.
    ///
    /// Other channels and programs on the same host receive this channel's datagrams either
    /// way (the sockets keep `IP_MULTICAST_LOOP` on); `false` only hides a channel's own
    /// datagrams from itself. The same holds on a bus.
    #[must_use]
    pub fn loopback(mut self, on: bool) -> Self {
        self.loopback = on;
        self
    }

    /// Seals every datagram with this group key, and accepts only datagrams sealed with it.
    /// Default: no key, datagrams are the raw payload (plain UDP tools interoperate).
    #[must_use]
    pub fn key(mut self, key: GroupKey) -> Self {
        self.key = Some(key);
        self
    }

    /// `SO_RCVBUF` of the receiving socket in bytes. Default: the operating system's
    /// (`net.core.rmem_default`, often 208 KiB on Linux); raise it for bursts. On a bus it
    /// is the receive queue's size (default [`memory::DEFAULT_BUS_QUEUE_BYTES`], 208 KiB).
    #[must_use]
    pub fn recv_buffer_size(mut self, bytes: usize) -> Self {
        self.recv_buffer_size = Some(bytes);
        self
    }

    /// Sender sessions a sealed channel tracks for replay protection. Default: 256
    /// ([`OpenerConfig::DEFAULT_MAX_SESSIONS`]), clamped to 1..=65,536; the least recently
    /// heard is forgotten first.
    #[must_use]
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n.clamp(1, OpenerConfig::MAX_SESSIONS_LIMIT);
        self
    }

    /// Joins the group on an in-memory [`Bus`] instead of the network, with an address the
    /// bus assigns (see [`Bus`]). Default: UDP sockets.
    #[must_use]
    pub fn memory(mut self, bus: &Bus) -> Self {
        self.transport = Transport::Memory {
            bus: bus.clone(),
            addr: None,
        };
        self
    }

    /// Joins the group on an in-memory [`Bus`] with this address: what receivers see as the
    /// sender's. It must be of the group's family and not used by another member of the bus.
    #[must_use]
    pub fn memory_at(mut self, bus: &Bus, addr: SocketAddr) -> Self {
        self.transport = Transport::Memory {
            bus: bus.clone(),
            addr: Some(addr),
        };
        self
    }

    /// The interfaces [`build`](Self::build) would join on now, looked up as it looks them
    /// up (on a bus: none). Compared with a built channel's
    /// [`Channel::interfaces`], it tells whether the host's interfaces changed under the
    /// channel; one `getifaddrs` call.
    ///
    /// # Errors
    /// [`MulticastError::InterfaceNotFound`], [`MulticastError::InterfaceLacksFamily`],
    /// [`MulticastError::NoInterface`], [`MulticastError::Io`] as [`build`](Self::build).
    pub fn resolve(&self) -> Result<Vec<JoinedInterface>, MulticastError> {
        match self.transport {
            Transport::Memory { .. } => Ok(Vec::new()),
            Transport::Udp => self.resolve_in(&iface::interfaces()?),
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
        table: &[InterfaceInfo],
    ) -> Result<Vec<JoinedInterface>, MulticastError> {
        match self.transport {
            Transport::Memory { .. } => Ok(Vec::new()),
            Transport::Udp => iface::resolve(&self.interfaces, self.group.is_ipv4(), table),
        }
    }

    /// Opens the sockets (or joins the bus), joins the group on every interface, and returns
    /// the channel.
    ///
    /// UDP channels must be built inside a tokio runtime; bus channels need none. A group
    /// port of 0 picks a free port, which [`Channel::group`] then reports.
    ///
    /// # Errors
    /// [`MulticastError::NotMulticast`], [`MulticastError::InterfaceNotFound`],
    /// [`MulticastError::InterfaceLacksFamily`], [`MulticastError::NoInterface`],
    /// [`MulticastError::NoRuntime`], or [`MulticastError::Io`] when a socket option or the
    /// join fails (on a bus: an address in use, or of the other family).
    pub fn build(self) -> Result<Channel, MulticastError> {
        if let Transport::Memory { bus, addr } = &self.transport {
            return self.build_memory(bus, *addr);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MulticastError::NoRuntime);
        }
        if !self.group.ip().is_multicast() {
            return Err(MulticastError::NotMulticast(self.group.ip()));
        }
        let v4 = self.group.is_ipv4();
        let ifaces = iface::resolve(&self.interfaces, v4, &iface::interfaces()?)?;
        let recv = recv_socket(&self, &ifaces)?;
        let port = recv
            .local_addr()?
            .as_socket()
            .map_or(self.group.port(), |a| a.port());
        let mut group = self.group;
        group.set_port(port);
        let mut senders = Vec::with_capacity(ifaces.len());
        for i in &ifaces {
            senders.push(send_socket(&self, i, group)?);
        }
        let own: Vec<u16> = senders
            .iter()
            .map(|(s, _)| s.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        tracing::debug!(%group, interfaces = ?ifaces.iter().map(|i| &i.name).collect::<Vec<_>>(), sealed = self.key.is_some(), "multicast channel joined");
        self.finish(
            SendPath::Udp(senders),
            RecvPath::Udp(UdpSocket::from_std(recv.into())?),
            group,
            own,
            iface::local_addrs(),
            ifaces,
        )
    }

    fn build_memory(&self, bus: &Bus, addr: Option<SocketAddr>) -> Result<Channel, MulticastError> {
        if !self.group.ip().is_multicast() {
            return Err(MulticastError::NotMulticast(self.group.ip()));
        }
        let capacity = self
            .recv_buffer_size
            .unwrap_or(memory::DEFAULT_BUS_QUEUE_BYTES);
        let (outlet, inbox) = bus.join(self.group, addr, capacity)?;
        let (group, me) = (outlet.group(), outlet.addr());
        tracing::debug!(%group, member = %me, sealed = self.key.is_some(), "in-memory multicast channel joined");
        self.finish(
            SendPath::Memory(outlet),
            RecvPath::Memory(inbox),
            group,
            vec![me.port()],
            vec![me.ip()],
            Vec::new(),
        )
    }

    /// The parts both transports share: sealing, limits, counters.
    fn finish(
        &self,
        send: SendPath,
        recv: RecvPath,
        group: SocketAddr,
        own_ports: Vec<u16>,
        local_addrs: Vec<IpAddr>,
        interfaces: Vec<JoinedInterface>,
    ) -> Result<Channel, MulticastError> {
        let (sealer, opener) = match &self.key {
            Some(k) => (
                Some(Mutex::new(Sealer::new(k)?)),
                Some(Opener::with_config(
                    k,
                    OpenerConfig::default().max_sessions(self.max_sessions),
                )),
            ),
            None => (None, None),
        };
        let max_payload = if group.is_ipv4() {
            MAX_UDP_PAYLOAD_V4
        } else {
            MAX_UDP_PAYLOAD_V6
        } - if sealer.is_some() { OVERHEAD } else { 0 };
        let counters = Arc::new(Counters::default());
        let tx = Sender::new(SendInner {
            path: send,
            sealer,
            max_payload,
            counters: Arc::clone(&counters),
        });
        Ok(Channel {
            tx,
            rx: recv,
            opener,
            buf: vec![0u8; 65_536].into_boxed_slice(),
            group,
            loopback: self.loopback,
            own_ports,
            local_addrs,
            interfaces,
            counters,
        })
    }
}

fn recv_socket(b: &ChannelBuilder, ifaces: &[JoinedInterface]) -> Result<Socket, MulticastError> {
    let domain = if b.group.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    if let Some(n) = b.recv_buffer_size {
        s.set_recv_buffer_size(n)?;
    }
    match b.group.ip() {
        IpAddr::V4(g) => {
            // Only the groups this socket joined, not every group any socket on the host joined.
            #[cfg(target_os = "linux")]
            s.set_multicast_all_v4(false)?;
            // Binding the group address (not 0.0.0.0) keeps unicast and other groups out.
            #[cfg(unix)]
            let bind = SocketAddrV4::new(g, b.group.port());
            #[cfg(not(unix))]
            let bind = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, b.group.port());
            s.bind(&SocketAddr::V4(bind).into())?;
            for i in ifaces {
                s.join_multicast_v4(&g, &v4_of(i)?)?;
            }
        }
        IpAddr::V6(g) => {
            s.set_only_v6(true)?;
            #[cfg(target_os = "linux")]
            s.set_multicast_all_v6(false)?;
            // A link-scoped group address cannot be bound without tying the socket to one
            // interface, so bind the wildcard and rely on the joins (and multicast_all off).
            s.bind(
                &SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::UNSPECIFIED,
                    b.group.port(),
                    0,
                    0,
                ))
                .into(),
            )?;
            for i in ifaces {
                s.join_multicast_v6(&g, i.index)?;
            }
        }
    }
    Ok(s)
}

/// The IPv4 address an IPv4 group is joined and sent from on `i` (resolution checked it has one).
fn v4_of(i: &JoinedInterface) -> Result<std::net::Ipv4Addr, MulticastError> {
    i.v4.ok_or_else(|| MulticastError::InterfaceLacksFamily {
        interface: i.name.clone(),
        ipv6: false,
    })
}

fn send_socket(
    b: &ChannelBuilder,
    i: &JoinedInterface,
    group: SocketAddr,
) -> Result<(UdpSocket, SocketAddr), MulticastError> {
    match group {
        SocketAddr::V4(g) => {
            let addr = v4_of(i)?;
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_nonblocking(true)?;
            s.set_multicast_if_v4(&addr)?;
            s.set_multicast_ttl_v4(b.ttl)?;
            s.set_multicast_loop_v4(true)?;
            s.bind(&SocketAddr::V4(SocketAddrV4::new(addr, 0)).into())?;
            Ok((UdpSocket::from_std(s.into())?, SocketAddr::V4(g)))
        }
        SocketAddr::V6(g) => {
            let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_nonblocking(true)?;
            s.set_only_v6(true)?;
            s.set_multicast_if_v6(i.index)?;
            s.set_multicast_hops_v6(b.ttl)?;
            s.set_multicast_loop_v6(true)?;
            s.bind(&SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)).into())?;
            let dest = SocketAddrV6::new(*g.ip(), g.port(), 0, i.index);
            Ok((UdpSocket::from_std(s.into())?, SocketAddr::V6(dest)))
        }
    }
}
