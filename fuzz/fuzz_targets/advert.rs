//! `hail_discovery::Advert::decode`, `LinkMessage::decode`, and the peer table fed with
//! whatever arrives.
//!
//! First the whole input is decoded as an advert and as a link message. Then records
//! `[op, len, bytes...]` drive a started `PeerTable` (small limits, fake clock): op 0 feeds
//! `len` bytes as a datagram from one of four sources, 1 as a link message on one of four
//! links (opened on first use, accepted), 2 closes a link (lost or timed out), 3 fails the
//! oldest pending dial, 4 connects it, 5 lets `len * 10` ms pass and runs the timers.
//!
//! Checked: a message that decodes is within the size limit, has valid names and bounded
//! lists, and encodes to bytes that decode to the same message; nothing panics; every
//! action the table asks for encodes; the table never tracks more than its peer limit;
//! after `handle_timeout(now)` the next timeout is in the future (no busy loop).

#![no_main]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hail_discovery::{
    Action, Advert, ConnId, DeviceId, DialId, LinkCloseReason, LinkMessage, LinkOrigin,
    LocalDevice, MAX_ADDRESSES, MAX_ADVERT_LEN, MAX_LINK_MESSAGE_LEN, MAX_PEER_RECORDS, PeerTable,
    PeerTableConfig, validate_name,
};
use libfuzzer_sys::fuzz_target;

const MAX_PEERS: usize = 4;

fn check_advert(data: &[u8]) {
    let Ok(advert) = Advert::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_ADVERT_LEN);
    if let Advert::Announce(a) = &advert {
        assert!(validate_name(&a.name).is_ok());
        assert!(a.addresses.len() <= MAX_ADDRESSES);
    }
    let again = advert.to_bytes().expect("a decoded advert encodes");
    assert_eq!(
        Advert::decode(&again).expect("re-encoded advert decodes"),
        advert
    );
}

fn check_link_message(data: &[u8]) {
    let Ok(message) = LinkMessage::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_LINK_MESSAGE_LEN);
    match &message {
        LinkMessage::Hello(h) => {
            assert!(validate_name(&h.announce.name).is_ok());
            assert!(h.announce.addresses.len() <= MAX_ADDRESSES);
        }
        LinkMessage::Peers(records) => {
            assert!(records.len() <= MAX_PEER_RECORDS);
            for r in records {
                assert!(validate_name(&r.name).is_ok());
                assert!(r.addresses.len() <= MAX_ADDRESSES);
            }
        }
        _ => {}
    }
    let again = message.to_bytes().expect("a decoded message encodes");
    assert_eq!(
        LinkMessage::decode(&again).expect("re-encoded message decodes"),
        message
    );
}

fn source(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + i % 4)), 5670)
}

/// Drains the table; every action must encode.
fn drain(table: &mut PeerTable, dials: &mut VecDeque<DialId>, open: &mut [bool; 4]) {
    while let Some(action) = table.poll_action() {
        match action {
            Action::Multicast(advert) => {
                let bytes = advert.to_bytes().expect("the table's adverts encode");
                assert!(bytes.len() <= MAX_ADVERT_LEN);
            }
            Action::Send { message, .. } => {
                message
                    .to_bytes()
                    .expect("the table's link messages encode");
            }
            Action::Dial { dial, addrs, .. } => {
                assert!(!addrs.is_empty());
                dials.push_back(dial);
            }
            Action::Close { conn, .. } => {
                if let Some(slot) = open.get_mut(conn.0 as usize) {
                    *slot = false;
                }
            }
            _ => {}
        }
    }
    while table.poll_event().is_some() {}
    assert!(table.discovered().len() <= MAX_PEERS);
}

fuzz_target!(|data: &[u8]| {
    check_advert(data);
    check_link_message(data);

    let config = PeerTableConfig::builder()
        .max_peers(MAX_PEERS)
        .static_peers([SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), 1)])
        .build()
        .expect("valid config");
    let local = LocalDevice::new(DeviceId::from_bytes([0x42; 16]), "fuzz", 4000)
        .with_addresses([IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))]);
    let mut table = PeerTable::new(config, local, 0).expect("valid local device");
    let mut now = Instant::now();
    table.start(now);
    let mut dials = VecDeque::new();
    let mut open = [false; 4];
    let mut next_dialed = 4u64;
    drain(&mut table, &mut dials, &mut open);

    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(n);
        rest = after;
        match op % 6 {
            0 => {
                let _ = table.handle_datagram(bytes, source(*len), now);
            }
            1 => {
                let slot = usize::from(*len % 4);
                let conn = ConnId(slot as u64);
                if !open[slot] {
                    open[slot] = true;
                    table.link_up(conn, LinkOrigin::Accepted, source(*len), now);
                }
                if let Ok(message) = LinkMessage::decode(bytes) {
                    table.link_message(conn, message, now);
                }
            }
            2 => {
                let slot = usize::from(*len % 4);
                let reason = if *len & 4 == 0 {
                    LinkCloseReason::Lost
                } else {
                    LinkCloseReason::Timeout
                };
                open[slot] = false;
                table.link_closed(ConnId(slot as u64), reason, now);
            }
            3 => {
                if let Some(dial) = dials.pop_front() {
                    table.dial_failed(dial, now);
                }
            }
            4 => {
                if let Some(dial) = dials.pop_front() {
                    // Dialed links get ids past the accepted slots, never reused.
                    table.link_up(
                        ConnId(next_dialed),
                        LinkOrigin::Dialed(dial),
                        source(*len),
                        now,
                    );
                    next_dialed += 1;
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(*len) * 10);
                table.handle_timeout(now);
                if let Some(next) = table.poll_timeout() {
                    assert!(next > now, "a timeout in the past after handle_timeout");
                }
            }
        }
        drain(&mut table, &mut dials, &mut open);
    }
    table.shutdown(now);
    drain(&mut table, &mut dials, &mut open);
    assert!(table.poll_timeout().is_none());
});
