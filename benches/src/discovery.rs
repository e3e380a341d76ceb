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
//! - `discovery/join-veth6` (baseline: the same join over an IPv4 veth pair): see
//!   [`veth`](crate::veth); in namespaces, root only.
//! - `discovery/leave`: time from `close()` on one device to `PeerLeft(Goodbye)` at
//!   its peer, p50 in ms.
//! - `discovery/mesh-N`: N devices started together; time until every one has joined all
//!   others, in ms.
//! - `discovery/send-64B` and `discovery/send-1KiB`: messages one way from one device to
//!   its linked peer on the steady path (`Device::to`, then `PeerSender::send`), until the peer's event stream delivered every message,
//!   against a bare `hail-link` connection with the same security as the device's links
//!   (each end proves an identity key of its own, Noise `XX`, every frame sealed: a
//!   device's links always are) carrying the same messages in the same run, interleaved;
//!   messages per second.
//! - `discovery/ask-N-p50` / `-p99`: `ask` of all N peers (each answers at once) against
//!   the same question sent by hand as N concurrent `hail-rpc` calls joined together, in µs.
//! - `discovery/memory-idle-device`: resident memory (RSS growth) per running device that
//!   has no peer (its multicast channel, listener, table, task), in bytes. No baseline.
//! - `discovery/memory-per-peer`: RSS growth per connected peer of a device (one link end,
//!   its RPC peer, the table's entry), from a full mesh of M devices less M idle devices,
//!   divided by M·(M−1); against a bare `hail-link` connection end (both ends of
//!   M·(M−1)/2 plain connections in the same process), in bytes. Every figure is kept
//!   alive until the next is measured, so freed memory is not reused and hidden; and the
//!   two run in a child process of their own (this binary again, filtered), whose heap
//!   holds no memory freed by the benchmarks before.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hail_crypto::{GroupKey, Identity};
use hail_discovery::{Device, DeviceEvent, DeviceEvents, Targets};
use hail_link::{Connection, LinkConfig, Server, ServerConfig};
use hail_wire::Binary;

use crate::harness::{Better, Ctx, Record, interleaved_rate, median, rss};

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
    if ctx.wants_one("discovery/join") {
        out.push(rt.block_on(join("discovery/join", None, runs))?);
    }
    if ctx.wants("discovery/join-sealed") {
        let key = GroupKey::from_bytes([7; 32]);
        out.push(rt.block_on(join("discovery/join-sealed", Some(key), runs))?);
    }
    if ctx.wants("discovery/join-veth") {
        out.extend(crate::veth::join_veth(runs)?);
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
    if ctx.wants("discovery/memory") {
        if std::env::var_os(MEMORY_CHILD).is_some() {
            let m = if ctx.quick { 10 } else { 20 };
            out.extend(rt.block_on(memory(m))?);
        } else {
            out.extend(memory_in_child(ctx.quick)?);
        }
    }
    for (label, size, n) in [("64B", 64usize, 100_000usize), ("1KiB", 1024, 50_000)] {
        let name = format!("discovery/send-{label}");
        if ctx.wants(&name) {
            let budget = Duration::from_millis(ctx.pick(1500, 5000));
            out.push(send(&rt, budget, &name, size, ctx.pick(n / 5, n))?);
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

/// `discovery/send-*`: see the module docs.
fn send(
    rt: &tokio::runtime::Runtime,
    budget: Duration,
    name: &str,
    size: usize,
    n: usize,
) -> anyhow::Result<Record> {
    let msg = Bytes::from(vec![0xa5u8; size]);
    let (lamp, lamp_events, switch, _switch_events) = rt.block_on(async {
        let g = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 85), 0));
        let (lamp, mut le) = start("lamp", g, None).await?;
        let (switch, mut se) = start("switch", lamp.group(), None).await?;
        until_peers(&switch, &mut se, 1).await?;
        until_peers(&lamp, &mut le, 1).await?;
        anyhow::Ok((lamp, le, switch, se))
    })?;
    let mut lamp_events = Some(lamp_events);
    let switch = std::sync::Arc::new(switch);
    // The same security as the device's links: each end proves an identity of its own
    // (Noise XX), every frame sealed.
    let link_with = |id: &Identity| LinkConfig::builder().identity(id).build();
    let mut link = crate::link::pair_of(
        rt,
        link_with(&Identity::generate()?)?,
        link_with(&Identity::generate()?)?,
    )?;
    anyhow::ensure!(
        link.is_secure(),
        "the baseline link is sealed, as the device's are"
    );
    let (a, b) = interleaved_rate(
        budget,
        n as u64,
        || {
            let mut events = lamp_events.take().expect("events");
            let (switch, m) = (switch.clone(), msg.clone());
            lamp_events = Some(rt.block_on(async move {
                let sender = tokio::spawn(async move {
                    let mut lamp = switch.to("lamp").expect("joined");
                    for _ in 0..n {
                        lamp.send(&m).await.expect("send");
                    }
                });
                // A task on the runtime, as the sender, and as the baseline's receiver.
                let receiver = tokio::spawn(async move {
                    let mut got = 0;
                    while got < n {
                        match events.recv().await {
                            Some(DeviceEvent::Message { .. }) => got += 1,
                            Some(_) => {}
                            None => panic!("lamp's events ended"),
                        }
                    }
                    events
                });
                sender.await.expect("sender");
                receiver.await.expect("receiver")
            }));
        },
        || crate::link::one_way(rt, &mut link, &msg, n),
    );
    assert_eq!(lamp.dropped_events(), 0, "no message dropped");
    if let Ok(switch) = std::sync::Arc::try_unwrap(switch) {
        rt.block_on(switch.close());
    }
    rt.block_on(lamp.close());
    Ok(Record::new(name, a, b, "msg/s", Better::Higher))
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

/// Waits (at most 10 s) for the first `PeerJoined` on `events`.
pub(crate) async fn first_join(events: &mut DeviceEvents) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Some(DeviceEvent::PeerJoined(_)) | None => break,
                Some(_) => {}
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no join within 10 s"))
}

