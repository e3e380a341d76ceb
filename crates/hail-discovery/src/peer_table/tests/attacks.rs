//! Attacks on the table as a hostile device on the LAN would make them: forged adverts,
//! goodbyes and probes (from the attack session of the second release; the device-level
//! ones are in `tests/it/attack.rs`). Those not yet fixed are `#[ignore]`d with their
//! cause in the doc comment: `cargo test -p hail-discovery --lib attacks -- --ignored`.

use super::*;

/// A forged announce from another host (10.0.0.9) under a joined peer's name, listing
/// the joined peer's address among its own, passes for that peer's restart: the joined
/// peer is reported gone (`Restarted`) and its link closed. The "same host" test of a
/// restart (`claim_name` in src/peer_table/members.rs) takes the addresses the new
/// announce claims as its host, so any group member (any device on the LAN without a
/// passphrase) evicts any joined peer with one datagram.
#[test]
/// Fixed since: a restart is presumed from where the new id's advert came from, not from
/// the addresses it lists.
fn forged_advert_claiming_a_joined_peers_address_evicts_it() {
    let t0 = Instant::now();
    let mut t = started_with(1, "a", PeerTableConfig::default(), t0);
    join(&mut t, 2, "lamp", LinkId(10), t0);
    // The attacker is at 10.0.0.9; it claims the name and lamp's address.
    let mut forged_body = body(9, "lamp");
    forged_body.addresses = vec![ip(2)];
    let forged = signed(9, 1, forged_body);
    let now = t0 + Duration::from_millis(100);
    t.handle_advert(Advert::Announce(forged), src(9), now);
    let ev = events(&mut t);
    let closed: Vec<LinkId> = actions(&mut t)
        .into_iter()
        .filter_map(|a| match a {
            Action::Close { conn, .. } => Some(conn),
            _ => None,
        })
        .collect();
    assert!(
        !ev.iter()
            .any(|e| matches!(e, Event::PeerLeft { peer, .. } if peer.id == id(2))),
        "the joined lamp was evicted by a forged advert: {ev:?}"
    );
    assert!(closed.is_empty(), "lamp's link closed: {closed:?}");
    assert_eq!(t.connection(id(2)), Some(LinkId(10)));
}

/// The same forged announce sent from the attacker's own address, claiming only its
/// own: a joined peer is not replaced, and its name stays its own (only a second joined
/// device could share it).
#[test]
fn a_same_name_advert_from_another_host_does_not_evict_a_joined_peer() {
    let t0 = Instant::now();
    let mut t = started_with(1, "a", PeerTableConfig::default(), t0);
    join(&mut t, 2, "lamp", LinkId(10), t0);
    let mut forged_body = body(9, "lamp");
    forged_body.lease = Duration::from_secs(3);
    let forged = signed(9, 1, forged_body);
    t.handle_advert(
        Advert::Announce(forged),
        src(9),
        t0 + Duration::from_millis(100),
    );
    let ev = events(&mut t);
    assert!(
        !ev.iter()
            .any(|e| matches!(e, Event::PeerLeft { .. } | Event::DuplicateName { .. })),
        "an advert neither evicts a joined peer nor makes its name ambiguous: {ev:?}"
    );
    assert_eq!(t.connection(id(2)), Some(LinkId(10)));
    assert_eq!(t.resolve("lamp").unwrap(), (id(2), LinkId(10)));
}

