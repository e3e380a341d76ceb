//! Bad input, bounds, shutdown and the local configuration.

use super::*;

#[test]
fn bad_datagrams_are_counted_and_harmless() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    assert!(matches!(
        t.handle_datagram(b"HAIL\x09\x01", src(2), t0),
        Err(AdvertError::UnsupportedVersion { version: 9 })
    ));
    assert!(t.handle_datagram(b"hello world", src(2), t0).is_err());
    assert!(t.handle_datagram(&[], src(2), t0).is_err());
    assert_eq!(t.stats().adverts_dropped, 3);
    let good = Advert::Announce(announce(2, "b")).to_bytes().unwrap();
    t.handle_datagram(&good, src(2), t0).unwrap();
    assert_eq!(t.discovered().len(), 1);
    assert_eq!(t.stats().adverts_received, 1);
}

#[test]
fn the_table_is_bounded() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder().max_peers(2).build().unwrap();
    let mut t = table_with(1, "a", config);
    t.start(t0);
    // Devices known only from adverts take half the table: each newer one makes room by
    // forgetting the one heard of longest ago.
    for n in 2..6 {
        t.handle_advert(
            Advert::Announce(announce(n, &format!("p{n}"))),
            src(n),
            t0 + ms(u64::from(n)),
        );
    }
    assert_eq!(t.discovered().len(), 1);
    assert_eq!(t.discovered()[0].id, id(5), "the last heard");
    assert_eq!(t.stats().unproven_evicted, 3);
    // Links take the rest, then the unproven entry's room; then the table is full.
    for n in [9, 8, 7] {
        accept(&mut t, LinkId(u64::from(n)), n, t0 + ms(10));
        t.link_message(
            LinkId(u64::from(n)),
            hello(n, &format!("p{n}"), 1),
            t0 + ms(10),
        );
    }
    assert_eq!(joined(&events(&mut t)), [id(9), id(8)]);
    assert!(closes(&actions(&mut t)).contains(&(LinkId(7), TableCloseReason::TableFull)));
    assert_eq!(t.stats().peers_rejected, 1);
}

#[test]
fn shutdown_says_goodbye_everywhere_and_goes_quiet() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", LinkId(10), t0);
    t.link_up(
        LinkId(11),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(3), 1),
        id(3),
        t0,
    );
    actions(&mut t);
    t.close(t0 + ms(1));
    let mut sent = actions(&mut t);
    let Action::Multicast(Advert::Goodbye(g)) = sent.remove(0) else {
        panic!("a goodbye first: {sent:?}");
    };
    assert_eq!(g.id(), id(1));
    g.verify().expect("signed");
    assert!(g.seq() > t.announce().seq(), "above every announce");
    assert_eq!(
        sent,
        [
            Action::Send {
                conn: LinkId(10),
                message: LinkMessage::Goodbye { from: id(1) }
            },
            Action::Close {
                conn: LinkId(10),
                reason: TableCloseReason::Shutdown
            },
            Action::Close {
                conn: LinkId(11),
                reason: TableCloseReason::Shutdown
            },
        ]
    );
    assert_eq!(t.poll_timeout(), None);
    assert!(!t.is_running());
    t.handle_advert(Advert::Announce(announce(4, "d")), src(4), t0 + ms(2));
    t.link_up(
        LinkId(12),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(5), 1),
        id(5),
        t0 + ms(2),
    );
    assert_eq!(
        closes(&actions(&mut t)),
        [(LinkId(12), TableCloseReason::Shutdown)]
    );
    assert!(events(&mut t).is_empty());
    t.close(t0 + ms(3));
    assert!(actions(&mut t).is_empty());
}

#[test]
fn invalid_local_names_are_refused() {
    let local = LocalDevice::new(identity(1), "", 1);
    assert_eq!(
        PeerTable::new(PeerTableConfig::default(), local, 0).unwrap_err(),
        ConfigError::InvalidName(crate::NameError::Empty)
    );
}
