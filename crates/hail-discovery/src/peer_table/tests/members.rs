//! Membership: joins, leases, goodbyes, the reconnect grace, restarts and duplicate names.

use super::*;

#[test]
fn join_by_announce_dial_and_hello() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0);
    let d = dials(&actions(&mut t));
    assert_eq!(d.len(), 1);
    let (dial, peer, addrs) = d[0].clone();
    assert_eq!(peer, Some(id(2)));
    assert_eq!(addrs, [listen(2)]);
    assert_eq!(t.discovered().len(), 1);
    assert!(t.peers().is_empty(), "not joined before the link is up");
    assert_eq!(t.resolve("b"), Err(ResolveError::NotConnected("b".into())));

    t.link_up(
        LinkId(10),
        LinkOrigin::Dialed(dial),
        listen(2),
        id(2),
        t0 + ms(1),
    );
    let sent = actions(&mut t);
    let [
        Action::Send {
            conn: LinkId(10),
            message: LinkMessage::Hello(h),
        },
    ] = sent.as_slice()
    else {
        panic!("a hello: {sent:?}")
    };
    assert_eq!(h.announce, t.announce());
    assert_ne!(h.tag, 0, "the dialer tags its hello");

    t.link_message(LinkId(10), hello(2, "b", 0), t0 + ms(2));
    let ev = events(&mut t);
    assert_eq!(joined(&ev), [id(2)]);
    let Some(Event::PeersChanged(snapshot)) = ev.last() else {
        panic!("snapshot after join: {ev:?}")
    };
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].name, "b");
    assert_eq!(snapshot[0].addresses, [listen(2)]);
    assert_eq!(t.resolve("b"), Ok((id(2), LinkId(10))));
    assert_eq!(t.connection(id(2)), Some(LinkId(10)));
    assert_eq!(t.peer_of(LinkId(10)), Some(id(2)));
    assert_eq!(
        t.resolve("nobody"),
        Err(ResolveError::UnknownName("nobody".into()))
    );
    // Further announces of a joined peer change nothing.
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(900));
    assert!(actions(&mut t).is_empty());
    assert!(events(&mut t).is_empty());
}

#[test]
fn join_by_accepted_link() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    t.link_up(
        LinkId(3),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
        id(2),
        t0,
    );
    let sent = actions(&mut t);
    assert!(matches!(
        sent.as_slice(),
        [Action::Send {
            message: LinkMessage::Hello(Hello { tag: 0, .. }),
            ..
        }]
    ));
    t.link_message(LinkId(3), hello(2, "b", 5), t0);
    assert_eq!(joined(&events(&mut t)), [id(2)]);
    // Dialable at its advertised port, not the ephemeral source port.
    assert_eq!(t.peers()[0].addresses, [listen(2)]);
    assert!(
        dials(&actions(&mut t)).is_empty(),
        "no dial to a connected peer"
    );
}

#[test]
fn lease_expiry_forgets_an_unconnected_peer() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0);
    let d = dials(&actions(&mut t));
    t.dial_failed(d[0].0, t0 + ms(1));
    // Renewed at 2 s: the 3 s lease now runs to 5 s.
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(2000));
    let redials = run_until(&mut t, t0 + ms(4999));
    assert!(!dials(&redials).is_empty(), "redialed while advertised");
    for (dial, _, _) in dials(&redials) {
        t.dial_failed(dial, t0 + ms(4999));
    }
    assert_eq!(t.discovered().len(), 1);
    run_until(&mut t, t0 + ms(5000));
    assert!(
        t.discovered().is_empty(),
        "forgotten when the lease ran out"
    );
    assert!(events(&mut t).is_empty(), "never joined, so no leave");
    let later = run_until(&mut t, t0 + Duration::from_secs(30));
    assert!(dials(&later).is_empty(), "no redial once forgotten");
    assert_eq!(t.resolve("b"), Err(ResolveError::UnknownName("b".into())));
}

