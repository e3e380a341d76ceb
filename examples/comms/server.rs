//! The server half: Python Comms' `Server` with its three callbacks (on connect, on message,
//! on close), `send_to` and `broadcast`, stopped and restarted once on the same port.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hail_link::{Callbacks, ClientId, Server, ServerConfig};
use hail_wire::Json;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{CLIENTS, close_reason, link_config, log, ms, payload};

/// How long a graceful stop lets queued messages go out: 250 ms. A Python Comms client
/// retries a lost connection once, after 1 s: the server must be back by then.
const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(250);

type JsonServer = Server<Json<Value>>;

/// What the callbacks tell the main flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Note {
    /// A client said hello.
    Hello,
    /// A client's connection ended.
    Closed,
}

/// One running server: the server, the task running its callbacks, and what they noticed.
pub(crate) struct Hub {
    server: Arc<JsonServer>,
    notes: mpsc::UnboundedReceiver<Note>,
    callbacks: tokio::task::JoinHandle<()>,
}

impl Hub {
    /// Listens on `addr` (port 0 picks a free port) and starts the callbacks.
    pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let config = ServerConfig::builder().link(link_config()).build()?;
        let (server, events) = Server::bind(addr, config, payload())
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let server = Arc::new(server);
        // `on_message` broadcasts, so it needs the server. It holds a weak handle: `stop`
        // must own the server again to shut it down gracefully.
        let weak = Arc::downgrade(&server);
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let closed_tx = notes_tx.clone();
        let callbacks = Callbacks::default()
            .on_connect(|id, addr| log("server", format!("client {id} connected from {addr}")))
            .on_message(move |id, msg| on_message(&weak, &notes_tx, id, msg))
            .on_close(move |id, reason| {
                log(
                    "server",
                    format!("client {id} closed: {}", close_reason(&reason)),
                );
                let _ = closed_tx.send(Note::Closed);
            });
        let callbacks = tokio::spawn(events.run_callbacks(callbacks));
        Ok(Self {
            server,
            notes,
            callbacks,
        })
    }

    /// The address the server listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Waits until the callbacks noticed `n` times `what`.
    async fn wait_for(&mut self, n: usize, what: Note, timeout: Duration) -> anyhow::Result<()> {
        let mut seen = 0;
        tokio::time::timeout(timeout, async {
            while seen < n {
                match self.notes.recv().await {
                    Some(note) if note == what => seen += 1,
                    Some(_) => {}
                    None => break,
                }
            }
        })
        .await
        .ok();
        ensure!(seen == n, "saw {seen} of {n} {what:?} within {timeout:?}");
        Ok(())
    }

    /// Graceful shutdown (Python Comms' `stop`): queued messages go out, then every
    /// connection closes; the callbacks see every `on_close` and end.
    async fn stop(self) {
        let Self {
            mut server,
            callbacks,
            ..
        } = self;
        // A callback holds the server only while it broadcasts; wait for it to let go.
        let server = loop {
            match Arc::try_unwrap(server) {
                Ok(server) => break server,
                Err(shared) => {
                    server = shared;
                    tokio::task::yield_now().await;
                }
            }
        };
        server.close(SHUTDOWN_DEADLINE).await;
        let _ = callbacks.await;
    }
}

/// The `on_message` callback: welcome a newcomer with `send_to`, tell everyone with
/// `broadcast`, relay chat messages to everyone.
fn on_message(
    server: &Weak<JsonServer>,
    notes: &mpsc::UnboundedSender<Note>,
    id: ClientId,
    msg: Value,
) {
    log("server", format!("client {id} sent {msg}"));
    let Some(server) = server.upgrade() else {
        return;
    };
    match msg["type"].as_str() {
        Some("hello") => {
            let name = msg["name"].as_str().unwrap_or("someone");
            let welcome =
                json!({"type": "welcome", "id": id.get(), "clients": server.clients().len()});
            // Callbacks are plain functions: `try_send_to` queues without waiting.
            if let Err(e) = server.try_send_to(id, welcome) {
                log("server", format!("cannot welcome {id}: {e}"));
            }
            broadcast(
                &server,
                json!({"type": "news", "text": format!("{name} joined")}),
            );
            let _ = notes.send(Note::Hello);
        }
        Some("chat") => broadcast(&server, msg),
        _ => log("server", "unknown message type, ignored"),
    }
}

fn broadcast(server: &JsonServer, msg: Value) {
    match server.broadcast(&msg) {
        Ok(report) => log(
            "server",
            format!("broadcast {msg} to {} client(s)", report.queued),
        ),
        Err(e) => log("server", format!("cannot broadcast {msg}: {e}")),
    }
}

/// The server's whole life: wait for the clients (`first_wait`), restart once, wait for
/// them to come back, say bye, stop when they have left.
pub(crate) async fn run(mut hub: Hub, first_wait: Duration) -> anyhow::Result<()> {
    let addr = hub.local_addr();
    log(
        "server",
        format!("listening on {addr}, waiting for {CLIENTS} clients"),
    );
    let t = Instant::now();
    hub.wait_for(CLIENTS, Note::Hello, first_wait)
        .await
        .context("the clients did not all say hello")?;
    log(
        "server",
        format!("{CLIENTS} clients said hello after {}", ms(t.elapsed())),
    );

    broadcast(
        &hub.server,
        json!({"type": "news", "text": "the server restarts now"}),
    );
    let t = Instant::now();
    hub.stop().await;
    log(
        "server",
        format!("stopped gracefully in {}", ms(t.elapsed())),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut hub = Hub::bind(addr).await.context("cannot restart")?;
    let t = Instant::now();
    log("server", format!("restarted on {addr}"));
    hub.wait_for(CLIENTS, Note::Hello, Duration::from_secs(10))
        .await
        .context("the clients did not come back after the restart")?;
    log(
        "server",
        format!(
            "all {CLIENTS} clients back {} after the restart",
            ms(t.elapsed())
        ),
    );

    let report = hub.server.broadcast(json!({"type": "bye"}))?;
    ensure!(
        report.queued == CLIENTS,
        "bye reached {} of {CLIENTS} clients",
        report.queued
    );
    hub.wait_for(CLIENTS, Note::Closed, Duration::from_secs(5))
        .await
        .context("the clients did not leave after bye")?;
    hub.stop().await;
    log("server", "stopped");
    Ok(())
}
