//! Dialing: whom, at which addresses, and the backoff.

use super::*;
use crate::config::MAX_DIALS_IN_FLIGHT;

#[test]
fn an_announce_restarts_a_dial_begun_before_the_peer_was_heard() {
    let t0 = Instant::now();
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
    // Told about b by gossip: dialed; the dial hangs (b unreachable, SYN retransmits).
    let record = record(2, "b");
    c.link_message(LinkId(1), LinkMessage::Peers(vec![record]), t0);
    let old = dials(&actions(&mut c));
    assert_eq!(old.len(), 1);
    // b is heard: a fresh dial at once, the hanging one notwithstanding.
    let now = t0 + ms(300);
    c.handle_advert(Advert::Announce(announce(2, "b")), src(2), now);
    let fresh = dials(&actions(&mut c));
    assert_eq!(fresh.len(), 1, "dialed afresh");
    assert_ne!(fresh[0].0, old[0].0);
    // The old dial failing late changes nothing; b, now leased, is not dialed a third time.
    c.dial_failed(old[0].0, now + ms(700));
    c.handle_advert(Advert::Announce(announce(2, "b")), src(2), now + ms(800));
    assert!(dials(&actions(&mut c)).is_empty());
    // The fresh dial's link joins b.
    c.link_up(
        LinkId(2),
        LinkOrigin::Dialed(fresh[0].0),
        listen(2),
        id(2),
        now + ms(900),
    );
    c.link_message(LinkId(2), hello(2, "b", 0), now + ms(900));
    assert_eq!(joined(&events(&mut c)), [id(1), id(2)]);
}

#[test]
fn redial_backs_off_exponentially_up_to_the_cap() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    let mut now = t0;
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), now);
    let mut dial = dials(&actions(&mut t))[0].0;
    let mut gaps = Vec::new();
    for _ in 0..10 {
        t.dial_failed(dial, now);
        let failed_at = now;
        loop {
            let at = t.poll_timeout().unwrap();
            assert!(at - failed_at <= ms(5000), "no redial within the cap");
            now = at;
            t.handle_timeout(at);
            if let Some(d) = dials(&actions(&mut t)).first() {
                dial = d.0;
                break;
            }
            // Device 2 keeps announcing itself, so it stays advertised.
            t.handle_advert(Advert::Announce(announce(2, "b")), src(2), now);
        }
        gaps.push(now - failed_at);
    }
    let bounds = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000];
    for (gap, max) in gaps.iter().zip(bounds) {
        assert!(*gap >= ms(max / 2) && *gap <= ms(max), "{gaps:?}");
    }
}

#[test]
fn static_peers_are_dialed_and_redialed_and_self_is_skipped() {
    let t0 = Instant::now();
    let me = listen(1);
    let config = PeerTableConfig::builder()
        .static_peers([listen(2), me])
        .build()
        .unwrap();
    let mut t = table_with(1, "a", config);
    t.start(t0);
    let d = dials(&actions(&mut t));
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].2, [listen(2)]);
    assert_eq!(d[0].1, None);
    assert_eq!(d[1].2, [me]);
    // Our own address answers with our own hello.
    t.link_up(LinkId(1), LinkOrigin::Dialed(d[1].0), me, id(1), t0);
    t.link_message(LinkId(1), hello(1, "a", 0), t0);
    assert_eq!(
        closes(&actions(&mut t)),
        [(LinkId(1), TableCloseReason::SelfConnection)]
    );
    // Device 2 is not up yet: backoff, then again, and again.
    t.dial_failed(d[0].0, t0);
    let mut at = t0;
    for _ in 0..3 {
        let (when, again) = next_dials(&mut t, at + Duration::from_secs(1));
        at = when;
        assert_eq!(again.len(), 1, "only the static peer, never ourselves");
        assert_eq!(again[0].2, [listen(2)]);
        t.dial_failed(again[0].0, at);
    }
    let (at, d) = next_dials(&mut t, at + Duration::from_secs(2));
    t.link_up(LinkId(2), LinkOrigin::Dialed(d[0].0), listen(2), id(2), at);
    t.link_message(LinkId(2), hello(2, "b", 0), at);
    assert_eq!(joined(&events(&mut t)), [id(2)]);
    assert!(dials(&run_until(&mut t, at + Duration::from_secs(30))).is_empty());
    // Link lost and the grace over: the static address is dialed again.
    let now = at + Duration::from_secs(30);
    t.link_closed(LinkId(2), LinkCloseReason::Timeout, now);
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Timeout)]);
    let d = dials(&run_until(&mut t, now + Duration::from_secs(1)));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].2, [listen(2)]);
}

