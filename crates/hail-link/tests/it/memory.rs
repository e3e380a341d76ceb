//! The in-memory network itself: addresses, refusals, backpressure, unreachable hosts;
//! and a secured link over it. All in paused time.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use hail_link::memory::{BACKLOG, FIRST_EPHEMERAL_PORT, MemoryNetwork, STREAM_BUFFER};
use hail_link::{
    Client, ClientConfig, Connection, LinkConfig, LinkError, Server, ServerConfig, ServerEvent,
    Transport,
};
use hail_wire::Binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::common::{client_connected, client_message, server_event, within};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn dials_without_a_listener_are_refused_like_tcp() {
    let net = MemoryNetwork::new();
    let target = addr("127.0.0.1:7000");
    let e = net.connect_loopback(target).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);

    let mut listener = net.bind(target).unwrap();
    let mut dialer = net.connect_loopback(target).await.unwrap();
    let (mut accepted, peer) = listener.accept().await.unwrap();
    // The accepted side sees the dialer's address: its IP and an ephemeral port.
    assert_eq!(peer, dialer.local_addr());
    assert_eq!(peer.ip(), ip("127.0.0.1"));
    assert!(peer.port() >= FIRST_EPHEMERAL_PORT);
    assert_eq!(accepted.local_addr(), target);
    assert_eq!(dialer.peer_addr(), target);
    dialer.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    accepted.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    // Dropping one end is the other's end of stream.
    drop(accepted);
    assert_eq!(dialer.read(&mut buf).await.unwrap(), 0);

    // A dropped listener refuses new dials, and hail-link reports it as TCP's refusal.
    drop(listener);
    let e = net.connect_loopback(target).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    match Connection::connect(target, link, Binary).await {
        Err(LinkError::Io(e)) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn ports_addresses_and_families() {
    let net = MemoryNetwork::new();
    let a = net.bind(addr("10.0.0.1:0")).unwrap();
    assert!(a.local_addr().port() >= FIRST_EPHEMERAL_PORT);
    assert_eq!(
        net.bind(a.local_addr()).unwrap_err().kind(),
        ErrorKind::AddrInUse
    );
    // The port is free on another IP, taken for the unspecified IP of the family.
    let other_ip = net
        .bind(SocketAddr::new(ip("10.0.0.2"), a.local_addr().port()))
        .unwrap();
    let wildcard = SocketAddr::new(ip("0.0.0.0"), a.local_addr().port());
    assert_eq!(net.bind(wildcard).unwrap_err().kind(), ErrorKind::AddrInUse);
    drop((a, other_ip));

    // IPv6, and an unspecified listener taking dials to any IP of its family.
    let mut any6 = net.bind(addr("[::]:9000")).unwrap();
    let d1 = net
        .connect(ip("fd00::1"), addr("[fd00::7]:9000"))
        .await
        .unwrap();
    let d2 = net
        .connect(ip("fd00::1"), addr("[fd00::7]:9000"))
        .await
        .unwrap();
    let (s1, p1) = any6.accept().await.unwrap();
    let (_s2, p2) = any6.accept().await.unwrap();
    assert_eq!((p1, p2), (d1.local_addr(), d2.local_addr()));
    assert_ne!(p1, p2, "each dial has a port of its own");
    assert_eq!(s1.local_addr(), addr("[fd00::7]:9000"));
    let e = net
        .connect(ip("10.0.0.1"), addr("[fd00::7]:9000"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    // A client dialing from its host's IP is seen with that IP by the server.
    let host = ip("10.0.0.3");
    let server_link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        addr("10.0.0.9:0"),
        ServerConfig::builder().link(server_link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let client_link = LinkConfig::builder()
        .transport(Transport::memory_from(&net, host))
        .build()
        .unwrap();
    let (client, _cev) = Client::connect(
        server.local_addr(),
        ClientConfig::builder().link(client_link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let ServerEvent::Connected { addr: seen, .. } = server_event(&mut events).await else {
        panic!("connected first")
    };
    let conn = client.connection().unwrap();
    assert_eq!(seen, conn.local_addr());
    assert_eq!(seen.ip(), host);
    assert_eq!(conn.peer_addr(), server.local_addr());
}

#[tokio::test(start_paused = true)]
async fn a_stream_buffers_its_bound_then_the_writer_waits() {
    let net = MemoryNetwork::new();
    let mut listener = net.bind(addr("127.0.0.1:7001")).unwrap();
    let mut dialer = net.connect_loopback(listener.local_addr()).await.unwrap();
    let (mut accepted, _) = listener.accept().await.unwrap();
    let data = vec![0xa5u8; STREAM_BUFFER + 1];
    // Nobody reads: the whole buffer is taken, the last byte waits (for an hour, in
    // virtual time).
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), dialer.write_all(&data))
            .await
            .is_err()
    );
    let mut got = vec![0u8; STREAM_BUFFER];
    accepted.read_exact(&mut got).await.unwrap();
    assert!(got.iter().all(|&b| b == 0xa5));
    // Room again: more goes through.
    dialer.write_all(b"z").await.unwrap();
    let mut z = [0u8; 1];
    accepted.read_exact(&mut z).await.unwrap();
    assert_eq!(&z, b"z");
}

#[tokio::test(start_paused = true)]
async fn a_full_backlog_holds_the_next_dial_until_one_is_accepted() {
    let net = MemoryNetwork::new();
    let mut listener = net.bind(addr("127.0.0.1:7002")).unwrap();
    let to = listener.local_addr();
    let mut waiting = Vec::new();
    for _ in 0..BACKLOG {
        waiting.push(net.connect_loopback(to).await.unwrap());
    }
    let mut next = tokio::spawn({
        let net = net.clone();
        async move { net.connect_loopback(to).await }
    });
    // An hour of virtual time: the dial past the backlog waits.
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), &mut next)
            .await
            .is_err()
    );
    let _first = listener.accept().await.unwrap();
    let last = tokio::time::timeout(crate::common::LIMIT, next)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(last.peer_addr(), to);
}

