//! Links: hellos and the one-link-per-pair rule.

use super::*;

/// Both sides dial at once; whatever order the four hellos arrive in (so whichever link
/// is established first on either side), both keep the link dialed by the pair's first
/// dialer and close the other, and nobody sees a leave. Both cases of the rule: a pair
/// whose smaller id dials first, and one whose larger does (there the kept link has the
/// larger name).
#[test]
fn simultaneous_dial_keeps_the_first_dialers_link_in_every_order() {
    for (x, y) in both_kinds_of_pair() {
        simultaneous_dial_in_every_order(x, y);
    }
}

/// [`simultaneous_dial_keeps_the_first_dialers_link_in_every_order`] for the pair of test
/// devices `x` (its first dialer) and `y`.
fn simultaneous_dial_in_every_order(x: u8, y: u8) {
    // Deliveries: 0 = A gets B's hello on A's dialed link (c1), 1 = A gets B's hello on
    // A's accepted link (c2), 2 = B gets A's hello on B's accepted link (c1), 3 = B gets
    // A's hello on B's dialed link (c2).
    let mut orders = Vec::new();
    permutations(&mut vec![0, 1, 2, 3], 0, &mut orders);
    assert_eq!(orders.len(), 24);
    for order in orders {
        let t0 = Instant::now();
        let mut a = started(x, "a", t0);
        let mut b = started_with(y, "b", no_yield(), t0);
        a.handle_advert(Advert::Announce(announce(y, "b")), src(y), t0);
        b.handle_advert(Advert::Announce(announce(x, "a")), src(x), t0);
        let da = dials(&actions(&mut a))[0].0;
        let db = dials(&actions(&mut b))[0].0;
        // c1: A dialed, A's end 11, B's end 21. c2: B dialed, B's end 22, A's end 12.
        a.link_up(LinkId(11), LinkOrigin::Dialed(da), listen(y), id(y), t0);
        b.link_up(
            LinkId(21),
            LinkOrigin::Accepted,
            SocketAddr::new(ip(x), 50001),
            id(x),
            t0,
        );
        b.link_up(LinkId(22), LinkOrigin::Dialed(db), listen(x), id(x), t0);
        a.link_up(
            LinkId(12),
            LinkOrigin::Accepted,
            SocketAddr::new(ip(y), 50002),
            id(y),
            t0,
        );
        let acts_a = actions(&mut a);
        let acts_b = actions(&mut b);
        let a_on_c1 = hello_on(&acts_a, LinkId(11));
        let a_on_c2 = hello_on(&acts_a, LinkId(12));
        let b_on_c1 = hello_on(&acts_b, LinkId(21));
        let b_on_c2 = hello_on(&acts_b, LinkId(22));
        let mut a_closed = Vec::new();
        let mut b_closed = Vec::new();
        for step in &order {
            match step {
                0 => a.link_message(LinkId(11), b_on_c1.clone(), t0),
                1 => a.link_message(LinkId(12), b_on_c2.clone(), t0),
                2 => b.link_message(LinkId(21), a_on_c1.clone(), t0),
                _ => b.link_message(LinkId(22), a_on_c2.clone(), t0),
            }
            a_closed.extend(closes(&actions(&mut a)));
            b_closed.extend(closes(&actions(&mut b)));
        }
        // The loser's close reaches the other side (which may have closed it already).
        if a_closed.contains(&(LinkId(12), TableCloseReason::Duplicate)) {
            b.link_closed(LinkId(22), LinkCloseReason::Lost, t0);
        }
        if b_closed.contains(&(LinkId(22), TableCloseReason::Duplicate)) {
            a.link_closed(LinkId(12), LinkCloseReason::Lost, t0);
        }
        assert_eq!(
            a_closed,
            [(LinkId(12), TableCloseReason::Duplicate)],
            "{order:?}"
        );
        assert_eq!(
            b_closed,
            [(LinkId(22), TableCloseReason::Duplicate)],
            "{order:?}"
        );
        assert_eq!(a.connection(id(y)), Some(LinkId(11)), "{order:?}");
        assert_eq!(b.connection(id(x)), Some(LinkId(21)), "{order:?}");
        let (ea, eb) = (events(&mut a), events(&mut b));
        assert_eq!(joined(&ea), [id(y)], "{order:?}");
        assert_eq!(joined(&eb), [id(x)], "{order:?}");
        assert!(left(&ea).is_empty() && left(&eb).is_empty(), "{order:?}");
    }
}

