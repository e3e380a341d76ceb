//! Peer table tests with a fake clock: direct calls for exact semantics, and a simulated
//! network (`sim`) for meshes, races and loss.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::*;

mod sim;

fn id(n: u8) -> DeviceId {
    DeviceId::from_bytes([n; 16])
}

fn ip(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, host))
}

fn port(n: u8) -> u16 {
    4000 + u16::from(n)
}

/// Where device `n`'s adverts come from.
fn src(n: u8) -> SocketAddr {
    SocketAddr::new(ip(n), 5670)
}

/// Device `n`'s listen address.
fn listen(n: u8) -> SocketAddr {
    SocketAddr::new(ip(n), port(n))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn announce(n: u8, name: &str) -> Announce {
    Announce {
        id: id(n),
        name: name.into(),
        port: port(n),
        lease: Duration::from_secs(3),
        addresses: vec![ip(n)],
    }
}

fn table_with(n: u8, name: &str, config: PeerTableConfig) -> PeerTable {
    let local = LocalDevice::new(id(n), name, port(n)).with_addresses([ip(n)]);
    PeerTable::new(config, local, u64::from(n)).unwrap()
}

fn table(n: u8, name: &str) -> PeerTable {
    table_with(n, name, PeerTableConfig::default())
}

/// A started table with its start actions and events drained.
fn started(n: u8, name: &str, t0: Instant) -> PeerTable {
    let mut t = table(n, name);
    t.start(t0);
    actions(&mut t);
    events(&mut t);
    t
}

fn actions(t: &mut PeerTable) -> Vec<Action> {
    std::iter::from_fn(|| t.poll_action()).collect()
}

fn events(t: &mut PeerTable) -> Vec<Event> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

/// A dial request: its id, the expected device, the addresses.
type DialReq = (DialId, Option<DeviceId>, Vec<SocketAddr>);

fn dials(actions: &[Action]) -> Vec<DialReq> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dial { dial, peer, addrs } => Some((*dial, *peer, addrs.clone())),
            _ => None,
        })
        .collect()
}

fn closes(actions: &[Action]) -> Vec<(ConnId, CloseReason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close { conn, reason } => Some((*conn, *reason)),
            _ => None,
        })
        .collect()
}

fn announces(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Multicast(Advert::Announce(_))))
        .count()
}

fn probes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Multicast(Advert::Probe { .. })))
        .count()
}

fn hello(n: u8, name: &str, tag: u64) -> LinkMessage {
    LinkMessage::Hello(Hello {
        tag,
        announce: announce(n, name),
    })
}

fn joined(events: &[Event]) -> Vec<DeviceId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PeerJoined(p) => Some(p.id),
            _ => None,
        })
        .collect()
}

fn left(events: &[Event]) -> Vec<(DeviceId, LeaveReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PeerLeft { peer, reason } => Some((peer.id, *reason)),
            _ => None,
        })
        .collect()
}

/// Runs every timer due up to and including `until`, collecting actions.
fn run_until(t: &mut PeerTable, until: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    while let Some(at) = t.poll_timeout() {
        if at > until {
            break;
        }
        t.handle_timeout(at);
        out.extend(actions(t));
    }
    out
}

/// Runs timers until the table dials; returns when and the dials. Panics after `limit`.
fn next_dials(t: &mut PeerTable, limit: Instant) -> (Instant, Vec<DialReq>) {
    loop {
        let at = t.poll_timeout().expect("running");
        assert!(at <= limit, "no dial before the limit");
        t.handle_timeout(at);
        let d = dials(&actions(t));
        if !d.is_empty() {
            return (at, d);
        }
    }
}

/// `t` (device 1) learns device `n` by announce and connects to it over `conn`; returns
/// with everything drained.
fn join(t: &mut PeerTable, n: u8, name: &str, conn: ConnId, now: Instant) {
    t.handle_advert(Advert::Announce(announce(n, name)), src(n), now);
    let d = dials(&actions(t));
    assert_eq!(d.len(), 1, "one dial for {name}");
    t.link_up(conn, LinkOrigin::Dialed(d[0].0), listen(n), now);
    actions(t);
    t.link_message(conn, hello(n, name, 0), now);
    let ev = events(t);
    assert_eq!(joined(&ev), [id(n)]);
    actions(t);
}

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
        let local = LocalDevice::new(id(1), "a", 1);
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
    t.handle_advert(Advert::Probe { from: id(2) }, src(2), now);
    t.handle_advert(Advert::Probe { from: id(3) }, src(3), now + ms(1));
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
    // A newcomer: dialed and answered within the probe answer jitter (10 ms).
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), now);
    let d = dials(&actions(&mut t));
    assert_eq!(d.len(), 1);
    let at = t.poll_timeout().unwrap();
    assert!(at >= now && at <= now + ms(10), "{:?}", at - now);
    assert_eq!(announces(&run_until(&mut t, now + ms(10))), 1, "answered");
    // Another newcomer 100 ms later: dialed, but the answer is rate-limited.
    t.handle_advert(Advert::Announce(announce(3, "c")), src(3), now + ms(100));
    let sent = run_until(&mut t, now + ms(499));
    assert_eq!(dials(&sent).len() + dials(&actions(&mut t)).len(), 1);
    assert_eq!(announces(&sent), 0, "at most one answer per 500 ms");
    // A peer with a lease is no newcomer.
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), now + ms(600));
    assert_eq!(announces(&run_until(&mut t, now + ms(700))), 0);
    // A third newcomer past the gap is answered.
    t.handle_advert(Advert::Announce(announce(4, "d")), src(4), now + ms(700));
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
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), later);
    assert_eq!(announces(&run_until(&mut t, later + ms(10))), 1);
}