/// A flood of forged announces, each under a fresh key, from spoofed sources, while a
/// real device `b` starts (its burst at 0, 100 and 300 ms, then a beacon a second).
/// Every forged entry's dial hangs for 3 s, as a black-holed address's does; a dial for
/// `b` connects at once. Returns the dials in all and how long after its first advert
/// `b` joined (None: never, within the run).
///
/// History: with the first signed-advert build this failed at 2 forgeries a millisecond
/// already: the flood's fresh keys from many (spoofable) sources spent the global budget
/// of signature checks (`peer_table/verify.rs`), so most of `b`'s adverts went
/// unverified; the one that was verified made an entry that newer forgeries pushed out of
/// the unproven half (`make_room`, least recently heard first) before its deferred dial
/// came round, and the 16 dials in flight were all the forgeries'. Fixed since: a
/// (source, key) pair heard before is verified from a share of its own
/// (`VERIFY_REPEATS_PER_SECOND`), an entry heard more than once is evicted after every
/// entry heard once, and dials for such entries have a reserve of their own
/// (`DIAL_RESERVE`): a flood of first sightings cannot take any of the three.
///
/// The table holds 64 peers, not the default 1024: its unproven half (32) is full within
/// the flood's first 2 ms as the default's (512) is within 26 ms, so the flood evicts and
/// defers just the same (the same dials, checks and join as at 1024), while the timers
/// walk a sixteenth of the entries every millisecond (that walk took most of these tests'
/// time in a debug build).
fn flood_with_a_real_newcomer(
    per_ms: u32,
    source: impl Fn(u32) -> SocketAddr,
    secs: u64,
) -> (PeerTable, u32, Option<Duration>) {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .max_peers(64)
        .build()
        .expect("valid config");
    let mut t = started_with(1, "a", config, t0);
    let mut hanging: std::collections::VecDeque<(Instant, crate::DialId)> = Default::default();
    let mut dials_total = 0u32;
    let mut next_forged = 0u32;
    let b_start = 500u64;
    let b_adverts: Vec<u64> = [0u64, 100, 300]
        .into_iter()
        .chain((1..secs).map(|s| 300 + 1000 * s))
        .map(|d| b_start + d)
        .collect();
    let mut joined_after = None;
    for step in 0..secs * 1000 {
        let now = t0 + Duration::from_millis(step);
        // Black-holed dials give up after 3 s: their slots free first, the timers run
        // (deferred dials retry), then this millisecond's adverts come in.
        while hanging.front().is_some_and(|(at, _)| *at <= now) {
            let (_, dial) = hanging.pop_front().expect("checked");
            t.dial_failed(dial, now);
        }
        while let Some(at) = t.poll_timeout() {
            if at > now {
                break;
            }
            t.handle_timeout(now);
        }
        for _ in 0..per_ms {
            let a = fresh_forgery(next_forged);
            let from = source(next_forged);
            next_forged += 1;
            t.handle_advert(Advert::Announce(a), from, now);
        }
        if b_adverts.contains(&step) {
            t.handle_advert(Advert::Announce(announce(2, "b")), src(2), now);
        }
        for a in actions(&mut t) {
            if let Action::Dial { dial, peer, .. } = a {
                dials_total += 1;
                if peer == Some(id(2)) {
                    t.link_up(LinkId(2), LinkOrigin::Dialed(dial), listen(2), id(2), now);
                    t.link_message(LinkId(2), hello(2, "b", 0), now);
                } else {
                    hanging.push_back((now + Duration::from_secs(3), dial));
                }
            }
        }
        if joined_after.is_none() && joined(&events(&mut t)).contains(&id(2)) {
            joined_after = Some(Duration::from_millis(step - b_start));
        }
        assert!(t.dials_in_flight() <= crate::MAX_DIALS_IN_FLIGHT);
    }
    actions(&mut t);
    (t, dials_total, joined_after)
}

/// Forged announce `i` under a fresh key of its own (anyone can make one). The first
/// [`MADE_ONCE`] are made once per test process and shared by the flood tests: a key and
/// a signature each, 80,000 of them, took seconds of a debug build's test time per test.
/// They are made on every core: the other flood test waits for them meanwhile.
fn fresh_forgery(i: u32) -> Announce {
    static MADE: std::sync::OnceLock<Vec<Announce>> = std::sync::OnceLock::new();
    let made = MADE.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let chunk = MADE_ONCE.div_ceil(threads);
        std::thread::scope(|s| {
            let parts: Vec<_> = (0..threads)
                .map(|k| {
                    let range = k * chunk..((k + 1) * chunk).min(MADE_ONCE);
                    s.spawn(move || range.map(make_forgery).collect::<Vec<_>>())
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().expect("a forgery thread"))
                .collect()
        })
    });
    made.get(i as usize)
        .cloned()
        .unwrap_or_else(|| make_forgery(i))
}

/// How many forgeries the flood tests share: 20 a millisecond for 4 s.
const MADE_ONCE: u32 = 20 * 4 * 1000;

fn make_forgery(i: u32) -> Announce {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    let key = hail_crypto::Identity::from_secret_bytes(&seed);
    let [_, _, x, y] = i.to_be_bytes();
    Announce::sign(
        &key,
        1,
        AnnounceBody {
            name: format!("forged{i}"),
            port: 4000,
            lease: Duration::from_secs(600),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 1, x, y))],
            metadata: Default::default(),
        },
    )
    .expect("signs")
}

