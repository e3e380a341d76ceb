//! Connection loss: every pending call ends at once, handlers stop, later calls fail fast.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hail_rpc::RpcError;
use tokio::task::JoinSet;

use crate::support::pair;

const LONG: Duration = Duration::from_secs(30);

/// Counts drops: tells how many handler futures were aborted.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_ends_every_pending_call_with_connection_lost() {
    let (a, b, mut link) = pair().await;
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    b.bind("hang", move |(): ()| {
        let guard = DropCount(d.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(guard);
            Ok::<_, String>(())
        }
    })
    .unwrap();

    let mut calls = JoinSet::new();
    for _ in 0..50 {
        let a = a.clone();
        calls.spawn(async move { a.execute::<_, ()>("hang", (), LONG).await });
    }
    let kept = a.send("hang", ()).await.unwrap();
    // Let every request reach its handler.
    tokio::time::timeout(LONG, async {
        while b.running_handlers() < 51 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("51 handlers running");
    assert_eq!(a.in_flight(), 51);

    let killed_at = Instant::now();
    link.kill();
    let mut n = 0;
    while let Some(r) = calls.join_next().await {
        assert_eq!(r.unwrap(), Err(RpcError::ConnectionLost));
        n += 1;
    }
    let took = killed_at.elapsed();
    assert_eq!(n, 50);
    // At once, not at the calls' own timeout (LONG): the bound is generous so a loaded
    // machine cannot fail it, and still far below LONG.
    assert!(
        took < LONG / 6,
        "all pending calls ended {took:?} after the kill"
    );
    assert_eq!(
        a.poll::<()>(kept, LONG).await,
        Err(RpcError::ConnectionLost)
    );

    // Later calls fail fast, and the remote's handlers were aborted.
    assert!(!a.is_connected());
    assert_eq!(
        a.execute::<_, ()>("hang", (), LONG).await,
        Err(RpcError::NotConnected)
    );
    assert_eq!(a.send("hang", ()).await, Err(RpcError::NotConnected));
    assert_eq!(a.notify("hang", ()).await, Err(RpcError::NotConnected));
    tokio::time::timeout(Duration::from_secs(5), async {
        while dropped.load(Ordering::SeqCst) < 51 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("every running handler is aborted when the connection drops");
}
