//! Pipelining under load: thousands of calls in flight, answered out of order, and many
//! clients on one server.

use std::time::Duration;

use hail_link::ServerConfig;
use hail_rpc::{RpcClient, RpcConfig, RpcServer};
use rand::Rng;
use tokio::task::JoinSet;

use crate::support::{fast_client, localhost, pair};

const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pipelined_calls_answered_out_of_order() {
    let (client, server, _link) = pair().await;
    server
        .bind("delay_echo", |(i, delay_ms): (u32, u64)| async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
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
async fn hundred_clients_call_one_server_and_the_server_calls_them() {
    let server = RpcServer::listen(localhost(), ServerConfig::default(), RpcConfig::default())
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
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    let (client, server, _link) =
        crate::support::pair_with(RpcConfig::default().max_in_flight(2), RpcConfig::default())
            .await;
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    server
        .bind("gated", move |i: u32| {
            let g = g.clone();
            async move {
                g.acquire().await.map_err(|e| e.to_string())?.forget();
                Ok::<_, String>(i)
            }
        })
        .unwrap();
    let mut calls = JoinSet::new();
    for i in 0..3u32 {
        let client = client.clone();
        calls.spawn(async move { client.execute::<_, u32>("gated", i, T).await });
    }
    tokio::time::timeout(T, async {
        while server.running_handlers() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("two calls reach the server");
    // The third caller waits for room: only two are in flight, only two handlers run.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(client.in_flight(), 2);
    assert_eq!(server.running_handlers(), 2);
    gate.add_permits(3);
    let mut results = Vec::new();
    while let Some(r) = calls.join_next().await {
        results.push(r.unwrap().unwrap());
    }
    results.sort_unstable();
    assert_eq!(results, [0, 1, 2]);
}