async fn join(name: &str, key: Option<GroupKey>, runs: usize) -> anyhow::Result<Record> {
    let (host, _host_events) = start("host", group(), key.clone()).await?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        // The host answers a newcomer's announce at once but at most every 50 ms
        // (MIN_ANSWER_GAP): runs closer together would time that gap, not a join.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let t = Instant::now();
        let (d, mut events) = start("joiner", host.group(), key.clone()).await?;
        first_join(&mut events).await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        d.close().await;
    }
    host.close().await;
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
        let bye = tokio::spawn(d.close());
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
    host.close().await;
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
        d.close().await;
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
            .map(|h| h.execute::<_, Vec<u8>>(ASK_METHOD, q.as_ref(), timeout));
        let results = futures_util::future::join_all(calls).await;
        let b = t.elapsed();
        // The question alone: the asker is the link's proven peer, never a payload field.
        anyhow::ensure!(
            results.iter().all(Result::is_ok),
            "rpc failed: {:?}",
            results.iter().find(|r| r.is_err())
        );
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
        d.close().await;
    }
    asker.close().await;
    Ok(records)
}

/// Reads a device's events until it stops, so none pile up in its stream.
fn drain(mut events: DeviceEvents) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while events.recv().await.is_some() {} })
}

/// Waits until every device has `n` peers and exactly `n` links (duplicates gone).
async fn until_mesh(devices: &[Device], n: usize) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !devices
            .iter()
            .all(|d| d.peers().len() == n && d.links() == n)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the mesh of {} did not settle", devices.len()))
}

/// RSS growth per idle device and per connected peer (see the module docs).
async fn memory(m: usize) -> anyhow::Result<Vec<Record>> {
    let settle = || tokio::time::sleep(Duration::from_millis(300));
    let mut keep: Vec<Device> = Vec::new();
    let mut drains = Vec::new();
    // Warm-up, kept alive: a pair of devices (runtime, first-use allocations).
    let (w0, e0) = start("warm0", group(), None).await?;
    let (w1, e1) = start("warm1", w0.group(), None).await?;
    drains.extend([drain(e0), drain(e1)]);
    keep.extend([w0, w1]);
    until_mesh(&keep, 1).await?;
    settle().await;

    // Idle devices, each alone in a group of its own.
    let r0 = rss()?;
    for i in 0..m {
        let (d, e) = start(&format!("idle{i}"), group(), None).await?;
        drains.push(drain(e));
        keep.push(d);
    }
    settle().await;
    let r1 = rss()?;
    let idle = r1.saturating_sub(r0) as f64 / m as f64;

    // Bare hail-link connections: as many as the mesh has links, both ends here.
    let pairs = m * (m - 1) / 2;
    let (server, mut server_events) = Server::bind(
        "127.0.0.1:0".parse()?,
        ServerConfig::builder().max_clients(pairs + 8).build()?,
        Binary,
    )
    .await?;
    let server_drain = tokio::spawn(async move { while server_events.recv().await.is_some() {} });
    let mut bare = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        bare.push(Connection::connect(server.local_addr(), LinkConfig::default(), Binary).await?);
    }
    tokio::time::timeout(Duration::from_secs(20), async {
        while server.stats().clients < pairs {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("bare connections not admitted"))?;
    settle().await;
    let r2 = rss()?;
    let per_end = r2.saturating_sub(r1) as f64 / (2 * pairs) as f64;

    // A full mesh of m devices.
    let (first, e) = start("mesh0", group(), None).await?;
    let g = first.group();
    drains.push(drain(e));
    let mut mesh = vec![first];
    for i in 1..m {
        let (d, e) = start(&format!("mesh{i}"), g, None).await?;
        drains.push(drain(e));
        mesh.push(d);
    }
    until_mesh(&mesh, m - 1).await?;
    settle().await;
    let r3 = rss()?;
    let per_peer = (r3.saturating_sub(r2) as f64 - m as f64 * idle) / (m * (m - 1)) as f64;

    for d in mesh.into_iter().chain(keep) {
        d.close().await;
    }
    drop(bare);
    server.close(Duration::from_millis(100)).await;
    server_drain.abort();
    for d in drains {
        d.abort();
    }
    Ok(vec![
        Record::solo("discovery/memory-idle-device", idle, "bytes", Better::Lower),
        Record::new(
            format!("discovery/memory-per-peer-{m}"),
            per_peer,
            per_end,
            "bytes",
            Better::Lower,
        ),
    ])
}

/// Set in the child process that measures memory.
const MEMORY_CHILD: &str = "HAIL_BENCH_MEMORY_CHILD";

/// Runs the memory figures in a fresh process (this binary, filtered to them) and reads
/// its records back.
fn memory_in_child(quick: bool) -> anyhow::Result<Vec<Record>> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd
        .arg("discovery/memory")
        .env(MEMORY_CHILD, "1")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run the memory benchmark's child process")?;
    anyhow::ensure!(out.status.success(), "memory child failed: {}", out.status);
    let mut records = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).context("a child record")?;
        let name = v["name"].as_str().context("name")?;
        let ours = v["ours"].as_f64().context("ours")?;
        let baseline = v["baseline"].as_f64().unwrap_or(f64::NAN);
        records.push(Record::new(name, ours, baseline, "bytes", Better::Lower));
    }
    anyhow::ensure!(records.len() == 2, "memory child gave {records:?}");
    Ok(records)
}
