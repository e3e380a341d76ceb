//! Real loopback TCP through `Framed`, and the memory cost of a stalled peer.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hail_wire::{Binary, FrameCodec, MessageCodec};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, FramedRead};

/// Deterministic random message sizes: many small, a few up to `max`, some empty.
fn sizes(n: usize, max: usize) -> Vec<usize> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: plenty for picking sizes.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize
    };
    (0..n)
        .map(|i| match i % 100 {
            0 => next() % max,
            1..=4 => 0,
            _ => next() % 2048,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_arrive_identical_and_in_order() {
    const N: usize = 10_000;
    let messages: Vec<Bytes> = sizes(N, 256 * 1024)
        .into_iter()
        .enumerate()
        .map(|(i, len)| Bytes::from((0..len).map(|j| (i * 31 + j) as u8).collect::<Vec<u8>>()))
        .collect();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let expected = messages.clone();
    let receiver = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(sock, MessageCodec::new(FrameCodec::new(), Binary));
        let mut got = 0;
        while let Some(msg) = framed.next().await {
            let msg = msg.expect("clean frame");
            assert_eq!(msg, expected[got], "message {got}");
            got += 1;
        }
        got
    });

    let sock = TcpStream::connect(addr).await.unwrap();
    sock.set_nodelay(true).unwrap();
    let mut framed = Framed::new(sock, MessageCodec::new(FrameCodec::new(), Binary));
    for m in messages {
        framed.feed(m).await.unwrap();
    }
    framed.flush().await.unwrap();
    framed.into_inner().shutdown().await.unwrap();

    let got = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .expect("receiver finished")
        .unwrap();
    assert_eq!(got, N);
}

#[tokio::test]
async fn announced_maximum_then_silence_costs_under_one_mib() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut attacker = TcpStream::connect(addr).await.unwrap();
    let (sock, _) = listener.accept().await.unwrap();

    // Announce a maximum-size (16 MiB) frame, send 100 KiB of it, then stall.
    attacker
        .write_all(&hail_wire::DEFAULT_MAX_FRAME_LEN.to_be_bytes())
        .await
        .unwrap();
    attacker.write_all(&vec![0u8; 100 * 1024]).await.unwrap();

    let mut reader = FramedRead::new(sock, FrameCodec::new());
    let pending = tokio::time::timeout(Duration::from_millis(300), reader.next()).await;
    assert!(pending.is_err(), "no frame can be complete yet");
    let held = reader.read_buffer().capacity();
    assert!(
        held < 1024 * 1024,
        "the decoder holds {held} bytes for 100 KiB received"
    );
    assert!(
        held >= 100 * 1024 - 4,
        "everything received is kept: {held}"
    );
    drop(attacker);
}
