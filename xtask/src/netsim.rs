//! `cargo xtask netsim`: `hail` devices on a simulated LAN, with loss, duplication and
//! faults, as root.
//!
//! ```text
//!   bridge namespace  <pfx>-br:   br0 (mcast_snooping 0) -- v0 v1 v2 ... (veth ends)
//!                                                            |  |  |
//!   host namespaces   <pfx>-h0, <pfx>-h1, ...:             eth0 (10.77.0.<i+1>/24), lo
//! ```
//!
//! Every namespace is made here and named `hnsim<pid>-...`, so parallel runs cannot
//! collide, and nothing touches the host's own network: the bridge lives in a namespace of
//! its own, multicast goes out of each host's `eth0` only (`--interface`, TTL 1 by
//! default). Loss is an nftables `numgen random` drop on input inside each host namespace,
//! duplication an nftables `dup` on output; a partition is a further input drop of the
//! other half's addresses. Each device is `hail listen --json` (crates/hail-cli, built once
//! in release mode) run with `ip netns exec`; its JSON lines are timestamped on arrival.
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cmd;

/// Every namespace name of every run starts with this, then the pid of the run.
const PREFIX: &str = "hnsim";
/// How long a discovery run may take before it counts as failed: 30 s.
const GIVE_UP: Duration = Duration::from_secs(30);
/// How long N devices may take to start (sealed: PBKDF2 in each): 60 s.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a fault may take to be noticed before the run counts as failed: 20 s.
const FAULT_LIMIT: Duration = Duration::from_secs(20);
/// After a restart has been recognised, how long links get to settle before `ss` counts
/// them: 2 s.
const SETTLE: Duration = Duration::from_secs(2);
/// When links have not settled after [`SETTLE`], how much longer they get before the
/// run fails: 5 s.
const SETTLE_MORE: Duration = Duration::from_secs(5);
/// The passphrase of the sealed mode.
const PASSPHRASE: &str = "netsim sealed mode";
/// Held while a device starts, and by the signal thread from a signal to the exit, so no
/// device can start in a namespace that is being removed.
static SPAWNING: Mutex<()> = Mutex::new(());
/// The most hosts one LAN holds (one /24).
const MAX_HOSTS: usize = 200;

/// Goal: N = 10 at 10% loss, every run all see all within this: 5 s.
const GOAL_DISCOVERY: Duration = Duration::from_secs(5);
/// Goal: a killed host is reported gone by every other device within this: 3 s.
const GOAL_GONE: Duration = Duration::from_secs(3);
/// Goal: a healed partition is one mesh again within this: 2 s.
const GOAL_HEAL: Duration = Duration::from_secs(2);

/// Plain (no passphrase) or sealed (`HAIL_PASSPHRASE` set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Mode {
    Plain,
    Sealed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Sealed => "sealed",
        }
    }
}

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scenario {
    Discovery,
    Kill,
    Partition,
    Restart,
}

impl Scenario {
    const ALL: [Self; 4] = [Self::Discovery, Self::Kill, Self::Partition, Self::Restart];

    fn name(self) -> &'static str {
        match self {
            Self::Discovery => "discovery",
            Self::Kill => "kill",
            Self::Partition => "partition",
            Self::Restart => "restart",
        }
    }
}

/// Parsed arguments, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Args {
    /// Discovery runs per size and loss rate. Default 20 (3 with `--quick`).
    runs: usize,
    /// Discovery sizes. Default 5, 10, 25 (5 with `--quick`).
    sizes: Vec<usize>,
    /// Discovery loss rates, percent. Default 0, 10, 20 (10 with `--quick`).
    loss: Vec<u8>,
    /// Duplication, percent of sent packets, wherever loss is above 0. Default 2.
    dup: u8,
    /// Runs of each fault scenario. Default 5 (1 with `--quick`).
    fault_runs: usize,
    /// Devices in the fault scenarios. Default 10 (5 with `--quick`).
    fault_size: usize,
    /// Loss rate of the fault scenarios, percent. Default 10.
    fault_loss: u8,
    /// Modes. Default plain and sealed.
    modes: Vec<Mode>,
    /// Scenarios. Default all.
    scenarios: Vec<Scenario>,
    /// A missed goal fails the command (it always fails on a broken check). Default off.
    strict: bool,
}

impl Args {
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut quick = false;
        let mut strict = false;
        let (mut runs, mut sizes, mut loss, mut dup) = (None, None, None, None);
        let (mut fault_runs, mut fault_size, mut fault_loss) = (None, None, None);
        let (mut modes, mut scenarios) = (None, None);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("netsim: {name} needs a value"))
            };
            match arg.as_str() {
                "--quick" => quick = true,
                "--strict" => strict = true,
                "--runs" => runs = Some(number(&value("--runs")?, "--runs", 1, 10_000)?),
                "--sizes" => sizes = Some(list(&value("--sizes")?, "--sizes", 2, MAX_HOSTS)?),
                "--loss" => loss = Some(percents(&value("--loss")?, "--loss")?),
                "--dup" => dup = Some(percent(&value("--dup")?, "--dup")?),
                "--fault-runs" => {
                    fault_runs = Some(number(&value("--fault-runs")?, "--fault-runs", 1, 1000)?);
                }
                "--fault-size" => {
                    fault_size = Some(number(
                        &value("--fault-size")?,
                        "--fault-size",
                        4,
                        MAX_HOSTS,
                    )?);
                }
                "--fault-loss" => {
                    fault_loss = Some(percent(&value("--fault-loss")?, "--fault-loss")?)
                }
                "--modes" => modes = Some(parse_modes(&value("--modes")?)?),
                "--scenarios" => scenarios = Some(parse_scenarios(&value("--scenarios")?)?),
                other => return Err(format!("netsim: unknown option {other}")),
            }
        }
        Ok(Self {
            runs: runs.unwrap_or(if quick { 3 } else { 20 }),
            sizes: sizes.unwrap_or_else(|| if quick { vec![5] } else { vec![5, 10, 25] }),
            loss: loss.unwrap_or_else(|| if quick { vec![10] } else { vec![0, 10, 20] }),
            dup: dup.unwrap_or(2),
            fault_runs: fault_runs.unwrap_or(if quick { 1 } else { 5 }),
            fault_size: fault_size.unwrap_or(if quick { 5 } else { 10 }),
            fault_loss: fault_loss.unwrap_or(10),
            modes: modes.unwrap_or_else(|| vec![Mode::Plain, Mode::Sealed]),
            scenarios: scenarios.unwrap_or_else(|| Scenario::ALL.to_vec()),
            strict,
        })
    }

    fn runs_faults(&self) -> bool {
        self.scenarios.iter().any(|s| *s != Scenario::Discovery)
    }

    /// Hosts the LAN needs: the largest size of any scenario that runs.
    fn hosts(&self) -> usize {
        let mut n = 0;
        if self.scenarios.contains(&Scenario::Discovery) {
            n = self.sizes.iter().copied().max().unwrap_or(0);
        }
        if self.runs_faults() {
            n = n.max(self.fault_size);
        }
        n
    }
}

