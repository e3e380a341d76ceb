//! TCPTalks' job: opcodes bound to functions, `execute`, `send` + `poll`, a password.
//!
//! A robot (the side that listens) and a laptop (the side that dials) share a passphrase:
//! the link runs a Noise `NNpsk0` handshake keyed by it, so both prove they know it and every
//! byte after is encrypted and authenticated. Both sides `bind` opcodes and call each other.
//! The laptop calls with `execute` (wait for the result) and with `send` (a retcode at once)
//! then `poll` (the result later, in any order). A handler's error arrives at the caller as
//! a typed `RpcError::Handler` with its message, as TCPTalks raised remote errors at the
//! caller; so do bad arguments, an unknown opcode and a timeout, each its own variant. An
//! intruder with another passphrase gets `AuthFailed`, and the robot counts it.
//!
//! ```text
//! cargo run -p hail-examples --example talks
//! ```

#![allow(
    clippy::print_stdout,
    reason = "an example shows its results on stdout"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hail_crypto::{GroupKey, KdfParams};
use hail_link::{ClientConfig, LinkConfig, LinkError, ServerConfig};
use hail_rpc::{
    Handlers, Opcode, RpcClient, RpcConfig, RpcError, RpcServer, RpcServerEvent, RpcServerEvents,
};

/// The robot's opcodes.
const GET_BATTERY: Opcode = Opcode(0x10);
const MOVE_ARM: Opcode = Opcode(0x11);
const MEASURE: Opcode = Opcode(0x12);
/// The laptop's opcode: the robot reports to it.
const REPORT: Opcode = Opcode(0x20);

/// Default timeout of a call in this example.
const T: Duration = Duration::from_secs(5);

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The link settings of everyone who knows `passphrase`.
fn secure_link(passphrase: &str) -> anyhow::Result<LinkConfig> {
    // The default derivation (600,000 PBKDF2 iterations) takes about 0.1 to 0.25 s on a
    // desktop or server core and up to seconds on a small board, on purpose (it is what
    // makes guessing the passphrase offline expensive), once per configuration. This
    // example derives two keys and should finish in a moment, so it takes the floor of
    // 10,000 iterations; keep the default in real use.
    let params = KdfParams::default().iterations(KdfParams::MIN_ITERATIONS);
    let key = GroupKey::derive_with(passphrase, "talks-example", params)?;
    Ok(LinkConfig::builder().group_key(&key).build()?)
}

