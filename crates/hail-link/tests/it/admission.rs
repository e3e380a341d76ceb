//! Admission only after proof (issue 11): a recorded handshake message, replayed, never
//! yields an admitted connection; identities are proven, and a forged one is refused. In
//! memory, in paused time (attackers and legitimate peers dial from addresses of their
//! own). The peers that forge are written with `snow` directly, from the documented wire
//! format (docs/wire-format.md), so they do what hail-link itself never would.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hail_crypto::{Identity, PublicKey};
use hail_link::memory::{MemoryNetwork, MemoryStream};
use hail_link::{
    Client, ClientConfig, ClientEvent, Connection, DEFAULT_HANDSHAKE_TIMEOUT, LinkConfig,
    LinkConfigBuilder, LinkError, Server, ServerConfig, ServerEvent, ServerEvents, ServerStats,
    Transport,
};
use hail_wire::Binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{LIMIT, client_event, server_event, wait_for};

const SERVER: &str = "10.0.0.1:7000";
const RECORDER: &str = "10.0.0.9:7000";
const ATTACKER: &str = "10.0.0.66";
const LEGIT: &str = "10.0.0.2";
/// Replays of the recorded message, each from a fresh connection.
const REPLAYS: usize = 40;
const PSK: [u8; 32] = [0x5e; 32];
const PROLOGUE: &[u8] = b"hail-link/2";
/// The alert record a side sends when the other's handshake fails: length 0, code 1.
const ALERT: &[u8] = &[0, 0, 1];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn identity() -> Identity {
    Identity::generate().unwrap()
}

fn from(net: &MemoryNetwork, link: &LinkConfigBuilder, who: &str) -> LinkConfig {
    link.clone()
        .transport(Transport::memory_from(net, ip(who)))
        .build()
        .unwrap()
}

async fn bind(net: &MemoryNetwork, link: &LinkConfigBuilder) -> (Server, ServerEvents<Bytes>) {
    let link = link
        .clone()
        .transport(Transport::memory(net))
        .build()
        .unwrap();
    let cfg = ServerConfig::builder()
        .link(link)
        .max_clients(64)
        .build()
        .unwrap();
    Server::bind(addr(SERVER), cfg, Binary).await.unwrap()
}

/// No `Connected` event is waiting (a replay or a forgery would have made one).
fn no_connected(events: &mut ServerEvents<Bytes>) {
    while let Some(ev) = events.try_recv() {
        if let ServerEvent::Connected { addr, .. } = ev {
            panic!("admitted a connection from {addr}");
        }
    }
}

/// Reads whatever the peer sends until it closes.
async fn read_all(mut s: MemoryStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut got))
        .await
        .expect("the peer closes in time")
        .ok();
    got
}

async fn read_record(s: &mut MemoryStream) -> Vec<u8> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.unwrap();
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(head))];
    s.read_exact(&mut msg).await.unwrap();
    msg
}

async fn write_record(s: &mut MemoryStream, msg: &[u8]) {
    let len = u16::try_from(msg.len()).unwrap().to_be_bytes();
    s.write_all(&[&len[..], msg].concat()).await.unwrap();
}

/// The first record a genuine client sends (message 1, its length header included): it
/// dials a listener that records it and never answers.
async fn record_first_message(net: &MemoryNetwork, link: &LinkConfigBuilder) -> Vec<u8> {
    let mut recorder = net.bind(addr(RECORDER)).unwrap();
    let dialer = {
        let link = from(net, link, LEGIT);
        tokio::spawn(async move { Connection::connect(addr(RECORDER), link, Binary).await })
    };
    let (mut s, _) = recorder.accept().await.unwrap();
    let msg = read_record(&mut s).await;
    dialer.abort();
    let len = u16::try_from(msg.len()).unwrap().to_be_bytes();
    [&len[..], &msg[..]].concat()
}