fn number(s: &str, flag: &str, min: usize, max: usize) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "netsim: {flag} takes a number from {min} to {max} (got `{s}`)"
        )),
    }
}

fn list(s: &str, flag: &str, min: usize, max: usize) -> Result<Vec<usize>, String> {
    let mut out: Vec<usize> = s
        .split(',')
        .map(|p| number(p, flag, min, max))
        .collect::<Result<_, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn percent(s: &str, flag: &str) -> Result<u8, String> {
    let s = s.trim().trim_end_matches('%');
    match s.parse::<u8>() {
        Ok(p) if p < 100 => Ok(p),
        _ => Err(format!(
            "netsim: {flag} takes percents from 0 to 99 (got `{s}`)"
        )),
    }
}

fn percents(s: &str, flag: &str) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = s
        .split(',')
        .map(|p| percent(p, flag))
        .collect::<Result<_, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_modes(s: &str) -> Result<Vec<Mode>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        out.push(match part.trim() {
            "plain" => Mode::Plain,
            "sealed" => Mode::Sealed,
            other => return Err(format!("netsim: unknown mode `{other}` (plain, sealed)")),
        });
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_scenarios(s: &str) -> Result<Vec<Scenario>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        match Scenario::ALL.iter().find(|sc| sc.name() == part) {
            Some(sc) => out.push(*sc),
            None => {
                return Err(format!(
                    "netsim: unknown scenario `{part}` (discovery, kill, partition, restart)"
                ));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Pure helpers: percentiles, nft rule text, `ss` output, `/proc` status.

/// The `p`th percentile (0 < p <= 100) by the nearest-rank method: the smallest value
/// with at least p% of the values at or below it. `None` for no values.
pub(crate) fn percentile(values: &[Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The nft script that sets a host's loss (input) and duplication (output) on `eth0`,
/// replacing what was there; with both 0 it only removes the table.
fn impairment_rules(loss: u8, dup: u8) -> String {
    // Creating the table first makes the delete succeed whether or not it existed: one
    // atomic replacement.
    let mut s = String::from("table ip netsim {}\ndelete table ip netsim\n");
    if loss == 0 && dup == 0 {
        return s;
    }
    s.push_str("table ip netsim {\n");
    if loss > 0 {
        let _ = writeln!(
            s,
            "  chain input {{ type filter hook input priority -300; policy accept;\n    \
             iifname \"eth0\" numgen random mod 100 < {loss} drop\n  }}"
        );
    }
    if dup > 0 {
        let _ = writeln!(
            s,
            "  chain output {{ type filter hook output priority -300; policy accept;\n    \
             oifname \"eth0\" numgen random mod 100 < {dup} dup to ip daddr device \"eth0\"\n  }}"
        );
    }
    s.push_str("}\n");
    s
}

/// The nft script that drops every packet from `from` on input (a partition, seen from
/// one side), replacing what was there; with no addresses it only removes the table.
fn cut_rules(from: &[Ipv4Addr]) -> String {
    let mut s = String::from("table ip netsim_cut {}\ndelete table ip netsim_cut\n");
    if from.is_empty() {
        return s;
    }
    let set: Vec<String> = from.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        s,
        "table ip netsim_cut {{\n  chain input {{ type filter hook input priority -310; \
         policy accept;\n    ip saddr {{ {} }} drop\n  }}\n}}",
        set.join(", ")
    );
    s
}

/// The nft script that cuts a host off entirely (its death, as its peers see it): every
/// packet in and out of `eth0` dropped, including the kernel's FIN and RST.
fn isolate_rules() -> String {
    "table ip netsim_cut {}\ndelete table ip netsim_cut\ntable ip netsim_cut {\n  \
     chain input { type filter hook input priority -310; policy accept;\n    \
     iifname \"eth0\" drop\n  }\n  \
     chain output { type filter hook output priority -310; policy accept;\n    \
     oifname \"eth0\" drop\n  }\n}\n"
        .to_owned()
}

/// The (local, peer) addresses of `ss -Htn state established` output.
fn established(ss: &str) -> Vec<(String, String)> {
    ss.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Recv-Q Send-Q Local:Port Peer:Port [Process]
            let local = fields.get(2)?;
            let peer = fields.get(3)?;
            (local.contains(':') && peer.contains(':'))
                .then(|| ((*local).to_owned(), (*peer).to_owned()))
        })
        .collect()
}

/// The IP part of `ip:port` (IPv4; IPv6 in brackets is returned without them).
fn host_part(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The effective uid in the text of `/proc/self/status`.
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The pid in a namespace name `hnsim<pid>-...`, if it is one of ours.
fn owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// A duration in seconds with two decimals, or `-`.
fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

// ---------------------------------------------------------------------------------------
// Commands.

fn ip(args: &[&str]) -> anyhow::Result<()> {
    cmd::run(Command::new("ip").args(args).stdout(Stdio::null()))
}

fn ip_out(args: &[&str]) -> anyhow::Result<String> {
    cmd::stdout(Command::new("ip").args(args))
}

/// Runs the nft script `rules` inside namespace `ns`.
fn nft(ns: &str, rules: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(rules.as_bytes())
        .context("writing nft rules")?;
    let status = child.wait().context("waiting for nft")?;
    if !status.success() {
        bail!("nft in {ns} failed ({status}) on:\n{rules}");
    }
    Ok(())
}

/// Whether `program --version`-like `args` runs.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Our namespaces (`hnsim<pid>-...`) as `ip netns list` shows them.
fn our_namespaces() -> Vec<String> {
    ip_out(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Kills every process in the namespaces whose names start with `prefix`, then deletes
/// the namespaces. Best effort: it runs on every exit path.
fn remove_namespaces(prefix: &str) {
    for ns in our_namespaces().iter().filter(|n| n.starts_with(prefix)) {
        if let Ok(pids) = ip_out(&["netns", "pids", ns]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes the namespaces of earlier runs whose process is gone.
fn remove_stale() {
    for ns in our_namespaces() {
        let Some(pid) = owner_pid(&ns) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("netsim: removing {ns}, left by run {pid}");
            remove_namespaces(&format!("{PREFIX}{pid}-"));
        }
    }
}

/// Why netsim cannot run here, if it cannot.
fn cannot_run(prefix: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if effective_uid(&status) != Some(0) {
        return Some("not root (network namespaces, veth and nftables need root)".into());
    }
    if !runs("ip", &["-V"]) {
        return Some("no `ip` command (install iproute2)".into());
    }
    if !runs("nft", &["--version"]) {
        return Some("no `nft` command (install nftables)".into());
    }
    if !runs("ss", &["-V"]) {
        return Some("no `ss` command (install iproute2)".into());
    }
    let probe = format!("{prefix}probe");
    if !runs("ip", &["netns", "add", &probe]) {
        return Some("`ip netns add` fails here".into());
    }
    let nft_ok = runs(
        "ip",
        &[
            "netns", "exec", &probe, "nft", "add", "table", "ip", "netsim",
        ],
    );
    let _ = runs("ip", &["netns", "del", &probe]);
    if !nft_ok {
        return Some("nftables does not work inside a network namespace here".into());
    }
    None
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started
/// after) and starts a thread that waits for one, removes the namespaces and exits.
/// Children inherit the blocked mask (the standard library keeps it), which does not
/// matter here: every device is ended with SIGKILL, and `ip`, `nft` and `ss` are short.
fn watch_signals(prefix: String) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    set.thread_block().context("blocking signals")?;
    std::thread::Builder::new()
        .name("netsim-signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                // Held until the exit: no device starts while the namespaces go.
                let _no_spawn = SPAWNING.lock();
                eprintln!("\nnetsim: {sig}: removing the namespaces and stopping");
                remove_namespaces(&prefix);
                std::process::exit(130);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Builds `hail` in release mode and returns the binary's path.
fn build_hail() -> anyhow::Result<PathBuf> {
    let mut build = cmd::cargo([
        "build",
        "--release",
        "-p",
        "hail-cli",
        "--locked",
        "--message-format=json-render-diagnostics",
    ]);
    eprintln!("netsim: {}", cmd::describe(&build));
    let out = cmd::stdout(&mut build)?;
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "hail")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo built no `hail` executable")
}

// ---------------------------------------------------------------------------------------
// The LAN.

/// The namespaces, bridge and veths of one run; `Drop` removes them and what runs inside.
#[derive(Debug)]
struct Lan {
    prefix: String,
    bridge: String,
    hosts: Vec<String>,
    /// (loss, dup) each host is set to now.
    impairment: Vec<(u8, u8)>,
}

impl Lan {
    fn create(prefix: &str, n: usize) -> anyhow::Result<Self> {
        let mut lan = Self {
            prefix: prefix.to_owned(),
            bridge: format!("{prefix}br"),
            hosts: Vec::new(),
            impairment: Vec::new(),
        };
        let br = lan.bridge.clone();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let h = format!("{prefix}h{i}");
            ip(&["netns", "add", &h])?;
            lan.hosts.push(h.clone());
            lan.impairment.push((0, 0));
            let port = format!("v{i}");
            let addr = format!("{}/24", host_ip(i));
            ip(&["-n", &h, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &h,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &h, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &h, "link", "set", "eth0", "up"])?;
            // Multicast leaves by eth0 whatever the socket says.
            ip(&["-n", &h, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        }
        Ok(lan)
    }

    fn impair(&mut self, hosts: usize, loss: u8, dup: u8) -> anyhow::Result<()> {
        let dup = if loss == 0 { 0 } else { dup };
        for i in 0..hosts {
            if self.impairment[i] != (loss, dup) {
                nft(&self.hosts[i], &impairment_rules(loss, dup))?;
                self.impairment[i] = (loss, dup);
            }
        }
        Ok(())
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        remove_namespaces(&self.prefix);
    }
}

/// Host `i`'s address: 10.77.0.<i+1>.
fn host_ip(i: usize) -> Ipv4Addr {
    let last = u8::try_from(i + 1).expect("at most MAX_HOSTS hosts");
    Ipv4Addr::new(10, 77, 0, last)
}

// ---------------------------------------------------------------------------------------
// Devices and what they print.

/// One `hail listen` process and what it has said.
#[derive(Debug)]
struct Proc {
    host: usize,
    name: String,
    child: Option<Child>,
    /// Its id and listening address, once it printed `listening`.
    id: Option<String>,
    addr: Option<String>,
    listening_at: Option<Instant>,
    /// Joined peers now: name -> id.
    peers: BTreeMap<String, String>,
    /// Every `left`: (name, id, reason).
    left: Vec<(String, String, String)>,
    duplicate_names: usize,
}

impl Proc {
    fn alive(&self) -> bool {
        self.child.is_some()
    }
}

/// A line a device printed, with its arrival time.
#[derive(Debug)]
struct Line {
    proc: usize,
    at: Instant,
    value: Value,
}

/// The devices of a run and their output.
#[derive(Debug)]
struct Sim<'a> {
    lan: &'a Lan,
    hail: &'a Path,
    logs: &'a Path,
    mode: Mode,
    group: String,
    procs: Vec<Proc>,
    tx: Sender<Line>,
    rx: Receiver<Line>,
}

impl<'a> Sim<'a> {
    fn new(lan: &'a Lan, hail: &'a Path, logs: &'a Path, mode: Mode, run: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        // A group port per run: nothing of an earlier run can reach this one.
        let port = 20_000 + run % 40_000;
        Self {
            lan,
            hail,
            logs,
            mode,
            group: format!("239.255.77.1:{port}"),
            procs: Vec::new(),
            tx,
            rx,
        }
    }

    /// Starts `hail listen` as `dev<host>` on host `host`; returns its index.
    fn spawn(&mut self, host: usize) -> anyhow::Result<usize> {
        let name = format!("dev{host:02}");
        let ns = &self.lan.hosts[host];
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))
            .context("opening a device log")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(self.hail)
            .args(["listen", "--json", "--name", &name, "--interface"])
            .arg(host_ip(host).to_string())
            .args(["--group", &self.group])
            .env_remove("HAIL_PASSPHRASE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        if self.mode == Mode::Sealed {
            cmd.env("HAIL_PASSPHRASE", PASSPHRASE);
        }
        let mut child = {
            let _spawning = SPAWNING.lock();
            cmd.spawn().context("cannot start hail listen")?
        };
        let stdout = child.stdout.take().context("hail stdout")?;
        let index = self.procs.len();
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name(format!("netsim-{name}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let at = Instant::now();
                    let Ok(value) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if tx
                        .send(Line {
                            proc: index,
                            at,
                            value,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .context("starting a reader thread")?;
        self.procs.push(Proc {
            host,
            name,
            child: Some(child),
            id: None,
            addr: None,
            listening_at: None,
            peers: BTreeMap::new(),
            left: Vec::new(),
            duplicate_names: 0,
        });
        Ok(index)
    }

    /// SIGKILL to process `p`, reaped.
    fn kill(&mut self, p: usize) {
        if let Some(mut child) = self.procs[p].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_all(&mut self) {
        for p in 0..self.procs.len() {
            self.kill(p);
        }
    }

    fn apply(&mut self, line: &Line) {
        let p = &mut self.procs[line.proc];
        let v = &line.value;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        match v["event"].as_str() {
            Some("listening") => {
                p.id = Some(s("id"));
                p.addr = Some(s("address"));
                p.listening_at = Some(line.at);
            }
            Some("joined") => {
                p.peers.insert(s("name"), s("id"));
            }
            Some("left") => {
                let (name, id) = (s("name"), s("id"));
                if p.peers.get(&name) == Some(&id) {
                    p.peers.remove(&name);
                }
                p.left.push((name, id, s("reason")));
            }
            Some("duplicate_name") => p.duplicate_names += 1,
            _ => {}
        }
    }

    /// Reads lines until `done` holds (returns when it came true: the arrival of the line
    /// that made it so) or `deadline` passes (`None`).
    fn wait(&mut self, deadline: Instant, done: impl Fn(&Self) -> bool) -> Option<Instant> {
        if done(self) {
            return Some(Instant::now());
        }
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.apply(&line);
                    if done(self) {
                        return Some(line.at);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(|p| p.alive())
    }

    fn all_listening(&self) -> bool {
        self.live().all(|p| p.id.is_some())
    }

    /// Every live device has joined every other live device, by its current id.
    fn all_see_all(&self) -> bool {
        self.live().all(|p| {
            self.live()
                .filter(|q| q.host != p.host)
                .all(|q| q.id.is_some() && p.peers.get(&q.name) == q.id.as_ref())
        })
    }

    /// No live device in `a` has a joined peer in `b`, and none in `b` one in `a`.
    fn split(&self, a: &BTreeSet<usize>, b: &BTreeSet<usize>) -> bool {
        let names = |set: &BTreeSet<usize>| -> BTreeSet<String> {
            self.live()
                .filter(|p| set.contains(&p.host))
                .map(|p| p.name.clone())
                .collect()
        };
        let (na, nb) = (names(a), names(b));
        self.live().all(|p| {
            let other = if a.contains(&p.host) { &nb } else { &na };
            p.peers.keys().all(|n| !other.contains(n))
        })
    }

    /// No live device still has `(name, id)` as a joined peer.
    fn gone(&self, name: &str, id: &str) -> bool {
        self.live()
            .all(|p| p.peers.get(name).is_none_or(|joined| joined != id))
    }

    /// Starts devices on hosts `0..n`, waits for them all to listen and to see each
    /// other. Returns (time from the last start to all seeing all, from spawning to the
    /// last start) or why not.
    /// The device running on `host`: its index in `procs`, its name and its id.
    fn on_host(&self, host: usize) -> (usize, String, String) {
        let v = self
            .procs
            .iter()
            .position(|p| p.host == host)
            .expect("a device on every host");
        let p = &self.procs[v];
        (v, p.name.clone(), p.id.clone().unwrap_or_default())
    }

    fn start_mesh(&mut self, n: usize) -> Result<(Duration, Duration), String> {
        let spawned = Instant::now();
        for host in 0..n {
            self.spawn(host).map_err(|e| format!("{e:#}"))?;
        }
        if self
            .wait(spawned + START_LIMIT, Self::all_listening)
            .is_none()
        {
            return Err(format!(
                "not every device started within {}",
                secs(Some(START_LIMIT))
            ));
        }
        let started = self
            .live()
            .filter_map(|p| p.listening_at)
            .max()
            .unwrap_or(spawned);
        match self.wait(started + GIVE_UP, Self::all_see_all) {
            Some(at) => Ok((at.saturating_duration_since(started), started - spawned)),
            None => Err(format!(
                "not all saw all within {}: {}",
                secs(Some(GIVE_UP)),
                self.missing()
            )),
        }
    }

    /// Who does not see whom, briefly.
    fn missing(&self) -> String {
        let mut out = Vec::new();
        for p in self.live() {
            let miss: Vec<String> = self
                .live()
                .filter(|q| q.host != p.host && p.peers.get(&q.name) != q.id.as_ref())
                .map(|q| match p.peers.get(&q.name) {
                    Some(_) => format!("{} (holds an older id)", q.name),
                    None => q.name.clone(),
                })
                .collect();
            if !miss.is_empty() {
                out.push(format!("{} lacks {}", p.name, miss.join(",")));
            }
        }
        out.truncate(5);
        out.join("; ")
    }
}

impl Drop for Sim<'_> {
    fn drop(&mut self) {
        self.kill_all();
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios and results.

/// The figures of one scenario cell.
#[derive(Debug, Default)]
struct Cell {
    label: String,
    runs: usize,
    times: Vec<Duration>,
    /// Secondary times (startup for discovery, split noticed for partitions).
    extra: Vec<Duration>,
    failures: Vec<String>,
    notes: BTreeMap<String, usize>,
}

impl Cell {
    fn new(label: String) -> Self {
        Self {
            label,
            ..Self::default()
        }
    }

    fn line(&self, extra_name: &str) -> String {
        let mut s = format!(
            "{:<44} runs {:>3}  p50 {:>7}  p99 {:>7}  max {:>7}  failures {}",
            self.label,
            self.runs,
            secs(percentile(&self.times, 50.0)),
            secs(percentile(&self.times, 99.0)),
            secs(self.times.iter().max().copied()),
            self.failures.len(),
        );
        if !self.extra.is_empty() {
            let _ = write!(
                s,
                "  ({extra_name} p50 {})",
                secs(percentile(&self.extra, 50.0))
            );
        }
        if !self.notes.is_empty() {
            let notes: Vec<String> = self.notes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = write!(s, "  [{}]", notes.join(", "));
        }
        s
    }

    fn json(&self, scenario: &str) -> Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        json!({
            "scenario": scenario,
            "label": self.label,
            "runs": self.runs,
            "p50_ms": ms(percentile(&self.times, 50.0)),
            "p99_ms": ms(percentile(&self.times, 99.0)),
            "max_ms": ms(self.times.iter().max().copied()),
            "extra_p50_ms": ms(percentile(&self.extra, 50.0)),
            "times_ms": self.times.iter().map(|t| t.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
            "failures": self.failures,
            "notes": self.notes,
        })
    }

    /// Every run succeeded and took at most `limit`.
    fn within(&self, limit: Duration) -> bool {
        self.failures.is_empty() && !self.times.is_empty() && self.times.iter().all(|t| *t <= limit)
    }

    fn fail(&mut self, run: usize, why: String) {
        eprintln!("netsim: {}: run {run} failed: {why}", self.label);
        self.failures.push(why);
    }
}

/// Everything measured, by scenario.
#[derive(Debug, Default)]
struct Results {
    discovery: Vec<(Mode, usize, u8, Cell)>,
    kill: Vec<Cell>,
    host_gone: Vec<Cell>,
    partition: Vec<Cell>,
    restart: Vec<Cell>,
}

/// Counts runs so each gets its own multicast port.
#[derive(Debug)]
struct Runner<'a> {
    lan: &'a mut Lan,
    hail: &'a Path,
    logs: &'a Path,
    run: usize,
    dup: u8,
}

impl Runner<'_> {
    fn sim(&mut self, mode: Mode) -> Sim<'_> {
        self.run += 1;
        Sim::new(self.lan, self.hail, self.logs, mode, self.run)
    }

    fn discovery(&mut self, mode: Mode, n: usize, loss: u8, runs: usize) -> anyhow::Result<Cell> {
        let dup = if loss == 0 { 0 } else { self.dup };
        let mut cell = Cell::new(format!(
            "discovery {:<6} N={n:<3} loss {loss:>2}% dup {dup}%",
            mode.name()
        ));
        self.lan.impair(n, loss, dup)?;
        for r in 0..runs {
            let mut sim = self.sim(mode);
            match sim.start_mesh(n) {
                Ok((t, startup)) => {
                    cell.times.push(t);
                    cell.extra.push(startup);
                }
                Err(why) => cell.fail(r, why),
            }
            let dups: usize = sim.procs.iter().map(|p| p.duplicate_names).sum();
            if dups > 0 {
                *cell
                    .notes
                    .entry("duplicate-name reports".into())
                    .or_default() += dups;
            }
        }
        cell.runs = runs;
        println!("{}", cell.line("startup"));
        Ok(cell)
    }

    /// SIGKILL of the last device, as a process (`cut` false) or as a host (`cut`: its
    /// namespace cut off first, so no FIN or RST leaves it).
    fn kill(
        &mut self,
        mode: Mode,
        n: usize,
        loss: u8,
        runs: usize,
        cut: bool,
    ) -> anyhow::Result<Cell> {
        let what = if cut {
            "host cut off + SIGKILL"
        } else {
            "process SIGKILL"
        };
        let mut cell = Cell::new(format!(
            "gone {:<6} N={n} loss {loss}%, {what}",
            mode.name()
        ));
        self.lan.impair(n, loss, self.dup)?;
        for r in 0..runs {
            let victim_host = n - 1;
            let ns = self.lan.hosts[victim_host].clone();
            let mut sim = self.sim(mode);
            if let Err(why) = sim.start_mesh(n) {
                cell.fail(r, format!("mesh: {why}"));
                continue;
            }
            let (v, name, id) = sim.on_host(victim_host);
            if cut {
                nft(&ns, &isolate_rules())?;
            }
            let t0 = Instant::now();
            sim.kill(v);
            let done = sim.wait(t0 + FAULT_LIMIT, |s| s.gone(&name, &id));
            if cut {
                nft(&ns, &cut_rules(&[]))?;
            }
            match done {
                Some(at) => cell.times.push(at.saturating_duration_since(t0)),
                None => cell.fail(
                    r,
                    format!("not reported gone within {}", secs(Some(FAULT_LIMIT))),
                ),
            }
            for p in sim.live() {
                for (n, i, reason) in &p.left {
                    if *n == name && *i == id {
                        *cell.notes.entry(reason.clone()).or_default() += 1;
                    }
                }
            }
        }
        cell.runs = runs;
        println!("{}", cell.line(""));
        Ok(cell)
    }

    fn partition(&mut self, mode: Mode, n: usize, loss: u8, runs: usize) -> anyhow::Result<Cell> {
        let mut cell = Cell::new(format!(
            "heal {:<6} N={n} loss {loss}%, halves",
            mode.name()
        ));
        self.lan.impair(n, loss, self.dup)?;
        let a: BTreeSet<usize> = (0..n / 2).collect();
        let b: BTreeSet<usize> = (n / 2..n).collect();
        let ips =
            |set: &BTreeSet<usize>| -> Vec<Ipv4Addr> { set.iter().map(|i| host_ip(*i)).collect() };
        for r in 0..runs {
            let mut sim = self.sim(mode);
            if let Err(why) = sim.start_mesh(n) {
                cell.fail(r, format!("mesh: {why}"));
                continue;
            }
            let t_cut = Instant::now();
            for h in 0..n {
                let other = if a.contains(&h) { ips(&b) } else { ips(&a) };
                nft(&sim.lan.hosts[h], &cut_rules(&other))?;
            }
            let split = sim.wait(t_cut + FAULT_LIMIT, |s| s.split(&a, &b));
            let t_heal = Instant::now();
            for h in 0..n {
                nft(&sim.lan.hosts[h], &cut_rules(&[]))?;
            }
            let Some(split) = split else {
                cell.fail(
                    r,
                    format!(
                        "the halves still saw each other after {}",
                        secs(Some(FAULT_LIMIT))
                    ),
                );
                continue;
            };
            cell.extra.push(split.saturating_duration_since(t_cut));
            match sim.wait(t_heal + FAULT_LIMIT, Sim::all_see_all) {
                Some(at) => cell.times.push(at.saturating_duration_since(t_heal)),
                None => cell.fail(
                    r,
                    format!(
                        "not one mesh within {}: {}",
                        secs(Some(FAULT_LIMIT)),
                        sim.missing()
                    ),
                ),
            }
        }
        cell.runs = runs;
        println!("{}", cell.line("split noticed"));
        Ok(cell)
    }

    fn restart(&mut self, mode: Mode, n: usize, loss: u8, runs: usize) -> anyhow::Result<Cell> {
        let mut cell = Cell::new(format!(
            "restart {:<6} N={n} loss {loss}%, same name",
            mode.name()
        ));
        self.lan.impair(n, loss, self.dup)?;
        for r in 0..runs {
            let victim_host = n - 1;
            let mut sim = self.sim(mode);
            if let Err(why) = sim.start_mesh(n) {
                cell.fail(r, format!("mesh: {why}"));
                continue;
            }
            let (v, name, old) = sim.on_host(victim_host);
            let t0 = Instant::now();
            sim.kill(v);
            let fresh = sim.spawn(victim_host)?;
            let done = sim.wait(t0 + FAULT_LIMIT, |s| s.all_see_all() && s.gone(&name, &old));
            let Some(at) = done else {
                cell.fail(
                    r,
                    format!(
                        "new incarnation not joined by all within {}: {}",
                        secs(Some(FAULT_LIMIT)),
                        sim.missing()
                    ),
                );
                continue;
            };
            cell.times.push(at.saturating_duration_since(t0));
            if sim.procs[fresh].id.as_deref() == Some(old.as_str()) {
                cell.fail(r, "the restarted device kept its old id".into());
                continue;
            }
            for p in sim.live() {
                for (n, i, reason) in &p.left {
                    if *n == name && *i == old {
                        *cell.notes.entry(format!("old left: {reason}")).or_default() += 1;
                    }
                }
            }
            // Let duplicate links close, then count the established TCP connections.
            let _ = sim.wait(Instant::now() + SETTLE, |_| false);
            if let Err(first) = check_links(&sim, victim_host) {
                // Slow to settle, or kept? Look again later.
                let _ = sim.wait(Instant::now() + SETTLE_MORE, |_| false);
                match check_links(&sim, victim_host) {
                    Ok(()) => {
                        eprintln!("netsim: {}: run {r}: settled late: {first}", cell.label);
                        *cell.notes.entry("links settled late".into()).or_default() += 1;
                    }
                    Err(why) => cell.fail(
                        r,
                        format!("{why} (still, {} later)", secs(Some(SETTLE_MORE))),
                    ),
                }
            }
        }
        cell.runs = runs;
        println!("{}", cell.line(""));
        Ok(cell)
    }
}

/// Exactly one established connection between the restarted device and each other
/// device, seen from both ends, and none left to the dead process (open or half-closed).
fn check_links(sim: &Sim<'_>, victim_host: usize) -> Result<(), String> {
    let ss = |ns: &str, state: &str| -> Result<Vec<(String, String)>, String> {
        let out = cmd::stdout(
            Command::new("ip").args(["netns", "exec", ns, "ss", "-Htn", "state", state]),
        )
        .map_err(|e| format!("{e:#}"))?;
        Ok(established(&out))
    };
    let victim_ip = host_ip(victim_host).to_string();
    let mine = ss(&sim.lan.hosts[victim_host], "established")?;
    let mut problems = Vec::new();
    for p in sim.live().filter(|p| p.host != victim_host) {
        let their_ip = host_ip(p.host).to_string();
        let here = mine
            .iter()
            .filter(|(_, peer)| host_part(peer) == their_ip)
            .count();
        let to_victim = |(_, peer): &&(String, String)| host_part(peer) == victim_ip;
        let theirs = ss(&sim.lan.hosts[p.host], "established")?;
        let there: Vec<&(String, String)> = theirs.iter().filter(to_victim).collect();
        // A connection their end holds open that the restarted end does not have (the dead
        // process's sockets are closed, so only the fresh process holds any there), or
        // one the dead end closed and theirs still holds (close-wait).
        let unmatched = there
            .iter()
            .filter(|(local, peer)| !mine.iter().any(|(l, pe)| l == peer && pe == local))
            .count();
        let half_closed = ss(&sim.lan.hosts[p.host], "close-wait")?
            .iter()
            .filter(to_victim)
            .count();
        let stale = unmatched + half_closed;
        if here != 1 || there.len() != 1 || stale > 0 {
            problems.push(format!(
                "{}: {here} link(s) at the restarted end, {} at its end, {stale} stale",
                p.name,
                there.len()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("links after the restart: {}", problems.join("; ")))
    }
}

/// Builds the LAN, runs the scenarios, prints the figures and the goals.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let pid = std::process::id();
    let prefix = format!("{PREFIX}{pid}-");
    if let Some(why) = cannot_run(&prefix) {
        println!("netsim: skipped: {why}");
        return Ok(());
    }
    // Built before signals are watched: a Ctrl-C during the build ends it as usual.
    let hail = build_hail()?;
    watch_signals(prefix.clone())?;
    remove_stale();
    let out_dir = cmd::root().join("target").join("netsim");
    let logs = out_dir.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let hosts = args.hosts();
    let started = Instant::now();
    println!(
        "netsim: {hosts} host namespaces ({prefix}h*) on a bridge in {prefix}br; device logs in {}",
        logs.display()
    );
    let mut lan = Lan::create(&prefix, hosts)?;
    println!("netsim: LAN up in {}", secs(Some(started.elapsed())));
    let mut runner = Runner {
        lan: &mut lan,
        hail: &hail,
        logs: &logs,
        run: 0,
        dup: args.dup,
    };
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
    drop(lan);

    let goals = goals(&results);
    println!("\n== goals");
    let mut missed = 0;
    for (name, verdict) in &goals {
        let word = match verdict {
            Some(true) => "pass",
            Some(false) => {
                missed += 1;
                "FAIL"
            }
            None => "not run",
        };
        println!("  {word:<8} {name}");
    }
    // Broken checks: runs that never completed, restarts not recognised, stale links.
    let broken: usize = results
        .discovery
        .iter()
        .map(|(.., c)| c)
        .chain(&results.kill)
        .chain(&results.host_gone)
        .chain(&results.partition)
        .chain(&results.restart)
        .map(|c| c.failures.len())
        .sum();
    write_json(&out_dir, args, &results, &goals)?;
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

/// Each goal and whether it was met (`None`: its scenario did not run).
fn goals(r: &Results) -> Vec<(String, Option<bool>)> {
    let all = |cells: Vec<&Cell>, limit: Duration| -> Option<bool> {
        (!cells.is_empty()).then(|| cells.iter().all(|c| c.within(limit)))
    };
    let ten = r
        .discovery
        .iter()
        .filter(|(_, n, loss, _)| *n == 10 && *loss == 10)
        .map(|(.., c)| c)
        .collect();
    vec![
        (
            format!(
                "N=10 at 10% loss: all see all within {} in every run",
                secs(Some(GOAL_DISCOVERY))
            ),
            all(ten, GOAL_DISCOVERY),
        ),
        (
            format!(
                "killed process reported gone within {}",
                secs(Some(GOAL_GONE))
            ),
            all(r.kill.iter().collect(), GOAL_GONE),
        ),
        (
            format!(
                "killed host (cut off) reported gone within {}",
                secs(Some(GOAL_GONE))
            ),
            all(r.host_gone.iter().collect(), GOAL_GONE),
        ),
        (
            format!("healed partition one mesh within {}", secs(Some(GOAL_HEAL))),
            all(r.partition.iter().collect(), GOAL_HEAL),
        ),
        (
            "restart: new incarnation joined by all, one link per pair".to_owned(),
            (!r.restart.is_empty()).then(|| r.restart.iter().all(|c| c.failures.is_empty())),
        ),
    ]
}

fn write_json(
    dir: &Path,
    args: &Args,
    r: &Results,
    goals: &[(String, Option<bool>)],
) -> anyhow::Result<()> {
    let mut cells: Vec<Value> = r
        .discovery
        .iter()
        .map(|(.., c)| c.json("discovery"))
        .collect();
    cells.extend(r.kill.iter().map(|c| c.json("kill-process")));
    cells.extend(r.host_gone.iter().map(|c| c.json("kill-host")));
    cells.extend(r.partition.iter().map(|c| c.json("partition")));
    cells.extend(r.restart.iter().map(|c| c.json("restart")));
    let goals: Vec<Value> = goals
        .iter()
        .map(|(name, ok)| json!({ "goal": name, "met": ok }))
        .collect();
    let doc = json!({ "args": format!("{args:?}"), "cells": cells, "goals": goals });
    let path = dir.join("latest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, String> {
        Args::parse(&a.iter().map(ToString::to_string).collect::<Vec<_>>())
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        let one = ms(&[7]);
        assert_eq!(percentile(&one, 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&one, 99.0), Some(Duration::from_millis(7)));
        let v = ms(&[50, 10, 40, 20, 30]);
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(30)));
        assert_eq!(percentile(&v, 20.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(50)));
        // 20 runs: p50 is the 10th value, p99 the 20th.
        let twenty: Vec<Duration> = (1..=20).map(Duration::from_secs).collect();
        assert_eq!(percentile(&twenty, 50.0), Some(Duration::from_secs(10)));
        assert_eq!(percentile(&twenty, 99.0), Some(Duration::from_secs(20)));
        assert_eq!(percentile(&twenty, 0.0), Some(Duration::from_secs(1)));
    }

    #[test]
    fn defaults_and_quick() {
        let d = args(&[]).unwrap();
        assert_eq!(d.runs, 20);
        assert_eq!(d.sizes, [5, 10, 25]);
        assert_eq!(d.loss, [0, 10, 20]);
        assert_eq!(d.dup, 2);
        assert_eq!((d.fault_runs, d.fault_size, d.fault_loss), (5, 10, 10));
        assert_eq!(d.modes, [Mode::Plain, Mode::Sealed]);
        assert_eq!(d.scenarios, Scenario::ALL);
        assert!(!d.strict);
        assert_eq!(d.hosts(), 25);
        let q = args(&["--quick"]).unwrap();
        assert_eq!(
            (q.runs, q.sizes.as_slice(), q.loss.as_slice()),
            (3, &[5][..], &[10][..])
        );
        assert_eq!((q.fault_runs, q.fault_size), (1, 5));
        assert_eq!(q.hosts(), 5);
    }

    #[test]
    fn flags_override_quick_in_any_order() {
        let a = args(&[
            "--runs", "7", "--quick", "--sizes", "10,5,10", "--loss", "20%,0",
        ])
        .unwrap();
        assert_eq!(a.runs, 7);
        assert_eq!(a.sizes, [5, 10]);
        assert_eq!(a.loss, [0, 20]);
        let a = args(&[
            "--modes",
            "sealed",
            "--scenarios",
            "restart,kill",
            "--strict",
        ])
        .unwrap();
        assert_eq!(a.modes, [Mode::Sealed]);
        assert_eq!(a.scenarios, [Scenario::Kill, Scenario::Restart]);
        assert!(a.strict);
        assert_eq!(a.hosts(), 10);
        let a = args(&[
            "--scenarios",
            "discovery",
            "--sizes",
            "3",
            "--fault-size",
            "40",
        ])
        .unwrap();
        assert_eq!(a.hosts(), 3);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["--runs"][..],
            &["--runs", "0"],
            &["--runs", "many"],
            &["--sizes", "1"],
            &["--sizes", "5,,10"],
            &["--sizes", "500"],
            &["--loss", "100"],
            &["--loss", "-1"],
            &["--dup", "x"],
            &["--fault-size", "3"],
            &["--modes", "loud"],
            &["--scenarios", "flood"],
            &["--fast"],
            &["5"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn impairment_rules_replace_the_table() {
        assert_eq!(
            impairment_rules(0, 0),
            "table ip netsim {}\ndelete table ip netsim\n"
        );
        let r = impairment_rules(10, 2);
        assert!(r.starts_with("table ip netsim {}\ndelete table ip netsim\ntable ip netsim {\n"));
        assert!(r.contains("type filter hook input priority -300; policy accept;"));
        assert!(r.contains("iifname \"eth0\" numgen random mod 100 < 10 drop"));
        assert!(r.contains("type filter hook output priority -300; policy accept;"));
        assert!(r.contains(
            "oifname \"eth0\" numgen random mod 100 < 2 dup to ip daddr device \"eth0\""
        ));
        let loss_only = impairment_rules(20, 0);
        assert!(loss_only.contains("mod 100 < 20 drop"));
        assert!(!loss_only.contains("dup"));
        assert_eq!(
            loss_only.matches('{').count(),
            loss_only.matches('}').count()
        );
    }

    #[test]
    fn cut_rules_drop_the_other_half() {
        assert_eq!(
            cut_rules(&[]),
            "table ip netsim_cut {}\ndelete table ip netsim_cut\n"
        );
        let r = cut_rules(&[host_ip(0), host_ip(1)]);
        assert!(r.contains("ip saddr { 10.77.0.1, 10.77.0.2 } drop"));
        assert!(r.contains("hook input priority -310"));
        let iso = isolate_rules();
        assert!(iso.contains("iifname \"eth0\" drop") && iso.contains("oifname \"eth0\" drop"));
        assert_eq!(iso.matches('{').count(), iso.matches('}').count());
    }

    #[test]
    fn ss_output_parses() {
        let out = "0      0      10.77.0.1:40412   10.77.0.2:35553\n\
                   0      0      10.77.0.1:41000   10.77.0.3:41234   users:((\"hail\",pid=1,fd=9))\n\
                   garbage\n";
        assert_eq!(
            established(out),
            [
                ("10.77.0.1:40412".to_owned(), "10.77.0.2:35553".to_owned()),
                ("10.77.0.1:41000".to_owned(), "10.77.0.3:41234".to_owned()),
            ]
        );
        assert_eq!(host_part("10.77.0.2:35553"), "10.77.0.2");
        assert_eq!(host_part("[::1]:80"), "::1");
    }

    #[test]
    fn uid_and_owner_pid_parse() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name: x\n"), None);
        assert_eq!(owner_pid("hnsim1234-h7"), Some(1234));
        assert_eq!(owner_pid("hnsim1234-br"), Some(1234));
        assert_eq!(owner_pid("hnsimx-br"), None);
        assert_eq!(owner_pid("other-1"), None);
    }

    #[test]
    fn host_addresses() {
        assert_eq!(host_ip(0), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(host_ip(MAX_HOSTS - 1), Ipv4Addr::new(10, 77, 0, 200));
    }
}