/// The hello the table sent on `conn` among `acts`.
fn hello_on(acts: &[Action], conn: LinkId) -> LinkMessage {
    acts.iter()
        .find_map(|x| match x {
            Action::Send { conn: c, message } if *c == conn => Some(message.clone()),
            _ => None,
        })
        .expect("hello")
}

/// The first dialer's dial is slow (its SYN was lost, say), so the other dials once its
/// `dial_yield` is over and that link joins on both ends first; then the first dialer's
/// link comes up. Both ends keep the first dialer's link, which came second, and close
/// the other's, and nobody sees a leave or a second join. Both cases of the rule.
#[test]
fn a_late_link_of_the_first_dialer_replaces_the_others_on_both_ends() {
    for (x, y) in both_kinds_of_pair() {
        let t0 = Instant::now();
        let (mut a, mut b) = hearing_each_other(x, y, t0);
        let da = dials(&actions(&mut a));
        assert_eq!(da.len(), 1, "the first dialer dials at once");
        actions(&mut b);
        let wait = PeerTableConfig::default().dial_yield();
        let (at, db) = next_dials(&mut b, t0 + wait + ms(50));
        // c2 first: b dialed, b's end 22, a's end 12.
        link_with_hellos(
            (&mut b, y, LinkId(22)),
            db[0].0,
            (&mut a, x, LinkId(12)),
            at,
        );
        assert_eq!(joined(&events(&mut a)), [id(y)]);
        assert_eq!(joined(&events(&mut b)), [id(x)]);
        assert_eq!(a.connection(id(y)), Some(LinkId(12)));
        assert_eq!(b.connection(id(x)), Some(LinkId(22)));
        actions(&mut a);
        actions(&mut b);
        // Then a's dial gets through: c1, a's end 11, b's end 21.
        let later = t0 + ms(1000);
        link_with_hellos(
            (&mut a, x, LinkId(11)),
            da[0].0,
            (&mut b, y, LinkId(21)),
            later,
        );
        assert_eq!(
            closes(&actions(&mut a)),
            [(LinkId(12), TableCloseReason::Duplicate)]
        );
        assert_eq!(
            closes(&actions(&mut b)),
            [(LinkId(22), TableCloseReason::Duplicate)]
        );
        assert_eq!(a.connection(id(y)), Some(LinkId(11)));
        assert_eq!(b.connection(id(x)), Some(LinkId(21)));
        // Each end's close reaches the other, which closed that link already.
        a.link_closed(LinkId(12), LinkCloseReason::Lost, later);
        b.link_closed(LinkId(22), LinkCloseReason::Lost, later);
        assert_eq!(a.connection(id(y)), Some(LinkId(11)));
        assert_eq!(b.connection(id(x)), Some(LinkId(21)));
        let (ea, eb) = (events(&mut a), events(&mut b));
        assert!(
            joined(&ea).is_empty() && joined(&eb).is_empty(),
            "{ea:?} {eb:?}"
        );
        assert!(
            left(&ea).is_empty() && left(&eb).is_empty(),
            "{ea:?} {eb:?}"
        );
    }
}

/// A link from `dialer`'s dial `dial` to `acceptor` (each a table, its test device and its
/// end of the link) comes up at `now`, and each end gets the other's hello.
fn link_with_hellos(
    (dialer, d, dialer_end): (&mut PeerTable, u8, LinkId),
    dial: DialId,
    (acceptor, n, accepted_end): (&mut PeerTable, u8, LinkId),
    now: Instant,
) {
    dialer.link_up(dialer_end, LinkOrigin::Dialed(dial), listen(n), id(n), now);
    let remote = SocketAddr::new(ip(d), 50000);
    acceptor.link_up(accepted_end, LinkOrigin::Accepted, remote, id(d), now);
    let from_dialer = hello_on(&actions(dialer), dialer_end);
    let from_acceptor = hello_on(&actions(acceptor), accepted_end);
    dialer.link_message(dialer_end, from_acceptor, now);
    acceptor.link_message(accepted_end, from_dialer, now);
}

