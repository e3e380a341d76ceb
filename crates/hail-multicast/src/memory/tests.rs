//! Channels on an in-memory bus, all under paused tokio time.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use hail_crypto::GroupKey;
use tokio::time::timeout;

use super::*;
use crate::{
    Channel, ChannelConfig, ChannelConfigBuilder, Datagram, MAX_UDP_PAYLOAD_V4, MAX_UDP_PAYLOAD_V6,
    Receiver,
};

const GROUP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 42, 1)), 4299);

fn on(bus: &Bus) -> ChannelConfigBuilder {
    ChannelConfig::builder().memory(bus)
}

/// A channel and its receiver on `GROUP` as `b` says.
fn bind(b: ChannelConfigBuilder) -> (Channel, Receiver) {
    bind_to(GROUP, b).unwrap()
}

fn bind_to(
    group: SocketAddr,
    b: ChannelConfigBuilder,
) -> Result<(Channel, Receiver), MulticastError> {
    Channel::bind(group, b.build().unwrap())
}

fn key(b: u8) -> GroupKey {
    GroupKey::from_bytes([b; 32])
}

/// Receives until nothing more is queued. The bus delivers at send time, so a millisecond of
/// paused time (which passes only once every task waits) sees everything sent so far, also
/// across the yields of a long run of dropped datagrams.
async fn drain(chan: &mut Receiver) -> Vec<Datagram> {
    let mut out = Vec::new();
    while let Ok(d) = timeout(Duration::from_millis(1), chan.recv()).await {
        out.push(d.expect("bus channels do not fail"));
    }
    out
}

async fn three_members(sealed: bool, loopback: bool) {
    let bus = Bus::new();
    let build = || {
        let mut b = on(&bus).loopback(loopback);
        if sealed {
            b = b.key(key(7));
        }
        bind(b)
    };
    let mut chans = [build(), build(), build()];
    let addrs: Vec<SocketAddr> = chans
        .iter()
        .map(|(c, _)| c.send_addrs().unwrap()[0])
        .collect();
    assert_eq!(bus.members(GROUP), addrs);
    for (s, (c, _)) in chans.iter().enumerate() {
        for seq in 0..100u8 {
            c.send(&[s as u8, seq]).await.unwrap();
        }
    }
    for (r, (c, rx)) in chans.iter_mut().enumerate() {
        let got = drain(rx).await;
        let mut per_sender: HashMap<SocketAddr, Vec<u8>> = HashMap::new();
        for d in &got {
            assert_eq!(
                d.from, addrs[d.payload[0] as usize],
                "from is the sender's address"
            );
            per_sender.entry(d.from).or_default().push(d.payload[1]);
        }
        for (s, a) in addrs.iter().enumerate() {
            let want: Vec<u8> = if s == r && !loopback {
                vec![]
            } else {
                (0..100).collect()
            };
            assert_eq!(
                per_sender.remove(a).unwrap_or_default(),
                want,
                "{r} from {s}"
            );
        }
        let st = c.stats();
        assert_eq!(st.sent, 100);
        assert_eq!(st.delivered, got.len() as u64);
        assert_eq!(st.own_skipped, if loopback { 0 } else { 100 });
        assert_eq!(st.dropped(), 0);
    }
    assert_eq!(bus.stats().sent, 300);
    assert_eq!(bus.stats().delivered, 900);
}

#[tokio::test(start_paused = true)]
async fn three_plain_members_loopback_on() {
    three_members(false, true).await;
}

#[tokio::test(start_paused = true)]
async fn three_plain_members_loopback_off() {
    three_members(false, false).await;
}

#[tokio::test(start_paused = true)]
async fn three_sealed_members_loopback_on() {
    three_members(true, true).await;
}

#[tokio::test(start_paused = true)]
async fn three_sealed_members_loopback_off() {
    three_members(true, false).await;
}

#[tokio::test(start_paused = true)]
async fn bad_datagrams_are_counted_by_reason_as_on_udp() {
    let bus = Bus::new();
    let (chan, mut chan_rx) = bind(on(&bus).key(key(1)));
    let (peer, _peer_rx) = bind(on(&bus).key(key(1)));
    let (other_key, _other_rx) = bind(on(&bus).key(key(2)));
    let (tap, mut tap_rx) = bind(on(&bus)); // plain: sees sealed bytes as they travel
    peer.send(b"good 1").await.unwrap();
    other_key.send(b"wrong key").await.unwrap();
    let captured = drain(&mut tap_rx)
        .await
        .into_iter()
        .find(|d| d.from == peer.send_addrs().unwrap()[0])
        .expect("the tap saw the sealed datagram")
        .payload;
    tap.send(&captured).await.unwrap(); // a replay
    let mut tampered = captured.to_vec();
    tampered[28] ^= 0x80;
    tap.send(&tampered).await.unwrap();
    tap.send(b"x").await.unwrap(); // malformed
    for _ in 0..200 {
        tap.send(b"a flood of short junk, longer than the budget of drops in a row")
            .await
            .unwrap();
    }
    peer.send(b"good 2").await.unwrap();
    let got: Vec<Bytes> = drain(&mut chan_rx)
        .await
        .into_iter()
        .map(|d| d.payload)
        .collect();
    assert_eq!(got, [&b"good 1"[..], &b"good 2"[..]]);
    let st = chan.stats();
    assert_eq!(st.delivered, 2);
    assert_eq!(st.dropped_wrong_key, 2, "{st:?}");
    assert_eq!(st.dropped_replayed, 1, "{st:?}");
    assert_eq!(st.dropped_malformed, 201, "{st:?}");
}

