//! Peer table tests with a fake clock: direct calls for exact semantics, and a simulated
//! network (`sim`) for meshes, races and loss.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hail_crypto::Identity;

use super::*;
use crate::advert::{
    Advert, AdvertError, Announce, AnnounceBody, Goodbye, Hello, LinkMessage, MAX_ADDRESSES,
    PeerRecord,
};
use crate::config::{LocalDevice, MAX_PEER_LEASE, PeerTableConfig};
use crate::error::{ConfigError, ResolveError};
use crate::id::{DeviceId, DialId, LinkId};

mod attacks;
mod beacons;
mod budgets;
mod dial;
mod gossip;
mod lifecycle;
mod links;
mod members;
mod network;
mod random;
mod sim;

/// The first key made from seeds `[prefix, k...]` whose id's first byte is at least
/// `at_least`, and at most `at_most`.
fn key_with_id_byte(prefix: [u8; 4], at_least: u8, at_most: u8) -> Identity {
    (0u32..)
        .map(|k| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&prefix);
            seed[4..8].copy_from_slice(&k.to_be_bytes());
            Identity::from_secret_bytes(&seed)
        })
        .find(|i| (at_least..=at_most).contains(&i.public().id()[0]))
        .expect("some seed gives such an id")
}

/// Test device `n`'s identity. Its id's first byte is `n`, so ids order as the device
/// numbers do (who of two dials first depends on that order and on the other bytes: see
/// [`dials_first`], [`dial_order`]).
fn identity(n: u8) -> Arc<Identity> {
    static KEYS: OnceLock<Mutex<HashMap<u8, Arc<Identity>>>> = OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    if let Some(k) = keys.lock().unwrap().get(&n) {
        return k.clone();
    }
    let k = Arc::new(key_with_id_byte([b't', n, 0, 0], n, n));
    keys.lock().unwrap().insert(n, k.clone());
    k
}

/// Test device `n`'s id (of [`identity`]).
fn id(n: u8) -> DeviceId {
    DeviceId::from_bytes(identity(n).public().id())
}

/// Whether test device `n` is the first dialer of its pair with `peer` (see
/// [`DeviceId::dials_first`]): it dials `peer` at once, and `peer` waits for that dial.
fn dials_first(n: u8, peer: DeviceId) -> bool {
    DeviceId::dials_first(id(n), peer) == id(n)
}

/// Test devices `a` and `b` as (the pair's first dialer, the one that waits for its dial).
fn dial_order(a: u8, b: u8) -> (u8, u8) {
    if dials_first(a, id(b)) {
        (a, b)
    } else {
        (b, a)
    }
}

/// Two pairs of test devices as [`dial_order`] gives them, one of each case of the rule: a
/// pair whose smaller id dials first, and one whose larger does.
fn both_kinds_of_pair() -> [(u8, u8); 2] {
    let pairs = [dial_order(1, 2), dial_order(1, 3)];
    assert!(
        pairs[0].0 < pairs[0].1 && pairs[1].0 > pairs[1].1,
        "{pairs:?}"
    );
    pairs
}

/// Test devices `x` ("a") and `y` ("b") started at `t0`, each having heard the other's
/// announce (their actions not drained).
fn hearing_each_other(x: u8, y: u8, t0: Instant) -> (PeerTable, PeerTable) {
    let mut a = started(x, "a", t0);
    let mut b = started(y, "b", t0);
    a.handle_advert(Advert::Announce(announce(y, "b")), src(y), t0);
    b.handle_advert(Advert::Announce(announce(x, "a")), src(x), t0);
    (a, b)
}

/// The test devices numbered above `n` (in order) that `n` dials first (`first`), or
/// that dial `n` first (`!first`).
fn peers_of(n: u8, first: bool) -> impl Iterator<Item = u8> {
    (n + 1..0xe0).filter(move |&m| dials_first(n, id(m)) == first)
}

/// Device `n`'s announce of `body`, signed under `seq`.
fn signed(n: u8, seq: u64, body: AnnounceBody) -> Announce {
    Announce::sign(&identity(n), seq, body).unwrap()
}

/// Device `n`'s goodbye on the group, above its announces of [`announce`].
fn goodbye(n: u8) -> Advert {
    Advert::Goodbye(Goodbye::sign(&identity(n), 1_000))
}

