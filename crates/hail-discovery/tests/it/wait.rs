//! Waiting on a condition that has no event to wait on: counters and gauges
//! (`Device::stats`, `links`, `dropped_events`). Events and joins are waited on directly
//! (`DeviceEvents::recv`, `Device::wait_for_peer`), never through this.

use std::time::Duration;

/// The longest a test waits on a counter (prevents hangs; not a performance check).
/// Under paused time it is virtual: a test that waits in vain fails at once.
pub(crate) const LIMIT: Duration = Duration::from_secs(10);

/// Waits until `done()` holds, for at most [`LIMIT`]; panics with `what()` (evaluated
/// then, so it can show the counters as they were at the end) otherwise.
pub(crate) async fn wait_for(mut done: impl FnMut() -> bool, what: impl FnOnce() -> String) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {LIMIT:?}: {}",
            what()
        );
        // A polling tick, not a timing assumption: nothing is asserted about how long
        // the wait takes. Real time in the real-socket tests because the counters polled
        // have no notification to wait on; under paused time it moves the virtual clock.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