#[test]
fn announced_lease_is_clamped() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .auto_connect(false)
        .build()
        .unwrap();
    let mut t = table_with(1, "a", config);
    t.start(t0);
    let mut a_body = body(2, "b");
    a_body.lease = Duration::from_secs(30 * 24 * 3600);
    let a = signed(2, 1, a_body);
    t.handle_advert(Advert::Announce(a), src(2), t0);
    run_until(&mut t, t0 + MAX_PEER_LEASE - ms(1));
    assert_eq!(t.discovered().len(), 1);
    run_until(&mut t, t0 + MAX_PEER_LEASE);
    assert!(t.discovered().is_empty());
}

#[test]
fn a_connected_peer_lives_by_its_link() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    // No announce for a minute: multicast may be lost, the link is what counts.
    run_until(&mut t, t0 + Duration::from_secs(60));
    assert_eq!(t.peers().len(), 1);
    assert!(events(&mut t).is_empty());
    t.link_closed(
        LinkId(10),
        LinkCloseReason::Timeout,
        t0 + Duration::from_secs(61),
    );
    let ev = events(&mut t);
    assert_eq!(left(&ev), [(id(2), LeaveReason::Timeout)]);
    assert!(matches!(ev.last(), Some(Event::PeersChanged(s)) if s.is_empty()));
    assert_eq!(t.resolve("b"), Err(ResolveError::UnknownName("b".into())));
    run_until(&mut t, t0 + Duration::from_secs(70));
    assert!(t.discovered().is_empty());
}

#[test]
fn goodbye_on_multicast_leaves_at_once_without_a_link_and_sticks() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0);
    actions(&mut t);
    assert_eq!(t.discovered().len(), 1);
    t.handle_advert(goodbye(2), src(2), t0 + ms(5));
    assert!(t.discovered().is_empty());
    // A late, reordered announce does not bring it back.
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(6));
    assert!(actions(&mut t).is_empty());
    assert!(t.discovered().is_empty());
}

#[test]
fn goodbye_on_multicast_waits_for_the_link_to_finish_and_sticks() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    // The goodbye on the group overtook what b sent on its link: b stays joined (and
    // its link open) until the link says goodbye too.
    t.handle_advert(goodbye(2), src(2), t0 + ms(5));
    assert!(events(&mut t).is_empty());
    assert!(closes(&actions(&mut t)).is_empty());
    assert_eq!(t.resolve("b").unwrap().1, LinkId(10));
    assert!(t.poll_timeout().unwrap() <= t0 + ms(505));
    // A late, reordered announce does not renew it.
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(6));
    assert!(actions(&mut t).is_empty());
    t.link_message(LinkId(10), LinkMessage::Goodbye { from: id(2) }, t0 + ms(7));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert_eq!(
        closes(&actions(&mut t)),
        [(LinkId(10), TableCloseReason::Departed)]
    );
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(8));
    assert!(actions(&mut t).is_empty());
    assert!(t.discovered().is_empty());
    // The driver reporting the close afterwards is ignored.
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(9));
    assert!(events(&mut t).is_empty());
}

#[test]
fn goodbye_on_multicast_then_the_link_closing_is_a_goodbye() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.handle_advert(goodbye(2), src(2), t0 + ms(5));
    assert!(events(&mut t).is_empty());
    // Its goodbye on the link did not fit its queue; the link ends after what it sent.
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(6));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert!(
        dials(&actions(&mut t)).is_empty(),
        "no redial of a departed peer"
    );
    assert!(t.peers().is_empty());
}

#[test]
fn a_goodbye_on_multicast_its_link_does_not_follow_is_not_believed() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.handle_advert(goodbye(2), src(2), t0 + ms(5));
    // The grace ends with b's link up and silent about it: b stays, its link too.
    let sent = run_until(&mut t, t0 + ms(505));
    assert!(left(&events(&mut t)).is_empty());
    assert!(closes(&sent).is_empty());
    assert_eq!(t.stats().goodbyes_ignored, 1);
    // b's own goodbye on its link is believed.
    t.link_message(
        LinkId(10),
        LinkMessage::Goodbye { from: id(2) },
        t0 + ms(600),
    );
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
}