/// Runs a genuine session through a recording proxy to the server and returns every byte
/// the client sent (its handshake messages, then its sealed records).
async fn record_session(net: &MemoryNetwork, link: &LinkConfigBuilder) -> Vec<u8> {
    let mut proxy = net.bind(addr(RECORDER)).unwrap();
    let up = Arc::new(Mutex::new(Vec::new()));
    let task = {
        let (net, up) = (net.clone(), Arc::clone(&up));
        tokio::spawn(async move {
            let (client, _) = proxy.accept().await.unwrap();
            let server = net
                .connect(addr(RECORDER).ip(), addr(SERVER))
                .await
                .unwrap();
            let (mut cr, mut cw) = tokio::io::split(client);
            let (mut sr, mut sw) = tokio::io::split(server);
            let a = async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = cr.read(&mut buf).await {
                    up.lock().unwrap().extend_from_slice(&buf[..n]);
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
            };
            let b = async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
            };
            tokio::join!(a, b);
        })
    };
    let (conn, _incoming) = Connection::connect(addr(RECORDER), from(net, link, LEGIT), Binary)
        .await
        .unwrap();
    conn.send(Bytes::from_static(b"recorded")).await.unwrap();
    conn.close();
    conn.closed().await;
    task.await.unwrap();
    up.lock().unwrap().clone()
}

