//! The [`Channel`]: a UDP multicast group joined on one or more interfaces, or on an
//! in-memory [`Bus`](crate::memory::Bus).

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hail_crypto::{OpenError, Opener};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

use crate::MulticastError;
use crate::memory::Inbox;
use crate::sender::{SendPath, Sender};
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

/// A UDP multicast group joined on one or more interfaces, optionally sealed by a group key.
///
/// Built with [`Channel::builder`]; with [`ChannelBuilder::memory`](crate::ChannelBuilder::memory) the same channel runs on
/// an in-memory [`Bus`](crate::memory::Bus) instead of sockets, with the same API, sealing,
/// statistics and limits. Receiving takes `&mut self` (it owns the replay state);
/// sending takes `&self`, and [`Channel::sender`] gives a clonable sending half for other
/// tasks. The channel spawns no task: dropping it (or [`Channel::close`]) closes its sockets
/// and leaves the group.
///
/// Without a key, a datagram is exactly the payload, so plain UDP tools interoperate. With a
/// key each datagram is sealed (see `hail_crypto::datagram`), and received datagrams that are
/// malformed, do not authenticate or are replays are dropped, counted in [`Channel::stats`]
/// and logged at debug level; they never end the channel.
pub struct Channel {
    pub(crate) tx: Sender,
    pub(crate) rx: RecvPath,
    pub(crate) opener: Option<Opener>,
    /// One datagram, as received: opened in place when sealed.
    pub(crate) buf: Box<[u8]>,
    pub(crate) group: SocketAddr,
    pub(crate) loopback: bool,
    /// A datagram from one of these ports and one of `local_addrs` is this channel's own.
    pub(crate) own_ports: Vec<u16>,
    pub(crate) local_addrs: Vec<IpAddr>,
    /// The interfaces joined on, in sending order (none on a bus).
    pub(crate) interfaces: Vec<crate::JoinedInterface>,
    pub(crate) counters: Arc<Counters>,
}

/// Where a channel's datagrams come from.
pub(crate) enum RecvPath {
    Udp(UdpSocket),
    Memory(Inbox),
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Channel");
        d.field("group", &self.group);
        match self.tx.path() {
            SendPath::Udp(s) => d.field("interfaces", &s.len()),
            SendPath::Memory(o) => d.field("memory", &o.addr()),
        };
        d.field("sealed", &self.opener.is_some())
            .field("loopback", &self.loopback)
            .finish()
    }
}

impl Channel {
    /// The group address and port (the actual port when built with port 0).
    pub fn group(&self) -> SocketAddr {
        self.group
    }

    /// The local addresses this channel sends from, one per interface (on a bus: its one
    /// address there), as receivers see them in [`Datagram::from`].
    ///
    /// # Errors
    /// [`MulticastError::Io`] if a socket cannot report its address.
    pub fn send_addrs(&self) -> Result<Vec<SocketAddr>, MulticastError> {
        match self.tx.path() {
            SendPath::Udp(sockets) => Ok(sockets
                .iter()
                .map(|(s, _)| s.local_addr())
                .collect::<io::Result<_>>()?),
            SendPath::Memory(o) => Ok(vec![o.addr()]),
        }
    }

    /// The interfaces the group was joined on and datagrams go out on, as resolved when
    /// the channel was built (none on a bus). The channel does not follow the host's
    /// interfaces: where [`ChannelBuilder::resolve`](crate::ChannelBuilder::resolve) now
    /// says otherwise, build a new channel.
    pub fn interfaces(&self) -> &[crate::JoinedInterface] {
        &self.interfaces
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
            let (n, from) = match &mut self.rx {
                RecvPath::Udp(sock) => {
                    let mut rb = ReadBuf::new(&mut self.buf);
                    match sock.poll_recv_from(cx, &mut rb) {
                        Poll::Ready(Ok(from)) => (rb.filled().len(), from),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                RecvPath::Memory(inbox) => match inbox.poll_recv_into(cx, &mut self.buf) {
                    Poll::Ready(got) => got,
                    Poll::Pending => return Poll::Pending,
                },
            };
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
