//! multisock's job: a multicast channel, in plaintext and sealed by a passphrase.
//!
//! Channels join the group 239.255.93.17, port 45917, on the loopback interface only (TTL 1),
//! so nothing leaves this machine. First in plaintext: raw bytes (what `socat` or Python's
//! `socket` module would send and see) and typed messages (postcard). Then sealed with a
//! group key derived from a passphrase: a channel with the key reads the messages; a plain
//! channel sees only ciphertext; a channel with another passphrase drops every datagram, and
//! so does the sealed channel for a replayed datagram and for plaintext; each drop is counted
//! in the channel's stats.
//!
//! ```text
//! cargo run -p hail-examples --example multicast
//! ```
//!
//! Another program may use the same group and port at the same time (another run of this
//! example, say): every receiver here keeps only datagrams from this run's senders, and the
//! drop counters are checked as lower bounds.

#![allow(
    clippy::print_stdout,
    reason = "an example shows its results on stdout"
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use hail_crypto::{GroupKey, KdfParams};
use hail_multicast::{Channel, ChannelConfig, Receiver};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

/// An administratively scoped group (239.255.0.0/16) and an unusual port.
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 93, 17);
const PORT: u16 = 45_917;

/// How long a receiver waits for what this run sent (loopback delivers in microseconds).
const WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    seq: u32,
    celsius: f32,
}

/// A channel on the loopback interface, TTL 1, sealed when `key` is given: its sending
/// handle and its receiver.
fn channel(key: Option<&GroupKey>) -> anyhow::Result<(Channel, Receiver)> {
    let mut builder = ChannelConfig::builder()
        .interface(Ipv4Addr::LOCALHOST)
        .ttl(1);
    if let Some(key) = key {
        builder = builder.key(key.clone());
    }
    Channel::bind((GROUP, PORT), builder.build()?)
        .with_context(|| format!("cannot join {GROUP}:{PORT} on 127.0.0.1"))
}

/// The address a channel sends from (one interface: loopback).
fn source_addr(chan: &Channel) -> anyhow::Result<SocketAddr> {
    chan.send_addrs()?
        .first()
        .copied()
        .context("the channel has no sending socket")
}

/// Receives until `n` datagrams from `from` arrived (others are skipped), or fails at `WAIT`.
async fn recv_from(chan: &mut Receiver, from: SocketAddr, n: usize) -> anyhow::Result<Vec<Bytes>> {
    let mut got = Vec::new();
    timeout(WAIT, async {
        while got.len() < n {
            let d = chan.recv().await?;
            if d.from == from {
                got.push(d.payload);
            }
        }
        anyhow::Ok(())
    })
    .await
    .ok()
    .transpose()?;
    ensure!(
        got.len() == n,
        "received {} of {n} datagrams from {from} within {WAIT:?}",
        got.len()
    );
    Ok(got)
}

/// Receives typed messages (postcard) until `n` came from `from`, or fails at `WAIT`.
async fn recv_msgs_from<T: serde::de::DeserializeOwned>(
    chan: &mut Receiver,
    from: SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<T>> {
    let mut got = Vec::new();
    timeout(WAIT, async {
        while got.len() < n {
            let (msg, f) = chan.recv_msg::<T>().await?;
            if f == from {
                got.push(msg);
            }
        }
        anyhow::Ok(())
    })
    .await
    .ok()
    .transpose()?;
    ensure!(
        got.len() == n,
        "received {} of {n} messages from {from} within {WAIT:?}",
        got.len()
    );
    Ok(got)
}

/// Receives (and so processes: the channel has no background task) for `window`, and
/// returns what came from `from`.
async fn drain_from(
    chan: &mut Receiver,
    from: SocketAddr,
    window: Duration,
) -> anyhow::Result<Vec<Bytes>> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(d) = tokio::time::timeout_at(deadline, chan.recv()).await {
        let d = d?;
        if d.from == from {
            got.push(d.payload);
        }
    }
    Ok(got)
}

