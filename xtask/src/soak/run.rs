//! The run: node processes, their output, the restart schedule, RSS samples and the
//! per-minute table.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Args;
use super::ledger::{End, Ledger, Life, Sent};
use super::node::{NodeLine, Stats, parse_line, rss_kib};
use super::report::summarize;
use crate::cmd;

/// xorshift64*.
#[derive(Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

pub(super) enum Report {
    Line {
        slot: usize,
        inc: u64,
        line: String,
        t: f64,
    },
    Eof,
}

pub(super) enum State {
    Running,
    /// Stdin closed at this time; waiting for the exit.
    Stopping(f64),
}

pub(super) struct Node {
    pub(super) name: String,
    pub(super) inc: u64,
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) pid: u32,
    pub(super) state: State,
    pub(super) stable: bool,
    /// (seconds, KiB) of every incarnation.
    pub(super) rss: Vec<(f64, u64)>,
    pub(super) last_rss: u64,
}

/// Per node, over all its incarnations.
#[derive(Debug, Default, Clone)]
pub(super) struct Counts {
    pub(super) sent: u64,
    pub(super) ok: u64,
    pub(super) failed: u64,
    pub(super) received: u64,
    pub(super) bad: u64,
    /// Latest stats line of each incarnation.
    pub(super) stats: BTreeMap<u64, Stats>,
}

pub(super) struct Run {
    pub(super) args: Args,
    pub(super) bin: PathBuf,
    pub(super) group: String,
    pub(super) names: Vec<String>,
    pub(super) seed: u64,
    pub(super) start: Instant,
    pub(super) tx: mpsc::Sender<Report>,
    pub(super) ledger: Ledger,
    pub(super) counts: Vec<Counts>,
    pub(super) restarts_graceful: u64,
    pub(super) restarts_killed: u64,
    pub(super) graceful_timeouts: u64,
    pub(super) open_readers: usize,
}

