//! `hail demo`: several devices on loopback in one process, every layer at work.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Args;
use hail::prelude::*;
use serde_json::json;

use crate::Common;
use crate::out::{json_line, text};

/// The passphrase every demo device shares.
const PASSPHRASE: &str = "hail demo: correct horse battery staple";
/// How long one demo step may take before it fails: 3 s.
const STEP_TIMEOUT: Duration = Duration::from_secs(3);
/// Names of the first demo devices; later ones are `device-N`.
const NAMES: [&str; 8] = [
    "lamp", "switch", "sensor", "door", "fan", "heater", "blind", "speaker",
];

/// `hail demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many devices to run (2 to 32).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=32))]
    devices: u8,
}

fn name(i: usize) -> String {
    NAMES
        .get(i)
        .map_or_else(|| format!("device-{}", i + 1), |n| (*n).to_owned())
}

/// Prints the steps as they finish and keeps them for the summary.
struct Report {
    json: bool,
    steps: Vec<(&'static str, Duration)>,
}

impl Report {
    fn step(&mut self, step: &'static str, took: Duration, lines: &[String]) {
        self.steps.push((step, took));
        if self.json {
            json_line(&json!({
                "step": step, "ok": true, "ms": ms(took), "detail": lines,
            }));
            return;
        }
        say!("[{:>8.1} ms] {step}", ms(took));
        for l in lines {
            say!("              {l}");
        }
    }