/// Sends the greenhouse sensor's readings 0, 1 and 2 as typed messages.
async fn send_readings(chan: &Channel) -> anyhow::Result<()> {
    for seq in 0..3 {
        let reading = Reading {
            sensor: "greenhouse".into(),
            seq,
            celsius: 21.5 + seq as f32,
        };
        chan.send_msg(&reading).await?;
    }
    Ok(())
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let start = Instant::now();

    println!("== plaintext: a datagram is exactly its payload");
    let (listening, mut listener) = channel(None)?;
    let (talker, _talker_rx) = channel(None)?;
    let talker_addr = source_addr(&talker)?;
    println!("joined {GROUP}:{PORT} on 127.0.0.1 (TTL 1); the talker sends from {talker_addr}");

    let text = b"hello, group (socat would see these exact bytes)";
    let t = Instant::now();
    talker.send(text).await?;
    let got = recv_from(&mut listener, talker_addr, 1).await?;
    ensure!(got[0] == text[..], "the payload changed on the way");
    println!(
        "listener got {} raw bytes in {}: {:?}",
        got[0].len(),
        us(t.elapsed()),
        String::from_utf8_lossy(&got[0])
    );

    let t = Instant::now();
    send_readings(&talker).await?;
    for reading in recv_msgs_from::<Reading>(&mut listener, talker_addr, 3).await? {
        println!("listener got {reading:?}");
    }
    println!("3 typed messages across in {}", us(t.elapsed()));
    // Closing a channel ends its receiver (its `recv` returns `MulticastError::Closed`).
    listening.close();
    talker.close();
    ensure!(
        listener.recv().await.is_err(),
        "a closed channel's receiver ended"
    );

    println!("\n== sealed: one passphrase, AES-256-GCM, replay window");
    // The default key derivation (`GroupKey::derive`: 600,000 PBKDF2 iterations) takes
    // about 0.1 to 0.25 s on a desktop or server core (this workspace optimises it even in
    // debug builds) and up to seconds on a small board: on purpose, since that cost is what makes guessing the passphrase offline expensive, and
    // it is paid once per configuration, never per packet. This example should finish in a
    // moment, so it takes the floor of 10,000 iterations; keep the default in real use.
    let params = KdfParams::default().iterations(KdfParams::MIN_ITERATIONS);
    let t = Instant::now();
    let key = GroupKey::derive_with("correct horse battery staple", "greenhouse", params)?;
    let wrong = GroupKey::derive_with("wrong horse battery staple", "greenhouse", params)?;
    let each = t.elapsed() / 2;
    println!(
        "2 group keys derived, {:.1} ms each at {} iterations (the default {} would take {:.1} s here)",
        each.as_secs_f64() * 1e3,
        params.iterations,
        KdfParams::DEFAULT_ITERATIONS,
        each.as_secs_f64() * f64::from(KdfParams::DEFAULT_ITERATIONS)
            / f64::from(params.iterations)
    );

    let (sender, _sender_rx) = channel(Some(&key))?;
    let (_member, mut member) = channel(Some(&key))?;
    let (plain, mut plain_rx) = channel(None)?;
    let (_outsider, mut outsider) = channel(Some(&wrong))?;
    let sender_addr = source_addr(&sender)?;

    let t = Instant::now();
    send_readings(&sender).await?;
    for reading in recv_msgs_from::<Reading>(&mut member, sender_addr, 3).await? {
        println!("member (same passphrase) got {reading:?}");
    }
    println!("3 sealed messages across in {}", us(t.elapsed()));

    // A plain channel receives the same datagrams, as ciphertext.
    let captured = recv_from(&mut plain_rx, sender_addr, 3).await?;
    let readable = captured
        .iter()
        .filter(|c| c.windows(b"greenhouse".len()).any(|w| w == b"greenhouse"))
        .count();
    ensure!(
        readable == 0,
        "plaintext visible in {readable} sealed datagrams"
    );
    println!(
        "plain channel got {} datagrams of {} bytes each, none with readable text; the first bytes: {:02x?}",
        captured.len(),
        captured[0].len(),
        &captured[0][..8]
    );

    // A channel with another passphrase drops every sealed datagram.
    let before = outsider.stats().dropped_wrong_key;
    let read = drain_from(&mut outsider, sender_addr, Duration::from_millis(200)).await?;
    let dropped = outsider.stats().dropped_wrong_key - before;
    ensure!(
        read.is_empty(),
        "the outsider read {} sealed datagrams",
        read.len()
    );
    ensure!(
        dropped >= 3,
        "the outsider dropped {dropped} datagrams as wrong key, not 3"
    );
    println!("outsider (other passphrase) read nothing; dropped as wrong key: {dropped}");

    // An eavesdropper replays a captured datagram and injects plaintext: both dropped.
    let before = member.stats();
    plain.send(&captured[0]).await?;
    plain.send(b"heating off").await?;
    let plain_addr = source_addr(&plain)?;
    let read = drain_from(&mut member, plain_addr, Duration::from_millis(200)).await?;
    let after = member.stats();
    ensure!(
        read.is_empty(),
        "the member accepted {} injected datagrams",
        read.len()
    );
    ensure!(
        after.dropped_replayed > before.dropped_replayed,
        "the replay was not counted"
    );
    ensure!(
        after.dropped_malformed > before.dropped_malformed,
        "the plaintext was not counted"
    );
    println!(
        "member dropped the replay (replayed: {}) and the plaintext (malformed: {})",
        after.dropped_replayed, after.dropped_malformed
    );
    println!("member stats: {after:?}");

    println!("\ndone in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
