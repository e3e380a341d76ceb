//! Graceful shutdown delivers in-flight messages both ways, and ends at its deadline.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hail_link::memory::MemoryNetwork;
use hail_link::{
    Client, ClientConfig, ClientEvent, CloseReason, LinkConfig, Server, ServerConfig, ServerEvent,
    Transport,
};
use hail_wire::Binary;
use tokio::time::Instant;

use crate::common::{LIMIT, client_event, lo, server_event, wait_for, within};

fn memory() -> (LinkConfig, SocketAddr) {
    let net = MemoryNetwork::new();
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    (link, "10.0.0.1:7000".parse().unwrap())
}

async fn shutdown_delivers_in_flight_messages_before_closing(link: LinkConfig, at: SocketAddr) {
    const N: u32 = 2000;
    let (server, mut events) = Server::bind(
        at,
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let cfg = ClientConfig::builder()
        .link(link)
        .reconnect(None)
        .build()
        .unwrap();
    let (client, mut cev) = Client::connect(server.local_addr(), cfg, Binary)
        .await
        .unwrap();
    let ServerEvent::Connected { id, .. } = server_event(&mut events).await else {
        panic!()
    };
    // Both directions have messages queued when the shutdown starts.
    for n in 0..N {
        client
            .send(Bytes::copy_from_slice(&n.to_be_bytes()))
            .await
            .unwrap();
        server
            .send_to(id, Bytes::copy_from_slice(&n.to_be_bytes()))
            .await
            .unwrap();
    }
    let server_side = tokio::spawn(async move {
        let mut got = 0u32;
        loop {
            match server_event(&mut events).await {
                ServerEvent::Message { msg, .. } => {
                    assert_eq!(&msg[..], &got.to_be_bytes()[..]);
                    got += 1;
                }
                ServerEvent::Closed { reason, .. } => {
                    assert!(matches!(reason, CloseReason::Shutdown), "{reason:?}");
                    return got;
                }
                other => panic!("{other:?}"),
            }
        }
    });
    // The client drains its events while the server shuts down.
    let shutdown = tokio::spawn(server.close(Duration::from_secs(5)));
    let mut got = 0u32;
    loop {
        match client_event(&mut cev).await {
            ClientEvent::Connected { .. } => {}
            ClientEvent::Message(m) => {
                assert_eq!(&m[..], &got.to_be_bytes()[..]);
                got += 1;
            }
            ClientEvent::Disconnected { reason } => {
                assert!(matches!(reason, CloseReason::Shutdown), "{reason:?}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, N, "client received every queued message");
    tokio::time::timeout(LIMIT, shutdown)
        .await
        .unwrap()
        .unwrap();
    let server_got = tokio::time::timeout(LIMIT, server_side)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        server_got, N,
        "server delivered every message the client sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_messages_survive_shutdown_over_tcp() {
    shutdown_delivers_in_flight_messages_before_closing(LinkConfig::default(), lo()).await;
}

#[tokio::test(start_paused = true)]
async fn in_flight_messages_survive_shutdown_in_memory() {
    let (link, at) = memory();
    shutdown_delivers_in_flight_messages_before_closing(link, at).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_at_its_deadline_when_nobody_takes_events() {
    let (link, at) = memory();
    let cfg = ServerConfig::builder()
        .link(link.clone())
        .event_capacity(4)
        .build()
        .unwrap();
    let (server, events) = Server::bind(at, cfg, Binary).await.unwrap();
    let ccfg = ClientConfig::builder()
        .link(link)
        .reconnect(None)
        .build()
        .unwrap();
    let (client, _cev) = Client::connect(server.local_addr(), ccfg, Binary)
        .await
        .unwrap();
    for n in 0..100u32 {
        client
            .send(Bytes::copy_from_slice(&n.to_be_bytes()))
            .await
            .unwrap();
    }
    // The reader has decoded more than the stream holds: it waits for room that never
    // comes.
    wait_for("one client", || server.clients().len() == 1).await;
    let (id, _) = server.clients()[0];
    let conn = server.connection(id).unwrap();
    wait_for("a full event stream", || conn.stats().messages_received > 4).await;
    // The event stream is full and never read: the deadline still ends the shutdown.
    let deadline = Duration::from_millis(200);
    let t = Instant::now();
    server.close(deadline).await;
    assert!(within(t.elapsed(), deadline), "{:?}", t.elapsed());
    drop(events);
}

/// `close` returns once the listener is gone: its address can be bound again at once.
/// On one thread the aborted accept task only ends when the runtime next gets to it, so
/// without `close` waiting for it the first bind below fails with `AddrInUse` every time.
#[tokio::test]
async fn the_address_is_free_when_close_returns() {
    for round in 0..20 {
        let cfg = ServerConfig::builder().build().unwrap();
        let (server, _events) = Server::bind(lo(), cfg, Binary).await.unwrap();
        let addr = server.local_addr();
        server.close(Duration::from_secs(1)).await;
        if let Err(e) = std::net::TcpListener::bind(addr) {
            panic!("round {round}: {addr} still bound after close: {e}");
        }
    }
}

/// The same in memory: the address is bound again by a server of its own.
#[tokio::test]
async fn the_memory_address_is_free_when_close_returns() {
    let (link, at) = memory();
    for round in 0..20 {
        let cfg = ServerConfig::builder().link(link.clone()).build().unwrap();
        let (server, _events) = Server::bind(at, cfg, Binary)
            .await
            .unwrap_or_else(|e| panic!("round {round}: bind {at}: {e}"));
        server.close(Duration::from_secs(1)).await;
    }
}