#[test]
fn an_announce_restarts_a_dial_begun_before_the_peer_was_heard() {
    let t0 = Instant::now();
    let mut c = started(3, "c", t0);
    c.link_up(ConnId(1), LinkOrigin::Dialed(DialId(99)), listen(1), t0);
    c.link_message(ConnId(1), hello(1, "seed", 0), t0);
    actions(&mut c);
    // Told about b by gossip: dialed; the dial hangs (b unreachable, SYN retransmits).
    let record = PeerRecord {
        id: id(2),
        name: "b".into(),
        port: port(2),
        addresses: vec![ip(2)],
    };
    c.link_message(ConnId(1), LinkMessage::Peers(vec![record]), t0);
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
        ConnId(2),
        LinkOrigin::Dialed(fresh[0].0),
        listen(2),
        now + ms(900),
    );
    c.link_message(ConnId(2), hello(2, "b", 0), now + ms(900));
    assert_eq!(joined(&events(&mut c)), [id(1), id(2)]);
}

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

    t.link_up(ConnId(10), LinkOrigin::Dialed(dial), listen(2), t0 + ms(1));
    let sent = actions(&mut t);
    let [
        Action::Send {
            conn: ConnId(10),
            message: LinkMessage::Hello(h),
        },
    ] = sent.as_slice()
    else {
        panic!("a hello: {sent:?}")
    };
    assert_eq!(h.announce, t.announce());
    assert_ne!(h.tag, 0, "the dialer tags its hello");

    t.link_message(ConnId(10), hello(2, "b", 0), t0 + ms(2));
    let ev = events(&mut t);
    assert_eq!(joined(&ev), [id(2)]);
    let Some(Event::PeersChanged(snapshot)) = ev.last() else {
        panic!("snapshot after join: {ev:?}")
    };
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].name, "b");
    assert_eq!(snapshot[0].addresses, [listen(2)]);
    assert_eq!(t.resolve("b"), Ok((id(2), ConnId(10))));
    assert_eq!(t.connection(id(2)), Some(ConnId(10)));
    assert_eq!(t.peer_of(ConnId(10)), Some(id(2)));
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
        ConnId(3),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
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
    t.link_message(ConnId(3), hello(2, "b", 5), t0);
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
    let mut a = announce(2, "b");
    a.lease = Duration::from_secs(30 * 24 * 3600);
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
    join(&mut t, 2, "b", ConnId(10), t0);
    // No announce for a minute: multicast may be lost, the link is what counts.
    run_until(&mut t, t0 + Duration::from_secs(60));
    assert_eq!(t.peers().len(), 1);
    assert!(events(&mut t).is_empty());
    t.link_closed(
        ConnId(10),
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
    t.handle_advert(Advert::Goodbye { from: id(2) }, src(2), t0 + ms(5));
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
    join(&mut t, 2, "b", ConnId(10), t0);
    // The goodbye on the group overtook what b sent on its link: b stays joined (and
    // its link open) until the link says goodbye too.
    t.handle_advert(Advert::Goodbye { from: id(2) }, src(2), t0 + ms(5));
    assert!(events(&mut t).is_empty());
    assert!(closes(&actions(&mut t)).is_empty());
    assert_eq!(t.resolve("b").unwrap().1, ConnId(10));
    assert!(t.poll_timeout().unwrap() <= t0 + ms(505));
    // A late, reordered announce does not renew it.
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(6));
    assert!(actions(&mut t).is_empty());
    t.link_message(ConnId(10), LinkMessage::Goodbye { from: id(2) }, t0 + ms(7));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert_eq!(
        closes(&actions(&mut t)),
        [(ConnId(10), CloseReason::Departed)]
    );
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(8));
    assert!(actions(&mut t).is_empty());
    assert!(t.discovered().is_empty());
    // The driver reporting the close afterwards is ignored.
    t.link_closed(ConnId(10), LinkCloseReason::Lost, t0 + ms(9));
    assert!(events(&mut t).is_empty());
}

#[test]
fn goodbye_on_multicast_then_the_link_closing_is_a_goodbye() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", ConnId(10), t0);
    t.handle_advert(Advert::Goodbye { from: id(2) }, src(2), t0 + ms(5));
    assert!(events(&mut t).is_empty());
    // Its goodbye on the link did not fit its queue; the link ends after what it sent.
    t.link_closed(ConnId(10), LinkCloseReason::Lost, t0 + ms(6));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert!(
        dials(&actions(&mut t)).is_empty(),
        "no redial of a departed peer"
    );
    assert!(t.peers().is_empty());
}

#[test]
fn goodbye_on_multicast_leaves_when_the_grace_ends() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", ConnId(10), t0);
    t.handle_advert(Advert::Goodbye { from: id(2) }, src(2), t0 + ms(5));
    run_until(&mut t, t0 + ms(504));
    assert!(left(&events(&mut t)).is_empty());
    let sent = run_until(&mut t, t0 + ms(505));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert_eq!(closes(&sent), [(ConnId(10), CloseReason::Departed)]);
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
    join(&mut t, 2, "b", ConnId(10), t0);
    t.handle_advert(Advert::Goodbye { from: id(2) }, src(2), t0 + ms(5));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert_eq!(
        closes(&actions(&mut t)),
        [(ConnId(10), CloseReason::Departed)]
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
        ConnId(3),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
        t0,
    );
    actions(&mut t);
    t.handle_advert(Advert::Goodbye { from: id(2) }, src(2), t0 + ms(1));
    assert!(events(&mut t).is_empty());
    t.link_message(ConnId(3), hello(2, "b", 5), t0 + ms(2));
    assert_eq!(t.peer_of(ConnId(3)), Some(id(2)));
    t.link_message(ConnId(3), LinkMessage::Goodbye { from: id(2) }, t0 + ms(3));
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
    join(&mut t, 2, "b", ConnId(10), t0);
    // b dialed too; our own dial (smaller id) wins, b's link drains.
    t.link_up(
        ConnId(11),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
        t0,
    );
    actions(&mut t);
    t.link_message(ConnId(11), hello(2, "b", 1), t0 + ms(1));
    assert_eq!(
        closes(&actions(&mut t)),
        [(ConnId(11), CloseReason::Duplicate)]
    );
    // b says goodbye on the kept link and closes it; what it sent on the other may
    // still be on its way.
    t.link_message(ConnId(10), LinkMessage::Goodbye { from: id(2) }, t0 + ms(2));
    t.link_closed(ConnId(10), LinkCloseReason::Lost, t0 + ms(3));
    assert!(left(&events(&mut t)).is_empty());
    assert!(
        dials(&actions(&mut t)).is_empty(),
        "no redial of a departing peer"
    );
    t.link_closed(ConnId(11), LinkCloseReason::Lost, t0 + ms(4));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert!(t.peers().is_empty());
}

