//! Python Comms' clients: two auto-reconnecting clients exchanging JSON with a server.
//!
//! They speak Python Comms on the wire (`LinkConfig::builder().python_comms()`: a u32 little-endian
//! length + JSON), so the server may be a Python Comms server as well as `comms_server`.
//! Each client (`comms/client.rs`) says hello on every connection, prints every message,
//! and rides out a server restart: it reconnects with backoff by itself, and a message it
//! sends while disconnected waits in its outage buffer and goes out first after the
//! reconnect. It ends when the server says bye.
//!
//! Alone, it starts the server of `comms_server` in-process on loopback:
//!
//! ```text
//! cargo run -p hail-examples --example comms_clients
//! ```
//!
//! Or against a `comms_server` started in another terminal:
//!
//! ```text
//! cargo run -p hail-examples --example comms_server -- --listen 127.0.0.1:7400
//! cargo run -p hail-examples --example comms_clients -- 127.0.0.1:7400
//! ```

#![allow(
    clippy::print_stdout,
    reason = "an example shows its results on stdout"
)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};

mod comms;

use comms::{NAMES, WAIT_FOR_OTHER_TERMINAL, client, log, server};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, server_task, deadline) = match args.as_slice() {
        [addr] => {
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("not an address: {addr}"))?;
            (addr, None, WAIT_FOR_OTHER_TERMINAL)
        }
        [] => {
            let hub = server::Hub::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            let addr = hub.local_addr();
            let task = tokio::spawn(server::run(hub, Duration::from_secs(10)));
            (addr, Some(task), Duration::from_secs(20))
        }
        _ => bail!("usage: comms_clients [SERVER_ADDR]"),
    };

    let clients = NAMES.map(|name| tokio::spawn(client::run(name, addr, deadline)));
    for c in clients {
        c.await??;
    }
    if let Some(task) = server_task {
        task.await??;
    }
    log("main", "done");
    Ok(())
}
