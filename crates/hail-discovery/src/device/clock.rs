//! The device's one clock: tokio's.
//!
//! The sans-IO [`PeerTable`](crate::PeerTable) takes a `std::time::Instant`; the device
//! reads it from tokio's clock ([`now`]) and sleeps on the same clock until the table's
//! deadlines ([`at`]). Under `tokio::time::pause()` the table, the device's timers and the
//! links' heartbeats therefore all see one paused time.

use std::time::Instant as StdInstant;

use tokio::time::Instant;

/// Now on tokio's clock, as the `std` instant the table takes.
pub(super) fn now() -> StdInstant {
    Instant::now().into_std()
}

/// A table deadline on tokio's clock.
pub(super) fn at(deadline: StdInstant) -> Instant {
    Instant::from_std(deadline)
}

/// Sleeps until `at`; forever without one.
pub(super) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::{at, now, sleep_until};
    use crate::advert::Advert;
    use crate::config::{LocalDevice, PeerTableConfig};
    use crate::peer_table::{Action, PeerTable};

    #[tokio::test(start_paused = true)]
    async fn paused_time_moves_the_tables_clock_and_only_it() {
        let t0 = now();
        // Real time passes here, paused time does not.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(now(), t0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(now() - t0, Duration::from_millis(1500));
        // A deadline converted both ways is the same instant on either clock.
        assert_eq!(at(t0).into_std(), t0);
        assert_eq!(
            at(t0) + Duration::from_millis(1500),
            tokio::time::Instant::now()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_on_the_tables_deadlines_wakes_at_them_in_paused_time() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let identity = std::sync::Arc::new(hail_crypto::Identity::generate().expect("a key"));
        let local = LocalDevice::new(identity, "clock", 4000).with_addresses([ip]);
        let mut table = PeerTable::new(PeerTableConfig::default(), local, 7).expect("valid");
        let t0 = now();
        table.start(t0);
        let announces = |t: &mut PeerTable| {
            std::iter::from_fn(|| t.poll_action())
                .filter(|a| matches!(a, Action::Multicast(Advert::Announce(_))))
                .count()
        };
        assert_eq!(announces(&mut table), 1, "the first announce goes at once");
        // Drive the table as the device does, through the start burst and two beacons:
        // each wake-up comes at the table's deadline on the paused clock (tokio's timer
        // counts whole milliseconds).
        let mut sent = 0;
        while sent < 4 {
            let deadline = table.poll_timeout().expect("running");
            sleep_until(Some(at(deadline))).await;
            let woke = now();
            assert!(woke >= deadline && woke - deadline < Duration::from_millis(1));
            table.handle_timeout(woke);
            sent += announces(&mut table);
        }
        // The rest of the burst (about 100 and 300 ms) and two beacons (1 s ± 100 ms
        // apart), in paused time.
        let elapsed = now() - t0;
        assert!(elapsed > Duration::from_millis(1800) && elapsed < Duration::from_millis(2800));
    }
}
