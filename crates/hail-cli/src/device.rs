//! The subcommands that join the network as a device: listen, send, ask, call, scout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hail::discovery::LeaveReason;
use hail::link::Budget;
use hail::prelude::*;
use serde_json::{Value, json};

use crate::answer::{self, AnswerCmd};
use crate::fail::{Kind, KindExt, fail};
use crate::out::{self, escape, json_line, payload_json, text, waiting};
use crate::printer::{Line, Printer};
use crate::{Common, parse_duration, shutdown_signal};

/// How long `send`, `ask` and `call` wait to find their targets by default: 5 s.
const DEFAULT_WAIT: &str = "5s";
/// The methods `hail listen` serves to `hail call`.
const METHODS: &str = "echo, info";

/// `hail listen`.
#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// This device's name (1 to 64 bytes).
    #[arg(long)]
    name: String,
    /// The TCP port its links listen on, for a firewall rule (the address is
    /// `--interface`, default every interface). Default: 0, a free port each start.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Answer questions with the standard output of this shell command (`sh -c`), which
    /// gets the question on standard input and the asker's name in `HAIL_FROM`; a
    /// non-zero exit fails the question. It runs in a process group of its own, killed
    /// at the deadline or when it ends; 64 KiB of its output are kept. Default: echo the
    /// question.
    #[arg(long, value_name = "CMD")]
    answer_cmd: Option<String>,
    /// How many answer commands may run at once (for all askers together). With 2 or
    /// more, one of them is kept for an asker with nothing else in hand, none refused
    /// lately, that asked less lately than every asker running a command (a device asking
    /// now and then, against peers asking back to back): the others share one less.
    #[arg(long, value_name = "N", default_value_t = answer::DEFAULT_JOBS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    answer_jobs: usize,
    /// How many more questions may wait for a free slot; beyond that a question is
    /// answered at once with a `busy` error.
    #[arg(long, value_name = "N", default_value_t = answer::DEFAULT_QUEUE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=4096))]
    answer_queue: usize,
    /// How long one answer command may run (and a question wait for a slot) before it
    /// fails; the command is then killed with its process group.
    #[arg(long, value_name = "DURATION", default_value = answer::DEFAULT_TIMEOUT,
          value_parser = parse_duration)]
    answer_timeout: Duration,
}

/// `hail send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The device to send to, by name.
    to: String,
    /// The message (UTF-8 text).
    message: String,
    /// This device's name. Default: `hail-send-<pid>`.
    #[arg(long)]
    name: Option<String>,
    /// How long to look for the target.
    #[arg(long, default_value = DEFAULT_WAIT, value_parser = parse_duration)]
    wait: Duration,
}

/// `hail ask`.
#[derive(Debug, Args)]
pub(crate) struct AskArgs {
    /// The devices to ask, by name.
    #[arg(required = true, num_args = 1..)]
    to: Vec<String>,
    /// The question (UTF-8 text).
    question: String,
    /// How long to wait for the answers once the targets are found.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// How long to look for the targets.
    #[arg(long, default_value = DEFAULT_WAIT, value_parser = parse_duration)]
    wait: Duration,
    /// This device's name. Default: `hail-ask-<pid>`.
    #[arg(long)]
    name: Option<String>,
}

/// `hail call`.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The device to call, by name.
    device: String,
    /// The method (`hail listen` serves `echo` and `info`).
    method: String,
    /// The arguments, as JSON.
    #[arg(value_parser = parse_json)]
    args_json: Value,
    /// How long to wait for the result once the device is found.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// How long to look for the device.
    #[arg(long, default_value = DEFAULT_WAIT, value_parser = parse_duration)]
    wait: Duration,
    /// This device's name. Default: `hail-call-<pid>`.
    #[arg(long)]
    name: Option<String>,
}

/// `hail scout`.
#[derive(Debug, Args)]
pub(crate) struct ScoutArgs {
    /// Print the table once, after `--timeout`, and exit.
    #[arg(long)]
    once: bool,
    /// With `--once`: how long to look.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// This device's name. Default: `hail-scout-<pid>`.
    #[arg(long)]
    name: Option<String>,
}

