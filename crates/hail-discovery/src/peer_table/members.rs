//! Membership: who a device is (learning, names, restarts and duplicate names), when it
//! joins, and when and why it leaves (goodbyes, lost links and the reconnect grace).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, trace, warn};

use super::events::{Action, Event, LeaveReason, LinkCloseReason, TableCloseReason};
use super::state::{ConnState, DialState, Peer, PeerTable, Tomb, TombKind};
use crate::advert::{Advert, Announce};
use crate::config::{MAX_PEER_LEASE, MIN_PEER_LEASE};
use crate::id::DeviceId;

impl PeerTable {
    /// Takes in what a device says about itself (an authentic announce, or a hello on
    /// `observed`'s link, which proved its key). Returns false when it is ignored
    /// (ourselves, departed, table full).
    pub(super) fn learn(
        &mut self,
        a: &Announce,
        observed: SocketAddr,
        lease: Option<Duration>,
        now: Instant,
    ) -> bool {
        let id = a.id();
        let name = &a.body.name;
        if id == self.local.id() {
            return false;
        }
        // A device that said goodbye is still let in by its hello (a link that was
        // connecting carries what it sent), but late adverts do not renew it.
        if lease.is_some() && self.goodbyes.contains_key(&id) {
            return false;
        }
        match self.tombstones.get(&id).map(|t| t.kind) {
            Some(TombKind::Departed) if self.departed(id, a.seq()) => return false,
            Some(TombKind::Departed) => {
                debug!(peer = %id, %name, "a later run of a departed key");
                self.tombstones.remove(&id);
            }
            // Only a link brings a replaced id back (it proves it is alive); its adverts
            // could be replays.
            Some(TombKind::Replaced) if lease.is_some() => return false,
            Some(TombKind::Replaced) => {
                debug!(peer = %id, %name, "replaced id is alive: duplicate name");
                self.tombstones.remove(&id);
                self.dup_names.insert(name.clone());
            }
            None => {}
        }
        let existing = self.peers.get(&id);
        // A device's name is fixed for its run (its id): an advert or hello giving a joined
        // peer another name is not believed (its messages keep the name it joined with).
        if let Some(p) = existing
            && p.member
            && &p.name != name
        {
            debug!(peer = %id, %name, joined_as = %p.name, "another name for a joined peer: ignored");
            self.stats.protocol_errors += 1;
            return false;
        }
        if existing.is_none() && !self.make_room(lease.is_none()) {
            return false;
        }
        // A link proves its device is alive under this name: it takes the name from ids
        // whose link is gone (a restart). Adverts never do: anyone can make one.
        if lease.is_none() {
            self.claim_name(id, name, now);
        }
        let p = self
            .peers
            .entry(id)
            .or_insert_with(|| Box::new(Peer::new(id, name.clone())));
        let b = &a.body;
        let moved = p.observed.set(observed);
        let changed = &p.name != name || p.port != b.port || p.addresses != b.addresses || moved;
        p.name.clone_from(name);
        p.port = b.port;
        p.addresses.clone_from(&b.addresses);
        if p.signed
            .as_ref()
            .is_none_or(|k| k.seq() <= a.seq() && k != a)
        {
            p.signed = Some(a.clone());
        }
        p.loopback_ok = p.observed.is_loopback();
        p.authoritative = true;
        p.heard_at = Some(now);
        if let Some(lease) = lease {
            p.heard = p.heard.saturating_add(1);
            let until = now + lease.clamp(MIN_PEER_LEASE, MAX_PEER_LEASE);
            p.lease_until = Some(p.lease_until.map_or(until, |t| t.max(until)));
            p.heard_multicast = true;
        }
        if p.member && changed {
            self.dirty = true;
        }
        true
    }

    /// `new_id`, whose link just proved it, is `name`: it replaces the holders of the name
    /// that no link proves alive now (a previous incarnation whose link is gone, in its
    /// reconnect grace, or a device only advertised). A holder whose link is up stays: the
    /// name is then shared ([`Event::DuplicateName`]) until one of them is gone, and when
    /// the older one's link ends it leaves as restarted at once
    /// ([`PeerTable::active_lost`]).
    fn claim_name(&mut self, new_id: DeviceId, name: &str, now: Instant) {
        if name == self.local.name {
            return;
        }
        let replaced: Vec<DeviceId> = self
            .peers
            .values()
            .filter(|o| o.id != new_id && o.authoritative && o.name == name)
            .filter(|o| o.active.is_none())
            .map(|o| o.id)
            .collect();
        for old in replaced {
            self.replace(old, now);
        }
    }

