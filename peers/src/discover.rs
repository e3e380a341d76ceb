//! `peers/discover-N`: N participants started at once; time until every one of them sees
//! all the others, in ms (median over the runs, hail and zenoh runs alternating).
//!
//! - hail: `Device::start` of N devices concurrently; done when each has joined N - 1
//!   peers (`PeerJoined`: connected, ready to send).
//! - zenoh: `zenoh::open` of N peer sessions concurrently, each declaring a liveliness
//!   token and a liveliness subscriber (with history) on the run's key space; done when
//!   each has seen the N - 1 other tokens. `open` itself waits up to `scouting/delay`
//!   (500 ms by default) for the scouted peers: that is zenoh's default behaviour.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use hail_benches::harness::{Better, Ctx, Record, median};

use crate::zconf::{free_udp_port, hail_device, hail_group, until_peers, zenoh_config};

/// Runs the group.
pub(crate) fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let runs = ctx.pick(3, 10);
    let mut out = Vec::new();
    for n in [2usize, 10] {
        let name = format!("peers/discover-{n}");
        if !ctx.wants(&name) {
            continue;
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            ours.push(rt.block_on(hail_mesh(n))?);
            theirs.push(rt.block_on(zenoh_mesh(n))?);
        }
        eprintln!("{name}: hail runs {ours:.1?} ms, zenoh runs {theirs:.1?} ms");
        out.push(Record::new(
            name,
            median(&mut ours),
            median(&mut theirs),
            "ms",
            Better::Lower,
        ));
    }
    Ok(out)
}

/// One hail run: ms until all N devices see each other.
async fn hail_mesh(n: usize) -> anyhow::Result<f64> {
    let group = hail_group(free_udp_port()?);
    let t = Instant::now();
    let devices = try_join_all((0..n).map(|i| async move {
        let (d, mut e) = hail_device(&format!("d{i}"), group).await?;
        until_peers(&d, &mut e, n - 1).await?;
        anyhow::Ok((d, e))
    }))
    .await?;
    let took = t.elapsed().as_secs_f64() * 1e3;
    for (d, _) in &devices {
        let seen = d.peers().len();
        if seen < n - 1 {
            // Reported, not fatal: the figure is the time until each had seen all others.
            eprintln!(
                "hail {}: {seen} of {} peers right after the mesh formed",
                d.name(),
                n - 1
            );
        }
    }
    for (d, _) in devices {
        d.close().await;
    }
    Ok(took)
}

/// One zenoh run: ms until all N sessions see each other's liveliness tokens.
async fn zenoh_mesh(n: usize) -> anyhow::Result<f64> {
    let port = free_udp_port()?;
    let space = format!("hail-peers/discover/{port}");
    let t = Instant::now();
    let sessions = try_join_all((0..n).map(|i| {
        let space = space.clone();
        async move {
            let session = zenoh::open(zenoh_config(port)?)
                .await
                .map_err(|e| anyhow::anyhow!("zenoh open: {e}"))?;
            let opened = t.elapsed();
            let me = format!("{space}/d{i}");
            let token = session
                .liveliness()
                .declare_token(me.clone())
                .await
                .map_err(|e| anyhow::anyhow!("zenoh token: {e}"))?;
            let sub = session
                .liveliness()
                .declare_subscriber(format!("{space}/*"))
                .history(true)
                .await
                .map_err(|e| anyhow::anyhow!("zenoh liveliness subscriber: {e}"))?;
            let mut seen = HashSet::new();
            tokio::time::timeout(Duration::from_secs(10), async {
                while seen.len() < n - 1 {
                    let Ok(sample) = sub.recv_async().await else {
                        break;
                    };
                    let key = sample.key_expr().as_str();
                    if key != me && sample.kind() == zenoh::sample::SampleKind::Put {
                        seen.insert(key.to_owned());
                    }
                }
            })
            .await
            .map_err(|_| anyhow::anyhow!("zenoh d{i} saw {} of {} peers", seen.len(), n - 1))?;
            anyhow::ensure!(seen.len() >= n - 1, "zenoh d{i}: subscriber closed");
            anyhow::Ok((session, token, sub, opened))
        }
    }))
    .await?;
    let took = t.elapsed().as_secs_f64() * 1e3;
    let slowest_open = sessions.iter().map(|s| s.3).max().unwrap_or_default();
    eprintln!(
        "zenoh discover-{n}: all saw all after {took:.1} ms, the slowest open() returned after {:.1} ms",
        slowest_open.as_secs_f64() * 1e3
    );
    for (session, token, sub, _) in sessions {
        drop(sub);
        drop(token);
        session
            .close()
            .await
            .map_err(|e| anyhow::anyhow!("zenoh close: {e}"))?;
    }
    Ok(took)
}
