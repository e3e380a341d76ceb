//! Dual-stack discovery on the defaults over real veths (issue 17): hosts on one bridge,
//! each device naming only its `eth0` and leaving the group unset. A dual-stack host
//! (IPv4 and IPv6 link-local) discovers on both default groups, so it meets an IPv6-only
//! host (link-local only) and an IPv4-only one; two dual-stack hosts hear each other on
//! both groups and are one peer each, with one link, sealed by one passphrase. Root only;
//! skipped with a printed reason otherwise. (The same in memory, in paused time: `dual`.)

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use hail_crypto::KdfParams;
use hail_discovery::{DEFAULT_GROUP, DEFAULT_GROUP_V6, Device, PeerInfo};
use hail_testsupport::{Family, Lan, Namespaces, OrSkip, host_link_local, in_netns, ip};

use crate::host::runtime;
use crate::wait::wait_for;

/// What one host's device saw before it left.
#[derive(Debug)]
struct Seen {
    groups: Vec<SocketAddr>,
    peers: Vec<PeerInfo>,
    links: usize,
    /// Adverts delivered on each group.
    delivered: Vec<(SocketAddr, u64)>,
}

/// A device `name` on `eth0` of namespace `ns` with the default group: waits until it has
/// joined every one of `wants` with one link each, and has received adverts on each of
/// its groups; then, once every host got there, leaves.
fn host(
    ns: &str,
    name: &'static str,
    wants: &'static [&'static str],
    passphrase: Option<&'static str>,
    done: Arc<Barrier>,
) -> std::thread::JoinHandle<Seen> {
    in_netns(ns, move || {
        runtime().block_on(async move {
            let mut b = Device::builder(name).interface("eth0");
            if let Some(p) = passphrase {
                b = b
                    .passphrase(p)
                    .kdf(KdfParams::default().iterations(KdfParams::MIN_ITERATIONS));
            }
            let (d, _events) = b.start().await.expect("device starts on the defaults");
            for peer in wants {
                tokio::time::timeout(Duration::from_secs(20), d.wait_for_peer(peer))
                    .await
                    .unwrap_or_else(|_| panic!("{name} never joined {peer}: {:?}", d.peers()));
            }
            wait_for(
                || {
                    let s = d.stats();
                    d.links() == wants.len()
                        && s.multicast_groups.len() == d.groups().len()
                        && s.multicast_groups.iter().all(|(_, g)| g.delivered > 0)
                },
                || {
                    format!(
                        "{name}: {} links, {:?}",
                        d.links(),
                        d.stats().multicast_groups
                    )
                },
            )
            .await;
            let seen = Seen {
                groups: d.groups().to_vec(),
                peers: d.peers(),
                links: d.links(),
                delivered: d
                    .stats()
                    .multicast_groups
                    .iter()
                    .map(|(g, s)| (*g, s.delivered))
                    .collect(),
            };
            let done2 = done.clone();
            tokio::task::spawn_blocking(move || done2.wait())
                .await
                .expect("barrier");
            d.close().await;
            seen
        })
    })
}

fn names(seen: &Seen) -> Vec<&str> {
    seen.peers.iter().map(|p| p.name.as_str()).collect()
}

/// h0 dual-stack, h1 IPv6-only (its IPv4 address removed), h2 IPv4-only (its link-local
/// address removed): the dual-stack host is on both groups and meets both others.
#[test]
fn a_dual_stack_device_meets_an_ipv6_only_and_an_ipv4_only_device_on_the_defaults() {
    let Some(ns) = Namespaces::for_test("dmix").or_skip() else {
        return;
    };
    let lan = Lan::create_with(ns, [10, 97, 0], 3, Family::Dual, false).expect("a dual-stack LAN");
    let v4_of_h1 = format!("{}/24", lan.host_ip(1));
    ip(&["-n", lan.host(1), "addr", "del", &v4_of_h1, "dev", "eth0"]).expect("h1 IPv6-only");
    let ll_of_h2 = format!("{}/64", host_link_local(2));
    ip(&["-n", lan.host(2), "addr", "del", &ll_of_h2, "dev", "eth0"]).expect("h2 IPv4-only");
    let done = Arc::new(Barrier::new(3));
    let dual = host(
        lan.host(0),
        "dual",
        &["four", "six"],
        None,
        Arc::clone(&done),
    );
    let six = host(lan.host(1), "six", &["dual"], None, Arc::clone(&done));
    let four = host(lan.host(2), "four", &["dual"], None, done);
    let (dual, six, four) = (
        dual.join().expect("dual host"),
        six.join().expect("IPv6-only host"),
        four.join().expect("IPv4-only host"),
    );
    assert_eq!(dual.groups, [DEFAULT_GROUP, DEFAULT_GROUP_V6], "{dual:?}");
    assert_eq!(six.groups, [DEFAULT_GROUP_V6], "{six:?}");
    assert_eq!(four.groups, [DEFAULT_GROUP], "{four:?}");
    assert_eq!(names(&dual), ["four", "six"], "{dual:?}");
    assert_eq!(dual.links, 2, "one link per pair: {dual:?}");
    // The IPv6-only host reached the dual-stack one over IPv6: it has only link-local
    // addresses to dial, with the scope the adverts arrived on.
    let seen = &six.peers[0];
    assert!(
        seen.addresses.iter().any(|a| matches!(a, SocketAddr::V6(v6)
            if IpAddr::V6(*v6.ip()) == IpAddr::V6(host_link_local(0)) && v6.scope_id() != 0)),
        "{seen:?}"
    );
    assert!(
        four.peers[0].addresses.iter().all(SocketAddr::is_ipv4),
        "{four:?}"
    );
}

/// Two dual-stack hosts, sealed: each hears the other's adverts on both groups (one key
/// for both) and keeps one peer with both sources, and one link.
#[test]
fn sealed_two_dual_stack_devices_are_one_peer_with_one_link_over_both_groups() {
    let Some(ns) = Namespaces::for_test("dtwo").or_skip() else {
        return;
    };
    let lan = Lan::create_with(ns, [10, 98, 0], 2, Family::Dual, false).expect("a dual-stack LAN");
    let done = Arc::new(Barrier::new(2));
    let pass = Some("two groups, one key");
    let a = host(lan.host(0), "dual-a", &["dual-b"], pass, Arc::clone(&done));
    let b = host(lan.host(1), "dual-b", &["dual-a"], pass, done);
    let (a, b) = (a.join().expect("host a"), b.join().expect("host b"));
    for (seen, other) in [(&a, 1), (&b, 0)] {
        assert_eq!(seen.groups, [DEFAULT_GROUP, DEFAULT_GROUP_V6], "{seen:?}");
        assert_eq!(
            (seen.peers.len(), seen.links),
            (1, 1),
            "one peer, one link: {seen:?}"
        );
        assert!(seen.delivered.iter().all(|(_, n)| *n > 0), "{seen:?}");
        let addrs = &seen.peers[0].addresses;
        assert_eq!(
            addrs[0].ip(),
            IpAddr::V4(lan.host_ip(other)),
            "IPv4 first: {seen:?}"
        );
        assert!(
            addrs.iter().any(|a| matches!(a, SocketAddr::V6(v6)
                if *v6.ip() == host_link_local(other) && v6.scope_id() != 0)),
            "and its IPv6 source, scoped: {seen:?}"
        );
    }
}