    fn replace(&mut self, old: DeviceId, now: Instant) {
        let Some(p) = self.peers.remove(&old) else {
            return;
        };
        debug!(peer = %old, name = %p.name, "presumed restarted under a new id");
        let seq = p.seq();
        self.insert_tomb(old, now + self.config.lease, TombKind::Replaced, seq);
        self.close_conns_of(old, TableCloseReason::Stale, now);
        if p.member {
            self.events.push_back(Event::PeerLeft {
                peer: p.info(),
                reason: LeaveReason::Restarted,
            });
            self.dirty = true;
            self.report_duplicates(&p.name);
        }
        // If the old id is in fact alive (a duplicate name), a probe makes it speak now.
        if self
            .last_probe
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.beacon_interval)
        {
            self.last_probe = Some(now);
            self.actions.push_back(Action::Multicast(Advert::Probe {
                from: self.local.id(),
            }));
        }
    }

    fn insert_tomb(&mut self, id: DeviceId, until: Instant, kind: TombKind, seq: u64) {
        if self.tombstones.len() < self.config.max_peers || self.tombstones.contains_key(&id) {
            self.tombstones.insert(id, Tomb { until, kind, seq });
        }
    }

    /// Reports `name` if two or more joined ids hold it (only a link proves a holder) and
    /// the set changed since the last report; forgets it when it is no longer shared.
    pub(super) fn report_duplicates(&mut self, name: &str) {
        let mut ids: Vec<DeviceId> = self
            .peers
            .values()
            .filter(|p| p.member && p.name == name)
            .map(|p| p.id)
            .collect();
        if name == self.local.name {
            ids.push(self.local.id());
        }
        ids.sort();
        if ids.len() >= 2 {
            self.dup_names.insert(name.to_owned());
            if self.reported.get(name) != Some(&ids) {
                warn!(%name, count = ids.len(), "several devices share a name");
                self.reported.insert(name.to_owned(), ids.clone());
                self.events.push_back(Event::DuplicateName {
                    name: name.to_owned(),
                    ids,
                });
            }
        } else {
            self.reported.remove(name);
            self.dup_names.remove(name);
        }
    }

    /// A goodbye on the group. A device with a link up, or any link still awaiting its
    /// hello (it may be the device's), may have sent more on that link just before: it
    /// leaves when that link says goodbye or closes, or when the goodbye grace ends.
    pub(super) fn goodbye_heard(&mut self, id: DeviceId, now: Instant) {
        let grace = self.config.goodbye_grace;
        let departed = self
            .tombstones
            .get(&id)
            .is_some_and(|t| t.kind == TombKind::Departed);
        let wait = !grace.is_zero()
            && !departed
            && (self.has_link(id) || self.awaiting_hello())
            && (self.goodbyes.contains_key(&id) || self.goodbyes.len() < self.config.max_peers);
        if wait {
            self.goodbyes.entry(id).or_insert(now + grace);
            trace!(peer = %id, "goodbye heard; waiting for its links");
        } else {
            self.depart(id, now);
        }
    }

    /// Whether any link still awaits its hello: it may be any device's.
    fn awaiting_hello(&self) -> bool {
        self.conns
            .values()
            .any(|c| matches!(c.state, ConnState::AwaitingHello { .. }))
    }

    /// Whether an established link to `id` is up, or one of its duplicates still drains.
    fn has_link(&self, id: DeviceId) -> bool {
        self.draining.values().any(|&p| p == id)
            || self
                .conns
                .values()
                .any(|c| matches!(c.state, ConnState::Established { peer, .. } if peer == id))
    }

    /// A goodbye on a link of `id`. Everything it sent on that link came before; unless
    /// a duplicate link of it still drains, or a link still awaits its hello (it may be
    /// the device's other link, with what it sent there behind the hello), it leaves now.
    pub(super) fn goodbye_on_link(&mut self, id: DeviceId, now: Instant) {
        let grace = self.config.goodbye_grace;
        if !grace.is_zero() && (self.draining.values().any(|&p| p == id) || self.awaiting_hello()) {
            self.goodbyes.entry(id).or_insert(now + grace);
            trace!(peer = %id, "goodbye on its link; waiting for its other links");
        } else {
            self.depart(id, now);
        }
    }

    /// A link ended or got its hello: every device that said goodbye and has no link
    /// left leaves. While any link awaits its hello, none does: that link may be one of
    /// theirs, with what they sent behind the hello.
    pub(super) fn goodbye_progress(&mut self, now: Instant) {
        if self.goodbyes.is_empty() || self.awaiting_hello() {
            return;
        }
        let done: Vec<DeviceId> = self
            .goodbyes
            .keys()
            .copied()
            .filter(|&id| !self.has_link(id))
            .collect();
        for id in done {
            self.depart(id, now);
        }
    }

    /// Room for one more entry. A device a link speaks for (`proven`) may take the room of
    /// one known only from adverts or gossip; those are held to half of `max_peers`, the
    /// entries heard only once making room first (a flood of one-off forgeries churns
    /// among itself; a device beaconing is heard again), then, of those, the one heard of
    /// longest ago (a dial to it goes on; its link would bring it back). False (counted)
    /// when there is no room: every entry is a joined peer.
    pub(super) fn make_room(&mut self, proven: bool) -> bool {
        let max = self.config.max_peers;
        let full = self.peers.len() >= max;
        let crowded = !proven && {
            let unproven = self.peers.values().filter(|p| p.unproven()).count();
            unproven >= (max / 2).max(1)
        };
        if !full && !crowded {
            return true;
        }
        let oldest = self
            .peers
            .values()
            .filter(|p| p.unproven())
            .min_by_key(|p| (p.repeated(), p.heard_at))
            .map(|p| p.id);
        match oldest {
            Some(id) => {
                trace!(peer = %id, "forgotten to make room");
                self.peers.remove(&id);
                self.stats.unproven_evicted += 1;
                true
            }
            None => {
                self.stats.peers_rejected += 1;
                false
            }
        }
    }

    /// The device said goodbye.
    pub(super) fn depart(&mut self, id: DeviceId, now: Instant) {
        self.goodbyes.remove(&id);
        self.draining.retain(|_, p| *p != id);
        // Late adverts and gossip about the departed id are ignored for this long.
        let until = now + self.config.lease.max(self.config.gossip_lease);
        let seq = self.peers.get(&id).map_or(u64::MAX, |p| p.seq());
        self.insert_tomb(id, until, TombKind::Departed, seq);
        let Some(p) = self.peers.remove(&id) else {
            return;
        };
        debug!(peer = %id, name = %p.name, "goodbye");
        self.close_conns_of(id, TableCloseReason::Departed, now);
        if p.member {
            self.events.push_back(Event::PeerLeft {
                peer: p.info(),
                reason: LeaveReason::Goodbye,
            });
            self.dirty = true;
        }
        if p.member {
            self.report_duplicates(&p.name);
        }
    }

    /// The link carrying a peer's traffic is gone.
    pub(super) fn active_lost(&mut self, id: DeviceId, reason: LinkCloseReason, now: Instant) {
        let next = self
            .conns
            .iter()
            .filter_map(|(&conn, c)| match c.state {
                ConnState::Established { peer, key } if peer == id => Some((key, conn)),
                _ => None,
            })
            .min();
        let grace = self.config.reconnect_grace;
        let delay = self.redial_delay(1);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.active = None;
        if let Some((_, conn)) = next {
            p.active = Some(conn);
            return;
        }
        if !p.member {
            return;
        }
        // Another joined id holds its name: that was its restart (its link came up before
        // this one ended).
        let name = p.name.clone();
        let successor = self
            .peers
            .values()
            .any(|o| o.id != id && o.member && o.active.is_some() && o.name == name);
        if successor {
            self.replace(id, now);
            return;
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.dial == DialState::Idle {
            p.failures = 0;
            p.dial = DialState::Backoff(now + delay);
        }
        if reason == LinkCloseReason::Timeout || grace.is_zero() {
            let why = if reason == LinkCloseReason::Timeout {
                LeaveReason::Timeout
            } else {
                LeaveReason::ConnectionLost
            };
            self.leave(id, why);
        } else {
            p.grace_until = Some(now + grace);
            debug!(peer = %id, "link lost; redialing within the grace");
        }
    }

    pub(super) fn leave(&mut self, id: DeviceId, reason: LeaveReason) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.grace_until = None;
            if p.member {
                p.member = false;
                debug!(peer = %id, name = %p.name, ?reason, "peer left");
                let peer = p.info();
                let name = p.name.clone();
                self.events.push_back(Event::PeerLeft { peer, reason });
                self.dirty = true;
                self.report_duplicates(&name);
            }
        }
    }
}
