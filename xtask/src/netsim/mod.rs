//! `cargo xtask netsim`: `hail` devices on a simulated LAN, with loss, duplication and
//! faults, as root.
//!
//! ```text
//!   bridge namespace  <pfx>br:   br0 (mcast_snooping 0) -- v0 v1 v2 ... (veth ends)
//!                                                          |  |  |
//!   host namespaces   <pfx>h0, <pfx>h1, ...:             eth0 (10.77.0.<i+1>/24), lo
//! ```
//!
//! `--family` picks the addresses on the veths, one LAN per family in turn: `v4` (the
//! default, above; devices on the group 239.255.77.1, `--interface 10.77.0.<i+1>`), `v6`
//! (only `fe80::<i+1>/64`, no duplicate address detection and no kernel link-local address;
//! `--ula` adds `fd00:0:a:4d00::<i+1>/64`; devices on the link-scoped group `ff02::4d:1`,
//! `--interface fe80::<i+1>`) or `dual` (both; every scenario runs on the IPv4 group, then
//! on the IPv6 group), or `mixed` (a dual-stack LAN whose hosts are cut down to IPv4 only,
//! IPv6 only and both in turn; devices on the default groups, `--interface eth0` and no
//! `--group`; discovery only, a run complete when every device has joined every device
//! it shares a family with, and failed if one joins a device it shares none with). Cells
//! and goals are tagged `v6`, `dual/v4`, `dual/v6`, `mixed` (the IPv4-only
//! LAN's untagged, as before); with `v4` and `v6` (or `dual`) the goals add IPv6 discovery
//! p50 within 1.5x IPv4's of the same run.
//!
//! The namespaces, veths and bridge come from `hail-testsupport` (the crate the namespace
//! tests use too); every namespace is named `hnsim<pid>-...`, so parallel runs cannot
//! collide, and nothing touches the host's own network: the bridge lives in a namespace of
//! its own, multicast goes out of each host's `eth0` only (`--interface`, TTL or hop limit
//! 1 by default). Loss is an nftables `numgen random` drop on input inside each host
//! namespace, duplication an nftables `dup` on output (IPv4 and IPv6 tables); a partition
//! is a further input drop of the other half's addresses (an `inet` table, every address of
//! theirs; on IPv6 that includes neighbour discovery, on IPv4 ARP passes).
//! Each device is `hail listen --json` (crates/hail-cli, built once in release mode) run
//! with `ip netns exec`; its JSON lines are timestamped on arrival.
//!
//! Everything is removed afterwards: a guard's `Drop` kills what runs in the namespaces
//! and deletes them, on success, error or panic; SIGINT, SIGTERM and SIGHUP are blocked
//! and waited for by a thread that does the same and exits. Namespaces left by a run that
//! was killed outright (its pid gone) are removed at the next start.
//!
//! Scenarios (each in every `--modes` mode, plain and sealed with a passphrase):
//! - discovery: N devices start at once; the time from the last one's start until every
//!   device has joined every other, for each size and loss rate, `--runs` times.
//! - kill: a device is killed with SIGKILL, as a process (its kernel closes its
//!   connections) and as a host (its namespace cut off first, then SIGKILL); the time
//!   until every other device has reported it gone.
//! - partition: nft drops between two halves until each half has seen the other leave;
//!   then the cut is lifted, and the time until the mesh is whole again is measured.
//! - restart: a device is killed and started again under the same name; every other
//!   device must join the new incarnation (new id), and afterwards each pair holds exactly
//!   one established TCP connection (`ss`), none to the dead process: checked 2 s after
//!   the new id is joined (a miss there is noted as "settled late") and failed if still
//!   wrong 5 s later.
//!
//! Where it cannot run (not root, no `ip`, no `nft`, namespaces refused) it prints
//! `netsim: skipped: <reason>` and succeeds.
//!
//! Files: `args.rs` the options, `lan.rs` the LAN (impairment, partitions, cleanup,
//! signals, `ss`), `sim.rs` the device processes and what they print, `scenarios.rs` the
//! four scenarios, `report.rs` the cells, goals and `latest.json`.

mod args;
mod lan;
mod report;
mod scenarios;
mod sim;

use std::time::Instant;

use anyhow::{Context, bail};

pub(crate) use args::{Args, Flags};
use args::{Family, Scenario};
use report::{Net, Results, Runs, secs};
use scenarios::Runner;
use sim::build_hail;

use crate::cmd;

