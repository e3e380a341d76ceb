//! `hail comms listen|connect`: a Python Comms (`ReliableCommunication`) server or client
//! from a shell, to test a Python Comms peer.
//!
//! The wire format is Python Comms': each message is a u32 little-endian length and that many
//! bytes, with no handshake, heartbeat or encryption (`LinkConfig::builder().python_comms()`). The
//! payload follows the Python side's mode: `json` (`json.dumps(obj).encode()`, hail's
//! `Json<serde_json::Value>`), `string` (UTF-8 text, hail's `Text`) or `binary` (the bytes,
//! hail's `Binary`). What arrives is printed (escaped in human mode, one JSON object per line
//! with `--json`); each line of standard input is sent as one message (to every client, for
//! `listen`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use hail::link::{Backoff, CloseReason, ProtocolError};
use hail::prelude::*;
use hail::wire::PayloadCodec;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::fail::{self, Kind, KindExt, fail};
use crate::out::{escape, json_line, payload_json, text, waiting};
use crate::{Common, parse_duration, shutdown_signal};

/// How long a stopping `comms listen` lets queued messages go out before closing every
/// connection: 250 ms. Short on purpose: a Python Comms client retries its reconnect once,
/// after 1 s, so a server must be gone (and back) well within that.
const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(250);

/// `hail comms`.
#[derive(Debug, Args)]
pub(crate) struct CommsArgs {
    #[command(subcommand)]
    command: CommsCommand,
}

#[derive(Debug, Subcommand)]
enum CommsCommand {
    /// Be the server: print what clients send, send each line of stdin to every client.
    /// Runs until Ctrl-C (or SIGTERM, SIGHUP); the end of stdin only ends the sending.
    Listen {
        /// The TCP port (0 picks a free one and prints it). The address is `--interface`
        /// (default 0.0.0.0, every interface).
        #[arg(long)]
        port: u16,
        #[command(flatten)]
        opts: Opts,
    },
    /// Be a client of ADDR:PORT: print what the server sends, send each line of stdin.
    /// Reconnects by itself when the connection is lost; ends at the end of stdin (after
    /// what was typed went out) or on Ctrl-C.
    Connect {
        /// The server, `HOST:PORT`.
        addr: String,
        /// How long to keep trying the first connection (the server may start later).
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        wait: Duration,
        #[command(flatten)]
        opts: Opts,
    },
}

/// Options both roles take.
#[derive(Debug, Args)]
struct Opts {
    /// The payload, as the Python side's mode: `json` (each stdin line must be JSON),
    /// `string` (UTF-8 text) or `binary` (the line's bytes; what arrives prints as text
    /// when it is UTF-8, else hex).
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Largest frame accepted or sent, in bytes. A header announcing more closes the
    /// connection. Python Comms itself is reliable only up to about 16 KiB per frame.
    #[arg(long, value_name = "BYTES", default_value_t = hail::wire::DEFAULT_MAX_FRAME_LEN)]
    max_frame_len: u32,
}

/// The Python Comms payload modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// `json.dumps(obj).encode()`: hail's `Json<serde_json::Value>`.
    Json,
    /// UTF-8 text: hail's `Text`.
    String,
    /// Bytes as they are: hail's `Binary`.
    Binary,
}

/// A payload codec as one Python Comms mode: how a stdin line becomes a message and how
/// a message is shown.
trait Mode: PayloadCodec + Clone + Send + Sync + 'static
where
    Self::Item: Send + Sync + 'static,
{
    /// The mode's name, as `--format` spells it.
    const NAME: &'static str;
    /// One line of stdin (without its newline) as a message.
    fn parse(line: Vec<u8>) -> Result<Self::Item, String>;
    /// A message for a human, escaped.
    fn human(item: &Self::Item) -> String;
    /// A message as a JSON field: `{"json": ..}`, `{"text": ..}` or `{"hex": ..}`.
    fn json(item: &Self::Item) -> Value;
}

