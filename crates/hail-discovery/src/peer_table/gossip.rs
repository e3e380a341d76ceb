//! Gossip: telling a newly joined peer about the others (and them about it) when
//! multicast does not, and learning peers from what others tell.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::trace;

use super::events::Action;
use super::state::{ConnState, Peer, PeerTable, TombKind};
use crate::advert::{LinkMessage, MAX_PEER_RECORDS, PeerRecord};
use crate::id::{DeviceId, LinkId};

impl PeerTable {
    /// A peer joined: tell it and the others what they may not know. Peers heard on
    /// multicast are assumed to hear it too, so gossip flows only where it helps.
    pub(super) fn gossip_join(&mut self, id: DeviceId) {
        if !self.config.gossip {
            return;
        }
        let newcomer = &self.peers[&id];
        let Some(newcomer_conn) = newcomer.active else {
            return;
        };
        let newcomer_multicast = newcomer.heard_multicast;
        let newcomer_record = (newcomer.port != 0).then(|| newcomer.record()).flatten();
        let others: Vec<(LinkId, PeerRecord, bool)> = self
            .peers
            .values()
            .filter(|p| p.member && p.id != id)
            .filter_map(|p| Some((p.active?, p.record()?, p.port != 0)))
            .collect();
        if !newcomer_multicast {
            let records: Vec<PeerRecord> = others
                .iter()
                .filter(|(_, _, dialable)| *dialable)
                .map(|(_, r, _)| r.clone())
                .collect();
            for chunk in records.chunks(MAX_PEER_RECORDS) {
                self.actions.push_back(Action::Send {
                    conn: newcomer_conn,
                    message: LinkMessage::Peers(chunk.to_vec()),
                });
            }
            if let Some(record) = newcomer_record {
                for (conn, _, _) in &others {
                    self.actions.push_back(Action::Send {
                        conn: *conn,
                        message: LinkMessage::Peers(vec![record.clone()]),
                    });
                }
            }
        }
    }

    pub(super) fn on_gossip(&mut self, conn: LinkId, records: Vec<PeerRecord>, now: Instant) {
        let c = &self.conns[&conn];
        if !matches!(c.state, ConnState::Established { .. }) {
            self.stats.protocol_errors += 1;
            return;
        }
        if !self.config.gossip {
            return;
        }
        let relay = c.remote.ip();
        let loopback_ok = relay.is_loopback();
        let until = now + self.config.gossip_lease;
        for r in records {
            let a = r.announce;
            let id = a.id();
            if id == self.local.id()
                || a.body.port == 0
                || self
                    .tombstones
                    .get(&id)
                    .is_some_and(|t| t.kind == TombKind::Replaced || a.seq() <= t.seq)
                || self.goodbyes.contains_key(&id)
                || self.authentic(&a, relay, now).is_none()
            {
                continue;
            }
            let observed = r.observed.map(|ip| SocketAddr::new(ip, a.body.port));
            match self.peers.get_mut(&id) {
                Some(p) => {
                    p.gossip_until = Some(until);
                    if !p.authoritative {
                        p.name.clone_from(&a.body.name);
                        p.port = a.body.port;
                        p.addresses.clone_from(&a.body.addresses);
                        if let Some(o) = observed {
                            p.observed.set(o);
                        }
                    }
                    if p.signed.as_ref().is_none_or(|k| k.seq() < a.seq()) {
                        p.signed = Some(a);
                    }
                }
                None => {
                    if !self.make_room(false) {
                        continue;
                    }
                    trace!(peer = %id, name = %a.body.name, "learned by gossip");
                    let mut p = Peer::new(id, a.body.name.clone());
                    p.heard_at = Some(now);
                    p.port = a.body.port;
                    p.addresses.clone_from(&a.body.addresses);
                    p.observed = observed.into();
                    p.loopback_ok = loopback_ok;
                    p.gossip_until = Some(until);
                    p.signed = Some(a);
                    self.peers.insert(id, Box::new(p));
                }
            }
            self.maybe_dial(id, now);
        }
    }
}

impl Peer {
    /// What gossip says of this peer: its own signed announce, and where its link comes
    /// from. None for a peer whose announce the table never verified.
    fn record(&self) -> Option<PeerRecord> {
        Some(PeerRecord {
            announce: self.signed.clone()?,
            observed: self.observed.first().map(|o| o.ip()),
        })
    }
}
