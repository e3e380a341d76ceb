//! Gossip: telling a newly joined peer about the others (and them about it) when
//! multicast does not, and learning peers from what others tell.

use std::net::IpAddr;
use std::time::Instant;

use tracing::trace;

use super::events::Action;
use super::state::{ConnState, Peer, PeerTable};
use crate::advert::{LinkMessage, MAX_ADDRESSES, MAX_PEER_RECORDS, PeerRecord};
use crate::id::{ConnId, DeviceId};

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
        let newcomer_record = (newcomer.port != 0).then(|| newcomer.record());
        let others: Vec<(ConnId, PeerRecord, bool)> = self
            .peers
            .values()
            .filter(|p| p.member && p.id != id)
            .filter_map(|p| Some((p.active?, p.record(), p.port != 0)))
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

    pub(super) fn on_gossip(&mut self, conn: ConnId, records: Vec<PeerRecord>, now: Instant) {
        let c = &self.conns[&conn];
        if !matches!(c.state, ConnState::Established { .. }) {
            self.stats.protocol_errors += 1;
            return;
        }
        if !self.config.gossip {
            return;
        }
        let loopback_ok = c.remote.ip().is_loopback();
        let until = now + self.config.gossip_lease;
        for r in records {
            if r.id == self.local.id
                || r.port == 0
                || self.tombstones.contains_key(&r.id)
                || self.goodbyes.contains_key(&r.id)
            {
                continue;
            }
            match self.peers.get_mut(&r.id) {
                Some(p) => {
                    p.gossip_until = Some(until);
                    if !p.authoritative {
                        p.name = r.name;
                        p.port = r.port;
                        p.addresses = r.addresses;
                    }
                }
                None => {
                    if !self.make_room(false) {
                        continue;
                    }
                    trace!(peer = %r.id, name = %r.name, "learned by gossip");
                    let mut p = Peer::new(r.id, r.name);
                    p.heard_at = Some(now);
                    p.port = r.port;
                    p.addresses = r.addresses;
                    p.loopback_ok = loopback_ok;
                    p.gossip_until = Some(until);
                    self.peers.insert(r.id, p);
                }
            }
            self.maybe_dial(r.id, now);
        }
    }
}

impl Peer {
    fn record(&self) -> PeerRecord {
        let mut addresses: Vec<IpAddr> = Vec::new();
        for ip in self.hosts() {
            if !addresses.contains(&ip) && addresses.len() < MAX_ADDRESSES {
                addresses.push(ip);
            }
        }
        PeerRecord {
            id: self.id,
            name: self.name.clone(),
            port: self.port,
            addresses,
        }
    }
}
