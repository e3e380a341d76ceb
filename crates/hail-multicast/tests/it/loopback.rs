//! Channels on the loopback interface in one process, and a plain std `UdpSocket` peer.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdp};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use hail_multicast::{Channel, ChannelConfig, MulticastError};
use tokio::sync::Notify;
use tokio::time::timeout;

use crate::{PATIENCE, bind, g4, key, lo};

const PER_SENDER: u32 = 1_000;
const BATCH: u32 = 50;

/// Three channels on one group each send 1,000 datagrams; each receives every other's once
/// (and its own only with loopback on). Sends go in batches, each waiting until every
/// receiver has the batch, so socket buffers never overflow and loss cannot hide a bug.
async fn three_channels(sealed: bool, loopback: bool, group_last: u8) {
    let build = |port| {
        let mut b = lo().loopback(loopback);
        if sealed {
            b = b.key(key(7));
        }
        bind(g4(group_last, port), b).expect("channel on loopback")
    };
    let first = build(0);
    let port = first.0.group().port();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        [first, build(port), build(port)].into_iter().unzip();
    let expect_per_receiver = if loopback { 3 } else { 2 } * PER_SENDER as usize;
    // counts[r][s]: datagrams receiver r got from sender s.
    let counts: Arc<Vec<Vec<AtomicUsize>>> = Arc::new(
        (0..3)
            .map(|_| (0..3).map(|_| AtomicUsize::new(0)).collect())
            .collect(),
    );
    // Rung by a receiver each time it counts a datagram.
    let counted = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for (r, mut chan) in receivers.into_iter().enumerate() {
        let (counts, counted) = (Arc::clone(&counts), Arc::clone(&counted));
        tasks.push(tokio::spawn(async move {
            let mut seen = HashSet::new();
            while seen.len() < expect_per_receiver {
                let d = chan.recv().await.expect("recv");
                let s = d.payload[0] as usize;
                let seq = u32::from_le_bytes(d.payload[1..5].try_into().unwrap());
                assert_eq!(d.payload.len(), 5 + (seq % 300) as usize, "payload intact");
                assert!(
                    d.payload[5..].iter().all(|&b| b == s as u8),
                    "payload intact"
                );
                assert!(seen.insert((s, seq)), "receiver {r} got ({s}, {seq}) twice");
                assert!(loopback || s != r, "receiver {r} got its own datagram");
                counts[r][s].fetch_add(1, Ordering::SeqCst);
                counted.notify_waiters();
            }
            chan
        }));
    }
    let receivers_of = |s: usize| (0..3).filter(move |&r| loopback || r != s);
    for start in (0..PER_SENDER).step_by(BATCH as usize) {
        for (s, tx) in senders.iter().enumerate() {
            for seq in start..start + BATCH {
                let mut p = vec![s as u8; 5 + (seq % 300) as usize];
                p[1..5].copy_from_slice(&seq.to_le_bytes());
                tx.send(&p).await.expect("send");
            }
            let want = (start + BATCH) as usize;
            timeout(PATIENCE, async {
                loop {
                    let more = counted.notified();
                    tokio::pin!(more);
                    // Registered before the counts are read: no count is missed.
                    more.as_mut().enable();
                    if receivers_of(s).all(|r| counts[r][s].load(Ordering::SeqCst) >= want) {
                        break;
                    }
                    more.await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("batch from sender {s} at {start} not received"));
        }
    }
    for t in tasks {
        let chan = timeout(PATIENCE, t)
            .await
            .expect("receiver done")
            .expect("receiver ok");
        // Nothing more arrives: no duplicates in flight.
        let mut chan = chan;
        assert!(
            timeout(Duration::from_millis(100), chan.recv())
                .await
                .is_err()
        );
        let st = chan.stats();
        assert_eq!(st.delivered as usize, expect_per_receiver);
        assert_eq!(st.dropped(), 0);
        assert_eq!(st.sent, u64::from(PER_SENDER));
        if !loopback {
            assert_eq!(st.own_skipped, u64::from(PER_SENDER));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_plain_channels_loopback_on() {
    three_channels(false, true, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_plain_channels_loopback_off() {
    three_channels(false, false, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sealed_channels_loopback_on() {
    three_channels(true, true, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sealed_channels_loopback_off() {
    three_channels(true, false, 4).await;
}

/// A std `UdpSocket` (not hail code) sends to and receives from a plaintext channel.
#[tokio::test]
async fn plain_std_socket_interoperates() {
    let (chan, mut rx) = bind(g4(5, 0), lo()).unwrap();
    let group = chan.group();
    let SocketAddr::V4(g) = group else {
        unreachable!("IPv4 group")
    };
    // Socket options only socket2 can set before bind; then it is a plain std socket.
    let raw = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    raw.set_reuse_address(true).unwrap();
    raw.set_reuse_port(true).unwrap();
    raw.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    raw.bind(&SocketAddr::V4(SocketAddrV4::new(*g.ip(), g.port())).into())
        .unwrap();
    let std_sock: StdUdp = raw.into();
    std_sock
        .join_multicast_v4(g.ip(), &Ipv4Addr::LOCALHOST)
        .unwrap();
    std_sock.set_multicast_ttl_v4(0).unwrap();
    std_sock.set_read_timeout(Some(PATIENCE)).unwrap();

    // std -> channel: the datagram is the raw payload.
    std_sock.send_to(b"from std", group).unwrap();
    let d = timeout(PATIENCE, rx.recv()).await.unwrap().unwrap();
    assert_eq!(&d.payload[..], b"from std");
    // The std socket is bound to the group port; it sends from 127.0.0.1 on that port.
    assert_eq!(
        d.from,
        SocketAddr::from((Ipv4Addr::LOCALHOST, group.port()))
    );

    // channel -> std: exactly the payload, from the channel's send address.
    chan.send(b"from hail").await.unwrap();
    let mut buf = [0u8; 64];
    loop {
        let (n, from) = std_sock.recv_from(&mut buf).unwrap();
        if from.port() == group.port() && &buf[..n] == b"from std" {
            continue; // its own datagram, looped back
        }
        assert_eq!(&buf[..n], b"from hail");
        assert_eq!(vec![from], chan.send_addrs().unwrap());
        break;
    }
}

/// Wrong key, other group, tampering, replays and plaintext are dropped and counted by
/// reason; the channel keeps delivering.
#[tokio::test]
async fn bad_datagrams_are_counted_and_never_stop_the_channel() {
    let (chan, mut rx) = bind(g4(6, 0), lo().key(key(1))).unwrap();
    let group = chan.group();
    let (other_key, _) = bind(group, lo().key(key(2))).unwrap();
    let (peer, _) = bind(group, lo().key(key(1))).unwrap();
    // A raw sender on loopback, to replay and tamper.
    let raw = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    raw.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    raw.set_multicast_ttl_v4(0).unwrap();
    raw.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    let raw: StdUdp = raw.into();
    // And a plain listener to capture a sealed datagram of `peer`.
    let (_, mut tap) = bind(group, lo()).unwrap();

    other_key.send(b"wrong key").await.unwrap();
    peer.send(b"good 1").await.unwrap();
    let captured = loop {
        let d = timeout(PATIENCE, tap.recv()).await.unwrap().unwrap();
        if d.payload.len() == 6 + hail_crypto::OVERHEAD && d.from == peer.send_addrs().unwrap()[0] {
            break d.payload;
        }
    };
    raw.send_to(&captured, group).unwrap(); // replay
    // Tamper with the counter (a tampered body of an accepted counter would be refused as a
    // replay before its tag is even checked).
    let mut tampered = captured.to_vec();
    tampered[28] ^= 0x80;
    raw.send_to(&tampered, group).unwrap();
    raw.send_to(
        b"plaintext on a sealed channel, long enough to parse a header",
        group,
    )
    .unwrap();
    raw.send_to(b"x", group).unwrap();
    peer.send(b"good 2").await.unwrap();

    let d1 = timeout(PATIENCE, rx.recv()).await.unwrap().unwrap();
    let d2 = timeout(PATIENCE, rx.recv()).await.unwrap().unwrap();
    assert_eq!(
        (&d1.payload[..], &d2.payload[..]),
        (&b"good 1"[..], &b"good 2"[..])
    );
    let st = chan.stats();
    assert_eq!(st.delivered, 2);
    assert_eq!(st.dropped_wrong_key, 2, "other key and tampered: {st:?}");
    assert_eq!(st.dropped_replayed, 1, "{st:?}");
    assert_eq!(st.dropped_malformed, 2, "{st:?}");
}

#[tokio::test]
async fn typed_messages_and_undecodable_payloads() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Reading {
        sensor: String,
        celsius: f32,
    }
    let (_, mut rx) = bind(g4(8, 0), lo().key(key(3))).unwrap();
    let (tx, _) = bind(rx.group(), lo().key(key(3))).unwrap();
    tx.send(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap(); // not a Reading
    let want = Reading {
        sensor: "shed".into(),
        celsius: 4.5,
    };
    tx.send_msg(&want).await.unwrap();
    let (got, from) = timeout(PATIENCE, rx.recv_msg::<Reading>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(vec![from], tx.send_addrs().unwrap());
    assert_eq!(rx.stats().dropped_undecodable, 1);
}

#[tokio::test]
async fn stream_of_datagrams() {
    let (_, mut rx) = bind(g4(9, 0), lo()).unwrap();
    let (tx, _) = bind(rx.group(), lo().loopback(false)).unwrap();
    for i in 0..10u8 {
        tx.send(&[i]).await.unwrap();
    }
    let got: Vec<u8> = timeout(
        PATIENCE,
        (&mut rx).take(10).map(|d| d.unwrap().payload[0]).collect(),
    )
    .await
    .unwrap();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn oversized_payloads_are_typed_errors() {
    let (plain, _) = bind(g4(10, 0), lo()).unwrap();
    let (sealed, _) = bind(plain.group(), lo().key(key(1))).unwrap();
    assert_eq!(plain.max_payload(), 65_507);
    assert_eq!(sealed.max_payload(), 65_507 - 45);
    let big = vec![0u8; 65_508];
    match plain.send(&big).await {
        Err(MulticastError::PayloadTooLarge {
            len: 65_508,
            max: 65_507,
        }) => {}
        other => panic!("{other:?}"),
    }
    match sealed.send(&big[..65_463]).await {
        Err(MulticastError::PayloadTooLarge {
            len: 65_463,
            max: 65_462,
        }) => {}
        other => panic!("{other:?}"),
    }
    // The largest payload goes through, sealed.
    sealed.send(&big[..65_462]).await.unwrap();
}

#[tokio::test]
async fn bind_errors_are_typed() {
    let not_mc = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 5000)), lo());
    assert!(matches!(not_mc, Err(MulticastError::NotMulticast(_))));
    let no_if = bind(g4(11, 0), lo().interface("no-such-if0"));
    let Err(MulticastError::InterfaceNotFound { wanted, available }) = no_if else {
        panic!("{no_if:?}");
    };
    assert_eq!(wanted, "no-such-if0");
    assert!(
        available
            .iter()
            .any(|i| i.addrs.contains(&Ipv4Addr::LOCALHOST.into())),
        "the error lists the host's interfaces: {available:?}"
    );
}

#[test]
fn binding_outside_a_runtime_is_a_typed_error() {
    // The configuration needs no runtime (it opens nothing); the sockets do.
    let config = lo().build().expect("a configuration is built anywhere");
    assert!(matches!(
        Channel::bind(g4(12, 0), config),
        Err(MulticastError::NoRuntime)
    ));
}

/// Interfaces named by name, by index and by text join the same loopback interface.
#[tokio::test]
async fn interface_by_name_and_index() {
    let lo_index = nix::net::if_::if_nametoindex("lo").expect("lo exists");
    let on = |i: hail_multicast::Interface| ChannelConfig::builder().interface(i).ttl(0);
    let (_a, mut a) = bind(g4(13, 0), on("lo".into())).unwrap();
    let (b, _) = bind(a.group(), on(lo_index.into())).unwrap();
    // Text is read as a user types it: here an address.
    let (c, _) = bind(a.group(), on("127.0.0.1".into())).unwrap();
    b.send(b"by index").await.unwrap();
    let d = timeout(PATIENCE, a.recv()).await.unwrap().unwrap();
    assert_eq!(&d.payload[..], b"by index");
    c.send(b"by text").await.unwrap();
    let d = timeout(PATIENCE, a.recv()).await.unwrap().unwrap();
    assert_eq!(&d.payload[..], b"by text");
}

/// `close` on any handle wakes a receiver waiting on its socket on another task, which ends
/// (its stream too) and leaves the group; the handles' sends fail from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_a_receiver_waiting_on_its_socket() {
    let (chan, mut rx) = bind(g4(14, 0), lo()).unwrap();
    let (peer, _peer_rx) = bind(chan.group(), lo()).unwrap();
    let waiting = tokio::spawn(async move {
        let first = rx.recv().await.map(|d| d.payload);
        // Nothing more is sent: this waits until the close.
        let end = rx.next().await;
        (first, end)
    });
    peer.send(b"before").await.unwrap();
    // The close comes from a clone while the receiver waits (or is about to).
    let stats = chan.clone().close();
    let (first, end) = timeout(PATIENCE, waiting)
        .await
        .expect("the close ended the receiver")
        .unwrap();
    // The datagram was received, or the close came first; either way the receiver ended.
    match first {
        Ok(p) => assert_eq!(&p[..], b"before"),
        Err(e) => assert!(matches!(e, MulticastError::Closed), "{e:?}"),
    }
    assert!(end.is_none(), "the stream ends at the close");
    assert!(chan.is_closed());
    assert!(matches!(
        chan.send(b"after").await,
        Err(MulticastError::Closed)
    ));
    assert!(
        stats.sent == 0 && !peer.is_closed(),
        "the peer is another channel"
    );
    peer.send(b"the peer goes on").await.unwrap();
}

/// `bind_in` resolves the configured interfaces in the listing it is given, not in a fresh
/// one: with the host's listing it joins loopback as `bind` does; with a listing that
/// lacks loopback the interface is not found (though the host has it); a bus channel
/// needs no listing at all.
#[tokio::test]
async fn bind_in_resolves_in_the_listing_it_is_given() {
    let table = hail_multicast::interfaces().expect("the host's interfaces");
    let (a, mut ra) = Channel::bind_in(g4(15, 0), lo().build().unwrap(), &table).unwrap();
    let (b, _) = Channel::bind_in(ra.group(), lo().build().unwrap(), &table).unwrap();
    b.send(b"listed once").await.unwrap();
    let d = timeout(PATIENCE, ra.recv()).await.unwrap().unwrap();
    assert_eq!(&d.payload[..], b"listed once");
    assert_eq!(a.group(), b.group());
    let without: Vec<_> = table
        .iter()
        .filter(|i| !i.addrs.contains(&Ipv4Addr::LOCALHOST.into()))
        .cloned()
        .collect();
    let missing = Channel::bind_in(g4(15, 0), lo().build().unwrap(), &without);
    assert!(
        matches!(missing, Err(MulticastError::InterfaceNotFound { .. })),
        "{missing:?}"
    );
    let bus = hail_multicast::memory::Bus::new();
    let on_bus = ChannelConfig::builder().memory(&bus).build().unwrap();
    let (c, _) = Channel::bind_in(g4(15, 5676), on_bus, &[]).expect("a bus channel");
    assert_eq!(c.group(), g4(15, 5676));
}