fn permutations(v: &mut Vec<u8>, k: usize, out: &mut Vec<Vec<u8>>) {
    if k == v.len() {
        out.push(v.clone());
        return;
    }
    for i in k..v.len() {
        v.swap(k, i);
        permutations(v, k + 1, out);
        v.swap(k, i);
    }
}

#[test]
fn two_links_from_one_dialer_keep_the_smaller_tag() {
    let t0 = Instant::now();
    let mut b = started(2, "b", t0);
    // Device 1 dialed twice (a static address and an advert), tags 4 and 3.
    b.link_up(
        LinkId(1),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(1), 50001),
        id(1),
        t0,
    );
    b.link_up(
        LinkId(2),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(1), 50002),
        id(1),
        t0,
    );
    actions(&mut b);
    b.link_message(LinkId(1), hello(1, "a", 4), t0);
    b.link_message(LinkId(2), hello(1, "a", 3), t0);
    assert_eq!(
        closes(&actions(&mut b)),
        [(LinkId(1), TableCloseReason::Duplicate)]
    );
    assert_eq!(b.connection(id(1)), Some(LinkId(2)));
    assert_eq!(joined(&events(&mut b)), [id(1)]);
}

#[test]
fn a_link_without_hello_is_closed() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0);
    let d = dials(&actions(&mut t));
    t.link_up(LinkId(5), LinkOrigin::Dialed(d[0].0), listen(2), id(2), t0);
    t.link_up(
        LinkId(6),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(7), 1234),
        id(7),
        t0,
    );
    actions(&mut t);
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(2000));
    let sent = run_until(&mut t, t0 + Duration::from_secs(3));
    let mut c = closes(&sent);
    c.sort_by_key(|(conn, _)| *conn);
    assert_eq!(
        c,
        [
            (LinkId(5), TableCloseReason::HelloTimeout),
            (LinkId(6), TableCloseReason::HelloTimeout)
        ]
    );
    // The failed link counts as a failed dial: b is redialed after a backoff.
    assert!(!dials(&run_until(&mut t, t0 + ms(3100))).is_empty());
    // Gossip before the hello is out of place.
    t.link_up(
        LinkId(8),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(7), 1235),
        id(7),
        t0 + ms(3200),
    );
    t.link_message(LinkId(8), LinkMessage::Peers(vec![]), t0 + ms(3200));
    assert_eq!(t.stats().protocol_errors, 1);
}

#[test]
fn a_second_hello_with_another_id_breaks_the_link() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.link_message(LinkId(10), hello(2, "b", 0), t0);
    assert_eq!(t.stats().protocol_errors, 1);
    assert!(actions(&mut t).is_empty());
    t.link_message(LinkId(10), hello(3, "c", 0), t0);
    assert_eq!(
        closes(&actions(&mut t)),
        [(LinkId(10), TableCloseReason::IdentityMismatch)]
    );
    assert_eq!(t.stats().identity_mismatch, 1);
}

/// A link whose handshake proved device 9's key, saying hello as joined device 2: refused
/// and counted, and device 2's own link and name are untouched.
#[test]
fn a_hello_for_another_key_than_the_link_proved_is_refused() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.link_up(
        LinkId(11),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(9), 50000),
        id(9),
        t0,
    );
    actions(&mut t);
    t.link_message(LinkId(11), hello(2, "b", 7), t0);
    assert_eq!(
        closes(&actions(&mut t)),
        [(LinkId(11), TableCloseReason::IdentityMismatch)]
    );
    assert_eq!(t.stats().identity_mismatch, 1);
    assert_eq!(t.connection(id(2)), Some(LinkId(10)));
    assert_eq!(t.resolve("b").unwrap(), (id(2), LinkId(10)));
    assert!(left(&events(&mut t)).is_empty());
}

/// A hello whose announce was changed after signing (here: another port) is refused like
/// one for another key.
#[test]
fn a_hello_whose_signature_does_not_verify_is_refused() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    accept(&mut t, LinkId(11), 2, t0);
    let mut a = announce(2, "b");
    a.body.port += 1;
    t.link_message(
        LinkId(11),
        LinkMessage::Hello(Hello {
            tag: 1,
            announce: a,
        }),
        t0,
    );
    assert_eq!(
        closes(&actions(&mut t)),
        [(LinkId(11), TableCloseReason::IdentityMismatch)]
    );
    assert!(joined(&events(&mut t)).is_empty());
}