fn parse_json(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

/// The device's discovery groups for a human: one, or both defaults (`A and B`).
fn groups(device: &Device) -> String {
    let all: Vec<String> = device.groups().iter().map(ToString::to_string).collect();
    all.join(" and ")
}

fn default_name(cmd: &str) -> String {
    format!("hail-{cmd}-{}", std::process::id())
}

/// Starts a device with the common flags; its links listen on `port` (0: a free one).
async fn start(common: &Common, name: &str, port: u16) -> anyhow::Result<(Device, DeviceEvents)> {
    start_with(common, name, port, Budget::default()).await
}

/// [`start`] with the device's memory budget given (`hail listen` holds its lines in it).
async fn start_with(
    common: &Common,
    name: &str,
    port: u16,
    budget: Budget,
) -> anyhow::Result<(Device, DeviceEvents)> {
    let mut builder = Device::builder(name).budget(budget);
    // Unset, the device picks its default groups: both where its interfaces have both
    // families, else the one of theirs.
    if let Some(g) = common.group {
        builder = builder.group(g);
    }
    for i in &common.interface {
        builder = builder.interface(i.clone());
    }
    // Unset, the family of the device's default group on the interface.
    let ip = common
        .listen_ip(common.group.map(|g| g.is_ipv6()))
        .kind(Kind::Usage)?;
    builder = if ip.is_unspecified() {
        // Every interface: the device's default address (dual-stack where it can be).
        builder.listen_port(port)
    } else {
        builder.listen(SocketAddr::new(ip, port))
    };
    if let Some(p) = &common.passphrase {
        builder = builder.passphrase(p.clone());
    }
    if let Some(f) = &common.identity {
        builder = builder.identity_file(f);
    }
    if let Some(f) = &common.known_devices {
        builder = builder.known_devices(f);
    }
    for (k, v) in &common.meta {
        builder = builder.metadata(k, v);
    }
    let started = builder.start().await;
    // A name or setting the device refuses came from the command line.
    let kind = match &started {
        Err(DeviceError::Config(_)) => Kind::Usage,
        _ => Kind::Network,
    };
    started
        .with_context(|| format!("cannot start device `{}`", escape(name)))
        .kind(kind)
}

/// Waits until every name in `names` is a joined peer, at most `wait`.
async fn wait_for(
    device: &Device,
    events: &mut DeviceEvents,
    names: &[String],
    wait: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    let _spinner = waiting(format!(
        "looking for {}",
        names
            .iter()
            .map(|n| escape(n))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    loop {
        let peers = device.peers();
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !peers.iter().any(|p| &p.name == *n))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(fail(Kind::Failed, "the device stopped")),
            Err(_) => {
                return Err(fail(
                    Kind::NotFound,
                    format!(
                        "no device named {} found on {} within {:?} (is it running, with the \
                         same passphrase, group and interface?)",
                        missing.join(", "),
                        groups(device),
                        wait
                    ),
                ));
            }
        }
    }
}

/// `hail listen`.
pub(crate) async fn listen(common: &Common, args: ListenArgs) -> anyhow::Result<()> {
    // Shared with the printer: a line waiting for stdout holds its bytes in it.
    let budget = Budget::default();
    let (device, mut events) = start_with(common, &args.name, args.port, budget.clone()).await?;
    let answer_cmd = args.answer_cmd.map(|cmd| {
        Arc::new(AnswerCmd::new(
            cmd,
            args.answer_jobs,
            args.answer_queue,
            args.answer_timeout,
        ))
    });
    let json = common.json;
    // Printed by a thread of its own: a reader of stdout that falls behind (or reads
    // nothing) holds back the events, never the answers, the calls or the links.
    let printer = Printer::start(if json { skipped_json } else { skipped_text }, budget)
        .context("cannot start the thread that prints")?;
    let out = printer.clone();
    device.on_question(move |from, question| {
        let cmd = answer_cmd.clone();
        let out = out.clone();
        async move {
            // About the question's length (twice that in hex), and the asker's name.
            out.print_or_skip(question.len() + from.len() + 32, || {
                if json {
                    Box::new(
                        json!({
                            "event": "question", "from": &*from,
                            "question": payload_json(&question),
                        })
                        .to_string(),
                    )
                } else {
                    Box::new(PayloadLine {
                        what: "question",
                        from: escape(&from).into_owned(),
                        payload: question.clone(),
                    })
                }
            });
            match cmd {
                None => Ok(question),
                Some(cmd) => {
                    cmd.answer(&from, &question, |note| {
                        if let Some(line) = note_line(&from, &note, json) {
                            out.print_or_skip(line.len(), || Box::new(line));
                        }
                    })
                    .await
                }
            }
        }
    })?;
    let started = Instant::now();
    serve_methods(&device, started)?;
    printer
        .print(if json {
            json!({
                "event": "listening", "name": device.name(), "id": device.id().to_string(),
                "address": device.local_addr().to_string(), "group": device.group().to_string(),
                "groups": device.groups().iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
            .to_string()
        } else {
            format!(
                "listening as {} ({}) on {}, group {}; serving {METHODS}; Ctrl-C to stop",
                escape(device.name()),
                device.id(),
                device.local_addr(),
                groups(&device)
            )
        })
        .await;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            e = async {
                printer.ready().await;
                events.recv().await
            } => e,
            () = &mut stop => break,
        };
        let Some(event) = event else { break };
        // Waits while the lines before take the room: the events wait in the device's
        // stream meanwhile, and the peers that send them are held back. A message's line
        // is about its payload's length (twice that in hex), and is written from the
        // payload itself, not from a copy.
        let len = match &event {
            DeviceEvent::Message { payload, .. } => payload.len(),
            _ => 256,
        };
        if let Some(line) = event_line(event, json) {
            // A long line may wait for more room than `ready` saw: Ctrl-C still stops.
            tokio::select! {
                () = printer.print_sized(len, line) => {}
                () = &mut stop => break,
            }
        }
    }
    device.close().await;
    // What is queued is printed, unless stdout reads nothing at all.
    printer.flush(FLUSH_LIMIT).await;
    Ok(())
}

/// How long `hail listen` waits, when it stops, for the lines still queued to be printed:
/// 2 s.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// The line said in place of `n` lines not printed (human output).
fn skipped_text(n: u64) -> String {
    format!("{n} lines not printed: stdout was full (questions and notes are not waited for)")
}

/// The line said in place of `n` lines not printed (`--json`).
fn skipped_json(n: u64) -> String {
    json!({ "event": "not_printed", "lines": n }).to_string()
}

/// Refused questions are said at most once per this time (10 s), with how many there
/// were since the last line: any peer can make them, as fast as it can send.
const BUSY_SAY_EVERY: Duration = Duration::from_secs(10);

/// Counts a refusal; `Some(n)` when it is time to say the `n` since the last line.
fn busy_due() -> Option<u64> {
    static BUSY: std::sync::Mutex<(Option<Instant>, u64)> = std::sync::Mutex::new((None, 0));
    let mut b = BUSY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    b.1 += 1;
    if b.0.is_some_and(|at| at.elapsed() < BUSY_SAY_EVERY) {
        return None;
    }
    let n = b.1;
    *b = (Some(Instant::now()), 0);
    Some(n)
}

/// What happened to a question answered by `--answer-cmd`, beyond its answer, as a
/// line to print (none for a refusal within [`BUSY_SAY_EVERY`] of the last said).
fn note_line(from: &str, note: &answer::Note, json: bool) -> Option<String> {
    use answer::Note;
    Some(match (note, json) {
        (Note::Busy, json) => {
            let n = busy_due()?;
            if json {
                json!({ "event": "busy", "from": from, "refused": n }).to_string()
            } else if n == 1 {
                format!(
                    "question from {} refused: busy (every answer slot and queue place taken)",
                    escape(from)
                )
            } else {
                format!(
                    "question from {} refused: busy (every answer slot and queue place \
                     taken); {n} refused since the last such line",
                    escape(from)
                )
            }
        }
        (Note::Killed(after), true) => json!({
            "event": "answer_killed", "from": from, "after_ms": after.as_millis() as u64,
        })
        .to_string(),
        (Note::Killed(after), false) => format!(
            "answer command for {} killed with its process group after {after:?}",
            escape(from)
        ),
        (Note::Truncated(out, err), true) => json!({
            "event": "answer_truncated", "from": from, "limit": answer::OUTPUT_LIMIT,
            "stdout_discarded": out, "stderr_discarded": err,
        })
        .to_string(),
        (Note::Truncated(out, err), false) => format!(
            "answer command for {} printed more than {} KiB: {out} bytes of stdout and {err} \
             of stderr discarded",
            escape(from),
            answer::OUTPUT_LIMIT / 1024
        ),
    })
}

/// Binds `echo` and `info` on every link of the device.
fn serve_methods(device: &Device, started: Instant) -> anyhow::Result<()> {
    let handlers = device.handlers();
    handlers.bind("echo", |args: String| async move { Ok::<_, String>(args) })?;
    let info = json!({ "name": device.name(), "id": device.id().to_string() });
    handlers.bind("info", move |_args: String| {
        let mut info = info.clone();
        info["uptime_ms"] = json!(started.elapsed().as_millis() as u64);
        async move { Ok::<_, String>(info.to_string()) }
    })?;
    Ok(())
}

fn leave_reason(reason: &LeaveReason) -> &'static str {
    match reason {
        LeaveReason::Goodbye => "goodbye",
        LeaveReason::Timeout => "timeout",
        LeaveReason::ConnectionLost => "connection lost",
        LeaveReason::Restarted => "restarted",
        _ => "other",
    }
}