/// The flood goal: 20,000 forged announces a second, each under a fresh key
/// from a source never used before. The budgets hold (at most 16 dials in flight, about
/// 20 new ones a second), the real device is dialed and joins within 2 s of its first
/// advert (the goal: max(2x the quiet-network time, 2 s)), and the flood's cost is
/// bounded (signature checks at most the two shares a second).
#[test]
fn a_forged_advert_flood_leaves_no_dial_for_a_real_device() {
    let secs = 4;
    let (t, dials, joined) = flood_with_a_real_newcomer(
        20,
        |i| {
            let [_, w, x, y] = i.to_be_bytes();
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1 + w, x, y)), 5670)
        },
        secs,
    );
    let s = t.stats();
    assert!(dials <= 32 + 20 * secs as u32, "{dials} dials");
    assert!(
        joined.is_some_and(|d| d <= Duration::from_secs(2)),
        "the real device b joined after {joined:?} ({dials} dials; stats {s:?})"
    );
    // It got in by the shares for repeats: one check, one dial.
    assert!(s.verified_repeats >= 1 && s.reserved_dials >= 1, "{s:?}");
    let checks = s.adverts_received - s.verify_deferred - s.stale_adverts;
    assert!(
        checks <= u64::from(VERIFY_PER_SECOND + VERIFY_REPEATS_PER_SECOND) * (secs + 1),
        "{checks} adverts passed to a signature check: {s:?}"
    );
}

/// The same flood from a fixed pool of 256 spoofed sources (each sending about 80 fresh
/// keys a second, well over its own share): the real device still joins in time.
#[test]
fn a_flood_from_a_pool_of_spoofed_sources_leaves_a_dial_for_a_real_device() {
    let (t, dials, joined) = flood_with_a_real_newcomer(
        20,
        |i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, (i % 256) as u8)), 5670),
        4,
    );
    assert!(
        joined.is_some_and(|d| d <= Duration::from_secs(2)),
        "the real device b joined after {joined:?} ({dials} dials; stats {:?})",
        t.stats()
    );
}

/// Announces `t` multicasts in answer to a probe every millisecond for 1 s, from `from`.
fn announces_for_probe_flood(t: &mut PeerTable, from: DeviceId, t0: Instant) -> usize {
    let mut n = 0;
    for step in 0..1000u64 {
        let now = t0 + Duration::from_millis(step);
        while let Some(at) = t.poll_timeout() {
            if at > now {
                break;
            }
            t.handle_timeout(at);
        }
        t.handle_advert(Advert::Probe { from }, src(9), now);
        n += actions(t)
            .iter()
            .filter(|a| matches!(a, Action::Multicast(Advert::Announce(_))))
            .count();
    }
    n
}

/// Probes from an id this device is the first dialer of (it does not wait for the
/// prober's dial) share one jittered answer (`probe_answer_at`), but nothing limits the
/// answers' rate: a flood of a probe every millisecond gets an announce every few
/// milliseconds (271 for 1000 here) from every device that hears it. Not new today (the
/// jittered path predates dial_yield), and less than the at-once path below, but an
/// amplification all the same.
///
/// Fixed since: answers are at least `MIN_ANSWER_GAP` (50 ms) apart.
#[test]
fn a_probe_flood_from_an_id_we_dial_first_gets_few_answers() {
    let t0 = Instant::now();
    let mut t = started_with(5, "e", PeerTableConfig::default(), t0);
    let prober = peers_of(5, true).next().unwrap();
    let n = announces_for_probe_flood(&mut t, id(prober), t0);
    assert!(n < 100, "{n} announces for 1000 probes");
}

/// The dial_yield rule answers a probe at once when this device would wait for the
/// prober's dial (`waits_for` in src/peer_table/beacons.rs: an id that dials this device
/// first and has no link), with no jitter, no sharing and no rate limit (`answer(now,
/// true)` on every probe; only the newcomer path has `NEWCOMER_ANSWER_GAP`). A forged
/// probe from one made-up id (the same one every time: it never gets a link) makes every
/// device that waits for that id's dial (about half the LAN; when the smaller id dialed
/// first, all of it for an id of zeros) multicast one announce per probe: 1000 probes,
/// 1000 announces from each.
///
/// Fixed since: the at-once answer also keeps `MIN_ANSWER_GAP` (50 ms).
#[test]
fn a_probe_flood_from_an_id_we_wait_for_gets_few_answers() {
    let t0 = Instant::now();
    let mut t = started_with(5, "e", PeerTableConfig::default(), t0);
    // A made-up id of (nearly) zeros that dials this device first.
    let prober = (0..=1u8)
        .map(|b| {
            let mut bytes = [0; 16];
            bytes[15] = b;
            DeviceId::from_bytes(bytes)
        })
        .find(|&p| !dials_first(5, p))
        .unwrap();
    let n = announces_for_probe_flood(&mut t, prober, t0);
    assert!(n < 100, "{n} announces for 1000 probes");
}

