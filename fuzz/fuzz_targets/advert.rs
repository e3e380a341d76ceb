//! `hail_discovery::Advert::decode`, `LinkMessage::decode`, and the peer table fed with
//! whatever arrives.
//!
//! First the whole input is decoded as an advert and as a link message. Then records
//! `[op, len, bytes...]` drive a started `PeerTable` (small limits, fake clock): op 0 feeds
//! `len` bytes as a datagram from one of four sources, 1 as a link message on one of four
//! links (opened on first use, accepted, proven to belong to fuzz identity `slot`), 2 closes
//! a link (lost or timed out), 3 fails the oldest pending dial, 4 connects it (to one of the
//! fuzz identities), 5 lets `len * 10` ms pass and runs the timers. Random bytes never
//! carry a valid signature, so two ops sign what the bytes describe with one of four fuzz
//! identities: 6 an announce (sent on the group, as a hello or as a gossip record; see
//! `signed_announce`), 7 a goodbye. The seeds in `fuzz/seeds/advert/` are signed by the same
//! identities (secret keys `01` × 32 to `04` × 32).
//!
//! Checked: a message that decodes is within the size limit, has valid names, metadata and
//! bounded lists, and encodes to the same bytes (one encoding per message); nothing panics;
//! every action the table asks for encodes, and every announce or goodbye it sends or relays
//! verifies; the table never tracks more than its peer limit; only ids that a link proved
//! are ever joined; after `handle_timeout(now)` the next timeout is in the future (no busy
//! loop).

#![no_main]

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use hail_crypto::Identity;
use hail_discovery::{
    Action, Advert, Announce, AnnounceBody, DeviceId, DialId, Goodbye, Hello, LinkCloseReason,
    LinkId, LinkMessage, LinkOrigin, LocalDevice, MAX_ADDRESSES, MAX_ADVERT_LEN,
    MAX_LINK_MESSAGE_LEN, MAX_PEER_RECORDS, Metadata, PeerRecord, PeerTable, PeerTableConfig,
    validate_metadata, validate_name,
};
use libfuzzer_sys::fuzz_target;

const MAX_PEERS: usize = 4;

/// The identities the driver signs with and links prove: secret keys `01` × 32 .. `04` × 32.
static FUZZ_IDS: LazyLock<Vec<Identity>> = LazyLock::new(|| {
    (1..=4)
        .map(|i| Identity::from_secret_bytes(&[i; 32]))
        .collect()
});
/// The local device's identity.
static LOCAL: LazyLock<Arc<Identity>> =
    LazyLock::new(|| Arc::new(Identity::from_secret_bytes(&[0x42; 32])));

fn fuzz_id(i: u8) -> DeviceId {
    DeviceId::from_bytes(FUZZ_IDS[usize::from(i % 4)].public().id())
}

fn check_announce(a: &Announce) {
    assert!(validate_name(&a.body.name).is_ok());
    assert!(validate_metadata(&a.body.metadata).is_ok());
    assert!(a.body.addresses.len() <= MAX_ADDRESSES);
    assert_eq!(
        a.id(),
        DeviceId::from_bytes(hail_crypto::identity::device_id(a.key_bytes()))
    );
    // Never a panic, whatever the key and signature bytes are.
    let _ = a.verify();
}

fn check_advert(data: &[u8]) {
    let Ok(advert) = Advert::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_ADVERT_LEN);
    match &advert {
        Advert::Announce(a) => check_announce(a),
        Advert::Goodbye(g) => {
            let _ = g.verify();
        }
        _ => {}
    }
    let again = advert.to_bytes().expect("a decoded advert encodes");
    assert_eq!(again, data, "one encoding per advert");
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
        LinkMessage::Hello(h) => check_announce(&h.announce),
        LinkMessage::Peers(records) => {
            assert!(records.len() <= MAX_PEER_RECORDS);
            for r in records {
                check_announce(&r.announce);
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

/// A valid announce signed by fuzz identity `b[0] % 4`, described by the bytes: `b[1]` the
/// sequence number (small, so replays and stale adverts happen), `b[2]` the name (four
/// choices, one of them the local device's), `b[3]` the port, `b[4]` the lease in 100 ms,
/// `b[5]` the metadata (none or one entry), then up to 8 IPv4 addresses of 4 bytes each.
fn signed_announce(b: &[u8]) -> Announce {
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let name = ["a", "b", "fuzz", "lamp"][usize::from(at(2) % 4)];
    let mut metadata = Metadata::new();
    if at(5) & 1 == 1 {
        metadata.insert("role".into(), format!("r{}", at(5) >> 1));
    }
    let addresses = b
        .get(6..)
        .unwrap_or_default()
        .chunks_exact(4)
        .take(MAX_ADDRESSES)
        .map(|c| IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])))
        .collect();
    let body = AnnounceBody {
        name: name.into(),
        port: u16::from(at(3)),
        lease: Duration::from_millis(u64::from(at(4)) * 100),
        addresses,
        metadata,
    };
    Announce::sign(&FUZZ_IDS[usize::from(at(0) % 4)], u64::from(at(1)), body)
        .expect("a valid body signs")
}

struct Driver {
    table: PeerTable,
    now: Instant,
    dials: VecDeque<DialId>,
    open: [bool; 4],
    next_dialed: u64,
    /// Every id a link was reported proven for: the only ids that may ever join.
    proven: BTreeSet<DeviceId>,
}