impl Run {
    pub(super) fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub(super) fn spawn(&mut self, slot: usize, inc: u64) -> anyhow::Result<Node> {
        let name = self.names[slot].clone();
        let max_secs = (self.args.minutes * 60.0 + 120.0).ceil() as u64;
        let mut child = Command::new(&self.bin)
            .args([
                "--name",
                &name,
                "--inc",
                &inc.to_string(),
                "--group",
                &self.group,
            ])
            .args(["--peers", &self.names.join(",")])
            .args(["--max-secs", &max_secs.to_string()])
            .args(["--msg-ms", &self.args.msg_ms.to_string()])
            .args(["--ask-ms", &self.args.ask_ms.to_string()])
            .args(["--rpc-ms", &self.args.rpc_ms.to_string()])
            .args([
                "--seed",
                &(self.seed ^ (slot as u64) << 32 ^ inc).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stdin = child.stdin.take();
        let tx = self.tx.clone();
        let start = self.start;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let t = start.elapsed().as_secs_f64();
                if tx.send(Report::Line { slot, inc, line, t }).is_err() {
                    return;
                }
            }
            let _ = tx.send(Report::Eof);
        });
        self.open_readers += 1;
        let t = self.now();
        self.ledger
            .lives
            .entry(name.clone())
            .or_default()
            .push(Life {
                start: t,
                end: f64::INFINITY,
                how: End::Running,
                phases: Vec::new(),
            });
        Ok(Node {
            name,
            inc,
            pid: child.id(),
            child,
            stdin,
            state: State::Running,
            stable: slot < self.args.stable,
            rss: Vec::new(),
            last_rss: 0,
        })
    }

    pub(super) fn end_life(&mut self, name: &str, inc: u64, how: End) {
        let t = self.now();
        if let Some(l) = self
            .ledger
            .lives
            .get_mut(name)
            .and_then(|v| v.get_mut(usize::try_from(inc).unwrap_or(usize::MAX)))
        {
            l.end = t;
            l.how = how;
        }
    }

    pub(super) fn handle(&mut self, r: Report) {
        match r {
            Report::Eof => self.open_readers = self.open_readers.saturating_sub(1),
            Report::Line { slot, inc, line, t } => {
                let name = self.names[slot].clone();
                let Some(parsed) = parse_line(&line) else {
                    eprintln!("soak: {name}#{inc}: unparsed line: {line}");
                    return;
                };
                let c = &mut self.counts[slot];
                match parsed {
                    NodeLine::Start { .. } => {}
                    NodeLine::Send {
                        to,
                        seq,
                        ok,
                        unknown,
                        ..
                    } => {
                        c.sent += 1;
                        if ok {
                            c.ok += 1;
                        } else {
                            c.failed += 1;
                        }
                        self.ledger
                            .send(&name, inc, seq, Sent { to, ok, unknown, t });
                    }
                    NodeLine::Recv {
                        from,
                        inc: from_inc,
                        seq,
                    } => {
                        c.received += 1;
                        self.ledger.recv(&name, from, from_inc, seq);
                    }
                    NodeLine::Bad { .. } => c.bad += 1,
                    NodeLine::Phase(p) => {
                        if let Some(l) = self
                            .ledger
                            .lives
                            .get_mut(&name)
                            .and_then(|v| v.get_mut(usize::try_from(inc).unwrap_or(usize::MAX)))
                        {
                            l.phases.push((p, t));
                        }
                    }
                    NodeLine::Stats(s) => {
                        c.stats.insert(inc, *s);
                    }
                }
            }
        }
    }

    pub(super) fn table(&self, nodes: &[Node]) -> String {
        let mut out = format!(
            "{:<8} {:>4} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>6}\n",
            "node",
            "inc",
            "RSS MiB",
            "sent",
            "sent ok",
            "failed",
            "recv",
            "ask ok",
            "ask err",
            "rpc ok",
            "rpc err",
            "peers"
        );
        let mut tot = [0u64; 8];
        for (i, n) in nodes.iter().enumerate() {
            let c = &self.counts[i];
            let (mut aok, mut aerr, mut rok, mut rerr) = (0, 0, 0, 0);
            for s in c.stats.values() {
                aok += s.ask_answered;
                aerr += s.failed("ask:");
                rok += s.rpc_ok;
                rerr += s.failed("rpc:");
            }
            let peers = c.stats.get(&n.inc).map_or(0, |s| s.peers);
            let row = [c.sent, c.ok, c.failed, c.received, aok, aerr, rok, rerr];
            for (t, v) in tot.iter_mut().zip(row) {
                *t += v;
            }
            out += &format!(
                "{:<8} {:>4} {:>8.1} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>6}\n",
                format!("{}{}", n.name, if n.stable { "*" } else { "" }),
                n.inc,
                n.last_rss as f64 / 1024.0,
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                row[6],
                row[7],
                peers
            );
        }
        out += &format!(
            "{:<8} {:>4} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7}\n",
            "total", "", "", tot[0], tot[1], tot[2], tot[3], tot[4], tot[5], tot[6], tot[7]
        );
        out += &format!(
            "restarts: {} graceful, {} SIGKILL ({} graceful stops overran 15 s); \
             sent ok - received so far: {}\n",
            self.restarts_graceful,
            self.restarts_killed,
            self.graceful_timeouts,
            i128::from(tot[1]) - i128::from(tot[3])
        );
        out
    }
}

/// Builds the node program and returns its path.
pub(super) fn build_node() -> anyhow::Result<PathBuf> {
    let mut c = cmd::cargo([
        "build",
        "--release",
        "-p",
        "hail-benches",
        "--bin",
        "soak_node",
        "--locked",
        "--message-format=json-render-diagnostics",
    ]);
    println!("==> {}", cmd::describe(&c));
    cmd::executable(&cmd::stdout(&mut c)?, "soak_node")
}

