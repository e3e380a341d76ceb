//! Whole devices on the in-memory network (`DeviceBuilder::memory`), in paused time:
//! deterministic, no sockets, no real time spent waiting.

use std::time::Duration;

use bytes::Bytes;
use hail_crypto::GroupKey;
use hail_discovery::{
    AskError, Device, DeviceEvent, DeviceEvents, LeaveReason, ResolveError, SendError,
};
use hail_rpc::RpcError;

use crate::lan::Lan;
use crate::wait::wait_for;

/// A device of group key `key` on host `host`.
async fn keyed(lan: &Lan, name: &str, host: u8, key: [u8; 32]) -> (Device, DeviceEvents) {
    lan.builder(name, host)
        .group_key(GroupKey::from_bytes(key))
        .start()
        .await
        .expect("device starts")
}

/// Two devices meet, a message and a question go across, and a shutdown is a goodbye,
/// all in virtual time.
#[tokio::test(start_paused = true)]
async fn two_devices_meet_talk_and_part() {
    let lan = Lan::new();
    let (lamp, mut le) = lan.device("lamp", 1).await;
    let (switch, _se) = lan.device("switch", 2).await;
    lamp.on_question(|from, q| async move {
        Ok(Bytes::from(format!(
            "{from} asked {}",
            String::from_utf8_lossy(&q)
        )))
    })
    .unwrap();
    let joined = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(1), switch.wait_for_peer("lamp"))
        .await
        .expect("they meet within a second of virtual time");
    assert!(
        joined.elapsed() < Duration::from_millis(500),
        "{:?}",
        joined.elapsed()
    );
    assert_eq!(switch.send("lamp", Bytes::from("on")).await["lamp"], Ok(()));
    let answers = switch
        .ask("lamp", Bytes::from("state"), Duration::from_secs(1))
        .await;
    assert_eq!(answers["lamp"], Ok(Bytes::from("switch asked state")));
    switch.close().await;
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = le.recv().await {
            match e {
                DeviceEvent::PeerJoined(p) => seen.push(format!("joined {}", p.name)),
                DeviceEvent::Message { from, payload, .. } => {
                    seen.push(format!("{from}: {}", String::from_utf8_lossy(&payload)));
                }
                DeviceEvent::PeerLeft { peer, reason } => {
                    seen.push(format!("left {} {reason:?}", peer.name));
                    if reason == LeaveReason::Goodbye {
                        break;
                    }
                }
                _ => {}
            }
        }
    })
    .await
    .expect("a goodbye");
    assert_eq!(seen, ["joined switch", "switch: on", "left switch Goodbye"]);
    lamp.close().await;
}

/// Two groups on one LAN (two group keys): each device sees only its own group, across
/// several beacon intervals of virtual time.
#[tokio::test(start_paused = true)]
async fn group_keys_separate_groups_over_time() {
    let lan = Lan::new();
    let (a, _ea) = keyed(&lan, "alpha", 1, [1; 32]).await;
    let (b, _eb) = keyed(&lan, "bravo", 2, [1; 32]).await;
    let (c, _ec) = keyed(&lan, "charlie", 3, [2; 32]).await;
    a.wait_for_peer("bravo").await;
    b.wait_for_peer("alpha").await;
    // Five beacon intervals later (five beacons from each of the other group, heard
    // and dropped), still two groups.
    wait_for(
        || {
            c.stats().multicast.dropped_wrong_key >= 10
                && a.stats().multicast.dropped_wrong_key >= 5
        },
        || {
            format!(
                "charlie {:?}, alpha {:?}",
                c.stats().multicast,
                a.stats().multicast
            )
        },
    )
    .await;
    let names = |d: &Device| d.peers().into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(&a), ["bravo"]);
    assert_eq!(names(&b), ["alpha"]);
    assert!(names(&c).is_empty());
    let r = c
        .ask("alpha", Bytes::from("hi"), Duration::from_millis(100))
        .await;
    assert_eq!(
        r["alpha"],
        Err(AskError::Resolve(ResolveError::UnknownName("alpha".into())))
    );
    for d in [a, b, c] {
        d.close().await;
    }
}

/// `send` to several peers serves them at once: a peer whose link is full (it does not
/// read) holds up only its own entry; the others' messages are delivered meanwhile.
#[tokio::test(start_paused = true)]
async fn a_full_peer_does_not_hold_up_the_others() {
    let lan = Lan::new();
    let (switch, _se) = lan.device("switch", 1).await;
    // A budget of 1 MiB: slow's link stops reading once its unread messages hold 7/8 MiB.
    let (slow, _slow_events) = lan
        .builder("slow", 2)
        .budget(hail_link::Budget::new(1 << 20))
        .start()
        .await
        .unwrap();
    let (fast, mut fe) = lan.device("fast", 3).await;
    switch.wait_for_peer("slow").await;
    switch.wait_for_peer("fast").await;
    // Nobody reads slow's events: its link fills up, and stays full (every queue on the
    // way to slow's stream, over fifty turns of the other tasks).
    let mut to_slow = switch.to("slow").unwrap();
    for size in [8 * 1024, 64, 1] {
        let chunk = vec![0u8; size];
        let mut full_in_a_row = 0;
        while full_in_a_row < 50 {
            match to_slow.try_send(&chunk) {
                Ok(()) => full_in_a_row = 0,
                Err(SendError::Full) => full_in_a_row += 1,
                Err(e) => panic!("{e}"),
            }
            tokio::task::yield_now().await;
        }
    }
    {
        let send = switch.send(["slow", "fast"], Bytes::from("both"));
        tokio::pin!(send);
        // fast gets its copy while the send still waits for room on slow's link.
        let got = tokio::select! {
            r = &mut send => panic!("send returned with slow's link full: {r:?}"),
            m = async {
                loop {
                    if let Some(DeviceEvent::Message { payload, .. }) = fe.recv().await {
                        break payload;
                    }
                }
            } => m,
        };
        assert_eq!(got, Bytes::from("both"));
    }
    for d in [switch, slow, fast] {
        d.close().await;
    }
}