fn addresses(peer: &PeerInfo) -> Vec<String> {
    peer.addresses.iter().map(ToString::to_string).collect()
}

/// An event of `hail listen` as a line to print (none for those it does not show).
fn event_line(event: DeviceEvent, json: bool) -> Option<Line> {
    if let (DeviceEvent::Message { from, payload, .. }, false) = (&event, json) {
        return Some(Box::new(PayloadLine {
            what: "message",
            from: escape(from).into_owned(),
            payload: payload.clone(),
        }));
    }
    Some(Box::new(match &event {
        DeviceEvent::PeerJoined(p) => {
            if json {
                json!({
                    "event": "joined", "name": p.name, "id": p.id.to_string(),
                    "addresses": addresses(p),
                })
                .to_string()
            } else {
                format!(
                    "joined {} ({}) at {}",
                    escape(&p.name),
                    p.id,
                    addresses(p).join(", ")
                )
            }
        }
        DeviceEvent::PeerLeft { peer, reason } => {
            if json {
                json!({
                    "event": "left", "name": peer.name, "id": peer.id.to_string(),
                    "reason": leave_reason(reason),
                })
                .to_string()
            } else {
                format!("left {} ({})", escape(&peer.name), leave_reason(reason))
            }
        }
        DeviceEvent::Message { from, payload, .. } => {
            if json {
                json!({
                    "event": "message", "from": &**from, "message": payload_json(payload),
                })
                .to_string()
            } else {
                format!("message from {}: {}", escape(from), text(payload))
            }
        }
        DeviceEvent::DuplicateName { name, ids } => {
            let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
            if json {
                json!({ "event": "duplicate_name", "name": name, "ids": ids }).to_string()
            } else {
                format!("duplicate name {}: {}", escape(name), ids.join(", "))
            }
        }
        // The joins and leaves above say the same, one peer at a time.
        DeviceEvent::PeersChanged(_) => return None,
        other => {
            tracing::debug!(?other, "event");
            return None;
        }
    }))
}

