//! Peer table tests with a fake clock: direct calls for exact semantics, and a simulated
//! network (`sim`) for meshes, races and loss.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::*;
use crate::advert::{Advert, AdvertError, Announce, Hello, LinkMessage, MAX_ADDRESSES, PeerRecord};
use crate::config::{LocalDevice, MAX_PEER_LEASE, PeerTableConfig};
use crate::error::{ConfigError, ResolveError};
use crate::id::{ConnId, DeviceId, DialId};

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

/// A forged announce from a device nobody will ever reach: id `i` (high bytes `0xee`, so
/// above every test device), at 10.1.x.y.
fn forged(i: u32) -> (Announce, SocketAddr) {
    let mut id = [0xee; 16];
    id[12..].copy_from_slice(&i.to_be_bytes());
    let [_, _, x, y] = i.to_be_bytes();
    let host = IpAddr::V4(Ipv4Addr::new(10, 1, x, y));
    let a = Announce {
        id: DeviceId::from_bytes(id),
        name: format!("forged{i}"),
        port: 4000,
        lease: Duration::from_secs(600),
        addresses: vec![host],
    };
    (a, SocketAddr::new(host, 5670))
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
fn accept(t: &mut PeerTable, conn: ConnId, n: u8, now: Instant) {
    t.link_up(
        conn,
        LinkOrigin::Accepted,
        SocketAddr::new(ip(n), 50000),
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