#[test]
fn a_goodbye_on_a_draining_duplicate_counts() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", ConnId(10), t0);
    t.link_up(
        ConnId(11),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
        t0,
    );
    actions(&mut t);
    t.link_message(ConnId(11), hello(2, "b", 1), t0 + ms(1));
    actions(&mut t);
    // b took its own link for the one to keep and says goodbye there.
    t.link_message(ConnId(11), LinkMessage::Goodbye { from: id(2) }, t0 + ms(2));
    assert!(left(&events(&mut t)).is_empty());
    t.link_closed(ConnId(11), LinkCloseReason::Lost, t0 + ms(3));
    assert!(
        left(&events(&mut t)).is_empty(),
        "the kept link is still up"
    );
    t.link_closed(ConnId(10), LinkCloseReason::Lost, t0 + ms(4));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert_eq!(t.stats().protocol_errors, 0);
}

#[test]
fn goodbye_on_the_link_leaves_at_once() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", ConnId(10), t0);
    join(&mut t, 3, "c", ConnId(11), t0);
    // A goodbye on b's link naming c is not believed.
    t.link_message(ConnId(10), LinkMessage::Goodbye { from: id(3) }, t0 + ms(1));
    assert!(events(&mut t).is_empty());
    assert_eq!(t.stats().protocol_errors, 1);
    t.link_message(ConnId(10), LinkMessage::Goodbye { from: id(2) }, t0 + ms(1));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Goodbye)]);
    assert_eq!(t.peers().len(), 1);
}

#[test]
fn restart_under_the_same_name_replaces_the_old_incarnation() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", ConnId(10), t0);
    // Device 2's host comes back as id 9 (same address), while the old link looks up.
    let mut again = announce(2, "b");
    again.id = id(9);
    let now = t0 + Duration::from_secs(2);
    t.handle_advert(Advert::Announce(again.clone()), src(2), now);
    let ev = events(&mut t);
    assert_eq!(left(&ev), [(id(2), LeaveReason::Restarted)]);
    assert!(!ev.iter().any(|e| matches!(e, Event::DuplicateName { .. })));
    let sent = actions(&mut t);
    assert_eq!(closes(&sent), [(ConnId(10), CloseReason::Stale)]);
    assert_eq!(probes(&sent), 1, "a probe checks the old id is really gone");
    let d = dials(&sent);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].1, Some(id(9)));

    t.link_up(ConnId(20), LinkOrigin::Dialed(d[0].0), listen(2), now);
    t.link_message(
        ConnId(20),
        LinkMessage::Hello(Hello {
            tag: 0,
            announce: again,
        }),
        now,
    );
    assert_eq!(joined(&events(&mut t)), [id(9)]);
    assert_eq!(t.resolve("b"), Ok((id(9), ConnId(20))));
    // The stale link's close, reported late, changes nothing.
    t.link_closed(ConnId(10), LinkCloseReason::Lost, now);
    assert!(events(&mut t).is_empty());
}

#[test]
fn a_presumed_restart_that_speaks_again_is_a_duplicate() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "lamp", ConnId(10), t0);
    let mut other = announce(2, "lamp");
    other.id = id(9);
    t.handle_advert(Advert::Announce(other.clone()), src(2), t0 + ms(10));
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Restarted)]);
    actions(&mut t);
    // The old id answers the probe: two devices on one host share the name.
    t.handle_advert(Advert::Announce(announce(2, "lamp")), src(2), t0 + ms(15));
    let ev = events(&mut t);
    assert_eq!(
        ev,
        [Event::DuplicateName {
            name: "lamp".into(),
            ids: vec![id(2), id(9)]
        }]
    );
    assert_eq!(
        t.resolve("lamp"),
        Err(ResolveError::AmbiguousName {
            name: "lamp".into(),
            count: 2
        })
    );
    // Both are dialed (they are two devices), and no more replacing between them.
    assert_eq!(dials(&actions(&mut t)).len(), 1, "id 2 dialed again");
    t.handle_advert(Advert::Announce(other), src(2), t0 + ms(20));
    assert!(events(&mut t).is_empty());
    assert_eq!(t.discovered().len(), 2);
}

#[test]
fn duplicate_names_on_two_hosts_are_reported() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "lamp", ConnId(10), t0);
    t.handle_advert(Advert::Announce(announce(3, "lamp")), src(3), t0 + ms(1));
    let ev = events(&mut t);
    assert_eq!(
        ev,
        [Event::DuplicateName {
            name: "lamp".into(),
            ids: vec![id(2), id(3)]
        }]
    );
    assert!(closes(&actions(&mut t)).is_empty(), "nobody is replaced");
    assert!(matches!(
        t.resolve("lamp"),
        Err(ResolveError::AmbiguousName { count: 2, .. })
    ));
    // Reported once, not on every announce.
    t.handle_advert(Advert::Announce(announce(3, "lamp")), src(3), t0 + ms(900));
    assert!(events(&mut t).is_empty());
    // One leaves: the name resolves again.
    t.handle_advert(Advert::Goodbye { from: id(3) }, src(3), t0 + ms(950));
    assert_eq!(t.resolve("lamp"), Ok((id(2), ConnId(10))));
    // A third device that takes the local name is a duplicate of us.
    t.handle_advert(Advert::Announce(announce(4, "a")), src(4), t0 + ms(960));
    assert_eq!(
        events(&mut t),
        [Event::DuplicateName {
            name: "a".into(),
            ids: vec![id(1), id(4)]
        }]
    );
    assert!(matches!(
        t.resolve("a"),
        Err(ResolveError::AmbiguousName { count: 2, .. })
    ));
    // When it is forgotten, our name is ours again and a new holder is reported anew.
    let d = dials(&actions(&mut t));
    t.dial_failed(d[0].0, t0 + ms(961));
    run_until(&mut t, t0 + ms(4000));
    assert_eq!(t.resolve("a"), Err(ResolveError::UnknownName("a".into())));
    t.handle_advert(Advert::Announce(announce(5, "a")), src(5), t0 + ms(4001));
    assert_eq!(events(&mut t).len(), 1);
}

