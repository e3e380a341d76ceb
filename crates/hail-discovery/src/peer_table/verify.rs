//! The signature-check budget: a flood of adverts with fresh keys (each needs one Ed25519
//! verification, about 74 µs here) costs at most [`VERIFY_PER_SECOND`] checks a second in
//! all and [`VERIFY_PER_SOURCE`] per source address; the rest are dropped unverified and
//! counted ([`PeerTableStats::verify_deferred`](crate::PeerTableStats::verify_deferred)). Adverts equal to
//! one already verified, and replays, cost no check; a real newcomer that loses its advert
//! to a flood still joins by its own dial (a link's hello is checked outside this budget).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

/// Signature checks of adverts per second, over every source: 1,000 (about 0.07 of a
/// core here), in bursts of as many.
pub const VERIFY_PER_SECOND: u32 = 1_000;
/// Signature checks of adverts per second from one source address: 20, in bursts of 40
/// (a source of many devices, like a gateway, announces each about once a second).
/// Loopback is not limited per source (the devices of one machine share it).
pub const VERIFY_PER_SOURCE: u32 = 20;
/// Sources whose budget is tracked: 1,024; past that, the one tracked first is
/// forgotten (it starts again with a full burst, still within the global budget).
const MAX_SOURCES: usize = 1_024;

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let since = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + since * rate).min(burst);
        self.at = now;
    }
}

/// Per-source and global buckets of signature checks.
#[derive(Debug, Default)]
pub(super) struct VerifyBudget {
    all: Option<Bucket>,
    sources: BTreeMap<IpAddr, Bucket>,
}

impl VerifyBudget {
    /// Takes one check for an advert from `source`; false when either budget is spent.
    pub(super) fn spend(&mut self, source: IpAddr, now: Instant) -> bool {
        let (rate, burst) = (f64::from(VERIFY_PER_SECOND), f64::from(VERIFY_PER_SECOND));
        let all = self.all.get_or_insert(Bucket::full(burst, now));
        all.refill(rate, burst, now);
        if all.tokens < 1.0 {
            return false;
        }
        // Devices on this machine all come from loopback: they share no source's budget
        // (as they share no host's quota of joined peers).
        if source.is_loopback() {
            all.tokens -= 1.0;
            return true;
        }
        let (rate, burst) = (
            f64::from(VERIFY_PER_SOURCE),
            f64::from(VERIFY_PER_SOURCE * 2),
        );
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_SOURCES {
            self.sources.pop_first();
        }
        let b = self
            .sources
            .entry(source)
            .or_insert(Bucket::full(burst, now));
        b.refill(rate, burst, now);
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        all.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn one_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = VerifyBudget::default();
        let first = (0..100).filter(|_| b.spend(ip(1), t0)).count();
        assert_eq!(first, 40);
        assert!(b.spend(ip(2), t0), "another source has its own share");
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            (0..100).filter(|_| b.spend(lo, t0)).count(),
            100,
            "loopback: global only"
        );
        let later = (0..100)
            .filter(|_| b.spend(ip(1), t0 + Duration::from_millis(500)))
            .count();
        assert_eq!(later, 10, "20 a second");
    }

    #[test]
    fn all_sources_together_get_the_global_rate() {
        let t0 = Instant::now();
        let mut b = VerifyBudget::default();
        let n = (0..5_000u32).filter(|&i| b.spend(ip(i), t0)).count();
        assert_eq!(n, VERIFY_PER_SECOND as usize);
        assert!(b.sources.len() <= MAX_SOURCES);
        let t1 = t0 + Duration::from_millis(100);
        let m = (5_000..10_000u32).filter(|&i| b.spend(ip(i), t1)).count();
        assert_eq!(m, 100);
    }
}
