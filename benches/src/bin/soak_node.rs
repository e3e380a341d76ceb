//! One device of `cargo xtask soak`: a hail-discovery device on loopback that sends
//! numbered messages, asks questions and makes RPC calls to random peers at a bounded
//! rate, and prints one JSON object per line on stdout for the parent to count.
//!
//! Usage: `soak_node --name NAME --inc N --group 239.x.y.z:PORT --peers a,b,c [options]`
//!
//! Lines (compact JSON, one object each):
//! - `{"t":"start","name":..,"inc":..,"pid":..,"addr":..}` once the device runs;
//! - `{"t":"send","to":..,"seq":..,"ok":true}` or `..,"ok":false,"err":".."}` after each
//!   `Device::send` returns (`seq` numbers this incarnation's messages from 0);
//! - `{"t":"recv","from":..,"inc":..,"seq":..}` for each message event (sender's name,
//!   incarnation and number, read from the payload), or `{"t":"bad",..}` for a payload
//!   that does not parse;
//! - `{"t":"phase","p":..}` as a graceful stop goes: `stopping` (load stopped, calls in
//!   flight awaited), `shutdown` (`Device::close` called), `down` (it returned);
//! - `{"t":"stats",..}` every `--stats-ms` and a last one with `"final":true` after a
//!   graceful stop: ask, RPC and event counters.
//!
//! Stops gracefully (load stopped and awaited, `Device::close`, events drained, final
//! stats) on end of stdin, or after `--max-secs` whatever happens to the parent.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the node reports to its parent on stdout"
)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hail_discovery::{Device, DeviceEvent};
use serde_json::json;
use tokio::sync::watch;

/// The RPC method every node binds: returns its argument plus one.
const ECHO: &str = "soak/echo";

#[derive(Debug, Clone)]
struct Args {
    name: String,
    inc: u64,
    group: SocketAddr,
    peers: Vec<String>,
    max_secs: u64,
    msg_ms: u64,
    ask_ms: u64,
    rpc_ms: u64,
    stats_ms: u64,
    size: usize,
    seed: u64,
}

impl Args {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut a = Self {
            name: String::new(),
            inc: 0,
            group: SocketAddr::from((Ipv4Addr::new(239, 255, 72, 81), 0)),
            peers: Vec::new(),
            max_secs: 3600,
            msg_ms: 100,
            ask_ms: 500,
            rpc_ms: 250,
            stats_ms: 1000,
            size: 64,
            seed: 1,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .with_context(|| format!("{flag} needs a value"))?
                .as_str();
            match flag.as_str() {
                "--name" => a.name = value.to_owned(),
                "--inc" => a.inc = value.parse()?,
                "--group" => a.group = value.parse()?,
                "--peers" => {
                    a.peers = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "--max-secs" => a.max_secs = value.parse()?,
                "--msg-ms" => a.msg_ms = value.parse()?,
                "--ask-ms" => a.ask_ms = value.parse()?,
                "--rpc-ms" => a.rpc_ms = value.parse()?,
                "--stats-ms" => a.stats_ms = value.parse()?,
                "--size" => a.size = value.parse()?,
                "--seed" => a.seed = value.parse()?,
                other => bail!("unknown option {other}"),
            }
        }
        if a.name.is_empty() {
            bail!("--name is required");
        }
        if !a.group.ip().is_multicast() || a.group.port() == 0 {
            bail!("--group must be a multicast address with a port");
        }
        a.peers.retain(|p| *p != a.name);
        a.max_secs = a.max_secs.clamp(1, 24 * 3600);
        a.msg_ms = a.msg_ms.max(1);
        a.ask_ms = a.ask_ms.max(1);
        a.rpc_ms = a.rpc_ms.max(1);
        a.stats_ms = a.stats_ms.max(100);
        a.size = a.size.clamp(32, 64 * 1024);
        Ok(a)
    }
}

