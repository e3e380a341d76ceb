//! Interfaces that change while devices run (issue 17 item 3), in namespaces joined by
//! veths. Root only; skipped with a printed reason otherwise.
//!
//! An address added (the first test):
//! The device's veth `d0` starts with `10.91.0.1/32` only: the peer (`p0`, `10.92.0.2/24`)
//! hears its announces (multicast needs no route back) but has no route to `10.91.0.1`, so
//! its dials fail. Then `10.92.0.1/24` is added to `d0`: the device, which follows its
//! interfaces, announces it, and the peer links to it there. The peer listens on its own
//! loopback only, so the device can never dial it: the link can only be the peer's, to the
//! address that was added.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

use hail_discovery::{DEFAULT_GROUP, DEFAULT_GROUP_V6, Device, DeviceEvent, PeerInfo, RunError};
use hail_testsupport::{Family, Lan, Namespaces, OrSkip, host_link_local, in_netns, ip, veth};

use crate::host::{meet, no_rp_filter, runtime};
use crate::wait::wait_for;

const GROUP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 255, 72, 93)), 47_793);
const OLD: Ipv4Addr = Ipv4Addr::new(10, 91, 0, 1);
const ADDED: Ipv4Addr = Ipv4Addr::new(10, 92, 0, 1);

#[test]
fn an_address_added_while_running_is_announced_and_reached() {
    let Some(mut ns) = Namespaces::for_test("rt").or_skip() else {
        return;
    };
    let d = ns.add("d").expect("namespace d");
    let p = ns.add("p").expect("namespace p");
    veth((&d, "d0"), (&p, "p0")).expect("veth pair");
    ip(&["-n", &d, "addr", "add", "10.91.0.1/32", "dev", "d0"]).expect("address");
    ip(&["-n", &p, "addr", "add", "10.92.0.2/24", "dev", "p0"]).expect("address");
    for (n, i) in [(&d, "d0"), (&p, "p0")] {
        ip(&["-n", n, "route", "add", "224.0.0.0/4", "dev", i]).expect("multicast route");
        no_rp_filter(n, i);
    }
    let (failed_tx, failed_rx) = mpsc::channel::<Vec<SocketAddr>>();
    let ((d_tx, d_rx), (p_tx, p_rx)) = (mpsc::channel(), mpsc::channel());
    let device = in_netns(&d, move || {
        runtime().block_on(async move {
            let (dev, _events) = Device::builder("rt-device")
                .group(GROUP)
                .interface("d0")
                .interface_check(Some(Duration::from_millis(200)))
                .start()
                .await
                .expect("device starts");
            let joined =
                tokio::time::timeout(Duration::from_secs(30), dev.wait_for_peer("rt-peer"))
                    .await
                    .is_ok();
            meet(&d_tx, p_rx, joined).await;
            dev.close().await;
            joined
        })
    });

    let peer = in_netns(&p, move || {
        runtime().block_on(async move {
            let (dev, mut events) = Device::builder("rt-peer")
                .group(GROUP)
                .interface("p0")
                .listen("127.0.0.1:0".parse().expect("an address"))
                .start()
                .await
                .expect("peer starts");
            // Its dials to the device fail while the device has only its old address.
            let first = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    match events.recv().await.expect("peer running") {
                        DeviceEvent::Error(RunError::DialFailed { addrs, .. }) => return addrs,
                        DeviceEvent::PeerJoined(p) => panic!("joined before the address: {p:?}"),
                        _ => {}
                    }
                }
            })
            .await
            .expect("the peer's dials fail first");
            failed_tx.send(first).expect("main waits");
            let info: Option<PeerInfo> =
                tokio::time::timeout(Duration::from_secs(30), dev.wait_for_peer("rt-device"))
                    .await
                    .ok();
            meet(&p_tx, d_rx, info.is_some()).await;
            dev.close().await;
            info
        })
    });

    let failed = failed_rx
        .recv_timeout(Duration::from_secs(40))
        .expect("the peer reports failed dials");
    assert!(
        failed.iter().all(|a| a.ip() == IpAddr::V4(OLD)),
        "the peer dialed only the old address: {failed:?}"
    );
    ip(&["-n", &d, "addr", "add", "10.92.0.1/24", "dev", "d0"]).expect("address added");
    let info = peer.join().expect("peer thread");
    let joined = device.join().expect("device thread");
    let info = info.expect("the peer joined the device on the added address");
    assert!(joined, "the device joined the peer");
    assert!(
        info.addresses.iter().any(|a| a.ip() == IpAddr::V4(ADDED)),
        "the added address is advertised: {info:?}"
    );
}

