//! The [`Channel`]: a UDP multicast group joined on one or more interfaces.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hail_crypto::{GroupKey, OVERHEAD, OpenError, Opener, OpenerConfig, Sealer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

use crate::MulticastError;
use crate::iface::{self, Interface, Resolved};
use crate::stats::{Counters, Stats, bump};

/// Largest UDP payload over IPv4: 65,535 - 20 (IP header) - 8 (UDP header).
pub const MAX_UDP_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload over IPv6 without jumbograms: 65,535 - 8 (UDP header).
pub const MAX_UDP_PAYLOAD_V6: usize = 65_527;

/// Datagrams dropped in a row before `recv` yields to the runtime, so a flood of bad
/// datagrams cannot starve other tasks.
const DROP_BUDGET: usize = 64;

/// A received datagram: its payload (opened, when the channel is sealed) and its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Datagram {
    /// The payload.
    pub payload: Bytes,
    /// The sender's address and port.
    pub from: SocketAddr,
}

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
}

impl ChannelBuilder {
    /// Adds an interface to join on (by address, name or index). May be called several
    /// times. Default: none given means every up, multicast-capable interface with an
    /// address of the group's family (on Linux that excludes `lo`, which has no `MULTICAST`
    /// flag: name it, e.g. `.interface(Ipv4Addr::LOCALHOST)`, to use loopback).
    ///
    /// A channel joined on several interfaces sends each payload on every one of them.
    #[must_use]
    pub fn interface(mut self, interface: impl Into<Interface>) -> Self {
        self.interfaces.push(interface.into());
        self
    }

    /// Time to live (IPv4) or hop limit (IPv6) of sent datagrams. Default: 1 (this link only).
    #[must_use]
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// Whether this channel receives the datagrams it sent itself. Default: `true`.
    ///
    /// Other channels and programs on the same host receive this channel's datagrams either
    /// way (the sockets keep `IP_MULTICAST_LOOP` on); `false` only hides a channel's own
    /// datagrams from itself.
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
    /// (`net.core.rmem_default`, often 208 KiB on Linux); raise it for bursts.
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

    /// Opens the sockets, joins the group on every interface, and returns the channel.
    ///
    /// Must be called inside a tokio runtime. A group port of 0 picks a free port, which
    /// [`Channel::group`] then reports.
    ///
    /// # Errors
    /// [`MulticastError::NotMulticast`], [`MulticastError::InterfaceNotFound`],
    /// [`MulticastError::NoInterface`], [`MulticastError::NoRuntime`], or
    /// [`MulticastError::Io`] when a socket option or the join fails.
    pub fn build(self) -> Result<Channel, MulticastError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(MulticastError::NoRuntime);
        }
        if !self.group.ip().is_multicast() {
            return Err(MulticastError::NotMulticast(self.group.ip()));
        }
        let v4 = self.group.is_ipv4();
        let ifaces = iface::resolve(&self.interfaces, v4)?;
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
        let max_payload = if v4 {
            MAX_UDP_PAYLOAD_V4
        } else {
            MAX_UDP_PAYLOAD_V6
        } - if sealer.is_some() { OVERHEAD } else { 0 };
        tracing::debug!(%group, interfaces = ?ifaces.iter().map(|i| &i.name).collect::<Vec<_>>(), sealed = sealer.is_some(), "multicast channel joined");
        let counters = Arc::new(Counters::default());
        Ok(Channel {
            tx: Sender {
                inner: Arc::new(SendInner {
                    sockets: senders,
                    sealer,
                    max_payload,
                    counters: Arc::clone(&counters),
                }),
            },
            rx: UdpSocket::from_std(recv.into())?,
            opener,
            buf: vec![0u8; 65_536].into_boxed_slice(),
            group,
            loopback: self.loopback,
            own_ports: own,
            local_addrs: iface::local_addrs(),
            counters,
        })
    }
}