#[test]
fn a_new_id_replaces_an_unconnected_holder_on_another_host() {
    let t0 = Instant::now();
    let config = PeerTableConfig::builder()
        .auto_connect(false)
        .build()
        .unwrap();
    let mut t = table_with(1, "a", config);
    t.start(t0);
    t.handle_advert(Advert::Announce(announce(2, "lamp")), src(2), t0);
    // The device moved to another address (DHCP) with a new id; the old one never had a
    // link, so it is presumed to be the same device.
    t.handle_advert(Advert::Announce(announce(3, "lamp")), src(3), t0 + ms(500));
    let found = t.discovered();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, id(3));
    assert!(
        events(&mut t).is_empty(),
        "nothing had joined, nothing left"
    );
}

/// Both sides dial at once; whatever order the four hellos arrive in, both keep the link
/// dialed by the smaller id and close the other, and nobody sees a leave.
#[test]
fn simultaneous_dial_keeps_the_smaller_ids_link_in_every_order() {
    // Deliveries: 0 = A gets B's hello on A's dialed link (c1), 1 = A gets B's hello on
    // A's accepted link (c2), 2 = B gets A's hello on B's accepted link (c1), 3 = B gets
    // A's hello on B's dialed link (c2).
    let mut orders = Vec::new();
    permutations(&mut vec![0, 1, 2, 3], 0, &mut orders);
    assert_eq!(orders.len(), 24);
    for order in orders {
        let t0 = Instant::now();
        let mut a = started(1, "a", t0);
        let mut b = started(2, "b", t0);
        a.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0);
        b.handle_advert(Advert::Announce(announce(1, "a")), src(1), t0);
        let da = dials(&actions(&mut a))[0].0;
        let db = dials(&actions(&mut b))[0].0;
        // c1: A dialed, A's end 11, B's end 21. c2: B dialed, B's end 22, A's end 12.
        a.link_up(ConnId(11), LinkOrigin::Dialed(da), listen(2), t0);
        b.link_up(
            ConnId(21),
            LinkOrigin::Accepted,
            SocketAddr::new(ip(1), 50001),
            t0,
        );
        b.link_up(ConnId(22), LinkOrigin::Dialed(db), listen(1), t0);
        a.link_up(
            ConnId(12),
            LinkOrigin::Accepted,
            SocketAddr::new(ip(2), 50002),
            t0,
        );
        let hello_on = |acts: Vec<Action>, conn: ConnId| {
            acts.into_iter()
                .find_map(|x| match x {
                    Action::Send { conn: c, message } if c == conn => Some(message),
                    _ => None,
                })
                .expect("hello")
        };
        let acts_a = actions(&mut a);
        let acts_b = actions(&mut b);
        let a_on_c1 = hello_on(acts_a.clone(), ConnId(11));
        let a_on_c2 = hello_on(acts_a, ConnId(12));
        let b_on_c1 = hello_on(acts_b.clone(), ConnId(21));
        let b_on_c2 = hello_on(acts_b, ConnId(22));
        let mut a_closed = Vec::new();
        let mut b_closed = Vec::new();
        for step in &order {
            match step {
                0 => a.link_message(ConnId(11), b_on_c1.clone(), t0),
                1 => a.link_message(ConnId(12), b_on_c2.clone(), t0),
                2 => b.link_message(ConnId(21), a_on_c1.clone(), t0),
                _ => b.link_message(ConnId(22), a_on_c2.clone(), t0),
            }
            a_closed.extend(closes(&actions(&mut a)));
            b_closed.extend(closes(&actions(&mut b)));
        }
        // The loser's close reaches the other side (which may have closed it already).
        if a_closed.contains(&(ConnId(12), CloseReason::Duplicate)) {
            b.link_closed(ConnId(22), LinkCloseReason::Lost, t0);
        }
        if b_closed.contains(&(ConnId(22), CloseReason::Duplicate)) {
            a.link_closed(ConnId(12), LinkCloseReason::Lost, t0);
        }
        assert_eq!(
            a_closed,
            [(ConnId(12), CloseReason::Duplicate)],
            "{order:?}"
        );
        assert_eq!(
            b_closed,
            [(ConnId(22), CloseReason::Duplicate)],
            "{order:?}"
        );
        assert_eq!(a.connection(id(2)), Some(ConnId(11)), "{order:?}");
        assert_eq!(b.connection(id(1)), Some(ConnId(21)), "{order:?}");
        let (ea, eb) = (events(&mut a), events(&mut b));
        assert_eq!(joined(&ea), [id(2)], "{order:?}");
        assert_eq!(joined(&eb), [id(1)], "{order:?}");
        assert!(left(&ea).is_empty() && left(&eb).is_empty(), "{order:?}");
    }
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
        ConnId(1),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(1), 50001),
        t0,
    );
    b.link_up(
        ConnId(2),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(1), 50002),
        t0,
    );
    actions(&mut b);
    b.link_message(ConnId(1), hello(1, "a", 4), t0);
    b.link_message(ConnId(2), hello(1, "a", 3), t0);
    assert_eq!(
        closes(&actions(&mut b)),
        [(ConnId(1), CloseReason::Duplicate)]
    );
    assert_eq!(b.connection(id(1)), Some(ConnId(2)));
    assert_eq!(joined(&events(&mut b)), [id(1)]);
}

