//! Links: a link's life from up to closed, its hello, and the one-link-per-pair rule
//! (both sides keep the connection dialed by the pair's first dialer, see
//! [`DeviceId::dials_first`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tracing::{debug, trace};

use super::events::{Action, Event, LinkCloseReason, LinkOrigin, TableCloseReason};
use super::state::{Conn, ConnKey, ConnState, DialState, DialTarget, Origin, PeerTable, Phase};
use crate::advert::{Hello, LinkMessage};
use crate::config::Trust;
use crate::id::{DeviceId, LinkId};

impl PeerTable {
    /// A link is up: connected, and its handshake proved that the other end holds the key
    /// of device `peer` (the id of the key the link's Noise handshake authenticated). The
    /// table answers with its hello on it; the peer's hello must be signed by the same key,
    /// or the link is closed ([`TableCloseReason::IdentityMismatch`]).
    pub fn link_up(
        &mut self,
        conn: LinkId,
        origin: LinkOrigin,
        remote: SocketAddr,
        peer: DeviceId,
        now: Instant,
    ) {
        let dial_target = match origin {
            LinkOrigin::Dialed(dial) => self.dials.remove(&dial),
            LinkOrigin::Accepted => None,
        };
        if self.phase != Phase::Running {
            self.actions.push_back(Action::Close {
                conn,
                reason: TableCloseReason::Shutdown,
            });
            return;
        }
        let (origin, tag) = match origin {
            LinkOrigin::Dialed(dial) => {
                let tag = self.next_tag;
                self.next_tag += 1;
                (
                    Origin::Dialed {
                        dial,
                        tag,
                        target: dial_target,
                    },
                    tag,
                )
            }
            LinkOrigin::Accepted => (Origin::Accepted, 0),
        };
        trace!(%conn, %remote, ?origin, "link up");
        self.conns.insert(
            conn,
            Box::new(Conn {
                origin,
                remote,
                proven: peer,
                state: ConnState::AwaitingHello {
                    deadline: now + self.config.hello_timeout,
                },
            }),
        );
        let announce = self.announce();
        self.actions.push_back(Action::Send {
            conn,
            message: LinkMessage::Hello(Hello { tag, announce }),
        });
    }

    /// A discovery message arrived on a link.
    pub fn link_message(&mut self, conn: LinkId, message: LinkMessage, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        if !self.conns.contains_key(&conn) {
            // A goodbye on a duplicate being closed: the peer may have taken it for the
            // one to keep.
            match message {
                LinkMessage::Goodbye { from } if self.draining.get(&conn) == Some(&from) => {
                    self.goodbye_on_link(from, now);
                    self.flush();
                }
                _ => self.stats.protocol_errors += 1,
            }
            return;
        }
        match message {
            LinkMessage::Hello(hello) => {
                self.on_hello(conn, hello, now);
                self.goodbye_progress(now);
            }
            LinkMessage::Peers(records) => self.on_gossip(conn, records, now),
            LinkMessage::Goodbye { from } => match self.conns[&conn].state {
                ConnState::Established { peer, .. } if peer == from => {
                    self.goodbye_on_link(from, now);
                }
                _ => self.stats.protocol_errors += 1,
            },
        }
        self.flush();
    }

    /// A link closed (the table did not ask for it, or asked and the driver reports it
    /// anyway: then it is ignored).
    pub fn link_closed(&mut self, conn: LinkId, reason: LinkCloseReason, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(peer) = self.draining.remove(&conn) {
            trace!(%conn, ?reason, %peer, "duplicate link closed");
            self.goodbye_progress(now);
            self.flush();
            return;
        }
        if let Some(c) = self.conns.remove(&conn) {
            trace!(%conn, ?reason, "link closed");
            if let ConnState::Established { peer, .. } = c.state
                && self.goodbyes.contains_key(&peer)
            {
                // It said goodbye: no redial, no grace; it leaves once its last link
                // is done (all it sent has arrived).
                if let Some(p) = self.peers.get_mut(&peer)
                    && p.active == Some(conn)
                {
                    p.active = None;
                }
                self.goodbye_progress(now);
                self.flush();
                return;
            }
            self.conn_gone(conn, *c, reason, now);
            self.goodbye_progress(now);
            self.flush();
        }
    }

