//! Helpers shared by the test modules.

use std::net::SocketAddr;
use std::time::Duration;

use hail_link::{ClientEvent, ClientEvents, ServerEvent, ServerEvents};

/// Upper bound for anything a test waits on (prevents hangs; not a performance check).
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

pub(crate) fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
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