impl Mode for Json<Value> {
    const NAME: &'static str = "json";
    fn parse(line: Vec<u8>) -> Result<Value, String> {
        serde_json::from_slice(&line).map_err(|e| format!("not JSON ({e}); nothing sent"))
    }
    fn human(item: &Value) -> String {
        escape(&item.to_string()).into_owned()
    }
    fn json(item: &Value) -> Value {
        json!({ "json": item })
    }
}

impl Mode for Text {
    const NAME: &'static str = "string";
    fn parse(line: Vec<u8>) -> Result<String, String> {
        String::from_utf8(line).map_err(|_| "not UTF-8; nothing sent".to_owned())
    }
    fn human(item: &String) -> String {
        escape(item).into_owned()
    }
    fn json(item: &String) -> Value {
        json!({ "text": item })
    }
}

impl Mode for Binary {
    const NAME: &'static str = "binary";
    fn parse(line: Vec<u8>) -> Result<Bytes, String> {
        Ok(Bytes::from(line))
    }
    fn human(item: &Bytes) -> String {
        text(item).to_string()
    }
    fn json(item: &Bytes) -> Value {
        payload_json(item)
    }
}

/// `hail comms`.
pub(crate) async fn run(common: &Common, args: CommsArgs) -> anyhow::Result<()> {
    let format = match &args.command {
        CommsCommand::Listen { opts, .. } | CommsCommand::Connect { opts, .. } => opts.format,
    };
    match format {
        Format::Json => role(common, args.command, Json::<Value>::python_style()).await,
        Format::String => role(common, args.command, Text).await,
        Format::Binary => role(common, args.command, Binary).await,
    }
}

async fn role<P: Mode>(common: &Common, command: CommsCommand, payload: P) -> anyhow::Result<()>
where
    P::Item: Send + Sync + 'static,
{
    match command {
        CommsCommand::Listen { port, opts } => {
            let ip = common
                .comms_listen_ip(matches!(
                    common.interface.as_slice(),
                    [hail::multicast::Interface::Addr(std::net::IpAddr::V6(_))]
                ))
                .kind(Kind::Usage)?;
            listen(common, SocketAddr::new(ip, port), &opts, payload).await
        }
        CommsCommand::Connect { addr, wait, opts } => {
            connect(common, &addr, wait, &opts, payload).await
        }
    }
}

/// Python Comms' link settings with the frame limit given (`--max-frame-len 0` is a
/// usage error).
fn link_config(opts: &Opts) -> anyhow::Result<LinkConfig> {
    LinkConfig::builder()
        .python_comms()
        .max_frame_len(opts.max_frame_len)
        .build()
        .kind(Kind::Usage)
}

/// Why a connection closed, with what it most likely means for a Python Comms link.
fn close_reason(reason: &CloseReason, max_frame_len: u32) -> String {
    if let CloseReason::Protocol(ProtocolError::Framing(e)) = reason
        && matches!(**e, WireError::TooLarge { .. })
    {
        return format!(
            "{reason} (a header announcing more than {max_frame_len} bytes: the peer may speak \
             hail's own framing, a big-endian header, rather than Python Comms; or raise \
             --max-frame-len)"
        );
    }
    reason.to_string()
}

/// One line of stdin at a time, without its line end; `None` at the end of input.
struct Lines(tokio::io::BufReader<tokio::io::Stdin>);

impl Lines {
    fn new() -> Self {
        Self(tokio::io::BufReader::new(tokio::io::stdin()))
    }

    async fn next(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        match self.0.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                Some(line)
            }
        }
    }
}

/// A line that could not be sent: said on stderr, and the command goes on.
fn line_error(msg: &str, json: bool) {
    if json {
        eprintln!(
            "{}",
            json!({ "error": msg, "kind": fail::Kind::Usage.name() })
        );
    } else {
        eprintln!("hail: {}", escape(msg));
    }
}

/// Reports a frame that reached a connection but did not decode in this mode (the link's
/// `Undecodable` event: one per frame, in order with the messages).
fn undecodable(who: &str, error: &str, mode: &str, json: bool) {
    if json {
        json_line(&json!({
            "event": "undecodable", "from": who, "frames": 1, "format": mode, "error": error,
        }));
    } else {
        say!(
            "a frame from {who} did not decode as {mode} and was dropped ({}; is the peer in \
             another mode? see --format)",
            escape(error)
        );
    }
}

