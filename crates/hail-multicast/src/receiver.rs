//! The [`Receiver`]: a channel's receiving half, reading its socket (or bus queue) itself.

use std::fmt;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use hail_crypto::{OpenError, Opener};
use serde::de::DeserializeOwned;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

use crate::MulticastError;
use crate::channel::Shared;
use crate::memory::Inbox;
use crate::stats::{Stats, bump};

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

/// Where a channel's datagrams come from.
pub(crate) enum RecvPath {
    Udp(UdpSocket),
    Memory(Inbox),
    /// Closed: the socket is closed (or the bus membership left).
    Ended,
}

/// The receiving half of a [`Channel`](crate::Channel), from
/// [`Channel::bind`](crate::Channel::bind): it owns the receiving socket (the group's
/// membership) and reads it directly, with no task or queue in between.
///
/// Receiving takes `&mut self` (the receiver owns the replay state); it is also a `Stream`
/// of datagrams. It ends when the channel is [closed](crate::Channel::close): `recv` and
/// `recv_msg` (a waiting one too) return [`MulticastError::Closed`], the stream ends, and
/// the socket is closed, leaving the group. Dropping the receiver leaves the group too;
/// the channel's handles can still send.
pub struct Receiver {
    rx: RecvPath,
    opener: Option<Opener>,
    /// One datagram, as received: opened in place when sealed.
    buf: Box<[u8]>,
    group: SocketAddr,
    loopback: bool,
    /// A datagram from one of these ports and one of `local_addrs` is this channel's own.
    own_ports: Vec<u16>,
    local_addrs: Vec<IpAddr>,
    shared: Arc<Shared>,
    /// The waker last left with `shared` for the close (checked without its lock).
    close_waker: Option<Waker>,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("group", &self.group)
            .field("sealed", &self.opener.is_some())
            .field("loopback", &self.loopback)
            .field("ended", &matches!(self.rx, RecvPath::Ended))
            .finish()
    }
}

impl Receiver {
    /// Every field as `bind` made it.
    pub(crate) fn new(
        rx: RecvPath,
        opener: Option<Opener>,
        group: SocketAddr,
        loopback: bool,
        own_ports: Vec<u16>,
        local_addrs: Vec<IpAddr>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            rx,
            opener,
            buf: vec![0u8; 65_536].into_boxed_slice(),
            group,
            loopback,
            own_ports,
            local_addrs,
            shared,
            close_waker: None,
        }
    }

    /// The group address and port (the actual port when bound with port 0).
    pub fn group(&self) -> SocketAddr {
        self.group
    }

    /// A snapshot of the channel's counters: the same as
    /// [`Channel::stats`](crate::Channel::stats).
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Receives the next datagram, skipping (and counting) those that are dropped.
    ///
    /// # Errors
    /// [`MulticastError::Closed`] once the channel is closed (then always),
    /// [`MulticastError::Io`] if the socket fails.
    pub async fn recv(&mut self) -> Result<Datagram, MulticastError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Receives the next datagram whose payload decodes as a `T` (postcard, strictly: no
    /// trailing bytes, bounded nesting). Datagrams that do not decode are dropped and counted
    /// in [`Stats::dropped_undecodable`].
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub async fn recv_msg<T: DeserializeOwned>(
        &mut self,
    ) -> Result<(T, SocketAddr), MulticastError> {
        loop {
            let d = self.recv().await?;
            match hail_wire::postcard_from_slice::<T>(&d.payload, hail_wire::DEFAULT_MAX_DEPTH) {
                Ok(m) => return Ok((m, d.from)),
                Err(e) => {
                    bump(&self.shared.counters.dropped_undecodable);
                    tracing::debug!(from = %d.from, error = %e, "multicast message does not decode; dropped");
                }
            }
        }
    }

    /// Polls for the next datagram; the basis of [`recv`](Self::recv) and the `Stream` impl.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Datagram, MulticastError>> {
        if self.shared.is_closed() {
            return Poll::Ready(Err(self.end()));
        }
        for _ in 0..DROP_BUDGET {
            let got = match &mut self.rx {
                RecvPath::Udp(sock) => {
                    let mut rb = ReadBuf::new(&mut self.buf);
                    match sock.poll_recv_from(cx, &mut rb) {
                        Poll::Ready(Ok(from)) => Poll::Ready((rb.filled().len(), from)),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                        Poll::Pending => Poll::Pending,
                    }
                }
                RecvPath::Memory(inbox) => inbox.poll_recv_into(cx, &mut self.buf),
                RecvPath::Ended => return Poll::Ready(Err(MulticastError::Closed)),
            };
            let Poll::Ready((n, from)) = got else {
                return self.wait(cx);
            };
            if !self.loopback && self.is_own(from) {
                bump(&self.shared.counters.own_skipped);
                continue;
            }
            let payload = match &mut self.opener {
                None => Bytes::copy_from_slice(&self.buf[..n]),
                Some(o) => match o.open(&mut self.buf[..n]) {
                    Ok(p) => Bytes::copy_from_slice(p.payload),
                    Err(e) => {
                        let c = &self.shared.counters;
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
            bump(&self.shared.counters.delivered);
            return Poll::Ready(Ok(Datagram { payload, from }));
        }
        // A long run of dropped datagrams: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Nothing to read: the socket (or queue) will wake this task, and so will a close.
    /// The waker is left with the handles only when it changed, so a receiver that keeps
    /// waiting on one task takes no lock.
    fn wait(&mut self, cx: &Context<'_>) -> Poll<Result<Datagram, MulticastError>> {
        let known = self
            .close_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if !known {
            if !self.shared.wake_at_close(cx.waker()) {
                return Poll::Ready(Err(self.end()));
            }
            self.close_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The channel was closed: the socket is closed (leaving the group) at once.
    fn end(&mut self) -> MulticastError {
        self.rx = RecvPath::Ended;
        MulticastError::Closed
    }

    fn is_own(&self, from: SocketAddr) -> bool {
        self.own_ports.contains(&from.port()) && self.local_addrs.contains(&from.ip())
    }
}

/// Received datagrams, as [`Receiver::recv`] gives them. The stream ends (`None`) when the
/// channel is closed; a socket error is an `Err` item, and dropped datagrams are skipped
/// (and counted).
impl futures_core::Stream for Receiver {
    type Item = Result<Datagram, MulticastError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().poll_recv(cx) {
            Poll::Ready(Err(MulticastError::Closed)) => Poll::Ready(None),
            p => p.map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{Channel, ChannelConfig};

    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn handles_and_futures_are_send() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Channel>();
        fn send<T: Send>() {}
        send::<Receiver>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let config = ChannelConfig::builder()
            .interface(Ipv4Addr::LOCALHOST)
            .ttl(0)
            .build()
            .unwrap();
        let (chan, mut rx) =
            Channel::bind(SocketAddr::from(([239, 255, 77, 99], 0)), config).unwrap();
        // Futures are only built, never polled: nothing is sent.
        is_send(&chan.send(b"x"));
        is_send(&chan.send_msg(&1u8));
        is_send(&rx.recv());
        is_send(&rx.recv_msg::<u8>());
    }
}