#[test]
fn a_lost_link_reconnected_within_the_grace_is_invisible() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", ConnId(10), t0);
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0 + ms(100));
    run_until(&mut t, t0 + ms(200));
    t.link_closed(ConnId(10), LinkCloseReason::Lost, t0 + ms(200));
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
    t.link_up(ConnId(11), LinkOrigin::Dialed(d[0].0), listen(2), redial);
    t.link_message(ConnId(11), hello(2, "b", 0), redial + ms(1));
    assert!(events(&mut t).is_empty(), "no leave, no second join");
    assert_eq!(t.resolve("b"), Ok((id(2), ConnId(11))));
    run_until(&mut t, t0 + Duration::from_secs(2));
    assert!(events(&mut t).is_empty());
}

#[test]
fn a_lost_link_whose_redial_fails_is_a_departure() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", ConnId(10), t0);
    t.link_closed(ConnId(10), LinkCloseReason::Lost, t0 + ms(200));
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
    join(&mut t, 2, "b", ConnId(10), t0);
    t.link_closed(ConnId(10), LinkCloseReason::Lost, t0 + ms(200));
    // The redial hangs (no answer from the driver yet).
    run_until(&mut t, t0 + ms(699));
    assert!(events(&mut t).is_empty());
    run_until(&mut t, t0 + ms(700));
    assert_eq!(
        left(&events(&mut t)),
        [(id(2), LeaveReason::ConnectionLost)]
    );
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
fn a_link_without_hello_is_closed() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    t.handle_advert(Advert::Announce(announce(2, "b")), src(2), t0);
    let d = dials(&actions(&mut t));
    t.link_up(ConnId(5), LinkOrigin::Dialed(d[0].0), listen(2), t0);
    t.link_up(
        ConnId(6),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(7), 1234),
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
            (ConnId(5), CloseReason::HelloTimeout),
            (ConnId(6), CloseReason::HelloTimeout)
        ]
    );
    // The failed link counts as a failed dial: b is redialed after a backoff.
    assert!(!dials(&run_until(&mut t, t0 + ms(3100))).is_empty());
    // Gossip before the hello is out of place.
    t.link_up(
        ConnId(8),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(7), 1235),
        t0 + ms(3200),
    );
    t.link_message(ConnId(8), LinkMessage::Peers(vec![]), t0 + ms(3200));
    assert_eq!(t.stats().protocol_errors, 1);
}

#[test]
fn a_second_hello_with_another_id_breaks_the_link() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", ConnId(10), t0);
    t.link_message(ConnId(10), hello(2, "b", 0), t0);
    assert_eq!(t.stats().protocol_errors, 1);
    assert!(actions(&mut t).is_empty());
    t.link_message(ConnId(10), hello(3, "c", 0), t0);
    assert_eq!(
        closes(&actions(&mut t)),
        [(ConnId(10), CloseReason::ProtocolViolation)]
    );
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
    t.link_up(ConnId(1), LinkOrigin::Dialed(d[1].0), me, t0);
    t.link_message(ConnId(1), hello(1, "a", 0), t0);
    assert_eq!(
        closes(&actions(&mut t)),
        [(ConnId(1), CloseReason::SelfConnection)]
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
    t.link_up(ConnId(2), LinkOrigin::Dialed(d[0].0), listen(2), at);
    t.link_message(ConnId(2), hello(2, "b", 0), at);
    assert_eq!(joined(&events(&mut t)), [id(2)]);
    assert!(dials(&run_until(&mut t, at + Duration::from_secs(30))).is_empty());
    // Link lost and the grace over: the static address is dialed again.
    let now = at + Duration::from_secs(30);
    t.link_closed(ConnId(2), LinkCloseReason::Timeout, now);
    assert_eq!(left(&events(&mut t)), [(id(2), LeaveReason::Timeout)]);
    let d = dials(&run_until(&mut t, now + Duration::from_secs(1)));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].2, [listen(2)]);
}

#[test]
fn gossip_tells_about_peers_not_heard_on_multicast() {
    let t0 = Instant::now();
    let mut s = started(1, "seed", t0);
    // b connects to the seed (static, no multicast).
    s.link_up(
        ConnId(1),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(2), 50000),
        t0,
    );
    s.link_message(ConnId(1), hello(2, "b", 1), t0);
    actions(&mut s);
    // c connects: it is told about b, and b is told about c.
    s.link_up(
        ConnId(2),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(3), 50000),
        t0,
    );
    actions(&mut s);
    s.link_message(ConnId(2), hello(3, "c", 1), t0);
    let sent = actions(&mut s);
    let gossip: Vec<(ConnId, Vec<DeviceId>)> = sent
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                conn,
                message: LinkMessage::Peers(r),
            } => Some((*conn, r.iter().map(|r| r.id).collect())),
            _ => None,
        })
        .collect();
    assert_eq!(gossip, [(ConnId(2), vec![id(2)]), (ConnId(1), vec![id(3)])]);

    // The receiving side dials what it learns, at the addresses it was given.
    let mut c = started(3, "c", t0);
    c.link_up(ConnId(1), LinkOrigin::Dialed(DialId(99)), listen(1), t0);
    c.link_message(ConnId(1), hello(1, "seed", 0), t0);
    actions(&mut c);
    let record = PeerRecord {
        id: id(2),
        name: "b".into(),
        port: port(2),
        addresses: vec![ip(2)],
    };
    let own = PeerRecord {
        id: id(3),
        name: "c".into(),
        port: port(3),
        addresses: vec![ip(3)],
    };
    c.link_message(ConnId(1), LinkMessage::Peers(vec![record, own]), t0);
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
    join(&mut t, 2, "b", ConnId(10), t0);
    t.handle_advert(Advert::Announce(announce(3, "c")), src(3), t0);
    let d = dials(&actions(&mut t));
    t.link_up(ConnId(11), LinkOrigin::Dialed(d[0].0), listen(3), t0);
    actions(&mut t);
    t.link_message(ConnId(11), hello(3, "c", 0), t0);
    let sent = actions(&mut t);
    assert!(sent.is_empty(), "{sent:?}");
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
    let mut a = announce(2, "b");
    a.addresses = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        "224.0.0.1".parse().unwrap(),
        IpAddr::V6(link_local),
        ip(2),
        ip(5),
    ];
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
    let mut passive = announce(6, "scout");
    passive.port = 0;
    let mut u = started(7, "u", t0);
    u.handle_advert(Advert::Announce(passive), src(6), t0);
    assert!(dials(&actions(&mut u)).is_empty());
    assert_eq!(u.discovered().len(), 1);
    assert!(u.discovered()[0].addresses.is_empty());
}

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
    for n in 2..6 {
        t.handle_advert(Advert::Announce(announce(n, &format!("p{n}"))), src(n), t0);
    }
    assert_eq!(t.discovered().len(), 2);
    assert_eq!(t.stats().peers_rejected, 2);
    // A link from a further device is closed after its hello.
    t.link_up(
        ConnId(9),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(9), 1),
        t0,
    );
    t.link_message(ConnId(9), hello(9, "p9", 1), t0);
    assert!(closes(&actions(&mut t)).contains(&(ConnId(9), CloseReason::TableFull)));
}