/// A default group not joined at start is joined when its family appears, and left when
/// it goes away (issue 17 item 3: "re-advertised, not a restart"). h0 starts IPv4-only
/// (its link-local address removed), so its device, on the defaults, joins the IPv4 group
/// alone; h1 is IPv6-only. Then h0's link-local address comes (back): its device joins the
/// IPv6 group, announces there, and the two meet. Then the address goes: the IPv6 group is
/// left, the IPv4 one stays.
#[test]
fn a_default_group_is_joined_when_its_family_appears_and_left_when_it_goes() {
    let Some(ns) = Namespaces::for_test("grow").or_skip() else {
        return;
    };
    let lan = Lan::create_with(ns, [10, 95, 0], 2, Family::Dual, false).expect("a dual-stack LAN");
    let ll = format!("{}/64", host_link_local(0));
    ip(&["-n", lan.host(0), "addr", "del", &ll, "dev", "eth0"]).expect("h0 IPv4-only");
    let v4_of_h1 = format!("{}/24", lan.host_ip(1));
    ip(&["-n", lan.host(1), "addr", "del", &v4_of_h1, "dev", "eth0"]).expect("h1 IPv6-only");
    let (started_tx, started_rx) = mpsc::channel::<Vec<SocketAddr>>();
    let (joined_tx, joined_rx) = mpsc::channel::<Option<Vec<SocketAddr>>>();
    let (removed_tx, removed_rx) = mpsc::channel::<()>();
    let ((g_tx, g_rx), (s_tx, s_rx)) = (mpsc::channel(), mpsc::channel());
    let grow = in_netns(lan.host(0), move || {
        runtime().block_on(async move {
            let (d, _events) = Device::builder("grow")
                .interface("eth0")
                .interface_check(Some(Duration::from_millis(100)))
                .start()
                .await
                .expect("device starts on the defaults");
            started_tx.send(d.groups()).expect("main waits");
            let joined = tokio::time::timeout(Duration::from_secs(30), d.wait_for_peer("six"))
                .await
                .is_ok();
            joined_tx
                .send(joined.then(|| d.groups()))
                .expect("main waits");
            meet(&g_tx, s_rx, joined).await;
            // The IPv6 group's counters while it is joined (its announce and probe sent).
            let before = d
                .stats()
                .multicast_groups
                .into_iter()
                .find(|(g, _)| *g == DEFAULT_GROUP_V6)
                .map(|(_, s)| s)
                .unwrap_or_default();
            let _ = tokio::task::spawn_blocking(move || {
                removed_rx.recv_timeout(Duration::from_secs(30))
            })
            .await;
            wait_for(
                || d.groups() == [DEFAULT_GROUP],
                || format!("the IPv6 group not left: {:?}", d.groups()),
            )
            .await;
            let stats = d.stats();
            d.close().await;
            (stats.multicast_groups, before, stats.multicast)
        })
    });
    let six = in_netns(lan.host(1), move || {
        runtime().block_on(async move {
            let (d, _events) = Device::builder("six")
                .interface("eth0")
                .start()
                .await
                .expect("device starts on the defaults");
            let info = tokio::time::timeout(Duration::from_secs(30), d.wait_for_peer("grow"))
                .await
                .ok();
            meet(&s_tx, g_rx, info.is_some()).await;
            d.close().await;
            info
        })
    });
    let started = started_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("h0's device starts");
    assert_eq!(started, [DEFAULT_GROUP], "IPv4 alone at start");
    ip(&[
        "-n",
        lan.host(0),
        "addr",
        "add",
        &ll,
        "dev",
        "eth0",
        "nodad",
    ])
    .expect("IPv6 appears");
    let groups = joined_rx
        .recv_timeout(Duration::from_secs(40))
        .expect("h0's device reports")
        .expect("h0's device joined the IPv6-only device once IPv6 appeared");
    assert_eq!(groups, [DEFAULT_GROUP, DEFAULT_GROUP_V6]);
    let info = six.join().expect("h1's thread");
    let info = info.expect("the IPv6-only device joined h0's");
    assert!(
        info.addresses.iter().any(|a| matches!(a, SocketAddr::V6(v6)
            if *v6.ip() == host_link_local(0) && v6.scope_id() != 0)),
        "reached over IPv6 link-local: {info:?}"
    );
    ip(&["-n", lan.host(0), "addr", "del", &ll, "dev", "eth0"]).expect("IPv6 goes");
    removed_tx.send(()).expect("h0 waits");
    let (stats, before, after) = grow.join().expect("h0's thread");
    assert_eq!(stats.len(), 1, "{stats:?}");
    // The counters summed over the groups never go back: the left group's stay counted
    // (the IPv4 group's own, beside them).
    assert!(
        before.sent > 0,
        "the IPv6 group's announce went out: {before:?}"
    );
    let (_, four) = stats[0];
    assert!(
        after.sent >= four.sent + before.sent
            && after.delivered >= four.delivered + before.delivered,
        "the IPv6 group's counters went from the device's when it was left: IPv6 {before:?}, \
         IPv4 {four:?}, summed {after:?}"
    );
}