/// A message or a question as `hail listen` shows it to a human, written from its
/// payload when printed: no line of the payload's size is made (a 64 KiB question made
/// one of 128 KiB, by doubling, for each question: allocations of that size, freed at
/// once, are what makes glibc's allocator keep freed memory instead of returning it).
struct PayloadLine {
    /// `message` or `question`.
    what: &'static str,
    /// Escaped.
    from: String,
    payload: Bytes,
}

impl std::fmt::Display for PayloadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} from {}: {}",
            self.what,
            self.from,
            text(&self.payload)
        )
    }
}

/// Starts a device for a one-shot command `cmd` (named `name`, else `hail-<cmd>-<pid>`),
/// waits at most `wait` for the devices `targets`, runs `body` on it, then closes the
/// device whatever `body` gave: shutdown lets queued messages go out before the links close.
async fn with_targets<T>(
    common: &Common,
    cmd: &str,
    name: Option<String>,
    targets: &[String],
    wait: Duration,
    body: impl AsyncFnOnce(&Device) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let name = name.unwrap_or_else(|| default_name(cmd));
    let (device, mut events) = start(common, &name, 0).await?;
    let result = async {
        wait_for(&device, &mut events, targets, wait).await?;
        body(&device).await
    }
    .await;
    device.close().await;
    result
}

