//! Devices with a passphrase, on the in-memory network in paused time: the same one
//! meets, another does not, and a link with the wrong one is reported as an error event.

use std::time::Duration;

use hail_crypto::KdfParams;
use hail_discovery::{Device, DeviceBuilder, DeviceEvent, PeerTableConfig, RunError};

use crate::lan::Lan;
use crate::wait::wait_for;

/// The floor of the KDF: keeps the tests fast (the default is 600,000 iterations).
fn fast_kdf() -> KdfParams {
    KdfParams::default().iterations(KdfParams::MIN_ITERATIONS)
}

fn builder(lan: &Lan, name: &str, host: u8, passphrase: &str) -> DeviceBuilder {
    lan.builder(name, host)
        .passphrase(passphrase)
        .kdf(fast_kdf())
}

/// Datagrams of the group `device` dropped as sealed with another key, and as not
/// sealed at all (from a device without a passphrase).
fn refused(device: &Device) -> (u64, u64) {
    let m = device.stats().multicast;
    (m.dropped_wrong_key, m.dropped_malformed)
}

#[tokio::test(start_paused = true)]
async fn the_same_passphrase_meets_and_another_does_not() {
    let lan = Lan::new();
    let (a, _ea) = builder(&lan, "alpha", 1, "correct horse")
        .start()
        .await
        .unwrap();
    let (b, _eb) = builder(&lan, "bravo", 2, "correct horse")
        .start()
        .await
        .unwrap();
    let (c, _ec) = builder(&lan, "charlie", 3, "battery staple")
        .start()
        .await
        .unwrap();
    let (d, _ed) = lan.device("delta", 4).await;
    let within = Duration::from_secs(5);
    tokio::time::timeout(within, a.wait_for_peer("bravo"))
        .await
        .expect("alpha meets bravo");
    tokio::time::timeout(within, b.wait_for_peer("alpha"))
        .await
        .expect("bravo meets alpha");
    // Until each has heard two beacons from every device outside its group, and dropped
    // them: charlie's sealed ones and delta's plain ones at alpha and bravo, the other
    // three's at charlie, and delta's table refuses the sealed ones of all three.
    for x in [&a, &b] {
        wait_for(
            || {
                let (wrong_key, plain) = refused(x);
                wrong_key >= 2 && plain >= 2
            },
            || format!("{} refused {:?}", x.name(), refused(x)),
        )
        .await;
    }
    wait_for(
        || refused(&c).0 >= 4 && refused(&c).1 >= 2,
        || format!("charlie refused {:?}", refused(&c)),
    )
    .await;
    wait_for(
        || d.stats().discovery.adverts_dropped >= 6,
        || format!("delta: {:?}", d.stats().discovery),
    )
    .await;
    assert_eq!(a.peers().len(), 1, "{:?}", a.peers());
    assert_eq!(a.peers()[0].name, "bravo");
    assert_eq!(b.peers().len(), 1, "{:?}", b.peers());
    assert_eq!(b.peers()[0].name, "alpha");
    assert!(c.peers().is_empty(), "{:?}", c.peers());
    assert!(d.peers().is_empty(), "{:?}", d.peers());
    // What charlie heard from the others was dropped and counted, never decoded.
    assert_eq!(c.stats().discovery.adverts_received, 0);
    // The same passphrase with another iteration count is another key: echo drops the
    // beacons of the three sealed devices, and they drop echo's.
    let (e, _ee) = builder(&lan, "echo", 5, "correct horse")
        .kdf(fast_kdf().iterations(KdfParams::MIN_ITERATIONS + 1))
        .start()
        .await
        .unwrap();
    let alpha_before = refused(&a).0;
    wait_for(
        || refused(&e).0 >= 6 && refused(&a).0 >= alpha_before + 2,
        || format!("echo refused {:?}, alpha {:?}", refused(&e), refused(&a)),
    )
    .await;
    assert!(e.peers().is_empty(), "{:?}", e.peers());
    assert_eq!(e.stats().discovery.adverts_received, 0);
    assert_eq!(a.peers().len(), 1, "{:?}", a.peers());
    for dev in [a, b, c, d, e] {
        dev.close().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_link_with_the_wrong_passphrase_is_an_error_event() {
    let lan = Lan::new();
    let (a, mut ea) = builder(&lan, "alpha", 1, "correct horse")
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
    let (b, mut eb) = builder(&lan, "bravo", 2, "battery staple")
        .multicast(false)
        .table(table)
        .start()
        .await
        .unwrap();
    let mut dialer = Vec::new();
    let mut listener = Vec::new();
    let dial_reported = |dialer: &[RunError]| {
        dialer
            .iter()
            .any(|e| matches!(e, RunError::DialFailed { failures: 3, .. }))
    };
    let both = tokio::time::timeout(Duration::from_secs(5), async {
        while !dial_reported(&dialer) || listener.is_empty() {
            tokio::select! {
                e = eb.recv() => if let DeviceEvent::Error(e) = e.expect("bravo running") {
                    dialer.push(e);
                },
                e = ea.recv() => if let DeviceEvent::Error(e) = e.expect("alpha running") {
                    listener.push(e);
                },
            }
        }
    })
    .await;
    assert!(
        both.is_ok(),
        "dialer saw {dialer:?}, listener saw {listener:?}"
    );
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
    a.close().await;
    b.close().await;
}