/// A handler learns who called from the link, not from the call: `caller` gives the
/// calling device's proven id and joined name, and messages carry the sender's id.
#[tokio::test(start_paused = true)]
async fn handlers_and_messages_know_the_proven_peer() {
    let lan = Lan::new();
    let (lamp, mut le) = lan.device("lamp", 1).await;
    let (switch, _se) = lan.device("switch", 2).await;
    lamp.handlers()
        .bind_with("whoami", |peer, (): ()| async move {
            let who = hail_discovery::caller(&peer).ok_or("no caller")?;
            Ok::<_, &str>((who.name, *who.id.as_bytes()))
        })
        .unwrap();
    switch.wait_for_peer("lamp").await;
    lamp.wait_for_peer("switch").await;
    let rpc = switch.peer("lamp").unwrap();
    let (name, id): (String, [u8; 16]) = rpc
        .execute("whoami", (), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(name, "switch");
    assert_eq!(id, *switch.id().as_bytes());
    assert_eq!(switch.send("lamp", Bytes::from("hi")).await["lamp"], Ok(()));
    let from_id = loop {
        if let DeviceEvent::Message { from, from_id, .. } = le.recv().await.expect("stream open") {
            assert_eq!(&*from, "switch");
            break from_id;
        }
    };
    assert_eq!(from_id, switch.id());
    switch.close().await;
    lamp.close().await;
}

/// A `Device::peer` handle serves one link: once that link is gone (here the lamp
/// restarted) its calls fail with `RpcError::Stale` rather than a `NotConnected` that
/// could mean "wait", and `peer` again gives a handle on the new link.
#[tokio::test(start_paused = true)]
async fn a_peer_handle_of_a_gone_link_is_stale_and_peer_again_serves_the_new_one() {
    let lan = Lan::new();
    let bind_ping = |d: &Device, answer: u32| {
        d.handlers()
            .bind("ping", move |(): ()| async move { Ok::<_, String>(answer) })
            .unwrap();
    };
    let (lamp, _le) = lan.device("lamp", 1).await;
    bind_ping(&lamp, 1);
    let (switch, _se) = lan.device("switch", 2).await;
    switch.wait_for_peer("lamp").await;
    let old = switch.peer("lamp").unwrap();
    let t = Duration::from_secs(1);
    assert_eq!(old.execute::<_, u32>("ping", (), t).await, Ok(1));

    lamp.close().await;
    wait_for(|| !old.is_connected(), || "the old link closes".into()).await;
    assert_eq!(
        old.execute::<_, u32>("ping", (), t).await,
        Err(RpcError::Stale)
    );

    let (lamp, _le) = lan.device("lamp", 1).await;
    bind_ping(&lamp, 2);
    switch.wait_for_peer("lamp").await;
    let new = switch.peer("lamp").unwrap();
    assert_eq!(new.execute::<_, u32>("ping", (), t).await, Ok(2));
    assert_eq!(
        old.execute::<_, u32>("ping", (), t).await,
        Err(RpcError::Stale),
        "a stale handle stays stale"
    );
    switch.close().await;
    lamp.close().await;
}

/// Trust on first use through a file: the first lamp's key is pinned and written down;
/// once it has gone, a rogue device named `lamp` with another key never joins, also
/// after the watcher restarts (the pin was read back from the file).
#[tokio::test(start_paused = true)]
async fn known_devices_pin_names_across_restarts() {
    let dir = std::env::temp_dir().join(format!("hail-tofu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("known");
    let _ = std::fs::remove_file(&file);
    let lan = Lan::new();
    let (v, _ve) = lan
        .builder("v", 1)
        .known_devices(&file)
        .start()
        .await
        .unwrap();
    let (lamp, _le) = lan.device("lamp", 2).await;
    v.wait_for_peer("lamp").await;
    let pinned = std::fs::read_to_string(&file).unwrap();
    assert!(pinned.starts_with("lamp\t"), "{pinned:?}");
    lamp.close().await;
    v.close().await;
    let (v, _ve) = lan
        .builder("v", 1)
        .known_devices(&file)
        .start()
        .await
        .unwrap();
    let (rogue, _re) = lan.device("lamp", 3).await;
    let joined = tokio::time::timeout(Duration::from_secs(5), v.wait_for_peer("lamp")).await;
    assert!(joined.is_err(), "a rogue key took a pinned name");
    assert!(v.stats().discovery.untrusted >= 1);
    rogue.close().await;
    v.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