impl Driver {
    /// Drains the table; every action must encode, and what it signs or relays verifies.
    fn drain(&mut self) {
        while let Some(action) = self.table.poll_action() {
            match action {
                Action::Multicast(advert) => {
                    let bytes = advert.to_bytes().expect("the table's adverts encode");
                    assert!(bytes.len() <= MAX_ADVERT_LEN);
                    match &advert {
                        Advert::Announce(a) => {
                            assert_eq!(a.id(), self.table.local().id());
                            a.verify().expect("our own announce verifies");
                        }
                        Advert::Goodbye(g) => g.verify().expect("our own goodbye verifies"),
                        _ => {}
                    }
                }
                Action::Send { message, .. } => {
                    message
                        .to_bytes()
                        .expect("the table's link messages encode");
                    match &message {
                        LinkMessage::Hello(h) => {
                            assert_eq!(h.announce.id(), self.table.local().id());
                            h.announce.verify().expect("our own hello verifies");
                        }
                        LinkMessage::Peers(records) => {
                            for r in records {
                                r.announce.verify().expect("gossip relays signed announces");
                            }
                        }
                        _ => {}
                    }
                }
                Action::Dial { dial, addrs, .. } => {
                    assert!(!addrs.is_empty());
                    self.dials.push_back(dial);
                }
                Action::Close { conn, .. } => {
                    if let Some(slot) = usize::try_from(conn.0)
                        .ok()
                        .and_then(|i| self.open.get_mut(i))
                    {
                        *slot = false;
                    }
                }
                _ => {}
            }
        }
        while self.table.poll_event().is_some() {}
        assert!(self.table.discovered().len() <= MAX_PEERS);
        for p in self.table.peers() {
            assert!(self.proven.contains(&p.id), "{} joined unproven", p.id);
        }
    }

    /// The accepted link of `slot` (0..4), opened on first use.
    fn link(&mut self, slot: u8) -> LinkId {
        let i = usize::from(slot % 4);
        let conn = LinkId(i as u64);
        if !self.open[i] {
            self.open[i] = true;
            let peer = fuzz_id(slot);
            self.proven.insert(peer);
            self.table
                .link_up(conn, LinkOrigin::Accepted, source(slot), peer, self.now);
        }
        conn
    }

    fn step(&mut self, op: u8, len: u8, bytes: &[u8]) {
        let now = self.now;
        match op % 8 {
            0 => {
                let _ = self.table.handle_datagram(bytes, source(len), now);
            }
            1 => {
                let conn = self.link(len);
                if let Ok(message) = LinkMessage::decode(bytes) {
                    self.table.link_message(conn, message, now);
                }
            }
            2 => {
                let slot = usize::from(len % 4);
                let reason = if len & 4 == 0 {
                    LinkCloseReason::Lost
                } else {
                    LinkCloseReason::Timeout
                };
                self.open[slot] = false;
                self.table.link_closed(LinkId(slot as u64), reason, now);
            }
            3 => {
                if let Some(dial) = self.dials.pop_front() {
                    self.table.dial_failed(dial, now);
                }
            }
            4 => {
                if let Some(dial) = self.dials.pop_front() {
                    // Dialed links get ids past the accepted slots, never reused.
                    let peer = fuzz_id(len);
                    self.proven.insert(peer);
                    self.table.link_up(
                        LinkId(self.next_dialed),
                        LinkOrigin::Dialed(dial),
                        source(len),
                        peer,
                        now,
                    );
                    self.next_dialed += 1;
                }
            }
            5 => {
                self.now += Duration::from_millis(u64::from(len) * 10);
                self.table.handle_timeout(self.now);
                if let Some(next) = self.table.poll_timeout() {
                    assert!(
                        next > self.now,
                        "a timeout in the past after handle_timeout"
                    );
                }
            }
            6 => {
                let announce = signed_announce(bytes);
                match len % 4 {
                    0 | 1 => {
                        let datagram = Advert::Announce(announce).to_bytes().expect("encodes");
                        self.table
                            .handle_datagram(&datagram, source(len >> 2), now)
                            .expect("a signed announce decodes");
                    }
                    2 => {
                        let conn = self.link(len >> 2);
                        let hello = LinkMessage::Hello(Hello {
                            tag: u64::from(len >> 4),
                            announce,
                        });
                        self.table.link_message(conn, hello, now);
                    }
                    _ => {
                        let conn = self.link(len >> 2);
                        let observed = (len & 0x10 != 0).then(|| source(len).ip());
                        let peers = LinkMessage::Peers(vec![PeerRecord { announce, observed }]);
                        self.table.link_message(conn, peers, now);
                    }
                }
            }
            _ => {
                let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
                let goodbye = Goodbye::sign(&FUZZ_IDS[usize::from(at(0) % 4)], u64::from(at(1)));
                let datagram = Advert::Goodbye(goodbye).to_bytes().expect("encodes");
                self.table
                    .handle_datagram(&datagram, source(len), now)
                    .expect("a signed goodbye decodes");
            }
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    check_advert(data);
    check_link_message(data);

    let config = PeerTableConfig::builder()
        .max_peers(MAX_PEERS)
        .static_peers([SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), 1)])
        .build()
        .expect("valid config");
    let local = LocalDevice::new(Arc::clone(&LOCAL), "fuzz", 4000)
        .with_addresses([IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100))]);
    let table = PeerTable::new(config, local, 0).expect("valid local device");
    let mut d = Driver {
        table,
        now: Instant::now(),
        dials: VecDeque::new(),
        open: [false; 4],
        next_dialed: 4,
        proven: BTreeSet::new(),
    };
    d.table.start(d.now);
    d.drain();

    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(n);
        rest = after;
        d.step(*op, *len, bytes);
    }
    d.table.close(d.now);
    d.drain();
    assert!(d.table.poll_timeout().is_none());
});
