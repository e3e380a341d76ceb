//! Framed messages over loopback TCP with `hail-wire`, in Python Comms' format.
//!
//! A tiny server and client exchange JSON messages framed with a little-endian u32 length,
//! the exact bytes a Python Comms (ReliableCommunication) peer sends, then a typed postcard
//! message, and show what a bad frame does: a typed error, never a crash.
//!
//! ```text
//! cargo run -p hail-examples --example frames
//! ```

#![allow(
    clippy::print_stdout,
    reason = "an example shows its results on stdout"
)]

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use hail_wire::{FrameCodec, Json, MessageCodec, Postcard, WireError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

#[derive(Debug, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    celsius: f32,
}

/// Python Comms' wire format: little-endian length, `json.dumps` separators.
fn python_comms() -> MessageCodec<Json<Value>> {
    MessageCodec::new(
        FrameCodec::builder().little_endian().build(),
        Json::python_style(),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let start = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("server listening on {addr}");

    // The server echoes every JSON message back with a field added.
    let server = tokio::spawn(async move {
        let (sock, peer) = listener.accept().await?;
        println!("server: client {peer} connected");
        let mut framed = Framed::new(sock, python_comms());
        while let Some(msg) = framed.next().await {
            let mut msg = msg?;
            msg["echoed"] = json!(true);
            framed.send(msg).await?;
        }
        println!("server: client closed the connection");
        anyhow::Ok(())
    });

    let mut client = Framed::new(TcpStream::connect(addr).await?, python_comms());
    for msg in [
        json!({"hello": "world"}),
        json!({"cmd": "move", "x": 1.5, "y": -2}),
    ] {
        let mut bytes = bytes::BytesMut::new();
        python_comms().encode_ref(&msg, &mut bytes)?;
        println!(
            "client sends {msg} as {} bytes: {:02x?}...",
            bytes.len(),
            &bytes[..8]
        );
        client.send(msg).await?;
        let reply = client
            .next()
            .await
            .ok_or(anyhow::anyhow!("server gone"))??;
        println!("client got   {reply}");
    }
    drop(client);
    server.await??;

    // Typed messages use postcard by default: compact and strict.
    let mut codec = MessageCodec::new(FrameCodec::new(), Postcard::<Reading>::new());
    let mut buf = bytes::BytesMut::new();
    codec.encode_ref(
        &Reading {
            sensor: "shed".into(),
            celsius: 4.5,
        },
        &mut buf,
    )?;
    println!("a typed Reading as postcard: {} bytes", buf.len());
    let back = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)?;
    println!("decoded back: {back:?}");

    // A hostile peer announces a 4 GiB frame: a typed error, and no 4 GiB allocation.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut hostile = TcpStream::connect(listener.local_addr()?).await?;
    hostile.write_all(&u32::MAX.to_le_bytes()).await?;
    let (sock, _) = listener.accept().await?;
    let mut framed = Framed::new(sock, python_comms());
    match framed.next().await {
        Some(Err(e @ WireError::TooLarge { .. })) => println!("hostile header refused: {e}"),
        other => anyhow::bail!("expected TooLarge, got {other:?}"),
    }

    println!("done in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
