//! Pipelining under load: thousands of calls in flight, answered out of order, and many
//! clients on one server.

use std::time::Duration;

use hail_rpc::{Handlers, RpcConfig, memory};
use rand::Rng;
use tokio::task::JoinSet;

use crate::support::pair;

const T: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn ten_thousand_pipelined_calls_answered_out_of_order() {
    let (client, server, _link) = pair();
    server
        .bind("delay_echo", |(i, delay_ms): (u32, u64)| async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok::<_, String>(i)
        })
        .unwrap();
    let mut rng = rand::rng();
    let mut calls = JoinSet::new();
    for i in 0..10_000u32 {
        let delay: u64 = rng.random_range(0..50);
        let client = client.clone();
        calls.spawn(async move {
            let got: u32 = client.execute("delay_echo", (i, delay), T).await.unwrap();
            assert_eq!(got, i, "every result is matched to its call");
            i
        });
    }
    let mut order = Vec::with_capacity(10_000);
    while let Some(r) = calls.join_next().await {
        order.push(r.unwrap());
    }
    assert_eq!(order.len(), 10_000);
    assert!(
        order.windows(2).any(|w| w[0] > w[1]),
        "random delays answer out of order"
    );
    order.sort_unstable();
    assert!(order.iter().copied().eq(0..10_000));
    assert_eq!(client.in_flight(), 0);
    assert_eq!(
        server.stats().busy,
        0,
        "the queue absorbs the in-flight limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clients_call_one_server() {
    // One handler table serves every client, as on a server.
    let handlers = Handlers::new();
    handlers
        .bind("square", |x: u64| async move { Ok::<_, String>(x * x) })
        .unwrap();
    let mut links = Vec::new();
    let mut calls = JoinSet::new();
    for c in 0..100u64 {
        let (client, _server, link) = memory::pair_with_handlers(
            (RpcConfig::default(), Handlers::new()),
            (RpcConfig::default(), handlers.clone()),
        );
        links.push(link);
        calls.spawn(async move {
            for i in 0..20u64 {
                let x = c * 1000 + i;
                let y: u64 = client.execute("square", x, T).await.unwrap();
                assert_eq!(y, x * x);
            }
            c
        });
    }
    let mut done = Vec::new();
    while let Some(r) = calls.join_next().await {
        done.push(r.unwrap());
    }
    done.sort_unstable();
    assert!(done.into_iter().eq(0..100));
}