/// (a) and (e), message 1: the recorded first message of a genuine client, replayed from
/// `REPLAYS` fresh connections, is answered (message 2) and then only holds a pending
/// slot until the handshake deadline: no `Connected`, no client slot, no `accepted`,
/// while a legitimate client connects and works meanwhile.
async fn replayed_first_message_is_never_admitted(link: LinkConfigBuilder) {
    let net = MemoryNetwork::new();
    let m1 = record_first_message(&net, &link).await;
    let (server, mut events) = bind(&net, &link).await;
    let mut readers = Vec::new();
    for _ in 0..REPLAYS {
        let mut s = net.connect(ip(ATTACKER), addr(SERVER)).await.unwrap();
        s.write_all(&m1).await.unwrap();
        // Whatever the server answers is read (so its writes never block), never answered.
        readers.push(tokio::spawn(read_all(s)));
    }
    wait_for("every replay is pending", || {
        server.stats().pending == REPLAYS
    })
    .await;
    let started = tokio::time::Instant::now();

    // Meanwhile a legitimate client connects and works.
    let (conn, _incoming) = Connection::connect(addr(SERVER), from(&net, &link, LEGIT), Binary)
        .await
        .unwrap();
    conn.send(Bytes::from_static(b"hello")).await.unwrap();
    loop {
        match server_event(&mut events).await {
            ServerEvent::Connected { addr, .. } => assert_eq!(addr.ip(), ip(LEGIT)),
            ServerEvent::Message { msg, .. } => {
                assert_eq!(&msg[..], b"hello");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.clients), (1, 1), "{stats:?}");
    assert_eq!(stats.pending, REPLAYS, "{stats:?}");

    // At the handshake deadline every replay is dropped, none of them admitted: each
    // got message 2 from the server and nothing else.
    for r in readers {
        let got = r.await.unwrap();
        assert!(
            got.len() >= 2 + 48,
            "message 2 was sent: {} bytes",
            got.len()
        );
        assert_ne!(&got[..], ALERT);
    }
    assert!(
        started.elapsed() <= DEFAULT_HANDSHAKE_TIMEOUT,
        "freed at the deadline"
    );
    wait_for("the pending slots are freed", || {
        server.stats().pending == 0
    })
    .await;
    no_connected(&mut events);
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.clients), (1, 1), "{stats:?}");
    assert_eq!(stats.handshake_failures, REPLAYS as u64, "{stats:?}");
    assert_eq!(stats.auth_failures, 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_replayed_nnpsk0_first_message_is_never_admitted() {
    replayed_first_message_is_never_admitted(LinkConfig::builder().psk(PSK)).await;
}

#[tokio::test(start_paused = true)]
async fn a_replayed_xx_first_message_is_never_admitted() {
    replayed_first_message_is_never_admitted(LinkConfig::builder().identity(&identity())).await;
}

#[tokio::test(start_paused = true)]
async fn a_replayed_xxpsk0_first_message_is_never_admitted() {
    let link = LinkConfig::builder().psk(PSK).identity(&identity());
    replayed_first_message_is_never_admitted(link).await;
}

/// (a) and (e), a whole session: every byte a genuine client sent (message 1, then its
/// key confirmation or message 3, then sealed records), replayed on a fresh connection,
/// fails where the client had to prove itself, counted as an authentication failure.
async fn replayed_session_is_refused(link: LinkConfigBuilder) {
    let net = MemoryNetwork::new();
    let (server, mut events) = bind(&net, &link).await;
    let up = record_session(&net, &link).await;
    // The genuine session came and went.
    loop {
        if let ServerEvent::Closed { .. } = server_event(&mut events).await {
            break;
        }
    }
    let before = server.stats();
    assert_eq!(
        (before.accepted, before.auth_failures),
        (1, 0),
        "{before:?}"
    );

    let mut s = net.connect(ip(ATTACKER), addr(SERVER)).await.unwrap();
    s.write_all(&up).await.unwrap();
    let got = read_all(s).await;
    assert!(got.ends_with(ALERT), "the server refused with the alert");
    wait_for("the replay is counted", || {
        server.stats().auth_failures == 1
    })
    .await;
    no_connected(&mut events);
    let after = server.stats();
    assert_eq!(
        (after.accepted, after.clients, after.pending),
        (1, 0, 0),
        "{after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_replayed_nnpsk0_session_fails_its_key_confirmation() {
    replayed_session_is_refused(LinkConfig::builder().psk(PSK)).await;
}

#[tokio::test(start_paused = true)]
async fn a_replayed_xx_message_3_from_another_session_is_refused() {
    replayed_session_is_refused(LinkConfig::builder().identity(&identity())).await;
}

#[tokio::test(start_paused = true)]
async fn a_replayed_xxpsk0_message_3_from_another_session_is_refused() {
    replayed_session_is_refused(LinkConfig::builder().psk(PSK).identity(&identity())).await;
}

/// (b) Both ends learn the other's identity key, on the server's event, the client's
/// event and both connections; without identities there is none.
#[tokio::test(start_paused = true)]
async fn xx_proves_both_identity_keys() {
    for psk in [None, Some(PSK)] {
        let net = MemoryNetwork::new();
        let (server_id, client_id) = (identity(), identity());
        let base = match psk {
            Some(k) => LinkConfig::builder().psk(k),
            None => LinkConfig::builder(),
        };
        let (server, mut events) = bind(&net, &base.clone().identity(&server_id)).await;
        let cfg = ClientConfig::builder()
            .link(from(&net, &base.identity(&client_id), LEGIT))
            .build()
            .unwrap();
        let (client, mut cev) = Client::connect(addr(SERVER), cfg, Binary).await.unwrap();
        match client_event(&mut cev).await {
            ClientEvent::Connected { peer_key, .. } => {
                assert_eq!(
                    peer_key.as_deref(),
                    Some(&server_id.public()),
                    "psk {psk:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let conn = client.connection().unwrap();
        assert!(conn.is_secure());
        assert_eq!(conn.peer_key(), Some(server_id.public()));
        let ServerEvent::Connected { peer_key, .. } = server_event(&mut events).await else {
            panic!("Connected first")
        };
        assert_eq!(
            peer_key.as_deref(),
            Some(&client_id.public()),
            "psk {psk:?}"
        );
        assert_ne!(peer_key.as_deref(), Some(&server_id.public()));
        // The link works both ways.
        client.send(Bytes::from_static(b"ping")).await.unwrap();
        let ServerEvent::Message { id, msg } = server_event(&mut events).await else {
            panic!("the message")
        };
        assert_eq!(&msg[..], b"ping");
        server
            .send_to(id, Bytes::from_static(b"pong"))
            .await
            .unwrap();
        assert_eq!(&crate::common::client_message(&mut cev).await[..], b"pong");
    }
    // NNpsk0 and plaintext links prove no individual key.
    for link in [LinkConfig::builder().psk(PSK), LinkConfig::builder()] {
        let net = MemoryNetwork::new();
        let (_server, mut events) = bind(&net, &link).await;
        let (conn, _in) = Connection::connect(addr(SERVER), from(&net, &link, LEGIT), Binary)
            .await
            .unwrap();
        assert_eq!(conn.peer_key(), None);
        let ServerEvent::Connected { peer_key, .. } = server_event(&mut events).await else {
            panic!("Connected")
        };
        assert_eq!(peer_key, None);
    }
}

/// (c) A wrong passphrase fails at message 1 under `XXpsk0`: the server answers the
/// recorded message 1 with the alert alone (no message 2, no DH of its own), counts an
/// authentication failure, and the client reports `AuthFailed`.
#[tokio::test(start_paused = true)]
async fn xxpsk0_with_a_wrong_passphrase_fails_at_message_1() {
    let net = MemoryNetwork::new();
    let good = LinkConfig::builder().psk(PSK).identity(&identity());
    let wrong = LinkConfig::builder().psk([0x11; 32]).identity(&identity());
    let m1 = record_first_message(&net, &wrong).await;
    assert_eq!(m1.len(), 2 + 48, "psk, e: 32 bytes and a tag");
    let (server, mut events) = bind(&net, &good).await;

    let mut s = net.connect(ip(ATTACKER), addr(SERVER)).await.unwrap();
    s.write_all(&m1).await.unwrap();
    assert_eq!(read_all(s).await, ALERT, "only the alert, no message 2");
    wait_for("counted", || server.stats().auth_failures == 1).await;

    let err = Connection::connect(addr(SERVER), from(&net, &wrong, LEGIT), Binary)
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::AuthFailed), "{err:?}");
    wait_for("counted", || server.stats().auth_failures == 2).await;
    no_connected(&mut events);
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.pending), (0, 0), "{stats:?}");
}

fn assert_refused_on_both(client: Result<(Connection, hail_link::Incoming<Bytes>), LinkError>) {
    let err = client.map(|_| ()).unwrap_err();
    assert!(matches!(err, LinkError::AuthFailed), "client: {err:?}");
}

/// (d) A side with an identity refuses a peer without one, and the other way round:
/// `AuthFailed` on both sides, counted by the server, nothing admitted.
#[tokio::test(start_paused = true)]
async fn identity_on_one_side_only_fails_on_both() {
    let with = |psk: bool| {
        let l = LinkConfig::builder().identity(&identity());
        if psk { l.psk(PSK) } else { l }
    };
    let without = |psk: bool| {
        if psk {
            LinkConfig::builder().psk(PSK)
        } else {
            LinkConfig::builder()
        }
    };
    // (server, client, the client's error is AuthFailed)
    let cases = [
        (
            "XXpsk0 server, NNpsk0 client",
            with(true),
            without(true),
            true,
        ),
        (
            "NNpsk0 server, XXpsk0 client",
            without(true),
            with(true),
            true,
        ),
        ("XX server, NNpsk0 client", with(false), without(true), true),
        ("NNpsk0 server, XX client", without(true), with(false), true),
        ("XX server, XXpsk0 client", with(false), with(true), true),
        ("XXpsk0 server, XX client", with(true), with(false), true),
        // A plaintext client reads the alert as a truncated frame: a typed protocol
        // error, not `AuthFailed` (it has no notion of records).
        (
            "XX server, plaintext client",
            with(false),
            without(false),
            false,
        ),
    ];
    for (what, server_cfg, client_cfg, client_auth) in cases {
        let net = MemoryNetwork::new();
        let (server, mut events) = bind(&net, &server_cfg).await;
        let result =
            Connection::connect(addr(SERVER), from(&net, &client_cfg, LEGIT), Binary).await;
        if client_auth {
            assert_refused_on_both(result);
        } else {
            let err = result.map(|_| ()).unwrap_err();
            assert!(matches!(err, LinkError::Closed(_)), "{what}: {err:?}");
        }
        wait_for(what, || server.stats().auth_failures == 1).await;
        no_connected(&mut events);
        let stats: ServerStats = server.stats();
        assert_eq!((stats.accepted, stats.clients), (0, 0), "{what}: {stats:?}");
    }
    // The mismatch is found at message 1, before the server does any DH work of its own:
    // an `NNpsk0` message 1 (which an `XX` responder, having no key, could otherwise read
    // as an `e` with a 16-byte payload) is answered with the alert alone.
    for (server_cfg, client_cfg) in [
        (with(false), without(true)),
        (with(true), without(true)),
        (without(true), with(true)),
    ] {
        let net = MemoryNetwork::new();
        let m1 = record_first_message(&net, &client_cfg).await;
        let (server, _events) = bind(&net, &server_cfg).await;
        let mut s = net.connect(ip(ATTACKER), addr(SERVER)).await.unwrap();
        s.write_all(&m1).await.unwrap();
        assert_eq!(read_all(s).await, ALERT, "refused at message 1");
        wait_for("counted", || server.stats().auth_failures == 1).await;
    }
    // A client with an identity and a plaintext server: the server cannot read the
    // record (a frame header over the pre-auth limit) and closes; the client's error is
    // typed (the server ended the stream), the server counts a handshake failure.
    let net = MemoryNetwork::new();
    let (server, mut events) = bind(&net, &without(false)).await;
    let err = Connection::connect(addr(SERVER), from(&net, &with(false), LEGIT), Binary)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, LinkError::Closed(_)), "{err:?}");
    wait_for("counted", || server.stats().handshake_failures == 1).await;
    no_connected(&mut events);
}

