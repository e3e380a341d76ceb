//! Fair and lossless backpressure of the event stream (issue 13 item 1): a peer whose
//! messages the application does not take fast enough is held back by its own link (its
//! messages hold its share of the device's memory budget), while other peers' questions
//! and messages go on; once the application reads, every message arrives, in order.
//! Whole devices on the in-memory network, in paused time.

use std::time::Duration;

use bytes::Bytes;
use hail_discovery::{Device, DeviceEvent, DeviceEvents, MESSAGE_COST};
use hail_link::Budget;

use crate::lan::Lan;
use crate::wait::wait_for;

/// The listener's budget in these tests: 4 MiB. Past seven eighths of it (its reserve,
/// `hail_link::RESERVE_DIVISOR`), a link holding 64 KiB or more stops reading.
const BUDGET: usize = 4 << 20;

/// The listener `v` (budget [`BUDGET`], answers every question with "fine"), the flooder
/// `f` and the honest peer `h`, all joined; `v`'s stream read up to here.
async fn three() -> (Lan, (Device, DeviceEvents), Device, Device) {
    let lan = Lan::new();
    let (v, mut ve) = lan
        .builder("v", 1)
        .budget(Budget::new(BUDGET))
        .start()
        .await
        .unwrap();
    v.on_question(|_, _| async { Ok(Bytes::from_static(b"fine")) })
        .unwrap();
    let (f, _fe) = lan.device("f", 2).await;
    let (h, _he) = lan.device("h", 3).await;
    for (x, other) in [(&v, "f"), (&v, "h"), (&f, "v"), (&h, "v")] {
        tokio::time::timeout(Duration::from_secs(2), x.wait_for_peer(other))
            .await
            .expect("joined");
    }
    tokio::task::yield_now().await;
    while ve.try_recv().is_some() {}
    (lan, (v, ve), f, h)
}

/// `count` messages of `size` bytes from `f` to `v`, each starting with its number;
/// returns how many were sent.
fn flood(f: &Device, count: u32, size: usize) -> tokio::task::JoinHandle<u32> {
    let mut to_v = f.to("v").expect("joined");
    tokio::spawn(async move {
        let mut msg = vec![0u8; size.max(4)];
        for i in 0..count {
            msg[..4].copy_from_slice(&i.to_be_bytes());
            if to_v.send(&msg).await.is_err() {
                return i;
            }
        }
        count
    })
}

/// Reads `v`'s stream until `f_count` messages from `f` and `h_count` from `h` have come
/// (panics after 10 s of virtual time): each sender's in order, nothing else but joins.
async fn read_all(ve: &mut DeviceEvents, f_count: u32, h_count: u32) {
    let (mut f_next, mut h_next) = (0u32, 0u32);
    tokio::time::timeout(Duration::from_secs(10), async {
        while f_next < f_count || h_next < h_count {
            match ve.recv().await.expect("running") {
                DeviceEvent::Message { from, payload, .. } => {
                    let n = u32::from_be_bytes(payload[..4].try_into().unwrap());
                    let next = if &*from == "f" {
                        &mut f_next
                    } else {
                        &mut h_next
                    };
                    assert_eq!(n, *next, "{from}'s messages in order");
                    *next += 1;
                }
                DeviceEvent::Error(e) => panic!("{e}"),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{f_next} of f's {f_count}, {h_next} of h's {h_count}"));
}

/// What the honest peer does while the flood is held: a question answered at once and
/// `count` messages accepted.
async fn honest_peer_goes_on(h: &Device, count: u32) {
    let asked = tokio::time::Instant::now();
    let r = h
        .ask("v", Bytes::from_static(b"ok?"), Duration::from_secs(1))
        .await;
    assert_eq!(r["v"], Ok(Bytes::from_static(b"fine")));
    assert!(
        asked.elapsed() < Duration::from_millis(100),
        "answered in {:?}",
        asked.elapsed()
    );
    for i in 0..count {
        assert_eq!(
            h.send("v", Bytes::copy_from_slice(&i.to_be_bytes())).await["v"],
            Ok(())
        );
    }
}

/// A peer sends four budgets' worth of 16 KiB messages to a listener whose application
/// does not read: the flooder's link stops reading once its messages hold the budget down
/// to its reserve, so it is held back (its sender waits), while another peer's question
/// is answered and its messages are taken in. The budget is never passed by more than a
/// read; once the application reads, every message of both arrives, in order, none
/// dropped.
#[tokio::test(start_paused = true)]
async fn a_flooding_peer_is_held_back_while_others_ask_and_send() {
    let (_lan, (v, mut ve), f, h) = three().await;
    let (count, size) = (1024u32, 16 << 10);
    let flooding = flood(&f, count, size);
    // The flood waits in v's stream up to the budget's reserve (3.5 MiB).
    wait_for(
        || v.stats().queued_event_bytes >= BUDGET * 3 / 4,
        || format!("the stream fills: {:?}", v.stats()),
    )
    .await;
    honest_peer_goes_on(&h, 10).await;
    // h's ten messages are in v's stream, behind the flood, which is still held back.
    let queued = v.stats().queued_event_bytes;
    wait_for(
        || v.stats().queued_event_bytes >= queued + 10 * MESSAGE_COST,
        || format!("h's messages are taken in: {:?}", v.stats()),
    )
    .await;
    assert!(!flooding.is_finished(), "the flooder is held back");
    let stats = v.stats();
    // A read, and the batch v is taking over from the link (counted by both for that
    // moment): 64 KiB and at most 64 KiB and a frame.
    assert!(
        stats.budget.peak <= BUDGET + 2 * (64 << 10) + size,
        "the budget is passed by at most a read and a batch: {stats:?}"
    );
    assert!(stats.peak_event_bytes <= BUDGET, "{stats:?}");
    read_all(&mut ve, count, 10).await;
    assert_eq!(flooding.await.unwrap(), count);
    let stats = v.stats();
    assert_eq!(stats.dropped_events, 0, "{stats:?}");
    assert_eq!(stats.queued_event_bytes, 0, "all taken: {stats:?}");
    for d in [v, f, h] {
        d.close().await;
    }
}

/// A flood of 4-byte messages is bounded by their number: each waiting message counts
/// [`MESSAGE_COST`] (256 B) against the flooder's share, so at most a budget's worth of
/// them (16,384 for 4 MiB) wait, and the honest peer goes on as before; all 200,000 arrive
/// in order once the application reads.
#[tokio::test(start_paused = true)]
async fn a_flood_of_tiny_messages_is_bounded_in_number() {
    let (_lan, (v, mut ve), f, h) = three().await;
    let count = 200_000u32;
    let flooding = flood(&f, count, 4);
    wait_for(
        || v.stats().queued_event_bytes >= BUDGET * 3 / 4,
        || format!("the stream fills: {:?}", v.stats()),
    )
    .await;
    honest_peer_goes_on(&h, 10).await;
    assert!(!flooding.is_finished(), "the flooder is held back");
    let stats = v.stats();
    let most = BUDGET / MESSAGE_COST;
    assert!(
        stats.peak_event_bytes / MESSAGE_COST <= most,
        "at most {most} messages waited: {stats:?}"
    );
    read_all(&mut ve, count, 10).await;
    assert_eq!(flooding.await.unwrap(), count);
    assert_eq!(v.stats().dropped_events, 0);
    for d in [v, f, h] {
        d.close().await;
    }
}
