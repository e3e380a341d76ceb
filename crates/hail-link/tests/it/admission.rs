//! Admission only after proof: a recorded first handshake message, replayed, never
//! yields an admitted connection; pre-authentication limits per source. In memory, in
//! paused time (the attacker and the legitimate client dial from addresses of their own).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hail_link::memory::MemoryNetwork;
use hail_link::{Connection, LinkConfig, Server, ServerConfig, ServerEvent, Transport};
use hail_wire::Binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVER: &str = "10.0.0.1:7000";
const RECORDER: &str = "10.0.0.9:7000";
const ATTACKER: &str = "10.0.0.66";
const LEGIT: &str = "10.0.0.2";
/// Replays of the recorded message, each from a fresh connection.
const REPLAYS: usize = 40;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The first bytes a genuine client sends: it dials a listener that records them and
/// never answers.
async fn record_first_message(net: &MemoryNetwork, link: &LinkConfig) -> Vec<u8> {
    let mut recorder = net.bind(addr(RECORDER)).unwrap();
    let dialer = {
        let link = link
            .clone()
            .transport(Transport::memory_from(net, ip(LEGIT)));
        tokio::spawn(async move { Connection::connect(addr(RECORDER), &link, Binary).await })
    };
    let (mut s, _) = recorder.accept().await.unwrap();
    // A record: u16 length, then the Noise message.
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.unwrap();
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(head))];
    s.read_exact(&mut msg).await.unwrap();
    dialer.abort();
    [&head[..], &msg[..]].concat()
}

/// Records a client's first handshake message, replays it `REPLAYS` times from fresh
/// connections while a legitimate client connects, and checks that no replay was ever
/// admitted (no `Connected` event from the attacker's address) and the client was.
async fn replayed_first_message_is_never_admitted(link: LinkConfig) {
    let net = MemoryNetwork::new();
    let link = link.transport(Transport::memory(&net));
    let m1 = record_first_message(&net, &link).await;

    let cfg = ServerConfig::default().link(link.clone()).max_clients(64);
    let (server, mut events) = Server::bind(addr(SERVER), cfg, Binary).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..REPLAYS {
        let Ok(mut s) = net.connect(ip(ATTACKER), addr(SERVER)).await else {
            continue;
        };
        if s.write_all(&m1).await.is_ok() {
            held.push(s);
        }
    }
    // Whatever the server answers is read (so its writes never block), never answered.
    let readers: Vec<_> = held
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            })
        })
        .collect();

    // Meanwhile a legitimate client connects and works.
    let legit = link
        .clone()
        .transport(Transport::memory_from(&net, ip(LEGIT)));
    let (conn, _incoming) = Connection::connect(addr(SERVER), &legit, Binary)
        .await
        .unwrap();
    conn.send(bytes::Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let mut legit_connected = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("an event")
            .expect("the server runs")
        {
            ServerEvent::Connected { addr, .. } => {
                assert_ne!(addr.ip(), ip(ATTACKER), "a replayed message was admitted");
                assert_eq!(addr.ip(), ip(LEGIT));
                legit_connected = true;
            }
            ServerEvent::Message { msg, .. } => {
                assert_eq!(&msg[..], b"hello");
                break;
            }
            _ => {}
        }
    }
    assert!(legit_connected);
    // Past the handshake deadline every replay is gone, none of them admitted.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for r in readers {
        r.await.unwrap();
    }
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(1), events.recv()).await {
        if let ServerEvent::Connected { addr, .. } = ev {
            panic!("a replayed message was admitted from {addr}");
        }
    }
    let stats = server.stats();
    assert_eq!(stats.accepted, 1, "{stats:?}");
    assert_eq!(stats.clients, 1, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_replayed_nnpsk0_first_message_is_never_admitted() {
    replayed_first_message_is_never_admitted(LinkConfig::default().psk([0x5e; 32])).await;
}
