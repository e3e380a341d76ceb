//! The reconnecting client across a server restart: nothing vanishes. Once over TCP (the
//! same port bound again), once over the in-memory network in virtual time, where the
//! backoff is checked too.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hail_link::memory::MemoryNetwork;
use hail_link::{
    Backoff, Client, ClientConfig, ClientEvent, LinkConfig, LinkConfigError, LinkError, Server,
    ServerConfig, ServerEvent, Transport,
};
use hail_wire::Binary;
use tokio::time::{Instant, timeout};

use crate::common::{client_connected, client_event, lo, server_event, wait_for};

const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(20),
    max: Duration::from_millis(200),
};

/// Sends through an outage of the server at `addr` and back: every message `send`
/// accepted arrives, in order. With `virtual_time`, also checks the attempts made while
/// the server is away and how soon the client is back.
async fn outage_messages_are_delivered_after_reconnect_or_fail(
    link: LinkConfig,
    addr: SocketAddr,
    virtual_time: bool,
) {
    const OUTAGE_SENDS: u32 = 100;
    let server_cfg = ServerConfig::builder().link(link.clone()).build().unwrap();
    let (server, mut events) = Server::bind(addr, server_cfg.clone(), Binary)
        .await
        .unwrap();
    let addr = server.local_addr();
    // Room for about 40 of the 100 outage messages (each 4 + 1 + 12 bytes on the wire).
    let cfg = ClientConfig::builder()
        .link(link)
        .reconnect(Some(BACKOFF))
        .outage_bytes(40 * 17)
        .build()
        .unwrap();
    let (client, mut cev) = Client::connect(addr, cfg, Binary).await.unwrap();
    client_connected(&mut cev).await;
    client.send(Bytes::from_static(b"before")).await.unwrap();
    loop {
        if let ServerEvent::Message { msg, .. } = server_event(&mut events).await {
            assert_eq!(&msg[..], b"before");
            break;
        }
    }

    // Outage: the server goes away; the client notices.
    server.close(Duration::from_secs(1)).await;
    drop(events);
    match client_event(&mut cev).await {
        ClientEvent::Disconnected { .. } => {}
        other => panic!("{other:?}"),
    }
    let mut accepted = Vec::new();
    let mut failed = 0;
    for n in 0..OUTAGE_SENDS {
        let msg = Bytes::from(format!("outage {n:5}"));
        match client.send(msg.clone()).await {
            Ok(()) => accepted.push(msg),
            Err(LinkError::NotConnected) => failed += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(accepted.len() + failed, OUTAGE_SENDS as usize);
    assert!(
        failed > 0 && !accepted.is_empty(),
        "{} accepted, {failed} failed",
        accepted.len()
    );
    if virtual_time {
        // Ten seconds without a server: every attempt is refused at once and none is
        // reported. The delays grow 20, 40, 80, 160, then 200 ms, each drawn from the
        // upper half of its step: between 52 and 102 attempts fit in 10 s.
        assert!(timeout(Duration::from_secs(10), cev.recv()).await.is_err());
        let attempts = client.stats().failed_attempts;
        assert!((51..=103).contains(&attempts), "{attempts} attempts");
    }

    // The server comes back on the same address; the client is back within one delay.
    // Over TCP the port is outside the ephemeral range (`port_outside_the_ephemeral_range`),
    // so nobody's connection took it meanwhile, and `close` returned once the old listener
    // was gone: bound again at the first try.
    let restarted = Instant::now();
    let (server, mut events) = Server::bind(addr, server_cfg.clone(), Binary)
        .await
        .unwrap_or_else(|e| panic!("bind {addr} again: {e}"));
    match client_event(&mut cev).await {
        ClientEvent::Connected { addr: a, .. } => assert_eq!(a, addr),
        other => panic!("{other:?}"),
    }
    if virtual_time {
        assert!(
            restarted.elapsed() <= BACKOFF.max,
            "{:?}",
            restarted.elapsed()
        );
    }
    // Every accepted outage message arrives, in order; nothing else.
    for want in &accepted {
        loop {
            match server_event(&mut events).await {
                ServerEvent::Message { msg, .. } => {
                    assert_eq!(&msg, want);
                    break;
                }
                ServerEvent::Connected { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
    client.send(Bytes::from_static(b"after")).await.unwrap();
    loop {
        if let ServerEvent::Message { msg, .. } = server_event(&mut events).await {
            assert_eq!(&msg[..], b"after");
            break;
        }
    }
    let stats = client.stats();
    assert_eq!(stats.reconnects, 1);
    assert_eq!(stats.buffered_during_outage, accepted.len() as u64);
    assert_eq!(client.close().await, 0);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_over_tcp_and_the_same_port_again() {
    let addr = port_outside_the_ephemeral_range();
    outage_messages_are_delivered_after_reconnect_or_fail(LinkConfig::default(), addr, false).await;
}

/// A free loopback address whose port is outside the kernel's ephemeral range (below it,
/// or above it where below leaves no room). While the server is away no connection's
/// local port can take it: not another test's, nor one of the client's own attempts
/// (which would connect to itself, a TCP simultaneous open), so the restarted server
/// binds it again at the first try.
fn port_outside_the_ephemeral_range() -> SocketAddr {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = range
        .split_whitespace()
        .filter_map(|p| p.parse::<u16>().ok());
    let (low, high) = (
        bounds.next().unwrap_or(32_768),
        bounds.next().unwrap_or(60_999),
    );
    // Away from the well-known and registered ports most services take.
    let ports: Vec<u16> = (10_000..low)
        .chain(high.saturating_add(1)..=u16::MAX)
        .collect();
    assert!(
        !ports.is_empty(),
        "no port outside the ephemeral range {range:?}"
    );
    // Where to start: the process id spreads test runs that go at once.
    let start = std::process::id() as usize * 7_919;
    (0..ports.len().min(1_000))
        .map(|k| SocketAddr::from(([127, 0, 0, 1], ports[(start + k) % ports.len()])))
        .find(|&addr| std::net::TcpListener::bind(addr).is_ok())
        .expect("a free port outside the ephemeral range")
}

#[tokio::test(start_paused = true)]
async fn outage_in_memory_with_the_backoff_in_virtual_time() {
    let net = MemoryNetwork::new();
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    let addr = "10.0.0.1:7000".parse().unwrap();
    outage_messages_are_delivered_after_reconnect_or_fail(link, addr, true).await;
}

#[tokio::test]
async fn without_reconnect_sends_fail_after_a_loss() {
    let (server, _events) = Server::bind(lo(), ServerConfig::default(), Binary)
        .await
        .unwrap();
    let cfg = ClientConfig::builder().reconnect(None).build().unwrap();
    let (client, mut cev) = Client::connect(server.local_addr(), cfg, Binary)
        .await
        .unwrap();
    client_connected(&mut cev).await;
    drop(server);
    assert!(matches!(
        client_event(&mut cev).await,
        ClientEvent::Disconnected { .. }
    ));
    let err = client.send(Bytes::from_static(b"x")).await.unwrap_err();
    assert!(
        matches!(err, LinkError::Closed(_) | LinkError::NotConnected),
        "{err:?}"
    );
    // The event stream ends once the client has given up.
    assert!(cev.recv().await.is_none());
}

/// A device that boots before its server: with `connect_in_background`, `connect` returns
/// at once, sends wait in the outage buffer, failed tries are counted, and the first
/// connection delivers them in order once the server is up.
#[tokio::test(start_paused = true)]
async fn a_client_started_before_its_server_connects_when_it_comes_up() {
    let net = MemoryNetwork::new();
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    let at: SocketAddr = "10.0.0.1:7000".parse().unwrap();
    let (client, mut cev) = Client::connect(
        at,
        ClientConfig::builder()
            .link(link.clone())
            .reconnect(Some(BACKOFF))
            .connect_in_background(true)
            .build()
            .unwrap(),
        Binary,
    )
    .await
    .expect("returns at once, disconnected");
    assert!(!client.is_connected());
    for i in 0..3u8 {
        client.send(Bytes::from(vec![i])).await.expect("buffered");
    }
    // Tries fail (nobody listens) and are counted, on the virtual clock.
    wait_for("three failed tries", || client.stats().failed_attempts >= 3).await;
    assert!(!client.is_connected());

    let (_server, mut sev) = Server::bind(
        at,
        ServerConfig::builder().link(link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    client_connected(&mut cev).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        if let ServerEvent::Message { msg, .. } = server_event(&mut sev).await {
            got.push(msg[0]);
        }
    }
    assert_eq!(got, [0, 1, 2], "buffered sends arrive first, in order");
    assert_eq!(client.stats().buffered_during_outage, 3);
    assert_eq!(
        client.stats().reconnects,
        0,
        "the first connection is no reconnection"
    );
}

#[test]
fn a_background_first_connect_needs_reconnection_on() {
    let config = ClientConfig::builder()
        .reconnect(None)
        .connect_in_background(true);
    assert_eq!(
        config.build().unwrap_err(),
        LinkConfigError::BackgroundNeedsReconnect
    );
}
