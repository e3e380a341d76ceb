//! Passphrase security: right and wrong keys, replays, and what the wire shows.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hail_link::{
    Client, ClientConfig, Connection, LinkConfig, LinkConfigError, LinkError, Server, ServerConfig,
    ServerEvent,
};
use hail_wire::Binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{LIMIT, client_message, key, lo, server_event, wait_for};

fn secure(passphrase: &str) -> LinkConfig {
    LinkConfig::builder()
        .group_key(&key(passphrase))
        .build()
        .unwrap()
}

const SECRET: &[u8] = b"the plaintext that must never be on the wire";

#[tokio::test]
async fn right_passphrase_works_and_wrong_fails_on_both_sides() {
    let cfg = ServerConfig::builder()
        .link(secure("open sesame"))
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(lo(), cfg, Binary).await.unwrap();
    let addr = server.local_addr();

    let (client, mut cev) = Client::connect(
        addr,
        ClientConfig::builder()
            .link(secure("open sesame"))
            .build()
            .unwrap(),
        Binary,
    )
    .await
    .unwrap();
    assert!(client.connection().unwrap().is_secure());
    client.send(Bytes::from_static(SECRET)).await.unwrap();
    let id = loop {
        if let ServerEvent::Message { id, msg } = server_event(&mut events).await {
            assert_eq!(&msg[..], SECRET);
            break id;
        }
    };
    // A large message spans several sealed records.
    let big = Bytes::from(vec![0x5a; 300_000]);
    server.send_to(id, big.clone()).await.unwrap();
    assert_eq!(client_message(&mut cev).await, big);

    let err = Client::connect(
        addr,
        ClientConfig::builder()
            .link(secure("open sesam"))
            .build()
            .unwrap(),
        Binary,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LinkError::AuthFailed), "{err:?}");
    // The server side saw an authentication failure too, and kept serving.
    wait_for("the server counts the failure", || {
        server.stats().auth_failures == 1
    })
    .await;
    client
        .send(Bytes::from_static(b"still fine"))
        .await
        .unwrap();
    loop {
        if let ServerEvent::Message { msg, .. } = server_event(&mut events).await {
            assert_eq!(&msg[..], b"still fine");
            break;
        }
    }

    // A second failure from the same address fails the same way (it is answered more
    // slowly: `timing.rs` checks the penalty in virtual time).
    let err = Client::connect(
        addr,
        ClientConfig::builder()
            .link(secure("nope"))
            .build()
            .unwrap(),
        Binary,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LinkError::AuthFailed), "{err:?}");
    wait_for("the server counts both failures", || {
        server.stats().auth_failures == 2
    })
    .await;
}

#[tokio::test]
async fn plaintext_and_secured_peers_fail_cleanly() {
    let (secured, _ev) = Server::bind(
        lo(),
        ServerConfig::builder().link(secure("a")).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let err = Client::connect(secured.local_addr(), ClientConfig::default(), Binary)
        .await
        .unwrap_err();
    assert!(!matches!(err, LinkError::Config(_)), "{err:?}");
    let (plain, _ev2) = Server::bind(lo(), ServerConfig::default(), Binary)
        .await
        .unwrap();
    let err = Client::connect(
        plain.local_addr(),
        ClientConfig::builder().link(secure("a")).build().unwrap(),
        Binary,
    )
    .await
    .unwrap_err();
    assert!(!matches!(err, LinkError::Config(_)), "{err:?}");
    // Python Comms framing cannot be combined with encryption: the builder refuses it.
    let bad = LinkConfig::builder().python_comms().psk([1; 32]).build();
    assert_eq!(bad.unwrap_err(), LinkConfigError::RawEncrypted);
}

/// Forwards one connection to `target`, recording what the client sent and what it got.
async fn recording_proxy(
    target: SocketAddr,
) -> (SocketAddr, Arc<Mutex<Vec<u8>>>, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind(lo()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Arc::new(Mutex::new(Vec::new()));
    let down = Arc::new(Mutex::new(Vec::new()));
    let (u, d) = (Arc::clone(&up), Arc::clone(&down));
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(target).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let a = async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n @ 1..) = cr.read(&mut buf).await {
                u.lock().unwrap().extend_from_slice(&buf[..n]);
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = sw.shutdown().await;
        };
        let b = async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n @ 1..) = sr.read(&mut buf).await {
                d.lock().unwrap().extend_from_slice(&buf[..n]);
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = cw.shutdown().await;
        };
        tokio::join!(a, b);
    });
    (addr, up, down)
}

#[tokio::test]
async fn wire_hides_plaintext_and_a_replayed_session_is_rejected() {
    let cfg = ServerConfig::builder()
        .link(secure("replay"))
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(lo(), cfg, Binary).await.unwrap();
    let (proxy, up, down) = recording_proxy(server.local_addr()).await;

    let (conn, mut incoming) = Connection::connect(proxy, secure("replay"), Binary)
        .await
        .unwrap();
    conn.send(Bytes::from_static(SECRET)).await.unwrap();
    let id = loop {
        if let ServerEvent::Message { id, msg } = server_event(&mut events).await {
            assert_eq!(&msg[..], SECRET);
            break id;
        }
    };
    server
        .send_to(id, Bytes::from_static(SECRET))
        .await
        .unwrap();
    assert_eq!(
        &tokio::time::timeout(LIMIT, incoming.recv())
            .await
            .unwrap()
            .unwrap()[..],
        SECRET
    );
    conn.close();
    conn.closed().await;
    loop {
        if let ServerEvent::Closed { .. } = server_event(&mut events).await {
            break;
        }
    }
    let up = up.lock().unwrap().clone();
    let down = down.lock().unwrap().clone();
    for (dir, bytes) in [("client->server", &up), ("server->client", &down)] {
        assert!(!bytes.is_empty());
        assert!(
            !bytes
                .windows(16)
                .any(|w| SECRET.windows(16).any(|s| s == w)),
            "{dir} carries plaintext"
        );
    }

    // Replay the recorded client bytes on a fresh connection: message 1 is answered (it is
    // genuine) but the session keys are new, so the recorded key confirmation fails and
    // the replay is never admitted: no event at all, one authentication failure.
    let before = server.stats();
    let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
    raw.write_all(&up).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(LIMIT, raw.read_to_end(&mut sink))
        .await
        .unwrap();
    wait_for("the replay counted as an authentication failure", || {
        server.stats().auth_failures == before.auth_failures + 1
    })
    .await;
    assert_eq!(server.stats().accepted, before.accepted);
    assert!(events.try_recv().is_none(), "a replay made an event");
}