/// Builds the LAN, runs the scenarios, prints the figures and the goals.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let pid = std::process::id();
    let prefix = format!("{}{pid}-", lan::PREFIX);
    let namespaces = match lan::open(&prefix)? {
        Ok(namespaces) => namespaces,
        Err(why) => {
            println!("netsim: skipped: {why}");
            return Ok(());
        }
    };
    // Built before signals are watched: a Ctrl-C during the build ends it as usual.
    let hail = build_hail()?;
    lan::watch_signals(prefix.clone())?;
    lan::remove_stale();
    let out_dir = cmd::root().join("target").join("netsim");
    let logs = out_dir.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let hosts = args.hosts();
    let started = Instant::now();
    let mut runs = Runs::default();
    let mut namespaces = Some(namespaces);
    for &family in &args.families {
        // The first LAN takes the probed guard; each later one a fresh guard of the same
        // prefix (the previous LAN and its namespaces are gone by then).
        let namespaces = match namespaces.take() {
            Some(ns) => ns,
            None => match lan::open(&prefix)? {
                Ok(ns) => ns,
                Err(why) => bail!("namespaces refused after the first LAN: {why}"),
            },
        };
        let t_lan = Instant::now();
        println!(
            "\nnetsim: {hosts} host namespaces ({prefix}h*) on a bridge in {prefix}br, {}; device logs in {}",
            describe(family, args.ula),
            logs.display()
        );
        let mut lan = if family == Family::Mixed {
            lan::Lan::create_mixed(namespaces, hosts)?
        } else {
            lan::Lan::create(namespaces, hosts, family.support(), args.ula)?
        };
        println!("netsim: LAN up in {}", secs(Some(t_lan.elapsed())));
        let mut runner = Runner::new(&mut lan, &hail, &logs, args.dup);
        for &v6 in family.groups() {
            let net = Net { family, v6 };
            runner.group(v6, net.tag());
            if family == Family::Dual {
                println!(
                    "\n==== {}: devices on the {} group",
                    net.name(),
                    if v6 { "IPv6" } else { "IPv4" }
                );
            }
            let results = if family == Family::Mixed {
                mixed(&mut runner, args)?
            } else {
                scenarios(&mut runner, args)?
            };
            runs.0.push((net, results));
        }
        drop(runner);
        drop(lan);
    }

    let goals = runs.goals();
    let missed = report::print_goals(&goals);
    let broken = runs.broken();
    report::write_json(&out_dir, args, &runs, &goals)?;
    println!(
        "netsim: done in {}; figures in {}",
        secs(Some(started.elapsed())),
        out_dir.join("latest.json").display()
    );
    if broken > 0 {
        bail!("{broken} run(s) failed (see above)");
    }
    if args.strict && missed > 0 {
        bail!("{missed} goal(s) missed");
    }
    Ok(())
}

/// One line on a LAN's addresses.
fn describe(family: Family, ula: bool) -> &'static str {
    match (family, ula) {
        (Family::V4, _) => "IPv4 only (10.77.0.<i+1>/24)",
        (Family::V6, false) => "IPv6 only (fe80::<i+1>/64, no IPv4 address)",
        (Family::V6, true) => {
            "IPv6 only (fe80::<i+1>/64 and fd00:0:a:4d00::<i+1>/64, no IPv4 address)"
        }
        (Family::Dual, false) => "dual-stack (10.77.0.<i+1>/24 and fe80::<i+1>/64)",
        (Family::Dual, true) => {
            "dual-stack (10.77.0.<i+1>/24, fe80::<i+1>/64 and fd00:0:a:4d00::<i+1>/64)"
        }
        (Family::Mixed, _) => {
            "mixed: host i IPv4-only (i % 3 = 0), IPv6-only (1) or dual-stack (2), devices on the default groups"
        }
    }
}

/// The mixed LAN's one scenario: discovery on the default groups, each device joining
/// those it shares a family with (`args.scenarios` and `--ula` do not apply).
fn mixed(runner: &mut Runner<'_>, args: &Args) -> anyhow::Result<Results> {
    println!(
        "\n== discovery on the defaults: each joins those it shares a family with (dual-stack hosts: all), from the last device's start ({} runs each)",
        args.runs
    );
    let mut results = Results::default();
    for &mode in &args.modes {
        for &n in &args.sizes {
            for &loss in &args.loss {
                let cell = runner.discovery(mode, n, loss, args.runs)?;
                results.discovery.push((mode, n, loss, cell));
            }
        }
    }
    Ok(results)
}

/// Runs the scenarios `args` asks for with `runner`'s LAN and group.
fn scenarios(runner: &mut Runner<'_>, args: &Args) -> anyhow::Result<Results> {
    let mut results = Results::default();
    let has = |s: Scenario| args.scenarios.contains(&s);
    if has(Scenario::Discovery) {
        println!(
            "\n== discovery: all see all, from the last device's start ({} runs each)",
            args.runs
        );
        for &mode in &args.modes {
            for &n in &args.sizes {
                for &loss in &args.loss {
                    let cell = runner.discovery(mode, n, loss, args.runs)?;
                    results.discovery.push((mode, n, loss, cell));
                }
            }
        }
    }
    let (n, loss, fr) = (args.fault_size, args.fault_loss, args.fault_runs);
    if has(Scenario::Kill) {
        println!(
            "\n== kill: SIGKILL of one device, until every other reports it gone ({fr} runs each)"
        );
        for &mode in &args.modes {
            results.kill.push(runner.kill(mode, n, loss, fr, false)?);
            results
                .host_gone
                .push(runner.kill(mode, n, loss, fr, true)?);
        }
    }
    if has(Scenario::Partition) {
        println!(
            "\n== partition: two halves cut apart until each sees the other gone, then healed; time to one mesh ({fr} runs each)"
        );
        for &mode in &args.modes {
            results.partition.push(runner.partition(mode, n, loss, fr)?);
        }
    }
    if has(Scenario::Restart) {
        println!(
            "\n== restart: SIGKILL and start again under the same name; time until all joined the new id ({fr} runs each)"
        );
        for &mode in &args.modes {
            results.restart.push(runner.restart(mode, n, loss, fr)?);
        }
    }
    Ok(results)
}