/// The identity payload naming `identity`: its public key.
fn payload(identity: &Identity) -> Vec<u8> {
    identity.public().as_bytes().to_vec()
}

/// The Noise static private key a hand-made peer proves: `identity`'s own (its X25519
/// form, genuine) or an unrelated one (`forge`: the payload then names a key the
/// handshake did not prove).
fn static_key(identity: &Identity, forge: bool) -> Vec<u8> {
    if forge {
        noise(None).generate_keypair().unwrap().private
    } else {
        identity.noise_static_secret().to_vec()
    }
}

fn noise(psk: Option<&[u8; 32]>) -> snow::Builder<'_> {
    let name = if psk.is_some() {
        "Noise_XXpsk0_25519_AESGCM_SHA256"
    } else {
        "Noise_XX_25519_AESGCM_SHA256"
    };
    let b = snow::Builder::new(name.parse().unwrap())
        .prologue(PROLOGUE)
        .unwrap();
    match psk {
        Some(k) => b.psk(0, k).unwrap(),
        None => b,
    }
}

/// What a hand-made initiator got after its message 3.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The alert: refused.
    Refused,
    /// A sealed WELCOME: admitted.
    Welcome,
}

/// A hand-made `XX`/`XXpsk0` initiator naming `identity`: proving its static key
/// (`forge` false) or another one (`forge` true).
async fn hand_made_initiator(
    net: &MemoryNetwork,
    psk: Option<&[u8; 32]>,
    identity: &Identity,
    forge: bool,
) -> Outcome {
    let ours = static_key(identity, forge);
    let mut hs = noise(psk)
        .local_private_key(&ours)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut s = net.connect(ip(ATTACKER), addr(SERVER)).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = hs.write_message(&[], &mut buf).unwrap();
    write_record(&mut s, &buf[..n]).await;
    let m2 = read_record(&mut s).await;
    let mut got = vec![0u8; 1024];
    let n = hs.read_message(&m2, &mut got).unwrap();
    assert_eq!(n, 32, "the server's identity payload");
    let n = hs.write_message(&payload(identity), &mut buf).unwrap();
    write_record(&mut s, &buf[..n]).await;
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.unwrap();
    if head == [0, 0] {
        assert_eq!(
            s.read_u8().await.unwrap(),
            1,
            "alert code: authentication failed"
        );
        return Outcome::Refused;
    }
    let mut rec = vec![0u8; usize::from(u16::from_be_bytes(head))];
    s.read_exact(&mut rec).await.unwrap();
    let t = hs.into_stateless_transport_mode().unwrap();
    let n = t.read_message(0, &rec, &mut got).unwrap();
    assert_eq!(&got[..n], b"\x00\x00\x00\x02\x04\x01", "a sealed WELCOME");
    Outcome::Welcome
}