/// A forged multicast goodbye for a joined peer (from any address: a goodbye is
/// `Advert::Goodbye { from: id }`, nothing ties it to the device's own adverts) makes
/// the peer leave once the goodbye grace (500 ms) ends with its link still up and
/// silent about it, and tombstones it as departed (`depart` in
/// src/peer_table/members.rs): its link is closed and, for the next 10 s, its adverts
/// are ignored and its hello on a new link is refused. One datagram evicts and locks out
/// a joined peer.
#[test]
/// Fixed since: a goodbye on the group that the peer's live link does not follow within
/// the goodbye grace is ignored (`PeerTableStats::goodbyes_ignored`).
fn a_forged_goodbye_does_not_evict_a_joined_peer() {
    let t0 = Instant::now();
    let mut t = started_with(1, "a", PeerTableConfig::default(), t0);
    join(&mut t, 2, "lamp", LinkId(10), t0);
    t.handle_advert(goodbye(2), src(9), t0 + Duration::from_millis(100));
    let mut left = Vec::new();
    for step in 100..3000u64 {
        let now = t0 + Duration::from_millis(step);
        while let Some(at) = t.poll_timeout() {
            if at > now {
                break;
            }
            t.handle_timeout(at);
        }
        actions(&mut t);
        left.extend(events(&mut t).into_iter().filter_map(|e| match e {
            Event::PeerLeft { peer, reason } => Some((peer.name, reason)),
            _ => None,
        }));
    }
    // lamp, cut off, comes back on a new link at 3 s.
    let now = t0 + Duration::from_secs(3);
    t.link_up(
        LinkId(11),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
        id(2),
        now,
    );
    actions(&mut t);
    t.link_message(
        LinkId(11),
        LinkMessage::Hello(Hello {
            tag: 1,
            announce: announce(2, "lamp"),
        }),
        now,
    );
    let refused: Vec<_> = actions(&mut t)
        .into_iter()
        .filter_map(|a| match a {
            Action::Close { conn, reason } => Some((conn, reason)),
            _ => None,
        })
        .collect();
    assert!(
        left.is_empty(),
        "lamp left on a forged goodbye: {left:?}; its new link at 3 s: {refused:?}"
    );
    assert_eq!(t.connection(id(2)), Some(LinkId(10)));
}

/// A forged announce under a joined peer's name, from an id nobody can reach (no link
/// ever proves it), makes the name ambiguous: `resolve` counts every authoritative,
/// alive holder (`PeerTable::resolve` in src/peer_table/state.rs), the forged one's
/// lease (up to the 30 s clamp) counts as alive, so `send`/`ask`/`to` by that name fail
/// with `AmbiguousName` for as long as one datagram per 30 s keeps it up.
///
/// Fixed since: `resolve` prefers joined holders of a name.
#[test]
fn an_unproven_namesake_does_not_block_a_joined_peers_name() {
    let t0 = Instant::now();
    let mut t = started_with(1, "a", PeerTableConfig::default(), t0);
    join(&mut t, 2, "lamp", LinkId(10), t0);
    let mut forged_body = body(9, "lamp");
    forged_body.lease = Duration::from_secs(3600);
    let forged = signed(9, 1, forged_body);
    let now = t0 + Duration::from_millis(100);
    t.handle_advert(Advert::Announce(forged), src(9), now);
    actions(&mut t);
    events(&mut t);
    // 20 s later (the forged id never answered a dial), the joined lamp is still the
    // only device that proved it is "lamp".
    let later = t0 + Duration::from_secs(20);
    while let Some(at) = t.poll_timeout() {
        if at > later {
            break;
        }
        t.handle_timeout(at);
        for a in actions(&mut t) {
            if let Action::Dial { dial, .. } = a {
                t.dial_failed(dial, at);
            }
        }
    }
    assert_eq!(t.resolve("lamp"), Ok((id(2), LinkId(10))));
}

