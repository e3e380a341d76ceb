//! Graceful shutdown delivers in-flight messages both ways.

use std::time::Duration;

use bytes::Bytes;
use hail_link::{
    Client, ClientConfig, ClientEvent, CloseReason, Server, ServerConfig, ServerEvent,
};
use hail_wire::Binary;

use crate::common::{LIMIT, client_event, lo, server_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_in_flight_messages_before_closing() {
    const N: u32 = 2000;
    let (server, mut events) = Server::bind(lo(), ServerConfig::default(), Binary)
        .await
        .unwrap();
    let cfg = ClientConfig::default().reconnect(None);
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
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(5)));
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

#[tokio::test]
async fn shutdown_ends_even_when_nobody_takes_events() {
    let cfg = ServerConfig::default().event_capacity(4);
    let (server, events) = Server::bind(lo(), cfg, Binary).await.unwrap();
    let ccfg = ClientConfig::default().reconnect(None);
    let (client, _cev) = Client::connect(server.local_addr(), ccfg, Binary)
        .await
        .unwrap();
    for n in 0..100u32 {
        client
            .send(Bytes::copy_from_slice(&n.to_be_bytes()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The event stream is full and never read: the deadline still ends the shutdown.
    tokio::time::timeout(LIMIT, server.shutdown(Duration::from_millis(200)))
        .await
        .expect("shutdown within its deadline");
    drop(events);
}