    fn on_hello(&mut self, conn: LinkId, hello: Hello, now: Instant) {
        let id = hello.announce.id();
        let c = &self.conns[&conn];
        // The announce in a hello is checked like one on the group, but outside the
        // budget of signature checks (a link proved its key already): one verified
        // before from the same key needs no second check.
        let known = self.verified_before(&hello.announce);
        if id != c.proven || (!known && hello.announce.verify().is_err()) {
            debug!(%conn, claimed = %id, proven = %c.proven, "hello for another key than the link proved");
            self.stats.identity_mismatch += 1;
            self.close_conn(conn, TableCloseReason::IdentityMismatch, now);
            return;
        }
        if let ConnState::Established { peer, .. } = c.state {
            if peer == id {
                self.stats.protocol_errors += 1;
            } else {
                self.close_conn(conn, TableCloseReason::ProtocolViolation, now);
            }
            return;
        }
        let remote = c.remote;
        let (key, target) = match c.origin {
            Origin::Dialed { dial, tag, target } => {
                ((self.local.id(), tag), target.map(|t| (t, dial)))
            }
            Origin::Accepted => ((id, hello.tag), None),
        };
        if id == self.local.id() {
            if let Some((DialTarget::Static(i), _)) = target {
                debug!(addr = %self.statics[i].addr, "static peer address is this device");
                self.statics[i].is_self = true;
            }
            self.close_conn(conn, TableCloseReason::SelfConnection, now);
            return;
        }
        if self.departed(id, hello.announce.seq()) {
            self.close_conn(conn, TableCloseReason::Departed, now);
            return;
        }
        let member = self.peers.get(&id).is_some_and(|p| p.member);
        if !member && self.host_full(remote.ip()) {
            debug!(%conn, %remote, "host has its share of joined peers; link closed");
            self.stats.host_limit += 1;
            self.close_conn(conn, TableCloseReason::HostLimit, now);
            return;
        }
        if !self.trusted(&hello.announce) {
            debug!(%conn, peer = %id, name = %hello.announce.body.name, "key not trusted; link closed");
            self.stats.untrusted += 1;
            self.close_conn(conn, TableCloseReason::Untrusted, now);
            return;
        }
        if !self.learn(&hello.announce, remote, None, now) {
            self.close_conn(conn, TableCloseReason::TableFull, now);
            return;
        }
        // The dial that produced this link is over.
        match target {
            Some((DialTarget::Peer(expected), dial)) => {
                if expected == id {
                    if let Some(p) = self.peers.get_mut(&id) {
                        if p.dial == DialState::Dialing(dial) {
                            p.dial = DialState::Idle;
                        }
                        p.failures = 0;
                    }
                } else {
                    // Someone else answers at that address now.
                    self.dial_outcome_failed(DialTarget::Peer(expected), dial, now);
                }
            }
            Some((DialTarget::Static(i), dial)) => {
                let s = &mut self.statics[i];
                if s.dial == DialState::Dialing(dial) {
                    s.dial = DialState::Idle;
                }
                s.failures = 0;
                s.peer = Some(id);
            }
            None => {}
        }
        self.conns.get_mut(&conn).expect("present").state =
            ConnState::Established { peer: id, key };
        self.attach(id, conn, key);
    }

