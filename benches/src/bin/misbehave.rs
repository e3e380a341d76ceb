//! The misbehaving peers of issue 12, for a bounded time against a real `hail listen` on
//! loopback, with the target's memory and a legitimate device's questions measured
//! (the goals recorded in docs/security.md, "Measured against `hail listen`").
//!
//! Usage: `misbehave --hail PATH --attack ATTACK [--secs 60]`, `ATTACK` one of
//! - `ping`: 4 linked peers send PINGs (`0xff00`) of 64 KiB as fast as the target takes
//!   them and never read the answers;
//! - `ask`: the same with `hail/ask` questions of 64 KiB;
//! - `frames`: 64 linked peers send messages of 15 MiB back to back (so each always has
//!   a large frame in flight), to a target whose standard output (where `hail listen`
//!   prints messages) is read at 1 MiB/s: a slow consumer;
//! - `answer`: the target answers with `--answer-cmd 'sleep 0.5; cat'`; 20 linked peers
//!   send questions back to back and never read; the target's child processes (the
//!   running commands) are counted every 5 ms. The legitimate device asks every 5 s
//!   here (about half its share of the answer slots), 3 questions in the quiet time.
//!
//! Before the attack the target idles until its resident set settles, and a device (in
//! this process) asks it 20 questions and makes 20 PING calls: their median is the quiet
//! time. Another device, the legitimate one, probes during the attack (so the quiet
//! questions do not count against it in the target's answer slots). During the attack
//! it asks and calls every 200 ms (5 s timeout); each must succeed within
//! max(2 x quiet, 1 s). After it, the target's `VmHWM` is read: the
//! goal is at most its idle `VmRSS` + 64 MiB. The figures go to stdout, one `key=value`
//! line per attack; the exit status is 0 whether goals are met or not (a measurement,
//! not a test).
//!
//! Everything stays on 127.0.0.1 (the multicast group on the loopback interface, TTL 1),
//! every peer stops at the deadline and the target is killed at the end.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a measurement program reports on stdout"
)]

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hail_crypto::Identity;
use hail_discovery::{Announce, AnnounceBody, Device, Hello, LinkMessage};
use hail_link::{Connection, Heartbeat, Incoming, LinkConfig};
use hail_rpc::{Opcode, Packet, RetCode};
use hail_wire::Binary;

/// How long an ask or call of the legitimate device may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the legitimate device asks and calls during the attack (but `answer`).
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How often it asks during `answer`: 5 s, about half its share of the answer slots
/// (4 slots of 0.5 s among 21 askers: one command every 2.6 s each). An asker that wants
/// its share or more is, rightly, not always served first.
const PROBE_EVERY_ANSWER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    Ping,
    Ask,
    Frames,
    Answer,
}

