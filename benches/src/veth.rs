//! `discovery/join-veth6` against `discovery/join-veth4` (issue 17's goal: a join over an
//! IPv6 veth pair within 1.5x the join over an IPv4 veth pair, side by side): two network
//! namespaces joined by two veth pairs, one carrying only IPv6 link-local addresses
//! (`fe80::a`, `fe80::b`; group `[ff02::4a1:97]`, link scope), one only IPv4 (10.96.0.1/24,
//! 10.96.0.2/24; group 239.255.72.97, TTL 1). A host device runs on each pair in one
//! namespace; in the other a joiner is started again and again, alternating the pairs, and
//! the time from `start()` to `PeerJoined` is taken (as `discovery/join` does on loopback);
//! p50 in ms, IPv6 as ours and IPv4 as the baseline. Both use the default listener (`[::]`).
//! Root only (namespaces): elsewhere it prints why and reports nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hail_discovery::Device;
use hail_testsupport::{Namespaces, in_netns, ip, link_local_pair, veth};

use crate::discovery::first_join;
use crate::harness::{Better, Record, median};

const GROUP4: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(Ipv4Addr::new(239, 255, 72, 97)),
    47_797,
);

fn group6() -> SocketAddr {
    "[ff02::4a1:97]:47798".parse().expect("a group")
}

/// A current-thread runtime for a namespace's thread.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs the pair of figures; `None` (with the reason printed) where namespaces cannot be
/// made.
pub fn join_veth(runs: usize) -> anyhow::Result<Option<Record>> {
    let mut ns = match Namespaces::for_test("bj") {
        Ok(ns) => ns,
        Err(e) => {
            hail_testsupport::skip(&format!("discovery/join-veth: {e}"));
            return Ok(None);
        }
    };
    let (a, b) = link_local_pair(&mut ns)?;
    veth((&a, "w0"), (&b, "w1"))?;
    for (n, i, addr) in [(&a, "w0", "10.96.0.1/24"), (&b, "w1", "10.96.0.2/24")] {
        ip(&["-n", n, "addr", "add", addr, "dev", i])?;
        ip(&["-n", n, "route", "add", "224.0.0.0/4", "dev", i])?;
    }
    // The hosts run until the joiner is done.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
    let hosts = in_netns(&a, move || -> anyhow::Result<()> {
        runtime()?.block_on(async move {
            let started = async {
                let v4 = Device::builder("host4")
                    .group(GROUP4)
                    .interface("w0")
                    .start()
                    .await?;
                let v6 = Device::builder("host6")
                    .group(group6())
                    .interface("v0")
                    .start()
                    .await?;
                anyhow::Ok((v4, v6))
            }
            .await;
            let ((v4, _e4), (v6, _e6)) = match started {
                Ok(d) => {
                    let _ = ready_tx.send(Ok(()));
                    d
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("hosts: {e}")));
                    return Ok(());
                }
            };
            tokio::task::spawn_blocking(move || stop_rx.recv_timeout(Duration::from_secs(600)))
                .await?
                .ok();
            v4.close().await;
            v6.close().await;
            Ok(())
        })
    });
    ready_rx.recv().context("the hosts' thread")??;
    let joiner = in_netns(&b, move || -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        runtime()?.block_on(async move {
            let (mut t4, mut t6) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
            for _ in 0..runs {
                for (v6, times) in [(false, &mut t4), (true, &mut t6)] {
                    // The hosts answer a newcomer's announce at once but at most every
                    // 50 ms (MIN_ANSWER_GAP): runs closer together would time that gap.
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    let (group, iface) = if v6 { (group6(), "v1") } else { (GROUP4, "w1") };
                    let t = Instant::now();
                    let (d, mut events) = Device::builder("joiner")
                        .group(group)
                        .interface(iface)
                        .start()
                        .await?;
                    first_join(&mut events)
                        .await
                        .with_context(|| format!("over the {iface} pair"))?;
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                    d.close().await;
                }
            }
            Ok((t4, t6))
        })
    });
    let timed = joiner.join();
    let _ = stop_tx.send(());
    let hosts = hosts.join();
    let (mut t4, mut t6) = timed.map_err(|_| anyhow::anyhow!("the joiner panicked"))??;
    hosts.map_err(|_| anyhow::anyhow!("the hosts panicked"))??;
    Ok(Some(Record::new(
        "discovery/join-veth6",
        median(&mut t6),
        median(&mut t4),
        "ms",
        Better::Lower,
    )))
}
