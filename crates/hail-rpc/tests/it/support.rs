//! How the tests connect two peers: over real loopback `hail-link` connections, or in
//! memory for the tests that run on tokio's paused clock (a paused clock would fire the
//! link's heartbeat deadlines while sockets wait).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hail_link::{Backoff, ClientConfig, ClientId, ServerConfig};
use hail_rpc::{
    Handlers, RpcClient, RpcConfig, RpcPeer, RpcServer, RpcServerEvent, RpcServerEvents, memory,
};
use tokio::sync::Semaphore;

/// Loopback only.
pub(crate) fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a valid address")
}

/// A client config that reconnects quickly.
pub(crate) fn fast_client() -> ClientConfig {
    ClientConfig::builder()
        .reconnect(Some(Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        }))
        .build()
        .unwrap()
}

/// Keeps a connection up; `kill` drops it as a dead server would.
pub(crate) enum Link {
    Tcp {
        server: Option<RpcServer>,
        events: RpcServerEvents,
        client: RpcClient,
        id: ClientId,
    },
    Memory(memory::MemoryLink),
}

impl Link {
    /// Drops the connection at once: over TCP, the whole server goes away.
    pub(crate) fn kill(&mut self) {
        match self {
            Self::Tcp { server, .. } => drop(server.take()),
            Self::Memory(link) => link.kill(),
        }
    }

    /// The server, over TCP.
    pub(crate) fn server(&self) -> &RpcServer {
        match self {
            Self::Tcp {
                server: Some(s), ..
            } => s,
            _ => panic!("no server on this link"),
        }
    }

    /// The server's events, over TCP.
    pub(crate) fn server_events(&mut self) -> &mut RpcServerEvents {
        match self {
            Self::Tcp { events, .. } => events,
            Self::Memory(_) => panic!("no server on this link"),
        }
    }

    /// The client's id on the server, over TCP.
    pub(crate) fn client_id(&self) -> ClientId {
        match self {
            Self::Tcp { id, .. } => *id,
            Self::Memory(_) => panic!("no client id in memory"),
        }
    }

    /// The client, over TCP.
    pub(crate) fn client(&self) -> &RpcClient {
        match self {
            Self::Tcp { client, .. } => client,
            Self::Memory(_) => panic!("no client in memory"),
        }
    }
}

/// A client peer and its server-side peer over loopback TCP, default limits.
pub(crate) async fn pair() -> (RpcPeer, RpcPeer, Link) {
    pair_with(RpcConfig::default(), RpcConfig::default()).await
}

/// A client peer (limits `a`) and its server-side peer (limits `b`) over loopback TCP.
pub(crate) async fn pair_with(a: RpcConfig, b: RpcConfig) -> (RpcPeer, RpcPeer, Link) {
    let (server, mut events) = RpcServer::listen(localhost(), ServerConfig::default(), b)
        .await
        .expect("listen on loopback");
    let client = RpcClient::connect(server.local_addr(), fast_client(), a)
        .await
        .expect("connect over loopback");
    let (id, server_peer) = next_connected(&mut events).await;
    let client_peer = client.peer().clone();
    (
        client_peer,
        server_peer,
        Link::Tcp {
            server: Some(server),
            events,
            client,
            id,
        },
    )
}

/// Waits for the next client to connect to the server of `events`.
pub(crate) async fn next_connected(events: &mut RpcServerEvents) -> (ClientId, RpcPeer) {
    let wait = async {
        loop {
            match events.recv().await {
                Some(RpcServerEvent::Connected { id, peer, .. }) => return (id, peer),
                Some(_) => continue,
                None => panic!("server stopped"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("a client connects")
}

/// Two peers joined in memory (no sockets), for tests on the paused clock.
pub(crate) fn memory_pair_with(a: RpcConfig, b: RpcConfig) -> (RpcPeer, RpcPeer, Link) {
    let (a, b, link) = memory::pair(a, b);
    (a, b, Link::Memory(link))
}

/// [`memory_pair_with`] with default limits.
pub(crate) fn memory_pair() -> (RpcPeer, RpcPeer, Link) {
    memory_pair_with(RpcConfig::default(), RpcConfig::default())
}

/// A handler the test holds: it tells when each call starts, and answers (its `u32`
/// argument) only when the test opens the gate for it.
pub(crate) struct Gate {
    started: Arc<Semaphore>,
    open: Arc<Semaphore>,
}

impl Gate {
    /// Binds the gated handler to `method` in `handlers`.
    pub(crate) fn bind(handlers: &Handlers, method: &'static str) -> Self {
        let gate = Self {
            started: Arc::new(Semaphore::new(0)),
            open: Arc::new(Semaphore::new(0)),
        };
        let (started, open) = (gate.started.clone(), gate.open.clone());
        handlers
            .bind(method, move |i: u32| {
                let (started, open) = (started.clone(), open.clone());
                async move {
                    started.add_permits(1);
                    open.acquire().await.map_err(|e| e.to_string())?.forget();
                    Ok::<_, String>(i)
                }
            })
            .expect("a fresh method");
        gate
    }

    /// Waits (10 s at most) until `n` more calls have started.
    pub(crate) async fn started(&self, n: u32) {
        tokio::time::timeout(Duration::from_secs(10), self.started.acquire_many(n))
            .await
            .expect("the calls reach their handler")
            .expect("the semaphore stays open")
            .forget();
    }

    /// Lets `n` calls finish.
    pub(crate) fn open(&self, n: usize) {
        self.open.add_permits(n);
    }
}
