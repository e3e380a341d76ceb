//! The signature-check budget: a flood of adverts with fresh keys (each needs one Ed25519
//! verification, about 74 µs here) costs at most [`VERIFY_PER_SECOND`] checks a second for
//! first sightings plus [`VERIFY_REPEATS_PER_SECOND`] for repeats, and
//! [`VERIFY_PER_SOURCE`] per source address; the rest are dropped unverified and counted
//! ([`PeerTableStats::verify_deferred`](crate::PeerTableStats::verify_deferred)). Adverts equal to one
//! already verified, and replays, cost no check; a real newcomer that loses its advert
//! to a flood still joins by its own dial (a link's hello is checked outside this budget).
//!
//! # Repeats have a share of their own
//!
//! A flood of forged adverts under fresh keys, from spoofed sources (any number of them,
//! or a fixed pool), spends the first-sighting share at once; a real device's adverts
//! lose against it in proportion (1 in 20 at 20,000 forgeries a second). What tells them
//! apart without a signature check is that a device says the same thing again: its start
//! burst (0, 100, 300 ms) and then a beacon a second carry the same signed announce from
//! the same source, while a fresh forgery is never heard twice. So every announce that
//! reaches the budget is noted, unverified, as a (source, key) *sighting* in a sketch of
//! bounded size (two rotating Bloom filters, see [`Sightings`]), and an announce whose pair
//! was sighted before is a *repeat*: it is checked from [`VERIFY_REPEATS_PER_SECOND`],
//! which first sightings never touch. The table then keeps what a repeat brought in
//! longer than what a first sighting did, and gives it a reserve of dials
//! ([`DIAL_RESERVE`](crate::DIAL_RESERVE)).
//!
//! What this does not stop: an attacker that sends each forgery twice, or emulates many
//! stable devices, makes its own repeats and shares that budget with real devices (see
//! docs/security.md, "Floods of forged adverts").

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Signature checks of first sightings per second (announces from a (source, key) pair
/// not sighted before), over every source: 1,000 (about 0.07 of a core here), in bursts
/// of as many.
pub const VERIFY_PER_SECOND: u32 = 1_000;
/// Signature checks of repeats per second (announces whose (source, key) pair was
/// sighted, unverified, within the last one to two seconds), over every source, reserved
/// for them: 250 (about 0.02 of a core here), in bursts of as many. A repeat finding this
/// share spent may still take a first sighting's check.
pub const VERIFY_REPEATS_PER_SECOND: u32 = 250;
/// Signature checks of adverts per second from one source address: 20, in bursts of 40
/// (a source of many devices, like a gateway, announces each about once a second).
/// Loopback is not limited per source (the devices of one machine share it).
pub const VERIFY_PER_SOURCE: u32 = 20;
/// Sources whose budget is tracked: 1,024; past that, the one tracked first is
/// forgotten (it starts again with a full burst, still within the global budget).
const MAX_SOURCES: usize = 1_024;

/// Bits of each of the two sighting filters: 2^20 (128 KiB each, 256 KiB in all,
/// allocated the first time a check is put off; a quiet network never pays for them).
const SIGHTING_BITS: usize = 1 << 20;
/// Bits set and tested per sighting: 5.
const SIGHTING_PROBES: u64 = 5;
/// Sightings noted in one filter before it becomes the older one: 32,768. With the
/// filter at most 1/32 full, a pair never sighted passes for a repeat with a chance of
/// about 1 in 10,000 (about 2 a second in a flood of 20,000): a flood cannot raise it,
/// it only shortens how long a sighting is remembered.
const SIGHTINGS_PER_FILTER: u32 = 32_768;
/// Longest time one filter takes new sightings: 2 s. A sighting is remembered for one
/// to two windows, or for at least 32,768 sightings (1.6 s of a flood of 20,000 a
/// second): longer than a device's start burst and its beacon interval (1 s by default).
const SIGHTING_WINDOW: Duration = Duration::from_secs(2);

/// How an advert got its signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Share {
    /// No check: the very announce was verified before.
    Known,
    /// From the first sightings' share.
    First,
    /// From the repeats' share: its (source, key) pair was sighted before.
    Repeat,
}

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

