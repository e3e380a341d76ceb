//! The [`Channel`] handle: a multicast group's sending side, its statistics and its close.
//! Its [`Receiver`](crate::Receiver) is in `receiver.rs`; both come from
//! [`Channel::bind`] (`open.rs`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

use hail_crypto::{OVERHEAD, Sealer};
use serde::Serialize;
use tokio::net::UdpSocket;

use crate::memory::Outlet;
use crate::stats::{Counters, Stats, bump};
use crate::{JoinedInterface, MulticastError};

/// Largest UDP payload over IPv4: 65,535 - 20 (IP header) - 8 (UDP header).
pub const MAX_UDP_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload over IPv6 without jumbograms: 65,535 - 8 (UDP header).
pub const MAX_UDP_PAYLOAD_V6: usize = 65_527;

/// Payloads up to this size are sealed in a buffer on the stack.
const STACK_SEAL: usize = 2048;

/// Where a channel's datagrams go.
pub(crate) enum SendPath {
    /// One socket per interface, with the destination (group, port, scope) to send to.
    Udp(Vec<(UdpSocket, SocketAddr)>),
    /// This channel's membership of an in-memory bus.
    Memory(Outlet),
}

/// What a channel's handles and its receiver share: the counters and the close.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    closed: AtomicBool,
    /// The waker of the receiver's task while it waits, so that `close` ends the wait.
    receiver: Mutex<Option<Waker>>,
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Keeps `waker` to wake at the close; `false` (keeping nothing) when closed already.
    pub(crate) fn wake_at_close(&self, waker: &Waker) -> bool {
        let mut slot = self.receiver.lock().unwrap_or_else(PoisonError::into_inner);
        // Read under the lock: a close that set the flag before has taken the slot, one
        // that sets it after will find this waker there.
        if self.is_closed() {
            return false;
        }
        *slot = Some(waker.clone());
        true
    }

    fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let waker = self
                .receiver
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

struct Inner {
    path: SendPath,
    sealer: Option<Mutex<Sealer>>,
    max_payload: usize,
    group: SocketAddr,
    /// The interfaces joined on, in sending order (none on a bus).
    interfaces: Vec<JoinedInterface>,
    shared: Arc<Shared>,
}

/// A UDP multicast group joined on one or more interfaces, optionally sealed by a group key:
/// the handle that sends, reports and closes. Its datagrams arrive at the
/// [`Receiver`](crate::Receiver) that [`Channel::bind`] returns with it.
///
/// Cheap to clone; all clones are the same channel, usable from any task. With
/// [`ChannelConfigBuilder::memory`](crate::ChannelConfigBuilder::memory) the same channel
/// runs on an in-memory [`Bus`](crate::memory::Bus) instead of sockets, with the same API,
/// sealing, statistics and limits. The channel spawns no task.
///
/// [`close`](Self::close) ends it for every clone and for its receiver: sends fail with
/// [`MulticastError::Closed`], and the receiver's `recv` (a waiting one too) returns that
/// error, its stream ends, and it closes its socket, leaving the group. Dropping every
/// handle without `close` only stops sending: the receiver, which holds the group's
/// membership, keeps receiving until it is closed or dropped. The sending sockets close
/// when the last handle is dropped.
///
/// Without a key, a datagram is exactly the payload, so plain UDP tools interoperate. With a
/// key each datagram is sealed (see `hail_crypto::datagram`), and received datagrams that are
/// malformed, do not authenticate or are replays are dropped, counted in
/// [`Channel::stats`] and logged at debug level; they never end the channel.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let mut d = f.debug_struct("Channel");
        d.field("group", &inner.group);
        match &inner.path {
            SendPath::Udp(s) => d.field("interfaces", &s.len()),
            SendPath::Memory(o) => d.field("memory", &o.addr()),
        };
        d.field("sealed", &inner.sealer.is_some())
            .field("closed", &inner.shared.is_closed())
            .finish()
    }
}

impl Channel {
    pub(crate) fn new(
        path: SendPath,
        sealer: Option<Sealer>,
        group: SocketAddr,
        interfaces: Vec<JoinedInterface>,
        shared: Arc<Shared>,
    ) -> Self {
        let max_payload = if group.is_ipv4() {
            MAX_UDP_PAYLOAD_V4
        } else {
            MAX_UDP_PAYLOAD_V6
        } - if sealer.is_some() { OVERHEAD } else { 0 };
        Self {
            inner: Arc::new(Inner {
                path,
                sealer: sealer.map(Mutex::new),
                max_payload,
                group,
                interfaces,
                shared,
            }),
        }
    }

