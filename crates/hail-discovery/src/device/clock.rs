//! The device's clock, in one place: the time the table is fed ([`now`]) and its
//! deadlines on tokio's timers ([`at`]).

use std::time::Instant as StdInstant;

use tokio::time::Instant;

/// Now, as the `std` instant the table takes.
pub(super) fn now() -> StdInstant {
    StdInstant::now()
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
