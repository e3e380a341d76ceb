//! Devices in one process, on loopback.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hail_discovery::{
    AskError, Device, DeviceEvent, DeviceEvents, LeaveReason, ResolveError, SendError, Targets,
};

use crate::wait::wait_for;

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Starts a device on loopback in `group` (port 0: a fresh group port for this test).
async fn device(name: &str, group: SocketAddr) -> (Device, DeviceEvents) {
    Device::builder(name)
        .group(group)
        .interface(LOOPBACK)
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("device starts")
}

/// Waits until `events` reports `n` joined peers; returns how long it took.
async fn until_peers(device: &Device, events: &mut DeviceEvents, n: usize) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), async {
        while device.peers().len() < n {
            events.recv().await.expect("device running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} saw {:?}", device.name(), device.peers()));
    start.elapsed()
}

async fn next_message(events: &mut DeviceEvents) -> (String, Bytes) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(DeviceEvent::Message { from, payload, .. }) = events.recv().await {
                return (from.to_string(), payload);
            }
        }
    })
    .await
    .expect("a message")
}

fn group() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(239, 255, 72, 77), 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_find_each_other_send_and_ask() {
    let (a, mut ea) = device("a", group()).await;
    let g = a.group();
    let (b, mut eb) = device("b", g).await;
    let (c, mut ec) = device("c", g).await;
    until_peers(&a, &mut ea, 2).await;
    until_peers(&b, &mut eb, 2).await;
    until_peers(&c, &mut ec, 2).await;

    // One name.
    let r = a.send("b", Bytes::from_static(b"hi b")).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r["b"], Ok(()));
    assert_eq!(
        next_message(&mut eb).await,
        ("a".into(), Bytes::from_static(b"hi b"))
    );
    // A list, with a name nobody has.
    let r = a
        .send(&["b", "c", "nobody"][..], Bytes::from_static(b"list"))
        .await;
    assert_eq!(
        r,
        [
            ("b".to_string(), Ok(())),
            ("c".to_string(), Ok(())),
            (
                "nobody".to_string(),
                Err(SendError::Resolve(ResolveError::UnknownName(
                    "nobody".into()
                ))),
            ),
        ]
        .into()
    );
    assert_eq!(next_message(&mut eb).await.1, Bytes::from_static(b"list"));
    assert_eq!(next_message(&mut ec).await.1, Bytes::from_static(b"list"));
    // Everyone.
    let r = c.send(Targets::All, Bytes::from_static(b"all")).await;
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|(_, r)| r.is_ok()));
    assert_eq!(
        next_message(&mut ea).await,
        ("c".into(), Bytes::from_static(b"all"))
    );

    // The user's own methods, bound once on the device, called through `peer(name)`.
    b.handlers()
        .bind(
            "add",
            |(x, y): (i32, i32)| async move { Ok::<_, String>(x + y) },
        )
        .unwrap();
    let sum: i32 = a
        .peer("b")
        .unwrap()
        .execute("add", (2, 3), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(sum, 5);
    assert!(matches!(
        a.peer("nobody"),
        Err(ResolveError::UnknownName(_))
    ));

    // Ask: c answers, b has no handler, an empty answer is an answer.
    c.on_question(|from, q| async move {
        assert_eq!(&*from, "a");
        if q.is_empty() {
            Ok(Bytes::new())
        } else {
            Ok(Bytes::from(format!("c got {}", q.len())))
        }
    })
    .unwrap();
    assert!(
        c.on_question(|_, _| async { Ok(Bytes::new()) }).is_err(),
        "set once"
    );
    let answers = a
        .ask(
            Targets::All,
            Bytes::from_static(b"ping"),
            Duration::from_secs(2),
        )
        .await;
    let want: HashMap<String, Result<Bytes, AskError>> = [
        ("c".to_string(), Ok(Bytes::from("c got 4"))),
        (
            "b".to_string(),
            Err(AskError::Handler("no question handler".into())),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(answers, want);
    let answers = a.ask("c", Bytes::new(), Duration::from_secs(2)).await;
    assert_eq!(answers["c"], Ok(Bytes::new()));
    let answers = a.ask("nobody", Bytes::new(), Duration::from_secs(2)).await;
    assert_eq!(
        answers["nobody"],
        Err(AskError::Resolve(ResolveError::UnknownName(
            "nobody".into()
        )))
    );

    // A handler that never answers: ask returns at the timeout, not later.
    b.on_question(|_, _| std::future::pending()).unwrap();
    let start = Instant::now();
    let answers = a
        .ask(
            Targets::All,
            Bytes::from_static(b"?"),
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(answers["b"], Err(AskError::NoAnswer));
    assert!(answers["c"].is_ok());
    assert!(start.elapsed() < Duration::from_secs(2));

    // Graceful shutdown is a goodbye, seen at once.
    let c_id = c.id();
    let start = Instant::now();
    c.close().await;
    tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(DeviceEvent::PeerLeft { peer, reason }) = ea.recv().await
                && peer.id == c_id
            {
                assert_eq!(reason, LeaveReason::Goodbye);
                return;
            }
        }
    })
    .await
    .expect("a sees c leave");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(a.peers().len(), 1);
    let answers = a.ask("c", Bytes::new(), Duration::from_secs(2)).await;
    assert_eq!(
        answers["c"],
        Err(AskError::Resolve(ResolveError::UnknownName("c".into())))
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_devices_form_a_full_mesh_without_flapping() {
    let (first, first_events) = device("dev0", group()).await;
    let g = first.group();
    let mut devices = vec![(first, first_events)];
    for i in 1..10 {
        devices.push(device(&format!("dev{i}"), g).await);
    }
    // How fast is measured by `discovery/mesh-10` (cargo xtask bench), not here.
    for (d, e) in &mut devices {
        until_peers(d, e, 9).await;
    }
    // One link per pair once any dropped duplicates have closed (they linger 500 ms):
    // 45 in all.
    for (d, _) in &devices {
        wait_for(
            || d.links() == 9,
            || format!("{} has {} links", d.name(), d.links()),
        )
        .await;
    }
    // Nobody flapped meanwhile.
    for (d, e) in &mut devices {
        assert_eq!(d.peers().len(), 9, "{}", d.name());
        while let Ok(ev) = tokio::time::timeout(Duration::from_millis(1), e.recv()).await {
            assert!(
                !matches!(ev, Some(DeviceEvent::PeerLeft { .. })),
                "{}: {ev:?}",
                d.name()
            );
        }
    }
    let r = devices[0]
        .0
        .send(Targets::All, Bytes::from_static(b"to all"))
        .await;
    assert_eq!(r.len(), 9);
    assert!(r.iter().all(|(_, r)| r.is_ok()), "{r:?}");
    for (d, e) in &mut devices[1..] {
        assert_eq!(
            next_message(e).await,
            ("dev0".into(), Bytes::from_static(b"to all")),
            "{}",
            d.name()
        );
    }
    for (d, _) in devices {
        d.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_peers_without_multicast_form_a_mesh_through_one_seed() {
    let start = |name: &str, seed: Option<SocketAddr>| {
        let table = hail_discovery::PeerTableConfig::builder()
            .static_peers(seed)
            .build()
            .unwrap();
        Device::builder(name)
            .multicast(false)
            .listen("127.0.0.1:0".parse().unwrap())
            .table(table)
            .start()
    };
    let (seed, mut es) = start("seed", None).await.unwrap();
    let (b, mut eb) = start("b", Some(seed.local_addr())).await.unwrap();
    let (c, mut ec) = start("c", Some(seed.local_addr())).await.unwrap();
    until_peers(&seed, &mut es, 2).await;
    until_peers(&b, &mut eb, 2).await;
    until_peers(&c, &mut ec, 2).await;
    assert_eq!(
        b.send("c", Bytes::from_static(b"via gossip")).await["c"],
        Ok(())
    );
    assert_eq!(
        next_message(&mut ec).await,
        ("b".into(), Bytes::from_static(b"via gossip"))
    );
    for d in [seed, b, c] {
        d.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_devices_with_the_same_key_meet_and_adverts_are_sealed() {
    use hail_crypto::GroupKey;
    let start = |name: &str, group: SocketAddr, key: [u8; 32]| {
        Device::builder(name)
            .group(group)
            .interface(LOOPBACK)
            .listen("127.0.0.1:0".parse().unwrap())
            .group_key(GroupKey::from_bytes(key))
            .start()
    };
    let (a, mut ea) = start("alpha", group(), [1; 32]).await.unwrap();
    let g = a.group();
    // A plain listener on the group sees only sealed bytes.
    let spy_config = hail_multicast::ChannelConfig::builder()
        .interface(LOOPBACK)
        .build()
        .unwrap();
    let (_spy_tx, mut spy) = hail_multicast::Channel::bind(g, spy_config).unwrap();
    let (b, mut eb) = start("bravo", g, [1; 32]).await.unwrap();
    let (c, _ec) = start("charlie", g, [2; 32]).await.unwrap();
    until_peers(&a, &mut ea, 1).await;
    until_peers(&b, &mut eb, 1).await;
    // Until charlie has heard and dropped two beacons from each of the others, and they
    // two of its.
    let wrong_key = |d: &Device| d.stats().multicast.dropped_wrong_key;
    wait_for(
        || wrong_key(&c) >= 4 && wrong_key(&a) >= 2 && wrong_key(&b) >= 2,
        || {
            format!(
                "dropped: {} {} {}",
                wrong_key(&a),
                wrong_key(&b),
                wrong_key(&c)
            )
        },
    )
    .await;
    assert_eq!(a.peers().len(), 1);
    assert_eq!(a.peers()[0].name, "bravo");
    assert!(c.peers().is_empty(), "{:?}", c.peers());
    for _ in 0..5 {
        let d = tokio::time::timeout(Duration::from_secs(3), spy.recv())
            .await
            .expect("adverts keep coming")
            .unwrap();
        assert!(hail_discovery::Advert::decode(&d.payload).is_err());
        let text = String::from_utf8_lossy(&d.payload);
        assert!(!text.contains("alpha") && !text.contains("bravo") && !text.contains("charlie"));
    }
    for d in [a, b, c] {
        d.close().await;
    }
}

/// The child process of `a_killed_process_is_seen_as_gone_within_three_seconds`; does
/// nothing when run on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of another test"]
async fn child_device() {
    let Ok(group) = std::env::var("HAIL_TEST_CHILD_GROUP") else {
        return;
    };
    let (_d, _events) = device("child", group.parse().unwrap()).await;
    // Runs until the parent kills it, or until the parent is gone (its end of the
    // child's stdin closes): never outlives it.
    let _ =
        tokio::task::spawn_blocking(|| std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]))
            .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_seen_as_gone_within_three_seconds() {
    let (a, mut ea) = device("parent", group()).await;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["device::child_device", "--exact", "--ignored"])
        .env("HAIL_TEST_CHILD_GROUP", a.group().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child device");
    until_peers(&a, &mut ea, 1).await;
    let child_id = a.peers()[0].id;
    child.kill().expect("kill the child");
    let _ = child.wait();
    let start = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Some(DeviceEvent::PeerLeft { peer, reason }) = ea.recv().await
                && peer.id == child_id
            {
                return reason;
            }
        }
    })
    .await
    .expect("the killed device is seen as gone within 3 s");
    assert!(
        matches!(reason, LeaveReason::ConnectionLost | LeaveReason::Timeout),
        "{reason:?}"
    );
    assert!(a.peers().is_empty());
    assert!(start.elapsed() < Duration::from_secs(3));
    // Asking a device known to be gone does not wait for the timeout.
    let t = Instant::now();
    let answers = a.ask("child", Bytes::new(), Duration::from_secs(5)).await;
    assert!(
        matches!(
            answers["child"],
            Err(
                AskError::Resolve(ResolveError::UnknownName(_) | ResolveError::NotConnected(_))
                    | AskError::Unreachable
            )
        ),
        "{answers:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_see_peers_and_messages() {
    let (a, _ea) = device("a", group()).await;
    let (b, eb) = device("b", a.group()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (t1, t2) = (tx.clone(), tx);
    let runner = tokio::spawn(
        eb.run_callbacks(
            hail_discovery::DeviceCallbacks::default()
                .on_joined(move |p| {
                    let _ = t1.send(format!("joined {}", p.name));
                })
                .on_message(move |from, payload| {
                    let _ = t2.send(format!("{from}: {}", String::from_utf8_lossy(&payload)));
                }),
        ),
    );
    assert_eq!(next_line(&mut rx).await, "joined a");
    tokio::time::timeout(Duration::from_secs(5), a.wait_for_peer("b"))
        .await
        .expect("a sees b");
    assert_eq!(a.send("b", Bytes::from_static(b"hello")).await["b"], Ok(()));
    assert_eq!(next_line(&mut rx).await, "a: hello");
    b.close().await;
    // The stream ends with the device, and so does the callback runner.
    tokio::time::timeout(Duration::from_secs(5), runner)
        .await
        .expect("runner ends")
        .unwrap();
    a.close().await;
}

async fn next_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a callback")
        .expect("callbacks running")
}