/// The robot: listens, and binds its opcodes.
async fn robot(link: LinkConfig) -> anyhow::Result<(RpcServer, RpcServerEvents)> {
    let (robot, events) = RpcServer::listen(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ServerConfig::builder().link(link).build()?,
        RpcConfig::default(),
    )
    .await?;
    robot.bind(GET_BATTERY, |(): ()| async { Ok::<_, String>(87u8) })?;
    robot.bind(MOVE_ARM, |degrees: u16| async move {
        if degrees > 180 {
            return Err(format!("the arm turns 0 to 180 degrees, not {degrees}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(degrees)
    })?;
    // A slow sensor read: each sensor takes its own time.
    robot.bind(MEASURE, |sensor: String| async move {
        let (delay, value) = match sensor.as_str() {
            "temperature" => (120, 21.5),
            "humidity" => (80, 0.43),
            "distance" => (40, 1.27),
            other => return Err(format!("no sensor {other:?}")),
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok::<f64, String>(value)
    })?;
    Ok((robot, events))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let start = Instant::now();
    let t = Instant::now();
    let link = secure_link("the robot's password")?;
    let wrong = secure_link("a guess")?;
    println!("keys derived from the passphrases in {}", ms(t.elapsed()));

    let (robot, mut robot_events) = robot(link.clone()).await?;
    let addr = robot.local_addr();
    println!("robot listening on {addr}");

    // The laptop binds its own opcode before dialing: the link is symmetric.
    let handlers = Handlers::new();
    handlers.bind(REPORT, |line: String| async move {
        println!("laptop: the robot reports: {line}");
        Ok::<_, String>(())
    })?;
    let t = Instant::now();
    let laptop = RpcClient::connect_with_handlers(
        addr,
        ClientConfig::builder().link(link).build()?,
        RpcConfig::default(),
        handlers,
    )
    .await
    .context("the laptop cannot connect")?;
    println!(
        "laptop: secure link up in {} (TCP connect and Noise handshake)",
        ms(t.elapsed())
    );

    // execute: call and wait for the result.
    let t = Instant::now();
    let battery: u8 = laptop.execute(GET_BATTERY, (), T).await?;
    println!(
        "laptop: execute GET_BATTERY ({GET_BATTERY}) = {battery}% in {}",
        ms(t.elapsed())
    );
    let angle: u16 = laptop.execute(MOVE_ARM, 90u16, T).await?;
    println!("laptop: execute MOVE_ARM 90 = arm at {angle} degrees");

    // send + poll: three slow reads in flight at once, results collected in any order.
    let t = Instant::now();
    let mut pending = Vec::new();
    for sensor in ["temperature", "humidity", "distance"] {
        let retcode = laptop.send(MEASURE, sensor).await?;
        println!("laptop: send MEASURE {sensor:?} -> retcode {retcode}");
        pending.push((sensor, retcode));
    }
    for (sensor, retcode) in pending.into_iter().rev() {
        let value: f64 = laptop.poll(retcode, T).await?;
        println!(
            "laptop: poll {retcode} ({sensor}) = {value} at {}",
            ms(t.elapsed())
        );
    }
    println!(
        "laptop: reads of 120 + 80 + 40 ms all done in {}: they ran at once",
        ms(t.elapsed())
    );

    // Remote errors arrive as typed errors at the caller.
    match laptop.execute::<_, u16>(MOVE_ARM, 270u16, T).await {
        Err(RpcError::Handler(message)) => {
            println!("laptop: MOVE_ARM 270 failed on the robot: {message}");
        }
        other => bail!("expected the handler's error, got {other:?}"),
    }
    match laptop.execute::<_, u16>(MOVE_ARM, "ninety", T).await {
        Err(e @ RpcError::BadArguments(_)) => println!("laptop: MOVE_ARM \"ninety\": {e}"),
        other => bail!("expected BadArguments, got {other:?}"),
    }
    match laptop.execute::<_, ()>(Opcode(0x99), (), T).await {
        Err(e @ RpcError::UnknownMethod(_)) => println!("laptop: opcode 0x99: {e}"),
        other => bail!("expected UnknownMethod, got {other:?}"),
    }
    let t = Instant::now();
    match laptop
        .execute::<_, f64>(MEASURE, "temperature", Duration::from_millis(30))
        .await
    {
        Err(RpcError::Timeout) => println!(
            "laptop: MEASURE with a 30 ms timeout: timed out after {} (the robot was told to cancel)",
            ms(t.elapsed())
        ),
        other => bail!("expected Timeout, got {other:?}"),
    }

    // The robot calls the laptop: which side dialed does not matter.
    let laptop_peer = loop {
        match robot_events.recv().await.context("the robot stopped")? {
            RpcServerEvent::Connected { peer, addr, .. } => {
                println!("robot: laptop connected from {addr}");
                break peer;
            }
            other => println!("robot: {other:?}"),
        }
    };
    laptop_peer
        .execute::<_, ()>(
            REPORT,
            format!("battery at {battery}%, arm at {angle} degrees"),
            T,
        )
        .await?;

    // An intruder with another passphrase: refused on both sides, counted by the robot.
    let t = Instant::now();
    let intruder = RpcClient::connect(
        addr,
        ClientConfig::builder().link(wrong).build()?,
        RpcConfig::default(),
    )
    .await;
    match intruder {
        Err(LinkError::AuthFailed) => println!(
            "intruder: authentication failed after {} (wrong passphrase)",
            ms(t.elapsed())
        ),
        Err(e) => bail!("the intruder failed for another reason: {e}"),
        Ok(_) => bail!("the intruder got in with the wrong passphrase"),
    }
    // The robot counts the failure as it refuses the handshake; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(1);
    while robot.link().stats().auth_failures == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let failures = robot.link().stats().auth_failures;
    ensure!(failures == 1, "the robot counted {failures} auth failures");
    println!("robot: auth failures counted: {failures}; the laptop is still served:");
    let battery: u8 = laptop.execute(GET_BATTERY, (), T).await?;
    println!("laptop: execute GET_BATTERY = {battery}%");

    laptop.close().await;
    println!("done in {}", ms(start.elapsed()));
    Ok(())
}