/// An announce whose signature does not verify (changed on the way, or signed by
/// another key than it carries) is dropped and counted: no entry, no dial.
#[test]
fn unsigned_or_tampered_announces_are_dropped_and_counted() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    let mut tampered = announce(2, "b");
    tampered.body.addresses = vec![ip(9)];
    t.handle_advert(Advert::Announce(tampered), src(2), t0);
    assert_eq!(t.stats().bad_signatures, 1);
    assert!(t.discovered().is_empty());
    assert!(dials(&actions(&mut t)).is_empty());
    // Over the wire: one flipped byte of the body.
    let mut bytes = Advert::Announce(announce(2, "b")).to_bytes().unwrap();
    let at = bytes.len() - SIG - 3;
    bytes[at] ^= 1;
    if t.handle_datagram(&bytes, src(2), t0).is_ok() {
        assert_eq!(t.stats().bad_signatures, 2);
    }
    assert!(t.discovered().is_empty());
}

const SIG: usize = crate::advert::SIGNATURE_LEN;

/// A recorded announce replayed after a newer one (lower sequence number) changes
/// nothing and is counted, without a signature check.
#[test]
fn replayed_older_announces_are_ignored() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    let old = signed(2, 5, body(2, "b"));
    let mut moved = body(2, "b");
    moved.addresses = vec![ip(7)];
    let new = signed(2, 6, moved);
    t.handle_advert(Advert::Announce(new), src(2), t0);
    actions(&mut t);
    t.handle_advert(Advert::Announce(old), src(2), t0 + ms(10));
    assert_eq!(t.stats().stale_adverts, 1);
    assert!(
        t.discovered()[0]
            .addresses
            .contains(&SocketAddr::new(ip(7), port(2)))
    );
}

/// A goodbye on the group leaves only when it is signed by the device's key and newer
/// than its announces: a forged one (another key's signature, or none) and a replay of
/// an earlier run's (a lower sequence number) change nothing.
#[test]
fn only_a_fresh_signed_goodbye_removes_a_peer() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .auto_connect(false)
        .build()
        .unwrap();
    let mut t = table_with(1, "a", config);
    t.start(t0);
    t.handle_advert(Advert::Announce(signed(2, 10, body(2, "b"))), src(2), t0);
    // Replay of a goodbye from before (sequence 3 < 10).
    t.handle_advert(
        Advert::Goodbye(Goodbye::sign(&identity(2), 3)),
        src(2),
        t0 + ms(1),
    );
    assert_eq!(t.stats().stale_adverts, 1);
    // A goodbye for device 2 signed by device 9's key: its bytes say 9's key, so it is
    // 9's goodbye (unknown here), and 2 stays.
    t.handle_advert(
        Advert::Goodbye(Goodbye::sign(&identity(9), 11)),
        src(9),
        t0 + ms(2),
    );
    // A tampered goodbye: 2's key, a signature that does not verify.
    let mut bytes = Advert::Goodbye(Goodbye::sign(&identity(2), 11))
        .to_bytes()
        .unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    t.handle_datagram(&bytes, src(2), t0 + ms(3)).unwrap();
    assert_eq!(t.stats().bad_signatures, 1);
    assert_eq!(t.discovered().len(), 1, "still there");
    // Its own, fresh goodbye.
    t.handle_advert(
        Advert::Goodbye(Goodbye::sign(&identity(2), 11)),
        src(2),
        t0 + ms(4),
    );
    assert!(t.discovered().is_empty());
}

/// Gossip relays what a device signed: a record changed by the relaying peer (another
/// address to dial) is dropped and counted, and nothing is dialed for it.
#[test]
fn a_gossip_record_changed_by_its_relay_is_dropped() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "relay", LinkId(10), t0);
    // A device t dials at once once it learns of it (t is the pair's first dialer).
    let c = peers_of(1, true).find(|&n| n != 2).unwrap();
    let mut r = record(c, "c");
    r.announce.body.addresses = vec![ip(99)];
    t.link_message(LinkId(10), LinkMessage::Peers(vec![r]), t0 + ms(1));
    assert_eq!(t.stats().bad_signatures, 1);
    assert!(dials(&actions(&mut t)).is_empty());
    // Unchanged, it is taken and dialed.
    t.link_message(
        LinkId(10),
        LinkMessage::Peers(vec![record(c, "c")]),
        t0 + ms(2),
    );
    assert_eq!(dials(&actions(&mut t)).len(), 1);
}

