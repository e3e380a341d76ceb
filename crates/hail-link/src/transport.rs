//! Where links listen and dial: TCP (the default) or an in-memory network.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};

use crate::memory::{MemoryListener, MemoryNetwork, MemoryStream};
use crate::stream::{self, ReadHalf, WriteHalf};

/// What a server listens on and a client dials over: TCP (the default), or a
/// [`MemoryNetwork`] in this process. Set it with
/// [`LinkConfigBuilder::transport`](crate::LinkConfigBuilder::transport); everything above the byte
/// stream is the same on both.
///
/// ```
/// use hail_link::memory::MemoryNetwork;
/// use hail_link::{LinkConfig, Transport};
///
/// let net = MemoryNetwork::new();
/// let in_memory = LinkConfig::builder().transport(Transport::memory(&net)).build()?;
/// let over_tcp = LinkConfig::default(); // Transport::tcp()
/// # let _ = (in_memory, over_tcp);
/// # Ok::<(), hail_link::LinkConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Transport {
    kind: Kind,
}

#[derive(Debug, Clone, Default)]
enum Kind {
    #[default]
    Tcp,
    Memory {
        net: MemoryNetwork,
        /// The IP dials come from; `None`: the loopback address of the target's family.
        from: Option<IpAddr>,
    },
}

impl Transport {
    /// TCP sockets (the default), with `TCP_NODELAY` on every connection.
    pub fn tcp() -> Self {
        Self { kind: Kind::Tcp }
    }

    /// The in-memory network `net`. Dials come from the loopback address of the
    /// target's family (`127.0.0.1` or `::1`), each from an ephemeral port.
    pub fn memory(net: &MemoryNetwork) -> Self {
        Self {
            kind: Kind::Memory {
                net: net.clone(),
                from: None,
            },
        }
    }

    /// The in-memory network `net`, dialing from `ip` (so the servers it dials see this
    /// host's address; a target of the other family fails with
    /// [`InvalidInput`](io::ErrorKind::InvalidInput)).
    pub fn memory_from(net: &MemoryNetwork, ip: IpAddr) -> Self {
        Self {
            kind: Kind::Memory {
                net: net.clone(),
                from: Some(ip),
            },
        }
    }

    /// True for an in-memory transport.
    pub fn is_memory(&self) -> bool {
        matches!(self.kind, Kind::Memory { .. })
    }

    /// Listens on `addr`.
    pub(crate) async fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
        match &self.kind {
            Kind::Tcp => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
            Kind::Memory { net, .. } => Ok(Listener::Memory(net.bind(addr)?)),
        }
    }

    /// Dials `addr` (no deadline of its own: the caller bounds it).
    pub(crate) async fn connect(&self, addr: SocketAddr) -> io::Result<Link> {
        match &self.kind {
            Kind::Tcp => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Link::tcp(stream)
            }
            Kind::Memory { net, from } => {
                let stream = match from {
                    Some(ip) => net.connect(*ip, addr).await?,
                    None => net.connect_loopback(addr).await?,
                };
                Ok(Link::memory(stream))
            }
        }
    }
}

/// A connected byte stream, split, and the addresses of its ends, before the handshake.
pub(crate) struct Link {
    pub(crate) rd: ReadHalf,
    pub(crate) wr: WriteHalf,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
}

impl Link {
    fn tcp(stream: TcpStream) -> io::Result<Self> {
        let (peer, local) = (stream.peer_addr()?, stream.local_addr()?);
        Ok(Self::with(stream::split_tcp(stream), peer, local))
    }

    fn memory(stream: MemoryStream) -> Self {
        let (peer, local) = (stream.peer_addr(), stream.local_addr());
        Self::with(stream::split_boxed(Box::new(stream)), peer, local)
    }

    fn with((rd, wr): (ReadHalf, WriteHalf), peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            rd,
            wr,
            peer,
            local,
        }
    }
}

/// A server's listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Memory(MemoryListener),
}

impl Listener {
    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr(),
            Self::Memory(l) => Ok(l.local_addr()),
        }
    }

    /// The next connection. Cancel-safe. A TCP connection whose socket cannot be set up
    /// (`TCP_NODELAY`, its addresses) is dropped, and the next one taken.
    pub(crate) async fn accept(&mut self) -> io::Result<Link> {
        match self {
            Self::Tcp(l) => loop {
                let (stream, peer) = l.accept().await?;
                match stream.set_nodelay(true).and_then(|()| stream.local_addr()) {
                    Ok(local) => return Ok(Link::with(stream::split_tcp(stream), peer, local)),
                    Err(e) => tracing::debug!(%peer, error = %e, "accepted socket dropped"),
                }
            },
            Self::Memory(l) => Ok(Link::memory(l.accept().await?.0)),
        }
    }
}
