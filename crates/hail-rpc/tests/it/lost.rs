//! Connection loss: every pending call ends at once, handlers stop, later calls fail fast.

use std::sync::Arc;
use std::time::Duration;

use hail_rpc::RpcError;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::memory_pair;

const LONG: Duration = Duration::from_secs(30);

/// Adds a permit when dropped: counts the handler futures that were aborted.
struct DropCount(Arc<Semaphore>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

// In memory on the paused clock: the clock moves only when every task waits on a timer,
// so "at once, not at the calls' timeout" is exact: no time passes at all.
#[tokio::test(start_paused = true)]
async fn killed_connection_ends_every_pending_call_with_connection_lost() {
    let (a, b, mut link) = memory_pair();
    let started = Arc::new(Semaphore::new(0));
    let dropped = Arc::new(Semaphore::new(0));
    let (s, d) = (started.clone(), dropped.clone());
    b.bind("hang", move |(): ()| {
        let (started, guard) = (s.clone(), DropCount(d.clone()));
        async move {
            started.add_permits(1);
            std::future::pending::<()>().await;
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
    tokio::time::timeout(LONG, started.acquire_many(51))
        .await
        .expect("every request reaches its handler")
        .unwrap()
        .forget();
    assert_eq!(a.in_flight(), 51);
    assert_eq!(b.running_handlers(), 51);

    let killed_at = Instant::now();
    link.kill();
    let mut n = 0;
    while let Some(r) = calls.join_next().await {
        assert_eq!(r.unwrap(), Err(RpcError::ConnectionLost));
        n += 1;
    }
    assert_eq!(n, 50);
    assert_eq!(
        Instant::now(),
        killed_at,
        "every pending call ended at once, not at its timeout"
    );
    assert_eq!(
        a.poll::<()>(kept, LONG).await,
        Err(RpcError::ConnectionLost)
    );

    // Later calls fail fast (the in-memory link cannot come back: its driver is gone, so
    // the handle is stale), and the remote's handlers were aborted.
    assert!(!a.is_connected());
    assert_eq!(
        a.execute::<_, ()>("hang", (), LONG).await,
        Err(RpcError::Stale)
    );
    assert_eq!(a.send("hang", ()).await, Err(RpcError::Stale));
    assert_eq!(a.notify("hang", ()).await, Err(RpcError::Stale));
    tokio::time::timeout(LONG, dropped.acquire_many(51))
        .await
        .expect("every running handler is aborted when the connection drops")
        .unwrap()
        .forget();
    assert_eq!(Instant::now(), killed_at);
    assert_eq!(b.running_handlers(), 0);
}
