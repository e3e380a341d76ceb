//! The reconnecting client across a server restart: nothing vanishes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hail_link::{
    Backoff, Client, ClientConfig, ClientEvent, LinkError, Server, ServerConfig, ServerEvent,
};
use hail_wire::Binary;

use crate::common::{client_event, lo, server_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_messages_are_delivered_after_reconnect_or_fail() {
    const OUTAGE_SENDS: u32 = 100;
    let (server, mut events) = Server::bind(lo(), ServerConfig::default(), Binary)
        .await
        .unwrap();
    let addr = server.local_addr();
    let backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    // Room for about 40 of the 100 outage messages (each 4 + 1 + 12 bytes on the wire).
    let cfg = ClientConfig::default()
        .reconnect(Some(backoff))
        .outage_bytes(40 * 17);
    let (client, mut cev) = Client::connect(addr, cfg, Binary).await.unwrap();
    assert!(matches!(
        client_event(&mut cev).await,
        ClientEvent::Connected { .. }
    ));
    client.send(Bytes::from_static(b"before")).await.unwrap();
    loop {
        if let ServerEvent::Message { msg, .. } = server_event(&mut events).await {
            assert_eq!(&msg[..], b"before");
            break;
        }
    }

    // Outage: the server goes away; the client notices.
    server.shutdown(Duration::from_secs(1)).await;
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

    // The server comes back on the same port; the client is back within the backoff bound.
    let restarted = Instant::now();
    let (server, mut events) = Server::bind(addr, ServerConfig::default(), Binary)
        .await
        .unwrap();
    match client_event(&mut cev).await {
        ClientEvent::Connected { addr: a } => assert_eq!(a, addr),
        other => panic!("{other:?}"),
    }
    assert!(
        restarted.elapsed() < Duration::from_secs(2),
        "reconnected after {:?}",
        restarted.elapsed()
    );
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

#[tokio::test]
async fn without_reconnect_sends_fail_after_a_loss() {
    let (server, _events) = Server::bind(lo(), ServerConfig::default(), Binary)
        .await
        .unwrap();
    let cfg = ClientConfig::default().reconnect(None);
    let (client, mut cev) = Client::connect(server.local_addr(), cfg, Binary)
        .await
        .unwrap();
    assert!(matches!(
        client_event(&mut cev).await,
        ClientEvent::Connected { .. }
    ));
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