#[test]
fn shutdown_says_goodbye_everywhere_and_goes_quiet() {
    let t0 = Instant::now();
    let mut t = started(1, "a", t0);
    join(&mut t, 2, "b", ConnId(10), t0);
    t.link_up(
        ConnId(11),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(3), 1),
        t0,
    );
    actions(&mut t);
    t.shutdown(t0 + ms(1));
    let sent = actions(&mut t);
    assert_eq!(
        sent,
        [
            Action::Multicast(Advert::Goodbye { from: id(1) }),
            Action::Send {
                conn: ConnId(10),
                message: LinkMessage::Goodbye { from: id(1) }
            },
            Action::Close {
                conn: ConnId(10),
                reason: CloseReason::Shutdown
            },
            Action::Close {
                conn: ConnId(11),
                reason: CloseReason::Shutdown
            },
        ]
    );
    assert_eq!(t.poll_timeout(), None);
    assert!(!t.is_running());
    t.handle_advert(Advert::Announce(announce(4, "d")), src(4), t0 + ms(2));
    t.link_up(
        ConnId(12),
        LinkOrigin::Accepted,
        SocketAddr::new(ip(5), 1),
        t0 + ms(2),
    );
    assert_eq!(
        closes(&actions(&mut t)),
        [(ConnId(12), CloseReason::Shutdown)]
    );
    assert!(events(&mut t).is_empty());
    t.shutdown(t0 + ms(3));
    assert!(actions(&mut t).is_empty());
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
    assert_eq!(a.addresses.len(), MAX_ADDRESSES);
    assert!(Advert::Announce(a.clone()).to_bytes().is_ok());
}

#[test]
fn invalid_local_names_are_refused() {
    let local = LocalDevice::new(id(1), "", 1);
    assert_eq!(
        PeerTable::new(PeerTableConfig::default(), local, 0).unwrap_err(),
        ConfigError::InvalidName(crate::NameError::Empty)
    );
}

// ---- simulated networks ----------------------------------------------------------------

fn count_joins_and_leaves(events: &[Event]) -> (usize, usize) {
    (joined(events).len(), left(events).len())
}

#[test]
fn ten_devices_form_a_full_mesh_with_one_link_per_pair() {
    let mut sim = sim::Sim::new(1);
    let start = sim.now;
    for i in 0..10 {
        sim.add(&format!("dev{i}"), PeerTableConfig::default());
    }
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    let took = sim.now - start;
    assert!(took < ms(500), "mesh took {took:?} of simulated time");
    sim.settle();
    assert!(sim.full_mesh());
    assert_eq!(sim.open_links(), 45);
    for i in 0..10 {
        assert_eq!(count_joins_and_leaves(sim.events(i)), (9, 0), "node {i}");
        assert!(
            !sim.events(i)
                .iter()
                .any(|e| matches!(e, Event::DuplicateName { .. }))
        );
    }
    // Quiet afterwards: a minute of beacons changes nothing.
    sim.run_for(Duration::from_secs(60), |_| false);
    assert_eq!(sim.open_links(), 45);
    for i in 0..10 {
        assert_eq!(count_joins_and_leaves(sim.events(i)), (9, 0), "node {i}");
    }
}

#[test]
fn simultaneous_starts_with_random_latency_never_flap() {
    for seed in 0..40 {
        let mut sim = sim::Sim::new(seed);
        sim.max_latency = ms(10);
        for i in 0..4 {
            sim.add(&format!("dev{i}"), PeerTableConfig::default());
        }
        assert!(
            sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh),
            "seed {seed}"
        );
        sim.settle();
        assert_eq!(sim.open_links(), 6, "seed {seed}");
        for i in 0..4 {
            assert_eq!(
                count_joins_and_leaves(sim.events(i)),
                (3, 0),
                "seed {seed} node {i}: {:?}",
                sim.events(i)
            );
        }
    }
}

#[test]
fn lossy_multicast_meshes_converge_within_five_seconds() {
    for seed in 0..20 {
        let mut sim = sim::Sim::new(100 + seed);
        sim.loss = 0.1;
        sim.max_latency = ms(5);
        for i in 0..5 {
            sim.add(&format!("dev{i}"), PeerTableConfig::default());
        }
        assert!(
            sim.run_for(Duration::from_secs(5), sim::Sim::full_mesh),
            "seed {seed}"
        );
        sim.settle();
        assert_eq!(sim.open_links(), 10, "seed {seed}");
    }
}

