//! The link's timers (`src/timing.rs`) over the in-memory network in paused (virtual)
//! time: heartbeats and dead peers, handshake deadlines, the authentication penalty. The
//! durations asserted here are virtual, so exact. (Reconnection backoff and shutdown
//! deadlines: `reconnect.rs`, `shutdown.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hail_link::memory::{MemoryListener, MemoryNetwork, MemoryStream};
use hail_link::{
    Backoff, Client, ClientConfig, ClientEvent, CloseReason, Connection, DEFAULT_DEAD_AFTER,
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, LinkConfig, LinkError, Server,
    ServerConfig, ServerEvent, ServerEvents, Transport,
};
use hail_wire::Binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

use crate::common::{
    HELLO, WELCOME, client_connected, client_event, server_event, wait_for, within,
};

const HEARTBEAT: &[u8] = b"\x00\x00\x00\x01\x01";

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn mem(net: &MemoryNetwork) -> LinkConfig {
    LinkConfig::builder()
        .transport(Transport::memory(net))
        .build()
        .unwrap()
}

async fn server(net: &MemoryNetwork, addr: SocketAddr) -> (Server, ServerEvents<Bytes>) {
    Server::bind(
        addr,
        ServerConfig::builder().link(mem(net)).build().unwrap(),
        Binary,
    )
    .await
    .unwrap()
}

