//! Announce schedule, probes and answers to newcomers.

use super::*;

#[test]
fn start_burst_then_jittered_beacons() {
    let t0 = Instant::now();
    let mut t = table(1, "a");
    assert_eq!(t.poll_timeout(), None, "idle before start");
    t.start(t0);
    let first = actions(&mut t);
    assert_eq!(announces(&first), 1, "announce at 0");
    assert_eq!(probes(&first), 1, "probe at 0");

    let burst2 = t.poll_timeout().unwrap();
    assert!(
        burst2 >= t0 + ms(100) && burst2 <= t0 + ms(120),
        "{:?}",
        burst2 - t0
    );
    t.handle_timeout(burst2);
    assert_eq!(announces(&actions(&mut t)), 1);
    let burst3 = t.poll_timeout().unwrap();
    assert!(burst3 >= t0 + ms(300) && burst3 <= t0 + ms(320));
    t.handle_timeout(burst3);
    assert_eq!(announces(&actions(&mut t)), 1);

    let mut last = burst3;
    let mut gaps = Vec::new();
    for _ in 0..50 {
        let at = t.poll_timeout().unwrap();
        t.handle_timeout(at);
        let sent = actions(&mut t);
        assert_eq!(announces(&sent), 1);
        assert_eq!(probes(&sent), 0, "no probe after start");
        gaps.push(at - last);
        last = at;
    }
    assert!(
        gaps.iter().all(|g| *g >= ms(900) && *g <= ms(1100)),
        "{gaps:?}"
    );
    assert!(
        gaps.iter().any(|g| *g != gaps[0]),
        "beacons are jittered: {gaps:?}"
    );

    // The same seed gives the same schedule; another seed another one.
    let schedule = |seed: u64| {
        let local = LocalDevice::new(identity(1), "a", 1);
        let mut t = PeerTable::new(PeerTableConfig::default(), local, seed).unwrap();
        t.start(t0);
        (0..5)
            .map(|_| {
                let at = t.poll_timeout().unwrap();
                t.handle_timeout(at);
                at
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(schedule(7), schedule(7));
    assert_ne!(schedule(7), schedule(8));
}

#[test]
fn custom_burst_and_no_jitter() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .burst([ms(50), ms(0), ms(20)])
        .burst_jitter(Duration::ZERO)
        .beacon_interval(ms(500))
        .beacon_jitter(Duration::ZERO)
        .lease(ms(1500))
        .build()
        .unwrap();
    let mut t = table_with(1, "a", config);
    t.start(t0);
    assert_eq!(announces(&actions(&mut t)), 1);
    let mut times = Vec::new();
    for _ in 0..4 {
        let at = t.poll_timeout().unwrap();
        t.handle_timeout(at);
        assert_eq!(announces(&actions(&mut t)), 1);
        times.push(at - t0);
    }
    assert_eq!(times, [ms(20), ms(50), ms(550), ms(1050)]);
}

#[test]
fn probes_are_answered_once_after_a_short_jitter() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    let now = t0 + Duration::from_secs(5);
    run_until(&mut t, now);
    // Probers this device dials first (it would answer one it waits for at once: see
    // `the_other_waits_for_the_first_dialers_dial`).
    let (p, q) = {
        let mut peers = peers_of(1, true);
        (peers.next().unwrap(), peers.next().unwrap())
    };
    t.handle_advert(Advert::Probe { from: id(p) }, src(p), now);
    t.handle_advert(Advert::Probe { from: id(q) }, src(q), now + ms(1));
    let at = t.poll_timeout().unwrap();
    assert!(at >= now && at <= now + ms(10), "{:?}", at - now);
    t.handle_timeout(at);
    assert_eq!(announces(&actions(&mut t)), 1, "one answer for both probes");
    // Our own probe, looped back by multicast, is not answered.
    t.handle_advert(Advert::Probe { from: id(1) }, src(1), at);
    assert!(t.poll_timeout().unwrap() > at + ms(10));
    assert_eq!(t.stats().own_adverts, 1);
    assert_eq!(t.stats().adverts_received, 2);
}

#[test]
fn newcomers_are_answered_at_once_at_most_every_500_ms() {
    let t0 = Instant::now();
    // Beacons far apart: every announce sent below is an answer.
    let config = PeerTableConfig::builder()
        .beacon_interval(Duration::from_secs(60))
        .beacon_jitter(Duration::ZERO)
        .lease(Duration::from_secs(180))
        .build()
        .unwrap();
    let mut t = table_with(1, "a", config);
    t.start(t0);
    let now = t0 + Duration::from_secs(5);
    run_until(&mut t, now);
    events(&mut t);
    // Newcomers this device dials first (it answers one it waits for at once, and dials
    // it only after the wait).
    let mut peers = peers_of(1, true);
    let [nb, nc, nd] = [(); 3].map(|_| peers.next().unwrap());
    // A newcomer: dialed and answered within the probe answer jitter (10 ms).
    t.handle_advert(Advert::Announce(announce(nb, "b")), src(nb), now);
    let d = dials(&actions(&mut t));
    assert_eq!(d.len(), 1);
    let at = t.poll_timeout().unwrap();
    assert!(at >= now && at <= now + ms(10), "{:?}", at - now);
    assert_eq!(announces(&run_until(&mut t, now + ms(10))), 1, "answered");
    // Another newcomer 100 ms later: dialed, but the answer is rate-limited.
    t.handle_advert(Advert::Announce(announce(nc, "c")), src(nc), now + ms(100));
    let sent = run_until(&mut t, now + ms(499));
    assert_eq!(dials(&sent).len() + dials(&actions(&mut t)).len(), 1);
    assert_eq!(announces(&sent), 0, "at most one answer per 500 ms");
    // A peer with a lease is no newcomer.
    t.handle_advert(Advert::Announce(announce(nb, "b")), src(nb), now + ms(600));
    assert_eq!(announces(&run_until(&mut t, now + ms(700))), 0);
    // A third newcomer past the gap is answered.
    t.handle_advert(Advert::Announce(announce(nd, "d")), src(nd), now + ms(700));
    assert_eq!(announces(&run_until(&mut t, now + ms(710))), 1);
    // A peer gone by its lease (as across a partition) is a newcomer again when it
    // comes back.
    for (dial, _, _) in dials(&run_until(&mut t, now + ms(710))) {
        t.dial_failed(dial, now + ms(710));
    }
    t.dial_failed(d[0].0, now + ms(710));
    let later = now + Duration::from_secs(10);
    for (dial, _, _) in dials(&run_until(&mut t, later)) {
        t.dial_failed(dial, later);
    }
    run_until(&mut t, later);
    assert!(t.discovered().is_empty(), "all forgotten");
    t.handle_advert(Advert::Announce(announce(nb, "b")), src(nb), later);
    assert_eq!(announces(&run_until(&mut t, later + ms(10))), 1);
}

#[test]
fn set_addresses_announces_and_truncates() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    let many: Vec<IpAddr> = (0..40).map(|i| ip(100 + i)).collect();
    t.set_addresses(many, t0);
    let sent = actions(&mut t);
    let [Action::Multicast(Advert::Announce(a))] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(a.body.addresses.len(), MAX_ADDRESSES);
    assert!(Advert::Announce(a.clone()).to_bytes().is_ok());
}
