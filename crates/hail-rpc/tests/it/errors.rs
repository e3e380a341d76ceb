//! Every way a call can fail, and that the connection lives on after each.

use std::sync::Arc;
use std::time::Duration;

use hail_rpc::{BindError, MAX_METHOD_NAME_LEN, Opcode, RpcConfig, RpcError};
use tokio::sync::Notify;

use crate::support::{memory_pair, memory_pair_with, pair, pair_with};

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn unknown_methods() {
    let (a, _b, _link) = pair().await;
    assert_eq!(
        a.execute::<_, ()>(Opcode(77), (), T).await,
        Err(RpcError::UnknownMethod(Opcode(77).into()))
    );
    let err = a.execute::<_, ()>("missing", (), T).await.unwrap_err();
    assert_eq!(err, RpcError::UnknownMethod("missing".into()));
    assert!(err.handler_did_not_run());
    assert_eq!(err.to_string(), "the remote has no handler for \"missing\"");
}

#[tokio::test]
async fn wrong_argument_types_are_reported_at_the_caller() {
    let (a, b, _link) = pair().await;
    b.bind(
        "add",
        |(x, y): (i32, i32)| async move { Ok::<_, String>(x + y) },
    )
    .unwrap();
    // A missing argument (TCPTalks raised these at the sender; so do we).
    let err = a.execute::<_, i32>("add", (1i32,), T).await.unwrap_err();
    assert!(matches!(err, RpcError::BadArguments(_)), "{err:?}");
    // An argument of the wrong type.
    let err = a.execute::<_, i32>("add", "seven", T).await.unwrap_err();
    assert!(matches!(err, RpcError::BadArguments(_)), "{err:?}");
    // A result of another type than expected.
    let err = a
        .execute::<_, String>("add", (1i32, 2i32), T)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Decode(_)), "{err:?}");
    // And the connection is fine.
    assert_eq!(a.execute::<_, i32>("add", (1i32, 2i32), T).await, Ok(3));
}

