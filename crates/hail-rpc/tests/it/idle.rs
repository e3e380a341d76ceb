//! `RpcPeer::idle`: resolves when nothing is in flight, running or queued, woken by the
//! peer itself (on the paused clock, a wait that is never woken would time out instead).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hail_rpc::{RpcConfig, RpcError};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::support::{Gate, memory_pair_with};

const T: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn idle_waits_for_calls_handlers_and_the_queue() {
    let caller = RpcConfig::builder()
        .keep_replies_for(Duration::from_secs(10))
        .build();
    let callee = RpcConfig::builder().max_concurrent_handlers(1).build();
    let (a, b, mut link) = memory_pair_with(caller, callee);
    tokio::time::timeout(T, async { tokio::join!(a.idle(), b.idle()) })
        .await
        .expect("fresh peers are idle at once");

    let gate = Gate::bind(b.handlers(), "gated");
    let started = Arc::new(Semaphore::new(0));
    let s = started.clone();
    b.bind("never", move |(): ()| {
        let started = s.clone();
        async move {
            started.add_permits(1);
            std::future::pending::<()>().await;
            Ok::<_, String>(())
        }
    })
    .unwrap();

    // Two calls: one runs on `b`, the other waits in its queue.
    let first = a.send("gated", 1u32).await.unwrap();
    let second = a.send("gated", 2u32).await.unwrap();
    gate.started(1).await;
    let a_idle = a.idle();
    let b_idle = b.idle();
    tokio::pin!(a_idle, b_idle);
    assert!(
        a_idle.as_mut().now_or_never().is_none(),
        "two calls in flight"
    );
    assert!(
        b_idle.as_mut().now_or_never().is_none(),
        "one running, one queued"
    );
    gate.open(1);
    gate.started(1).await;
    assert_eq!(b.queued_requests(), 0);
    assert!(
        b_idle.as_mut().now_or_never().is_none(),
        "the second now runs"
    );
    gate.open(1);
    tokio::time::timeout(T, b_idle)
        .await
        .expect("b is idle once both handlers ended");
    tokio::time::timeout(T, a_idle)
        .await
        .expect("a is idle once both replies arrived");
    // Kept replies do not count.
    assert_eq!(a.poll::<u32>(first, T).await, Ok(1));
    assert_eq!(a.poll::<u32>(second, T).await, Ok(2));

    // An unanswered `send` counts until it expires (and its cancel frees `b` too).
    let waiting_since = Instant::now();
    let unanswered = a.send("never", ()).await.unwrap();
    started.acquire().await.unwrap().forget();
    tokio::time::timeout(Duration::from_secs(60), a.idle())
        .await
        .expect("a is idle once the send expires");
    assert_eq!(waiting_since.elapsed(), Duration::from_secs(10));
    assert_eq!(a.poll::<()>(unanswered, T).await, Err(RpcError::Expired));
    tokio::time::timeout(T, b.idle())
        .await
        .expect("the cancel aborts b's handler");

    // A lost connection ends every call and handler: both sides are idle.
    let call = {
        let a = a.clone();
        tokio::spawn(async move {
            a.execute::<_, ()>("never", (), Duration::from_secs(60))
                .await
        })
    };
    started.acquire().await.unwrap().forget();
    let a_idle = a.idle();
    tokio::pin!(a_idle);
    assert!(a_idle.as_mut().now_or_never().is_none());
    let killed_at = Instant::now();
    link.kill();
    tokio::time::timeout(T, async { tokio::join!(a_idle, b.idle()) })
        .await
        .expect("both idle after the kill");
    assert_eq!(Instant::now(), killed_at, "at once");
    assert_eq!(call.await.unwrap(), Err(RpcError::ConnectionLost));
}
