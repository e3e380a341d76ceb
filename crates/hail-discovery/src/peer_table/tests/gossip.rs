//! Gossip between joined peers.

use super::*;

#[test]
fn gossip_tells_about_peers_not_heard_on_multicast() {
    let t0 = Instant::now();
    let mut s = started(1, "seed", t0);
    // b connects to the seed (static, no multicast).
    s.link_up(
        LinkId(1),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
        id(2),
        t0,
    );
    s.link_message(LinkId(1), hello(2, "b", 1), t0);
    actions(&mut s);
    // c connects: it is told about b, and b is told about c.
    s.link_up(
        LinkId(2),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(3), 50000),
        id(3),
        t0,
    );
    actions(&mut s);
    s.link_message(LinkId(2), hello(3, "c", 1), t0);
    let sent = actions(&mut s);
    let gossip: Vec<(LinkId, Vec<DeviceId>)> = sent
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                conn,
                message: LinkMessage::Peers(r),
            } => Some((*conn, r.iter().map(|r| r.announce.id()).collect())),
            _ => None,
        })
        .collect();
    assert_eq!(gossip, [(LinkId(2), vec![id(2)]), (LinkId(1), vec![id(3)])]);

    // The receiving side dials what it learns, at the addresses it was given.
    let mut c = started_with(3, "c", no_yield(), t0);
    c.link_up(
        LinkId(1),
        LinkOrigin::Dialed(DialId(99)),
        listen(1),
        id(1),
        t0,
    );
    c.link_message(LinkId(1), hello(1, "seed", 0), t0);
    actions(&mut c);
    let b = record(2, "b");
    let own = record(3, "c");
    c.link_message(LinkId(1), LinkMessage::Peers(vec![b, own]), t0);
    let d = dials(&actions(&mut c));
    assert_eq!(d.len(), 1, "not ourselves");
    assert_eq!(d[0].1, Some(id(2)));
    assert_eq!(d[0].2, [listen(2)]);
    // Not reachable: redialed while the gossip lease lasts (10 s), then forgotten.
    c.dial_failed(d[0].0, t0);
    let mut n = 0;
    while let Some(at) = c.poll_timeout() {
        if at > t0 + Duration::from_secs(20) {
            break;
        }
        c.handle_timeout(at);
        for (dial, _, _) in dials(&actions(&mut c)) {
            assert!(at < t0 + Duration::from_secs(10));
            n += 1;
            c.dial_failed(dial, at);
        }
    }
    assert!(n >= 3, "{n} redials");
    // Only the seed's own link keeps a timer now (its beacons); no more dials to b.
    assert!(dials(&run_until(&mut c, t0 + Duration::from_secs(40))).is_empty());
}

#[test]
fn peers_heard_on_multicast_get_no_gossip() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    // c is heard on multicast and dialed at once (t is the first dialer of the pair).
    let c = peers_of(1, true).find(|&n| n != 2).unwrap();
    t.handle_advert(Advert::Announce(announce(c, "c")), src(c), t0);
    let d = dials(&actions(&mut t));
    assert_eq!(d.len(), 1);
    t.link_up(LinkId(11), LinkOrigin::Dialed(d[0].0), listen(c), id(c), t0);
    actions(&mut t);
    t.link_message(LinkId(11), hello(c, "c", 0), t0);
    let sent = actions(&mut t);
    assert!(sent.is_empty(), "{sent:?}");
}
