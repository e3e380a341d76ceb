//! `peers/ask-N-p50|p99`: one question to N peers, all answers back, in µs.
//!
//! - hail: `Device::ask(Targets::All, q, 5 s)` from an asker device to N devices whose
//!   question handler echoes the question.
//! - zenoh: `Session::get` on `…/ask/*` (target `All`, consolidation `None`, so every
//!   reply is handed over as it comes) from an asker session to N sessions, each with a
//!   queryable that replies with the query's payload; done at the N-th reply.
//!
//! Calls of both alternate one by one; percentiles over all calls after a warm-up.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hail::discovery::{Device, DeviceEvents, Targets};
use hail_benches::harness::{Ctx, Record, latency_records};
use hdrhistogram::Histogram;
use zenoh::Wait;
use zenoh::query::{ConsolidationMode, QueryTarget};

use crate::zconf::{free_udp_port, hail_device, hail_group, until_peers, zenoh_config};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the group.
pub(crate) fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    for n in [1usize, 4, 10] {
        let name = format!("peers/ask-{n}");
        if ctx.wants(&name) {
            let iterations = ctx.pick(300, 2000);
            out.extend(rt.block_on(ask(&name, n, iterations))?);
        }
    }
    Ok(out)
}

struct HailSide {
    asker: Device,
    _asker_events: DeviceEvents,
    peers: Vec<(Device, DeviceEvents)>,
}

async fn hail_side(n: usize) -> anyhow::Result<HailSide> {
    let group = hail_group(free_udp_port()?);
    let (asker, mut asker_events) = hail_device("asker", group).await?;
    let mut peers = Vec::new();
    for i in 0..n {
        let (d, e) = hail_device(&format!("p{i}"), group).await?;
        d.on_question(|_, q| async move { Ok(q) })?;
        peers.push((d, e));
    }
    until_peers(&asker, &mut asker_events, n).await?;
    Ok(HailSide {
        asker,
        _asker_events: asker_events,
        peers,
    })
}

struct ZenohSide {
    asker: zenoh::Session,
    peers: Vec<(zenoh::Session, zenoh::query::Queryable<()>)>,
    selector: String,
}

async fn zenoh_side(n: usize) -> anyhow::Result<ZenohSide> {
    let port = free_udp_port()?;
    let z = |e: zenoh::Error| anyhow::anyhow!("zenoh: {e}");
    let asker = zenoh::open(zenoh_config(port)?).await.map_err(z)?;
    let mut peers = Vec::new();
    for i in 0..n {
        let s = zenoh::open(zenoh_config(port)?).await.map_err(z)?;
        let q = s
            .declare_queryable(format!("hail-peers/ask/{port}/p{i}"))
            .callback(|query| {
                let payload = query.payload().cloned().unwrap_or_default();
                let _ = query.reply(query.key_expr().clone(), payload).wait();
            })
            .await
            .map_err(z)?;
        peers.push((s, q));
    }
    let side = ZenohSide {
        asker,
        peers,
        selector: format!("hail-peers/ask/{port}/*"),
    };
    // Ready when one get reaches every queryable.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if zenoh_get(&side, n, b"ready").await? == n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "zenoh asker did not reach {n} queryables"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(side)
}

/// One get; returns how many replies came (stops waiting at `n`).
async fn zenoh_get(side: &ZenohSide, n: usize, q: &[u8]) -> anyhow::Result<usize> {
    let replies = side
        .asker
        .get(&side.selector)
        .payload(q.to_vec())
        .target(QueryTarget::All)
        .consolidation(ConsolidationMode::None)
        .timeout(TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("zenoh get: {e}"))?;
    let mut got = 0;
    while got < n {
        match replies.recv_async().await {
            Ok(reply) if reply.result().is_ok() => got += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(got)
}

async fn ask(name: &str, n: usize, iterations: usize) -> anyhow::Result<Vec<Record>> {
    let hail = hail_side(n).await?;
    let zenoh = zenoh_side(n).await?;
    let q = Bytes::from_static(b"question");
    let mut ours = Histogram::<u64>::new(3)?;
    let mut theirs = Histogram::<u64>::new(3)?;
    let warm_up = iterations / 10;
    for i in 0..iterations + warm_up {
        let t = Instant::now();
        let answers = hail.asker.ask(Targets::All, q.clone(), TIMEOUT).await;
        let took = t.elapsed();
        anyhow::ensure!(
            answers.len() == n && answers.values().all(Result::is_ok),
            "hail ask {i} of {n} failed: {answers:?}"
        );
        let t = Instant::now();
        let got = zenoh_get(&zenoh, n, &q).await?;
        let took_z = t.elapsed();
        anyhow::ensure!(got == n, "zenoh get {i} reached {got} of {n}");
        if i >= warm_up {
            ours.record(took.as_nanos() as u64)?;
            theirs.record(took_z.as_nanos() as u64)?;
        }
    }
    let records = latency_records(name, &ours, &theirs).into();
    for (d, _) in hail.peers {
        d.close().await;
    }
    hail.asker.close().await;
    for (s, q) in zenoh.peers {
        drop(q);
        let _ = s.close().await;
    }
    let _ = zenoh.asker.close().await;
    Ok(records)
}
