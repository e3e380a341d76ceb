//! `cargo xtask soak [--minutes M] [options]`: ten devices, each its own process
//! (`hail-benches`' `soak_node`), exchange messages, asks and RPC calls on loopback while
//! devices are restarted at random; every minute a table of RSS and counts; at the end
//! the message accounting and the RSS drift.
//!
//! Options (defaults in parentheses): `--minutes M` (5), `--nodes N` (10), `--restart-secs K`
//! (10) (one random restartable node restarted every K s), `--kill-ratio R` (0.5) (share
//! of restarts by SIGKILL, the rest graceful: stdin closed, the node stops its load, shuts
//! the device down, drains its events), `--stable S` (2) (the first S nodes are never
//! restarted: their RSS over the whole run is the drift figure), `--warmup-secs W`
//! (M*60/6, clamped to 60..300), `--msg-ms`, `--ask-ms`, `--rpc-ms` (100, 500, 250) (per
//! node), `--seed N` (time).
//!
//! Accounting. Every message carries (sender, incarnation, number); the sender prints the
//! result of each `Device::send`, the receiver each message it gets, both as they happen,
//! so even a SIGKILLed node's record is exact up to its death. At the end every message
//! is exactly one of: delivered (sent OK, received once by its target), failed (send
//! reported an error, never received) or a discrepancy. Discrepancies are sorted by cause:
//! sent OK to a receiver SIGKILLed around the send (in flight, the honest gap), sent OK
//! by a sender SIGKILLed just after, and the rest (lost around a graceful stop, or with no
//! restart near: hail bugs), plus duplicates, deliveries to the wrong node and messages
//! reported failed but received. Asks and RPC calls are counted by each node: every call
//! is answered or failed, checked on every incarnation that stopped gracefully.
//!
//! Goals (the exit status): no discrepancy other than the SIGKILL gap, every ask and call
//! accounted for, RSS drift of the stable nodes under 5% after the warm-up.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cmd;

/// How far around a send a restart of its receiver (or after it, of its sender) explains
/// a message sent OK but never received: 5 s before the send (the sender's link may not
/// have noticed the death yet) to 2 s after.
const WINDOW_BEFORE: f64 = 5.0;
const WINDOW_AFTER: f64 = 2.0;
/// RSS drift goal: 5%.
const DRIFT_GOAL: f64 = 0.05;

/// Parsed arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Args {
    minutes: f64,
    nodes: usize,
    restart_secs: f64,
    kill_ratio: f64,
    stable: usize,
    warmup_secs: Option<f64>,
    msg_ms: u64,
    ask_ms: u64,
    rpc_ms: u64,
    seed: Option<u64>,
}

impl Args {
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut a = Self {
            minutes: 5.0,
            nodes: 10,
            restart_secs: 10.0,
            kill_ratio: 0.5,
            stable: 2,
            warmup_secs: None,
            msg_ms: 100,
            ask_ms: 500,
            rpc_ms: 250,
            seed: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| format!("soak: {flag} needs a value"))?;
            let bad = || format!("soak: {flag} {value}: not a valid value");
            let num = |v: &str| v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0);
            match flag.as_str() {
                "--minutes" => a.minutes = num(value).filter(|m| *m > 0.0).ok_or_else(bad)?,
                "--nodes" => {
                    a.nodes = value
                        .parse()
                        .ok()
                        .filter(|n| (2..=64).contains(n))
                        .ok_or_else(bad)?
                }
                "--restart-secs" => {
                    a.restart_secs = num(value).filter(|s| *s >= 1.0).ok_or_else(bad)?
                }
                "--kill-ratio" => {
                    a.kill_ratio = num(value).filter(|r| *r <= 1.0).ok_or_else(bad)?
                }
                "--stable" => a.stable = value.parse().map_err(|_| bad())?,
                "--warmup-secs" => a.warmup_secs = Some(num(value).ok_or_else(bad)?),
                "--msg-ms" => a.msg_ms = value.parse().ok().filter(|m| *m > 0).ok_or_else(bad)?,
                "--ask-ms" => a.ask_ms = value.parse().ok().filter(|m| *m > 0).ok_or_else(bad)?,
                "--rpc-ms" => a.rpc_ms = value.parse().ok().filter(|m| *m > 0).ok_or_else(bad)?,
                "--seed" => a.seed = Some(value.parse().map_err(|_| bad())?),
                other => return Err(format!("soak: unknown option {other}")),
            }
        }
        if a.stable >= a.nodes {
            return Err("soak: --stable must leave at least one node to restart".into());
        }
        Ok(a)
    }

    fn warmup(&self) -> f64 {
        self.warmup_secs
            .unwrap_or_else(|| (self.minutes * 60.0 / 6.0).clamp(60.0, 300.0))
    }
}

