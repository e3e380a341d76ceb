//! pythonConnect's job: devices that discover each other, message each other by name and
//! ask several at once.
//!
//! Three devices (`kitchen`, `hall`, `garden`) join one discovery group on the loopback
//! interface only (TTL 1, a free port for this run), sealed by one passphrase. The kitchen
//! sends a message to one device by name and to two at once, then asks both a question and
//! prints every answer; the garden reacts through pythonConnect-style callbacks. Finally
//! the hall leaves and the kitchen hears it said goodbye.
//!
//! ```text
//! cargo run -p hail-examples --example connect
//! ```

#![allow(
    clippy::print_stdout,
    reason = "an example shows its results on stdout"
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use hail_crypto::GroupKey;
use hail_discovery::{
    AskError, Device, DeviceCallbacks, DeviceEvent, DeviceEvents, LeaveReason, ResolveError,
    Targets,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The passphrase every device of this example shares.
const PASSPHRASE: &str = "connect example: correct horse battery staple";
/// How long any one wait may take (loopback discovery takes milliseconds).
const WAIT: Duration = Duration::from_secs(5);

/// A device on loopback in the example's group, sealed with `key`.
async fn start(
    name: &str,
    group: SocketAddr,
    key: &GroupKey,
) -> anyhow::Result<(Device, DeviceEvents)> {
    Device::builder(name)
        .group(group)
        .interface(Ipv4Addr::LOCALHOST) // default: every multicast interface
        .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .group_key(key.clone())
        .start()
        .await
        .with_context(|| format!("start {name}"))
}

/// Waits for the next message on `events`, skipping other events.
async fn next_message(events: &mut DeviceEvents) -> anyhow::Result<(String, Bytes)> {
    loop {
        match timeout(WAIT, events.recv())
            .await
            .context("no message in time")?
        {
            Some(DeviceEvent::Message { from, payload, .. }) => {
                return Ok((from.to_string(), payload));
            }
            Some(_) => {}
            None => bail!("the device stopped"),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let t0 = Instant::now();
    // One key for the group, derived once (PBKDF2, 600,000 iterations); a device given
    // `.passphrase(PASSPHRASE)` derives the same key itself.
    let key = GroupKey::derive(PASSPHRASE, "hail-discovery");
    println!("group key derived in {:?} (once per group)", t0.elapsed());
    let t0 = Instant::now();

    // Port 0: a free port for this run, so the example never meets another run.
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, 93, 18), 0));
    let (kitchen, mut kitchen_events) = start("kitchen", group, &key).await?;
    let group = kitchen.group();
    let (hall, mut hall_events) = start("hall", group, &key).await?;
    let (garden, garden_events) = start("garden", group, &key).await?;
    println!("kitchen, hall and garden started on {group} (loopback)");

    // The garden, pythonConnect style: callbacks for its events.
    let (garden_tx, mut garden_rx) = mpsc::unbounded_channel();
    let callbacks = DeviceCallbacks::default()
        .on_joined(|peer| println!("  garden: {} joined", peer.name))
        .on_message(move |from, msg| {
            println!(
                "  garden: message from {from}: {}",
                String::from_utf8_lossy(&msg)
            );
            let _ = garden_tx.send((from, msg));
        });
    let garden_callbacks = tokio::spawn(garden_events.run_callbacks(callbacks));

    // Hall and garden answer questions.
    hall.on_question(|from, q| async move {
        ensure_question(&q)?;
        Ok(Bytes::from(format!("hall: 19.5 °C (asked by {from})")))
    })?;
    garden.on_question(|from, q| async move {
        ensure_question(&q)?;
        Ok(Bytes::from(format!("garden: 11.0 °C (asked by {from})")))
    })?;

    // Discovery: every device sees the other two.
    let deadline = Instant::now() + WAIT;
    while [&kitchen, &hall, &garden]
        .iter()
        .any(|d| d.peers().len() < 2)
    {
        ensure!(
            Instant::now() < deadline,
            "the devices did not find each other in {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("all three see each other after {:?}", t0.elapsed());

    // A message to one device by name.
    for (to, r) in kitchen
        .send("garden", Bytes::from_static(b"water the roses"))
        .await
    {
        r.with_context(|| format!("send to {to}"))?;
    }
    let (from, msg) = timeout(WAIT, garden_rx.recv())
        .await?
        .context("garden stopped")?;
    ensure!(
        &*from == "kitchen" && msg == "water the roses",
        "garden got {from}: {msg:?}"
    );

    // A message to two devices at once.
    let both = Targets::from(&["hall", "garden"][..]);
    for (to, r) in kitchen
        .send(both.clone(), Bytes::from_static(b"dinner at 7"))
        .await
    {
        r.with_context(|| format!("send to {to}"))?;
    }
    let (from, msg) = next_message(&mut hall_events).await?;
    println!(
        "  hall: message from {from}: {}",
        String::from_utf8_lossy(&msg)
    );
    ensure!(msg == "dinner at 7", "hall got {msg:?}");
    let (_, msg) = timeout(WAIT, garden_rx.recv())
        .await?
        .context("garden stopped")?;
    ensure!(msg == "dinner at 7", "garden got {msg:?}");

    // Ask both; every answer (or why there is none) comes back by name.
    let answers = kitchen
        .ask(
            both,
            Bytes::from_static(b"temperature?"),
            Duration::from_secs(1),
        )
        .await;
    println!("kitchen asked hall and garden \"temperature?\":");
    let mut names: Vec<_> = answers.keys().cloned().collect();
    names.sort();
    for name in &names {
        let answer = answers[name]
            .as_ref()
            .map_err(Clone::clone)
            .with_context(|| format!("{name} did not answer"))?;
        println!("  {name} -> {}", String::from_utf8_lossy(answer));
    }
    ensure!(names == ["garden", "hall"], "answers from {names:?}");

    // Asking a name nobody has fails for that name only.
    let answers = kitchen
        .ask(
            Targets::from(&["hall", "attic"][..]),
            Bytes::from_static(b"temperature?"),
            Duration::from_secs(1),
        )
        .await;
    ensure!(answers["hall"].is_ok(), "hall: {:?}", answers["hall"]);
    let Err(AskError::Resolve(unknown @ ResolveError::UnknownName(_))) = &answers["attic"] else {
        bail!("attic: {:?}", answers["attic"]);
    };
    println!("asking hall and attic: hall answers, attic fails: {unknown}");

    // The hall leaves; the kitchen hears its goodbye.
    hall.close().await;
    loop {
        match timeout(WAIT, kitchen_events.recv())
            .await
            .context("no PeerLeft in time")?
        {
            Some(DeviceEvent::PeerLeft { peer, reason }) if peer.name == "hall" => {
                ensure!(reason == LeaveReason::Goodbye, "hall left: {reason:?}");
                println!("kitchen: hall left ({reason:?})");
                break;
            }
            Some(_) => {}
            None => bail!("the kitchen stopped"),
        }
    }

    garden.close().await;
    kitchen.close().await;
    // The garden's event stream ends with its device; so do its callbacks.
    timeout(WAIT, garden_callbacks).await??;
    println!("done in {:?}", t0.elapsed());
    Ok(())
}

/// The question handlers answer one question only.
fn ensure_question(q: &[u8]) -> Result<(), String> {
    if q == b"temperature?" {
        Ok(())
    } else {
        Err(format!("unknown question {:?}", String::from_utf8_lossy(q)))
    }
}
