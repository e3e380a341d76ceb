//! The seed libraries' flows: TCPTalks (opcodes, execute, send + poll) and CLOVIS (named
//! commands on both sides calling each other), plus calls both ways at once.

use std::time::Duration;

use hail_rpc::{Opcode, RpcError, RpcPeer};
use tokio::sync::mpsc;

use crate::support::pair;

const ADD: Opcode = Opcode(1);
const CONCAT: Opcode = Opcode(2);
const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn tcptalks_flow() {
    let (client, server, _link) = pair().await;
    server
        .bind(
            ADD,
            |(a, b): (i64, i64)| async move { Ok::<_, String>(a + b) },
        )
        .unwrap();
    server
        .bind(CONCAT, |parts: Vec<String>| async move {
            Ok::<_, String>(parts.concat())
        })
        .unwrap();

    // execute: wait for the result.
    let sum: i64 = client.execute(ADD, (2i64, 40i64), T).await.unwrap();
    assert_eq!(sum, 42);

    // send + poll: retcodes come back at once, replies are collected later in any order.
    let r1 = client.send(ADD, (1i64, 1i64)).await.unwrap();
    let r2 = client.send(CONCAT, vec!["ab", "cd"]).await.unwrap();
    assert_ne!(r1, r2);
    let s: String = client.poll(r2, T).await.unwrap();
    assert_eq!(s, "abcd");
    let n: i64 = client.poll(r1, T).await.unwrap();
    assert_eq!(n, 2);
    // A reply is taken once.
    assert_eq!(
        client.poll::<i64>(r1, T).await,
        Err(RpcError::UnknownRetCode(r1))
    );

    // take_ready drains what has arrived, oldest first.
    let mut sent = Vec::new();
    for i in 0..5i64 {
        sent.push(client.send(ADD, (i, 100i64)).await.unwrap());
    }
    let mut ready = Vec::new();
    while ready.len() < 5 {
        ready.extend(client.take_ready());
        tokio::task::yield_now().await;
    }
    let got: Vec<_> = ready.iter().map(|(r, _)| *r).collect();
    assert_eq!(got, sent);
    let values: Vec<i64> = ready
        .into_iter()
        .map(|(_, reply)| reply.decode().unwrap())
        .collect();
    assert_eq!(values, [100, 101, 102, 103, 104]);

    // flush forgets a call: its reply is never handed out.
    let r = client.send(ADD, (0i64, 0i64)).await.unwrap();
    assert!(client.flush(r));
    assert!(!client.flush(r));
    assert_eq!(
        client.poll::<i64>(r, T).await,
        Err(RpcError::UnknownRetCode(r))
    );
}

#[tokio::test]
async fn clovis_flow_named_commands_on_both_sides() {
    let (alice, bob, _link) = pair().await;
    // Each side registers commands by name; handlers call the other side back through
    // the peer they are given.
    alice
        .bind("name", |(): ()| async {
            Ok::<_, String>("alice".to_string())
        })
        .unwrap();
    alice
        .bind_with("introduce", |peer: RpcPeer, (): ()| async move {
            let other: String = peer
                .execute("name", (), T)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(format!("alice meets {other}"))
        })
        .unwrap();
    bob.bind("name", |(): ()| async {
        Ok::<_, String>("bob".to_string())
    })
    .unwrap();
    bob.bind_with("introduce", |peer: RpcPeer, (): ()| async move {
        let other: String = peer
            .execute("name", (), T)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(format!("bob meets {other}"))
    })
    .unwrap();

    let (a, b) = tokio::join!(
        alice.execute::<_, String>("introduce", (), T),
        bob.execute::<_, String>("introduce", (), T),
    );
    assert_eq!(a.unwrap(), "bob meets alice");
    assert_eq!(b.unwrap(), "alice meets bob");

    // Notifications: fire and forget, the handler still runs.
    let (tx, mut rx) = mpsc::unbounded_channel();
    bob.bind("log", move |line: String| {
        let tx = tx.clone();
        async move {
            tx.send(line).map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
    })
    .unwrap();
    alice.notify("log", "hello from alice").await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), "hello from alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_both_ways_at_once_on_one_connection() {
    let (a, b, _link) = pair().await;
    for (peer, me) in [(&a, 1u32), (&b, 2u32)] {
        peer.bind("tag", move |x: u32| async move {
            tokio::task::yield_now().await;
            Ok::<_, String>((me, x))
        })
        .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500u32 {
        for (peer, remote) in [(a.clone(), 2u32), (b.clone(), 1u32)] {
            tasks.spawn(async move {
                let (who, x): (u32, u32) = peer.execute("tag", i, T).await.unwrap();
                assert_eq!((who, x), (remote, i));
            });
        }
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
        n += 1;
    }
    assert_eq!(n, 1000);
}

#[tokio::test]
async fn blocking_handlers_and_unbind() {
    let (a, b, _link) = pair().await;
    // This test's runtime has one thread, which runs every task: a blocking handler runs
    // on another (tokio's blocking pool).
    let runtime_thread = std::thread::current().id();
    b.bind_blocking("hash", move |s: String| {
        if std::thread::current().id() == runtime_thread {
            return Err("ran on the async runtime's thread".to_string());
        }
        Ok(s.bytes().map(u64::from).sum::<u64>())
    })
    .unwrap();
    let h: u64 = a.execute("hash", "abc", T).await.unwrap();
    assert_eq!(h, 97 + 98 + 99);
    assert!(b.unbind("hash"));
    assert!(!b.unbind("hash"));
    assert_eq!(
        a.execute::<_, u64>("hash", "abc", T).await,
        Err(RpcError::UnknownMethod("hash".into()))
    );
    // The built-in PING echoes its arguments with no handler bound.
    let echo: String = a.execute(Opcode::PING, "ping", T).await.unwrap();
    assert_eq!(echo, "ping");
}