#[test]
fn static_peers_without_multicast_form_a_mesh_through_one_seed() {
    let mut sim = sim::Sim::new(7);
    sim.multicast = false;
    let seed = sim.add("seed", PeerTableConfig::default());
    let seed_addr = sim.addr_of(seed);
    for name in ["b", "c"] {
        let config = PeerTableConfig::builder()
            .static_peers([seed_addr])
            .build()
            .unwrap();
        sim.add(name, config);
    }
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    sim.settle();
    assert_eq!(sim.open_links(), 3);
    // A late fourth device, also knowing only the seed, joins everyone.
    let config = PeerTableConfig::builder()
        .static_peers([seed_addr])
        .build()
        .unwrap();
    sim.add("d", config);
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    sim.settle();
    assert_eq!(sim.open_links(), 6);
}

fn left_reasons(sim: &sim::Sim, node: usize, who: DeviceId) -> Vec<LeaveReason> {
    left(sim.events(node))
        .into_iter()
        .filter(|(id, _)| *id == who)
        .map(|(_, r)| r)
        .collect()
}

#[test]
fn a_graceful_shutdown_is_seen_as_goodbye_at_once() {
    let mut sim = sim::Sim::new(3);
    for i in 0..3 {
        sim.add(&format!("dev{i}"), PeerTableConfig::default());
    }
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    sim.settle();
    let gone = sim.id_of(2);
    sim.shutdown(2);
    let seen = |s: &sim::Sim| (0..2).all(|i| !left_reasons(s, i, gone).is_empty());
    let before = sim.now;
    assert!(sim.run_for(ms(100), seen));
    assert!(sim.now - before <= ms(20));
    for i in 0..2 {
        assert_eq!(left_reasons(&sim, i, gone), [LeaveReason::Goodbye]);
    }
    sim.settle();
    assert_eq!(sim.open_links(), 1);
}

#[test]
fn a_crash_is_seen_as_a_departure_quickly() {
    let mut sim = sim::Sim::new(4);
    for i in 0..3 {
        sim.add(&format!("dev{i}"), PeerTableConfig::default());
    }
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    sim.settle();
    let gone = sim.id_of(2);
    sim.crash(2);
    let seen = |s: &sim::Sim| (0..2).all(|i| !left_reasons(s, i, gone).is_empty());
    let before = sim.now;
    assert!(sim.run_for(Duration::from_secs(3), seen));
    // The reset is seen at once; the redial is refused about 100 ms later.
    assert!(sim.now - before <= ms(600), "{:?}", sim.now - before);
    for i in 0..2 {
        assert_eq!(left_reasons(&sim, i, gone), [LeaveReason::ConnectionLost]);
    }
    // And forgotten once its lease runs out.
    sim.run_for(Duration::from_secs(4), |_| false);
    for i in 0..2 {
        assert!(sim.table(i).discovered().iter().all(|p| p.id != gone));
    }
}

#[test]
fn a_restarted_device_replaces_its_old_incarnation_everywhere() {
    let mut sim = sim::Sim::new(5);
    for i in 0..3 {
        sim.add(&format!("dev{i}"), PeerTableConfig::default());
    }
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    sim.settle();
    let old = sim.id_of(2);
    let addr = sim.addr_of(2);
    // Power loss: no reset reaches anyone, and the device is back at once under a new
    // id and a new port.
    sim.shutdown_silently(2);
    let new = sim.add_at(
        "dev2",
        PeerTableConfig::default(),
        addr.ip(),
        addr.port() + 100,
    );
    let new_id = sim.id_of(new);
    assert!(sim.run_for(Duration::from_secs(2), sim::Sim::full_mesh));
    for i in 0..2 {
        assert_eq!(left_reasons(&sim, i, old), [LeaveReason::Restarted]);
        assert!(joined(sim.events(i)).contains(&new_id));
        assert!(
            !sim.events(i)
                .iter()
                .any(|e| matches!(e, Event::DuplicateName { .. }))
        );
        assert_eq!(sim.table(i).resolve("dev2").map(|r| r.0), Ok(new_id));
    }
}

// ---- random inputs -----------------------------------------------------------------------

mod random {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    /// One input to the table. Devices 2..=5 share names pairwise (restarts and duplicates)
    /// and hosts (10.0.0.2 and .3); links are slots 0..4.
    #[derive(Debug, Clone)]
    enum Op {
        Announce { dev: u8, host: u8 },
        Probe { dev: u8 },
        Goodbye { dev: u8, on_link: Option<u8> },
        LinkUp { slot: u8, host: u8 },
        Hello { slot: u8, dev: u8, tag: u8 },
        Gossip { slot: u8, dev: u8 },
        Closed { slot: u8, timeout: bool },
        DialFailed,
        DialUp { slot: u8 },
        Advance { ms: u16 },
    }

