//! One device per namespace thread: its runtime, the meeting of two such threads, and a
//! namespace's settings.

use std::sync::mpsc;
use std::time::Duration;

/// A current-thread runtime for one namespace's thread.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Tells the other side whether this one joined, and waits (at most 30 s) to hear the
/// same from it: neither leaves before both have joined (or given up).
pub(crate) async fn meet(tx: &mpsc::Sender<bool>, rx: mpsc::Receiver<bool>, joined: bool) {
    let _ = tx.send(joined);
    tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("waiting for the other side")
        .ok();
}

/// Sets `key=value` with sysctl inside namespace `ns`.
pub(crate) fn sysctl(ns: &str, setting: &str) {
    hail_testsupport::run("ip", &["netns", "exec", ns, "sysctl", "-qw", setting]).expect("sysctl");
}

/// Multicast from a source without a route back passes (reverse path filter off, as on a
/// fresh namespace, made sure of here).
pub(crate) fn no_rp_filter(ns: &str, iface: &str) {
    for conf in ["all", iface] {
        sysctl(ns, &format!("net.ipv4.conf.{conf}.rp_filter=0"));
    }
}
