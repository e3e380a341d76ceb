//! Summary lines for what peers get refused: one warning per interval with counts, never
//! one per datagram or link (a flood would otherwise flood the log too).

use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::peer_table::PeerTableStats;

/// How often at most a summary of refused input is logged: 10 s.
pub(super) const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// What was logged last, and when.
#[derive(Debug, Default)]
pub(super) struct Summary {
    last: PeerTableStats,
    at: Option<Instant>,
}

impl Summary {
    /// Logs one warning with what grew since the last summary, if anything did and the
    /// interval has passed. Returns whether it logged (for tests).
    pub(super) fn tick(&mut self, now: Instant, stats: &PeerTableStats) -> bool {
        if self.at.is_some_and(|at| now < at + SUMMARY_INTERVAL) {
            return false;
        }
        let d = |f: fn(&PeerTableStats) -> u64| f(stats).saturating_sub(f(&self.last));
        let malformed = d(|s| s.adverts_dropped);
        let bad_signatures = d(|s| s.bad_signatures);
        let stale = d(|s| s.stale_adverts);
        let identity_mismatch = d(|s| s.identity_mismatch);
        let untrusted = d(|s| s.untrusted);
        let host_limit = d(|s| s.host_limit);
        let table_full = d(|s| s.peers_rejected);
        let protocol_errors = d(|s| s.protocol_errors);
        // A flood of forged adverts shows here: unverified (over the checks' budget),
        // unproven entries evicted, and how many got in as repeats meanwhile.
        let unverified = d(|s| s.verify_deferred);
        let evicted = d(|s| s.unproven_evicted);
        let repeats_verified = d(|s| s.verified_repeats);
        let any = unverified
            + evicted
            + malformed
            + bad_signatures
            + stale
            + identity_mismatch
            + untrusted
            + host_limit
            + table_full
            + protocol_errors;
        if any == 0 {
            return false;
        }
        warn!(
            malformed,
            bad_signatures,
            stale,
            identity_mismatch,
            untrusted,
            host_limit,
            table_full,
            protocol_errors,
            unverified,
            evicted,
            repeats_verified,
            "discovery input refused since the last summary (at most one line per {SUMMARY_INTERVAL:?}; totals in Device::stats)"
        );
        self.last = stats.clone();
        self.at = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_line_per_interval_and_only_when_something_grew() {
        let t0 = Instant::now();
        let mut s = Summary::default();
        let mut stats = PeerTableStats::default();
        assert!(!s.tick(t0, &stats), "nothing refused: no line");
        stats.bad_signatures = 5_000;
        assert!(s.tick(t0, &stats));
        stats.bad_signatures = 9_000;
        assert!(
            !s.tick(t0 + Duration::from_secs(9), &stats),
            "within the interval"
        );
        assert!(s.tick(t0 + Duration::from_secs(10), &stats));
        assert!(!s.tick(t0 + Duration::from_secs(30), &stats), "nothing new");
    }
}
