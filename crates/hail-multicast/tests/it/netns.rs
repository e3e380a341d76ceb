//! Tests in network namespaces the test creates (root only; skipped with a printed reason
//! otherwise): IPv6 multicast over a veth pair, and two "hosts" on a bridge with loss.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hail_multicast::{Channel, ChannelConfig};
use hail_testsupport::{
    Lan, Namespaces, OrSkip, impairment, in_netns, ip, link_local_pair, nft, report, veth,
};
use tokio::sync::{Notify, watch};
use tokio::time::timeout;

use crate::{PATIENCE, key};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// IPv6: a link-scoped group (ff02::) between two namespaces joined by a veth pair. (On
/// this host's own `lo`, IPv6 multicast is unroutable: `lo` has no MULTICAST flag.)
#[test]
fn ipv6_link_scope_over_veth() {
    let Some(mut ns) = Namespaces::for_test("v6").or_skip() else {
        return;
    };
    let (a, b) = link_local_pair(&mut ns).expect("veth pair with link-local addresses");
    let group: SocketAddr = "[ff02::4a1:77]:47751".parse().unwrap();
    let ready = Arc::new(Barrier::new(2));
    // The receiver's word that it has all (or gave up), which ends the sender's rounds.
    let (done_tx, done) = watch::channel(false);
    let rx_thread = {
        let ready = Arc::clone(&ready);
        in_netns(&b, move || {
            runtime().block_on(async move {
                let (_chan, mut rx) = Channel::bind(
                    group,
                    ChannelConfig::builder()
                        .interface("v1")
                        .key(key(4))
                        .build()
                        .unwrap(),
                )
                .unwrap();
                ready.wait();
                let mut got = HashSet::new();
                let deadline = Instant::now() + PATIENCE;
                while got.len() < 100 && Instant::now() < deadline {
                    if let Ok(d) = timeout(Duration::from_millis(50), rx.recv()).await {
                        let d = d.unwrap();
                        assert!(
                            d.payload.len() == 40 && d.payload.iter().all(|&x| x == d.payload[0])
                        );
                        assert!(
                            matches!(d.from, SocketAddr::V6(v6) if v6.ip().segments()[0] == 0xfe80)
                        );
                        got.insert(d.payload[0]);
                    }
                }
                done_tx.send_replace(true);
                (got.len(), rx.stats())
            })
        })
    };
    let tx_thread = {
        let (ready, mut done) = (Arc::clone(&ready), done);
        in_netns(&a, move || {
            runtime().block_on(async move {
                let (tx, _rx) = Channel::bind(
                    group,
                    ChannelConfig::builder()
                        .interface("v0")
                        .key(key(4))
                        .build()
                        .unwrap(),
                )
                .unwrap();
                ready.wait();
                // veth drops nothing, but the link may need a moment after coming up:
                // repeat the 100 datagrams until the receiver has them all (replays of
                // delivered ones are refused and counted).
                while !*done.borrow_and_update() {
                    for i in 0..100u8 {
                        tx.send(&[i; 40]).await.unwrap();
                    }
                    // Real time: a real veth coming up, so the rounds go again every
                    // 20 ms (a resend timer) until the receiver says it has all; its word
                    // ends the wait at once; an end without its word (it panicked) ends
                    // the rounds too.
                    if let Ok(Err(_)) = timeout(Duration::from_millis(20), done.changed()).await {
                        break;
                    }
                }
            });
        })
    };
    let (got, stats) = rx_thread.join().expect("receiver");
    tx_thread.join().expect("sender");
    assert_eq!(got, 100);
    assert_eq!(
        stats.delivered, 100,
        "each delivered exactly once: {stats:?}"
    );
    assert_eq!(
        stats.dropped_malformed + stats.dropped_wrong_key,
        0,
        "{stats:?}"
    );
}

