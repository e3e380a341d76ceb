//! One device per namespace thread: its runtime, and the meeting of two such threads.

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
