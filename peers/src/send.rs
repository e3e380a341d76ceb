//! `peers/send-<size>`: one-way messages per second from one participant to another.
//!
//! - hail: the sender's per-peer handle (`Device::to("rx")`), its `send_bytes` in a loop
//!   (a warm-up round through `Device::send`, the fan-out call); the receiving device's
//!   event stream read by a task that counts `Message` events.
//! - zenoh: a `Publisher` (congestion control `Block`, so that nothing is dropped: hail's
//!   `send` never drops either; zenoh's default for puts, `Drop`, would discard messages
//!   under load) putting in a loop; a subscriber callback on the other session counts.
//!
//! A round sends a bounded count and ends when the last message has arrived, or when
//! nothing more arrives for 1 s (at most 20 s): the rate is what arrived over the time
//! from the first send to the last arrival. Messages that never arrived are reported on
//! stderr (hail's receiving `DeviceEvents` drops events while it is full). Rounds of both
//! alternate; the median round is kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hail::discovery::DeviceEvent;
use hail_benches::harness::{Better, Ctx, Record, median};
use tokio::sync::Notify;
use zenoh::qos::CongestionControl;

use crate::zconf::{free_udp_port, hail_device, hail_group, until_peers, zenoh_config};

/// The longest a round may take.
const ROUND_LIMIT: Duration = Duration::from_secs(20);
/// A round also ends when nothing has arrived for this long.
const IDLE_LIMIT: Duration = Duration::from_secs(1);

/// Runs the group.
pub(crate) fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    for (label, size) in [("64B", 64usize), ("1KiB", 1024)] {
        let name = format!("peers/send-{label}");
        if ctx.wants(&name) {
            out.push(rt.block_on(throughput(ctx, &name, size))?);
        }
    }
    Ok(out)
}

/// Counts arrivals and wakes the waiter when a round's goal is reached.
#[derive(Debug)]
struct Counter {
    count: AtomicU64,
    goal: AtomicU64,
    done: Notify,
    epoch: Instant,
    /// When the last message arrived, ns since `epoch`.
    last: AtomicU64,
}

impl Counter {
    fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            goal: AtomicU64::new(0),
            done: Notify::new(),
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn hit(&self) {
        self.last
            .store(self.epoch.elapsed().as_nanos() as u64, Ordering::Release);
        let c = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if c == self.goal.load(Ordering::Acquire) {
            self.done.notify_one();
        }
    }

    /// Runs `send` (which sends `k` messages) and returns messages/s as received.
    async fn round<F: Future<Output = anyhow::Result<()>>>(
        &self,
        label: &str,
        k: u64,
        send: F,
    ) -> anyhow::Result<f64> {
        let base = self.count.load(Ordering::Acquire);
        self.goal.store(base + k, Ordering::Release);
        let t = Instant::now();
        send.await?;
        let deadline = t + ROUND_LIMIT;
        let (mut seen, mut progress) = (base, Instant::now());
        loop {
            let now_count = self.count.load(Ordering::Acquire);
            if now_count >= base + k {
                break;
            }
            if now_count != seen {
                (seen, progress) = (now_count, Instant::now());
            }
            let now = Instant::now();
            if now >= deadline || now.duration_since(progress) >= IDLE_LIMIT {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.done.notified()).await;
        }
        let got = (self.count.load(Ordering::Acquire) - base).min(k);
        let last = self.epoch + Duration::from_nanos(self.last.load(Ordering::Acquire));
        let took = last.saturating_duration_since(t).as_secs_f64();
        if got < k {
            eprintln!("{label}: {got} of {k} messages arrived ({} lost)", k - got);
        }
        anyhow::ensure!(got > 0 && took > 0.0, "{label}: nothing arrived");
        Ok(got as f64 / took)
    }
}

