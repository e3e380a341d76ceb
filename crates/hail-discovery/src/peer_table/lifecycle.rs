//! Start, shutdown and time: what the table does when it starts and stops, when it
//! next wants to wake, and what is due when it does (every timer of every job).

use std::time::Instant;

use tracing::{debug, trace};

use super::events::{Action, LeaveReason, TableCloseReason};
use super::state::{ConnState, DialState, PeerTable, Phase};
use crate::advert::{Advert, LinkMessage};
use crate::id::{DeviceId, LinkId};

impl PeerTable {
    /// Starts: announces at once, probes, schedules the rest of the burst and the
    /// beacons, dials the static peers. Does nothing if already started.
    pub fn start(&mut self, now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Running;
        let mut offsets = self.config.burst.clone();
        offsets.sort();
        for off in offsets {
            let at = if off.is_zero() {
                now
            } else {
                now + off + self.jitter(self.config.burst_jitter)
            };
            self.announce_at.push(at);
        }
        self.announce_at.sort();
        let last = self.announce_at.last().copied().unwrap_or(now);
        self.next_beacon = Some(last + self.beacon_delay());
        debug!(id = %self.local.id(), name = %self.local.name, "discovery starting");
        self.run_schedule(now);
        self.actions.push_back(Action::Multicast(Advert::Probe {
            from: self.local.id(),
        }));
        self.last_probe = Some(now);
        self.dial_statics(now);
        self.flush();
    }

    /// Says goodbye (on the group and on every link) and closes every link. Afterwards
    /// the table ignores input, has no timeout and reports no further events; only the
    /// actions queued here remain to be drained. Joined peers are not reported as left.
    pub fn close(&mut self, _now: Instant) {
        match self.phase {
            Phase::Stopped => return,
            Phase::Idle => {
                self.phase = Phase::Stopped;
                return;
            }
            Phase::Running => self.phase = Phase::Stopped,
        }
        debug!(id = %self.local.id(), "discovery shutting down");
        let id = self.local.id();
        let goodbye = self.signed_goodbye();
        self.actions
            .push_back(Action::Multicast(Advert::Goodbye(goodbye)));
        let conns = std::mem::take(&mut self.conns);
        for (&conn, c) in &conns {
            if matches!(c.state, ConnState::Established { .. }) {
                self.actions.push_back(Action::Send {
                    conn,
                    message: LinkMessage::Goodbye { from: id },
                });
            }
        }
        for &conn in conns.keys() {
            self.actions.push_back(Action::Close {
                conn,
                reason: TableCloseReason::Shutdown,
            });
        }
        self.peers.clear();
        self.goodbyes.clear();
        self.draining.clear();
        self.dials.clear();
        self.announce_at.clear();
        self.next_beacon = None;
        self.probe_answer_at = None;
        self.dirty = false;
    }

    /// The earliest time at which [`handle_timeout`](Self::handle_timeout) has work; `None`
    /// before start and after shutdown. It may be in the past: then call it at once.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Running {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.announce_at.first().copied());
        consider(self.next_beacon);
        consider(self.probe_answer_at);
        consider(self.goodbyes.values().min().copied());
        for c in self.conns.values() {
            if let ConnState::AwaitingHello { deadline } = c.state {
                consider(Some(deadline));
            }
        }
        for p in self.peers.values() {
            consider(p.lease_until);
            consider(p.gossip_until);
            consider(p.grace_until);
            if let DialState::Backoff(b) | DialState::Deferred(b) = p.dial {
                consider(Some(b));
            }
        }
        for s in &self.statics {
            if let DialState::Backoff(b) = s.dial {
                consider(Some(b));
            }
        }
        t
    }

    /// Does whatever is due at `now`: announcements, lease and grace expiry, hello
    /// timeouts, redials.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        self.run_schedule(now);
        let expired: Vec<LinkId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.state, ConnState::AwaitingHello { deadline } if deadline <= now)
            })
            .map(|(&id, _)| id)
            .collect();
        for conn in expired {
            debug!(%conn, "no hello in time");
            self.close_conn(conn, TableCloseReason::HelloTimeout, now);
        }
        self.goodbye_progress(now);
        let due: Vec<DeviceId> = self
            .goodbyes
            .iter()
            .filter(|&(_, &at)| at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            if self.peers.get(&id).is_some_and(|p| p.active.is_some()) {
                // Its link is up and said no goodbye: a device that leaves says it there
                // too and closes its links. The group's goodbye was not its own (anyone
                // can send one); the link decides.
                debug!(peer = %id, "a goodbye on the group its link did not follow: ignored");
                self.goodbyes.remove(&id);
                self.stats.goodbyes_ignored += 1;
            } else {
                debug!(peer = %id, "its links did not finish within the goodbye grace");
                self.depart(id, now);
            }
        }
        self.tombstones.retain(|_, t| t.until > now);
        let ids: Vec<DeviceId> = self.peers.keys().copied().collect();
        for id in ids {
            self.tick_peer(id, now);
        }
        for s in &mut self.statics {
            if matches!(s.dial, DialState::Backoff(b) if b <= now) {
                s.dial = DialState::Idle;
            }
        }
        self.dial_statics(now);
        let names: Vec<String> = self.reported.keys().cloned().collect();
        for name in names {
            self.report_duplicates(&name);
        }
        self.flush();
    }

    fn tick_peer(&mut self, id: DeviceId, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.lease_until.is_some_and(|t| t <= now) {
            p.lease_until = None;
        }
        if p.gossip_until.is_some_and(|t| t <= now) {
            p.gossip_until = None;
        }
        if matches!(p.dial, DialState::Backoff(t) if t <= now) {
            p.dial = DialState::Idle;
        }
        let deferred = matches!(p.dial, DialState::Deferred(t) if t <= now);
        if deferred {
            p.dial = DialState::Idle;
        }
        if p.grace_until.is_some_and(|t| t <= now) {
            p.grace_until = None;
            if p.active.is_none() {
                self.leave(id, LeaveReason::ConnectionLost);
            }
        }
        let p = &self.peers[&id];
        if p.keep() {
            if deferred {
                self.dial_now(id, now);
            } else {
                self.maybe_dial(id, now);
            }
        } else if self.goodbyes.contains_key(&id) {
            // It said goodbye and waits for its links (or the grace): it departs there,
            // with its `PeerLeft`, not silently here.
        } else {
            if p.member {
                self.leave(id, LeaveReason::ConnectionLost);
            }
            let p = self.peers.remove(&id).expect("present");
            trace!(peer = %id, name = %p.name, "forgotten");
            if p.authoritative {
                self.report_duplicates(&p.name);
            }
        }
    }
}