/// Unverified sightings of (source, key) pairs: two Bloom filters of [`SIGHTING_BITS`],
/// new sightings going into the current one, lookups in both; the older is cleared and
/// becomes the current one after [`SIGHTINGS_PER_FILTER`] sightings or
/// [`SIGHTING_WINDOW`]. Fixed size whatever the flood; no false negatives within the
/// horizon, false positives bounded by the fill (see [`SIGHTINGS_PER_FILTER`]). The hash
/// is salted per table, so a pair that collides cannot be computed offline.
struct Sightings {
    filters: [Box<[u64]>; 2],
    current: usize,
    noted: u32,
    since: Instant,
    salt: u64,
}

impl std::fmt::Debug for Sightings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sightings")
            .field("noted", &self.noted)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

impl Sightings {
    fn new(salt: u64, now: Instant) -> Self {
        let empty = || vec![0u64; SIGHTING_BITS / 64].into_boxed_slice();
        Self {
            filters: [empty(), empty()],
            current: 0,
            noted: 0,
            since: now,
            salt,
        }
    }

    fn hash(&self, lane: u8, source: IpAddr, key: &[u8; 32]) -> u64 {
        let mut h = DefaultHasher::new();
        (self.salt, lane, source, key).hash(&mut h);
        h.finish()
    }

    /// Notes a sighting of `(source, key)`; whether it was sighted before.
    fn sighted(&mut self, source: IpAddr, key: &[u8; 32], now: Instant) -> bool {
        if self.noted >= SIGHTINGS_PER_FILTER
            || now.saturating_duration_since(self.since) >= SIGHTING_WINDOW
        {
            self.current ^= 1;
            self.filters[self.current].fill(0);
            self.noted = 0;
            self.since = now;
        }
        let (h1, h2) = (self.hash(0, source, key), self.hash(1, source, key) | 1);
        let (mut in_current, mut in_older) = (true, true);
        let older = self.current ^ 1;
        for i in 0..SIGHTING_PROBES {
            // Bits are taken modulo a power of two: the cast keeps the low bits.
            #[allow(clippy::cast_possible_truncation)]
            let bit = (h1.wrapping_add(i.wrapping_mul(h2)) as usize) % SIGHTING_BITS;
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            in_older &= self.filters[older][word] & mask != 0;
            in_current &= self.filters[self.current][word] & mask != 0;
            self.filters[self.current][word] |= mask;
        }
        if !in_current {
            self.noted += 1;
        }
        in_current || in_older
    }
}

/// Per-source and global buckets of signature checks, and the sightings that tell a
/// repeat from a first sighting.
#[derive(Debug)]
pub(super) struct VerifyBudget {
    first: Option<Bucket>,
    repeats: Option<Bucket>,
    sources: BTreeMap<IpAddr, Bucket>,
    /// Allocated the first time a check is put off.
    sightings: Option<Sightings>,
    salt: u64,
}

impl VerifyBudget {
    /// A full budget; `salt` keys the sightings' hash.
    pub(super) fn new(salt: u64) -> Self {
        Self {
            first: None,
            repeats: None,
            sources: BTreeMap::new(),
            sightings: None,
            salt,
        }
    }

    /// Takes one check for an announce under `key` from `source`: from the repeats'
    /// share if the pair was sighted before (else, or if that is spent, from the first
    /// sightings'), and from the source's. None when the budgets are spent.
    pub(super) fn spend(&mut self, source: IpAddr, key: &[u8; 32], now: Instant) -> Option<Share> {
        let repeat = self
            .sightings
            .as_mut()
            .is_some_and(|s| s.sighted(source, key, now));
        let share = self.take_global(repeat, source, now);
        if share.is_none() && self.sightings.is_none() {
            // Pressure: from now on every pair is noted (this one too).
            let mut s = Sightings::new(self.salt, now);
            s.sighted(source, key, now);
            self.sightings = Some(s);
        }
        share
    }