async fn throughput(ctx: &Ctx, name: &str, size: usize) -> anyhow::Result<Record> {
    let k: u64 = ctx.pick(20_000, 100_000);
    let rounds = ctx.pick(3, 7);
    let payload = Bytes::from(vec![0xa5u8; size]);
    // Both send a reference-counted buffer, cloned per message without copying the bytes.
    let zpayload = zenoh::bytes::ZBytes::from(payload.to_vec());

    // hail: two devices, the receiver's events counted by a task.
    let group = hail_group(free_udp_port()?);
    let (tx, mut tx_events) = hail_device("tx", group).await?;
    let (rx, mut rx_events) = hail_device("rx", group).await?;
    until_peers(&tx, &mut tx_events, 1).await?;
    until_peers(&rx, &mut rx_events, 1).await?;
    let hail_count = Arc::new(Counter::new());
    let counter = hail_count.clone();
    let reader = tokio::spawn(async move {
        while let Some(e) = rx_events.recv().await {
            if let DeviceEvent::Message { .. } = e {
                counter.hit();
            }
        }
    });

    // zenoh: two sessions, a blocking publisher and a counting subscriber.
    let z = |e: zenoh::Error| anyhow::anyhow!("zenoh: {e}");
    let port = free_udp_port()?;
    let key = format!("hail-peers/send/{port}");
    let zrx = zenoh::open(zenoh_config(port)?).await.map_err(z)?;
    let ztx = zenoh::open(zenoh_config(port)?).await.map_err(z)?;
    let zenoh_count = Arc::new(Counter::new());
    let counter = zenoh_count.clone();
    let sub = zrx
        .declare_subscriber(&key)
        .callback(move |_sample| counter.hit())
        .await
        .map_err(z)?;
    let publisher = ztx
        .declare_publisher(key.clone())
        .congestion_control(CongestionControl::Block)
        .await
        .map_err(z)?;
    // Wait until the subscriber is reached.
    let deadline = Instant::now() + Duration::from_secs(10);
    while zenoh_count.count.load(Ordering::Acquire) == 0 {
        anyhow::ensure!(Instant::now() < deadline, "zenoh subscriber never reached");
        publisher.put(zpayload.clone()).await.map_err(z)?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The steady path: a per-peer handle (as zenoh's declared publisher), each message
    // its `send_bytes` (the payload kept by reference from 512 bytes on, copied below).
    // Both senders loop in a task on the runtime, as an application's would.
    let hail_send = || {
        let to_rx = tx.to("rx");
        let payload = payload.clone();
        async move {
            let mut to_rx = to_rx?;
            tokio::spawn(async move {
                for _ in 0..k {
                    to_rx
                        .send_bytes(payload.clone())
                        .await
                        .map_err(|e| anyhow::anyhow!("hail send to rx: {e}"))?;
                }
                anyhow::Ok(())
            })
            .await?
        }
    };
    let publisher = Arc::new(publisher);
    let zenoh_send = || {
        let (publisher, zpayload) = (publisher.clone(), zpayload.clone());
        async move {
            tokio::spawn(async move {
                for _ in 0..k {
                    publisher.put(zpayload.clone()).await.map_err(z)?;
                }
                anyhow::Ok(())
            })
            .await?
        }
    };
    // Warm-up: one short round each.
    hail_count
        .round("hail warm-up", k / 10, async {
            for _ in 0..k / 10 {
                let _ = tx.send("rx", payload.clone()).await;
            }
            Ok(())
        })
        .await?;
    zenoh_count
        .round("zenoh warm-up", k / 10, async {
            for _ in 0..k / 10 {
                publisher.put(zpayload.clone()).await.map_err(z)?;
            }
            Ok(())
        })
        .await?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(
            hail_count
                .round(&format!("{name} hail"), k, hail_send())
                .await?,
        );
        theirs.push(
            zenoh_count
                .round(&format!("{name} zenoh"), k, zenoh_send())
                .await?,
        );
    }
    if rx.dropped_events() > 0 {
        eprintln!(
            "{name}: hail receiver dropped {} events (stream full)",
            rx.dropped_events()
        );
    }

    drop(sub);
    drop(publisher);
    let _ = ztx.close().await;
    let _ = zrx.close().await;
    tx.close().await;
    rx.close().await;
    reader.abort();
    Ok(Record::new(
        name,
        median(&mut ours),
        median(&mut theirs),
        "msg/s",
        Better::Higher,
    ))
}
