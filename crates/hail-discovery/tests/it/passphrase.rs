//! Devices with a passphrase: the same one meets, another does not, and a link with the
//! wrong one is reported as an error event.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use hail_crypto::KdfParams;
use hail_discovery::{Device, DeviceBuilder, DeviceEvent, DeviceEvents, PeerTableConfig, RunError};

/// The floor of the KDF: keeps the tests fast (the default is 600,000 iterations).
fn fast_kdf() -> KdfParams {
    KdfParams::default().iterations(KdfParams::MIN_ITERATIONS)
}

fn builder(name: &str, group: SocketAddr, passphrase: &str) -> DeviceBuilder {
    Device::builder(name)
        .group(group)
        .interface(Ipv4Addr::LOCALHOST)
        .listen("127.0.0.1:0".parse().unwrap())
        .passphrase(passphrase)
        .kdf(fast_kdf())
}

/// Waits (through the event stream, as a `Stream`) until `device` has `n` peers.
async fn until_peers(device: &Device, events: &mut DeviceEvents, n: usize) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while device.peers().len() < n {
            events.next().await.expect("device running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} saw {:?}", device.name(), device.peers()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_passphrase_meets_and_another_does_not() {
    let g = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 80), 0));
    let (a, mut ea) = builder("alpha", g, "correct horse").start().await.unwrap();
    let g = a.group();
    let (b, mut eb) = builder("bravo", g, "correct horse").start().await.unwrap();
    let (c, _ec) = builder("charlie", g, "battery staple")
        .start()
        .await
        .unwrap();
    let (d, _ed) = Device::builder("delta")
        .group(g)
        .interface(Ipv4Addr::LOCALHOST)
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    until_peers(&a, &mut ea, 1).await;
    until_peers(&b, &mut eb, 1).await;
    assert_eq!(a.peers()[0].name, "bravo");
    assert_eq!(b.peers()[0].name, "alpha");
    // Two beacons later, the others still see nobody and are seen by nobody.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(a.peers().len(), 1, "{:?}", a.peers());
    assert_eq!(b.peers().len(), 1, "{:?}", b.peers());
    assert!(c.peers().is_empty(), "{:?}", c.peers());
    assert!(d.peers().is_empty(), "{:?}", d.peers());
    // What charlie heard from the others was dropped and counted, never decoded.
    let heard = c.stats().multicast;
    assert!(heard.dropped_wrong_key > 0, "{heard:?}");
    assert_eq!(c.stats().discovery.adverts_received, 0);
    // The same passphrase with another iteration count is another key.
    let (e, _ee) = builder("echo", g, "correct horse")
        .kdf(fast_kdf().iterations(KdfParams::MIN_ITERATIONS + 1))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(e.peers().is_empty(), "{:?}", e.peers());
    assert_eq!(a.peers().len(), 1);
    for dev in [a, b, c, d, e] {
        dev.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_with_the_wrong_passphrase_is_an_error_event() {
    let g = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 81), 0));
    let (a, mut ea) = builder("alpha", g, "correct horse")
        .multicast(false)
        .start()
        .await
        .unwrap();
    // Without multicast, a static address makes bravo dial alpha with its own key.
    let table = PeerTableConfig::builder()
        .static_peers([a.local_addr()])
        .redial_initial(Duration::from_millis(20))
        .redial_max(Duration::from_millis(40))
        .build()
        .unwrap();
    let (b, mut eb) = builder("bravo", g, "battery staple")
        .multicast(false)
        .table(table)
        .start()
        .await
        .unwrap();
    let errors = |events: &mut DeviceEvents| {
        let mut seen = Vec::new();
        while let Some(e) = events.try_recv() {
            if let DeviceEvent::Error(e) = e {
                seen.push(e);
            }
        }
        seen
    };
    let mut dialer = Vec::new();
    let mut listener = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            dialer.extend(errors(&mut eb));
            listener.extend(errors(&mut ea));
            let dial_reported = dialer
                .iter()
                .any(|e| matches!(e, RunError::DialFailed { failures: 3, .. }));
            if dial_reported && !listener.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("dialer saw {dialer:?}, listener saw {listener:?}"));
    assert!(
        matches!(dialer[0], RunError::AuthFailed { addr: Some(addr), count: 1 } if addr == a.local_addr()),
        "{dialer:?}"
    );
    assert_eq!(
        dialer
            .iter()
            .filter(|e| matches!(e, RunError::AuthFailed { .. }))
            .count(),
        1,
        "one report per run of failures: {dialer:?}"
    );
    assert!(
        matches!(listener[0], RunError::AuthFailed { addr: None, count } if count >= 1),
        "{listener:?}"
    );
    assert!(a.peers().is_empty() && b.peers().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}
