//! Pipelining under load: thousands of calls in flight, answered out of order, and many
//! clients on one server.

use std::time::Duration;

use hail_link::ServerConfig;
use hail_rpc::{RpcClient, RpcConfig, RpcServer};
use rand::Rng;
use tokio::task::JoinSet;

use crate::support::{Gate, fast_client, localhost, pair};

const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_calls_answered_out_of_order() {
    let (client, server, _link) = pair().await;
    server
        .bind("delay_echo", |(i, delay): (u32, u64)| async move {
            // A handler that yields is not done at its first poll: it finishes in a task
            // of its own, after the ones that did not yield.
            for _ in 0..delay {
                tokio::task::yield_now().await;
            }
            Ok::<_, String>(i)
        })
        .unwrap();
    let mut rng = rand::rng();
    let mut calls = JoinSet::new();
    for i in 0..10_000u32 {
        let delay: u64 = rng.random_range(0..4);
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
        "random yields answer out of order"
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
async fn hundred_clients_call_one_server_and_the_server_calls_them() {
    let (server, _events) =
        RpcServer::listen(localhost(), ServerConfig::default(), RpcConfig::default())
            .await
            .unwrap();
    server
        .bind("square", |x: u64| async move { Ok::<_, String>(x * x) })
        .unwrap();
    let mut clients = Vec::new();
    for c in 0..100u64 {
        let client = RpcClient::connect(server.local_addr(), fast_client(), RpcConfig::default())
            .await
            .unwrap();
        client
            .bind("who", move |(): ()| async move { Ok::<_, String>(c) })
            .unwrap();
        clients.push(client);
    }
    let mut calls = JoinSet::new();
    for (c, client) in clients.iter().enumerate() {
        let peer = client.peer().clone();
        calls.spawn(async move {
            for i in 0..20u64 {
                let x = c as u64 * 1000 + i;
                let y: u64 = peer.execute("square", x, T).await.unwrap();
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

    // The server calls each client by its ClientId.
    let ids = server.clients();
    assert_eq!(ids.len(), 100);
    let mut answers = Vec::new();
    for id in ids {
        let peer = server.peer(id).expect("a connected client");
        answers.push(peer.execute::<_, u64>("who", (), T).await.unwrap());
    }
    answers.sort_unstable();
    assert!(answers.into_iter().eq(0..100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_limit_makes_callers_wait() {
    use futures_util::FutureExt;

    let (client, server, _link) = crate::support::pair_with(
        RpcConfig::builder().max_in_flight(2).build(),
        RpcConfig::default(),
    )
    .await;
    let gate = Gate::bind(server.handlers(), "gated");
    let mut calls = JoinSet::new();
    for i in 0..2u32 {
        let client = client.clone();
        calls.spawn(async move { client.execute::<_, u32>("gated", i, T).await });
    }
    gate.started(2).await;
    // Both slots are taken: a third caller, polled once, waits for room and sends nothing.
    let third = client.execute::<_, u32>("gated", 2u32, T);
    tokio::pin!(third);
    assert!(third.as_mut().now_or_never().is_none());
    assert_eq!(client.in_flight(), 2);
    assert_eq!(server.running_handlers(), 2);
    gate.open(3);
    let mut results = vec![third.await.unwrap()];
    while let Some(r) = calls.join_next().await {
        results.push(r.unwrap().unwrap());
    }
    results.sort_unstable();
    assert_eq!(results, [0, 1, 2]);
}