#[test]
fn goodbye_on_multicast_with_no_grace_leaves_at_once() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .goodbye_grace(Duration::ZERO)
        .build()
        .unwrap();
    let mut t = table_with(1, "a", config);
    t.start(t0);
    actions(&mut t);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.handle_advert(goodbye(2), src(2), t0 + ms(5));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert_eq!(
        closes(&actions(&mut t)),
        [(LinkId(10), TableCloseReason::Departed)]
    );
}

#[test]
fn a_hello_that_comes_after_the_goodbye_still_joins_before_it_leaves() {
    // b connected, got a's hello, sent a message and shut down at once: its goodbye on
    // the group arrives before its hello on the link. The hello still joins it (what
    // follows on the link is from a joined peer), then its link goodbye makes it leave.
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    t.link_up(
        LinkId(3),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
        id(2),
        t0,
    );
    actions(&mut t);
    t.handle_advert(goodbye(2), src(2), t0 + ms(1));
    assert!(events(&mut t).is_empty());
    t.link_message(LinkId(3), hello(2, "b", 5), t0 + ms(2));
    assert_eq!(t.peer_of(LinkId(3)), Some(id(2)));
    t.link_message(LinkId(3), LinkMessage::Goodbye { from: id(2) }, t0 + ms(3));
    let ev = events(&mut t);
    assert_eq!(joined(&ev), [id(2)]);
    assert_eq!(left(&ev), [(id(2), LeaveReason::Goodbye)]);
    let join_at = ev.iter().position(|e| matches!(e, Event::PeerJoined(_)));
    let left_at = ev.iter().position(|e| matches!(e, Event::PeerLeft { .. }));
    assert!(join_at < left_at, "{ev:?}");
}

#[test]
fn a_goodbye_waits_for_a_duplicate_link_still_draining() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    // b dialed too; the joined link wins (dialed by the pair's first dialer, or of two
    // links b dialed the one with the smaller tag), b's new link drains.
    t.link_up(
        LinkId(11),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
        id(2),
        t0,
    );
    actions(&mut t);
    t.link_message(LinkId(11), hello(2, "b", 1), t0 + ms(1));
    assert_eq!(
        closes(&actions(&mut t)),
        [(LinkId(11), TableCloseReason::Duplicate)]
    );
    // b says goodbye on the kept link and closes it; what it sent on the other may
    // still be on its way.
    t.link_message(LinkId(10), LinkMessage::Goodbye { from: id(2) }, t0 + ms(2));
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(3));
    assert!(left(&events(&mut t)).is_empty());
    assert!(
        dials(&actions(&mut t)).is_empty(),
        "no redial of a departing peer"
    );
    t.link_closed(LinkId(11), LinkCloseReason::Lost, t0 + ms(4));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert!(t.peers().is_empty());
}

#[test]
fn a_goodbye_on_a_draining_duplicate_counts() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.link_up(
        LinkId(11),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
        id(2),
        t0,
    );
    actions(&mut t);
    t.link_message(LinkId(11), hello(2, "b", 1), t0 + ms(1));
    actions(&mut t);
    // b took its own link for the one to keep and says goodbye there.
    t.link_message(LinkId(11), LinkMessage::Goodbye { from: id(2) }, t0 + ms(2));
    assert!(left(&events(&mut t)).is_empty());
    t.link_closed(LinkId(11), LinkCloseReason::Lost, t0 + ms(3));
    assert!(
        left(&events(&mut t)).is_empty(),
        "the kept link is still up"
    );
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(4));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert_eq!(t.stats().protocol_errors, 0);
}