// ---------------------------------------------------------------------------------------
// Pure parts: node lines, the ledger, drift.

/// One line of a node, parsed.
#[derive(Debug, Clone, PartialEq)]
enum NodeLine {
    Start {
        pid: u32,
    },
    Send {
        to: String,
        seq: u64,
        ok: bool,
        err: Option<String>,
        unknown: bool,
    },
    Recv {
        from: String,
        inc: u64,
        seq: u64,
    },
    Bad {
        from: String,
    },
    Phase(String),
    Stats(Box<Stats>),
}

/// A node's counters (cumulative over its incarnation).
#[derive(Debug, Clone, Default, PartialEq)]
struct Stats {
    is_final: bool,
    asks: u64,
    ask_answered: u64,
    ask_wrong: u64,
    rpcs: u64,
    rpc_ok: u64,
    rpc_wrong: u64,
    dropped_events: u64,
    peers: u64,
    /// `ask:ERROR` and `rpc:ERROR` (and `msg:ERROR`) failure counts.
    failures: BTreeMap<String, u64>,
}

impl Stats {
    fn failed(&self, prefix: &str) -> u64 {
        self.failures
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

fn parse_line(line: &str) -> Option<NodeLine> {
    let v: Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    match v.get("t")?.as_str()? {
        "start" => Some(NodeLine::Start {
            pid: u32::try_from(n("pid")?).ok()?,
        }),
        "send" => Some(NodeLine::Send {
            to: s("to")?,
            seq: n("seq")?,
            ok: v.get("ok")?.as_bool()?,
            err: s("err"),
            unknown: v.get("unknown").and_then(Value::as_bool).unwrap_or(false),
        }),
        "recv" => Some(NodeLine::Recv {
            from: s("from")?,
            inc: n("inc")?,
            seq: n("seq")?,
        }),
        "bad" => Some(NodeLine::Bad { from: s("from")? }),
        "phase" => Some(NodeLine::Phase(s("p")?)),
        "stats" => {
            let failures = v
                .get("failures")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, c)| Some((k.clone(), c.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default();
            Some(NodeLine::Stats(Box::new(Stats {
                is_final: v.get("final").and_then(Value::as_bool).unwrap_or(false),
                asks: n("asks").unwrap_or(0),
                ask_answered: n("ask_answered").unwrap_or(0),
                ask_wrong: n("ask_wrong").unwrap_or(0),
                rpcs: n("rpcs").unwrap_or(0),
                rpc_ok: n("rpc_ok").unwrap_or(0),
                rpc_wrong: n("rpc_wrong").unwrap_or(0),
                dropped_events: n("dropped_events").unwrap_or(0),
                peers: n("peers").unwrap_or(0),
                failures,
            })))
        }
        _ => None,
    }
}

/// How an incarnation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Still running (at the end of the run every node is stopped gracefully).
    Running,
    /// Stdin closed; it exited by itself.
    Graceful,
    /// SIGKILL.
    Killed,
}

/// One incarnation of a node: when it started and ended (seconds since the run began).
#[derive(Debug, Clone, PartialEq)]
struct Life {
    start: f64,
    end: f64,
    how: End,
    /// When a graceful stop printed each phase (`stopping`, `shutdown`, `down`).
    phases: Vec<(String, f64)>,
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Fate {
    /// Sent OK and received once by its target.
    Delivered,
    /// The send reported an error and the message never arrived.
    Failed,
    /// Sent OK, never received; its receiver was SIGKILLed around the send.
    InFlightToKilled,
    /// Sent OK, never received; its sender was SIGKILLed just after (still queued).
    QueuedAtKilledSender,
    /// Sent OK, never received, around a graceful stop of its receiver.
    LostAtGracefulReceiver,
    /// Sent OK, never received, just before a graceful stop of its sender.
    LostAtGracefulSender,
    /// Sent OK, never received, no restart near: a loss with no explanation.
    LostUnexplained,
    /// The send was abandoned (no room for 5 s); outcome unknown.
    Abandoned,
    /// The send reported an error but the message arrived.
    FailedButDelivered,
    /// Received, but the sender was SIGKILLed before it printed the send's result.
    ReceivedUnrecorded,
    /// Received by a node other than the target.
    Misdelivered,
}

impl Fate {
    /// True for the outcomes "nothing lost" allows: delivered, failed, and the SIGKILL gap.
    fn is_honest(self) -> bool {
        matches!(
            self,
            Self::Delivered
                | Self::Failed
                | Self::InFlightToKilled
                | Self::QueuedAtKilledSender
                | Self::ReceivedUnrecorded
        )
    }
}

/// The result of one send, as its sender printed it.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    /// The target's name.
    to: String,
    /// The send reported success.
    ok: bool,
    /// The send was abandoned: outcome unknown.
    unknown: bool,
    /// When its line was read (seconds since the run began).
    t: f64,
}

/// Sends and receipts of every message, keyed by (sender, incarnation, seq).
#[derive(Debug, Default)]
struct Ledger {
    /// (sender, inc, seq) -> (target, ok, unknown, time).
    sends: HashMap<(String, u64, u64), Sent>,
    /// (sender, inc, seq) -> receivers.
    recvs: HashMap<(String, u64, u64), Vec<String>>,
    /// Lives of each node, by name, in incarnation order.
    lives: HashMap<String, Vec<Life>>,
    /// Messages received more than once.
    duplicates: u64,
}

impl Ledger {
    fn send(&mut self, from: &str, inc: u64, seq: u64, sent: Sent) {
        self.sends.insert((from.to_owned(), inc, seq), sent);
    }

    fn recv(&mut self, at: &str, from: String, inc: u64, seq: u64) {
        let e = self.recvs.entry((from, inc, seq)).or_default();
        if !e.is_empty() {
            self.duplicates += 1;
        }
        e.push(at.to_owned());
    }

    fn life(&self, name: &str, inc: u64) -> Option<&Life> {
        self.lives.get(name)?.get(usize::try_from(inc).ok()?)
    }

    /// A restart of `name` that ended an incarnation in `[from, to]`, SIGKILL first.
    fn ended_within(&self, name: &str, from: f64, to: f64) -> Option<End> {
        let lives = self.lives.get(name)?;
        let mut found = None;
        for l in lives {
            if l.how != End::Running && l.end >= from && l.end <= to {
                if l.how == End::Killed {
                    return Some(End::Killed);
                }
                found = Some(l.how);
            }
        }
        found
    }

    fn fate(&self, key: &(String, u64, u64)) -> Fate {
        let send = self.sends.get(key);
        let recv = self.recvs.get(key);
        match (send, recv) {
            (None, None) => Fate::Failed, // not reachable: keys come from one of the maps
            (None, Some(_)) => Fate::ReceivedUnrecorded,
            (Some(s), Some(r)) if r.iter().any(|x| *x != s.to) => Fate::Misdelivered,
            (Some(s), Some(_)) if s.ok => Fate::Delivered,
            (Some(s), _) if s.unknown => Fate::Abandoned,
            (Some(s), Some(_)) if !s.ok => Fate::FailedButDelivered,
            (Some(s), None) if !s.ok => Fate::Failed,
            (Some(Sent { to, t, .. }), _) => {
                let t = *t;
                let sender_end = self.life(&key.0, key.1);
                match self.ended_within(to, t - WINDOW_BEFORE, t + WINDOW_AFTER) {
                    Some(End::Killed) => return Fate::InFlightToKilled,
                    Some(_) => return Fate::LostAtGracefulReceiver,
                    None => {}
                }
                match sender_end {
                    Some(l) if l.how == End::Killed && l.end - t <= WINDOW_AFTER => {
                        Fate::QueuedAtKilledSender
                    }
                    Some(l) if l.how != End::Killed && l.end - t <= WINDOW_AFTER => {
                        Fate::LostAtGracefulSender
                    }
                    _ => Fate::LostUnexplained,
                }
            }
        }
    }

    /// The lives of `name` that ended within the window around `t`, with their phases
    /// relative to `t`.
    fn describe_lives(&self, name: &str, t: f64) -> String {
        let Some(lives) = self.lives.get(name) else {
            return format!("{name}: no lives");
        };
        let mut parts = Vec::new();
        for (i, l) in lives.iter().enumerate() {
            let near = l.end >= t - WINDOW_BEFORE && l.end <= t + WINDOW_AFTER + 10.0;
            if near || (l.start <= t && l.end >= t) {
                let mut p = format!("{name}#{i} {:?} [{:+.2}, ", l.how, l.start - t);
                if l.end.is_finite() {
                    p += &format!("{:+.2}]", l.end - t);
                } else {
                    p += "..]";
                }
                for (ph, at) in &l.phases {
                    p += &format!(" {ph} {:+.2}", at - t);
                }
                parts.push(p);
            }
        }
        parts.join(", ")
    }

    /// Every message's fate, counted; and up to `examples` examples of each dishonest one.
    fn tally(&self, examples: usize) -> (BTreeMap<Fate, u64>, Vec<String>) {
        let mut counts = BTreeMap::new();
        let mut shown: BTreeMap<Fate, usize> = BTreeMap::new();
        let mut ex = Vec::new();
        let keys = self
            .sends
            .keys()
            .chain(self.recvs.keys().filter(|k| !self.sends.contains_key(*k)));
        for key in keys {
            let f = self.fate(key);
            *counts.entry(f).or_insert(0) += 1;
            if !f.is_honest() {
                let n = shown.entry(f).or_insert(0);
                if *n < examples {
                    *n += 1;
                    let (to, t) = self
                        .sends
                        .get(key)
                        .map_or(("?".into(), -1.0), |s| (s.to.clone(), s.t));
                    ex.push(format!(
                        "{f:?}: {}#{} seq {} -> {to} at {t:.2} s; {}; {}",
                        key.0,
                        key.1,
                        key.2,
                        self.describe_lives(&key.0, t),
                        self.describe_lives(&to, t),
                    ));
                }
            }
        }
        (counts, ex)
    }
}

/// Relative RSS change from the mean of the first 60 s after `warmup` to the mean of the
/// last 60 s of `samples` (seconds, KiB); `None` if the samples do not span both windows.
fn drift(samples: &[(f64, u64)], warmup: f64) -> Option<f64> {
    let last = samples.last()?.0;
    if last < warmup + 120.0 {
        return None;
    }
    let mean = |lo: f64, hi: f64| {
        let xs: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| *t >= lo && *t < hi)
            .map(|(_, kb)| *kb as f64)
            .collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    };
    let base = mean(warmup, warmup + 60.0)?;
    let end = mean(last - 60.0, last + 1.0)?;
    (base > 0.0).then(|| (end - base) / base)
}

/// VmRSS of a process in KiB, from `/proc/<pid>/status`.
fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib(pid: u32) -> Option<u64> {
    parse_vmrss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// xorshift64*.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------
// The run.

enum Report {
    Line {
        slot: usize,
        inc: u64,
        line: String,
        t: f64,
    },
    Eof,
}

enum State {
    Running,
    /// Stdin closed at this time; waiting for the exit.
    Stopping(f64),
}

struct Node {
    name: String,
    inc: u64,
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    state: State,
    stable: bool,
    /// (seconds, KiB) of every incarnation.
    rss: Vec<(f64, u64)>,
    last_rss: u64,
}

/// Per node, over all its incarnations.
#[derive(Debug, Default, Clone)]
struct Counts {
    sent: u64,
    ok: u64,
    failed: u64,
    received: u64,
    bad: u64,
    /// Latest stats line of each incarnation.
    stats: BTreeMap<u64, Stats>,
}

struct Run {
    args: Args,
    bin: PathBuf,
    group: String,
    names: Vec<String>,
    seed: u64,
    start: Instant,
    tx: mpsc::Sender<Report>,
    ledger: Ledger,
    counts: Vec<Counts>,
    restarts_graceful: u64,
    restarts_killed: u64,
    graceful_timeouts: u64,
    open_readers: usize,
}

impl Run {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn spawn(&mut self, slot: usize, inc: u64) -> anyhow::Result<Node> {
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

    fn end_life(&mut self, name: &str, inc: u64, how: End) {
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

    fn handle(&mut self, r: Report) {
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

    fn table(&self, nodes: &[Node]) -> String {
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
fn build_node() -> anyhow::Result<PathBuf> {
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
    let out = cmd::stdout(&mut c)?;
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == "soak_node" {
            if let Some(exe) = v["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo build did not report the soak_node executable")
}

/// A free UDP port on loopback for the discovery group.
fn free_port() -> anyhow::Result<u16> {
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

fn summarize(run: &Run, nodes: &[Node], warmup: f64) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let (fates, examples) = run.ledger.tally(5);
    let get = |f: Fate| fates.get(&f).copied().unwrap_or(0);
    let total: u64 = fates.values().sum();
    println!("==> messages: {total} numbered messages");
    for (f, n) in &fates {
        println!("    {:<24} {n}", format!("{f:?}"));
    }
    println!("    duplicates received      {}", run.ledger.duplicates);
    let gap = get(Fate::InFlightToKilled) + get(Fate::QueuedAtKilledSender);
    println!(
        "    SIGKILL gap (sent OK, never received, a SIGKILL near): {gap} over {} SIGKILLs \
         ({:.1} per kill); received with the send unrecorded: {}",
        run.restarts_killed,
        gap as f64 / run.restarts_killed.max(1) as f64,
        get(Fate::ReceivedUnrecorded)
    );
    let dishonest: u64 = fates
        .iter()
        .filter(|(f, _)| !f.is_honest())
        .map(|(_, n)| n)
        .sum();
    if dishonest > 0 || run.ledger.duplicates > 0 {
        problems.push(format!(
            "{dishonest} messages outside delivered/failed/SIGKILL gap, {} duplicates",
            run.ledger.duplicates
        ));
        for e in &examples {
            println!("    e.g. {e}");
        }
    }

    // Asks and calls: every incarnation that stopped gracefully must account for each.
    let (mut asks, mut ask_ok, mut ask_err, mut rpcs, mut rpc_ok, mut rpc_err) = (0, 0, 0, 0, 0, 0);
    let (mut wrong, mut unfinal, mut dropped) = (0, 0, 0);
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for (slot, c) in run.counts.iter().enumerate() {
        for (inc, s) in &c.stats {
            dropped += s.dropped_events;
            wrong += s.ask_wrong + s.rpc_wrong;
            for (k, v) in &s.failures {
                *kinds.entry(k.clone()).or_default() += v;
            }
            if !s.is_final {
                unfinal += 1;
                continue;
            }
            asks += s.asks;
            ask_ok += s.ask_answered;
            ask_err += s.failed("ask:");
            rpcs += s.rpcs;
            rpc_ok += s.rpc_ok;
            rpc_err += s.failed("rpc:");
            if s.asks != s.ask_answered + s.failed("ask:") || s.rpcs != s.rpc_ok + s.failed("rpc:")
            {
                problems.push(format!(
                    "{}#{inc}: asks or calls do not add up",
                    run.names[slot]
                ));
            }
        }
    }
    println!(
        "==> asks (graceful incarnations): {asks} = {ask_ok} answered + {ask_err} failed; \
         RPC calls: {rpcs} = {rpc_ok} ok + {rpc_err} failed; wrong answers {wrong}; \
         incarnations without a final line (SIGKILLed): {unfinal}; events dropped: {dropped}"
    );
    for (k, v) in &kinds {
        println!("    {k:<40} {v}");
    }
    if wrong > 0 {
        problems.push(format!("{wrong} wrong answers"));
    }
    if dropped > 0 {
        problems.push(format!("{dropped} device events dropped"));
    }

    // RSS drift after the warm-up, on the nodes never restarted.
    println!("==> RSS (KiB) after a {warmup:.0} s warm-up");
    for n in nodes {
        let first = n.rss.iter().find(|(t, _)| *t >= warmup).map_or(0, |s| s.1);
        let peak = n.rss.iter().map(|s| s.1).max().unwrap_or(0);
        match (n.stable, drift(&n.rss, warmup)) {
            (true, Some(d)) => {
                println!(
                    "    {:<8} at warm-up {first}, last {}, peak {peak}, drift {:+.2}%",
                    n.name,
                    n.last_rss,
                    d * 100.0
                );
                if d.abs() >= DRIFT_GOAL {
                    problems.push(format!("{} RSS drift {:+.2}%", n.name, d * 100.0));
                }
            }
            (true, None) => println!("    {:<8} run too short for a drift figure", n.name),
            (false, _) => println!(
                "    {:<8} (restarted, incarnation {}) last {}, peak over all incarnations {peak}",
                n.name, n.inc, n.last_rss
            ),
        }
    }
    if problems.is_empty() {
        println!("==> soak: goals met");
        Ok(())
    } else {
        bail!("soak: {}", problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_with(lives: &[(&str, Vec<Life>)]) -> Ledger {
        let mut l = Ledger::default();
        for (n, v) in lives {
            l.lives.insert((*n).to_owned(), v.clone());
        }
        l
    }

    fn sent(to: &str, ok: bool, t: f64) -> Sent {
        Sent {
            to: to.to_owned(),
            ok,
            unknown: false,
            t,
        }
    }

    fn life(start: f64, end: f64, how: End) -> Life {
        Life {
            start,
            end,
            how,
            phases: Vec::new(),
        }
    }

    #[test]
    fn parses_node_lines() {
        assert_eq!(
            parse_line(r#"{"t":"send","to":"node-1","seq":4,"ok":true}"#),
            Some(NodeLine::Send {
                to: "node-1".into(),
                seq: 4,
                ok: true,
                err: None,
                unknown: false
            })
        );
        assert_eq!(
            parse_line(r#"{"t":"recv","from":"node-2","inc":3,"seq":9}"#),
            Some(NodeLine::Recv {
                from: "node-2".into(),
                inc: 3,
                seq: 9
            })
        );
        let s = parse_line(
            r#"{"t":"stats","final":true,"asks":5,"ask_answered":3,"failures":{"ask:unreachable":2,"msg:x":1}}"#,
        );
        let Some(NodeLine::Stats(s)) = s else {
            panic!("stats: {s:?}")
        };
        assert!(s.is_final);
        assert_eq!((s.asks, s.ask_answered, s.failed("ask:")), (5, 3, 2));
        assert_eq!(parse_line("not json"), None);
        assert_eq!(parse_line(r#"{"t":"send","to":"x"}"#), None);
    }

    #[test]
    fn parses_vmrss() {
        let status = "Name:\tsoak_node\nVmPeak:\t  9000 kB\nVmRSS:\t    8120 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(8120));
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }

    #[test]
    fn fates_of_messages() {
        let running = life(0.0, f64::INFINITY, End::Running);
        let mut l = ledger_with(&[
            ("a", vec![running.clone()]),
            (
                "b",
                vec![
                    life(0.0, 50.0, End::Killed),
                    life(50.0, 80.0, End::Graceful),
                    running.clone(),
                ],
            ),
            ("c", vec![life(0.0, 30.5, End::Killed), running]),
        ]);
        let key = |s: &str, i: u64, q: u64| (s.to_owned(), i, q);
        // Delivered, failed, failed but delivered.
        l.send("a", 0, 0, sent("b", true, 10.0));
        l.recv("b", "a".into(), 0, 0);
        l.send("a", 0, 1, sent("b", false, 10.0));
        l.send("a", 0, 2, sent("b", false, 10.0));
        l.recv("b", "a".into(), 0, 2);
        assert_eq!(l.fate(&key("a", 0, 0)), Fate::Delivered);
        assert_eq!(l.fate(&key("a", 0, 1)), Fate::Failed);
        assert_eq!(l.fate(&key("a", 0, 2)), Fate::FailedButDelivered);
        // Lost: receiver SIGKILLed 1 s after the send, and 4 s before it.
        l.send("a", 0, 3, sent("b", true, 49.0));
        l.send("a", 0, 4, sent("b", true, 54.0));
        assert_eq!(l.fate(&key("a", 0, 3)), Fate::InFlightToKilled);
        assert_eq!(l.fate(&key("a", 0, 4)), Fate::InFlightToKilled);
        // Lost around b's graceful stop at 80.
        l.send("a", 0, 5, sent("b", true, 79.5));
        assert_eq!(l.fate(&key("a", 0, 5)), Fate::LostAtGracefulReceiver);
        // Lost with nothing near: unexplained.
        l.send("a", 0, 6, sent("b", true, 20.0));
        assert_eq!(l.fate(&key("a", 0, 6)), Fate::LostUnexplained);
        // Sender c SIGKILLed just after sending.
        l.send("c", 0, 0, sent("a", true, 30.0));
        assert_eq!(l.fate(&key("c", 0, 0)), Fate::QueuedAtKilledSender);
        // Received without a send record; to the wrong node; twice.
        l.recv("a", "c".into(), 0, 1);
        assert_eq!(l.fate(&key("c", 0, 1)), Fate::ReceivedUnrecorded);
        l.send("a", 0, 7, sent("b", true, 20.0));
        l.recv("c", "a".into(), 0, 7);
        assert_eq!(l.fate(&key("a", 0, 7)), Fate::Misdelivered);
        l.recv("b", "a".into(), 0, 0);
        assert_eq!(l.duplicates, 1);
        let (counts, examples) = l.tally(10);
        assert_eq!(counts.values().sum::<u64>(), 10);
        assert_eq!(counts[&Fate::InFlightToKilled], 2);
        assert_eq!(examples.len(), 4, "{examples:?}");
    }

    #[test]
    fn drift_compares_the_first_minute_after_warmup_with_the_last() {
        let flat: Vec<(f64, u64)> = (0..100).map(|i| (f64::from(i) * 5.0, 10_000)).collect();
        assert_eq!(drift(&flat, 60.0), Some(0.0));
        // Growing 1% a minute after a warm-up that doubled it.
        let growing: Vec<(f64, u64)> = (0..=120)
            .map(|i| {
                let t = f64::from(i) * 5.0;
                let kb = if t < 60.0 {
                    5_000.0
                } else {
                    10_000.0 * (1.0 + 0.01 * (t - 60.0) / 60.0)
                };
                (t, kb as u64)
            })
            .collect();
        let d = drift(&growing, 60.0).unwrap();
        assert!((0.07..0.09).contains(&d), "{d}");
        // Too short to say.
        assert_eq!(drift(&flat[..20], 60.0), None);
        assert_eq!(drift(&[], 60.0), None);
    }

    #[test]
    fn args_parse_and_check() {
        let v = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let a = Args::parse(&v("--minutes 30 --restart-secs 5 --kill-ratio 0.25")).unwrap();
        assert_eq!((a.minutes, a.restart_secs, a.kill_ratio), (30.0, 5.0, 0.25));
        assert_eq!(a.warmup(), 300.0);
        assert_eq!(Args::parse(&[]).unwrap().warmup(), 60.0);
        assert!(Args::parse(&v("--minutes 0")).is_err());
        assert!(Args::parse(&v("--kill-ratio 2")).is_err());
        assert!(Args::parse(&v("--stable 10")).is_err());
        assert!(Args::parse(&v("--bogus 1")).is_err());
    }
}
