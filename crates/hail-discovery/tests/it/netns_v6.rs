//! Devices on IPv6 only (issue 17): two namespaces joined by a veth pair that carries only
//! link-local addresses, a link-scoped group (`ff02::`). They discover each other, link
//! over the link-local address with the scope of the interface the advert arrived on, and
//! exchange a message. Root only; skipped with a printed reason otherwise. (On the host's
//! own `lo`, IPv6 multicast is unroutable: `lo` has no MULTICAST flag.)

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use bytes::Bytes;
use hail_discovery::{DEFAULT_GROUP_V6, Device, DeviceEvent, PeerInfo};
use hail_testsupport::{Namespaces, OrSkip, in_netns, link_local_pair};

const GROUP: &str = "[ff02::4a1:78]:47790";

/// One device in `ns` on interface `iface` and `group` (`None`: the default): waits for
/// `peer`, sends it a message, waits for the peer's message, and reports the group it
/// used, what it saw of the peer and what it got.
fn host(
    ns: &str,
    name: &'static str,
    iface: &'static str,
    group: Option<&'static str>,
    peer: &'static str,
    done: Arc<Barrier>,
) -> std::thread::JoinHandle<(SocketAddr, PeerInfo, (String, Bytes))> {
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut builder = Device::builder(name).interface(iface);
            if let Some(g) = group {
                builder = builder.group(g.parse().unwrap());
            }
            let (d, mut events) = builder
                .start()
                .await
                .expect("device starts on an IPv6 group");
            let used = d.group();
            let mut got = None;
            let wait = async {
                while !d.peers().iter().any(|p| p.name == peer) {
                    match events.recv().await {
                        Some(DeviceEvent::Message { from, payload, .. }) => {
                            got = Some((from.to_string(), payload))
                        }
                        Some(_) => {}
                        None => panic!("{name} stopped"),
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .unwrap_or_else(|_| panic!("{name} never saw {peer}: {:?}", d.peers()));
            let info = d.peers().into_iter().find(|p| p.name == peer).unwrap();
            let sent = d
                .send(peer, Bytes::from(format!("hello from {name}")))
                .await;
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[peer], Ok(()), "{name} sends");
            let got = match got {
                Some(g) => g,
                None => tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        if let Some(DeviceEvent::Message { from, payload, .. }) =
                            events.recv().await
                        {
                            return (from.to_string(), payload);
                        }
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("{name} got no message")),
            };
            // Both have their message before either leaves.
            let done2 = done.clone();
            tokio::task::spawn_blocking(move || done2.wait())
                .await
                .unwrap();
            d.close().await;
            (used, info, got)
        })
    })
}

#[test]
fn two_devices_on_link_local_ipv6_only_discover_link_and_talk() {
    two_devices_on_link_local_ipv6_only("d6", Some(GROUP));
}

/// With no group set, devices whose interface has no IPv4 address use the IPv6 default.
#[test]
fn on_an_ipv6_only_link_the_default_group_is_the_ipv6_one() {
    two_devices_on_link_local_ipv6_only("d6default", None);
}

fn two_devices_on_link_local_ipv6_only(tag: &str, group: Option<&'static str>) {
    let Some(mut ns) = Namespaces::for_test(tag).or_skip() else {
        return;
    };
    let (a, b) = link_local_pair(&mut ns).expect("veth pair with link-local addresses");
    let done = Arc::new(Barrier::new(2));
    let ta = host(&a, "six-a", "v0", group, "six-b", Arc::clone(&done));
    let tb = host(&b, "six-b", "v1", group, "six-a", done);
    let (a_group, a_saw, a_got) = ta.join().expect("host a");
    let (b_group, b_saw, b_got) = tb.join().expect("host b");
    let want = group.map_or(DEFAULT_GROUP_V6, |g| g.parse().unwrap());
    assert_eq!((a_group, b_group), (want, want), "the group each used");
    assert_eq!(
        a_got,
        ("six-b".to_string(), Bytes::from_static(b"hello from six-b"))
    );
    assert_eq!(
        b_got,
        ("six-a".to_string(), Bytes::from_static(b"hello from six-a"))
    );
    for (saw, want) in [(&a_saw, "fe80::b"), (&b_saw, "fe80::a")] {
        let want: IpAddr = want.parse().unwrap();
        assert!(
            saw.addresses
                .iter()
                .any(|s| matches!(s, SocketAddr::V6(v6) if IpAddr::V6(*v6.ip()) == want && v6.scope_id() != 0)),
            "the peer is dialed at its link-local address with a scope: {saw:?}"
        );
    }
}