/// (f) A client whose identity payload names a key that is not the Noise static key it
/// proved is refused (the alert, an authentication failure, no `Connected`); the same
/// hand-made client proving the identity's own static key is admitted under it, so the
/// refusal is the identity check's.
#[tokio::test(start_paused = true)]
async fn an_identity_the_handshake_did_not_prove_is_refused_by_the_server() {
    for psk in [None, Some(&PSK)] {
        let net = MemoryNetwork::new();
        let base = psk.map_or_else(LinkConfig::builder, |k| LinkConfig::builder().psk(*k));
        let (server, mut events) = bind(&net, &base.identity(&identity())).await;
        let me = identity();
        assert_eq!(
            hand_made_initiator(&net, psk, &me, true).await,
            Outcome::Refused
        );
        wait_for("counted", || server.stats().auth_failures == 1).await;
        no_connected(&mut events);
        assert_eq!(server.stats().accepted, 0);

        assert_eq!(
            hand_made_initiator(&net, psk, &me, false).await,
            Outcome::Welcome
        );
        let ServerEvent::Connected { peer_key, .. } = server_event(&mut events).await else {
            panic!("Connected")
        };
        assert_eq!(peer_key.as_deref(), Some(&me.public()));
    }
}

/// (f) The other way: a server whose identity payload names a key that is not its proven
/// static key is refused by the client (`AuthFailed`, and the server gets the alert
/// instead of message 3); a genuine one is accepted (the client sends message 3), so the
/// refusal is the identity check's. A server that refuses the client's message 3 with the alert is
/// `AuthFailed` at the client too.
#[tokio::test(start_paused = true)]
async fn an_identity_the_handshake_did_not_prove_is_refused_by_the_client() {
    for forge in [true, false] {
        let net = MemoryNetwork::new();
        let mut listener = net.bind(addr(SERVER)).unwrap();
        let server_id = identity();
        let fake = tokio::spawn({
            async move {
                let ours = static_key(&server_id, forge);
                let mut hs = noise(None)
                    .local_private_key(&ours)
                    .unwrap()
                    .build_responder()
                    .unwrap();
                let (mut s, _) = listener.accept().await.unwrap();
                let m1 = read_record(&mut s).await;
                let mut buf = vec![0u8; 1024];
                hs.read_message(&m1, &mut buf).unwrap();
                let n = hs.write_message(&payload(&server_id), &mut buf).unwrap();
                write_record(&mut s, &buf[..n]).await;
                // The client's answer: message 3, or the alert.
                let mut head = [0u8; 2];
                s.read_exact(&mut head).await.unwrap();
                if head == [0, 0] {
                    return None;
                }
                let mut m3 = vec![0u8; usize::from(u16::from_be_bytes(head))];
                s.read_exact(&mut m3).await.unwrap();
                let mut got = vec![0u8; 1024];
                let n = hs.read_message(&m3, &mut got).unwrap();
                // Refuse the client's proof: it must report that, not a lost stream.
                s.write_all(ALERT).await.unwrap();
                Some(got[..n].to_vec())
            }
        });
        let client_id = identity();
        let link = from(&net, &LinkConfig::builder().identity(&client_id), LEGIT);
        let result = Connection::connect(addr(SERVER), link, Binary).await;
        let answer = fake.await.unwrap();
        if forge {
            assert_refused_on_both(result);
            assert_eq!(answer, None, "the client sent the alert, not message 3");
        } else {
            // The client accepted the server's identity and proved its own in message 3;
            // the fake server's alert in reply is `AuthFailed` at the client.
            let payload = answer.expect("message 3");
            assert_eq!(&payload[..32], client_id.public().as_bytes());
            assert_refused_on_both(result);
        }
    }
}

