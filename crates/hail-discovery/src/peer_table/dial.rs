//! Dialing and backoff: whom to dial (peers and static addresses) at which addresses,
//! and the exponential backoff after failures.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use tracing::trace;

use super::events::{Action, LeaveReason};
use super::state::{DialState, DialTarget, Peer, PeerTable, Phase};
use crate::config::{DIAL_BURST, MAX_DIAL_ADDRESSES, MAX_DIALS_IN_FLIGHT, MAX_DIALS_PER_SECOND};
use crate::id::{DeviceId, DialId};

/// Of the dial budget ([`MAX_DIALS_IN_FLIGHT`] in flight, [`DIAL_BURST`] at once), the
/// part only peers heard more than once (a device beaconing), joined peers (redials in
/// their reconnect grace) and static addresses may take: 8 of each. A flood of adverts
/// that are each heard once (fresh forged keys) holds at most the other 8 dials in flight
/// and leaves 8 tokens of the burst; a real device's dial starts at once. Counted in
/// [`PeerTableStats::reserved_dials`](crate::PeerTableStats::reserved_dials).
pub const DIAL_RESERVE: u32 = 8;

/// How soon a dial put off for want of room among the dials in flight tries again: 50 ms.
const DIAL_RETRY: Duration = Duration::from_millis(50);

impl PeerTable {
    /// Every address of an [`Action::Dial`] failed.
    pub fn dial_failed(&mut self, dial: DialId, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        if let Some(target) = self.dials.remove(&dial) {
            self.dial_outcome_failed(target, dial, now);
            self.flush();
        }
    }

    /// Backoff before the redial after `failures` failures: `initial * 2^(failures-1)`
    /// capped at the maximum, drawn from `[d/2, d]`.
    pub(super) fn redial_delay(&mut self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let d = self
            .config
            .redial_initial
            .saturating_mul(1 << exp)
            .min(self.config.redial_max);
        d / 2 + self.jitter(d / 2)
    }

    fn next_dial_id(&mut self) -> DialId {
        let d = DialId(self.next_dial);
        self.next_dial += 1;
        d
    }

    pub(super) fn dial_outcome_failed(&mut self, target: DialTarget, dial: DialId, now: Instant) {
        match target {
            DialTarget::Peer(id) => {
                let Some(p) = self.peers.get(&id) else {
                    return;
                };
                if p.dial != DialState::Dialing(dial) {
                    return;
                }
                let failures = p.failures.saturating_add(1);
                let delay = self.redial_delay(failures);
                let p = self.peers.get_mut(&id).expect("checked above");
                p.failures = failures;
                p.dial = DialState::Backoff(now + delay);
                trace!(peer = %id, failures, ?delay, "dial failed");
                if p.grace_until.is_some() && p.active.is_none() {
                    self.leave(id, LeaveReason::ConnectionLost);
                }
            }
            DialTarget::Static(i) => {
                if self.statics[i].dial != DialState::Dialing(dial) {
                    return;
                }
                let failures = self.statics[i].failures.saturating_add(1);
                let delay = self.redial_delay(failures);
                let s = &mut self.statics[i];
                s.failures = failures;
                s.dial = DialState::Backoff(now + delay);
                trace!(addr = %s.addr, failures, ?delay, "static dial failed");
            }
        }
    }

    pub(super) fn maybe_dial(&mut self, id: DeviceId, now: Instant) {
        if self.phase != Phase::Running || !self.config.auto_connect {
            return;
        }
        let Some(p) = self.peers.get(&id) else {
            return;
        };
        if p.active.is_some() || p.dial != DialState::Idle || !p.keep() {
            return;
        }
        // The first dialer's dial is the one the one-link rule keeps: the other waits for
        // it, once, before dialing too.
        let wait = self.config.dial_yield;
        if p.failures == 0 && !wait.is_zero() && !self.dials_first(id) && !p.dial_addrs().is_empty()
        {
            let until = now + wait;
            trace!(peer = %id, ?wait, "waiting for the peer's dial");
            self.peers.get_mut(&id).expect("present").dial = DialState::Deferred(until);
            return;
        }
        self.dial_now(id, now);
    }