#[tokio::test(start_paused = true)]
async fn payload_limits_are_those_of_udp() {
    let bus = Bus::new();
    let (plain, _) = bind(on(&bus));
    let (sealed, _) = bind(on(&bus).key(key(1)));
    let (v6, _) = bind_to(
        SocketAddr::from(([0xff02, 0, 0, 0, 0, 0, 1, 2], 5)),
        on(&bus),
    )
    .unwrap();
    assert_eq!(plain.max_payload(), MAX_UDP_PAYLOAD_V4);
    assert_eq!(
        sealed.max_payload(),
        MAX_UDP_PAYLOAD_V4 - hail_crypto::OVERHEAD
    );
    assert_eq!(v6.max_payload(), MAX_UDP_PAYLOAD_V6);
    let big = vec![0u8; MAX_UDP_PAYLOAD_V6 + 1];
    assert!(matches!(
        plain.send(&big[..MAX_UDP_PAYLOAD_V4 + 1]).await,
        Err(MulticastError::PayloadTooLarge {
            len: 65_508,
            max: 65_507
        })
    ));
    assert!(matches!(
        v6.send(&big).await,
        Err(MulticastError::PayloadTooLarge {
            len: 65_528,
            max: 65_527
        })
    ));
    // The largest payload goes through whole, sealed, to a member with a default queue.
    let (_rx_chan, mut rx) = bind(on(&bus).key(key(1)));
    sealed.send(&big[..sealed.max_payload()]).await.unwrap();
    let d = drain(&mut rx).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].payload.len(), sealed.max_payload());
}