#[test]
fn goodbye_on_the_link_leaves_at_once() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    join(&mut t, 3, "c", LinkId(11), t0);
    // A goodbye on b's link naming c is not believed.
    t.link_message(LinkId(10), LinkMessage::Goodbye { from: id(3) }, t0 + ms(1));
    assert!(events(&mut t).is_empty());
    assert_eq!(t.stats().protocol_errors, 1);
    t.link_message(LinkId(10), LinkMessage::Goodbye { from: id(2) }, t0 + ms(1));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert_eq!(t.peers().len(), 1);
}

#[test]
fn a_lost_link_reconnected_within_the_grace_is_invisible() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(100));
    run_until(&mut t, t0 + ms(200));
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(200));
    assert!(events(&mut t).is_empty());
    assert_eq!(t.peers().len(), 1, "still joined during the grace");
    assert_eq!(t.resolve("b"), Err(ResolveError::NotConnected("b".into())));
    let redial = t.poll_timeout().unwrap();
    assert!(
        redial >= t0 + ms(250) && redial <= t0 + ms(300),
        "{:?}",
        redial - t0
    );
    let d = dials(&run_until(&mut t, redial));
    assert_eq!(d.len(), 1);
    t.link_up(
        LinkId(11),
        LinkOrigin::Dialed(d[0].0),
        listen(2),
        id(2),
        redial,
    );
    t.link_message(LinkId(11), hello(2, "b", 0), redial + ms(1));
    assert!(events(&mut t).is_empty(), "no leave, no second join");
    assert_eq!(t.resolve("b"), Ok((id(2), LinkId(11))));
    run_until(&mut t, t0 + Duration::from_secs(2));
    assert!(events(&mut t).is_empty());
}

#[test]
fn a_lost_link_whose_redial_fails_is_a_departure() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(200));
    let d = dials(&run_until(&mut t, t0 + ms(300)));
    assert_eq!(d.len(), 1);
    // Connection refused: the process is gone.
    t.dial_failed(d[0].0, t0 + ms(301));
    assert_eq!(
        left(&events(&mut t)),
        [(id(2), LeaveReason::ConnectionLost)]
    );
}

#[test]
fn the_grace_runs_out_without_a_link() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(200));
    // The redial hangs (no answer from the driver yet).
    run_until(&mut t, t0 + ms(699));
    assert!(events(&mut t).is_empty());
    run_until(&mut t, t0 + ms(700));
    assert_eq!(
        left(&events(&mut t)),
        [(id(2), LeaveReason::ConnectionLost)]
    );
}

/// Device 2 restarts as id 9 (same host, same name): its old link is gone first (the
/// killed process's connection was reset), then the new id's link proves it: the new id
/// replaces the old at once, with no duplicate-name report in between.
#[test]
fn restart_under_the_same_name_replaces_the_old_incarnation() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(100));
    actions(&mut t);
    assert!(events(&mut t).is_empty(), "in its reconnect grace");
    let again = signed(9, 1, body(2, "b"));
    let now = t0 + ms(200);
    t.handle_advert(Advert::Announce(again.clone()), src(2), now);
    assert!(
        left(&events(&mut t)).is_empty(),
        "an advert alone replaces nobody"
    );
    let d = dials(&actions(&mut t));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].1, Some(id(9)));
    t.link_up(
        LinkId(20),
        LinkOrigin::Dialed(d[0].0),
        listen(2),
        id(9),
        now,
    );
    t.link_message(LinkId(20), hello_of(again, 0), now);
    let ev = events(&mut t);
    assert_eq!(left(&ev), [(id(2), LeaveReason::Restarted)]);
    assert_eq!(joined(&ev), [id(9)]);
    assert!(!ev.iter().any(|e| matches!(e, Event::DuplicateName { .. })));
    assert_eq!(t.resolve("b"), Ok((id(9), LinkId(20))));
}

