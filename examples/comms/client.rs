//! The client half: Python Comms' auto-reconnecting `Client`, handled through its events.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use hail_link::{Backoff, Client, ClientConfig, ClientEvent};
use serde_json::json;

use super::{close_reason, link_config, log, ms, payload};

/// Connects as `name`, says hello on every (re)connection, prints what arrives, and ends
/// when the server says bye. Fails if that takes longer than `deadline` or if the client
/// never had to reconnect.
pub(crate) async fn run(
    name: &'static str,
    server: SocketAddr,
    deadline: Duration,
) -> anyhow::Result<()> {
    // Reconnect fast for the example: 50 ms doubling to 500 ms (default 100 ms to 5 s).
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    let config = ClientConfig::builder()
        .link(link_config())
        .reconnect(Some(backoff))
        .build()?;
    let (client, mut events) = Client::connect(server, config, payload())
        .await
        .with_context(|| format!("{name} cannot connect to {server}"))?;

    let outcome = tokio::time::timeout(deadline, async {
        let mut down_since: Option<Instant> = None;
        while let Some(event) = events.recv().await {
            match event {
                ClientEvent::Connected { addr, .. } => {
                    match down_since.take() {
                        Some(t) => log(
                            name,
                            format!("reconnected to {addr} {} after the loss", ms(t.elapsed())),
                        ),
                        None => log(name, format!("connected to {addr}")),
                    }
                    client.send(json!({"type": "hello", "name": name})).await?;
                }
                ClientEvent::Disconnected { reason } => {
                    log(
                        name,
                        format!("disconnected ({}); reconnecting", close_reason(&reason)),
                    );
                    down_since = Some(Instant::now());
                    // Accepted while disconnected: kept in the outage buffer and written
                    // first on the next connection, never silently dropped.
                    let text = format!("{name} wrote this while the server was down");
                    client
                        .send(json!({"type": "chat", "from": name, "text": text}))
                        .await?;
                }
                ClientEvent::Message(msg) => {
                    log(name, format!("got {msg}"));
                    if msg["type"] == "bye" {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        bail!("{name}: the client stopped before the server said bye")
    })
    .await;

    let stats = client.stats();
    let unsent = client.close().await;
    outcome.map_err(|_| anyhow!("{name}: no bye from the server within {deadline:?}"))??;
    ensure!(stats.reconnects >= 1, "{name} never had to reconnect");
    ensure!(
        unsent == 0,
        "{name}: {unsent} accepted message(s) were never written"
    );
    log(
        name,
        format!(
            "closed: {} reconnect(s), {} failed attempt(s) while the server was down, {} message(s) buffered in the outage",
            stats.reconnects, stats.failed_attempts, stats.buffered_during_outage
        ),
    );
    Ok(())
}
