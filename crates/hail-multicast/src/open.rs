//! [`Channel::bind`]: the sockets (or bus membership) a [`ChannelConfig`] opens on a group,
//! split into the [`Channel`] handle and its [`Receiver`].

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use hail_crypto::{Opener, OpenerConfig, Sealer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::MulticastError;
use crate::channel::{Channel, SendPath, Shared};
use crate::config::{ChannelConfig, Transport};
use crate::iface::{self, InterfaceInfo, JoinedInterface};
use crate::memory::{self, Bus};
use crate::receiver::{Receiver, RecvPath};

impl Channel {
    /// Joins `group` (a multicast address and port, e.g. `"239.255.42.99:4299"` or
    /// `"[ff02::4a1]:4299"`) as `config` says: opens the sockets (or joins the bus), joins
    /// the group on every interface, and returns the sending handle and its receiver.
    ///
    /// Returns at once (opening a UDP socket waits for nothing). UDP channels must be bound
    /// inside a tokio runtime; bus channels need none. A group port of 0 picks a free port,
    /// which [`Channel::group`] then reports.
    ///
    /// # Errors
    /// [`MulticastError::NotMulticast`], [`MulticastError::InterfaceNotFound`],
    /// [`MulticastError::InterfaceLacksFamily`], [`MulticastError::NoInterface`],
    /// [`MulticastError::NoRuntime`], or [`MulticastError::Io`] when a socket option or the
    /// join fails (on a bus: an address in use, or of the other family).
    pub fn bind(
        group: impl Into<SocketAddr>,
        config: ChannelConfig,
    ) -> Result<(Self, Receiver), MulticastError> {
        Self::bind_listed(group.into(), config, None)
    }

    /// Like [`bind`](Self::bind), with the host's interfaces as `table` lists them: for a
    /// caller that binds several channels at once (a device's IPv4 and IPv6 groups) and
    /// lists the interfaces once for all of them (a listing is a netlink dump on Linux,
    /// 50 to 150 us on the test machine, the largest part of a bind).
    ///
    /// `table` must be the whole listing from [`interfaces`](crate::interfaces), not a
    /// filtered one, and recent: the configured interfaces are resolved in it (one it
    /// lacks is [`MulticastError::InterfaceNotFound`], though the host has it), and its
    /// addresses are the ones the channel recognises its own datagrams by, for as long as
    /// it is open (one sent from an address missing from `table` is delivered, not
    /// skipped). A bus channel ignores `table`.
    ///
    /// # Errors
    /// As [`bind`](Self::bind): [`MulticastError::NotMulticast`],
    /// [`MulticastError::InterfaceNotFound`] (in `table`),
    /// [`MulticastError::InterfaceLacksFamily`], [`MulticastError::NoInterface`],
    /// [`MulticastError::NoRuntime`], or [`MulticastError::Io`] when a socket option or
    /// the join fails (also for an interface gone since `table` was made).
    pub fn bind_in(
        group: impl Into<SocketAddr>,
        config: ChannelConfig,
        table: &[InterfaceInfo],
    ) -> Result<(Self, Receiver), MulticastError> {
        Self::bind_listed(group.into(), config, Some(table))
    }

    fn bind_listed(
        group: SocketAddr,
        config: ChannelConfig,
        table: Option<&[InterfaceInfo]>,
    ) -> Result<(Self, Receiver), MulticastError> {
        if let Transport::Memory { bus, addr } = &config.transport {
            return bind_memory(&config, group, bus, *addr);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MulticastError::NoRuntime);
        }
        if !group.ip().is_multicast() {
            return Err(MulticastError::NotMulticast(group.ip()));
        }
        let listed;
        let table = match table {
            Some(t) => t,
            None => {
                listed = iface::interfaces()?;
                &listed
            }
        };
        let ifaces = iface::resolve(&config.interfaces, group.is_ipv4(), table)?;
        let recv = recv_socket(&config, group, &ifaces)?;
        let port = recv
            .local_addr()?
            .as_socket()
            .map_or(group.port(), |a| a.port());
        let mut group = group;
        group.set_port(port);
        let mut senders = Vec::with_capacity(ifaces.len());
        for i in &ifaces {
            senders.push(send_socket(&config, i, group)?);
        }
        let own: Vec<u16> = senders
            .iter()
            .map(|(s, _)| s.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        tracing::debug!(%group, interfaces = ?ifaces.iter().map(|i| &i.name).collect::<Vec<_>>(), sealed = config.key.is_some(), "multicast channel joined");
        finish(
            &config,
            SendPath::Udp(senders),
            RecvPath::Udp(UdpSocket::from_std(recv.into())?),
            group,
            own,
            iface::local_addrs(table),
            ifaces,
        )
    }
}

fn bind_memory(
    config: &ChannelConfig,
    group: SocketAddr,
    bus: &Bus,
    addr: Option<SocketAddr>,
) -> Result<(Channel, Receiver), MulticastError> {
    if !group.ip().is_multicast() {
        return Err(MulticastError::NotMulticast(group.ip()));
    }
    let capacity = config
        .recv_buffer_size
        .unwrap_or(memory::DEFAULT_BUS_QUEUE_BYTES);
    let (outlet, inbox) = bus.join(group, addr, capacity)?;
    let (group, me) = (outlet.group(), outlet.addr());
    tracing::debug!(%group, member = %me, sealed = config.key.is_some(), "in-memory multicast channel joined");
    finish(
        config,
        SendPath::Memory(outlet),
        RecvPath::Memory(inbox),
        group,
        vec![me.port()],
        vec![me.ip()],
        Vec::new(),
    )
}

/// The parts both transports share: sealing, limits, counters, the close.
fn finish(
    config: &ChannelConfig,
    send: SendPath,
    recv: RecvPath,
    group: SocketAddr,
    own_ports: Vec<u16>,
    local_addrs: Vec<IpAddr>,
    interfaces: Vec<JoinedInterface>,
) -> Result<(Channel, Receiver), MulticastError> {
    let (sealer, opener) = match &config.key {
        Some(k) => (
            Some(Sealer::new(k)?),
            Some(Opener::with_config(
                k,
                OpenerConfig::default().max_sessions(config.max_sessions),
            )),
        ),
        None => (None, None),
    };
    let shared = Arc::new(Shared::default());
    let chan = Channel::new(send, sealer, group, interfaces, Arc::clone(&shared));
    let rx = Receiver::new(
        recv,
        opener,
        group,
        config.loopback,
        own_ports,
        local_addrs,
        shared,
    );
    Ok((chan, rx))
}

fn recv_socket(
    c: &ChannelConfig,
    group: SocketAddr,
    ifaces: &[JoinedInterface],
) -> Result<Socket, MulticastError> {
    let domain = if group.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    if let Some(n) = c.recv_buffer_size {
        s.set_recv_buffer_size(n)?;
    }
    match group.ip() {
        IpAddr::V4(g) => {
            // Only the groups this socket joined, not every group any socket on the host joined.
            #[cfg(target_os = "linux")]
            s.set_multicast_all_v4(false)?;
            // Binding the group address (not 0.0.0.0) keeps unicast and other groups out.
            #[cfg(unix)]
            let bind = SocketAddrV4::new(g, group.port());
            #[cfg(not(unix))]
            let bind = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, group.port());
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
                &SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, group.port(), 0, 0))
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
    c: &ChannelConfig,
    i: &JoinedInterface,
    group: SocketAddr,
) -> Result<(UdpSocket, SocketAddr), MulticastError> {
    match group {
        SocketAddr::V4(g) => {
            let addr = v4_of(i)?;
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_nonblocking(true)?;
            s.set_multicast_if_v4(&addr)?;
            s.set_multicast_ttl_v4(c.ttl)?;
            s.set_multicast_loop_v4(true)?;
            s.bind(&SocketAddr::V4(SocketAddrV4::new(addr, 0)).into())?;
            Ok((UdpSocket::from_std(s.into())?, SocketAddr::V4(g)))
        }
        SocketAddr::V6(g) => {
            let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_nonblocking(true)?;
            s.set_only_v6(true)?;
            s.set_multicast_if_v6(i.index)?;
            s.set_multicast_hops_v6(c.ttl)?;
            s.set_multicast_loop_v6(true)?;
            s.bind(&SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)).into())?;
            let dest = SocketAddrV6::new(*g.ip(), g.port(), 0, i.index);
            Ok((UdpSocket::from_std(s.into())?, SocketAddr::V6(dest)))
        }
    }
}