    fn take_global(&mut self, repeat: bool, source: IpAddr, now: Instant) -> Option<Share> {
        let refill = |b: &mut Option<Bucket>, per_second: u32| {
            let (rate, burst) = (f64::from(per_second), f64::from(per_second));
            let b = b.get_or_insert(Bucket::full(burst, now));
            b.refill(rate, burst, now);
            b.tokens >= 1.0
        };
        let share = if repeat && refill(&mut self.repeats, VERIFY_REPEATS_PER_SECOND) {
            Share::Repeat
        } else if refill(&mut self.first, VERIFY_PER_SECOND) {
            Share::First
        } else {
            return None;
        };
        // Devices on this machine all come from loopback: they share no source's budget
        // (as they share no host's quota of joined peers).
        if !source.is_loopback() {
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
                return None;
            }
            b.tokens -= 1.0;
        }
        let bucket = if share == Share::Repeat {
            &mut self.repeats
        } else {
            &mut self.first
        };
        if let Some(b) = bucket {
            b.tokens -= 1.0;
        }
        Some(share)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn key(n: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k
    }

    #[test]
    fn one_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = VerifyBudget::new(1);
        let first = (0..100)
            .filter(|&i| b.spend(ip(1), &key(i), t0).is_some())
            .count();
        assert_eq!(first, 40);
        assert!(
            b.spend(ip(2), &key(0), t0).is_some(),
            "another source has its own share"
        );
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            (0..100)
                .filter(|&i| b.spend(lo, &key(i), t0).is_some())
                .count(),
            100,
            "loopback: global only"
        );
        let later = (0..100)
            .filter(|&i| {
                b.spend(ip(1), &key(1000 + i), t0 + Duration::from_millis(500))
                    .is_some()
            })
            .count();
        assert_eq!(later, 10, "20 a second");
    }

    #[test]
    fn all_sources_together_get_the_global_rate() {
        let t0 = Instant::now();
        let mut b = VerifyBudget::new(1);
        let n = (0..5_000u32)
            .filter(|&i| b.spend(ip(i), &key(i), t0).is_some())
            .count();
        assert_eq!(n, VERIFY_PER_SECOND as usize);
        assert!(b.sources.len() <= MAX_SOURCES);
        let t1 = t0 + Duration::from_millis(100);
        let m = (5_000..10_000u32)
            .filter(|&i| b.spend(ip(i), &key(i), t1).is_some())
            .count();
        assert_eq!(m, 100);
    }

    /// With the first sightings' share spent by a flood of fresh pairs, a pair heard
    /// before (and only such a pair) is still checked, from the repeats' share; the
    /// flood's fresh pairs almost never pass for repeats.
    #[test]
    fn a_repeat_is_checked_while_first_sightings_are_spent() {
        let t0 = Instant::now();
        let mut b = VerifyBudget::new(7);
        let real = (ip(1_000_000), key(1_000_000));
        let mut first = 0;
        let mut repeats = 0;
        let mut real_checked = Vec::new();
        // 2 s of 20,000 fresh pairs a second, the real pair once each 100 ms.
        for ms in 0..2_000u32 {
            let now = t0 + Duration::from_millis(u64::from(ms));
            for j in 0..20 {
                let i = ms * 20 + j;
                match b.spend(ip(i), &key(i), now) {
                    Some(Share::First) => first += 1,
                    Some(Share::Repeat) => repeats += 1,
                    Some(Share::Known) | None => {}
                }
            }
            if ms % 100 == 50 {
                real_checked.push(b.spend(real.0, &real.1, now));
            }
        }
        assert!(first <= 1_000 + 2_000, "{first}");
        assert!(repeats <= 20, "{repeats} fresh pairs passed for repeats");
        // The first is checked before the flood spent the first sightings' share (no
        // sighting is noted before a check is first put off), the second is noted and may
        // lose against the flood, every later one is a repeat.
        assert_eq!(real_checked[0], Some(Share::First));
        assert!(
            real_checked[2..].iter().all(|s| *s == Some(Share::Repeat)),
            "{real_checked:?}"
        );
    }

    /// The sketch stays its size, however many pairs it notes.
    #[test]
    fn sightings_are_bounded() {
        let t0 = Instant::now();
        let mut s = Sightings::new(3, t0);
        for i in 0..200_000u32 {
            s.sighted(ip(i), &key(i), t0);
        }
        assert!(s.noted <= SIGHTINGS_PER_FILTER);
        assert!(s.filters.iter().all(|f| f.len() == SIGHTING_BITS / 64));
        assert!(
            s.sighted(ip(199_999), &key(199_999), t0),
            "the last ones are remembered"
        );
    }
}