#[test]
fn addresses_are_filtered_and_scoped() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .auto_connect(false)
        .build()
        .unwrap();
    let mut t = table_with(1, "a", config);
    t.start(t0);
    let link_local = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    let mut a_body = body(2, "b");
    a_body.addresses = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        "224.0.0.1".parse().unwrap(),
        IpAddr::V6(link_local),
        ip(2),
        ip(5),
    ];
    let a = signed(2, 1, a_body);
    t.handle_advert(Advert::Announce(a.clone()), src(2), t0);
    assert_eq!(
        t.discovered()[0].addresses,
        [listen(2), SocketAddr::new(ip(5), port(2))],
        "no loopback from afar, no link-local without a scope"
    );
    // Heard over IPv6 link-local on interface 3: link-local addresses get that scope.
    let v6src = SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
        5670,
        0,
        3,
    ));
    t.handle_advert(Advert::Announce(a.clone()), v6src, t0);
    let addrs = &t.discovered()[0].addresses;
    assert!(addrs.contains(&SocketAddr::V6(SocketAddrV6::new(
        link_local,
        port(2),
        0,
        3
    ))));
    // Heard over loopback: the loopback address is fine.
    let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5670);
    t.handle_advert(Advert::Announce(a), lo, t0);
    assert_eq!(
        t.discovered()[0].addresses[0],
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port(2))
    );
    // A device with port 0 is listed but never dialed.
    let mut passive_body = body(6, "scout");
    passive_body.port = 0;
    let passive = signed(6, 1, passive_body);
    let mut u = started(7, "u", t0);
    u.handle_advert(Advert::Announce(passive), src(6), t0);
    assert!(dials(&actions(&mut u)).is_empty());
    assert_eq!(u.discovered().len(), 1);
    assert!(u.discovered()[0].addresses.is_empty());
}

/// Two devices hear each other: the pair's first dialer dials at once, the other waits
/// for that dial and, when its link joins, never dials: one link, no duplicate to close.
/// Both cases of the rule: a pair whose smaller id dials first, and one whose larger does.
#[test]
fn the_other_waits_for_the_first_dialers_dial() {
    for (x, y) in both_kinds_of_pair() {
        let t0 = Instant::now();
        let (mut a, mut b) = hearing_each_other(x, y, t0);
        assert_eq!(
            dials(&actions(&mut a)).len(),
            1,
            "the first dialer dials at once"
        );
        let answer = actions(&mut b);
        assert!(dials(&answer).is_empty(), "the other waits");
        // ... and answers the newcomer at once (no jitter): a dials on hearing it.
        assert!(
            answer
                .iter()
                .any(|x| matches!(x, Action::Multicast(Advert::Announce(_)))),
            "{answer:?}"
        );
        assert!(dials(&run_until(&mut b, t0 + ms(5))).is_empty());
        // a's dial arrives at b within the wait.
        accept(&mut b, LinkId(21), x, t0 + ms(5));
        b.link_message(LinkId(21), hello(x, "a", 7), t0 + ms(6));
        assert_eq!(joined(&events(&mut b)), [id(x)]);
        actions(&mut b);
        assert!(
            dials(&run_until(&mut b, t0 + ms(400))).is_empty(),
            "linked: no dial of its own"
        );
    }
}

/// The first dialer's dial does not come (it does not hear us, or does not auto-connect):
/// the other dials once its wait is over, and redials after a failure at once. Both
/// cases of the rule, as above.
#[test]
fn the_other_dials_when_the_wait_is_over() {
    let wait = PeerTableConfig::default().dial_yield();
    for (x, y) in both_kinds_of_pair() {
        let t0 = Instant::now();
        let mut b = started(y, "b", t0);
        b.handle_advert(Advert::Announce(announce(x, "a")), src(x), t0);
        assert!(dials(&actions(&mut b)).is_empty());
        let before = t0 + wait - ms(50);
        assert!(
            dials(&run_until(&mut b, before)).is_empty(),
            "not before the wait is over"
        );
        b.handle_advert(Advert::Announce(announce(x, "a")), src(x), before);
        assert!(
            dials(&run_until(&mut b, t0 + wait - ms(1))).is_empty(),
            "another advert does not restart it"
        );
        let d = dials(&run_until(&mut b, t0 + wait));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1, Some(id(x)));
        b.dial_failed(d[0].0, t0 + wait + ms(10));
        // The redial backoff (100 ms at most for a first failure), not another wait.
        assert_eq!(
            dials(&run_until(&mut b, t0 + wait + ms(110))).len(),
            1,
            "redialed"
        );
    }
}

