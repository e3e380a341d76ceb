//! `send_bytes`: owned payloads queued without a copy, among copied messages, over TCP and
//! in memory, plaintext and sealed; their bytes in the queue's bound and the budget.

use bytes::Bytes;
use hail_link::memory::MemoryNetwork;
use hail_link::{
    Budget, Client, ClientConfig, LinkConfig, LinkConfigBuilder, LinkError, SEND_COPY_BELOW,
    Server, ServerConfig, ServerEvent, Transport,
};
use hail_wire::Binary;

use crate::common::{LIMIT, client_connected, client_message, lo, server_event, wait_for};

/// Message `i`'s bytes: its number, then a pattern of its own, `len` bytes in all.
fn body(i: u32, len: usize) -> Vec<u8> {
    let mut b = i.to_be_bytes().to_vec();
    b.extend((0..len.saturating_sub(4)).map(|k| (k as u32).wrapping_mul(31).wrapping_add(i) as u8));
    b.truncate(len.max(4));
    b
}

/// How message `i` is sent, and what the peer must receive.
async fn send_one(conn: &hail_link::Connection, i: u32) -> Vec<u8> {
    match i % 6 {
        // Copied: `send`, `send_parts`.
        0 => {
            let b = body(i, 100);
            conn.send(Bytes::from(b.clone())).await.unwrap();
            b
        }
        1 => {
            let b = body(i, 3000);
            conn.send_parts(&[b"P", &b]).await.unwrap();
            [&b"P"[..], &b].concat()
        }
        // Below the threshold: copied by `send_bytes` too.
        2 => {
            let b = body(i, SEND_COPY_BELOW - 1);
            conn.send_bytes(b"s", Bytes::from(b.clone())).await.unwrap();
            [&b"s"[..], &b].concat()
        }
        // Kept: at the threshold, a few KiB, and longer than a sealed record.
        3 => {
            let b = body(i, SEND_COPY_BELOW);
            conn.send_bytes(b"", Bytes::from(b.clone())).await.unwrap();
            b
        }
        4 => {
            let b = body(i, 1024 + i as usize % 7);
            // `try_send_bytes`, tried again after `Full` with a clone.
            let payload = Bytes::from(b.clone());
            loop {
                match conn.try_send_bytes(b"M", payload.clone()) {
                    Ok(()) => break,
                    Err(LinkError::Full) => tokio::task::yield_now().await,
                    Err(e) => panic!("{e:?}"),
                }
            }
            [&b"M"[..], &b].concat()
        }
        _ => {
            let b = body(i, 150_000);
            conn.send_bytes(b"big", Bytes::from(b.clone()))
                .await
                .unwrap();
            [&b"big"[..], &b].concat()
        }
    }
}

/// Sends 300 messages of every kind from a client to a server; each arrives whole, in
/// the order sent.
async fn arrive_in_order(link: LinkConfig) {
    let (server, mut events) = Server::bind(
        lo(),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let (client, mut cev) = Client::connect(
        server.local_addr(),
        ClientConfig::builder().link(link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    client_connected(&mut cev).await;
    let conn = client.connection().expect("connected");
    const N: u32 = 300;
    let sender = tokio::spawn(async move {
        let mut sent = Vec::new();
        for i in 0..N {
            sent.push(send_one(&conn, i).await);
        }
        sent
    });
    let mut got = Vec::new();
    while got.len() < N as usize {
        if let ServerEvent::Message { msg, .. } = server_event(&mut events).await {
            got.push(msg);
        }
    }
    let sent = tokio::time::timeout(LIMIT, sender).await.unwrap().unwrap();
    for (i, (s, g)) in sent.iter().zip(&got).enumerate() {
        assert!(
            s[..] == g[..],
            "message {i}: sent {} bytes, got {}",
            s.len(),
            g.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_payloads_arrive_whole_and_in_order_among_copied_ones_over_tcp() {
    arrive_in_order(LinkConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_payloads_arrive_whole_and_in_order_on_a_sealed_tcp_link() {
    arrive_in_order(LinkConfig::builder().psk([3; 32]).build().unwrap()).await;
}

#[tokio::test(start_paused = true)]
async fn owned_payloads_arrive_whole_and_in_order_in_memory_plain_and_sealed() {
    let net = MemoryNetwork::new();
    let memory = |b: LinkConfigBuilder| b.transport(Transport::memory(&net)).build().unwrap();
    arrive_in_order(memory(LinkConfig::builder())).await;
    arrive_in_order(memory(LinkConfig::builder().psk([4; 32]))).await;
}

/// A kept payload counts its length in the send queue's bound and in the budget: a peer
/// that reads nothing fills the queue to its bound (then `Full`, the payload refused
/// whole), the budget holds at least what is queued, and everything arrives and the budget
/// is given back once the peer reads.
#[tokio::test(start_paused = true)]
async fn kept_payloads_count_in_the_queue_bound_and_the_budget() {
    const QUEUE: usize = 64 * 1024;
    const PAYLOAD: usize = 8 * 1024;
    let net = MemoryNetwork::new();
    let budget = Budget::new(4 * 1024 * 1024);
    let server_link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .queue_bytes(QUEUE)
        .max_frame_len(PAYLOAD as u32 + 16)
        .budget(budget.clone())
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        "127.0.0.1:7020".parse().unwrap(),
        ServerConfig::builder().link(server_link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    let client_link = LinkConfig::builder()
        .transport(Transport::memory(&net))
        .build()
        .unwrap();
    let (_client, mut cev) = Client::connect(
        server.local_addr(),
        ClientConfig::builder().link(client_link).build().unwrap(),
        Binary,
    )
    .await
    .unwrap();
    client_connected(&mut cev).await;
    let ServerEvent::Connected { id, .. } = server_event(&mut events).await else {
        panic!("connected first")
    };
    let conn = server.connection(id).unwrap();
    // Longer than the frame limit: refused whole, the link goes on.
    assert!(matches!(
        conn.try_send_bytes(b"M", Bytes::from(vec![0; PAYLOAD + 16])),
        Err(LinkError::Encode(_))
    ));
    // The client's events are not read: its reader stops, then the stream, then the
    // server's writer, and the queue fills.
    let mut sent = 0u32;
    let full = loop {
        let payload = Bytes::from(body(sent, PAYLOAD));
        match conn.try_send_bytes(b"M", payload) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(
            sent < 10_000,
            "the queue never filled: kept bytes not counted"
        );
        tokio::task::yield_now().await;
    };
    assert!(matches!(full, LinkError::Full), "{full:?}");
    let queued = conn.queued_bytes();
    assert!(
        queued > QUEUE - PAYLOAD - 16 && queued <= QUEUE + PAYLOAD + 16,
        "queued {queued}"
    );
    assert!(
        budget.in_use() >= queued,
        "the budget holds {} for {queued} queued",
        budget.in_use()
    );
    // Refused whole: nothing more queued.
    assert!(matches!(
        conn.try_send_bytes(b"M", Bytes::from(vec![1; PAYLOAD])),
        Err(LinkError::Full)
    ));
    assert_eq!(conn.queued_bytes(), queued);
    // Now the client reads: every message arrives, whole, in order.
    for i in 0..sent {
        let msg = client_message(&mut cev).await;
        assert!(
            msg[..] == [&b"M"[..], &body(i, PAYLOAD)].concat()[..],
            "message {i}"
        );
    }
    wait_for("the budget given back", || budget.in_use() == 0).await;
}