async fn listen<P: Mode>(
    common: &Common,
    addr: SocketAddr,
    opts: &Opts,
    payload: P,
) -> anyhow::Result<()>
where
    P::Item: Send + Sync + 'static,
{
    let json = common.json;
    let config = ServerConfig::builder().link(link_config(opts)?).build()?;
    let (server, mut events) = Server::bind(addr, config, payload)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
        .kind(Kind::Network)?;
    let server = Arc::new(server);
    if json {
        json_line(&json!({
            "event": "listening", "address": server.local_addr().to_string(),
            "format": P::NAME,
        }));
    } else {
        say!(
            "listening on {} (Python Comms: u32 little-endian length + {}); each line of stdin \
             goes to every client; Ctrl-C to stop",
            server.local_addr(),
            P::NAME
        );
    }
    // Stdin is read by a task of its own, so a line half typed never holds up the events.
    let sender = tokio::spawn({
        let server = Arc::clone(&server);
        async move {
            let mut lines = Lines::new();
            while let Some(line) = lines.next().await {
                let msg = match P::parse(line) {
                    Ok(msg) => msg,
                    Err(e) => {
                        line_error(&e, json);
                        continue;
                    }
                };
                match server.broadcast(&msg) {
                    Ok(r) if r.queued == 0 => {
                        line_error("no client is connected; nothing sent", json);
                    }
                    Ok(r) if !r.slow.is_empty() => line_error(
                        &format!("{} slow client(s) did not get the line", r.slow.len()),
                        json,
                    ),
                    Ok(_) => {}
                    Err(e) => line_error(&format!("cannot send: {e}"), json),
                }
            }
        }
    });
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = &mut stop => break,
        };
        let Some(event) = event else { break };
        match event {
            ServerEvent::Connected { id, addr, .. } => {
                if json {
                    json_line(&json!({
                        "event": "connected", "client": id.get(), "address": addr.to_string(),
                    }));
                } else {
                    say!("client {id} connected from {addr}");
                }
            }
            ServerEvent::Message { id, msg } => {
                if json {
                    json_line(&json!({
                        "event": "message", "client": id.get(), "message": P::json(&msg),
                    }));
                } else {
                    say!("message from client {id}: {}", P::human(&msg));
                }
            }
            ServerEvent::Undecodable { id, error } => {
                undecodable(&format!("client {id}"), &error, P::NAME, json);
            }
            ServerEvent::Closed { id, reason } => {
                let reason = close_reason(&reason, opts.max_frame_len);
                if json {
                    json_line(&json!({
                        "event": "closed", "client": id.get(), "reason": reason,
                    }));
                } else {
                    say!("client {id} closed: {}", escape(&reason));
                }
            }
            _ => {}
        }
    }
    sender.abort();
    let _ = sender.await;
    match Arc::try_unwrap(server) {
        Ok(server) => server.close(SHUTDOWN_DEADLINE).await,
        Err(_) => tracing::warn!("the server is still shared; closing without a drain"),
    }
    Ok(())
}

/// Connects to `addr`, trying again with backoff until `wait` has passed (hail-link's
/// client gives up when its first attempt fails; later losses it rides out by itself).
async fn first_connect<P: Mode>(
    addr: SocketAddr,
    wait: Duration,
    opts: &Opts,
    payload: P,
) -> anyhow::Result<(Client<P>, hail::link::ClientEvents<P::Item>)>
where
    P::Item: Send + Sync + 'static,
{
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let config = ClientConfig::builder()
        .link(link_config(opts)?)
        .reconnect(Some(backoff))
        .build()?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut delay = backoff.initial;
    let _spinner = waiting(format!("connecting to {addr}"));
    loop {
        match Client::connect(addr, config.clone(), payload.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() + delay >= deadline => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("cannot connect to {addr} within {wait:?}"))
                    .kind(Kind::Network);
            }
            Err(e) => tracing::debug!(%e, ?delay, "first connection failed; trying again"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(backoff.max);
    }
}

