//! Budgets for what is not proven: adverts that fill the table, long leases, many
//! addresses and many dials (issue 11 items 4 and 5). Each test is an attack from the
//! network, played on the fake clock.

use super::*;
use crate::config::{DIAL_BURST, MAX_DIAL_ADDRESSES, MAX_DIALS_IN_FLIGHT, MAX_DIALS_PER_SECOND};

fn no_dials() -> PeerTableConfig {
    PeerTableConfig::builder()
        .auto_connect(false)
        .build()
        .unwrap()
}

/// Thousands of forged announces, each with a fresh id and a long lease, fill only the
/// unproven share of the table: a real device's advert is still taken in (the least
/// recently heard forged entry makes room), and its link joins it.
#[test]
fn forged_adverts_cannot_lock_new_devices_out() {
    let t0 = Instant::now();
    let mut t = started_with(1, "a", no_dials(), t0);
    for i in 0..3000 {
        let (a, from) = forged(i);
        t.handle_advert(Advert::Announce(a), from, t0 + ms(1));
    }
    let max = PeerTableConfig::default().max_peers();
    assert!(t.discovered().len() <= max / 2, "{}", t.discovered().len());
    assert!(t.stats().unproven_evicted > 0);
    // A real device is heard after the flood: it is known (and would be dialed).
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(2));
    assert!(t.discovered().iter().any(|p| p.id == id(2)), "b is known");
    // Its link joins it.
    accept(&mut t, LinkId(7), 2, t0 + ms(3));
    t.link_message(LinkId(7), hello(2, "b", 1), t0 + ms(4));
    assert_eq!(joined(&events(&mut t)), [id(2)]);
    assert_eq!(t.resolve("b").map(|(i, _)| i), Ok(id(2)));
}

/// A full table of joined peers is never thinned for unproven adverts, and the unproven
/// share cannot take the room of a link that proves its peer.
#[test]
fn joined_peers_are_never_evicted_for_unproven_ones() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .auto_connect(false)
        .max_peers(8)
        .build()
        .unwrap();
    let mut t = started_with(1, "a", config, t0);
    let link = |t: &mut PeerTable, n: u8, at: Instant| {
        accept(t, LinkId(u64::from(n)), n, at);
        t.link_message(LinkId(u64::from(n)), hello(n, &format!("p{n}"), 1), at);
    };
    for n in 2..6 {
        link(&mut t, n, t0);
    }
    for i in 0..100 {
        let (a, from) = forged(i);
        t.handle_advert(Advert::Announce(a), from, t0 + ms(1));
    }
    assert_eq!(t.peers().len(), 4, "the joined ones stay");
    // Four joined, four unproven: the table is full, yet another link joins, evicting an
    // unproven entry.
    link(&mut t, 6, t0 + ms(2));
    assert_eq!(t.peers().len(), 5);
    assert!(t.discovered().len() <= 8);
}

/// A lease taken from the wire lasts at most 30 s, whatever the advert says.
#[test]
fn a_forged_lease_lasts_thirty_seconds_at_most() {
    let t0 = Instant::now();
    let mut t = started_with(1, "a", no_dials(), t0);
    let (a, from) = forged(1);
    t.handle_advert(Advert::Announce(a), from, t0);
    assert_eq!(MAX_PEER_LEASE, Duration::from_secs(30));
    run_until(&mut t, t0 + Duration::from_secs(30) - ms(1));
    assert_eq!(t.discovered().len(), 1);
    run_until(&mut t, t0 + Duration::from_secs(30));
    assert!(t.discovered().is_empty());
}

/// An advert listing many addresses makes one dial of at most four.
#[test]
fn an_advert_dials_four_addresses_at_most() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    let mut a_body = body(2, "b");
    a_body.addresses = (10..18).map(ip).collect();
    let a = signed(2, 1, a_body);
    t.handle_advert(Advert::Announce(a), src(2), t0);
    let d = dials(&actions(&mut t));
    assert_eq!(d.len(), 1);
    assert_eq!(MAX_DIAL_ADDRESSES, 4);
    assert_eq!(d[0].2.len(), MAX_DIAL_ADDRESSES, "{:?}", d[0].2);
}

/// A hundred adverts at once (a tarpit answering none of the dials): at most 16 dials in
/// flight, and over any stretch of time at most a burst of 32 plus 20 a second.
#[test]
fn dials_are_bounded_in_flight_and_per_second() {
    let t0 = Instant::now();
    // Without dial_yield, so every put-off dial is this device's own (with it, the first
    // dial to a peer this device is the first dialer of is left to that peer while the
    // budget is spent: `a_first_dialer_out_of_dial_budget_leaves_the_first_dial_to_the_peer`;
    // and it would wait for the dials of the others).
    let mut t = started_with(1, "a", no_yield(), t0);
    for n in 0..100u32 {
        // Without dial_yield this device dials each at once.
        let (mut a, _) = forged(n);
        a.body.name = format!("tarpit{n}");
        a.body.addresses = vec![ip(2)];
        let a = Announce::sign(&tarpit_key(n), 1, a.body).unwrap();
        t.handle_advert(Advert::Announce(a), src(2), t0);
    }
    let mut first = dials(&actions(&mut t));
    let once = MAX_DIALS_IN_FLIGHT - DIAL_RESERVE as usize;
    assert_eq!(first.len(), once, "entries heard once: 8 in flight at most");
    assert_eq!(t.dials_in_flight(), once);
    // A device heard twice dials from the reserve (within 50 ms: its first advert's dial
    // was put off).
    t.handle_advert(Advert::Announce(announce(3, "c")), src(3), t0 + ms(1));
    t.handle_advert(Advert::Announce(announce(3, "c")), src(3), t0 + ms(2));
    let reserved = dials(&run_until(&mut t, t0 + ms(60)));
    assert_eq!(
        reserved.iter().map(|d| d.1).collect::<Vec<_>>(),
        [Some(id(3))]
    );
    assert_eq!(t.stats().reserved_dials, 1);
    first.extend(reserved);
    // They hang; nothing more starts meanwhile.
    assert!(dials(&run_until(&mut t, t0 + ms(900))).is_empty());
    // They fail: more start, each failing 50 ms later, within the rate.
    for (dial, _, _) in &first {
        t.dial_failed(*dial, t0 + ms(900));
    }
    let mut total = first.len();
    let mut now = t0 + ms(900);
    while now < t0 + Duration::from_secs(5) {
        now += ms(50);
        for (dial, _, _) in dials(&run_until(&mut t, now)) {
            total += 1;
            t.dial_failed(dial, now);
        }
        assert!(t.dials_in_flight() <= MAX_DIALS_IN_FLIGHT);
        let allowed = DIAL_BURST as f64 + MAX_DIALS_PER_SECOND as f64 * (now - t0).as_secs_f64();
        assert!(
            total as f64 <= allowed + 1.0,
            "{total} dials by {:?}",
            now - t0
        );
    }
    assert!(total > first.len() + 40, "the budget refills: {total}");
}