    fn failed(&self, step: &str, e: &anyhow::Error) {
        if self.json {
            json_line(&json!({ "step": step, "ok": false, "error": format!("{e:#}") }));
        } else {
            say!("[  FAILED  ] {step}: {e:#}");
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `hail demo`.
pub(crate) async fn run(common: &Common, args: DemoArgs) -> anyhow::Result<()> {
    let n = usize::from(args.devices);
    let started = Instant::now();
    let mut report = Report {
        json: common.json,
        steps: Vec::new(),
    };
    if !common.json {
        say!(
            "hail demo: {n} devices in this process, on the loopback interface only \
             (127.0.0.1, multicast TTL 1)\n"
        );
    }
    let mut devices: Vec<(Device, DeviceEvents)> = Vec::with_capacity(n);
    let result = steps(&mut report, &mut devices, n).await;
    // Shut the devices down together: each says goodbye and lingers for its queue.
    let stopping: Vec<_> = devices
        .into_iter()
        .map(|(d, _)| tokio::spawn(d.close()))
        .collect();
    for s in stopping {
        let _ = s.await;
    }
    let total = started.elapsed();
    match result {
        Ok(()) => {
            if common.json {
                json_line(&json!({ "summary": "ok", "devices": n, "ms": ms(total) }));
            } else {
                let slowest = report
                    .steps
                    .iter()
                    .max_by_key(|(_, d)| *d)
                    .map(|(s, d)| format!("; slowest step: {s} ({:.1} ms)", ms(*d)))
                    .unwrap_or_default();
                say!(
                    "\nall {} steps passed with {n} devices in {:.0} ms, shutdown included{slowest}",
                    report.steps.len(),
                    ms(total)
                );
            }
            Ok(())
        }
        Err((step, e)) => {
            report.failed(step, &e);
            bail!("the demo failed at `{step}`: {e:#}")
        }
    }
}

type StepResult = Result<(), (&'static str, anyhow::Error)>;

async fn steps(
    report: &mut Report,
    devices: &mut Vec<(Device, DeviceEvents)>,
    n: usize,
) -> StepResult {
    // 1. The key.
    let t = Instant::now();
    let step = "group key";
    let kdf = KdfParams::default().iterations(KdfParams::MIN_ITERATIONS);
    let key =
        GroupKey::derive_with(PASSPHRASE, "hail-discovery", kdf).map_err(|e| (step, e.into()))?;
    report.step(
        step,
        t.elapsed(),
        &[format!(
            "derived from a passphrase with PBKDF2 at {} iterations (the demo's low count; \
             real use: {}); it seals adverts and secures links",
            KdfParams::MIN_ITERATIONS,
            KdfParams::DEFAULT_ITERATIONS
        )],
    );

    // 2. Discovery.
    let step = "discovery";
    let t = Instant::now();
    discovery(devices, n, &key).await.map_err(|e| (step, e))?;
    let mut lines: Vec<String> = devices
        .iter()
        .map(|(d, _)| {
            let peers: Vec<String> = d.peers().into_iter().map(|p| p.name).collect();
            format!(
                "{} at {} sees {}",
                d.name(),
                d.local_addr(),
                peers.join(", ")
            )
        })
        .collect();
    lines.insert(
        0,
        format!("{n} devices started; every device sees every other"),
    );
    report.step(step, t.elapsed(), &lines);

    // 3. A message round.
    let step = "messages";
    let t = Instant::now();
    let got = messages(devices).await.map_err(|e| (step, e))?;
    report.step(
        step,
        t.elapsed(),
        &[format!(
            "each device sent one message to all; {got} messages delivered ({n} x {})",
            n - 1
        )],
    );

    // 4. Ask everyone.
    let step = "ask";
    let t = Instant::now();
    let lines = ask(devices).await.map_err(|e| (step, e))?;
    report.step(step, t.elapsed(), &lines);

    // 5. An RPC call.
    let step = "rpc call";
    let t = Instant::now();
    let line = rpc(devices).await.map_err(|e| (step, e))?;
    report.step(step, t.elapsed(), &[line]);

    // 6. Sealed multicast.
    let step = "sealed multicast";
    let t = Instant::now();
    let lines = multicast(kdf).await.map_err(|e| (step, e))?;
    report.step(step, t.elapsed(), &lines);
    Ok(())
}

async fn discovery(
    devices: &mut Vec<(Device, DeviceEvents)>,
    n: usize,
    key: &GroupKey,
) -> anyhow::Result<()> {
    // Port 0: a free port for this run, so the demo never meets another one.
    let mut group = SocketAddr::from((Ipv4Addr::new(239, 255, 72, 91), 0));
    for i in 0..n {
        let (d, events) = Device::builder(name(i))
            .group(group)
            .interface(Ipv4Addr::LOCALHOST)
            .ttl(1)
            .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .group_key(key.clone())
            .start()
            .await
            .with_context(|| format!("cannot start {}", name(i)))?;
        group = d.group();
        let me = d.name().to_owned();
        d.on_question(move |_from, _q| {
            let me = me.clone();
            async move { Ok(Bytes::from(format!("{me} here, all well"))) }
        })?;
        devices.push((d, events));
    }
    let deadline = Instant::now() + STEP_TIMEOUT;
    while devices.iter().any(|(d, _)| d.peers().len() < n - 1) {
        if Instant::now() > deadline {
            let lonely: Vec<String> = devices
                .iter()
                .filter(|(d, _)| d.peers().len() < n - 1)
                .map(|(d, _)| format!("{} sees {}", d.name(), d.peers().len()))
                .collect();
            bail!(
                "not every device found all {} others in {STEP_TIMEOUT:?}: {}",
                n - 1,
                lonely.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn messages(devices: &mut [(Device, DeviceEvents)]) -> anyhow::Result<usize> {
    let n = devices.len();
    for (d, _) in devices.iter() {
        let msg = Bytes::from(format!("hello from {}", d.name()));
        for (to, r) in d.send(Targets::All, msg).await {
            r.with_context(|| format!("{} cannot send to {to}", d.name()))?;
        }
    }
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    let mut total = 0;
    for (d, events) in devices.iter_mut() {
        let mut got = 0;
        while got < n - 1 {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(DeviceEvent::Message { from, payload, .. })) => {
                    ensure!(
                        payload == format!("hello from {from}").as_bytes(),
                        "{} got a wrong message from {from}: {}",
                        d.name(),
                        text(&payload)
                    );
                    got += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("{} stopped", d.name()),
                Err(_) => bail!("{} got {got} of {} messages in time", d.name(), n - 1),
            }
        }
        total += got;
    }
    Ok(total)
}

async fn ask(devices: &[(Device, DeviceEvents)]) -> anyhow::Result<Vec<String>> {
    let asker = &devices[0].0;
    let answers = asker
        .ask(
            Targets::All,
            Bytes::from_static(b"how are you?"),
            Duration::from_secs(1),
        )
        .await;
    let mut lines = vec![format!(
        "{} asked everyone \"how are you?\" and got {} answers:",
        asker.name(),
        answers.len()
    )];
    ensure!(
        answers.len() == devices.len() - 1,
        "{} answers from {} peers",
        answers.len(),
        devices.len() - 1
    );
    let mut answers: Vec<_> = answers.into_iter().collect();
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    for (from, answer) in answers {
        let answer = answer.with_context(|| format!("{from} did not answer"))?;
        lines.push(format!("  {from}: {}", text(&answer)));
    }
    Ok(lines)
}

async fn rpc(devices: &[(Device, DeviceEvents)]) -> anyhow::Result<String> {
    let (caller, callee) = (&devices[0].0, &devices[1].0);
    // The callee serves `add` on every link.
    callee.handlers().bind(
        "add",
        |(a, b): (i64, i64)| async move { Ok::<_, String>(a + b) },
    )?;
    let t = Instant::now();
    let sum: i64 = caller
        .peer(callee.name())?
        .execute("add", (20i64, 22i64), Duration::from_secs(1))
        .await
        .context("add(20, 22)")?;
    ensure!(sum == 42, "add(20, 22) returned {sum}");
    Ok(format!(
        "{} called add(20, 22) on {}: {sum} in {:.2} ms",
        caller.name(),
        callee.name(),
        ms(t.elapsed())
    ))
}

async fn multicast(kdf: KdfParams) -> anyhow::Result<Vec<String>> {
    let key = GroupKey::derive_with(PASSPHRASE, "hail-demo-multicast", kdf)?;
    let other = GroupKey::derive_with("another passphrase", "hail-demo-multicast", kdf)?;
    let group = (Ipv4Addr::new(239, 255, 72, 92), 0);
    let on_lo = || {
        ChannelConfig::builder()
            .interface(Ipv4Addr::LOCALHOST)
            .ttl(1)
    };
    let (_rx_chan, mut rx) = Channel::bind(group, on_lo().key(key.clone()).build()?)?;
    let group = rx.group();
    let (tx, _tx_rx) = Channel::bind(group, on_lo().key(key).build()?)?;
    let (_outsider_chan, mut outsider) = Channel::bind(group, on_lo().key(other).build()?)?;
    tx.send(b"sealed: lights out at 23:00").await?;
    let d = tokio::time::timeout(STEP_TIMEOUT, rx.recv())
        .await
        .context("the sealed datagram did not arrive in time")??;
    ensure!(
        &d.payload[..] == b"sealed: lights out at 23:00",
        "wrong payload"
    );
    // The outsider's socket holds the same datagram; with another key it cannot open it.
    let heard = tokio::time::timeout(Duration::from_millis(100), outsider.recv()).await;
    ensure!(
        heard.is_err(),
        "a channel with another key opened a sealed datagram"
    );
    let dropped = outsider.stats().dropped_wrong_key;
    ensure!(
        dropped >= 1,
        "the channel with another key did not see the datagram"
    );
    Ok(vec![
        format!(
            "sent on {group} (AES-256-GCM, key from the same passphrase), received: \"{}\"",
            text(&d.payload)
        ),
        format!("a channel with another passphrase dropped it ({dropped} wrong-key datagram)"),
    ])
}