    fn op() -> impl Strategy<Value = Op> {
        let dev = 2u8..6;
        let host = 2u8..4;
        let slot = 0u8..4;
        prop_oneof![
            3 => (dev.clone(), host.clone()).prop_map(|(dev, host)| Op::Announce { dev, host }),
            1 => dev.clone().prop_map(|dev| Op::Probe { dev }),
            1 => (dev.clone(), proptest::option::of(slot.clone()))
                .prop_map(|(dev, on_link)| Op::Goodbye { dev, on_link }),
            2 => (slot.clone(), host).prop_map(|(slot, host)| Op::LinkUp { slot, host }),
            2 => (slot.clone(), dev.clone(), 0u8..3).prop_map(|(slot, dev, tag)| Op::Hello { slot, dev, tag }),
            1 => (slot.clone(), dev).prop_map(|(slot, dev)| Op::Gossip { slot, dev }),
            1 => (slot.clone(), any::<bool>()).prop_map(|(slot, timeout)| Op::Closed { slot, timeout }),
            1 => Just(Op::DialFailed),
            1 => slot.prop_map(|slot| Op::DialUp { slot }),
            3 => (0u16..4000).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    fn name_of(dev: u8) -> String {
        format!("dev{}", dev / 2)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_inputs_keep_the_table_consistent(ops in proptest::collection::vec(op(), 1..80)) {
            let t0 = Instant::now();
            let config = PeerTableConfig::builder()
                .max_peers(3)
                .static_peers([listen(3)])
                .build()
                .unwrap();
            let mut t = table_with(1, "dev0", config);
            t.start(t0);
            let mut now = t0;
            let mut pending_dials: Vec<DialId> = Vec::new();
            // Our view of each link slot: open, and the ConnId in use (new ids per link).
            let mut slots: BTreeMap<u8, ConnId> = BTreeMap::new();
            let mut next_conn = 100u64;
            let mut members: BTreeSet<DeviceId> = BTreeSet::new();
            let drain = |t: &mut PeerTable,
                             pending: &mut Vec<DialId>,
                             slots: &mut BTreeMap<u8, ConnId>,
                             members: &mut BTreeSet<DeviceId>|
             -> Result<(), TestCaseError> {
                while let Some(a) = t.poll_action() {
                    match a {
                        Action::Dial { dial, addrs, .. } => {
                            prop_assert!(!addrs.is_empty());
                            pending.push(dial);
                        }
                        Action::Close { conn, .. } => slots.retain(|_, c| *c != conn),
                        Action::Multicast(adv) => {
                            adv.to_bytes().unwrap();
                        }
                        Action::Send { message, .. } => {
                            message.to_bytes().unwrap();
                        }
                    }
                }
                while let Some(e) = t.poll_event() {
                    match e {
                        Event::PeerJoined(p) => {
                            prop_assert!(members.insert(p.id), "joined twice: {:?}", p.id);
                        }
                        Event::PeerLeft { peer, .. } => {
                            prop_assert!(members.remove(&peer.id), "left without joining: {:?}", peer.id);
                        }
                        Event::PeersChanged(snapshot) => {
                            let ids: BTreeSet<DeviceId> = snapshot.iter().map(|p| p.id).collect();
                            prop_assert_eq!(&ids, &*members);
                        }
                        Event::DuplicateName { ids, .. } => prop_assert!(ids.len() >= 2),
                    }
                }
                let ids: BTreeSet<DeviceId> = t.peers().iter().map(|p| p.id).collect();
                prop_assert_eq!(&ids, &*members);
                prop_assert!(t.discovered().len() <= 3);
                prop_assert!(t.goodbyes.len() <= 3 && t.draining.len() <= 3);
                Ok(())
            };
            drain(&mut t, &mut pending_dials, &mut slots, &mut members)?;
            for op in ops {
                match op {
                    Op::Announce { dev, host } => {
                        let mut a = announce(dev, &name_of(dev));
                        a.addresses = vec![ip(host)];
                        t.handle_advert(Advert::Announce(a), src(host), now);
                    }
                    Op::Probe { dev } => t.handle_advert(Advert::Probe { from: id(dev) }, src(dev), now),
                    Op::Goodbye { dev, on_link: None } => {
                        t.handle_advert(Advert::Goodbye { from: id(dev) }, src(dev), now);
                    }
                    Op::Goodbye { dev, on_link: Some(slot) } => {
                        if let Some(&conn) = slots.get(&slot) {
                            t.link_message(conn, LinkMessage::Goodbye { from: id(dev) }, now);
                        }
                    }
                    Op::LinkUp { slot, host } => {
                        if let std::collections::btree_map::Entry::Vacant(e) = slots.entry(slot) {
                            let conn = ConnId(next_conn);
                            next_conn += 1;
                            e.insert(conn);
                            t.link_up(conn, LinkOrigin::Accepted, SocketAddr::new(ip(host), 50000), now);
                        }
                    }
                    Op::Hello { slot, dev, tag } => {
                        if let Some(&conn) = slots.get(&slot) {
                            t.link_message(conn, hello(dev, &name_of(dev), u64::from(tag)), now);
                        }
                    }
                    Op::Gossip { slot, dev } => {
                        if let Some(&conn) = slots.get(&slot) {
                            let r = PeerRecord { id: id(dev), name: name_of(dev), port: port(dev), addresses: vec![ip(dev % 2 + 2)] };
                            t.link_message(conn, LinkMessage::Peers(vec![r]), now);
                        }
                    }
                    Op::Closed { slot, timeout } => {
                        if let Some(conn) = slots.remove(&slot) {
                            let reason = if timeout { LinkCloseReason::Timeout } else { LinkCloseReason::Lost };
                            t.link_closed(conn, reason, now);
                        }
                    }
                    Op::DialFailed => {
                        if !pending_dials.is_empty() {
                            let d = pending_dials.remove(0);
                            t.dial_failed(d, now);
                        }
                    }
                    Op::DialUp { slot } => {
                        if !pending_dials.is_empty() && !slots.contains_key(&slot) {
                            let d = pending_dials.remove(0);
                            let conn = ConnId(next_conn);
                            next_conn += 1;
                            slots.insert(slot, conn);
                            t.link_up(conn, LinkOrigin::Dialed(d), listen(2), now);
                        }
                    }
                    Op::Advance { ms } => {
                        now += Duration::from_millis(u64::from(ms));
                        t.handle_timeout(now);
                        if let Some(next) = t.poll_timeout() {
                            prop_assert!(next > now, "timeout in the past after handle_timeout");
                        }
                    }
                }
                drain(&mut t, &mut pending_dials, &mut slots, &mut members)?;
                // Every joined peer has a link, and that link is one the driver has open.
                for p in t.peers() {
                    if let Some(conn) = t.connection(p.id) {
                        prop_assert!(slots.values().any(|c| *c == conn), "active link {conn} not open");
                        prop_assert_eq!(t.peer_of(conn), Some(p.id));
                    }
                }
            }
            // Shutdown closes every link and goes quiet (no events: the device is going).
            t.shutdown(now);
            while let Some(a) = t.poll_action() {
                if let Action::Close { conn, reason } = a {
                    prop_assert_eq!(reason, CloseReason::Shutdown);
                    slots.retain(|_, c| *c != conn);
                }
            }
            prop_assert!(slots.is_empty(), "links left open: {:?}", slots);
            prop_assert!(t.poll_event().is_none());
            prop_assert_eq!(t.poll_timeout(), None);
        }
    }
}