/// `hail send`.
pub(crate) async fn send(common: &Common, args: SendArgs) -> anyhow::Result<()> {
    let targets = std::slice::from_ref(&args.to);
    with_targets(
        common,
        "send",
        args.name,
        targets,
        args.wait,
        async |device| {
            let msg = Bytes::from(args.message.into_bytes());
            let len = msg.len();
            for (to, r) in device.send(args.to.as_str(), msg).await {
                r.with_context(|| format!("cannot send to {to}"))
                    .kind(Kind::Network)?;
                if common.json {
                    json_line(&json!({ "event": "sent", "to": to, "bytes": len }));
                } else {
                    say!("sent {len} bytes to {}", escape(&to));
                }
            }
            Ok(())
        },
    )
    .await
}

/// `hail ask`.
pub(crate) async fn ask(common: &Common, args: AskArgs) -> anyhow::Result<()> {
    with_targets(common, "ask", args.name, &args.to, args.wait, async |device| {
        let spinner = waiting("waiting for answers");
        let started = Instant::now();
        let answers = device
            .ask(
                Targets::Many(args.to.clone()),
                Bytes::from(args.question.into_bytes()),
                args.timeout,
            )
            .await;
        drop(spinner);
        let elapsed = started.elapsed();
        let mut failed = 0;
        for target in &args.to {
            let Some(answer) = answers.get(target) else {
                continue;
            };
            match (answer, common.json) {
                (Ok(a), true) => json_line(&json!({
                    "event": "answer", "from": target, "answer": payload_json(a),
                })),
                (Ok(a), false) => say!("{}: {}", escape(target), text(a)),
                (Err(e), true) => {
                    failed += 1;
                    json_line(
                        &json!({ "event": "no_answer", "from": target, "error": e.to_string() }),
                    );
                }
                (Err(e), false) => {
                    failed += 1;
                    say!("{}: no answer: {}", escape(target), escape(&e.to_string()));
                }
            }
        }
        tracing::info!(?elapsed, "answers in");
        if failed > 0 {
            return Err(fail(
                Kind::NoAnswer,
                format!("{failed} of {} asked gave no answer", args.to.len()),
            ));
        }
        Ok(())
    })
    .await
}