#[tokio::test(start_paused = true)]
async fn dials_to_an_unreachable_host_hang_until_their_timeout() {
    let net = MemoryNetwork::new();
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    let (server, _events) = Server::bind(
        addr("10.0.0.1:7000"),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    net.set_unreachable(ip("10.0.0.1"), true);
    let cfg = ClientConfig::builder()
        .link(link.clone())
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let t = Instant::now();
    match Client::connect(server.local_addr(), cfg.clone(), Binary).await {
        Err(LinkError::Io(e)) => assert_eq!(e.kind(), ErrorKind::TimedOut),
        other => panic!("{other:?}"),
    }
    assert!(
        within(t.elapsed(), Duration::from_secs(2)),
        "{:?}",
        t.elapsed()
    );
    net.set_unreachable(ip("10.0.0.1"), false);
    let (client, mut cev) = Client::connect(server.local_addr(), cfg, Binary)
        .await
        .unwrap();
    client_connected(&mut cev).await;
    assert!(client.is_connected());
}

#[tokio::test(start_paused = true)]
async fn a_secured_link_runs_over_memory_unchanged() {
    let net = MemoryNetwork::new();
    let link = LinkConfig::builder()
        .psk([9; 32])
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        addr("[::1]:7000"),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let (client, mut cev) = Client::connect(
        server.local_addr(),
        ClientConfig::builder().link(link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    assert!(client.connection().unwrap().is_secure());
    // Larger than a sealed record and than the stream's buffer.
    let big = Bytes::from(vec![0x5a; 300_000]);
    client.send(big.clone()).await.unwrap();
    let id = loop {
        if let ServerEvent::Message { id, msg } = server_event(&mut events).await {
            assert_eq!(msg, big);
            break id;
        }
    };
    server.send_to(id, big.clone()).await.unwrap();
    assert_eq!(client_message(&mut cev).await, big);
    // A wrong key fails on both sides, as over TCP.
    let wrong = LinkConfig::builder()
        .psk([8; 32])
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    let err = Connection::connect(server.local_addr(), wrong, Binary)
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::AuthFailed), "{err:?}");
    crate::common::wait_for("the server counts the failure", || {
        server.stats().auth_failures == 1
    })
    .await;
}

/// A message sent in parts arrives as one message of their total length; one too long for
/// the frame limit is refused whole and the link goes on; a full queue refuses
/// `try_send_parts` at once, and nothing half-queued ever goes out.
#[tokio::test(start_paused = true)]
async fn a_message_in_parts_arrives_whole() {
    let net = MemoryNetwork::new();
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .max_frame_len(64)
        .queue_bytes(256)
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        addr("127.0.0.1:7010"),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let (_client, mut cev) = Client::connect(
        server.local_addr(),
        ClientConfig::builder().link(link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    client_connected(&mut cev).await;
    let ServerEvent::Connected { id, .. } = server_event(&mut events).await else {
        panic!("connected first")
    };
    let conn = server.connection(id).unwrap();
    conn.send_parts(&[b"M", b"hello"]).await.unwrap();
    assert!(matches!(
        conn.send_parts(&[b"M", &[0u8; 64]]).await,
        Err(LinkError::Encode(_))
    ));
    conn.try_send_parts(&[b"", b"two", b""]).unwrap();
    assert_eq!(
        client_message(&mut cev).await,
        Bytes::from_static(b"Mhello")
    );
    assert_eq!(client_message(&mut cev).await, Bytes::from_static(b"two"));
    // Nobody reads the client's side any more: the queue fills, and then refuses.
    let full = loop {
        match conn.try_send_parts(&[b"M", &[7u8; 60]]) {
            Ok(()) => tokio::task::yield_now().await,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, LinkError::Full), "{full:?}");
    assert!(conn.queued_bytes() <= 256 + 70, "{}", conn.queued_bytes());
}

/// Two dialed connections deliver into one stream, each message with its connection's id;
/// nothing comes before a connection's gate is opened; each ends with its `Closed`.
#[tokio::test(start_paused = true)]
async fn dialed_connections_share_one_stream_behind_their_gates() {
    let net = MemoryNetwork::new();
    let link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        addr("127.0.0.1:7011"),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let (tx, mut shared) = hail_link::Events::channel(16);
    let (a, gate_a) = Connection::connect_into(server.local_addr(), link.clone(), Binary, &tx)
        .await
        .unwrap();
    let (b, gate_b) = Connection::connect_into(server.local_addr(), link, Binary, &tx)
        .await
        .unwrap();
    let mut accepted = Vec::new();
    while accepted.len() < 2 {
        if let ServerEvent::Connected { id, .. } = server_event(&mut events).await {
            accepted.push(server.connection(id).unwrap());
        }
    }
    for c in &accepted {
        c.send(Bytes::from(format!("to {}", c.peer_addr().port())))
            .await
            .unwrap();
    }
    // Gates shut: an hour of virtual time, nothing.
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), shared.recv())
            .await
            .is_err()
    );
    gate_b.open();
    drop(gate_a);
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(crate::common::LIMIT, shared.recv())
            .await
            .unwrap()
        {
            Some(ServerEvent::Message { id, msg }) => got.push((id, msg)),
            other => panic!("{other:?}"),
        }
    }
    got.sort_by_key(|(id, _)| *id == b.id());
    assert_eq!(got[0].0, a.id());
    assert_eq!(got[0].1, format!("to {}", a.local_addr().port()));
    assert_eq!(got[1].0, b.id());
    assert_eq!(got[1].1, format!("to {}", b.local_addr().port()));
    server.close(Duration::from_secs(1)).await;
    let mut closed = Vec::new();
    while closed.len() < 2 {
        match tokio::time::timeout(crate::common::LIMIT, shared.recv())
            .await
            .unwrap()
        {
            Some(ServerEvent::Closed { id, .. }) => closed.push(id),
            other => panic!("{other:?}"),
        }
    }
    closed.sort_by_key(|id| *id == b.id());
    assert_eq!(closed, [a.id(), b.id()]);
}
