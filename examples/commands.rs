//! CLOVIS' job: named commands registered on the server and on the clients, each side
//! calling the other by name.
//!
//! A control station (an `RpcServer` limited to two clients, as CLOVIS' "max clients" was
//! meant to be) registers `register`, `log` and `sum`; two rovers (`RpcClient`s) register
//! `status` and `drive` before they connect. A rover calls `register` and, inside that call,
//! the station calls the rover's `status` back. The station then drives each rover by name;
//! a rover logs with a fire-and-forget notification (CLOVIS' `envoyer`); a third rover is
//! refused with a reason it can read; an unknown command is a typed error; a rover that
//! notifies and closes at once still gets its last message through.
//!
//! ```text
//! cargo run -p hail-examples --example commands
//! ```

#![allow(
    clippy::print_stdout,
    reason = "an example shows its results on stdout"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hail_link::{ClientConfig, LinkError, RefuseReason, ServerConfig};
use hail_rpc::{
    Handlers, RpcClient, RpcConfig, RpcError, RpcPeer, RpcServer, RpcServerEvent, RpcServerEvents,
    WeakRpcPeer,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Every call in this example gives up after this long.
const T: Duration = Duration::from_secs(5);

/// What a rover reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Status {
    name: String,
    battery: u8,
    position: (i32, i32),
}

/// The station's roster: rover name to its peer (weak: a rover that left is not kept alive).
type Roster = Arc<Mutex<HashMap<String, WeakRpcPeer>>>;

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// The control station: `register` (calls the rover's `status` back), `log`, `sum`.
async fn station(
    log_tx: mpsc::UnboundedSender<String>,
) -> anyhow::Result<(RpcServer, RpcServerEvents, Roster)> {
    let config = ServerConfig::builder().max_clients(2).build()?;
    let (server, events) = RpcServer::listen(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
        RpcConfig::default(),
    )
    .await?;
    let roster = Roster::default();

    let r = roster.clone();
    // `bind_with` hands the handler the peer the call came from, to call it back.
    server
        .handlers()
        .bind_with("register", move |rover: RpcPeer, name: String| {
            let roster = r.clone();
            async move {
                let status: Status = rover
                    .execute("status", (), T)
                    .await
                    .map_err(|e| format!("cannot read the status of {name}: {e}"))?;
                println!("station: {name} registers; its status, asked back: {status:?}");
                roster
                    .lock()
                    .expect("roster lock")
                    .insert(name.clone(), rover.downgrade());
                Ok::<_, String>(format!("welcome {name}, battery {}%", status.battery))
            }
        })?;
    server.bind("log", move |line: String| {
        let log_tx = log_tx.clone();
        async move {
            println!("station: log: {line}");
            log_tx.send(line).map_err(|e| e.to_string())
        }
    })?;
    server.bind("sum", |numbers: Vec<i64>| async move {
        Ok::<_, String>(numbers.iter().sum::<i64>())
    })?;
    Ok((server, events, roster))
}

