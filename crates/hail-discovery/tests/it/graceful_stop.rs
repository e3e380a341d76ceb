//! A device that stops gracefully while a peer sends to it: every message whose `send`
//! returned `Ok` reaches its event stream before its shutdown completes; the others
//! failed visibly.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use hail_discovery::{Device, DeviceEvent, DeviceEvents, RunError};
use tokio::sync::{oneshot, watch};

/// A device whose stream holds far more events than the sender is ever ahead of the
/// test's reader ([`WINDOW`]): none is dropped, however slowly the reader runs on a
/// loaded machine.
async fn device(name: &str, group: SocketAddr) -> (Device, DeviceEvents) {
    Device::builder(name)
        .event_capacity(1 << 16)
        .group(group)
        .interface(Ipv4Addr::LOCALHOST)
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("device starts")
}

/// Most messages the sender is ahead of the receiver's reader (far fewer than the stream
/// holds): it sends until a send fails, as fast as the reader takes them.
const WINDOW: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_sent_ok_to_a_stopping_device_is_delivered() {
    let (sender, mut sender_events) = device(
        "sender",
        SocketAddr::from((Ipv4Addr::new(239, 255, 72, 81), 0)),
    )
    .await;
    let g = sender.group();
    // Keep the sender's stream read: its events are not what is checked.
    let drain = tokio::spawn(async move { while sender_events.recv().await.is_some() {} });
    let sender = std::sync::Arc::new(sender);
    let (mut total_ok, mut total_failed) = (0usize, 0usize);
    for run in 0..30 {
        let name = format!("receiver{run}");
        let (receiver, mut events) = device(&name, g).await;
        tokio::time::timeout(Duration::from_secs(5), sender.wait_for_peer(&name))
            .await
            .expect("the sender sees the receiver");
        // The receiver's events, read as they come; the rest once its shutdown is done.
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (first_tx, first_rx) = oneshot::channel::<()>();
        // How many of the sender's messages the reader has; closed when it is done.
        let (progress_tx, mut progress) = watch::channel(0usize);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut dropped = 0u64;
            let mut first = Some(first_tx);
            let mut take = |e: DeviceEvent, got: &mut Vec<u32>, dropped: &mut u64| match e {
                DeviceEvent::Message { from, payload, .. } if &*from == "sender" => {
                    let n = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
                    got.push(n);
                    progress_tx.send_replace(got.len());
                    if got.len() >= 20
                        && let Some(f) = first.take()
                    {
                        let _ = f.send(());
                    }
                }
                DeviceEvent::Error(RunError::EventsDropped { count }) => *dropped += count,
                _ => {}
            };
            loop {
                tokio::select! {
                    biased;
                    e = events.recv() => match e {
                        Some(e) => take(e, &mut got, &mut dropped),
                        None => break,
                    },
                    _ = &mut stop_rx => {
                        while let Some(e) = events.try_recv() {
                            take(e, &mut got, &mut dropped);
                        }
                        break;
                    }
                }
            }
            (got, dropped)
        });
        // Sends numbered messages until one fails, at most `WINDOW` ahead of the reader
        // (once the reader is done, without waiting).
        let s = sender.clone();
        let target = name.clone();
        let sending = tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut failed = 0usize;
            for n in 0u32.. {
                let _ = progress.wait_for(|&got| got + WINDOW > n as usize).await;
                let r = s
                    .send(target.as_str(), Bytes::copy_from_slice(&n.to_be_bytes()))
                    .await;
                match &r[target.as_str()] {
                    Ok(()) => ok.push(n),
                    Err(_) => {
                        failed += 1;
                        break;
                    }
                }
            }
            (ok, failed)
        });
        tokio::time::timeout(Duration::from_secs(5), first_rx)
            .await
            .expect("messages arrive")
            .expect("reader runs");
        receiver.close().await;
        let _ = stop_tx.send(());
        let (got, dropped) = reader.await.expect("reader");
        let (ok, failed) = tokio::time::timeout(Duration::from_secs(10), sending)
            .await
            .expect("sends fail once the receiver is gone")
            .expect("sender");
        assert_eq!(dropped, 0, "run {run}: the receiver dropped events");
        assert_eq!(failed, 1, "run {run}: {} sends, none failed", ok.len());
        let got_set: BTreeSet<u32> = got.iter().copied().collect();
        assert_eq!(got_set.len(), got.len(), "run {run}: duplicates");
        let ok_set: BTreeSet<u32> = ok.iter().copied().collect();
        let lost: Vec<u32> = ok_set.difference(&got_set).copied().collect();
        let extra: Vec<u32> = got_set.difference(&ok_set).copied().collect();
        assert!(
            lost.is_empty() && extra.is_empty(),
            "run {run}: {} sent OK, {} received; sent OK but lost: {lost:?}; received but not OK: {extra:?}",
            ok.len(),
            got.len()
        );
        total_ok += ok.len();
        total_failed += failed;
    }
    assert!(
        total_ok > 0 && total_failed == 30,
        "{total_ok} {total_failed}"
    );
    drain.abort();
}