/// The new incarnation's link comes up while the old one's still looks up (its host was
/// cut off, not reset): both are joined and the name is shared until the old link ends;
/// then the old id leaves as restarted at once, without a reconnect grace.
#[test]
fn a_restart_seen_before_the_old_link_ends_is_a_duplicate_until_it_does() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    let again = signed(9, 1, body(2, "b"));
    let now = t0 + ms(200);
    t.handle_advert(Advert::Announce(again.clone()), src(2), now);
    let d = dials(&actions(&mut t));
    t.link_up(
        LinkId(20),
        LinkOrigin::Dialed(d[0].0),
        listen(2),
        id(9),
        now,
    );
    t.link_message(LinkId(20), hello_of(again, 0), now);
    let ev = events(&mut t);
    assert_eq!(joined(&ev), [id(9)]);
    assert!(left(&ev).is_empty(), "the old link is up: nobody replaced");
    assert!(ev.iter().any(|e| matches!(e,
        Event::DuplicateName { name, ids } if name == "b" && ids == &[id(2), id(9)])));
    assert!(matches!(
        t.resolve("b"),
        Err(ResolveError::AmbiguousName { count: 2, .. })
    ));
    t.link_closed(LinkId(10), LinkCloseReason::Lost, now + ms(50));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Restarted)]);
    assert_eq!(t.resolve("b"), Ok((id(9), LinkId(20))));
}

/// A presumed restart whose old id proves itself alive again (its own link's hello) was
/// two devices sharing a name: it comes back and the name is reported as shared. Its
/// adverts alone do not bring it back (they could be replays).
#[test]
fn a_presumed_restart_that_speaks_again_is_a_duplicate() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "lamp", LinkId(10), t0);
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(5));
    actions(&mut t);
    accept(&mut t, LinkId(20), 9, t0 + ms(10));
    t.link_message(
        LinkId(20),
        hello_of(signed(9, 1, body(2, "lamp")), 1),
        t0 + ms(10),
    );
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Restarted)]);
    actions(&mut t);
    t.handle_advert(Advert::Announce(announce(2, "lamp")), src(2), t0 + ms(15));
    assert!(
        events(&mut t).is_empty(),
        "an advert of a replaced id is not believed"
    );
    assert!(dials(&actions(&mut t)).is_empty());
    // Its link proves it alive: two devices share the name.
    accept(&mut t, LinkId(30), 2, t0 + ms(20));
    t.link_message(LinkId(30), hello(2, "lamp", 2), t0 + ms(20));
    let ev = events(&mut t);
    assert_eq!(joined(&ev), [id(2)]);
    assert!(ev.iter().any(|e| matches!(e,
        Event::DuplicateName { name, ids } if name == "lamp" && ids == &[id(2), id(9)])));
    assert_eq!(
        t.resolve("lamp"),
        Err(ResolveError::AmbiguousName {
            name: "lamp".into(),
            count: 2
        })
    );
}

/// Only joined devices make a name shared: an advert with a joined peer's name (anyone can
/// send one) does not; a second device whose link proves it does, once.
#[test]
fn duplicate_names_on_two_hosts_are_reported() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "lamp", LinkId(10), t0);
    // A second lamp, which t dials at once once it hears it (t is the first dialer).
    let c = peers_of(1, true).find(|&n| n != 2 && n != 4).unwrap();
    t.handle_advert(Advert::Announce(announce(c, "lamp")), src(c), t0 + ms(1));
    assert!(events(&mut t).is_empty(), "an advert proves nothing");
    assert_eq!(t.resolve("lamp"), Ok((id(2), LinkId(10))));
    let d = dials(&actions(&mut t));
    assert_eq!(d.len(), 1);
    t.link_up(
        LinkId(11),
        LinkOrigin::Dialed(d[0].0),
        listen(c),
        id(c),
        t0 + ms(2),
    );
    t.link_message(LinkId(11), hello(c, "lamp", 0), t0 + ms(2));
    let ev = events(&mut t);
    assert!(ev.contains(&Event::DuplicateName {
        name: "lamp".into(),
        ids: vec![id(2), id(c)]
    }));
    assert!(closes(&actions(&mut t)).is_empty(), "nobody is replaced");
    assert!(matches!(
        t.resolve("lamp"),
        Err(ResolveError::AmbiguousName { count: 2, .. })
    ));
    // Reported once, not on every announce.
    t.handle_advert(Advert::Announce(announce(c, "lamp")), src(c), t0 + ms(900));
    assert!(events(&mut t).is_empty());
    // One leaves: the name resolves again.
    t.link_message(
        LinkId(11),
        LinkMessage::Goodbye { from: id(c) },
        t0 + ms(950),
    );
    assert_eq!(t.resolve("lamp"), Ok((id(2), LinkId(10))));
    // A joined device that takes the local name is a duplicate of us.
    accept(&mut t, LinkId(12), 4, t0 + ms(960));
    t.link_message(LinkId(12), hello(4, "a", 1), t0 + ms(960));
    assert!(events(&mut t).contains(&Event::DuplicateName {
        name: "a".into(),
        ids: vec![id(1), id(4)]
    }));
    assert!(matches!(
        t.resolve("a"),
        Err(ResolveError::AmbiguousName { count: 2, .. })
    ));
}

