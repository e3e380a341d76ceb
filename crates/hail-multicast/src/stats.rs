//! Channel statistics: what was sent, delivered, and dropped by reason.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a channel's counters, from [`Channel::stats`](crate::Channel::stats) or
/// [`Receiver::stats`](crate::Receiver::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams sent (one per interface a payload went out on).
    pub sent: u64,
    /// Sends that failed on one interface while another succeeded.
    pub send_errors: u64,
    /// Datagrams delivered to the application.
    pub delivered: u64,
    /// This channel's own datagrams skipped because loopback is off.
    pub own_skipped: u64,
    /// Dropped: not a sealed datagram of this format (sealed channels only).
    pub dropped_malformed: u64,
    /// Dropped: did not authenticate (another group or passphrase, or tampered).
    pub dropped_wrong_key: u64,
    /// Dropped: a replay of a datagram already delivered.
    pub dropped_replayed: u64,
    /// Dropped: too old for the replay window.
    pub dropped_too_old: u64,
    /// Dropped by `recv_msg`: the payload was not a valid postcard message of the asked type.
    pub dropped_undecodable: u64,
}

/// Adds another channel's counts, field by field (saturating): a user that replaces its
/// channel (its interfaces changed) keeps one running total.
impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Self) {
        let Self {
            sent,
            send_errors,
            delivered,
            own_skipped,
            dropped_malformed,
            dropped_wrong_key,
            dropped_replayed,
            dropped_too_old,
            dropped_undecodable,
        } = o;
        self.sent = self.sent.saturating_add(sent);
        self.send_errors = self.send_errors.saturating_add(send_errors);
        self.delivered = self.delivered.saturating_add(delivered);
        self.own_skipped = self.own_skipped.saturating_add(own_skipped);
        self.dropped_malformed = self.dropped_malformed.saturating_add(dropped_malformed);
        self.dropped_wrong_key = self.dropped_wrong_key.saturating_add(dropped_wrong_key);
        self.dropped_replayed = self.dropped_replayed.saturating_add(dropped_replayed);
        self.dropped_too_old = self.dropped_too_old.saturating_add(dropped_too_old);
        self.dropped_undecodable = self.dropped_undecodable.saturating_add(dropped_undecodable);
    }
}

impl Stats {
    /// Every dropped datagram, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_malformed
            + self.dropped_wrong_key
            + self.dropped_replayed
            + self.dropped_too_old
            + self.dropped_undecodable
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) own_skipped: AtomicU64,
    pub(crate) dropped_malformed: AtomicU64,
    pub(crate) dropped_wrong_key: AtomicU64,
    pub(crate) dropped_replayed: AtomicU64,
    pub(crate) dropped_too_old: AtomicU64,
    pub(crate) dropped_undecodable: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            sent: g(&self.sent),
            send_errors: g(&self.send_errors),
            delivered: g(&self.delivered),
            own_skipped: g(&self.own_skipped),
            dropped_malformed: g(&self.dropped_malformed),
            dropped_wrong_key: g(&self.dropped_wrong_key),
            dropped_replayed: g(&self.dropped_replayed),
            dropped_too_old: g(&self.dropped_too_old),
            dropped_undecodable: g(&self.dropped_undecodable),
        }
    }
}
