//! Interfaces that change while devices run (issue 17 item 3), in two namespaces joined by
//! a veth pair. Root only; skipped with a printed reason otherwise.
//!
//! The device's veth `d0` starts with `10.91.0.1/32` only: the peer (`p0`, `10.92.0.2/24`)
//! hears its announces (multicast needs no route back) but has no route to `10.91.0.1`, so
//! its dials fail. Then `10.92.0.1/24` is added to `d0`: the device, which follows its
//! interfaces, announces it, and the peer links to it there. The peer listens on its own
//! loopback only, so the device can never dial it: the link can only be the peer's, to the
//! address that was added.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

use hail_discovery::{Device, DeviceEvent, PeerInfo, RunError};
use hail_testsupport::{Namespaces, OrSkip, in_netns, ip, veth};

use crate::host::{meet, no_rp_filter, runtime};

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