/// A free UDP port on loopback for the discovery group.
pub(super) fn free_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let bin = build_node()?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    let group = format!("239.255.72.81:{}", free_port()?);
    let warmup = args.warmup();
    println!(
        "==> soak: {} nodes for {} min on loopback (group {group}, interface 127.0.0.1, TTL 1); \
         a restart every {} s ({}% SIGKILL), {} stable nodes (*), warm-up {} s, seed {seed}",
        args.nodes,
        args.minutes,
        args.restart_secs,
        (args.kill_ratio * 100.0).round(),
        args.stable,
        warmup
    );
    let (tx, rx) = mpsc::channel();
    let mut run = Run {
        args: args.clone(),
        bin,
        group,
        names: (0..args.nodes).map(|i| format!("node-{i}")).collect(),
        seed,
        start: Instant::now(),
        tx,
        ledger: Ledger::default(),
        counts: vec![Counts::default(); args.nodes],
        restarts_graceful: 0,
        restarts_killed: 0,
        graceful_timeouts: 0,
        open_readers: 0,
    };
    let mut rng = Rng(seed);
    let mut nodes = Vec::with_capacity(args.nodes);
    for slot in 0..args.nodes {
        nodes.push(run.spawn(slot, 0)?);
    }
    let total = args.minutes * 60.0;
    let mut next_restart = args.restart_secs;
    let mut next_rss = 0.0;
    let mut next_report = 60.0;
    // Bounded: ends at `total` seconds (plus the bounded stop below).
    while run.now() < total {
        // Lines for up to 50 ms, then the housekeeping.
        let tick = Instant::now() + Duration::from_millis(50);
        while let Ok(r) = rx.recv_timeout(tick.saturating_duration_since(Instant::now())) {
            run.handle(r);
        }
        let now = run.now();
        // Graceful stops that finished (or overran): restart under the same name.
        let mut ended = Vec::new();
        for (slot, n) in nodes.iter_mut().enumerate() {
            if let State::Stopping(since) = n.state {
                let exited = n.child.try_wait()?.is_some();
                if exited || now - since > 15.0 {
                    if !exited {
                        run.graceful_timeouts += 1;
                        n.child.kill().ok();
                        n.child.wait().ok();
                    }
                    ended.push((slot, exited));
                }
            }
        }
        for (slot, exited) in ended {
            let (name, inc) = (nodes[slot].name.clone(), nodes[slot].inc);
            run.end_life(&name, inc, if exited { End::Graceful } else { End::Killed });
            let old = std::mem::replace(&mut nodes[slot], run.spawn(slot, inc + 1)?);
            nodes[slot].rss = old.rss;
        }
        if now >= next_restart {
            next_restart += args.restart_secs;
            let candidates: Vec<usize> = (args.stable..nodes.len())
                .filter(|&i| matches!(nodes[i].state, State::Running))
                .collect();
            if !candidates.is_empty() {
                let slot = candidates[rng.below(candidates.len())];
                let n = &mut nodes[slot];
                if rng.unit() < args.kill_ratio {
                    n.child.kill().ok();
                    n.child.wait().ok();
                    run.restarts_killed += 1;
                    let (name, inc) = (n.name.clone(), n.inc);
                    run.end_life(&name, inc, End::Killed);
                    let old = std::mem::replace(&mut nodes[slot], run.spawn(slot, inc + 1)?);
                    nodes[slot].rss = old.rss;
                } else {
                    n.stdin = None;
                    n.state = State::Stopping(now);
                    run.restarts_graceful += 1;
                }
            }
        }
        if now >= next_rss {
            next_rss += 5.0;
            for n in &mut nodes {
                if let Some(kb) = rss_kib(n.pid) {
                    n.last_rss = kb;
                    n.rss.push((now, kb));
                }
            }
        }
        if now >= next_report {
            next_report += 60.0;
            println!("\n--- minute {:.0}\n{}", now / 60.0, run.table(&nodes));
        }
    }

    // The end: every node stopped gracefully, its last lines read.
    println!("\n==> stopping every node (stdin closed)");
    for n in &mut nodes {
        n.stdin = None;
    }
    let stop_start = Instant::now();
    for n in &mut nodes {
        let left = Duration::from_secs(20).saturating_sub(stop_start.elapsed());
        let deadline = Instant::now() + left;
        let mut exited = false;
        while Instant::now() < deadline {
            if n.child.try_wait()?.is_some() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !exited {
            run.graceful_timeouts += 1;
            n.child.kill().ok();
            n.child.wait().ok();
        }
        let (name, inc) = (n.name.clone(), n.inc);
        run.end_life(&name, inc, if exited { End::Graceful } else { End::Killed });
    }
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while run.open_readers > 0 && Instant::now() < drain_deadline {
        if let Ok(r) = rx.recv_timeout(Duration::from_millis(100)) {
            run.handle(r);
        }
    }
    while let Ok(r) = rx.try_recv() {
        run.handle(r);
    }
    println!("\n--- final\n{}", run.table(&nodes));
    summarize(&run, &nodes, warmup)
}