fn recv_socket(b: &ChannelBuilder, ifaces: &[Resolved]) -> Result<Socket, MulticastError> {
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
                let addr =
                    i.v4.ok_or_else(|| MulticastError::InterfaceNotFound(i.name.clone()))?;
                s.join_multicast_v4(&g, &addr)?;
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

fn send_socket(
    b: &ChannelBuilder,
    i: &Resolved,
    group: SocketAddr,
) -> Result<(UdpSocket, SocketAddr), MulticastError> {
    match group {
        SocketAddr::V4(g) => {
            let addr =
                i.v4.ok_or_else(|| MulticastError::InterfaceNotFound(i.name.clone()))?;
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

struct SendInner {
    /// One socket per interface, with the destination (group, port, scope) to send to.
    sockets: Vec<(UdpSocket, SocketAddr)>,
    sealer: Option<Mutex<Sealer>>,
    max_payload: usize,
    counters: Arc<Counters>,
}

/// The sending half of a [`Channel`]: cheap to clone, usable from any task.
///
/// From [`Channel::sender`]. The channel's sockets stay open while a `Sender` lives.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<SendInner>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("interfaces", &self.inner.sockets.len())
            .field("sealed", &self.inner.sealer.is_some())
            .finish()
    }
}

/// Payloads up to this size are sealed in a buffer on the stack.
const STACK_SEAL: usize = 2048;

impl Sender {
    /// Sends `payload` to the group on every interface of the channel.
    ///
    /// Succeeds when it went out on at least one interface; failures on the others are
    /// counted in [`Stats::send_errors`].
    ///
    /// # Errors
    /// [`MulticastError::PayloadTooLarge`] (naming the limit), [`MulticastError::Crypto`]
    /// if sealing fails, [`MulticastError::Io`] if no interface could send.
    pub async fn send(&self, payload: &[u8]) -> Result<(), MulticastError> {
        let inner = &*self.inner;
        if payload.len() > inner.max_payload {
            return Err(MulticastError::PayloadTooLarge {
                len: payload.len(),
                max: inner.max_payload,
            });
        }
        match &inner.sealer {
            None => self.send_raw(payload).await,
            Some(sealer) => {
                let need = payload.len() + OVERHEAD;
                let mut stack = [0u8; STACK_SEAL];
                let mut heap;
                let buf: &mut [u8] = if need <= STACK_SEAL {
                    &mut stack[..need]
                } else {
                    heap = vec![0u8; need];
                    &mut heap
                };
                let n = sealer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .seal_into(payload, buf)?;
                self.send_raw(&buf[..n]).await
            }
        }
    }

    async fn send_raw(&self, datagram: &[u8]) -> Result<(), MulticastError> {
        let inner = &*self.inner;
        let mut last_err = None;
        let mut ok = false;
        for (sock, dest) in &inner.sockets {
            match sock.send_to(datagram, dest).await {
                Ok(_) => {
                    ok = true;
                    bump(&inner.counters.sent);
                }
                Err(e) => {
                    tracing::debug!(%dest, error = %e, "multicast send failed on one interface");
                    bump(&inner.counters.send_errors);
                    last_err = Some(e);
                }
            }
        }
        match (ok, last_err) {
            (true, _) | (false, None) => Ok(()),
            (false, Some(e)) => {
                // Counted above as a per-interface error; it is the caller's error now.
                inner
                    .counters
                    .send_errors
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    /// Encodes `msg` with postcard and sends it.
    ///
    /// # Errors
    /// [`MulticastError::Encode`], then as [`Sender::send`].
    pub async fn send_msg<T: Serialize + ?Sized>(&self, msg: &T) -> Result<(), MulticastError> {
        let bytes = postcard::to_stdvec(msg)?;
        self.send(&bytes).await
    }

    /// The largest payload one datagram can carry on this channel.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }
}

/// A UDP multicast group joined on one or more interfaces, optionally sealed by a group key.
///
/// Built with [`Channel::builder`]. Receiving takes `&mut self` (it owns the replay state);
/// sending takes `&self`, and [`Channel::sender`] gives a clonable sending half for other
/// tasks. The channel spawns no task: dropping it (or [`Channel::close`]) closes its sockets
/// and leaves the group.
///
/// Without a key, a datagram is exactly the payload, so plain UDP tools interoperate. With a
/// key each datagram is sealed (see `hail_crypto::datagram`), and received datagrams that are
/// malformed, do not authenticate or are replays are dropped, counted in [`Channel::stats`]
/// and logged at debug level; they never end the channel.
pub struct Channel {
    tx: Sender,
    rx: UdpSocket,
    opener: Option<Opener>,
    buf: Box<[u8]>,
    group: SocketAddr,
    loopback: bool,
    own_ports: Vec<u16>,
    local_addrs: Vec<IpAddr>,
    counters: Arc<Counters>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("group", &self.group)
            .field("interfaces", &self.tx.inner.sockets.len())
            .field("sealed", &self.opener.is_some())
            .field("loopback", &self.loopback)
            .finish()
    }
}

impl Channel {
    /// Starts building a channel on `group` (a multicast address and port), e.g.
    /// `"239.255.42.99:4299"` or `"[ff02::4a1]:4299"`.
    pub fn builder(group: impl Into<SocketAddr>) -> ChannelBuilder {
        ChannelBuilder {
            group: group.into(),
            interfaces: Vec::new(),
            ttl: 1,
            loopback: true,
            key: None,
            recv_buffer_size: None,
            max_sessions: OpenerConfig::DEFAULT_MAX_SESSIONS,
        }
    }

    /// The group address and port (the actual port when built with port 0).
    pub fn group(&self) -> SocketAddr {
        self.group
    }

    /// The local addresses this channel sends from, one per interface.
    ///
    /// # Errors
    /// [`MulticastError::Io`] if a socket cannot report its address.
    pub fn send_addrs(&self) -> Result<Vec<SocketAddr>, MulticastError> {
        Ok(self
            .tx
            .inner
            .sockets
            .iter()
            .map(|(s, _)| s.local_addr())
            .collect::<io::Result<_>>()?)
    }

    /// A clonable sending half.
    pub fn sender(&self) -> Sender {
        self.tx.clone()
    }

    /// Sends `payload` to the group; see [`Sender::send`].
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub async fn send(&self, payload: &[u8]) -> Result<(), MulticastError> {
        self.tx.send(payload).await
    }

    /// Encodes `msg` with postcard and sends it; see [`Sender::send_msg`].
    ///
    /// # Errors
    /// As [`Sender::send_msg`].
    pub async fn send_msg<T: Serialize + ?Sized>(&self, msg: &T) -> Result<(), MulticastError> {
        self.tx.send_msg(msg).await
    }

    /// The largest payload one datagram can carry on this channel.
    pub fn max_payload(&self) -> usize {
        self.tx.max_payload()
    }

    /// Receives the next datagram, skipping (and counting) those that are dropped.
    ///
    /// # Errors
    /// [`MulticastError::Io`] if the socket fails.
    pub async fn recv(&mut self) -> Result<Datagram, MulticastError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Receives the next datagram whose payload decodes as a `T` (postcard, strictly: no
    /// trailing bytes, bounded nesting). Datagrams that do not decode are dropped and counted
    /// in [`Stats::dropped_undecodable`].
    ///
    /// # Errors
    /// [`MulticastError::Io`] if the socket fails.
    pub async fn recv_msg<T: DeserializeOwned>(
        &mut self,
    ) -> Result<(T, SocketAddr), MulticastError> {
        loop {
            let d = self.recv().await?;
            match hail_wire::postcard_from_slice::<T>(&d.payload, hail_wire::DEFAULT_MAX_DEPTH) {
                Ok(m) => return Ok((m, d.from)),
                Err(e) => {
                    bump(&self.counters.dropped_undecodable);
                    tracing::debug!(from = %d.from, error = %e, "multicast message does not decode; dropped");
                }
            }
        }
    }

    /// Polls for the next datagram; the basis of [`Channel::recv`] and the `Stream` impl.
    ///
    /// # Errors
    /// [`MulticastError::Io`] if the socket fails.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Datagram, MulticastError>> {
        for _ in 0..DROP_BUDGET {
            let mut rb = ReadBuf::new(&mut self.buf);
            let from = match self.rx.poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(from)) => from,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            };
            let n = rb.filled().len();
            if !self.loopback && self.is_own(from) {
                bump(&self.counters.own_skipped);
                continue;
            }
            let payload = match &mut self.opener {
                None => Bytes::copy_from_slice(&self.buf[..n]),
                Some(o) => match o.open(&mut self.buf[..n]) {
                    Ok(p) => Bytes::copy_from_slice(p.payload),
                    Err(e) => {
                        let c = &self.counters;
                        bump(match e {
                            OpenError::Malformed(_) => &c.dropped_malformed,
                            OpenError::WrongGroupOrKey => &c.dropped_wrong_key,
                            OpenError::Replayed => &c.dropped_replayed,
                            _ => &c.dropped_too_old,
                        });
                        tracing::debug!(%from, error = %e, "multicast datagram dropped");
                        continue;
                    }
                },
            };
            bump(&self.counters.delivered);
            return Poll::Ready(Ok(Datagram { payload, from }));
        }
        // A long run of dropped datagrams: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn is_own(&self, from: SocketAddr) -> bool {
        self.own_ports.contains(&from.port()) && self.local_addrs.contains(&from.ip())
    }

    /// A snapshot of this channel's counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Closes the channel: leaves the group and closes its sockets (those shared with a live
    /// [`Sender`] close when it drops). Returns the final counters.
    pub fn close(self) -> Stats {
        self.stats()
    }
}

/// Received datagrams, as [`Channel::recv`] gives them. The stream never ends by itself; a
/// socket error is an `Err` item, and dropped datagrams are skipped (and counted).
impl futures_core::Stream for Channel {
    type Item = Result<Datagram, MulticastError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn handles_and_futures_are_send() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Sender>();
        fn send<T: Send>() {}
        send::<Channel>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let mut chan = Channel::builder(SocketAddr::from(([239, 255, 77, 99], 0)))
            .interface(std::net::Ipv4Addr::LOCALHOST)
            .ttl(0)
            .build()
            .unwrap();
        // Futures are only built, never polled: nothing is sent.
        is_send(&chan.send(b"x"));
        is_send(&chan.sender().send_msg(&1u8));
        is_send(&chan.recv());
        is_send(&chan.recv_msg::<u8>());
    }
}