/// Two hosts (namespaces) on a bridge, a sealed channel across them, and 10% of the
/// receiver's multicast dropped by nftables: about 90% arrive, none corrupt or duplicated.
#[test]
fn two_hosts_on_a_bridge_with_loss() {
    let Some(lan) = Namespaces::for_test("br")
        .and_then(Namespaces::require_nft)
        .and_then(|ns| Lan::create(ns, [10, 77, 0], 2))
        .or_skip()
    else {
        return;
    };
    let (a, b) = (lan.host(0).to_owned(), lan.host(1).to_owned());
    let b_ip = lan.host_ip(1);
    let group_ip = Ipv4Addr::new(239, 255, 77, 50);
    let port = 47_750u16;
    // 10% loss of the group's datagrams arriving at host b.
    nft(
        &b,
        &impairment(10, 0, Some(SocketAddrV4::new(group_ip, port))),
    )
    .expect("nft rules");

    const N: u32 = 2_000;
    let done = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(2));
    let received = Arc::new(AtomicU32::new(0));
    // Rung by the receiver each time it counts a datagram (from its runtime to the
    // sender's: `Notify` needs none of its own).
    let counted = Arc::new(Notify::new());
    let rx_thread = {
        let (done, ready, received, counted) = (
            Arc::clone(&done),
            Arc::clone(&ready),
            Arc::clone(&received),
            Arc::clone(&counted),
        );
        in_netns(&b, move || {
            runtime().block_on(async move {
                let (_chan, mut rx) = Channel::bind(
                    (group_ip, port),
                    ChannelConfig::builder()
                        .interface(b_ip)
                        .key(key(5))
                        .recv_buffer_size(1 << 22)
                        .build()
                        .unwrap(),
                )
                .unwrap();
                ready.wait();
                let mut seen = HashSet::new();
                loop {
                    match timeout(Duration::from_millis(300), rx.recv()).await {
                        Ok(d) => {
                            let d = d.unwrap();
                            let i = u32::from_le_bytes(d.payload[..4].try_into().unwrap());
                            assert!(i < N, "corrupt index {i}");
                            let body = &d.payload[4..];
                            assert!(
                                body.len() == 200 && body.iter().all(|&x| x == i as u8),
                                "corrupt body"
                            );
                            assert!(seen.insert(i), "duplicate {i}");
                            received.fetch_add(1, Ordering::Relaxed);
                            counted.notify_waiters();
                        }
                        Err(_) if done.load(Ordering::SeqCst) => break,
                        Err(_) => {}
                    }
                }
                (seen.len() as u32, rx.stats())
            })
        })
    };
    let tx_thread = {
        let (done, ready, received, counted) = (
            Arc::clone(&done),
            Arc::clone(&ready),
            Arc::clone(&received),
            Arc::clone(&counted),
        );
        in_netns(&a, move || {
            runtime().block_on(async move {
                let (tx, _rx) = Channel::bind(
                    (group_ip, port),
                    ChannelConfig::builder()
                        .interface("eth0")
                        .key(key(5))
                        .loopback(false)
                        .build()
                        .unwrap(),
                )
                .unwrap();
                ready.wait();
                let start = Instant::now();
                for i in 0..N {
                    let mut p = vec![i as u8; 204];
                    p[..4].copy_from_slice(&i.to_le_bytes());
                    tx.send(&p).await.unwrap();
                    // Pace: stay about 100 datagrams ahead of the receiver, counting the
                    // tenth that nftables drops, so socket buffers never overflow.
                    loop {
                        let more = counted.notified();
                        tokio::pin!(more);
                        // Registered before the count is read: no count is missed.
                        more.as_mut().enable();
                        if i * 9 / 10 <= received.load(Ordering::Relaxed) + 100 {
                            break;
                        }
                        let left = PATIENCE.saturating_sub(start.elapsed());
                        if timeout(left, more).await.is_err() {
                            break;
                        }
                    }
                }
                done.store(true, Ordering::SeqCst);
            });
        })
    };
    tx_thread.join().expect("sender");
    let (got, stats) = rx_thread.join().expect("receiver");
    let share = f64::from(got) / f64::from(N);
    report(&format!(
        "{got} of {N} datagrams arrived through 10% loss ({:.1}%)",
        share * 100.0
    ));
    assert!(
        (0.85..=0.95).contains(&share),
        "{got} of {N} arrived with 10% loss"
    );
    assert_eq!(stats.dropped(), 0, "{stats:?}");
    assert_eq!(stats.delivered, u64::from(got));
}

/// With no interface given, a channel joins every up, multicast-capable interface: in a
/// namespace with `lo` and one veth, that is the veth alone.
#[test]
fn default_interfaces_are_the_multicast_capable_ones() {
    let Some(mut ns) = Namespaces::for_test("def").or_skip() else {
        return;
    };
    let a = ns.add("a").expect("namespace a");
    let b = ns.add("b").expect("namespace b");
    veth((&a, "e0"), (&b, "e0")).expect("veth pair");
    for args in [
        vec!["-n", &a, "addr", "add", "10.79.0.1/24", "dev", "e0"],
        vec!["-n", &b, "addr", "add", "10.79.0.2/24", "dev", "e0"],
    ] {
        ip(&args).expect("set up veth pair");
    }
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 77, 60), 47_760));
    let ready = Arc::new(Barrier::new(2));
    // The receiver's word that it has one, which ends the sender's resends.
    let (got_tx, got_in_b) = watch::channel(false);
    let b_thread = {
        let ready = Arc::clone(&ready);
        in_netns(&b, move || {
            runtime().block_on(async move {
                let (_chan, mut rx) = Channel::bind(
                    group,
                    ChannelConfig::builder().interface("e0").build().unwrap(),
                )
                .unwrap();
                ready.wait();
                let d = timeout(PATIENCE, async {
                    loop {
                        let d = rx.recv().await.unwrap();
                        if &d.payload[..] == b"default" {
                            break d;
                        }
                    }
                })
                .await
                .expect("datagram from the default channel");
                got_tx.send_replace(true);
                d.from
            })
        })
    };
    let a_thread = {
        let (ready, mut got_in_b) = (Arc::clone(&ready), got_in_b);
        in_netns(&a, move || {
            runtime().block_on(async move {
                let (tx, _rx) = Channel::bind(group, ChannelConfig::builder().build().unwrap())
                    .expect("default interfaces");
                let addrs = tx.send_addrs().unwrap();
                ready.wait();
                let deadline = Instant::now() + PATIENCE;
                while !*got_in_b.borrow_and_update() && Instant::now() < deadline {
                    tx.send(b"default").await.unwrap();
                    // Real time: a real veth coming up, so the datagram goes again every
                    // 20 ms (a resend timer) until the receiver has one; its word ends
                    // the wait at once, as its end without a word does (it asserts on what
                    // it got, not on timing).
                    if let Ok(Err(_)) = timeout(Duration::from_millis(20), got_in_b.changed()).await
                    {
                        break;
                    }
                }
                addrs
            })
        })
    };
    let from = b_thread.join().expect("receiver");
    let addrs = a_thread.join().expect("sender");
    assert_eq!(
        addrs.len(),
        1,
        "lo is not multicast-capable, e0 is: {addrs:?}"
    );
    assert_eq!(addrs[0].ip(), Ipv4Addr::new(10, 79, 0, 1));
    assert_eq!(from, addrs[0]);
}