async fn connect<P: Mode>(
    common: &Common,
    addr: &str,
    wait: Duration,
    opts: &Opts,
    payload: P,
) -> anyhow::Result<()>
where
    P::Item: Send + Sync + 'static,
{
    let json = common.json;
    let target = tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| fail(Kind::Usage, format!("`{addr}` is not a HOST:PORT")))?;
    let (client, mut events) = first_connect(target, wait, opts, payload).await?;
    let client = Arc::new(client);
    let (done_tx, mut stdin_done) = tokio::sync::oneshot::channel::<()>();
    let sender = tokio::spawn({
        let client = Arc::clone(&client);
        async move {
            let mut lines = Lines::new();
            while let Some(line) = lines.next().await {
                match P::parse(line) {
                    Ok(msg) => {
                        if let Err(e) = client.send(msg).await {
                            line_error(&format!("cannot send: {e}"), json);
                        }
                    }
                    Err(e) => line_error(&e, json),
                }
            }
            let _ = done_tx.send(());
        }
    });
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let result = loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = &mut stdin_done => break Ok(()),
            () = &mut stop => break Ok(()),
        };
        let Some(event) = event else {
            break Err(fail(Kind::Network, "the client stopped"));
        };
        match event {
            ClientEvent::Connected { addr, .. } => {
                if json {
                    json_line(&json!({ "event": "connected", "address": addr.to_string() }));
                } else {
                    say!(
                        "connected to {addr} (Python Comms: u32 little-endian length + {}); \
                         each line of stdin is one message",
                        P::NAME
                    );
                }
            }
            ClientEvent::Disconnected { reason } => {
                let reason = close_reason(&reason, opts.max_frame_len);
                if json {
                    json_line(&json!({ "event": "disconnected", "reason": reason }));
                } else {
                    say!("disconnected: {}; reconnecting", escape(&reason));
                }
            }
            ClientEvent::Message(msg) => {
                if json {
                    json_line(&json!({ "event": "message", "message": P::json(&msg) }));
                } else {
                    say!("message: {}", P::human(&msg));
                }
            }
            ClientEvent::Undecodable { error } => undecodable("the server", &error, P::NAME, json),
            _ => {}
        }
    };
    sender.abort();
    let _ = sender.await;
    // What was typed goes out before the connection closes.
    let unsent = client.close().await;
    if unsent > 0 {
        line_error(
            &format!("{unsent} message(s) were accepted but never written (not connected)"),
            json,
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_messages_in_each_mode() {
        assert_eq!(
            <Json<Value> as Mode>::parse(br#"{"a": [1, 2]}"#.to_vec()),
            Ok(json!({"a": [1, 2]}))
        );
        assert!(<Json<Value> as Mode>::parse(b"{not json".to_vec()).is_err());
        assert_eq!(<Text as Mode>::parse(b"hi".to_vec()), Ok("hi".to_owned()));
        assert!(<Text as Mode>::parse(vec![0xff]).is_err());
        assert_eq!(
            <Binary as Mode>::parse(vec![0xff, 0]),
            Ok(Bytes::from_static(&[0xff, 0]))
        );
    }

    #[test]
    fn messages_show_escaped_and_tagged() {
        assert_eq!(
            <Text as Mode>::human(&"a\u{1b}[2Jb".to_owned()),
            "a\\u{1b}[2Jb"
        );
        assert_eq!(<Text as Mode>::json(&"x".to_owned()), json!({"text": "x"}));
        assert_eq!(<Json<Value> as Mode>::json(&json!(1)), json!({"json": 1}));
        assert_eq!(
            <Binary as Mode>::json(&Bytes::from_static(&[0xff])),
            json!({"hex": "ff"})
        );
    }

    #[test]
    fn an_oversized_header_suggests_hail_framing() {
        let e = WireError::TooLarge {
            len: 1 << 28,
            max: 1 << 24,
        };
        let reason = CloseReason::Protocol(ProtocolError::Framing(Arc::new(e)));
        let s = close_reason(&reason, 1 << 24);
        assert!(s.contains("hail's own framing"), "{s}");
        assert_eq!(
            close_reason(&CloseReason::PeerClosed, 1),
            "the peer closed the connection"
        );
    }
}
