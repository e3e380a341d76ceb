//! Many clients: broadcast order, targeted sends, ids.

use std::collections::HashMap;

use bytes::Bytes;
use hail_link::{Client, ClientConfig, LinkConfig, Server, ServerConfig, ServerEvent};
use hail_wire::{Binary, Json, Text};

use crate::common::{LIMIT, client_connected, client_message, lo, server_event, wait_for};

const CLIENTS: usize = 100;
const MESSAGES: u32 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_all_in_order_and_send_to_only_its_target() {
    let (server, mut events) = Server::bind(lo(), ServerConfig::default(), Binary)
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut clients = Vec::new();
    let mut client_events = Vec::new();
    for _ in 0..CLIENTS {
        let (c, ev) = Client::connect(addr, ClientConfig::default(), Binary)
            .await
            .unwrap();
        clients.push(c);
        client_events.push(ev);
    }
    // Connected events: one per client, the address is the client's local address.
    let mut id_of = HashMap::new();
    while id_of.len() < CLIENTS {
        if let ServerEvent::Connected { id, addr, .. } = server_event(&mut events).await {
            assert!(id_of.insert(addr, id).is_none());
        }
    }
    let ids: Vec<_> = clients
        .iter()
        .map(|c| id_of[&c.connection().unwrap().local_addr()])
        .collect();
    assert_eq!(server.clients().len(), CLIENTS);

    // Each client tells us who it is; the event's id must be the one we mapped.
    for (i, c) in clients.iter().enumerate() {
        c.send(Bytes::from(format!("from {i}"))).await.unwrap();
    }
    for _ in 0..CLIENTS {
        match server_event(&mut events).await {
            ServerEvent::Message { id, msg } => {
                let i: usize = std::str::from_utf8(&msg[5..]).unwrap().parse().unwrap();
                assert_eq!(id, ids[i], "message of client {i} carries its id");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    let target = 37;
    let readers: Vec<_> = client_events
        .into_iter()
        .enumerate()
        .map(|(i, mut ev)| {
            tokio::spawn(async move {
                for n in 0..MESSAGES {
                    let m = client_message(&mut ev).await;
                    assert_eq!(&m[..], &n.to_be_bytes()[..], "client {i} in order");
                }
                let next = client_message(&mut ev).await;
                if i == target {
                    assert_eq!(&next[..], b"only you");
                    assert_eq!(&client_message(&mut ev).await[..], b"end");
                } else {
                    assert_eq!(&next[..], b"end", "client {i} got nothing else");
                }
            })
        })
        .collect();
    for n in 0..MESSAGES {
        let report = server
            .broadcast(Bytes::copy_from_slice(&n.to_be_bytes()))
            .unwrap();
        assert_eq!(report.queued, CLIENTS);
        assert!(report.slow.is_empty());
    }
    server
        .send_to(ids[target], Bytes::from_static(b"only you"))
        .await
        .unwrap();
    server.broadcast(Bytes::from_static(b"end")).unwrap();
    for r in readers {
        tokio::time::timeout(LIMIT, r).await.unwrap().unwrap();
    }
    assert_eq!(server.stats().slow_disconnects, 0);
}

#[tokio::test]
async fn typed_payloads_and_ipv6() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    drop(probe);
    let addr = "[::1]:0".parse().unwrap();
    let (server, mut events) = Server::bind(addr, ServerConfig::default(), Text)
        .await
        .unwrap();
    let (client, mut cev) = Client::connect(server.local_addr(), ClientConfig::default(), Text)
        .await
        .unwrap();
    client_connected(&mut cev).await;
    client.send("grüezi".to_string()).await.unwrap();
    let id = loop {
        if let ServerEvent::Message { id, msg } = server_event(&mut events).await {
            assert_eq!(msg, "grüezi");
            break id;
        }
    };
    server.send_to(id, "salü".to_string()).await.unwrap();
    assert_eq!(client_message(&mut cev).await, "salü");

    // JSON over a little-endian, heartbeat-free link.
    let link = LinkConfig::builder()
        .byte_order(hail_wire::ByteOrder::LittleEndian)
        .build()
        .unwrap();
    let (server, mut events) = Server::bind(
        lo(),
        ServerConfig::builder().link(link.clone()).build().unwrap(),
        Json::<serde_json::Value>::new(),
    )
    .await
    .unwrap();
    let (client, _cev) = Client::connect(
        server.local_addr(),
        ClientConfig::builder().link(link).build().unwrap(),
        Json::<serde_json::Value>::new(),
    )
    .await
    .unwrap();
    client.send(serde_json::json!({"n": 1})).await.unwrap();
    loop {
        if let ServerEvent::Message { msg, .. } = server_event(&mut events).await {
            assert_eq!(msg["n"], 1);
            break;
        }
    }
}

#[tokio::test]
async fn python_comms_style_callbacks() {
    use std::sync::{Arc, Mutex};

    use hail_link::Callbacks;

    let (server, events) = Server::bind(lo(), ServerConfig::default(), Text)
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l1, l2, l3) = (Arc::clone(&log), Arc::clone(&log), Arc::clone(&log));
    let callbacks = Callbacks::default()
        .on_connect(move |id, _addr| l1.lock().unwrap().push(format!("connect {id}")))
        .on_message(move |id, msg: String| l2.lock().unwrap().push(format!("message {id} {msg}")))
        .on_close(move |id, reason| l3.lock().unwrap().push(format!("close {id} {reason}")));
    let runner = tokio::spawn(events.run_callbacks(callbacks));
    let (client, _cev) = Client::connect(server.local_addr(), ClientConfig::default(), Text)
        .await
        .unwrap();
    client.send("hi".to_string()).await.unwrap();
    client.close().await;
    wait_for("three callbacks", || log.lock().unwrap().len() >= 3).await;
    let log = log.lock().unwrap().clone();
    assert!(log[0].starts_with("connect #"), "{log:?}");
    assert!(
        log[1].starts_with("message #") && log[1].ends_with(" hi"),
        "{log:?}"
    );
    assert!(log[2].starts_with("close #"), "{log:?}");
    server.close(std::time::Duration::from_millis(100)).await;
    tokio::time::timeout(LIMIT, runner).await.unwrap().unwrap();
}