/// Many peers heard at once (a device starting into a group) that this device is the
/// first dialer of: it dials as many as its budget lets it at once, and the others as the
/// budget frees, itself: each well within the peers' wait, so no pair runs two handshakes
/// and no dial waits for a peer's turn (handing the first dial of each put-off peer to
/// that peer, as this table did before, made them wait for the peers' yields while this
/// device's budget was free again: in a forming mesh of 50, half of the links).
#[test]
fn a_first_dialer_out_of_dial_budget_keeps_its_turn() {
    let wait = PeerTableConfig::default().dial_yield();
    let t0 = Instant::now();
    let mut a = started(1, "a", t0);
    let peers: Vec<u8> = peers_of(1, true).take(19).collect();
    for &n in &peers {
        a.handle_advert(Advert::Announce(announce(n, &format!("p{n}"))), src(n), t0);
    }
    let once = MAX_DIALS_IN_FLIGHT - DIAL_RESERVE as usize;
    let mut dialed: Vec<Option<DeviceId>> = Vec::new();
    let mut batch = dials(&actions(&mut a));
    assert_eq!(batch.len(), once, "as many as the budget lets it, at once");
    let (mut conn, mut at) = (0, t0);
    while !batch.is_empty() {
        // The batch connects at once: room again for the next.
        at += ms(5);
        for (dial, peer, _) in &batch {
            let n = peers
                .iter()
                .copied()
                .find(|&n| Some(id(n)) == *peer)
                .unwrap();
            conn += 1;
            a.link_up(
                LinkId(conn),
                LinkOrigin::Dialed(*dial),
                listen(n),
                id(n),
                at,
            );
            a.link_message(LinkId(conn), hello(n, &format!("p{n}"), 0), at);
            dialed.push(*peer);
        }
        actions(&mut a);
        let Some((next_at, next)) = next_dials_within(&mut a, t0 + wait - ms(1)) else {
            break;
        };
        assert!(next.len() <= once, "never more than the budget in flight");
        (at, batch) = (next_at, next);
    }
    dialed.sort();
    let mut all: Vec<Option<DeviceId>> = peers.iter().map(|&n| Some(id(n))).collect();
    all.sort();
    assert_eq!(
        dialed, all,
        "every peer dialed by a, each once, before the peers' wait"
    );
    assert_eq!(a.peers().len(), peers.len());
}

/// A first dialer whose budget stays spent (a flood of forged adverts holding its dials
/// in tarpits) dials a real peer as soon as a dial ends: at the budget's pace, not put
/// off by any wait of the peer's.
#[test]
fn a_first_dialer_whose_budget_stays_spent_dials_as_soon_as_a_dial_ends() {
    let t0 = Instant::now();
    let mut a = started(1, "a", t0);
    let once = MAX_DIALS_IN_FLIGHT - DIAL_RESERVE as usize;
    // Forged adverts a dials at once (it is their first dialer).
    for (advert, from) in (0..)
        .map(forged)
        .filter(|(advert, _)| dials_first(1, advert.id()))
        .take(once)
    {
        a.handle_advert(Advert::Announce(advert), from, t0);
    }
    let tarpits = dials(&actions(&mut a));
    assert_eq!(tarpits.len(), once, "the budget's dials hang");
    let r = peers_of(1, true).next().unwrap();
    a.handle_advert(Advert::Announce(announce(r, "r")), src(r), t0);
    assert!(
        dials(&run_until(&mut a, t0 + ms(100))).is_empty(),
        "no room while the budget is spent"
    );
    a.dial_failed(tarpits[0].0, t0 + ms(110));
    let late = dials(&run_until(&mut a, t0 + ms(170)));
    assert_eq!(
        late.iter().map(|d| d.1).collect::<Vec<_>>(),
        [Some(id(r))],
        "dialed at the budget's pace (its retry every 50 ms)"
    );
}

/// A device on both default groups is heard from an IPv4 and an IPv6 source by turns:
/// it is one peer, dialed once at both sources (IPv4 first, the link-local one with the
/// scope it arrived on), and once joined its adverts on either group change nothing
/// (no peer snapshot per advert, no second dial).
#[test]
fn a_peer_heard_on_both_groups_is_one_peer_dialed_once_at_both_sources() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    let v6src = SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
        5670,
        0,
        3,
    ));
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0);
    t.handle_advert(Advert::Announce(announce(2, "b")), v6src, t0 + ms(1));
    let want = [
        listen(2),
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
            port(2),
            0,
            3,
        )),
    ];
    assert_eq!(t.discovered().len(), 1, "one peer");
    assert_eq!(t.discovered()[0].addresses, want);
    let d = dials(&actions(&mut t));
    assert_eq!(d.len(), 1, "one dial: {d:?}");
    t.link_up(
        LinkId(5),
        LinkOrigin::Dialed(d[0].0),
        listen(2),
        id(2),
        t0 + ms(2),
    );
    t.link_message(LinkId(5), hello(2, "b", 7), t0 + ms(3));
    assert_eq!(joined(&events(&mut t)), [id(2)]);
    actions(&mut t);
    for k in 0..6u64 {
        let from = if k % 2 == 0 { src(2) } else { v6src };
        t.handle_advert(Advert::Announce(announce(2, "b")), from, t0 + ms(10 + k));
    }
    assert_eq!(
        events(&mut t),
        [],
        "adverts by turns on each group change nothing"
    );
    assert!(dials(&actions(&mut t)).is_empty());
    assert_eq!(t.peers().len(), 1);
    assert_eq!(t.peers()[0].addresses, want);
}
