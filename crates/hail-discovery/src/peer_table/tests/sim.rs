//! A simulated network of peer tables: multicast with loss, reliable FIFO links with
//! latency, dials that reach whoever listens at an address, and a fake clock. Every
//! message goes through the real encoders and decoders.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hail_crypto::Identity;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::*;
use crate::advert::LinkMessage;
use crate::config::{LocalDevice, PeerTableConfig};
use crate::id::{DeviceId, DialId, LinkId};

#[derive(Debug)]
enum Ev {
    Datagram {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    LinkUp {
        node: usize,
        conn: LinkId,
        origin: LinkOrigin,
        remote: SocketAddr,
    },
    LinkMsg {
        node: usize,
        conn: LinkId,
        bytes: Vec<u8>,
    },
    LinkClosed {
        node: usize,
        conn: LinkId,
    },
    DialFailed {
        node: usize,
        dial: DialId,
    },
}

struct Node {
    table: PeerTable,
    ip: IpAddr,
    port: u16,
    up: bool,
    events: Vec<Event>,
}

/// One end of a link: (node, conn).
type End = (usize, LinkId);

struct Link {
    ends: [End; 2],
    open: [bool; 2],
    /// Time the last delivery towards each end was scheduled (FIFO per direction).
    last: [Instant; 2],
}

pub(super) struct Sim {
    pub(super) now: Instant,
    nodes: Vec<Node>,
    links: Vec<Link>,
    by_end: BTreeMap<End, (usize, usize)>,
    queue: BTreeMap<(Instant, u64), Ev>,
    seq: u64,
    next_conn: u64,
    rng: StdRng,
    /// Probability that one multicast datagram is lost on its way to one receiver.
    pub(super) loss: f64,
    /// Whether multicast reaches anyone at all.
    pub(super) multicast: bool,
    /// Largest one-way latency; each delivery draws uniformly in [0, max].
    pub(super) max_latency: Duration,
}

impl Sim {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            now: Instant::now(),
            nodes: Vec::new(),
            links: Vec::new(),
            by_end: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            next_conn: 1,
            rng: StdRng::seed_from_u64(seed),
            loss: 0.0,
            multicast: true,
            max_latency: Duration::from_millis(2),
        }
    }

    /// Adds and starts a device on host `10.0.1.<index+1>`; returns its index.
    pub(super) fn add(&mut self, name: &str, config: PeerTableConfig) -> usize {
        let index = self.nodes.len();
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 1, u8::try_from(index + 1).unwrap()));
        self.add_at(name, config, ip, 7000 + u16::try_from(index).unwrap())
    }

    pub(super) fn add_at(
        &mut self,
        name: &str,
        config: PeerTableConfig,
        ip: IpAddr,
        port: u16,
    ) -> usize {
        let identity = Arc::new(Identity::from_secret_bytes(&self.rng.random()));
        let local = LocalDevice::new(identity, name, port).with_addresses([ip]);
        let mut table = PeerTable::new(config, local, self.rng.random()).unwrap();
        table.start(self.now);
        self.nodes.push(Node {
            table,
            ip,
            port,
            up: true,
            events: Vec::new(),
        });
        let index = self.nodes.len() - 1;
        self.pump(index);
        index
    }

    pub(super) fn addr_of(&self, node: usize) -> SocketAddr {
        SocketAddr::new(self.nodes[node].ip, self.nodes[node].port)
    }

    pub(super) fn id_of(&self, node: usize) -> DeviceId {
        self.nodes[node].table.local().id()
    }

    pub(super) fn table(&self, node: usize) -> &PeerTable {
        &self.nodes[node].table
    }

    pub(super) fn events(&self, node: usize) -> &[Event] {
        &self.nodes[node].events
    }

    /// The process dies: no goodbye; the OS resets its links.
    pub(super) fn crash(&mut self, node: usize) {
        self.nodes[node].up = false;
        let ends: Vec<(usize, usize)> = self
            .by_end
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|(_, v)| *v)
            .collect();
        for (l, side) in ends {
            self.close_end(l, side);
        }
    }

    /// The device vanishes without a trace (power loss, cable pulled): its links stay
    /// open on the other ends until something notices.
    pub(super) fn shutdown_silently(&mut self, node: usize) {
        self.nodes[node].up = false;
    }

    /// The heartbeats of links to a vanished `node` time out: each peer's end is closed
    /// as timed out, now.
    pub(super) fn time_out_links_to(&mut self, node: usize) {
        let ends: Vec<(usize, usize)> = self
            .by_end
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|(_, v)| *v)
            .collect();
        let now = self.now;
        for (l, side) in ends {
            let other = 1 - side;
            self.links[l].open[side] = false;
            if std::mem::take(&mut self.links[l].open[other]) {
                let (peer, conn) = self.links[l].ends[other];
                if self.nodes[peer].up {
                    self.nodes[peer]
                        .table
                        .link_closed(conn, LinkCloseReason::Timeout, now);
                    self.pump(peer);
                }
            }
        }
    }

    /// Graceful shutdown: the table's goodbye and closes go out.
    pub(super) fn close(&mut self, node: usize) {
        let now = self.now;
        self.nodes[node].table.close(now);
        self.pump(node);
        self.nodes[node].up = false;
    }

    fn latency(&mut self) -> Duration {
        let max = u64::try_from(self.max_latency.as_nanos()).unwrap();
        Duration::from_nanos(self.rng.random_range(0..=max))
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    /// Schedules a delivery towards `side` of link `l`, after everything already in flight.
    fn schedule_on_link(&mut self, l: usize, side: usize, ev: Ev) {
        let at = (self.now + self.latency()).max(self.links[l].last[side]);
        self.links[l].last[side] = at;
        self.schedule(at, ev);
    }

    /// The end on `side` closes: the other end hears of it after the data in flight.
    fn close_end(&mut self, l: usize, side: usize) {
        if !self.links[l].open[side] {
            return;
        }
        self.links[l].open[side] = false;
        let other = 1 - side;
        if self.links[l].open[other] {
            let (node, conn) = self.links[l].ends[other];
            self.schedule_on_link(l, other, Ev::LinkClosed { node, conn });
        }
    }

    /// Carries out everything node `i` wants done.
    fn pump(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].table.poll_action() {
            self.act(i, action);
        }
        while let Some(event) = self.nodes[i].table.poll_event() {
            self.nodes[i].events.push(event);
        }
    }

    fn act(&mut self, i: usize, action: Action) {
        match action {
            Action::Multicast(advert) => {
                if !self.multicast || !self.nodes[i].up {
                    return;
                }
                let bytes = advert.to_bytes().unwrap();
                assert!(bytes.len() <= crate::MAX_ADVERT_LEN);
                let from = SocketAddr::new(self.nodes[i].ip, 5670);
                for to in 0..self.nodes.len() {
                    // Our own datagrams loop back, and are never lost.
                    if to != i && self.rng.random_bool(self.loss) {
                        continue;
                    }
                    let at = self.now + self.latency();
                    self.schedule(
                        at,
                        Ev::Datagram {
                            to,
                            from,
                            bytes: bytes.clone(),
                        },
                    );
                }
            }
            Action::Send { conn, message } => {
                let bytes = message.to_bytes().unwrap();
                let Some(&(l, side)) = self.by_end.get(&(i, conn)) else {
                    panic!("send on unknown {conn}")
                };
                if !self.links[l].open[side] {
                    return; // the peer reset it; the send fails in the driver
                }
                let other = 1 - side;
                let (node, conn) = self.links[l].ends[other];
                self.schedule_on_link(l, other, Ev::LinkMsg { node, conn, bytes });
            }
            Action::Dial { dial, addrs, .. } => {
                let target = (0..self.nodes.len())
                    .find(|&j| self.nodes[j].up && addrs.contains(&self.addr_of(j)));
                let Some(j) = target else {
                    let at = self.now + self.latency();
                    self.schedule(at, Ev::DialFailed { node: i, dial });
                    return;
                };
                let (ca, cb) = (LinkId(self.next_conn), LinkId(self.next_conn + 1));
                self.next_conn += 2;
                let l = self.links.len();
                self.links.push(Link {
                    ends: [(i, ca), (j, cb)],
                    open: [true, true],
                    last: [self.now, self.now],
                });
                self.by_end.insert((i, ca), (l, 0));
                self.by_end.insert((j, cb), (l, 1));
                let remote_j = self.addr_of(j);
                let remote_i = SocketAddr::new(self.nodes[i].ip, 40000 + (ca.0 % 20000) as u16);
                self.schedule_on_link(
                    l,
                    1,
                    Ev::LinkUp {
                        node: j,
                        conn: cb,
                        origin: LinkOrigin::Accepted,
                        remote: remote_i,
                    },
                );
                self.schedule_on_link(
                    l,
                    0,
                    Ev::LinkUp {
                        node: i,
                        conn: ca,
                        origin: LinkOrigin::Dialed(dial),
                        remote: remote_j,
                    },
                );
            }
            Action::Close { conn, .. } => {
                let Some(&(l, side)) = self.by_end.get(&(i, conn)) else {
                    panic!("close of unknown {conn}")
                };
                self.close_end(l, side);
            }
        }
    }

    fn deliver(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Datagram { to, from, bytes } => {
                if self.nodes[to].up {
                    self.nodes[to]
                        .table
                        .handle_datagram(&bytes, from, now)
                        .unwrap();
                    self.pump(to);
                }
            }
            Ev::LinkUp {
                node,
                conn,
                origin,
                remote,
            } => {
                let (l, side) = self.by_end[&(node, conn)];
                if !self.nodes[node].up {
                    return;
                }
                if !self.links[l].open[side] {
                    // Reset before it came up: a failed dial for the dialer.
                    if let LinkOrigin::Dialed(dial) = origin {
                        self.nodes[node].table.dial_failed(dial, now);
                        self.pump(node);
                    }
                    return;
                }
                let (far, _) = self.links[l].ends[1 - side];
                let peer = self.nodes[far].table.local().id();
                self.nodes[node]
                    .table
                    .link_up(conn, origin, remote, peer, now);
                self.pump(node);
            }
            Ev::LinkMsg { node, conn, bytes } => {
                let (l, side) = self.by_end[&(node, conn)];
                if self.nodes[node].up && self.links[l].open[side] {
                    let message = LinkMessage::decode(&bytes).unwrap();
                    self.nodes[node].table.link_message(conn, message, now);
                    self.pump(node);
                }
            }
            Ev::LinkClosed { node, conn } => {
                let (l, side) = self.by_end[&(node, conn)];
                if self.nodes[node].up && self.links[l].open[side] {
                    self.links[l].open[side] = false;
                    self.nodes[node]
                        .table
                        .link_closed(conn, LinkCloseReason::Lost, now);
                    self.pump(node);
                }
            }
            Ev::DialFailed { node, dial } => {
                if self.nodes[node].up {
                    self.nodes[node].table.dial_failed(dial, now);
                    self.pump(node);
                }
            }
        }
    }

    /// Runs the network until `until` (relative to now), or until `done` holds.
    pub(super) fn run_for(&mut self, span: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let until = self.now + span;
        for _ in 0..2_000_000 {
            if done(self) {
                return true;
            }
            let next_ev = self.queue.keys().next().map(|k| k.0);
            let next_timer = self
                .nodes
                .iter()
                .filter(|n| n.up)
                .filter_map(|n| n.table.poll_timeout())
                .min();
            let Some(next) = [next_ev, next_timer].into_iter().flatten().min() else {
                return done(self);
            };
            if next > until {
                self.now = until;
                return done(self);
            }
            self.now = self.now.max(next);
            if next_ev == Some(next) {
                let key = *self.queue.keys().next().expect("non-empty");
                let ev = self.queue.remove(&key).expect("present");
                self.deliver(ev);
            } else {
                let now = self.now;
                for i in 0..self.nodes.len() {
                    if self.nodes[i].up
                        && self.nodes[i].table.poll_timeout().is_some_and(|t| t <= now)
                    {
                        self.nodes[i].table.handle_timeout(now);
                        self.pump(i);
                    }
                }
            }
        }
        panic!("simulation did not settle");
    }

    /// Every live node has every other live node joined, over one link per pair, and the
    /// two ends of that link are each side's active connection.
    pub(super) fn full_mesh(&self) -> bool {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        for &i in &live {
            if self.nodes[i].table.peers().len() != live.len() - 1 {
                return false;
            }
            for &j in &live {
                if i == j {
                    continue;
                }
                let Some(conn) = self.nodes[i].table.connection(self.id_of(j)) else {
                    return false;
                };
                let (l, side) = self.by_end[&(i, conn)];
                let link = &self.links[l];
                let (other_node, other_conn) = link.ends[1 - side];
                if other_node != j
                    || !link.open[0]
                    || !link.open[1]
                    || self.nodes[j].table.connection(self.id_of(i)) != Some(other_conn)
                {
                    return false;
                }
            }
        }
        true
    }

    /// Links with both ends open.
    pub(super) fn open_links(&self) -> usize {
        self.links.iter().filter(|l| l.open[0] && l.open[1]).count()
    }

    /// Lets in-flight closes land.
    pub(super) fn settle(&mut self) {
        self.run_for(Duration::from_millis(50), |_| false);
    }
}