#[tokio::test(start_paused = true)]
async fn addresses_are_distinct_given_or_assigned_and_freed_when_unused() {
    let bus = Bus::new();
    let (a, a_rx) = bind(on(&bus));
    let (b, _b_rx) = bind(on(&bus));
    let (aa, ba) = (a.send_addrs().unwrap()[0], b.send_addrs().unwrap()[0]);
    assert_eq!(aa, "127.0.1.1:49152".parse().unwrap());
    assert_eq!(ba, "127.0.1.2:49152".parse().unwrap());
    let mine: SocketAddr = "127.9.9.9:7000".parse().unwrap();
    let at = |addr: &str| ChannelConfig::builder().memory_at(&bus, addr.parse().unwrap());
    let (c, c_rx) = bind(at("127.9.9.9:7000"));
    assert_eq!(c.send_addrs().unwrap(), [mine]);
    // In use, by a channel, its receiver, or both.
    let taken = bind_to(GROUP, at("127.9.9.9:7000"));
    assert!(
        matches!(taken, Err(MulticastError::Io(ref e)) if e.kind() == io::ErrorKind::AddrInUse)
    );
    drop(c_rx);
    assert_eq!(
        bus.members(GROUP),
        [aa, ba],
        "a dropped receiver leaves the group"
    );
    assert!(bind_to(GROUP, at("127.9.9.9:7000")).is_err());
    drop(c);
    let (again, _again_rx) = bind(at("127.9.9.9:7000"));
    assert_eq!(again.send_addrs().unwrap(), [mine]);
    // Port 0: the bus picks one. The family must be the group's.
    let (zero, _zero_rx) = bind(at("127.9.9.9:0"));
    assert_eq!(zero.send_addrs().unwrap()[0].port(), 49_152);
    let v6 = bind_to(GROUP, at("[::1]:5"));
    assert!(
        matches!(v6, Err(MulticastError::Io(ref e)) if e.kind() == io::ErrorKind::InvalidInput)
    );
    // Assigned IPv6 addresses come from the unique-local prefix; never reused.
    let g6 = SocketAddr::from(([0xff02, 0, 0, 0, 0, 0, 1, 2], 5));
    let (m6, _m6_rx) = bind_to(g6, on(&bus)).unwrap();
    assert_eq!(
        m6.send_addrs().unwrap()[0],
        "[fd00:6861:696c::3]:49152".parse().unwrap()
    );
    drop((a, a_rx));
    let (d, _d_rx) = bind(on(&bus));
    assert_eq!(
        d.send_addrs().unwrap()[0],
        "127.0.1.4:49152".parse().unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn groups_ports_and_buses_are_separate() {
    let bus = Bus::new();
    let other_bus = Bus::new();
    let (_a, mut a_rx) = bind(on(&bus));
    let (other_port, _) = bind_to(SocketAddr::new(GROUP.ip(), 4300), on(&bus)).unwrap();
    let (other_group, _) = bind_to(SocketAddr::from(([239, 255, 42, 2], 4299)), on(&bus)).unwrap();
    let (elsewhere, _) = bind(on(&other_bus));
    for c in [&other_port, &other_group, &elsewhere] {
        c.send(b"not for a").await.unwrap();
    }
    assert!(drain(&mut a_rx).await.is_empty());
    // Port 0 picks a port no group of that address uses; others join with the real one.
    let (picked, mut picked_rx) = bind_to(SocketAddr::new(GROUP.ip(), 0), on(&bus)).unwrap();
    assert_eq!(picked.group().port(), 40_000);
    assert_eq!(picked_rx.group(), picked.group());
    let (joiner, _) = bind_to(picked.group(), on(&bus)).unwrap();
    joiner.send(b"hi").await.unwrap();
    assert_eq!(drain(&mut picked_rx).await.len(), 1);
    assert!(matches!(
        bind_to(SocketAddr::from(([10, 0, 0, 1], 5)), on(&bus)),
        Err(MulticastError::NotMulticast(_))
    ));
}

#[test]
fn a_bus_channel_needs_no_runtime() {
    let bus = Bus::new();
    let (_a, mut a_rx) = bind(on(&bus));
    let (b, _b_rx) = bind(on(&bus));
    futures_executor_block_on(async {
        b.send(b"no runtime").await.unwrap();
        assert_eq!(&a_rx.recv().await.unwrap().payload[..], b"no runtime");
    });
}

/// A minimal executor: polls the future on this thread until it is ready.
fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::Wake;
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[tokio::test(start_paused = true)]
async fn every_nth_loss_is_exact_and_spares_own_copies() {
    let bus = Bus::new();
    let (me, mut rx) = bind(on(&bus));
    let (tx, _tx_rx) = bind(on(&bus));
    let rx_addr = me.send_addrs().unwrap()[0];
    assert!(bus.set_loss(rx_addr, Loss::every_nth(3)));
    assert!(!bus.set_loss("127.200.0.1:1".parse().unwrap(), Loss::ALL));
    for i in 0..30u8 {
        tx.send(&[i]).await.unwrap();
    }
    me.send(b"own").await.unwrap();
    let got: Vec<u8> = drain(&mut rx).await.iter().map(|d| d.payload[0]).collect();
    let want: Vec<u8> = (0..30u8)
        .filter(|i| (i + 1) % 3 != 0)
        .chain([b'o'])
        .collect();
    assert_eq!(got, want);
    assert_eq!(bus.stats().lost, 10);
    // A partition, then healed.
    bus.set_loss(rx_addr, Loss::ALL);
    tx.send(b"cut off").await.unwrap();
    assert!(drain(&mut rx).await.is_empty());
    bus.set_loss(rx_addr, Loss::NONE);
    tx.send(b"healed").await.unwrap();
    assert_eq!(drain(&mut rx).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn random_loss_is_repeatable_from_its_seed() {
    async fn pattern(seed: u64) -> Vec<u16> {
        let bus = Bus::new();
        let (me, mut rx) = bind(on(&bus));
        let (tx, _tx_rx) = bind(on(&bus));
        bus.set_loss(me.send_addrs().unwrap()[0], Loss::random(0.25, seed));
        for i in 0..1000u16 {
            tx.send(&i.to_be_bytes()).await.unwrap();
        }
        drain(&mut rx)
            .await
            .iter()
            .map(|d| u16::from_be_bytes([d.payload[0], d.payload[1]]))
            .collect()
    }
    let (a, b, c) = (pattern(1).await, pattern(1).await, pattern(2).await);
    assert_eq!(a, b, "same seed, same losses");
    assert_ne!(a, c, "another seed, other losses");
    assert!(
        (650..=850).contains(&a.len()),
        "about 75% arrive: {}",
        a.len()
    );
    assert_eq!(Loss::random(0.0, 9), Loss::NONE);
    assert_eq!(Loss::random(f64::NAN, 9), Loss::NONE);
    assert_eq!(Loss::random(1.5, 9), Loss::ALL);
    assert_eq!(Loss::every_nth(0), Loss::NONE);
    assert_eq!(Loss::every_nth(1), Loss::ALL);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_and_counts_like_a_socket_buffer() {
    let bus = Bus::new();
    // Room for 10 datagrams of 36 bytes (36 + 64 charged each).
    let (_me, mut rx) = bind(on(&bus).recv_buffer_size(1000));
    let (tx, _tx_rx) = bind(on(&bus));
    for i in 0..25u8 {
        tx.send(&[i; 36]).await.unwrap();
    }
    let got: Vec<u8> = drain(&mut rx).await.iter().map(|d| d.payload[0]).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!(bus.stats().overflowed, 15);
    // Drained, it takes more; an empty queue takes one datagram even if over its size.
    tx.send(&[0; 5000]).await.unwrap();
    assert_eq!(drain(&mut rx).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn paused_time_runs_on_while_a_member_waits() {
    let bus = Bus::new();
    let (_me, mut rx) = bind(on(&bus));
    let (tx, _tx_rx) = bind(on(&bus));
    let start = tokio::time::Instant::now();
    // Nothing sent: a long wait ends at once in real time, an hour later in tokio time.
    assert!(timeout(Duration::from_secs(3600), rx.recv()).await.is_err());
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
    // A sender on a timer, a receiver waiting on the bus.
    let task = tokio::spawn(async move {
        for i in 0..5u8 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            tx.send_msg(&i).await.unwrap();
        }
    });
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(rx.recv_msg::<u8>().await.unwrap().0);
    }
    task.await.unwrap();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!(start.elapsed(), Duration::from_secs(3650));
}

#[tokio::test(start_paused = true)]
async fn typed_messages_and_the_stream() {
    let bus = Bus::new();
    let (_me, mut rx) = bind(on(&bus).key(key(3)));
    let (tx, _tx_rx) = bind(on(&bus).key(key(3)).loopback(false));
    tx.send(&[0xff; 6]).await.unwrap(); // not a (String, f32)
    tx.send_msg(&("shed", 4.5f32)).await.unwrap();
    let (msg, from) = rx.recv_msg::<(String, f32)>().await.unwrap();
    assert_eq!(msg, ("shed".to_string(), 4.5));
    assert_eq!(from, tx.send_addrs().unwrap()[0]);
    assert_eq!(rx.stats().dropped_undecodable, 1);
    for i in 0..10u8 {
        tx.clone().send(&[i]).await.unwrap();
    }
    let got: Vec<u8> = (&mut rx)
        .take(10)
        .map(|d| d.unwrap().payload[0])
        .collect()
        .await;
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert!(format!("{tx:?}").contains("memory"));
}

#[tokio::test(start_paused = true)]
async fn close_ends_a_waiting_receiver_and_every_handle() {
    let bus = Bus::new();
    let (chan, mut rx) = bind(on(&bus));
    let (peer, mut peer_rx) = bind(on(&bus));
    let clone = chan.clone();
    // A receiver waiting on its own task: the close wakes it, and it ends.
    let waiting = tokio::spawn(async move {
        let first = rx.recv().await.map(|d| d.payload);
        let after = rx.recv().await.map(|d| d.payload);
        (first, after, rx)
    });
    peer.send(b"one").await.unwrap();
    tokio::task::yield_now().await;
    let stats = clone.close();
    let (first, after, rx) = timeout(Duration::from_secs(3600), waiting)
        .await
        .expect("the close woke the waiting receiver")
        .unwrap();
    assert_eq!(first.unwrap(), &b"one"[..]);
    assert!(matches!(after, Err(MulticastError::Closed)));
    assert_eq!(stats.delivered, 1);
    assert!(chan.is_closed(), "one close closes every clone");
    assert!(matches!(chan.send(b"x").await, Err(MulticastError::Closed)));
    assert!(format!("{rx:?}").contains("ended: true"));
    assert_eq!(
        bus.members(GROUP),
        [peer.send_addrs().unwrap()[0]],
        "the ended receiver left the group"
    );
    // The stream of a closed channel ends; the other channel goes on.
    let mut rx = rx;
    assert!(rx.next().await.is_none());
    peer.send(b"two").await.unwrap();
    assert_eq!(drain(&mut peer_rx).await.len(), 2);
    // Closed before the receiver ever waited; dropping handles alone does not end it.
    let (a, mut a_rx) = bind(on(&bus));
    let (b, mut b_rx) = bind(on(&bus));
    drop(b);
    peer.send(b"three").await.unwrap();
    assert_eq!(
        drain(&mut b_rx).await.len(),
        1,
        "a receiver outlives its handles"
    );
    a.close();
    assert!(matches!(a_rx.recv().await, Err(MulticastError::Closed)));
    assert!(matches!(
        a_rx.recv_msg::<u8>().await,
        Err(MulticastError::Closed)
    ));
}
