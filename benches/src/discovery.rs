//! hail-discovery: join latency, mesh formation, and ask-many against hand-joined RPC calls.
//!
//! Every device runs in this process on the loopback interface (multicast bound to
//! 127.0.0.1, TTL 1, links on 127.0.0.1).
//!
//! - `discovery/join` and `discovery/join-sealed`: time from `start()` to `PeerJoined`
//!   (connected, ready to send) for a device joining one already-running peer; p50 over the
//!   runs, in ms. The sealed variant uses a group key made beforehand (the key derivation
//!   is configuration, reported by `crypto/derive`). No baseline in the same process
//!   (zenoh's default `open()` waits 500 ms).
//! - `discovery/leave`: time from `shutdown()` on one device to `PeerLeft(Goodbye)` at
//!   its peer, p50 in ms.
//! - `discovery/mesh-N`: N devices started together; time until every one has joined all
//!   others, in ms.
//! - `discovery/ask-N-p50` / `-p99`: `ask` of all N peers (each answers at once) against
//!   the same question sent by hand as N concurrent `hail-rpc` calls joined together, in µs.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hail_crypto::GroupKey;
use hail_discovery::{Device, DeviceEvent, DeviceEvents, Targets};

use crate::harness::{Better, Ctx, Record, median};

/// The RPC method `Device::ask` uses, with arguments (asker's name, question) (private
/// to hail-discovery; named here for the hand-made baseline).
const ASK_METHOD: &str = "hail/ask";

/// Runs the group.
pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    let runs = if ctx.quick { 10 } else { 50 };
    if ctx.wants("discovery/join") {
        out.push(rt.block_on(join("discovery/join", None, runs))?);
    }
    if ctx.wants("discovery/join-sealed") {
        let key = GroupKey::from_bytes([7; 32]);
        out.push(rt.block_on(join("discovery/join-sealed", Some(key), runs))?);
    }
    if ctx.wants("discovery/leave") {
        out.push(rt.block_on(leave("discovery/leave", runs))?);
    }
    let sizes: &[usize] = if ctx.quick { &[10] } else { &[10, 50] };
    for &n in sizes {
        let name = format!("discovery/mesh-{n}");
        if ctx.wants(&name) {
            out.push(rt.block_on(mesh(&name, n))?);
        }
    }
    for n in [1usize, 4, 16] {
        let name = format!("discovery/ask-{n}");
        if ctx.wants(&name) {
            let iterations = if ctx.quick { 200 } else { 2000 };
            out.extend(rt.block_on(ask(&name, n, iterations))?);
        }
    }
    Ok(out)
}

fn group() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(239, 255, 72, 79), 0))
}

async fn start(
    name: &str,
    group: SocketAddr,
    key: Option<GroupKey>,
) -> anyhow::Result<(Device, DeviceEvents)> {
    let mut b = Device::builder(name)
        .group(group)
        .interface(Ipv4Addr::LOCALHOST)
        .listen("127.0.0.1:0".parse()?);
    if let Some(k) = key {
        b = b.group_key(k);
    }
    Ok(b.start().await?)
}

async fn until_peers(d: &Device, events: &mut DeviceEvents, n: usize) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(10), async {
        while d.peers().len() < n {
            if events.recv().await.is_none() {
                break;
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("{} did not see {n} peers", d.name()))
}

async fn join(name: &str, key: Option<GroupKey>, runs: usize) -> anyhow::Result<Record> {
    let (host, _host_events) = start("host", group(), key.clone()).await?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let (d, mut events) = start("joiner", host.group(), key.clone()).await?;
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.recv().await {
                    Some(DeviceEvent::PeerJoined(_)) | None => break,
                    Some(_) => {}
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("no join"))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        d.shutdown().await;
    }
    host.shutdown().await;
    Ok(Record::solo(name, median(&mut times), "ms", Better::Lower))
}

async fn leave(name: &str, runs: usize) -> anyhow::Result<Record> {
    let (host, mut host_events) = start("host", group(), None).await?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (d, _events) = start("leaver", host.group(), None).await?;
        let id = d.id();
        until_peers(&host, &mut host_events, 1).await?;
        let t = Instant::now();
        let bye = tokio::spawn(d.shutdown());
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match host_events.recv().await {
                    Some(DeviceEvent::PeerLeft { peer, .. }) if peer.id == id => break,
                    None => break,
                    Some(_) => {}
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("no leave"))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bye.await?;
    }
    host.shutdown().await;
    Ok(Record::solo(name, median(&mut times), "ms", Better::Lower))
}

async fn mesh(name: &str, n: usize) -> anyhow::Result<Record> {
    let t = Instant::now();
    let (first, first_events) = start("m0", group(), None).await?;
    let g = first.group();
    let mut devices = vec![(first, first_events)];
    for i in 1..n {
        devices.push(start(&format!("m{i}"), g, None).await?);
    }
    for (d, e) in &mut devices {
        until_peers(d, e, n - 1).await?;
    }
    let took = t.elapsed().as_secs_f64() * 1e3;
    for (d, _) in devices {
        d.shutdown().await;
    }
    Ok(Record::solo(name, took, "ms", Better::Lower))
}

async fn ask(name: &str, n: usize, iterations: usize) -> anyhow::Result<Vec<Record>> {
    let (asker, mut asker_events) = start("asker", group(), None).await?;
    let g = asker.group();
    let mut peers = Vec::new();
    for i in 0..n {
        let (d, e) = start(&format!("p{i}"), g, None).await?;
        d.on_question(|_, q| async move { Ok(q) })?;
        peers.push((d, e));
    }
    until_peers(&asker, &mut asker_events, n).await?;
    let names: Vec<String> = peers.iter().map(|(d, _)| d.name().to_owned()).collect();
    let q = Bytes::from_static(b"question");
    let timeout = Duration::from_secs(5);
    let mut ours = Vec::with_capacity(iterations);
    let mut base = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        let t = Instant::now();
        let answers = asker.ask(Targets::All, q.clone(), timeout).await;
        let a = t.elapsed();
        anyhow::ensure!(
            answers.len() == n && answers.values().all(Result::is_ok),
            "ask {i} of {n} failed: {answers:?}"
        );
        let handles: Vec<_> = names
            .iter()
            .map(|p| asker.peer(p))
            .collect::<Result<_, _>>()?;
        let t = Instant::now();
        let calls = handles
            .iter()
            .map(|h| h.execute::<_, Vec<u8>>(ASK_METHOD, ("asker", q.as_ref()), timeout));
        let results = futures_util::future::join_all(calls).await;
        let b = t.elapsed();
        anyhow::ensure!(results.iter().all(Result::is_ok), "rpc failed");
        if i >= iterations / 10 {
            ours.push(a.as_secs_f64() * 1e6);
            base.push(b.as_secs_f64() * 1e6);
        }
    }
    let p = |xs: &mut Vec<f64>, q: f64| {
        xs.sort_by(f64::total_cmp);
        xs[((xs.len() as f64 - 1.0) * q) as usize]
    };
    let records = vec![
        Record::new(
            format!("{name}-p50"),
            p(&mut ours, 0.5),
            p(&mut base, 0.5),
            "us",
            Better::Lower,
        ),
        Record::new(
            format!("{name}-p99"),
            p(&mut ours, 0.99),
            p(&mut base, 0.99),
            "us",
            Better::Lower,
        ),
    ];
    for (d, _) in peers {
        d.shutdown().await;
    }
    asker.shutdown().await;
    Ok(records)
}
