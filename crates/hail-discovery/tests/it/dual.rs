//! Dual-stack discovery on the defaults (issue 17), on the in-memory LAN in paused time:
//! a device whose host has both families discovers on both default groups, plain and
//! sealed; a peer heard on both groups is one peer with one link. Over real veths, with
//! an IPv6-only device too: `netns_dual`.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use hail_crypto::GroupKey;
use hail_discovery::{DEFAULT_GROUP, DEFAULT_GROUP_V6, Device, DeviceBuilder, DeviceEvents};

use crate::lan::{Lan, ip};
use crate::wait::wait_for;

/// Host `host`'s IPv6 address on the LAN: `fd00::host`.
fn ip6(host: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(host))
}

/// `b` with the group key `key`, if any.
fn keyed(b: DeviceBuilder, key: Option<[u8; 32]>) -> DeviceBuilder {
    match key {
        Some(k) => b.group_key(GroupKey::from_bytes(k)),
        None => b,
    }
}

async fn start(b: DeviceBuilder) -> (Device, DeviceEvents) {
    b.start().await.expect("device starts")
}

/// Waits until `d` has delivered adverts on each of its groups.
async fn heard_on_every_group(d: &Device) {
    wait_for(
        || {
            let s = d.stats();
            s.multicast_groups.len() == d.groups().len()
                && s.multicast_groups.iter().all(|(_, g)| g.delivered > 0)
        },
        || format!("{}: {:?}", d.name(), d.stats().multicast_groups),
    )
    .await;
}

/// Two dual-stack devices and an IPv4-only one, all on the defaults: all meet, one link
/// per pair, both groups carry adverts (sealed with `key`, the one key of both groups).
/// (An IPv6-only device cannot link to a dual-stack one here: hail-link's in-memory
/// network gives a host one address and no dials across families; `netns_dual` has it.)
async fn three_meet_on_the_defaults(key: Option<[u8; 32]>) {
    let lan = Lan::new();
    let (a, _ae) = start(keyed(lan.builder("a", 1).memory_ipv6(ip6(1)), key)).await;
    let (b, _be) = start(keyed(lan.builder("b", 2).memory_ipv6(ip6(2)), key)).await;
    let (four, _fe) = start(keyed(lan.builder("four", 3), key)).await;
    assert_eq!(a.groups(), [DEFAULT_GROUP, DEFAULT_GROUP_V6]);
    assert_eq!(four.groups(), [DEFAULT_GROUP]);
    let six = Device::builder("six").memory(&lan.bus, &lan.net, IpAddr::V6(ip6(4)));
    let (six, _se) = start(keyed(six, key)).await;
    assert_eq!(six.groups(), [DEFAULT_GROUP_V6], "an IPv6-only host");
    let limit = Duration::from_secs(5);
    let all = [&a, &b, &four];
    for d in all {
        for peer in all.iter().filter(|p| p.name() != d.name()) {
            tokio::time::timeout(limit, d.wait_for_peer(peer.name()))
                .await
                .unwrap_or_else(|_| {
                    panic!("{} never joined {}: {:?}", d.name(), peer.name(), d.peers())
                });
        }
    }
    heard_on_every_group(&a).await;
    heard_on_every_group(&b).await;
    wait_for(
        || all.iter().all(|d| d.links() == 2),
        || format!("links: {:?}", all.map(|d| d.links())),
    )
    .await;
    let stats = a.stats();
    assert_eq!(
        stats
            .multicast_groups
            .iter()
            .map(|(g, _)| *g)
            .collect::<Vec<_>>(),
        [DEFAULT_GROUP, DEFAULT_GROUP_V6],
        "counters per group, in group order"
    );
    let sum: u64 = stats
        .multicast_groups
        .iter()
        .map(|(_, s)| s.delivered)
        .sum();
    assert_eq!(
        stats.multicast.delivered, sum,
        "the total is the groups' sum"
    );
    assert_eq!(stats.multicast.dropped(), 0, "{stats:?}");
    for d in [a, b, four, six] {
        d.close().await;
    }
}

/// Two dual-stack devices and an IPv4-only one meet on the defaults.
#[tokio::test(start_paused = true)]
async fn dual_stack_devices_and_an_ipv4_only_one_meet_on_the_defaults() {
    three_meet_on_the_defaults(None).await;
}

/// Sealed: both groups use the one group key (it is the links' key too).
#[tokio::test(start_paused = true)]
async fn sealed_both_groups_take_the_one_group_key() {
    three_meet_on_the_defaults(Some([7; 32])).await;
}

/// Two dual-stack devices hear each other's adverts on both groups: one peer each, dialed
/// at both sources (IPv4 first), and one link.
#[tokio::test(start_paused = true)]
async fn a_peer_heard_on_both_groups_is_one_peer_with_one_link() {
    let lan = Lan::new();
    let (a, _ae) = start(lan.builder("a", 1).memory_ipv6(ip6(1))).await;
    let (b, _be) = start(lan.builder("b", 2).memory_ipv6(ip6(2))).await;
    let limit = Duration::from_secs(5);
    tokio::time::timeout(limit, a.wait_for_peer("b"))
        .await
        .expect("a joins b");
    tokio::time::timeout(limit, b.wait_for_peer("a"))
        .await
        .expect("b joins a");
    heard_on_every_group(&a).await;
    heard_on_every_group(&b).await;
    wait_for(
        || a.links() == 1 && b.links() == 1,
        || format!("links: {} and {}", a.links(), b.links()),
    )
    .await;
    for (d, other) in [(&a, 2), (&b, 1)] {
        let peers = d.peers();
        assert_eq!(peers.len(), 1, "{peers:?}");
        let addrs: Vec<IpAddr> = peers[0].addresses.iter().map(|s| s.ip()).collect();
        assert_eq!(
            addrs,
            [ip(other), IpAddr::V6(ip6(other))],
            "both sources, IPv4 first"
        );
    }
    a.close().await;
    b.close().await;
}