/// `hail call`.
pub(crate) async fn call(common: &Common, args: CallArgs) -> anyhow::Result<()> {
    let targets = std::slice::from_ref(&args.device);
    with_targets(
        common,
        "call",
        args.name,
        targets,
        args.wait,
        async |device| {
            let peer = device.peer(&args.device).kind(Kind::NotFound)?;
            let arg = args.args_json.to_string();
            let spinner = waiting(format!("calling {}", escape(&args.method)));
            let reply = peer
                .execute::<_, String>(args.method.clone(), arg, args.timeout)
                .await;
            drop(spinner);
            let kind = match &reply {
                Err(RpcError::Timeout) => Kind::Timeout,
                _ => Kind::Remote,
            };
            let reply = reply
                .with_context(|| format!("{}.{} failed", args.device, args.method))
                .kind(kind)?;
            let value: Value = serde_json::from_str(&reply).unwrap_or(Value::String(reply));
            if common.json {
                json_line(&json!({ "event": "result", "from": args.device, "result": value }));
            } else {
                say!("{}", escape(&value.to_string()));
            }
            Ok(())
        },
    )
    .await
}

/// `hail scout`.
pub(crate) async fn scout(common: &Common, args: ScoutArgs) -> anyhow::Result<()> {
    let name = args.name.unwrap_or_else(|| default_name("scout"));
    let (device, mut events) = start(common, &name, 0).await?;
    // Name -> (info, when it was last heard of).
    let mut seen: BTreeMap<String, (PeerInfo, Instant)> = BTreeMap::new();
    let note = |seen: &mut BTreeMap<String, (PeerInfo, Instant)>, event: &DeviceEvent| match event {
        DeviceEvent::PeersChanged(peers) => {
            let now = Instant::now();
            seen.retain(|n, _| peers.iter().any(|p| &p.name == n));
            for p in peers {
                let changed = seen.get(&p.name).is_none_or(|(old, _)| old != p);
                if changed {
                    seen.insert(p.name.clone(), (p.clone(), now));
                }
            }
            true
        }
        DeviceEvent::Message { from, .. } => {
            if let Some((_, at)) = seen.get_mut(&**from) {
                *at = Instant::now();
            }
            false
        }
        _ => false,
    };
    let result = if args.once {
        let spinner = waiting(format!("scouting for {:?}", args.timeout));
        let deadline = tokio::time::Instant::now() + args.timeout;
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            let event = tokio::select! {
                e = tokio::time::timeout_at(deadline, events.recv()) => e,
                () = &mut stop => break,
            };
            let Ok(Some(event)) = event else { break };
            note(&mut seen, &event);
        }
        drop(spinner);
        print_table(&seen, common.json);
        Ok(())
    } else {
        if !common.json {
            say!(
                "scouting as {} on {}; Ctrl-C to stop",
                escape(&name),
                groups(&device)
            );
        }
        print_table(&seen, common.json);
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                () = &mut stop => break,
            };
            let Some(event) = event else { break };
            if note(&mut seen, &event) {
                print_table(&seen, common.json);
            }
        }
        Ok(())
    };
    device.close().await;
    result
}

fn print_table(seen: &BTreeMap<String, (PeerInfo, Instant)>, json: bool) {
    if json {
        let devices: Vec<Value> = seen
            .values()
            .map(|(p, at)| {
                json!({
                    "name": p.name, "id": p.id.to_string(), "addresses": addresses(p),
                    "metadata": p.metadata,
                    "last_seen_ms": at.elapsed().as_millis() as u64,
                })
            })
            .collect();
        out::json_line(&json!({ "event": "devices", "devices": devices }));
        return;
    }
    say!(
        "{:<24} {:<32} {:<28} {:<10} METADATA",
        "NAME",
        "ID",
        "ADDRESSES",
        "LAST SEEN"
    );
    for (p, at) in seen.values() {
        let meta: Vec<String> = p
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={}", escape(v)))
            .collect();
        say!(
            "{:<24} {:<32} {:<28} {:<10} {}",
            escape(&p.name),
            p.id.to_string(),
            addresses(p).join(","),
            format!("{:.1}s ago", at.elapsed().as_secs_f64()),
            meta.join(" ")
        );
    }
    say!(
        "({} device{})",
        seen.len(),
        if seen.len() == 1 { "" } else { "s" }
    );
}
