//! Python Comms' server: callbacks, `send_to`, `broadcast`, and clients that reconnect.
//!
//! A `hail-link` server speaking Python Comms on the wire (`LinkConfig::builder().python_comms()`: a
//! u32 little-endian length + `json.dumps(obj).encode()`, frames up to 16 KiB) exchanges JSON
//! messages (`serde_json::Value`, as Python Comms users sent dicts) and runs its three
//! callbacks (on connect, on message, on close): it welcomes each client with `send_to` and
//! tells everyone with `broadcast`. After both clients said hello it stops gracefully (in at
//! most 250 ms: a Python Comms client retries its reconnect only once, after 1 s) and
//! restarts on the same port; the auto-reconnecting clients come back by themselves (a
//! message they sent meanwhile waits in their outage buffer and arrives after the
//! reconnect), and the example ends when both have left. The server is in
//! `comms/server.rs`, the clients in `comms/client.rs`.
//!
//! Alone, it starts its two clients in-process on loopback:
//!
//! ```text
//! cargo run -p hail-examples --example comms_server
//! ```
//!
//! Or in two terminals, with the clients in another process:
//!
//! ```text
//! cargo run -p hail-examples --example comms_server -- --listen 127.0.0.1:7400
//! cargo run -p hail-examples --example comms_clients -- 127.0.0.1:7400
//! ```
//!
//! A Python Comms client can be one of the two clients: it connects to the `--listen`
//! address and sends `{"type": "hello", "name": "..."}`. The test peer of `hail-cli` does
//! (`python3 crates/hail-cli/tests/python_comms/peer.py client --port 7400`, then type the
//! hello). A peer speaking hail's own framing instead gets nothing: its first header, read
//! little-endian, announces a frame far over the limit, and the server's log says so when
//! it closes that connection.

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
    let listen: Option<SocketAddr> = match args.as_slice() {
        [] => None,
        [flag, addr] if flag == "--listen" => Some(
            addr.parse()
                .with_context(|| format!("not an address: {addr}"))?,
        ),
        _ => bail!("usage: comms_server [--listen ADDR]"),
    };

    match listen {
        Some(addr) => {
            let hub = server::Hub::bind(addr).await?;
            log(
                "server",
                format!(
                    "start the clients: cargo run -p hail-examples --example comms_clients -- {}",
                    hub.local_addr()
                ),
            );
            server::run(hub, WAIT_FOR_OTHER_TERMINAL).await?;
        }
        None => {
            let hub = server::Hub::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            let addr = hub.local_addr();
            let clients =
                NAMES.map(|name| tokio::spawn(client::run(name, addr, Duration::from_secs(20))));
            server::run(hub, Duration::from_secs(10)).await?;
            for c in clients {
                c.await??;
            }
        }
    }
    log("main", "done");
    Ok(())
}