/// What [`announce`] says.
fn body(n: u8, name: &str) -> AnnounceBody {
    AnnounceBody {
        name: name.into(),
        port: port(n),
        lease: Duration::from_secs(3),
        addresses: vec![ip(n)],
        metadata: Default::default(),
    }
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

/// What gossip says of device `n` (its announce, no observed address).
fn record(n: u8, name: &str) -> PeerRecord {
    PeerRecord {
        announce: announce(n, name),
        observed: None,
    }
}

/// Device `n`'s announce (sequence number 1).
fn announce(n: u8, name: &str) -> Announce {
    signed(n, 1, body(n, name))
}

/// The key of [`forged`]`(i)`.
fn tarpit_key(i: u32) -> Identity {
    key_with_id_byte(i.to_be_bytes(), 0xe0, 0xff)
}

/// A forged announce from a device nobody will ever reach: a key of its own (anyone can
/// make one), with an id above every test device's (first byte 0xe0 or more), at
/// 10.1.x.y.
fn forged(i: u32) -> (Announce, SocketAddr) {
    let [_, _, x, y] = i.to_be_bytes();
    let host = IpAddr::V4(Ipv4Addr::new(10, 1, x, y));
    let key = tarpit_key(i);
    let a = Announce::sign(
        &key,
        1,
        AnnounceBody {
            name: format!("forged{i}"),
            port: 4000,
            lease: Duration::from_secs(600),
            addresses: vec![host],
            metadata: Default::default(),
        },
    )
    .unwrap();
    (a, SocketAddr::new(host, 5670))
}

fn table_with(n: u8, name: &str, config: PeerTableConfig) -> PeerTable {
    let local = LocalDevice::new(identity(n), name, port(n)).with_addresses([ip(n)]);
    PeerTable::new(config, local, u64::from(n)).unwrap()
}

fn table(n: u8, name: &str) -> PeerTable {
    table_with(n, name, PeerTableConfig::default())
}

/// A started table with its start actions and events drained.
fn started(n: u8, name: &str, t0: Instant) -> PeerTable {
    started_with(n, name, PeerTableConfig::default(), t0)
}

/// [`started`] with `config`.
fn started_with(n: u8, name: &str, config: PeerTableConfig, t0: Instant) -> PeerTable {
    let mut t = table_with(n, name, config);
    t.start(t0);
    actions(&mut t);
    events(&mut t);
    t
}

/// The defaults, but both sides of a pair dial at once (no
/// [`dial_yield`](crate::PeerTableConfigBuilder::dial_yield)).
fn no_yield() -> PeerTableConfig {
    PeerTableConfig::builder()
        .dial_yield(Duration::ZERO)
        .build()
        .unwrap()
}

/// A link from device `n` accepted as `conn` (its hello not yet in); its actions drained.
fn accept(t: &mut PeerTable, conn: LinkId, n: u8, now: Instant) {
    t.link_up(
        conn,
        LinkOrigin::Accepted,
        SocketAddr::new(ip(n), 50000),
        id(n),
        now,
    );
    actions(t);
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

fn closes(actions: &[Action]) -> Vec<(LinkId, TableCloseReason)> {
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

/// A hello carrying this announce.
fn hello_of(announce: Announce, tag: u64) -> LinkMessage {
    LinkMessage::Hello(Hello { tag, announce })
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
    next_dials_within(t, limit).expect("no dial before the limit")
}

/// Runs timers up to `limit`; returns when the table first dialed and the dials, if it did.
fn next_dials_within(t: &mut PeerTable, limit: Instant) -> Option<(Instant, Vec<DialReq>)> {
    while let Some(at) = t.poll_timeout() {
        if at > limit {
            return None;
        }
        t.handle_timeout(at);
        let d = dials(&actions(t));
        if !d.is_empty() {
            return Some((at, d));
        }
    }
    None
}

/// `t` learns device `n` by announce and they connect over `conn`: `t` dials if it is the
/// pair's first dialer (or has no `dial_yield`), else `n`'s dial arrives (see
/// [`dials_first`]). Returns with everything drained.
fn join(t: &mut PeerTable, n: u8, name: &str, conn: LinkId, now: Instant) {
    t.handle_advert(Advert::Announce(announce(n, name)), src(n), now);
    let d = dials(&actions(t));
    if let [(dial, _, _)] = d.as_slice() {
        t.link_up(conn, LinkOrigin::Dialed(*dial), listen(n), id(n), now);
    } else {
        assert!(d.is_empty(), "one dial for {name}: {d:?}");
        assert!(
            !t.dials_first(id(n)),
            "no dial for {name}, which t dials first"
        );
        let remote = SocketAddr::new(ip(n), 50000);
        t.link_up(conn, LinkOrigin::Accepted, remote, id(n), now);
    }
    actions(t);
    t.link_message(conn, hello(n, name, 0), now);
    let ev = events(t);
    assert_eq!(joined(&ev), [id(n)]);
    actions(t);
}