    /// The group address and port (the actual port when bound with port 0).
    pub fn group(&self) -> SocketAddr {
        self.inner.group
    }

    /// The local addresses this channel sends from, one per interface (on a bus: its one
    /// address there), as receivers see them in [`Datagram::from`](crate::Datagram::from).
    ///
    /// # Errors
    /// [`MulticastError::Io`] if a socket cannot report its address.
    pub fn send_addrs(&self) -> Result<Vec<SocketAddr>, MulticastError> {
        match &self.inner.path {
            SendPath::Udp(sockets) => Ok(sockets
                .iter()
                .map(|(s, _)| s.local_addr())
                .collect::<io::Result<_>>()?),
            SendPath::Memory(o) => Ok(vec![o.addr()]),
        }
    }

    /// The interfaces the group was joined on and datagrams go out on, as resolved when
    /// the channel was bound (none on a bus). The channel does not follow the host's
    /// interfaces: where [`ChannelConfig::resolve`](crate::ChannelConfig::resolve) now
    /// says otherwise, bind a new channel.
    pub fn interfaces(&self) -> &[JoinedInterface] {
        &self.inner.interfaces
    }

    /// The largest payload one datagram can carry on this channel.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// A snapshot of this channel's counters (its receiver's included).
    pub fn stats(&self) -> Stats {
        self.inner.shared.counters.snapshot()
    }

    /// Closes the channel, for every clone of this handle and for its receiver: later sends
    /// fail with [`MulticastError::Closed`]; the receiver wakes if it waits, ends (its `recv`
    /// returns [`MulticastError::Closed`], its stream ends) and closes its socket, leaving
    /// the group, without taking the datagrams still queued (a receiver nobody polls does
    /// that at its next poll, or when dropped). Returns the counters as they are now.
    /// Closing again does nothing more.
    pub fn close(&self) -> Stats {
        self.inner.shared.close();
        self.stats()
    }

    /// True once [`close`](Self::close) was called on this channel (any of its handles).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    /// Sends `payload` to the group on every interface of the channel.
    ///
    /// Succeeds when it went out on at least one interface; failures on the others are
    /// counted in [`Stats::send_errors`]. On a bus it is handed to every member at once.
    ///
    /// # Errors
    /// [`MulticastError::Closed`] once closed, [`MulticastError::PayloadTooLarge`] (naming
    /// the limit), [`MulticastError::Crypto`] if sealing fails, [`MulticastError::Io`] if no
    /// interface could send.
    pub async fn send(&self, payload: &[u8]) -> Result<(), MulticastError> {
        let inner = &*self.inner;
        if inner.shared.is_closed() {
            return Err(MulticastError::Closed);
        }
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
                    .unwrap_or_else(PoisonError::into_inner)
                    .seal_into(payload, buf)?;
                self.send_raw(&buf[..n]).await
            }
        }
    }

    async fn send_raw(&self, datagram: &[u8]) -> Result<(), MulticastError> {
        let inner = &*self.inner;
        let counters = &inner.shared.counters;
        let sockets = match &inner.path {
            SendPath::Udp(sockets) => sockets,
            SendPath::Memory(outlet) => {
                outlet.send(datagram);
                bump(&counters.sent);
                return Ok(());
            }
        };
        let mut last_err = None;
        let mut ok = false;
        for (sock, dest) in sockets {
            match sock.send_to(datagram, dest).await {
                Ok(_) => {
                    ok = true;
                    bump(&counters.sent);
                }
                Err(e) => {
                    tracing::debug!(%dest, error = %e, "multicast send failed on one interface");
                    bump(&counters.send_errors);
                    last_err = Some(e);
                }
            }
        }
        match (ok, last_err) {
            (true, _) | (false, None) => Ok(()),
            (false, Some(e)) => {
                // Counted above as a per-interface error; it is the caller's error now.
                counters.send_errors.fetch_sub(1, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    /// Encodes `msg` with postcard and sends it.
    ///
    /// # Errors
    /// [`MulticastError::Encode`], then as [`Channel::send`].
    pub async fn send_msg<T: Serialize + ?Sized>(&self, msg: &T) -> Result<(), MulticastError> {
        let bytes = postcard::to_stdvec(msg)?;
        self.send(&bytes).await
    }
}