    /// Takes one dial from the budget (from its reserve too, if `reserve`), or says when
    /// to try again.
    fn dial_budget(&mut self, now: Instant, reserve: bool) -> Result<(), Instant> {
        let held = if reserve { 0 } else { DIAL_RESERVE as usize };
        if self.dials.len() + held >= MAX_DIALS_IN_FLIGHT {
            self.stats.dials_deferred += 1;
            return Err(now + DIAL_RETRY);
        }
        let rate = f64::from(MAX_DIALS_PER_SECOND);
        let since = self
            .dial_tokens_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.dial_tokens =
            (self.dial_tokens + since.as_secs_f64() * rate).min(f64::from(DIAL_BURST));
        self.dial_tokens_at = Some(now);
        let need = 1.0 + f64::from(if reserve { 0 } else { DIAL_RESERVE });
        if self.dial_tokens < need {
            self.stats.dials_deferred += 1;
            let wait = Duration::from_secs_f64((need - self.dial_tokens) / rate);
            return Err(now + wait.max(Duration::from_millis(1)));
        }
        let reserved = f64::from(DIAL_RESERVE);
        if reserve
            && (self.dial_tokens < 1.0 + reserved
                || self.dials.len() + DIAL_RESERVE as usize >= MAX_DIALS_IN_FLIGHT)
        {
            self.stats.reserved_dials += 1;
        }
        self.dial_tokens -= 1.0;
        Ok(())
    }

    /// Dials `id` at the addresses it can be reached at, if it has any and no dial runs;
    /// later, when the dial budget is spent: at the budget's pace, whether this device is
    /// the pair's first dialer or not. A first dialer keeps its turn (the peer's
    /// `dial_yield` is long enough for a dial that waited for the budget of a forming mesh;
    /// handing the dial to the peer instead made half of a mesh's links wait for the
    /// peers' yields while the first dialers' budgets were free again).
    pub(super) fn dial_now(&mut self, id: DeviceId, now: Instant) {
        if self.phase != Phase::Running || !self.config.auto_connect {
            return;
        }
        let Some(p) = self.peers.get(&id) else {
            return;
        };
        if p.active.is_some() || p.dial != DialState::Idle {
            return;
        }
        let addrs = p.dial_addrs();
        if addrs.is_empty() {
            return;
        }
        let reserve = p.repeated() || p.grace_until.is_some();
        if let Err(retry) = self.dial_budget(now, reserve) {
            trace!(peer = %id, "dial budget spent: later");
            self.peers.get_mut(&id).expect("present").dial = DialState::Deferred(retry);
            return;
        }
        let dial = self.next_dial_id();
        self.dials.insert(dial, DialTarget::Peer(id));
        self.peers.get_mut(&id).expect("present").dial = DialState::Dialing(dial);
        trace!(peer = %id, %dial, ?addrs, "dial");
        self.actions.push_back(Action::Dial {
            dial,
            peer: Some(id),
            addrs,
        });
    }

    pub(super) fn dial_statics(&mut self, now: Instant) {
        for i in 0..self.statics.len() {
            let s = &self.statics[i];
            if s.is_self || s.dial != DialState::Idle {
                continue;
            }
            let covered = s.peer.and_then(|id| self.peers.get(&id)).is_some_and(|p| {
                p.active.is_some()
                    || p.grace_until.is_some()
                    || matches!(p.dial, DialState::Dialing(_))
            });
            if covered {
                continue;
            }
            let (addr, peer) = (s.addr, s.peer);
            if let Err(retry) = self.dial_budget(now, true) {
                self.statics[i].dial = DialState::Backoff(retry);
                continue;
            }
            let dial = self.next_dial_id();
            self.dials.insert(dial, DialTarget::Static(i));
            self.statics[i].dial = DialState::Dialing(dial);
            trace!(%addr, %dial, "dial static peer");
            self.actions.push_back(Action::Dial {
                dial,
                peer,
                addrs: vec![addr],
            });
        }
    }
}

impl Peer {
    /// Dialable addresses, best first: the observed sources (IPv4, then IPv6), then the
    /// advertised ones that make sense from here.
    pub(super) fn dial_addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        if self.port == 0 {
            return out;
        }
        let scope = self.observed.scope();
        for ip in self.hosts() {
            if ip.is_unspecified() || ip.is_multicast() || (ip.is_loopback() && !self.loopback_ok) {
                continue;
            }
            let addr = match ip {
                IpAddr::V4(v4) if v4.is_broadcast() => continue,
                IpAddr::V4(_) => SocketAddr::new(ip, self.port),
                IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
                    if scope == 0 {
                        continue;
                    }
                    SocketAddr::V6(SocketAddrV6::new(v6, self.port, 0, scope))
                }
                IpAddr::V6(_) => SocketAddr::new(ip, self.port),
            };
            if !out.contains(&addr) {
                out.push(addr);
            }
            if out.len() >= MAX_DIAL_ADDRESSES {
                break;
            }
        }
        out
    }
}
