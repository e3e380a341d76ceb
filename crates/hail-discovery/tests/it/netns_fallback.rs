//! A default device (dual-stack by default on the IPv4 group, issue 17) where IPv6 is
//! switched off: with `net.ipv6.conf.*.disable_ipv6 = 1` its `[::]` listener still takes
//! IPv4; with `net.ipv6.bindv6only = 1` it listens on `0.0.0.0`. Either way a peer reaches
//! it over IPv4 and it advertises no IPv6 address. Two namespaces joined by a veth pair;
//! root only, skipped with a printed reason otherwise.
//!
//! And both families dialed: a peer that cannot reach the device's IPv4 address links to
//! its IPv6 one.
//!
//! The peer listens on its own loopback only, so the device cannot dial it: the link is the
//! peer's dial to the device's listener.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

use hail_discovery::{Device, PeerInfo};
use hail_testsupport::{Namespaces, OrSkip, in_netns, ip, veth};

use crate::host::{meet, no_rp_filter, runtime, sysctl};

/// Runs a default device in `d` and a peer in `p` (made by the caller, joined by `d0` and
/// `p0`); returns the device's listening address and what the peer saw of it.
fn device_and_peer(d: &str, p: &str, group: SocketAddr) -> (SocketAddr, PeerInfo) {
    let ((d_tx, d_rx), (p_tx, p_rx)) = (mpsc::channel(), mpsc::channel());
    let device = in_netns(d, move || {
        runtime().block_on(async move {
            let (dev, _events) = Device::builder("fb-device")
                .group(group)
                .interface("d0")
                .start()
                .await
                .expect("a default device starts without IPv6");
            let local = dev.local_addr();
            let joined =
                tokio::time::timeout(Duration::from_secs(20), dev.wait_for_peer("fb-peer")).await;
            meet(&d_tx, p_rx, joined.is_ok()).await;
            dev.close().await;
            (local, joined.is_ok())
        })
    });
    let peer = in_netns(p, move || {
        runtime().block_on(async move {
            let (dev, _events) = Device::builder("fb-peer")
                .group(group)
                .interface("p0")
                .listen("127.0.0.1:0".parse().expect("an address"))
                .start()
                .await
                .expect("peer starts");
            let info =
                tokio::time::timeout(Duration::from_secs(20), dev.wait_for_peer("fb-device"))
                    .await
                    .ok();
            meet(&p_tx, d_rx, info.is_some()).await;
            dev.close().await;
            info
        })
    });
    let info = peer.join().expect("peer thread");
    let (local, joined) = device.join().expect("device thread");
    let info = info.expect("the peer joined the device over IPv4");
    assert!(joined, "the device joined the peer");
    (local, info)
}

/// Two namespaces `<prefix>d`, `<prefix>p` with `d0` 10.94.0.1/24 and `p0` 10.94.0.2/24.
fn pair(ns: &mut Namespaces) -> (String, String) {
    let d = ns.add("d").expect("namespace d");
    let p = ns.add("p").expect("namespace p");
    veth((&d, "d0"), (&p, "p0")).expect("veth pair");
    for (n, i, a) in [(&d, "d0", "10.94.0.1/24"), (&p, "p0", "10.94.0.2/24")] {
        ip(&["-n", n, "addr", "add", a, "dev", i]).expect("address");
        ip(&["-n", n, "route", "add", "224.0.0.0/4", "dev", i]).expect("multicast route");
    }
    (d, p)
}

/// Only IPv4 addresses, the device's among them.
fn ipv4_only(info: &PeerInfo) {
    assert!(
        info.addresses.iter().all(SocketAddr::is_ipv4)
            && info
                .addresses
                .iter()
                .any(|a| a.ip() == IpAddr::V4(Ipv4Addr::new(10, 94, 0, 1))),
        "{info:?}"
    );
}

#[test]
fn with_ipv6_disabled_a_default_device_listens_and_is_reached_over_ipv4() {
    let Some(mut ns) = Namespaces::for_test("fb6").or_skip() else {
        return;
    };
    let (d, p) = pair(&mut ns);
    for conf in ["all", "default", "d0", "lo"] {
        sysctl(&d, &format!("net.ipv6.conf.{conf}.disable_ipv6=1"));
    }
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 94), 47_794));
    let (local, info) = device_and_peer(&d, &p, group);
    // The `[::]` socket is made (IPv6 is switched off on the interfaces, not in the
    // kernel) and takes IPv4.
    assert_eq!(local.ip(), IpAddr::V6(Ipv6Addr::UNSPECIFIED), "{local}");
    ipv4_only(&info);
}

#[test]
fn with_bindv6only_a_default_device_listens_on_ipv4_and_is_reached() {
    let Some(mut ns) = Namespaces::for_test("fbo").or_skip() else {
        return;
    };
    let (d, p) = pair(&mut ns);
    sysctl(&d, "net.ipv6.bindv6only=1");
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 95), 47_795));
    let (local, info) = device_and_peer(&d, &p, group);
    assert_eq!(
        local.ip(),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "a [::] socket would take IPv6 only here"
    );
    ipv4_only(&info);
}

/// Both families dialed (issue 17 items 2 and 3): the device's IPv4 address is a /32 on
/// another subnet than the peer's, so the peer's dials to it fail at once (no route);
/// its ULA is on the peer's /64. The device advertises both (dual-stack by default), and
/// the peer links to it over IPv6.
#[test]
fn a_peer_that_cannot_reach_the_ipv4_address_links_over_ipv6() {
    let Some(mut ns) = Namespaces::for_test("fb46").or_skip() else {
        return;
    };
    let d = ns.add("d").expect("namespace d");
    let p = ns.add("p").expect("namespace p");
    veth((&d, "d0"), (&p, "p0")).expect("veth pair");
    for (n, i, v4, v6) in [
        (&d, "d0", "10.94.0.1/32", "fd00:94::1/64"),
        (&p, "p0", "10.95.0.2/24", "fd00:94::2/64"),
    ] {
        ip(&["-n", n, "addr", "add", v4, "dev", i]).expect("address");
        ip(&["-n", n, "addr", "add", v6, "dev", i, "nodad"]).expect("address");
        ip(&["-n", n, "route", "add", "224.0.0.0/4", "dev", i]).expect("multicast route");
        no_rp_filter(n, i);
    }
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 96), 47_796));
    let (local, info) = device_and_peer(&d, &p, group);
    assert_eq!(local.ip(), IpAddr::V6(Ipv6Addr::UNSPECIFIED), "{local}");
    let ula: IpAddr = "fd00:94::1".parse().expect("an address");
    assert!(
        info.addresses.iter().any(|a| a.ip() == ula)
            && info
                .addresses
                .iter()
                .any(|a| a.ip() == IpAddr::V4(Ipv4Addr::new(10, 94, 0, 1))),
        "both families advertised: {info:?}"
    );
}