/// Two ids advertising one name, neither linked: both are kept (an advert replaces
/// nobody; the one that stops advertising is forgotten when its lease ends).
#[test]
fn adverts_alone_never_replace_a_holder() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .auto_connect(false)
        .build()
        .unwrap();
    let mut t = table_with(1, "a", config);
    t.start(t0);
    t.handle_advert(Advert::Announce(announce(2, "lamp")), src(2), t0);
    t.handle_advert(Advert::Announce(announce(3, "lamp")), src(3), t0 + ms(500));
    assert_eq!(t.discovered().len(), 2);
    assert!(events(&mut t).is_empty(), "nothing joined, nothing left");
    run_until(&mut t, t0 + ms(3200));
    t.handle_advert(Advert::Announce(announce(3, "lamp")), src(3), t0 + ms(3200));
    let found = t.discovered();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, id(3));
}

#[test]
fn a_goodbye_on_the_link_waits_for_a_link_still_awaiting_its_hello() {
    // a and b dialed each other at once. b took its second link for the active one,
    // sent a message there, then (the first having won) one more on the first, and said
    // goodbye on it. Here the second still awaits b's hello, with the first message
    // behind it: b leaves only once that link is done.
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    accept(&mut t, LinkId(11), 2, t0);
    t.link_message(LinkId(10), LinkMessage::Goodbye { from: id(2) }, t0 + ms(2));
    assert!(left(&events(&mut t)).is_empty(), "a link may still be b's");
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(3));
    assert!(left(&events(&mut t)).is_empty());
    t.link_message(LinkId(11), hello(2, "b", 1), t0 + ms(4));
    assert_eq!(
        t.peer_of(LinkId(11)),
        Some(id(2)),
        "what follows is a member's"
    );
    assert!(left(&events(&mut t)).is_empty());
    t.link_closed(LinkId(11), LinkCloseReason::Lost, t0 + ms(5));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
}

/// A device with a kept identity (one id across runs) says goodbye and starts again: its
/// next run's announce and hello (a later incarnation: higher sequence numbers) are let in
/// at once, while late adverts of the run that said goodbye stay held back.
#[test]
fn a_kept_identity_rejoins_at_once_after_its_goodbye() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.link_message(LinkId(10), LinkMessage::Goodbye { from: id(2) }, t0 + ms(1));
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(1));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    actions(&mut t);
    // A late beacon of the run that left: held back.
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(2));
    assert!(t.discovered().is_empty());
    // The next run: incarnation 1.
    let next = signed(2, 1 << 32, body(2, "b"));
    t.handle_advert(Advert::Announce(next.clone()), src(2), t0 + ms(300));
    let d = dials(&actions(&mut t));
    assert_eq!(d.len(), 1, "dialed at once");
    t.link_up(
        LinkId(11),
        LinkOrigin::Dialed(d[0].0),
        listen(2),
        id(2),
        t0 + ms(301),
    );
    t.link_message(LinkId(11), hello_of(next, 0), t0 + ms(301));
    assert_eq!(joined(&events(&mut t)), [id(2)]);
}
