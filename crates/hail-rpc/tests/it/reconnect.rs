//! Over `hail-link`: reconnects, server-initiated calls by `ClientId`, authentication.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hail_link::{ClientConfig, LinkConfig, LinkError, ServerConfig};
use hail_rpc::{RpcClient, RpcConfig, RpcError, RpcServer};
use tokio::sync::Notify;

use crate::support::{Gate, localhost, next_connected, pair};

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_after_a_reconnect_work() {
    let (client, _server_peer, mut link) = pair().await;
    let started = Arc::new(Notify::new());
    let s = started.clone();
    link.server()
        .bind("hang_or_id", move |x: u32| {
            let started = s.clone();
            async move {
                if x == 0 {
                    started.notify_one();
                    std::future::pending::<()>().await;
                }
                Ok::<_, String>(x)
            }
        })
        .unwrap();
    assert_eq!(client.execute::<_, u32>("hang_or_id", 7u32, T).await, Ok(7));

    // The server drops this client mid-call: the call ends with ConnectionLost at once.
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.execute::<_, u32>("hang_or_id", 0u32, T).await })
    };
    tokio::time::timeout(T, started.notified())
        .await
        .expect("the call reaches its handler");
    assert!(link.server().disconnect(link.client_id()));
    assert_eq!(pending.await.unwrap(), Err(RpcError::ConnectionLost));

    // The link reconnects by itself, as a new client of the server.
    let (new_id, new_peer) = next_connected(link.server_events()).await;
    assert_ne!(new_id, link.client_id());
    // The client's peer learns of the new connection before any packet on it, so once it
    // has answered the server, it is connected.
    client
        .bind("are_you_there", |(): ()| async { Ok::<_, String>(()) })
        .unwrap();
    assert_eq!(
        new_peer.execute::<_, ()>("are_you_there", (), T).await,
        Ok(())
    );
    assert!(client.is_connected());
    assert_eq!(client.execute::<_, u32>("hang_or_id", 8u32, T).await, Ok(8));
    assert!(link.client().link().stats().reconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_calls_a_client_by_id_while_it_calls_the_server() {
    let (client, server_peer, link) = pair().await;
    client
        .bind(
            "client_side",
            |x: i32| async move { Ok::<_, String>(x * 10) },
        )
        .unwrap();
    link.server()
        .bind(
            "server_side",
            |x: i32| async move { Ok::<_, String>(x + 1) },
        )
        .unwrap();
    let by_id = link.server().peer(link.client_id()).expect("the client");
    let (a, b) = tokio::join!(
        client.execute::<_, i32>("server_side", 1, T),
        by_id.execute::<_, i32>("client_side", 2, T),
    );
    assert_eq!((a, b), (Ok(2), Ok(20)));
    assert_eq!(
        server_peer.execute::<_, i32>("client_side", 3, T).await,
        Ok(30)
    );
}

#[tokio::test]
async fn a_wrong_passphrase_fails_authentication() {
    let server_link = LinkConfig::builder().psk([1; 32]).build().unwrap();
    let (server, _events) = RpcServer::listen(
        localhost(),
        ServerConfig::builder().link(server_link).build().unwrap(),
        RpcConfig::default(),
    )
    .await
    .unwrap();
    let wrong = ClientConfig::builder()
        .link(LinkConfig::builder().psk([2; 32]).build().unwrap())
        .build()
        .unwrap();
    let err = RpcClient::connect(server.local_addr(), wrong, RpcConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::AuthFailed), "{err:?}");

    // With the right one, calls work (encrypted).
    server
        .bind("echo", |s: String| async move { Ok::<_, String>(s) })
        .unwrap();
    let right = ClientConfig::builder()
        .link(LinkConfig::builder().psk([1; 32]).build().unwrap())
        .build()
        .unwrap();
    let client = RpcClient::connect(server.local_addr(), right, RpcConfig::default())
        .await
        .unwrap();
    assert!(client.link().connection().is_some_and(|c| c.is_secure()));
    assert_eq!(
        client.execute::<_, String>("echo", "sealed", T).await,
        Ok("sealed".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_running_calls_first() {
    let (server, mut events) =
        RpcServer::listen(localhost(), ServerConfig::default(), RpcConfig::default())
            .await
            .unwrap();
    let gate = Gate::bind(server.handlers(), "work");
    let client = RpcClient::connect(
        server.local_addr(),
        ClientConfig::builder().reconnect(None).build().unwrap(),
        RpcConfig::default(),
    )
    .await
    .unwrap();
    let (id, _server_peer) = next_connected(&mut events).await;
    let call = {
        let peer = client.peer().clone();
        tokio::spawn(async move { peer.execute::<_, u32>("work", 50u32, T).await })
    };
    gate.started(1).await;
    assert_eq!(server.clients(), [id]);
    let conn = client.link().connection().expect("connected");

    let shutdown = server.close(T);
    tokio::pin!(shutdown);
    // Polled once, the shutdown waits for the handler, which waits for the gate.
    assert!(shutdown.as_mut().now_or_never().is_none());
    gate.open(1);
    shutdown.await;
    assert_eq!(call.await.unwrap(), Ok(50), "the running call was answered");
    tokio::time::timeout(T, conn.closed())
        .await
        .expect("the client sees the shutdown");
    assert!(!client.link().is_connected());
    // Without reconnection nothing will bring the link back: the handle says it is stale
    // once the client's link task has seen the close and ended (until then a call finds
    // the link down: `NotConnected`; the connection's `closed()` can come first).
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match client.execute::<_, u32>("work", 1u32, T).await {
            Err(RpcError::Stale) => break,
            Err(RpcError::NotConnected) if tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            other => panic!("expected Stale, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_peer_over_a_bare_link_connection() {
    use hail_link::Connection;
    use hail_rpc::{Disconnect, RpcPeer};
    use hail_wire::Binary;

    let (server, _events) =
        RpcServer::listen(localhost(), ServerConfig::default(), RpcConfig::default())
            .await
            .unwrap();
    server
        .bind(
            "add",
            |(a, b): (u8, u8)| async move { Ok::<_, String>(a + b) },
        )
        .unwrap();
    let (conn, mut incoming) =
        Connection::connect(server.local_addr(), LinkConfig::default(), Binary)
            .await
            .unwrap();
    let (peer, driver) = RpcPeer::new(RpcConfig::default());
    driver.connected(Arc::new(conn.clone()));
    let reader = tokio::spawn(async move {
        while let Some(frame) = incoming.recv().await {
            driver.packet(&frame);
        }
        driver.disconnected(Disconnect::Lost);
    });
    assert_eq!(peer.execute::<_, u8>("add", (2u8, 3u8), T).await, Ok(5));
    conn.close();
    reader.await.unwrap();
    assert!(!peer.is_connected());
}