/// The proven key is the one the config was made with, whatever its clones: a
/// reconnecting client proves the same identity every time.
#[tokio::test(start_paused = true)]
async fn a_reconnecting_client_proves_the_same_identity() {
    let net = MemoryNetwork::new();
    let me = identity();
    let link = LinkConfig::builder().psk(PSK).identity(&identity());
    let (server, mut events) = bind(&net, &link).await;
    let client_link = from(&net, &LinkConfig::builder().psk(PSK).identity(&me), LEGIT);
    let (client, _cev) = Client::connect(
        addr(SERVER),
        ClientConfig::builder().link(client_link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let ServerEvent::Connected { id, peer_key, .. } = server_event(&mut events).await else {
        panic!("Connected")
    };
    assert_eq!(peer_key.as_deref(), Some(&me.public()));
    assert!(server.disconnect(id));
    let again: Option<PublicKey> = loop {
        if let ServerEvent::Connected { peer_key, .. } = server_event(&mut events).await {
            break peer_key.map(|k| *k);
        }
    };
    assert_eq!(again, Some(me.public()));
    drop(client);
}

/// A client whose ephemeral key in message 1 is a point of small order (u = 0 or 1: every
/// DH with it is all zeros, which aws-lc's X25519 refuses) fails the server's first DH,
/// writing message 2: the alert, an authentication failure counted, no `Connected`, no panic.
#[tokio::test(start_paused = true)]
async fn a_small_order_ephemeral_key_in_message_1_is_an_auth_failure() {
    let net = MemoryNetwork::new();
    let (server, mut events) = bind(&net, &LinkConfig::builder().identity(&identity())).await;
    for (n, u) in [0u8, 1].into_iter().enumerate() {
        let mut e = [0u8; 32];
        e[0] = u;
        let mut s = net.connect(ip(ATTACKER), addr(SERVER)).await.unwrap();
        write_record(&mut s, &e).await;
        assert_eq!(read_all(s).await, ALERT, "u = {u}");
        wait_for("counted", || server.stats().auth_failures == n as u64 + 1).await;
    }
    no_connected(&mut events);
    assert_eq!(server.stats().accepted, 0);
}