/// A rover: its commands (`status`, `drive`) are registered before it connects, so the
/// station may call them as soon as the connection is up.
async fn rover(name: &str, station: SocketAddr) -> Result<RpcClient, LinkError> {
    let position = Arc::new(Mutex::new((0i32, 0i32)));
    let handlers = Handlers::new();
    let (n, p) = (name.to_string(), position.clone());
    handlers
        .bind("status", move |(): ()| {
            let status = Status {
                name: n.clone(),
                battery: 87,
                position: *p.lock().expect("position lock"),
            };
            async move { Ok::<_, String>(status) }
        })
        .expect("a fresh table has no `status`");
    let (n, p) = (name.to_string(), position);
    handlers
        .bind("drive", move |(dx, dy): (i32, i32)| {
            let mut pos = p.lock().expect("position lock");
            let result = if dx.abs() > 10 || dy.abs() > 10 {
                Err(format!("{n} cannot drive that far in one go"))
            } else {
                *pos = (pos.0 + dx, pos.1 + dy);
                println!("{n}: driving by ({dx}, {dy}), now at {:?}", *pos);
                Ok(*pos)
            };
            async move { result }
        })
        .expect("a fresh table has no `drive`");
    RpcClient::connect_with_handlers(
        station,
        ClientConfig::default(),
        RpcConfig::default(),
        handlers,
    )
    .await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let start = Instant::now();
    let (log_tx, mut log_rx) = mpsc::unbounded_channel();
    let (station, mut station_events, roster) = station(log_tx).await?;
    let addr = station.local_addr();
    println!("station listening on {addr} (at most 2 rovers)");

    let mut rovers = Vec::new();
    for name in ["rover-1", "rover-2"] {
        let rover = rover(name, addr)
            .await
            .with_context(|| format!("{name} cannot connect"))?;
        // Client to server, by name; the handler calls this rover's `status` back.
        let t = Instant::now();
        let welcome: String = rover.execute("register", name, T).await?;
        println!(
            "{name}: {welcome} (call with a call back inside: {})",
            us(t.elapsed())
        );
        // Fire and forget (CLOVIS' `envoyer`): no reply, the handler still runs.
        rover.notify("log", format!("{name} online")).await?;
        rovers.push(rover);
    }
    for _ in 0..2 {
        log_rx
            .recv()
            .await
            .context("the station's log handler stopped")?;
    }

    // Server to client, by name.
    for name in ["rover-1", "rover-2"] {
        let peer = roster
            .lock()
            .expect("roster lock")
            .get(name)
            .and_then(WeakRpcPeer::upgrade)
            .with_context(|| format!("{name} is not in the roster"))?;
        let t = Instant::now();
        let at: (i32, i32) = peer.execute("drive", (3, -1), T).await?;
        println!("station: {name} is now at {at:?} ({})", us(t.elapsed()));
        match peer.execute::<_, (i32, i32)>("drive", (50, 0), T).await {
            Err(RpcError::Handler(why)) => println!("station: {name} refused: {why}"),
            other => bail!("expected the rover's error, got {other:?}"),
        }
    }

    // A rover calling a command that does not exist gets a typed error, nothing runs.
    match rovers[0].execute::<_, ()>("self_destruct", (), T).await {
        Err(RpcError::UnknownMethod(m)) => println!("rover-1: the station has no command {m}"),
        other => bail!("expected UnknownMethod, got {other:?}"),
    }
    let total: i64 = rovers[1].execute("sum", vec![1, 2, 3, 4], T).await?;
    ensure!(total == 10, "sum gave {total}");
    println!("rover-2: sum of 1..=4 is {total}");

    // A third rover is over the limit: refused with a reason it can read.
    let t = Instant::now();
    match rover("rover-3", addr).await {
        Err(LinkError::Refused(RefuseReason::ServerFull)) => println!(
            "rover-3: refused, the station is full ({})",
            us(t.elapsed())
        ),
        Err(e) => bail!("rover-3 failed for another reason: {e}"),
        Ok(_) => bail!("rover-3 was admitted over the limit"),
    }

    // A notification queued just before `close` still goes out: close sends what is queued.
    let last = rovers.pop().context("two rovers")?;
    last.notify("log", "rover-2 signing off").await?;
    last.close().await;
    let line = tokio::time::timeout(T, log_rx.recv())
        .await
        .context("the last notification did not arrive")?
        .context("the station's log handler stopped")?;
    ensure!(
        line == "rover-2 signing off",
        "unexpected log line {line:?}"
    );
    // The station sees it leave; its roster entry is weak, so nothing keeps it alive.
    let left = tokio::time::timeout(T, async {
        loop {
            match station_events.recv().await {
                Some(RpcServerEvent::Disconnected { id, reason }) => break Some((id, reason)),
                Some(_) => {}
                None => break None,
            }
        }
    })
    .await
    .context("the station did not see rover-2 leave")?
    .context("the station stopped")?;
    println!("station: client {} left ({})", left.0, left.1);
    let gone = roster
        .lock()
        .expect("roster lock")
        .get("rover-2")
        .and_then(WeakRpcPeer::upgrade)
        .is_none_or(|p| !p.is_connected());
    ensure!(gone, "rover-2 still looks connected after it left");
    ensure!(
        station.clients().len() == 1,
        "expected 1 rover left, not {}",
        station.clients().len()
    );
    println!("station: 1 rover still connected");

    for r in rovers {
        r.close().await;
    }
    println!("done in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