/// A peer that says hello, reads the welcome, then stays silent.
async fn silent_hail_client(net: &MemoryNetwork, to: SocketAddr) -> MemoryStream {
    let mut s = net.connect_loopback(to).await.unwrap();
    s.write_all(HELLO).await.unwrap();
    let mut w = [0u8; 6];
    s.read_exact(&mut w).await.unwrap();
    assert_eq!(&w, WELCOME);
    s
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_after_the_dead_time_having_had_heartbeats() {
    let net = MemoryNetwork::new();
    let (_server, mut events) = server(&net, at("10.0.0.1:7000")).await;
    let mut silent = silent_hail_client(&net, at("10.0.0.1:7000")).await;
    let t = Instant::now();
    let ServerEvent::Connected { id, .. } = server_event(&mut events).await else {
        panic!("connected first")
    };
    match server_event(&mut events).await {
        ServerEvent::Closed { id: closed, reason } => {
            assert_eq!(closed, id);
            assert!(matches!(reason, CloseReason::Timeout), "{reason:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(within(t.elapsed(), DEFAULT_DEAD_AFTER), "{:?}", t.elapsed());
    // Meanwhile the server sent a heartbeat for every second of silence on its side.
    let mut wire = Vec::new();
    silent.read_to_end(&mut wire).await.unwrap();
    assert!(wire.len() >= 2 * HEARTBEAT.len(), "{wire:?}");
    assert!(
        wire.chunks(HEARTBEAT.len()).all(|f| f == HEARTBEAT),
        "{wire:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_finds_a_silent_server_dead_and_reconnects() {
    let net = MemoryNetwork::new();
    let addr = at("10.0.0.1:7000");
    // A server that welcomes every client, then never says anything again.
    let mut listener = net.bind(addr).unwrap();
    let silent_server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut hello = vec![0u8; HELLO.len()];
            s.read_exact(&mut hello).await.unwrap();
            assert_eq!(hello, HELLO);
            s.write_all(WELCOME).await.unwrap();
            held.push(s);
        }
    });
    let backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_millis(200),
    };
    let cfg = ClientConfig::builder()
        .link(mem(&net))
        .reconnect(Some(backoff))
        .build()
        .unwrap();
    let (client, mut cev) = Client::connect(addr, cfg, Binary).await.unwrap();
    let t = Instant::now();
    client_connected(&mut cev).await;
    match client_event(&mut cev).await {
        ClientEvent::Disconnected { reason } => {
            assert!(matches!(reason, CloseReason::Timeout), "{reason:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(within(t.elapsed(), DEFAULT_DEAD_AFTER), "{:?}", t.elapsed());
    let t = Instant::now();
    client_connected(&mut cev).await;
    // One backoff delay: between half the step and the step.
    let after = t.elapsed();
    assert!(
        after >= Duration::from_millis(100) && after <= Duration::from_millis(200),
        "{after:?}"
    );
    assert_eq!(client.stats().reconnects, 1);
    silent_server.abort();
}

#[tokio::test(start_paused = true)]
async fn an_idle_link_stays_up_on_heartbeats_alone() {
    let net = MemoryNetwork::new();
    let (server, mut events) = server(&net, at("10.0.0.1:7000")).await;
    let (client, mut cev) = Client::connect(
        server.local_addr(),
        ClientConfig::builder().link(mem(&net)).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    assert!(matches!(
        server_event(&mut events).await,
        ServerEvent::Connected { .. }
    ));
    client_connected(&mut cev).await;
    let conn = client.connection().unwrap();
    let idle = 10 * DEFAULT_DEAD_AFTER;
    assert!(
        timeout(idle, conn.closed()).await.is_err(),
        "closed while idle: {:?}",
        conn.close_reason()
    );
    // One heartbeat per interval of silence on each side kept it up, and nothing else
    // happened.
    let beats = (idle.as_millis() / DEFAULT_HEARTBEAT_INTERVAL.as_millis()) as u64;
    assert!(
        conn.stats().frames_written >= beats - 1,
        "{:?}",
        conn.stats()
    );
    let (id, _) = server.clients()[0];
    let server_side = server.connection(id).unwrap().stats();
    assert!(server_side.frames_written >= beats - 1, "{server_side:?}");
    assert_eq!(conn.stats().messages_received, 0);
    assert!(cev.try_recv().is_none());
    assert!(events.try_recv().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_handshake_deadline_holds_on_both_sides() {
    let net = MemoryNetwork::new();
    let (server, _events) = server(&net, at("10.0.0.1:7000")).await;
    // A dialer that never says hello is dropped at the deadline and counted.
    let mut mute = net.connect_loopback(server.local_addr()).await.unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(mute.read(&mut buf).await.unwrap(), 0);
    assert!(
        within(t.elapsed(), DEFAULT_HANDSHAKE_TIMEOUT),
        "{:?}",
        t.elapsed()
    );
    wait_for("the failure is counted", || {
        server.stats().handshake_failures == 1
    })
    .await;
    assert_eq!(server.stats().accepted, 0);

    // A listener that takes the connection and never answers: the dialer gives up at
    // its deadline.
    let _never: MemoryListener = net.bind(at("10.0.0.2:7000")).unwrap();
    let t = Instant::now();
    let err = Connection::connect(at("10.0.0.2:7000"), mem(&net), Binary)
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::HandshakeTimeout), "{err:?}");
    assert!(
        within(t.elapsed(), DEFAULT_HANDSHAKE_TIMEOUT),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_authentication_failures_are_answered_ever_more_slowly() {
    let net = MemoryNetwork::new();
    let right = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .psk([1; 32])
        .build()
        .unwrap();
    let wrong = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .psk([2; 32])
        .build()
        .unwrap();
    let (server, _events) = Server::bind(
        at("10.0.0.1:7000"),
        ServerConfig::builder().link(right.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    // No penalty for the first failure, then 100 ms doubling per failure from the address.
    for (n, penalty) in [0u64, 100, 200, 400].into_iter().enumerate() {
        let t = Instant::now();
        let err = Connection::connect(addr, wrong.clone(), Binary)
            .await
            .unwrap_err();
        assert!(matches!(err, LinkError::AuthFailed), "{err:?}");
        let want = Duration::from_millis(penalty);
        assert!(within(t.elapsed(), want), "failure {n}: {:?}", t.elapsed());
        wait_for("the failure is counted", || {
            server.stats().auth_failures == n as u64 + 1
        })
        .await;
    }
    // The right key waits out the address's penalty too, then clears it.
    let t = Instant::now();
    let (conn, _incoming) = Connection::connect(addr, right.clone(), Binary)
        .await
        .unwrap();
    assert!(
        within(t.elapsed(), Duration::from_millis(800)),
        "{:?}",
        t.elapsed()
    );
    conn.close();
    let t = Instant::now();
    let _again = Connection::connect(addr, right, Binary).await.unwrap();
    assert!(within(t.elapsed(), Duration::ZERO), "{:?}", t.elapsed());
}
