//! An in-memory network: links between tasks of one process, without sockets.
//!
//! A [`MemoryNetwork`] stands in for the IP network in tests. Servers listen on it and
//! clients dial over it when their [`LinkConfig`](crate::LinkConfig) has
//! [`Transport::memory`](crate::Transport::memory); everything above the byte stream
//! (hello and welcome, the Noise handshake, heartbeats, limits, graceful close,
//! reconnection) runs unchanged. It never touches the operating system's network, so
//! many servers and clients can run in one test under `tokio::time::pause()`, in virtual
//! time and in a deterministic order.
//!
//! * Listeners are keyed by [`SocketAddr`] (IPv4 and IPv6; port 0 picks a free port; an
//!   unspecified IP such as `0.0.0.0` takes dials to any IP of its family on that port).
//! * A connection is a [`tokio::io::duplex`] pair buffering [`STREAM_BUFFER`] (64 KiB)
//!   in each direction: a writer that far ahead of its reader waits, as on a full TCP
//!   window.
//! * Dialing an address without a listener fails at once with an [`io::Error`] of kind
//!   [`ConnectionRefused`](io::ErrorKind::ConnectionRefused), as TCP does; so does
//!   dialing a listener that was dropped.
//! * The accepted side sees the dialer's address: its IP (passed by the dialer, by
//!   default the loopback address of the target's family) and an ephemeral port.
//! * [`MemoryNetwork::set_unreachable`] models a host that does not answer: dials to it
//!   hang until the dialer's timeout.
//!
//! ```
//! use hail_link::memory::MemoryNetwork;
//! use hail_link::{Client, ClientConfig, LinkConfig, Server, ServerConfig, Transport};
//! use hail_wire::Binary;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hail_link::LinkError> {
//! let net = MemoryNetwork::new();
//! let link = LinkConfig::builder().transport(Transport::memory(&net)).build()?;
//! let addr = "10.0.0.1:7000".parse().unwrap();
//! let server_config = ServerConfig::builder().link(link.clone()).build()?;
//! let (server, _events) = Server::bind(addr, server_config, Binary).await?;
//! let client_config = ClientConfig::builder().link(link).build()?;
//! let (client, _client_events) = Client::connect(server.local_addr(), client_config, Binary).await?;
//! assert_eq!(client.connection().unwrap().peer_addr(), addr);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;

/// Bytes one direction of an in-memory connection buffers: 64 KiB. A writer this far
/// ahead of its reader waits until the reader takes some.
pub const STREAM_BUFFER: usize = 64 * 1024;

/// Connections a listener holds before they are accepted: 128. A dial to a listener
/// whose backlog is full waits for room (bounded by the dialer's timeout).
pub const BACKLOG: usize = 128;

/// First port handed out for port 0 and to dialers: 49152 (the IANA dynamic range,
/// to 65535). Ports are handed out in turn, skipping those of listeners; after 16,384
/// they repeat.
pub const FIRST_EPHEMERAL_PORT: u16 = 49152;

/// A process-local network of in-memory listeners and connections; cheap to clone (all
/// clones are the same network).
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Net>>,
}

#[derive(Default)]
struct Net {
    listeners: HashMap<SocketAddr, Registration>,
    unreachable: HashSet<IpAddr>,
    /// Offset of the next ephemeral port from [`FIRST_EPHEMERAL_PORT`].
    next_port: u16,
    /// Tells listeners apart, so a dropped one never removes its successor.
    next_listener: u64,
}

struct Registration {
    id: u64,
    tx: mpsc::Sender<MemoryStream>,
}

impl fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = self.net();
        f.debug_struct("MemoryNetwork")
            .field("listeners", &net.listeners.len())
            .field("unreachable", &net.unreachable)
            .finish()
    }
}

impl Net {
    /// True when a listener could take `addr`: none has its port and family with the
    /// same IP, or either side unspecified.
    fn is_free(&self, addr: SocketAddr) -> bool {
        !self.listeners.keys().any(|l| {
            l.port() == addr.port()
                && l.is_ipv4() == addr.is_ipv4()
                && (l.ip() == addr.ip() || l.ip().is_unspecified() || addr.ip().is_unspecified())
        })
    }

    /// The next free port on `ip`.
    fn ephemeral(&mut self, ip: IpAddr) -> io::Result<u16> {
        const COUNT: u16 = u16::MAX - FIRST_EPHEMERAL_PORT + 1;
        for _ in 0..COUNT {
            let port = FIRST_EPHEMERAL_PORT + self.next_port;
            self.next_port = (self.next_port + 1) % COUNT;
            if self.is_free(SocketAddr::new(ip, port)) {
                return Ok(port);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no free port left on the memory network",
        ))
    }

    /// The listener a dial to `addr` reaches: the one on `addr`, or on the unspecified
    /// address of its family and port.
    fn listener_for(&self, addr: SocketAddr) -> Option<&Registration> {
        self.listeners.get(&addr).or_else(|| {
            self.listeners
                .get(&SocketAddr::new(unspecified(addr.ip()), addr.port()))
        })
    }
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn loopback(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    }
}