/// One host (10.0.0.9) brings links proving 40 keys of its own making: at most
/// `max_peers_per_host` of them join, the rest are closed and counted, and a device on
/// another host still joins. Over loopback there is no such limit.
#[test]
fn one_host_joins_at_most_its_share_of_peers() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .max_peers(16)
        .max_peers_per_host(4)
        .build()
        .unwrap();
    let mut t = started_with(1, "a", config, t0);
    let attacker = SocketAddr::new(ip(9), 50000);
    let mut closed = 0;
    for i in 0..40u32 {
        let (a, _) = forged(i);
        let conn = LinkId(100 + u64::from(i));
        t.link_up(conn, LinkOrigin::Accepted, attacker, a.id(), t0);
        actions(&mut t);
        t.link_message(conn, hello_of(a, 1), t0);
        closed += closes(&actions(&mut t))
            .iter()
            .filter(|(_, r)| *r == TableCloseReason::HostLimit)
            .count();
    }
    assert_eq!(t.peers().len(), 4);
    assert_eq!(closed, 36);
    assert_eq!(t.stats().host_limit, 36);
    accept(&mut t, LinkId(7), 2, t0);
    t.link_message(LinkId(7), hello(2, "b", 1), t0);
    assert_eq!(joined(&events(&mut t)).last(), Some(&id(2)));
    // Loopback links are not counted.
    let mut l = started_with(
        1,
        "a",
        PeerTableConfig::builder()
            .max_peers_per_host(2)
            .build()
            .unwrap(),
        t0,
    );
    let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50000);
    for n in 2..6u8 {
        l.link_up(LinkId(u64::from(n)), LinkOrigin::Accepted, lo, id(n), t0);
        l.link_message(LinkId(u64::from(n)), hello(n, &format!("d{n}"), 1), t0);
    }
    assert_eq!(l.peers().len(), 4);
}

/// Trust on first use: the first key under a name is pinned (reported for keeping); a
/// rogue key under that name is refused and counted, the pinned one still comes back.
#[test]
fn a_pinned_name_refuses_another_key() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .trust(crate::Trust::FirstUse(Default::default()))
        .build()
        .unwrap();
    let mut t = started_with(1, "a", config, t0);
    accept(&mut t, LinkId(10), 2, t0);
    t.link_message(LinkId(10), hello(2, "lamp", 1), t0);
    let ev = events(&mut t);
    assert!(ev.contains(&Event::NamePinned {
        name: "lamp".into(),
        key: *announce(2, "lamp").key_bytes()
    }));
    assert_eq!(joined(&ev), [id(2)]);
    t.link_closed(LinkId(10), LinkCloseReason::Lost, t0 + ms(1));
    // A rogue device under the pinned name.
    accept(&mut t, LinkId(11), 9, t0 + ms(2));
    t.link_message(LinkId(11), hello(9, "lamp", 1), t0 + ms(2));
    assert_eq!(
        closes(&actions(&mut t)),
        [(LinkId(11), TableCloseReason::Untrusted)]
    );
    assert_eq!(t.stats().untrusted, 1);
    assert!(
        left(&events(&mut t)).is_empty(),
        "the real lamp was not replaced"
    );
    // The real one comes back.
    accept(&mut t, LinkId(12), 2, t0 + ms(3));
    t.link_message(LinkId(12), hello(2, "lamp", 2), t0 + ms(3));
    assert_eq!(t.resolve("lamp").unwrap(), (id(2), LinkId(12)));
}

/// An allow list lets in only its keys.
#[test]
fn an_allow_list_refuses_every_other_key() {
    let t0 = Instant::now();
    let allowed = [*announce(2, "b").key_bytes()].into_iter().collect();
    let config = PeerTableConfig::builder()
        .trust(crate::Trust::AllowList(allowed))
        .build()
        .unwrap();
    let mut t = started_with(1, "a", config, t0);
    accept(&mut t, LinkId(10), 3, t0);
    t.link_message(LinkId(10), hello(3, "c", 1), t0);
    assert_eq!(
        closes(&actions(&mut t)),
        [(LinkId(10), TableCloseReason::Untrusted)]
    );
    accept(&mut t, LinkId(11), 2, t0);
    t.link_message(LinkId(11), hello(2, "b", 1), t0);
    assert_eq!(joined(&events(&mut t)), [id(2)]);
    assert_eq!(t.stats().untrusted, 1);
}