#[tokio::test]
async fn handler_errors_carry_their_message() {
    let (a, b, _link) = pair().await;
    b.bind("div", |(x, y): (i32, i32)| async move {
        x.checked_div(y)
            .ok_or_else(|| format!("cannot divide {x} by zero"))
    })
    .unwrap();
    assert_eq!(
        a.execute::<_, i32>("div", (1, 0), T).await,
        Err(RpcError::Handler("cannot divide 1 by zero".into()))
    );
    assert_eq!(a.execute::<_, i32>("div", (9, 3), T).await, Ok(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panics_never_take_the_connection_down() {
    let (a, b, _link) = pair().await;
    b.bind("boom", |n: u32| async move {
        if n > 0 {
            panic!("handler bug for {n}");
        }
        Ok::<_, String>(n)
    })
    .unwrap();
    // A panic in the closure itself, before any future exists.
    b.bind(
        "sync_boom",
        |n: u32| -> std::future::Ready<Result<u32, String>> { panic!("sync panic {n}") },
    )
    .unwrap();
    b.bind_blocking("blocking_boom", |n: u32| -> Result<u32, String> {
        panic!("blocking panic {n}")
    })
    .unwrap();
    for method in ["boom", "sync_boom", "blocking_boom"] {
        assert_eq!(
            a.execute::<_, u32>(method, 1u32, T).await,
            Err(RpcError::HandlerPanicked),
            "{method}"
        );
    }
    // The next call works, on the same connection.
    assert_eq!(a.execute::<_, u32>("boom", 0u32, T).await, Ok(0));
    assert!(a.is_connected() && b.is_connected());
}

/// Notifies when dropped: tells that a handler's future was aborted.
struct DropSignal(Arc<Notify>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_the_remote_handler() {
    let (a, b, _link) = memory_pair();
    let aborted = Arc::new(Notify::new());
    let signal = aborted.clone();
    b.bind("slow", move |(): ()| {
        let guard = DropSignal(signal.clone());
        async move {
            std::future::pending::<()>().await;
            drop(guard);
            Ok::<_, String>(())
        }
    })
    .unwrap();
    assert_eq!(
        a.execute::<_, ()>("slow", (), Duration::from_millis(100))
            .await,
        Err(RpcError::Timeout)
    );
    // The cancel reaches the remote, which aborts the handler.
    tokio::time::timeout(Duration::from_secs(1), aborted.notified())
        .await
        .expect("handler aborted after the cancel");
    assert_eq!(b.stats().cancels, 1);
    assert_eq!(a.in_flight(), 0);

    // A dropped execute cancels too.
    let call = a.execute::<_, ()>("slow", (), T);
    let _ = tokio::time::timeout(Duration::from_millis(50), call).await;
    tokio::time::timeout(Duration::from_secs(1), aborted.notified())
        .await
        .expect("handler aborted after the drop");
    assert_eq!(b.stats().cancels, 2);
}

#[tokio::test]
async fn binding_rules() {
    let (a, _b, _link) = pair().await;
    a.bind("x", |(): ()| async { Ok::<_, String>(()) }).unwrap();
    assert_eq!(
        a.bind("x", |(): ()| async { Ok::<_, String>(()) }),
        Err(BindError::AlreadyBound("x".into()))
    );
    a.bind(Opcode(5), |(): ()| async { Ok::<_, String>(()) })
        .unwrap();
    assert_eq!(
        a.bind_blocking(Opcode(5), |(): ()| Ok::<_, String>(())),
        Err(BindError::AlreadyBound(Opcode(5).into()))
    );
    assert_eq!(
        a.bind(Opcode::PING, |(): ()| async { Ok::<_, String>(()) }),
        Err(BindError::Reserved(Opcode::PING))
    );
    let long = "n".repeat(MAX_METHOD_NAME_LEN + 1);
    assert_eq!(
        a.bind(long, |(): ()| async { Ok::<_, String>(()) }),
        Err(BindError::NameTooLong { len: 256 })
    );
    assert!(a.unbind("x"));
    a.bind("x", |(): ()| async { Ok::<_, String>(()) }).unwrap();
}

#[tokio::test]
async fn kept_replies_are_evicted_by_count() {
    let config = RpcConfig::builder().max_kept_replies(2).build();
    let (a, b, _link) = pair_with(config, RpcConfig::default()).await;
    b.bind("id", |x: u32| async move { Ok::<_, String>(x) })
        .unwrap();
    let mut rs = Vec::new();
    for i in 0..4u32 {
        rs.push(a.send("id", i).await.unwrap());
    }
    // Wait until every reply has arrived (all four sent, two kept, two evicted).
    tokio::time::timeout(T, a.idle())
        .await
        .expect("every reply arrives");
    assert_eq!(a.poll::<u32>(rs[0], T).await, Err(RpcError::Expired));
    assert_eq!(a.poll::<u32>(rs[1], T).await, Err(RpcError::Expired));
    assert_eq!(a.poll::<u32>(rs[2], T).await, Ok(2));
    assert_eq!(a.poll::<u32>(rs[3], T).await, Ok(3));
}

#[tokio::test(start_paused = true)]
async fn kept_replies_are_evicted_by_age_and_never_hang_poll() {
    let config = RpcConfig::builder()
        .keep_replies_for(Duration::from_secs(10))
        .build();
    let (a, b, _link) = memory_pair_with(config, RpcConfig::default());
    b.bind("id", |x: u32| async move { Ok::<_, String>(x) })
        .unwrap();
    b.bind("never", |(): ()| async {
        std::future::pending::<()>().await;
        Ok::<_, String>(())
    })
    .unwrap();
    let answered = a.send("id", 7u32).await.unwrap();
    let unanswered = a.send("never", ()).await.unwrap();
    while a.in_flight() > 1 {
        tokio::task::yield_now().await;
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(a.poll::<u32>(answered, T).await, Err(RpcError::Expired));
    assert_eq!(a.poll::<()>(unanswered, T).await, Err(RpcError::Expired));
    assert_eq!(a.in_flight(), 0, "an expired send no longer holds a slot");

    // A poll waiting on a send that expires ends with Expired, not at its own timeout.
    let r = a.send("never", ()).await.unwrap();
    let started = tokio::time::Instant::now();
    let res = a.poll::<()>(r, Duration::from_secs(3600)).await;
    assert_eq!(res, Err(RpcError::Expired));
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(a.in_flight(), 0);
}

#[tokio::test]
async fn a_full_handler_queue_answers_busy() {
    let callee = RpcConfig::builder()
        .max_concurrent_handlers(1)
        .max_queued_requests(1)
        .build();
    let (a, b, _link) = pair_with(RpcConfig::default(), callee).await;
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    b.bind("wait", move |(): ()| {
        let g = g.clone();
        async move {
            g.notified().await;
            Ok::<_, String>(())
        }
    })
    .unwrap();
    let first = a.send("wait", ()).await.unwrap(); // runs
    let second = a.send("wait", ()).await.unwrap(); // queued
    let third = a.send("wait", ()).await.unwrap(); // refused
    assert_eq!(a.poll::<()>(third, T).await, Err(RpcError::Busy));
    assert_eq!(b.stats().busy, 1);
    gate.notify_one();
    assert_eq!(a.poll::<()>(first, T).await, Ok(()));
    gate.notify_one();
    assert_eq!(a.poll::<()>(second, T).await, Ok(()));
}

#[tokio::test]
async fn polling_rules() {
    let (a, b, _link) = pair().await;
    b.bind("never", |(): ()| async {
        std::future::pending::<()>().await;
        Ok::<_, String>(())
    })
    .unwrap();
    let r = a.send("never", ()).await.unwrap();
    // A poll that times out leaves the call in flight.
    assert_eq!(
        a.poll::<()>(r, Duration::from_millis(10)).await,
        Err(RpcError::Timeout)
    );
    assert_eq!(a.in_flight(), 1);
    // Two polls at once: the second is refused instead of waiting forever.
    let first = a.poll::<()>(r, Duration::from_millis(50));
    let second = async {
        tokio::task::yield_now().await;
        a.poll::<()>(r, Duration::from_millis(50)).await
    };
    let (x, y) = tokio::join!(first, second);
    assert_eq!(x, Err(RpcError::Timeout));
    assert_eq!(y, Err(RpcError::UnknownRetCode(r)));
    // Never issued.
    let bogus = hail_rpc::RetCode(999_999);
    assert_eq!(
        a.poll::<()>(bogus, T).await,
        Err(RpcError::UnknownRetCode(bogus))
    );
}

#[tokio::test]
async fn calls_without_a_connection_fail_fast_and_say_why() {
    use hail_rpc::{Disconnect, RpcPeer};
    let (peer, driver) = RpcPeer::new(RpcConfig::default());
    // Never connected.
    assert_eq!(
        peer.execute::<_, ()>("x", (), T).await,
        Err(RpcError::NotConnected)
    );
    // The link reported a failed authentication: calls say so until a connection is up.
    driver.disconnected(Disconnect::AuthFailed);
    assert_eq!(
        peer.execute::<_, ()>("x", (), T).await,
        Err(RpcError::AuthFailed)
    );
    assert_eq!(peer.send("x", ()).await, Err(RpcError::AuthFailed));
    assert!(RpcError::AuthFailed.handler_did_not_run());
    // The driver is gone: nothing can reconnect this handle, and calls say so.
    drop(driver);
    assert_eq!(peer.notify("x", ()).await, Err(RpcError::Stale));
    assert_eq!(
        peer.execute::<_, ()>("x", (), T).await,
        Err(RpcError::Stale)
    );
    assert_eq!(peer.send("x", ()).await, Err(RpcError::Stale));
    assert!(RpcError::Stale.handler_did_not_run());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_in_tasks_of_their_own_behave_the_same() {
    let spawned = RpcConfig::builder().inline_first_poll(false).build();
    let (a, b, _link) = pair_with(RpcConfig::default(), spawned).await;
    b.bind("half", |x: u32| async move {
        if x % 2 == 1 {
            return Err(format!("{x} is odd"));
        }
        if x == 0 {
            panic!("zero");
        }
        Ok(x / 2)
    })
    .unwrap();
    assert_eq!(a.execute::<_, u32>("half", 8u32, T).await, Ok(4));
    assert_eq!(
        a.execute::<_, u32>("half", 3u32, T).await,
        Err(RpcError::Handler("3 is odd".into()))
    );
    assert_eq!(
        a.execute::<_, u32>("half", 0u32, T).await,
        Err(RpcError::HandlerPanicked)
    );
    assert_eq!(
        a.execute::<_, u32>("missing", 0u32, T).await,
        Err(RpcError::UnknownMethod("missing".into()))
    );
    assert_eq!(a.execute::<_, u32>("half", 2u32, T).await, Ok(1));
}

#[tokio::test(start_paused = true)]
async fn unanswered_sends_do_not_hold_slots_forever() {
    let config = RpcConfig::builder()
        .max_in_flight(2)
        .keep_replies_for(Duration::from_secs(10))
        .build();
    let (a, b, _link) = memory_pair_with(config, RpcConfig::default());
    b.bind("never", |(): ()| async {
        std::future::pending::<()>().await;
        Ok::<_, String>(())
    })
    .unwrap();
    b.bind("id", |x: u32| async move { Ok::<_, String>(x) })
        .unwrap();
    // Two sends nobody answers take every slot.
    let first = a.send("never", ()).await.unwrap();
    a.send("never", ()).await.unwrap();
    assert_eq!(a.in_flight(), 2);
    // An execute waits for room, and gets it when the sends expire.
    let started = tokio::time::Instant::now();
    assert_eq!(
        a.execute::<_, u32>("id", 7u32, Duration::from_secs(60))
            .await,
        Ok(7)
    );
    // Woken when the sends expire, not by a periodic check.
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(a.poll::<()>(first, T).await, Err(RpcError::Expired));
}
