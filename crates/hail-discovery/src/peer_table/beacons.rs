//! Adverts on the group: decoding and handling them, and the announce schedule (the
//! start burst, jittered beacons, probe answers, answers to newcomers).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::{trace, warn};

use super::events::Action;
use super::state::{DialState, PeerTable, Phase};
use super::verify::Share;
use crate::advert::{Advert, AdvertError, Announce, Goodbye, MAX_ADDRESSES};
use crate::id::DeviceId;

/// Shortest time between two announces sent to answer newcomers (peers heard without a
/// lease or link, e.g. when a partition heals): 500 ms. Bounds the extra multicast traffic
/// to two announces a second per device while many peers are new at once (start-up).
const NEWCOMER_ANSWER_GAP: Duration = Duration::from_millis(500);

/// Shortest time between two answers to probes or newcomers: 50 ms. Probes arriving
/// meanwhile share the next answer, so a probe flood costs each device at most 20
/// announces a second.
const MIN_ANSWER_GAP: Duration = Duration::from_millis(50);

impl PeerTable {
    /// Decodes and handles one datagram from the discovery group. A datagram that does not
    /// decode is counted in [`PeerTableStats::adverts_dropped`](crate::PeerTableStats::adverts_dropped) and
    /// its error returned for logging; the table is unaffected.
    pub fn handle_datagram(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        now: Instant,
    ) -> Result<(), AdvertError> {
        match Advert::decode(bytes) {
            Ok(advert) => {
                self.handle_advert(advert, from, now);
                Ok(())
            }
            Err(e) => {
                self.stats.adverts_dropped += 1;
                Err(e)
            }
        }
    }

    /// Handles one decoded advert received from `from`.
    pub fn handle_advert(&mut self, advert: Advert, from: SocketAddr, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        match advert {
            Advert::Announce(a) => {
                if a.id() == self.local.id() {
                    self.stats.own_adverts += 1;
                    return;
                }
                self.stats.adverts_received += 1;
                let Some(share) = self.authentic(&a, from.ip(), now) else {
                    return;
                };
                trace!(peer = %a.id(), name = %a.body.name, %from, "announce");
                let newcomer = !self.peers.get(&a.id()).is_some_and(|p| p.alive());
                if self.learn(&a, from, Some(a.body.lease), now) {
                    if share == Share::Repeat
                        && let Some(p) = self.peers.get_mut(&a.id())
                    {
                        p.heard = p.heard.max(2);
                    }
                    if newcomer {
                        let waits = self.waits_for(a.id());
                        self.answer_newcomer(now, waits);
                        // A dial started before it was heard (kept by gossip, or after a
                        // timeout, as across a partition) may sit in backoff or in TCP's
                        // SYN retransmission to a host that was unreachable: dial afresh
                        // now. A late outcome of the old dial is handled as usual.
                        if let Some(p) = self.peers.get_mut(&a.id())
                            && p.active.is_none()
                            && p.dial != DialState::Idle
                        {
                            p.dial = DialState::Idle;
                        }
                    }
                    self.maybe_dial(a.id(), now);
                }
            }
            Advert::Probe { from: id } => {
                if id == self.local.id() {
                    self.stats.own_adverts += 1;
                    return;
                }
                self.stats.adverts_received += 1;
                let waits = self.waits_for(id);
                self.answer(now, waits);
            }
            Advert::Goodbye(g) => {
                if g.id() == self.local.id() {
                    self.stats.own_adverts += 1;
                    return;
                }
                self.stats.adverts_received += 1;
                if self.authentic_goodbye(&g) {
                    self.goodbye_heard(g.id(), now);
                }
            }
        }
        self.flush();
    }

    /// Changes the advertised addresses (an interface came or went) and announces them at
    /// once. More than [`MAX_ADDRESSES`] are cut, with a warning.
    pub fn set_addresses(&mut self, addresses: Vec<IpAddr>, _now: Instant) {
        self.local.addresses = addresses;
        if self.local.addresses.len() > MAX_ADDRESSES {
            warn!(
                count = self.local.addresses.len(),
                "too many local addresses; advertising the first ones"
            );
            self.local.addresses.truncate(MAX_ADDRESSES);
        }
        self.resign();
        if self.phase == Phase::Running {
            let a = self.announce();
            self.actions
                .push_back(Action::Multicast(Advert::Announce(a)));
        }
    }

    /// The announce this device sends (also the content of its hello), signed by its
    /// identity.
    pub fn announce(&self) -> Announce {
        self.own.clone()
    }

    /// Signs the local device's announce anew, under the next sequence number (at start
    /// and when what it says changed).
    pub(super) fn resign(&mut self) {
        let seq = match self.sequence.next() {
            Ok(seq) => seq,
            Err(e) => {
                warn!(error = %e, "no sequence number left for a new announce; keeping the old one");
                return;
            }
        };
        match self.local.signed_announce(self.config.lease, seq) {
            Ok(a) => self.own = a,
            Err(e) => warn!(error = %e, "the local announce does not encode; keeping the old one"),
        }
    }

