//! Interfaces named the way users name them (issue 17): by name, index or address, on
//! loopback; an unknown one is a typed error that lists the host's interfaces.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hail_discovery::{Device, DeviceError, DeviceEvents, Interface};
use hail_multicast::MulticastError;

fn group() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(239, 255, 72, 78), 0))
}

async fn device(name: &str, group: SocketAddr, iface: Interface) -> (Device, DeviceEvents) {
    Device::builder(name)
        .group(group)
        .interface(iface)
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("device starts")
}

async fn until_joined(device: &Device, events: &mut DeviceEvents, peer: &str) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !device.peers().iter().any(|p| p.name == peer) {
            events.recv().await.expect("device running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} never saw {peer}: {:?}", device.name(), device.peers()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_loopback_by_name_and_by_index_find_each_other() {
    let lo = hail_multicast::interfaces()
        .expect("the host's interfaces")
        .into_iter()
        .find(|i| i.addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)))
        .expect("a loopback interface");
    let (a, mut ea) = device("by-name", group(), Interface::from(lo.name.as_str())).await;
    let (b, mut eb) = device("by-index", a.group(), Interface::from(lo.index)).await;
    until_joined(&a, &mut ea, "by-index").await;
    until_joined(&b, &mut eb, "by-name").await;
    // Each advertised loopback's IPv4 address, found from the interface's name or index.
    let seen = a
        .peers()
        .into_iter()
        .find(|p| p.name == "by-index")
        .unwrap();
    assert!(
        seen.addresses
            .iter()
            .any(|s| s.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "{seen:?}"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn an_unknown_interface_fails_to_start_and_lists_the_hosts() {
    let err = Device::builder("lost")
        .group(group())
        .interface("no-such-if0")
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .map(|_| ())
        .expect_err("no such interface");
    match &err {
        DeviceError::Multicast(MulticastError::InterfaceNotFound { .. }) => {}
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("no-such-if0"), "{text}");
    assert!(
        text.contains("127.0.0.1"),
        "lists the host's interfaces: {text}"
    );
}

/// Dual-stack by default (issue 17): on the IPv4 group with no listen address, a device's
/// links listen on one `[::]` socket that takes IPv4 and IPv6, and it advertises both
/// families' addresses of its interface (loopback: 127.0.0.1 and ::1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_listen_and_advertise_on_both_families_by_default() {
    let dual =
        std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() == "0");
    let lo = hail_multicast::interfaces()
        .expect("the host's interfaces")
        .into_iter()
        .find(|i| i.addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)))
        .expect("a loopback interface");
    if !dual
        || !lo
            .addrs
            .contains(&IpAddr::V6(std::net::Ipv6Addr::LOCALHOST))
    {
        hail_testsupport::report(&format!(
            "skipped: no dual-stack [::] sockets or no ::1 on {} here",
            lo.name
        ));
        return;
    }
    let start = |name: &'static str, group: SocketAddr| {
        Device::builder(name)
            .group(group)
            .interface(Interface::from(lo.name.as_str()))
            .start()
    };
    let (a, mut ea) = start("dual-a", group()).await.expect("device starts");
    let (b, mut eb) = start("dual-b", a.group()).await.expect("device starts");
    assert!(
        a.local_addr().ip().is_unspecified() && a.local_addr().is_ipv6(),
        "{}",
        a.local_addr()
    );
    // The one listener takes both families.
    let port = b.local_addr().port();
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ] {
        tokio::net::TcpStream::connect(SocketAddr::new(ip, port))
            .await
            .unwrap_or_else(|e| panic!("{ip}: {e}"));
    }
    until_joined(&a, &mut ea, "dual-b").await;
    until_joined(&b, &mut eb, "dual-a").await;
    let seen = a.peers().into_iter().find(|p| p.name == "dual-b").unwrap();
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ] {
        assert!(
            seen.addresses.iter().any(|s| s.ip() == ip),
            "{ip} not in {seen:?}"
        );
    }
    a.close().await;
    b.close().await;
}