/// xorshift64*: enough to pick peers, no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// Counters printed in the stats lines.
#[derive(Debug, Default)]
struct Counters {
    msgs_sent: AtomicU64,
    msgs_ok: AtomicU64,
    msgs_failed: AtomicU64,
    msgs_recv: AtomicU64,
    msgs_bad: AtomicU64,
    asks: AtomicU64,
    ask_answered: AtomicU64,
    ask_wrong: AtomicU64,
    questions: AtomicU64,
    rpcs: AtomicU64,
    rpc_ok: AtomicU64,
    rpc_wrong: AtomicU64,
    rpc_served: AtomicU64,
    joined: AtomicU64,
    left: AtomicU64,
    /// Failures by kind: `msg:ERROR`, `ask:ERROR`, `rpc:ERROR`.
    failures: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn fail(&self, kind: String) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        *f.entry(kind).or_default() += 1;
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Prints one line; a closed stdout (parent gone) is ignored, stdin EOF stops us anyway.
fn emit(v: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn stats_line(c: &Counters, device: Option<&Device>, is_final: bool) -> serde_json::Value {
    let failures = c.failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    json!({
        "t": "stats",
        "final": is_final,
        "msgs_sent": get(&c.msgs_sent),
        "msgs_ok": get(&c.msgs_ok),
        "msgs_failed": get(&c.msgs_failed),
        "msgs_recv": get(&c.msgs_recv),
        "msgs_bad": get(&c.msgs_bad),
        "asks": get(&c.asks),
        "ask_answered": get(&c.ask_answered),
        "ask_wrong": get(&c.ask_wrong),
        "questions": get(&c.questions),
        "rpcs": get(&c.rpcs),
        "rpc_ok": get(&c.rpc_ok),
        "rpc_wrong": get(&c.rpc_wrong),
        "rpc_served": get(&c.rpc_served),
        "joined": get(&c.joined),
        "left": get(&c.left),
        "peers": device.map_or(0, |d| d.peers().len()),
        "links": device.map_or(0, Device::links),
        "dropped_events": device.map_or(0, Device::dropped_events),
        "failures": failures,
    })
}

/// The message payload: `soak1 <inc> <seq> ` padded with dots to `size` bytes.
fn payload(inc: u64, seq: u64, size: usize) -> Bytes {
    let mut s = format!("soak1 {inc} {seq} ");
    while s.len() < size {
        s.push('.');
    }
    Bytes::from(s)
}

fn parse_payload(b: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(b.get(..b.len().min(64))?).ok()?;
    let mut it = s.split(' ');
    if it.next()? != "soak1" {
        return None;
    }
    let inc = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    Some((inc, seq))
}

/// Waits until `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Sleeps `d` unless `stop` turns true first; returns whether to go on.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let _ = tokio::time::timeout(d, stopped(stop)).await;
    !*stop.borrow()
}

/// What the three load loops share: the device, the node's settings and counters, the
/// stop signal and a random stream of the loop's own.
struct Load {
    device: Arc<Device>,
    args: Args,
    c: Arc<Counters>,
    stop: watch::Receiver<bool>,
    rng: Rng,
}

impl Load {
    /// A loop's share; `salt` gives it a random stream of its own from the node's seed.
    fn new(
        device: &Arc<Device>,
        args: &Args,
        c: &Arc<Counters>,
        stop: &watch::Receiver<bool>,
        salt: u64,
    ) -> Self {
        Self {
            device: Arc::clone(device),
            args: args.clone(),
            c: Arc::clone(c),
            stop: stop.clone(),
            rng: Rng::new(args.seed ^ salt),
        }
    }

    /// Waits `every_ms` (again while the node has no peers); false once told to stop.
    async fn next_round(&mut self, every_ms: u64) -> bool {
        while pause(&mut self.stop, Duration::from_millis(every_ms)).await {
            if !self.args.peers.is_empty() {
                return true;
            }
        }
        false
    }