impl MemoryNetwork {
    /// A new, empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn net(&self) -> MutexGuard<'_, Net> {
        // Every update is a single map or field operation; a poisoned lock is consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Listens on `addr` (port 0 picks a free port). Fails with an error of kind
    /// [`AddrInUse`](io::ErrorKind::AddrInUse) when a listener has the port on the same
    /// IP, or either of them is the unspecified IP of the family. Dropping the listener
    /// frees the address and refuses new dials.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemoryListener> {
        let mut net = self.net();
        let port = match addr.port() {
            0 => net.ephemeral(addr.ip())?,
            p => p,
        };
        let local = SocketAddr::new(addr.ip(), port);
        if !net.is_free(local) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{local} is in use on the memory network"),
            ));
        }
        let id = net.next_listener;
        net.next_listener += 1;
        let (tx, rx) = mpsc::channel(BACKLOG);
        net.listeners.insert(local, Registration { id, tx });
        Ok(MemoryListener {
            net: self.clone(),
            local,
            id,
            rx,
        })
    }

    /// Dials `to` from the IP `from` (the dialer gets an ephemeral port on it) and
    /// returns the dialer's end. Fails at once with an error of kind
    /// [`ConnectionRefused`](io::ErrorKind::ConnectionRefused) when nothing listens on
    /// `to`; waits while the listener's backlog ([`BACKLOG`]) is full; never completes
    /// while `to`'s IP is [unreachable](Self::set_unreachable). `from` and `to` must be
    /// of one family ([`InvalidInput`](io::ErrorKind::InvalidInput) otherwise).
    pub async fn connect(&self, from: IpAddr, to: SocketAddr) -> io::Result<MemoryStream> {
        if from.is_ipv4() != to.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "dialing across address families",
            ));
        }
        let Some((tx, local)) = self.route(from, to)? else {
            // As a SYN nobody answers: the dialer's timeout ends the attempt.
            return std::future::pending().await;
        };
        let (ours, theirs) = tokio::io::duplex(STREAM_BUFFER);
        let accepted = MemoryStream {
            stream: theirs,
            local: to,
            peer: local,
        };
        tx.send(accepted).await.map_err(|_| refused(to))?;
        Ok(MemoryStream {
            stream: ours,
            local,
            peer: to,
        })
    }

    /// Where a dial from `from` to `to` goes, and the dialer's address; `None` while
    /// `to` is unreachable.
    fn route(
        &self,
        from: IpAddr,
        to: SocketAddr,
    ) -> io::Result<Option<(mpsc::Sender<MemoryStream>, SocketAddr)>> {
        let mut net = self.net();
        if net.unreachable.contains(&to.ip()) {
            return Ok(None);
        }
        let Some(reg) = net.listener_for(to) else {
            return Err(refused(to));
        };
        let tx = reg.tx.clone();
        let from = if from.is_unspecified() {
            loopback(from)
        } else {
            from
        };
        let port = net.ephemeral(from)?;
        Ok(Some((tx, SocketAddr::new(from, port))))
    }

    /// Dials `to` from the loopback address of its family (`127.0.0.1` or `::1`); see
    /// [`connect`](Self::connect).
    pub async fn connect_loopback(&self, to: SocketAddr) -> io::Result<MemoryStream> {
        self.connect(loopback(to.ip()), to).await
    }

    /// Makes `ip` unreachable (`true`) or reachable again (`false`). While it is
    /// unreachable, new dials to it hang (as to a host that does not answer) until the
    /// dialer gives up; listeners and connections already made are not affected.
    pub fn set_unreachable(&self, ip: IpAddr, unreachable: bool) {
        let mut net = self.net();
        if unreachable {
            net.unreachable.insert(ip);
        } else {
            net.unreachable.remove(&ip);
        }
    }
}

fn refused(to: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!("nothing listens on {to} on the memory network"),
    )
}

/// A listener on a [`MemoryNetwork`]; dropping it frees its address.
pub struct MemoryListener {
    net: MemoryNetwork,
    local: SocketAddr,
    id: u64,
    rx: mpsc::Receiver<MemoryStream>,
}

impl fmt::Debug for MemoryListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl MemoryListener {
    /// The address it listens on (with the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next connection and the dialer's address. Cancel-safe.
    pub async fn accept(&mut self) -> io::Result<(MemoryStream, SocketAddr)> {
        match self.rx.recv().await {
            Some(s) => {
                let peer = s.peer;
                Ok((s, peer))
            }
            // The network holds the sender while this listener lives.
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        let mut net = self.net.net();
        if net
            .listeners
            .get(&self.local)
            .is_some_and(|r| r.id == self.id)
        {
            net.listeners.remove(&self.local);
        }
    }
}

/// One end of an in-memory connection: a [`DuplexStream`] with the addresses of both
/// ends. Dropping it (or shutting its write side down) is the peer's end of stream.
#[derive(Debug)]
pub struct MemoryStream {
    stream: DuplexStream,
    local: SocketAddr,
    peer: SocketAddr,
}

impl MemoryStream {
    /// This end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