struct Args {
    hail: String,
    attack: Attack,
    secs: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut hail = None;
    let mut attack = None;
    let mut secs = 60;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--hail" => hail = Some(value()?),
            "--secs" => secs = value()?.parse()?,
            "--attack" => {
                attack = Some(match value()?.as_str() {
                    "ping" => Attack::Ping,
                    "ask" => Attack::Ask,
                    "frames" => Attack::Frames,
                    "answer" => Attack::Answer,
                    other => bail!("unknown attack {other:?}"),
                });
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    if !(1..=600).contains(&secs) {
        bail!("--secs must be 1 to 600");
    }
    Ok(Args {
        hail: hail.context("--hail PATH (the hail binary) is required")?,
        attack: attack.context("--attack ping|ask|frames|answer is required")?,
        secs,
    })
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// A `VmRSS`/`VmHWM`-style line of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key} for {pid}"))
}

/// The target's direct children (its running answer commands).
fn children(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .map(|c| c.split_whitespace().count())
        .sum()
}

struct Target {
    child: Child,
    port: u16,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hail listen` on loopback; its stdout is read at `rate` bytes a second
/// (`None`: as fast as it comes), its stderr is discarded.
fn start_target(
    hail: &str,
    group: SocketAddr,
    answer_cmd: Option<&str>,
    rate: Option<u64>,
) -> anyhow::Result<Target> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new(hail);
    cmd.args(["--interface", "127.0.0.1", "--group", &group.to_string()])
        .args(["listen", "--name", "target", "--port", &port.to_string()]);
    if let Some(c) = answer_cmd {
        cmd.args(["--answer-cmd", c]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {hail}"))?;
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    // The first lines up to "listening as" (a wrapper such as heaptrack may print first).
    let mut said = String::new();
    while !said.contains("listening as target") {
        if out.read_line(&mut said)? == 0 || said.len() > 4096 {
            bail!("the target never said it listens: {said:?}");
        }
    }
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Some(rate) = rate {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
            }
        }
    });
    let mut err = child.stderr.take().context("stderr")?;
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    Ok(Target { child, port })
}

/// A linked peer of the attacker's own making: a fresh key, a link that proves it, a
/// hello with its signed announce (unreachable: port 0). Its incoming frames are never
/// read: the caller keeps the [`Incoming`] and leaves it alone.
async fn raw_peer(
    to: SocketAddr,
    n: usize,
) -> anyhow::Result<(Connection<Binary>, Incoming<Bytes>)> {
    let identity = Identity::generate()?;
    let config = LinkConfig::builder()
        .heartbeat(Some(Heartbeat::default()))
        .incoming_capacity(4)
        .identity(&identity)
        .build()?;
    let (conn, incoming) = Connection::connect(to, config, Binary).await?;
    let body = AnnounceBody {
        name: format!("mallory-{n}"),
        port: 0,
        lease: Duration::from_secs(60),
        addresses: vec![],
        metadata: Default::default(),
    };
    let announce = Announce::sign(&identity, 1, body)?;
    let hello = LinkMessage::Hello(Hello {
        tag: n as u64 + 1,
        announce,
    })
    .to_bytes()?;
    conn.send(Bytes::from(hello)).await?;
    Ok((conn, incoming))
}

/// One request packet of `method` carrying `args` (already encoded).
fn request(retcode: u32, method: hail_rpc::Method, args: Bytes) -> Bytes {
    Packet::Request {
        retcode: RetCode(retcode),
        method,
        args,
    }
    .to_bytes()
}

/// The attack's peers, each sending its frames until `stop`; returns frames sent.
async fn attack(
    kind: Attack,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinSet<u64>> {
    let (peers, frame): (usize, Box<dyn Fn(u32) -> Bytes + Send + Sync>) = match kind {
        Attack::Ping => {
            let args = Bytes::from(vec![7u8; 64 << 10]);
            (
                4,
                Box::new(move |r| request(r, Opcode::PING.into(), args.clone())),
            )
        }
        Attack::Ask => {
            let args = Bytes::from(postcard_bytes(64 << 10));
            (
                4,
                Box::new(move |r| request(r, "hail/ask".into(), args.clone())),
            )
        }
        Attack::Answer => {
            let args = Bytes::from(postcard_bytes(16));
            (
                20,
                Box::new(move |r| request(r, "hail/ask".into(), args.clone())),
            )
        }
        Attack::Frames => {
            let mut m = vec![b'a'; 15 << 20];
            m[0] = b'M';
            let m = Bytes::from(m);
            (64, Box::new(move |_| m.clone()))
        }
    };
    let frame = Arc::new(frame);
    let mut set = tokio::task::JoinSet::new();
    for n in 0..peers {
        let (conn, incoming) = raw_peer(to, n).await?;
        let stop = Arc::clone(&stop);
        let frame = Arc::clone(&frame);
        set.spawn(async move {
            let _never_read = incoming;
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let f = frame(sent as u32 + 1);
                // Bounded by the deadline: a send the target holds back is given up.
                match tokio::time::timeout(Duration::from_millis(500), conn.send(f)).await {
                    Ok(Ok(())) => sent += 1,
                    Ok(Err(_)) => break,
                    Err(_) => {}
                }
            }
            sent
        });
    }
    Ok(set)
}

/// The `hail/ask` argument: a question of `len` bytes, as `Device::ask` encodes it.
fn postcard_bytes(len: usize) -> Vec<u8> {
    postcard::to_allocvec(&vec![b'q'; len]).expect("a byte string encodes")
}

/// One ask and one PING call of the legitimate device: their times, or why they failed.
async fn probe(device: &Device) -> (Result<Duration, String>, Result<Duration, String>) {
    let t = Instant::now();
    let asked = device
        .ask("target", Bytes::from_static(b"state?"), PROBE_TIMEOUT)
        .await;
    let ask = match asked.get("target") {
        Some(Ok(_)) => Ok(t.elapsed()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("no answer".into()),
    };
    let t = Instant::now();
    let call = match device.peer("target") {
        Ok(peer) => peer
            .execute::<_, ()>(Opcode::PING, (), PROBE_TIMEOUT)
            .await
            .map(|()| t.elapsed())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    (ask, call)
}

/// A device named `name` on `group` (loopback, TTL 1), linked to the target.
async fn linked_device(name: &str, group: SocketAddr) -> anyhow::Result<Device> {
    let (device, mut events) = Device::builder(name)
        .group(group)
        .interface(Ipv4Addr::LOCALHOST)
        .ttl(1)
        .start()
        .await?;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    tokio::time::timeout(Duration::from_secs(10), device.wait_for_peer("target"))
        .await
        .with_context(|| format!("{name} never met the target"))?;
    Ok(device)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[derive(Default)]
struct Probes {
    ok: u32,
    failed: u32,
    late: u32,
    max: Duration,
    /// The first failure's error.
    first_error: Option<String>,
}

impl Probes {
    fn add(&mut self, d: Result<Duration, String>, bound: Duration) {
        match d {
            Ok(d) => {
                self.ok += 1;
                self.late += u32::from(d > bound);
                self.max = self.max.max(d);
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let group: SocketAddr =
        format!("239.255.77.{}:{}", std::process::id() % 200 + 1, 47_000).parse()?;
    let (answer_cmd, rate) = match args.attack {
        Attack::Answer => (Some("sleep 0.5; cat"), None),
        Attack::Frames => (None, Some(1 << 20)),
        _ => (None, None),
    };
    let target = start_target(&args.hail, group, answer_cmd, rate)?;
    let pid = target.child.id();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, target.port));

    // The quiet time is measured by a device of its own: the target's answer slots go to
    // the askers that used them least lately, so the quiet questions would count against
    // the legitimate device during the attack.
    let quiet = linked_device("quiet", group).await?;
    let device = linked_device("probe", group).await?;

    // Quiet: the target idles, then 20 probes.
    let (mut asks, mut calls) = (Vec::new(), Vec::new());
    let (quiet_probes, every) = match args.attack {
        Attack::Answer => (3, PROBE_EVERY_ANSWER),
        _ => (20, PROBE_EVERY),
    };
    for _ in 0..quiet_probes {
        let (a, c) = probe(&quiet).await;
        asks.push(a.map_err(|e| anyhow::anyhow!("a quiet ask failed: {e}"))?);
        calls.push(c.map_err(|e| anyhow::anyhow!("a quiet call failed: {e}"))?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    quiet.close().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = status_kib(pid, "VmRSS:")?;
    let idle_hwm = status_kib(pid, "VmHWM:")?;
    let (quiet_ask, quiet_call) = (median(asks), median(calls));
    let ask_bound = (quiet_ask * 2).max(Duration::from_secs(1));
    let call_bound = (quiet_call * 2).max(Duration::from_secs(1));

    let stop = Arc::new(AtomicBool::new(false));
    let max_children = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_children) = (Arc::clone(&stop), Arc::clone(&max_children));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                max_children.fetch_max(children(pid) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut peers = attack(args.attack, to, Arc::clone(&stop)).await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.secs);
    let (mut ask_probes, mut call_probes) = (Probes::default(), Probes::default());
    let mut peak_rss = 0;
    if args.attack == Attack::Answer {
        // The first question waits one interval: at the attack's first instant the
        // attackers have no history yet, and the legitimate device is one of 21 equal
        // newcomers behind a full queue (the slots favour who used them least lately).
        tokio::time::sleep(every).await;
    }
    while Instant::now() < deadline {
        let (a, c) = probe(&device).await;
        ask_probes.add(a, ask_bound);
        call_probes.add(c, call_bound);
        peak_rss = peak_rss.max(status_kib(pid, "VmRSS:")?);
        tokio::time::sleep(every).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    while let Some(n) = peers.join_next().await {
        sent += n.unwrap_or(0);
    }
    let _ = sampler.join();
    let hwm = status_kib(pid, "VmHWM:")?;
    let grown_mib = hwm.saturating_sub(idle_rss) / 1024;
    println!(
        "attack={:?} secs={} frames_sent={sent} idle_rss_mib={} idle_hwm_mib={} \
         peak_rss_mib={} vmhwm_mib={} grown_mib={grown_mib} rss_goal_met={} \
         quiet_ask_ms={:.1} ask_ok={} ask_failed={} ask_late={} ask_max_ms={:.0} \
         quiet_call_ms={:.1} call_ok={} call_failed={} call_late={} call_max_ms={:.0} \
         max_answer_commands={} ask_error={:?} call_error={:?}",
        args.attack,
        args.secs,
        idle_rss / 1024,
        idle_hwm / 1024,
        peak_rss / 1024,
        hwm / 1024,
        grown_mib <= 64,
        quiet_ask.as_secs_f64() * 1e3,
        ask_probes.ok,
        ask_probes.failed,
        ask_probes.late,
        ask_probes.max.as_secs_f64() * 1e3,
        quiet_call.as_secs_f64() * 1e3,
        call_probes.ok,
        call_probes.failed,
        call_probes.late,
        call_probes.max.as_secs_f64() * 1e3,
        max_children.load(Ordering::Relaxed),
        ask_probes.first_error.unwrap_or_default(),
        call_probes.first_error.unwrap_or_default(),
    );
    device.close().await;
    drop(target);
    Ok(())
}