    /// One of the peers, at random.
    fn any_peer(&mut self) -> String {
        self.args.peers[self.rng.below(self.args.peers.len())].clone()
    }
}

async fn send_loop(mut l: Load) {
    let mut seq = 0u64;
    while l.next_round(l.args.msg_ms).await {
        let to = l.any_peer();
        let (args, c, device) = (&l.args, &l.c, &l.device);
        let body = payload(args.inc, seq, args.size);
        bump(&c.msgs_sent);
        // Bounded: a send that cannot get room in 5 s is abandoned, outcome unknown.
        let r = tokio::time::timeout(Duration::from_secs(5), device.send(to.as_str(), body)).await;
        let line = match r {
            Ok(results) => match results.into_iter().next() {
                Some((_, Ok(()))) => {
                    bump(&c.msgs_ok);
                    json!({"t": "send", "to": to, "seq": seq, "ok": true})
                }
                Some((_, Err(e))) => {
                    bump(&c.msgs_failed);
                    c.fail(format!("msg:{e}"));
                    json!({"t": "send", "to": to, "seq": seq, "ok": false, "err": e.to_string()})
                }
                None => {
                    bump(&c.msgs_failed);
                    c.fail("msg:no result".into());
                    json!({"t": "send", "to": to, "seq": seq, "ok": false, "err": "no result"})
                }
            },
            Err(_) => {
                bump(&c.msgs_failed);
                c.fail("msg:abandoned".into());
                json!({"t": "send", "to": to, "seq": seq, "ok": false, "err": "abandoned", "unknown": true})
            }
        };
        emit(&line);
        seq += 1;
    }
}

async fn ask_loop(mut l: Load) {
    let mut n = 0u64;
    while l.next_round(l.args.ask_ms).await {
        let (args, c, device, rng) = (&l.args, &l.c, &l.device, &mut l.rng);
        // One to three distinct random peers.
        let want = 1 + rng.below(3).min(args.peers.len() - 1);
        let mut targets: Vec<String> = Vec::with_capacity(want);
        while targets.len() < want {
            let p = &args.peers[rng.below(args.peers.len())];
            if !targets.contains(p) {
                targets.push(p.clone());
            }
        }
        let question = Bytes::from(format!("q {} {n}", args.name));
        n += 1;
        for _ in &targets {
            bump(&c.asks);
        }
        let answers = device
            .ask(targets.clone(), question.clone(), Duration::from_secs(1))
            .await;
        for t in &targets {
            match answers.get(t) {
                Some(Ok(a)) if *a == question => bump(&c.ask_answered),
                Some(Ok(_)) => {
                    bump(&c.ask_answered);
                    bump(&c.ask_wrong);
                }
                Some(Err(e)) => c.fail(format!("ask:{e}")),
                None => c.fail("ask:missing from the result".into()),
            }
        }
    }
}

async fn rpc_loop(mut l: Load) {
    let mut n = 0u64;
    while l.next_round(l.args.rpc_ms).await {
        let to = l.any_peer();
        let (c, device) = (&l.c, &l.device);
        bump(&c.rpcs);
        n += 1;
        match device.peer(&to) {
            Err(e) => c.fail(format!("rpc:resolve: {e}")),
            Ok(peer) => {
                match peer
                    .execute::<u64, u64>(ECHO, n, Duration::from_secs(1))
                    .await
                {
                    Ok(r) if r == n.wrapping_add(1) => bump(&c.rpc_ok),
                    Ok(_) => {
                        bump(&c.rpc_ok);
                        bump(&c.rpc_wrong);
                    }
                    Err(e) => c.fail(format!("rpc:{e}")),
                }
            }
        }
    }
}

async fn run(args: Args, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let (device, mut events) = Device::builder(args.name.clone())
        .group(args.group)
        .interface(Ipv4Addr::LOCALHOST)
        .ttl(1)
        .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .start()
        .await
        .context("starting the device")?;
    let c = Arc::new(Counters::default());
    let questions = c.clone();
    device.on_question(move |_from, q| {
        bump(&questions.questions);
        async move { Ok(q) }
    })?;
    let served = c.clone();
    device
        .handlers()
        .bind(ECHO, move |x: u64| {
            bump(&served.rpc_served);
            async move { Ok::<u64, String>(x.wrapping_add(1)) }
        })
        .map_err(|e| anyhow::anyhow!("bind {ECHO}: {e}"))?;
    let device = Arc::new(device);
    emit(&json!({
        "t": "start", "name": args.name, "inc": args.inc,
        "pid": std::process::id(), "addr": device.local_addr().to_string(),
    }));

    let rc = c.clone();
    let reader = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                DeviceEvent::Message { from, payload, .. } => match parse_payload(&payload) {
                    Some((inc, seq)) => {
                        bump(&rc.msgs_recv);
                        emit(&json!({"t": "recv", "from": &*from, "inc": inc, "seq": seq}));
                    }
                    None => {
                        bump(&rc.msgs_bad);
                        emit(&json!({"t": "bad", "from": &*from, "len": payload.len()}));
                    }
                },
                DeviceEvent::PeerJoined(_) => bump(&rc.joined),
                DeviceEvent::PeerLeft { .. } => bump(&rc.left),
                _ => {}
            }
        }
    });

    let (load_stop_tx, load_stop) = watch::channel(false);
    let loads = [
        tokio::spawn(send_loop(Load::new(&device, &args, &c, &load_stop, 0x5e4d))),
        tokio::spawn(ask_loop(Load::new(&device, &args, &c, &load_stop, 0xa5c))),
        tokio::spawn(rpc_loop(Load::new(&device, &args, &c, &load_stop, 0x49c))),
    ];

    // Stats until told to stop (stdin EOF) or out of time.
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        if !pause(&mut stop, Duration::from_millis(args.stats_ms).min(left)).await {
            break;
        }
        emit(&stats_line(&c, Some(&device), false));
    }

    // Graceful stop: no new load, every call in flight finished (each is bounded).
    emit(&json!({"t": "phase", "p": "stopping"}));
    let _ = load_stop_tx.send(true);
    for l in loads {
        let _ = tokio::time::timeout(Duration::from_secs(10), l).await;
    }
    // Whatever arrives until the links close is still counted by the reader.
    emit(&json!({"t": "phase", "p": "shutdown"}));
    match Arc::try_unwrap(device) {
        Ok(d) => {
            let _ = tokio::time::timeout(Duration::from_secs(10), d.close()).await;
            emit(&json!({"t": "phase", "p": "down"}));
        }
        Err(d) => {
            eprintln!("soak_node {}: device still shared at stop", args.name);
            drop(d);
        }
    }
    if tokio::time::timeout(Duration::from_secs(3), reader)
        .await
        .is_err()
    {
        eprintln!("soak_node {}: event stream did not end", args.name);
    }
    emit(&stats_line(&c, None, true));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: soak_node --name NAME --inc N --group ADDR:PORT --peers a,b,c \
             [--max-secs S] [--msg-ms MS] [--ask-ms MS] [--rpc-ms MS] [--stats-ms MS] \
             [--size BYTES] [--seed N]"
        );
        return Ok(());
    }
    let args = Args::parse(&raw)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // End of stdin (the parent closed it, or died) is the graceful stop.
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = stop_tx.send(true);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args, stop_rx))?;
    // Tasks the device left behind must not hold the process.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_pads() {
        let p = payload(3, 77, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(parse_payload(&p), Some((3, 77)));
        assert_eq!(parse_payload(b"hello"), None);
        assert_eq!(parse_payload(b"soak1 x 1 "), None);
    }

    #[test]
    fn args_drop_own_name_and_need_a_group_port() {
        let v = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let a = Args::parse(&v("--name a --group 239.255.72.81:4000 --peers a,b,c")).unwrap();
        assert_eq!(a.peers, vec!["b", "c"]);
        assert!(Args::parse(&v("--name a --group 239.255.72.81:0")).is_err());
        assert!(Args::parse(&v("--name a --group 127.0.0.1:4000")).is_err());
    }
}
