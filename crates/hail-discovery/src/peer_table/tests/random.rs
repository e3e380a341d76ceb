//! Random inputs (proptest): the table stays consistent whatever arrives.

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
        // Our view of each link slot: open, and the LinkId in use (new ids per link).
        let mut slots: BTreeMap<u8, LinkId> = BTreeMap::new();
        let mut next_conn = 100u64;
        let mut members: BTreeSet<DeviceId> = BTreeSet::new();
        let drain = |t: &mut PeerTable,
                         pending: &mut Vec<DialId>,
                         slots: &mut BTreeMap<u8, LinkId>,
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
                    Event::NamePinned { .. } => {}
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
                    let mut a_body = body(dev, &name_of(dev));
                    a_body.addresses = vec![ip(host)];
                    let a = signed(dev, 1, a_body);
                    t.handle_advert(Advert::Announce(a), src(host), now);
                }
                Op::Probe { dev } => t.handle_advert(Advert::Probe { from: id(dev) }, src(dev), now),
                Op::Goodbye { dev, on_link: None } => {
                    t.handle_advert(goodbye(dev), src(dev), now);
                }
                Op::Goodbye { dev, on_link: Some(slot) } => {
                    if let Some(&conn) = slots.get(&slot) {
                        t.link_message(conn, LinkMessage::Goodbye { from: id(dev) }, now);
                    }
                }
                Op::LinkUp { slot, host } => {
                    if let std::collections::btree_map::Entry::Vacant(e) = slots.entry(slot) {
                        let conn = LinkId(next_conn);
                        next_conn += 1;
                        e.insert(conn);
                        t.link_up(conn, LinkOrigin::Accepted, SocketAddr::new(ip(host), 50000), id(host), now);
                    }
                }
                Op::Hello { slot, dev, tag } => {
                    if let Some(&conn) = slots.get(&slot) {
                        t.link_message(conn, hello(dev, &name_of(dev), u64::from(tag)), now);
                    }
                }
                Op::Gossip { slot, dev } => {
                    if let Some(&conn) = slots.get(&slot) {
                        let mut b = body(dev, &name_of(dev));
                        b.addresses = vec![ip(dev % 2 + 2)];
                        let r = PeerRecord { announce: signed(dev, 1, b), observed: None };
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
                        let conn = LinkId(next_conn);
                        next_conn += 1;
                        slots.insert(slot, conn);
                        t.link_up(conn, LinkOrigin::Dialed(d), listen(2),id(2), now);
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
        t.close(now);
        while let Some(a) = t.poll_action() {
            if let Action::Close { conn, reason } = a {
                prop_assert_eq!(reason, TableCloseReason::Shutdown);
                slots.retain(|_, c| *c != conn);
            }
        }
        prop_assert!(slots.is_empty(), "links left open: {:?}", slots);
        prop_assert!(t.poll_event().is_none());
        prop_assert_eq!(t.poll_timeout(), None);
    }
}