    /// An established link to `id`: make it the active one, or apply the one-link rule
    /// against the current one.
    fn attach(&mut self, id: DeviceId, conn: LinkId, key: ConnKey) {
        let p = self.peers.get_mut(&id).expect("learned just before");
        let Some(current) = p.active else {
            p.active = Some(conn);
            p.grace_until = None;
            p.failures = 0;
            if !p.member {
                p.member = true;
                debug!(peer = %id, name = %p.name, %conn, "peer joined");
                let info = p.info();
                let name = p.name.clone();
                self.events.push_back(Event::PeerJoined(info));
                self.dirty = true;
                self.gossip_join(id);
                self.report_duplicates(&name);
            }
            return;
        };
        let current_key = match self.conns.get(&current).map(|c| &c.state) {
            Some(ConnState::Established { key, .. }) => *key,
            _ => (DeviceId::from_bytes([0xff; 16]), u64::MAX),
        };
        // Both ends keep the link dialed by the pair's first dialer; of two it dialed (or
        // two the other dialed), the one with the smaller key. The keys are the same on
        // both ends, so they agree without a further word.
        let first = DeviceId::dials_first(self.local.id(), id);
        let rank = |key: ConnKey| (key.0 != first, key);
        let loser = if rank(key) < rank(current_key) {
            p.active = Some(conn);
            current
        } else {
            conn
        };
        debug!(peer = %id, kept = ?p.active, closed = %loser, "two links to one peer");
        // Both links are established, so closing the loser needs no further bookkeeping
        // beyond remembering it drains (for a goodbye to wait for it).
        if self.conns.remove(&loser).is_some() {
            if self.draining.len() < self.config.max_peers {
                self.draining.insert(loser, id);
            }
            self.actions.push_back(Action::Close {
                conn: loser,
                reason: TableCloseReason::Duplicate,
            });
        }
    }

    /// Whether [`Trust`] lets this (proven) key in under its name; pins a new name to it
    /// in trust-on-first-use mode.
    fn trusted(&mut self, a: &crate::advert::Announce) -> bool {
        let key = a.key_bytes();
        match &mut self.config.trust {
            Trust::Anyone => true,
            Trust::AllowList(keys) => keys.contains(key),
            Trust::FirstUse(pins) => match pins.get(&a.body.name) {
                Some(pinned) => pinned == key,
                None => {
                    pins.insert(a.body.name.clone(), *key);
                    self.events.push_back(Event::NamePinned {
                        name: a.body.name.clone(),
                        key: *key,
                    });
                    true
                }
            },
        }
    }

    /// Whether `host` (its /64 for IPv6) has its share of joined peers (not counted over
    /// loopback).
    fn host_full(&self, host: IpAddr) -> bool {
        if host.is_loopback() {
            return false;
        }
        let joined = self
            .peers
            .values()
            .filter(|p| p.member)
            .filter_map(|p| self.conns.get(&p.active?))
            .filter(|c| same_host(c.remote.ip(), host))
            .count();
        joined >= self.config.max_peers_per_host
    }

    /// The table closes a link.
    pub(super) fn close_conn(&mut self, conn: LinkId, reason: TableCloseReason, now: Instant) {
        if let Some(c) = self.conns.remove(&conn) {
            trace!(%conn, ?reason, "closing link");
            self.actions.push_back(Action::Close { conn, reason });
            self.conn_gone(conn, *c, LinkCloseReason::Lost, now);
        }
    }

    /// Closes every link of a peer whose entry was already removed.
    pub(super) fn close_conns_of(&mut self, id: DeviceId, reason: TableCloseReason, now: Instant) {
        let conns: Vec<LinkId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnState::Established { peer, .. } if peer == id))
            .map(|(&conn, _)| conn)
            .collect();
        for conn in conns {
            self.close_conn(conn, reason, now);
        }
    }

    /// Bookkeeping after a link is gone, whoever closed it.
    fn conn_gone(&mut self, conn: LinkId, c: Conn, reason: LinkCloseReason, now: Instant) {
        match c.state {
            ConnState::AwaitingHello { .. } => {
                if let Origin::Dialed {
                    dial,
                    target: Some(target),
                    ..
                } = c.origin
                {
                    self.dial_outcome_failed(target, dial, now);
                }
            }
            ConnState::Established { peer, .. } => {
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.active == Some(conn))
                {
                    self.active_lost(peer, reason, now);
                }
            }
        }
    }
}

/// One host: the same IPv4 address, or the same /64 of IPv6 (IPv4-mapped addresses as
/// IPv4). Link-local IPv6 addresses share one /64 on every link (`fe80::/64`), so they
/// are compared whole.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    match (a.to_canonical(), b.to_canonical()) {
        (IpAddr::V6(a), IpAddr::V6(b)) if a.is_unicast_link_local() => a == b,
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        (a, b) => a == b,
    }
}
