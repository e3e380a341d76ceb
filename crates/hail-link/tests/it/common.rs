//! Helpers shared by the test modules.

use std::net::SocketAddr;
use std::time::Duration;

use hail_crypto::{GroupKey, KdfParams};
use hail_link::{ClientEvent, ClientEvents, ServerEvent, ServerEvents};

/// Upper bound for anything a test waits on (prevents hangs; not a performance check).
/// Under paused time it is virtual: a test that waits in vain fails at once.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// The plaintext hello a hail client sends first (see docs/wire-format.md).
pub(crate) const HELLO: &[u8] = b"\x00\x00\x00\x06\x03HAIL\x01";
/// The server's welcome.
pub(crate) const WELCOME: &[u8] = b"\x00\x00\x00\x02\x04\x01";

/// True when a virtual duration is `want`, up to the timer's 1 ms granularity (for
/// paused-time tests only: nothing real is measured).
pub(crate) fn within(elapsed: Duration, want: Duration) -> bool {
    elapsed >= want && elapsed <= want + Duration::from_millis(2)
}

/// A group key for `passphrase`, derived with the fewest KDF iterations (tests only).
pub(crate) fn key(passphrase: &str) -> GroupKey {
    let params = KdfParams::default().iterations(KdfParams::MIN_ITERATIONS);
    GroupKey::derive_with(passphrase, "greenhouse", params).unwrap()
}

pub(crate) fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Waits until `done()` holds, for at most [`LIMIT`]. For what has no event to wait on:
/// counters, and a closed listener's port coming free.
pub(crate) async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {LIMIT:?}"
        );
        // A polling tick, not a timing assumption: nothing is asserted about how long it
        // takes. Real time in the real-socket tests because the counters polled have no
        // notification to wait on; under paused time it moves the virtual clock by 1 ms.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub(crate) async fn server_event<T>(events: &mut ServerEvents<T>) -> ServerEvent<T> {
    tokio::time::timeout(LIMIT, events.recv())
        .await
        .expect("server event in time")
        .expect("server event stream open")
}

pub(crate) async fn client_event<T>(events: &mut ClientEvents<T>) -> ClientEvent<T> {
    tokio::time::timeout(LIMIT, events.recv())
        .await
        .expect("client event in time")
        .expect("client event stream open")
}

/// The next client event, which must be `Connected`; returns the server's address.
pub(crate) async fn client_connected<T: std::fmt::Debug>(
    events: &mut ClientEvents<T>,
) -> SocketAddr {
    match client_event(events).await {
        ClientEvent::Connected { addr, .. } => addr,
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// The next client message, skipping connection events.
pub(crate) async fn client_message<T>(events: &mut ClientEvents<T>) -> T {
    loop {
        if let ClientEvent::Message(m) = client_event(events).await {
            return m;
        }
    }
}

/// This process's resident set size in bytes (Linux).
pub(crate) fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}