    /// A goodbye signed under the next sequence number, above every announce sent.
    pub(super) fn signed_goodbye(&mut self) -> Goodbye {
        let seq = self
            .sequence
            .next()
            .unwrap_or_else(|_| self.own.seq().saturating_add(1));
        Goodbye::sign(self.local.identity(), seq)
    }

    /// Whether an announce (on the group or in gossip) is the device's own: the one
    /// already verified from its key, or newer and verifying. Older ones (replays) and
    /// forgeries are counted and refused; a signature is checked only for an announce
    /// that says something new, and how it was checked (see `verify.rs`).
    pub(super) fn authentic(
        &mut self,
        a: &Announce,
        source: IpAddr,
        now: Instant,
    ) -> Option<Share> {
        if self.verified_before(a) {
            return Some(Share::Known);
        }
        let known = self.peers.get(&a.id()).and_then(|p| p.signed.as_ref());
        if known.is_some_and(|k| a.seq() < k.seq()) {
            self.stats.stale_adverts += 1;
            return None;
        }
        let Some(share) = self.verify_budget.spend(source, a.key_bytes(), now) else {
            self.stats.verify_deferred += 1;
            return None;
        };
        if a.verify().is_err() {
            self.stats.bad_signatures += 1;
            return None;
        }
        if share == Share::Repeat {
            self.stats.verified_repeats += 1;
        }
        Some(share)
    }

    /// Whether a goodbye on the group is the device's own and newer than everything it
    /// announced: a goodbye for a device the table does not know changes nothing and is
    /// not verified.
    fn authentic_goodbye(&mut self, g: &Goodbye) -> bool {
        let Some(p) = self.peers.get(&g.id()) else {
            return false;
        };
        if p.signed.as_ref().is_some_and(|k| g.seq() <= k.seq()) {
            self.stats.stale_adverts += 1;
            return false;
        }
        if g.verify().is_err() {
            self.stats.bad_signatures += 1;
            return false;
        }
        true
    }

    pub(super) fn jitter(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.random_range(0..=nanos))
    }

    pub(super) fn beacon_delay(&mut self) -> Duration {
        let j = self.config.beacon_jitter;
        self.config.beacon_interval - j + self.jitter(j * 2)
    }

    /// Sends one announce if a burst slot, a beacon or a probe answer is due.
    pub(super) fn run_schedule(&mut self, now: Instant) {
        let mut due = false;
        while self.announce_at.first().is_some_and(|&t| t <= now) {
            self.announce_at.remove(0);
            due = true;
        }
        if self.next_beacon.is_some_and(|t| t <= now) {
            self.next_beacon = Some(now + self.beacon_delay());
            due = true;
        }
        if self.probe_answer_at.is_some_and(|t| t <= now) {
            self.probe_answer_at = None;
            self.last_answer = Some(now);
            due = true;
        }
        if due {
            let a = self.announce();
            self.actions
                .push_back(Action::Multicast(Advert::Announce(a)));
        }
    }

    /// Schedules an announce soon (shared with a pending probe answer) after hearing a
    /// newcomer, at most once per `NEWCOMER_ANSWER_GAP`; `at_once` when this device waits
    /// for the newcomer's dial.
    fn answer_newcomer(&mut self, now: Instant, at_once: bool) {
        if self
            .last_newcomer_answer
            .is_some_and(|t| now.saturating_duration_since(t) < NEWCOMER_ANSWER_GAP)
        {
            return;
        }
        self.last_newcomer_answer = Some(now);
        self.answer(now, at_once);
    }

    /// Announces after the probe answer jitter (sharing a pending answer), or `at_once`,
    /// right now.
    /// Never sooner than [`MIN_ANSWER_GAP`] after the last answer: a flood of probes gets
    /// at most one announce per gap from each device that hears it.
    fn answer(&mut self, now: Instant, at_once: bool) {
        let earliest = self.last_answer.map_or(now, |t| t + MIN_ANSWER_GAP);
        let at = if at_once {
            now
        } else {
            now + self.jitter(self.config.probe_answer_jitter)
        }
        .max(earliest);
        self.probe_answer_at = Some(self.probe_answer_at.map_or(at, |t| t.min(at)));
        if at <= now {
            self.run_schedule(now);
        }
    }

    /// Whether this device waits for `id`'s dial rather than dialing it (see
    /// `dial_yield`): then `id` dials on hearing this device, which should therefore
    /// answer it at once, with no jitter delaying the join.
    fn waits_for(&self, id: DeviceId) -> bool {
        !self.dials_first(id)
            && !self.config.dial_yield.is_zero()
            && self.peers.get(&id).is_none_or(|p| p.active.is_none())
    }
}
