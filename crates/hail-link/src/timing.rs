//! Timer logic without IO: heartbeats, reconnection backoff and the authentication
//! penalty. Each takes an `Instant` and answers what to do and when; the tokio layer only
//! sleeps until the answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::{Backoff, Heartbeat};

/// Heartbeat bookkeeping of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    cfg: Heartbeat,
    last_rx: Instant,
    last_tx: Instant,
}

impl Liveness {
    pub(crate) fn new(cfg: Heartbeat, now: Instant) -> Self {
        Self {
            cfg,
            last_rx: now,
            last_tx: now,
        }
    }

    /// Bytes arrived from the peer (or we just finished waiting on our own consumer).
    pub(crate) fn on_receive(&mut self, now: Instant) {
        self.last_rx = self.last_rx.max(now);
    }

    /// We wrote something to the peer.
    pub(crate) fn on_send(&mut self, now: Instant) {
        self.last_tx = self.last_tx.max(now);
    }

    /// When we have to send a heartbeat if nothing else goes out before.
    pub(crate) fn ping_at(&self) -> Instant {
        self.last_tx + self.cfg.interval
    }

    /// When the peer counts as dead if nothing arrives before.
    pub(crate) fn dead_at(&self) -> Instant {
        self.last_rx + self.cfg.dead_after
    }

    pub(crate) fn ping_due(&self, now: Instant) -> bool {
        now >= self.ping_at()
    }

    pub(crate) fn is_dead(&self, now: Instant) -> bool {
        now >= self.dead_at()
    }
}

/// Exponential backoff with jitter: each delay is drawn from the upper half of the
/// current step, steps double up to the maximum.
#[derive(Debug, Clone)]
pub(crate) struct BackoffState {
    cfg: Backoff,
    step: Duration,
}

impl BackoffState {
    pub(crate) fn new(cfg: Backoff) -> Self {
        Self {
            cfg,
            step: cfg.initial,
        }
    }

    /// The next delay; `unit` is a random number in `[0, 1)`.
    pub(crate) fn next_delay(&mut self, unit: f64) -> Duration {
        let step = self.step.min(self.cfg.max);
        self.step = (step * 2).min(self.cfg.max);
        let half = step / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// First authentication penalty: 100 ms, doubling with every failure from the same address.
pub(crate) const PENALTY_BASE: Duration = Duration::from_millis(100);
/// Failures are forgotten after 60 s without another one.
pub(crate) const PENALTY_MEMORY: Duration = Duration::from_secs(60);
/// At most this many addresses are remembered (the oldest is forgotten first).
pub(crate) const PENALTY_ADDRESSES: usize = 4096;

/// Slows down repeated authentication failures from one address.
#[derive(Debug)]
pub(crate) struct AuthPenalty {
    cap: Duration,
    seen: HashMap<IpAddr, (u32, Instant)>,
}

impl AuthPenalty {
    /// `cap` bounds one delay (the server uses half its handshake deadline).
    pub(crate) fn new(cap: Duration) -> Self {
        Self {
            cap,
            seen: HashMap::new(),
        }
    }

    /// How long to hold back a handshake from `ip` before answering it.
    pub(crate) fn delay(&mut self, ip: IpAddr, now: Instant) -> Duration {
        match self.seen.get(&ip) {
            Some(&(n, last)) if now.duration_since(last) < PENALTY_MEMORY && n > 0 => {
                let exp = (n - 1).min(16);
                PENALTY_BASE.saturating_mul(1 << exp).min(self.cap)
            }
            _ => Duration::ZERO,
        }
    }

    /// Records a failed authentication from `ip`.
    pub(crate) fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.seen.len() >= PENALTY_ADDRESSES && !self.seen.contains_key(&ip) {
            self.seen
                .retain(|_, (_, last)| now.duration_since(*last) < PENALTY_MEMORY);
            if self.seen.len() >= PENALTY_ADDRESSES
                && let Some(oldest) = self
                    .seen
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| *k)
            {
                self.seen.remove(&oldest);
            }
        }
        let entry = self.seen.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= PENALTY_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
    }

    /// Records a successful authentication from `ip`.
    pub(crate) fn succeeded(&mut self, ip: IpAddr) {
        self.seen.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn heartbeat_ping_and_dead_times() {
        let t0 = Instant::now();
        let cfg = Heartbeat {
            interval: S,
            dead_after: 3 * S,
        };
        let mut l = Liveness::new(cfg, t0);
        assert!(!l.ping_due(t0));
        assert!(l.ping_due(t0 + S));
        l.on_send(t0 + S);
        assert_eq!(l.ping_at(), t0 + 2 * S);
        assert!(!l.is_dead(t0 + 2 * S));
        assert!(l.is_dead(t0 + 3 * S));
        l.on_receive(t0 + 2 * S);
        assert_eq!(l.dead_at(), t0 + 5 * S);
        // Time never goes backwards.
        l.on_receive(t0);
        assert_eq!(l.dead_at(), t0 + 5 * S);
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let mut b = BackoffState::new(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        });
        let lows: Vec<_> = (0..8).map(|_| b.next_delay(0.0)).collect();
        assert_eq!(lows[0], Duration::from_millis(50));
        assert_eq!(lows[1], Duration::from_millis(100));
        assert_eq!(lows[6], Duration::from_millis(2500));
        assert_eq!(lows[7], Duration::from_millis(2500));
        assert!(b.next_delay(0.999) <= Duration::from_secs(5));
        let mut fresh = BackoffState::new(b.cfg);
        let d = fresh.next_delay(0.5);
        assert_eq!(d, Duration::from_millis(75));
    }

    #[test]
    fn auth_penalty_grows_per_address_and_expires() {
        let t0 = Instant::now();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let mut p = AuthPenalty::new(Duration::from_secs(2));
        assert_eq!(p.delay(a, t0), Duration::ZERO);
        p.failed(a, t0);
        assert_eq!(p.delay(a, t0), PENALTY_BASE);
        p.failed(a, t0);
        p.failed(a, t0);
        assert_eq!(p.delay(a, t0), 4 * PENALTY_BASE);
        for _ in 0..20 {
            p.failed(a, t0);
        }
        assert_eq!(p.delay(a, t0), Duration::from_secs(2));
        assert_eq!(p.delay(b, t0), Duration::ZERO);
        assert_eq!(p.delay(a, t0 + PENALTY_MEMORY), Duration::ZERO);
        p.succeeded(a);
        assert_eq!(p.delay(a, t0), Duration::ZERO);
    }

    #[test]
    fn auth_penalty_table_is_bounded() {
        let t0 = Instant::now();
        let mut p = AuthPenalty::new(S);
        for i in 0..(PENALTY_ADDRESSES as u32 + 10) {
            p.failed(
                IpAddr::from(i.to_be_bytes()),
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(p.seen.len() <= PENALTY_ADDRESSES);
    }
}
