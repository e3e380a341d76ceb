//! `hail mcast send|recv`: the multicast channel on its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hail::prelude::*;
use serde_json::json;

use crate::out::{json_line, payload_json, progress, text};
use crate::{Common, parse_duration};

/// The default group of `hail mcast`: `239.255.72.77:5677`.
const DEFAULT_MCAST_GROUP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(239, 255, 72, 77)), 5677);
/// The group name a passphrase is derived with, so every `hail mcast` shares the key.
const KEY_GROUP: &str = "hail-mcast";

/// `hail mcast`.
#[derive(Debug, Args)]
pub(crate) struct McastArgs {
    #[command(subcommand)]
    command: McastCommand,
}

#[derive(Debug, Subcommand)]
enum McastCommand {
    /// Send one datagram to the group.
    Send {
        /// The message (UTF-8 text).
        message: String,
    },
    /// Receive datagrams from the group and print them.
    Recv {
        /// Stop after this many datagrams. Default: never.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long; with `--count`, fail if fewer arrived. Default: never.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
    },
}

/// `hail mcast`.
pub(crate) async fn run(common: &Common, args: McastArgs) -> anyhow::Result<()> {
    let group = common.group.unwrap_or(DEFAULT_MCAST_GROUP);
    let mut builder = Channel::builder(group);
    if let Some(ip) = common.interface {
        builder = builder.interface(ip);
    }
    if let Some(p) = &common.passphrase {
        builder = builder.key(GroupKey::derive(p, KEY_GROUP));
    }
    let mut chan = builder
        .build()
        .with_context(|| format!("cannot open the multicast channel on {group}"))?;
    match args.command {
        McastCommand::Send { message } => {
            chan.send(message.as_bytes())
                .await
                .with_context(|| format!("cannot send to {group}"))?;
            if common.json {
                json_line(
                    &json!({ "event": "sent", "group": group.to_string(), "bytes": message.len() }),
                );
            } else {
                say!("sent {} bytes to {group}", message.len());
            }
            Ok(())
        }
        McastCommand::Recv { count, timeout } => {
            if !common.json {
                say!("receiving on {}", chan.group());
            }
            progress("waiting for datagrams");
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            let mut got = 0u64;
            while count.is_none_or(|c| got < c) {
                let d = match deadline {
                    Some(at) => match tokio::time::timeout_at(at, chan.recv()).await {
                        Ok(d) => d,
                        Err(_) => break,
                    },
                    None => chan.recv().await,
                }
                .context("receive")?;
                got += 1;
                if common.json {
                    json_line(&json!({
                        "event": "datagram", "from": d.from.to_string(),
                        "message": payload_json(&d.payload),
                    }));
                } else {
                    say!("{}: {}", d.from, text(&d.payload));
                }
            }
            if let Some(c) = count.filter(|&c| got < c) {
                let s = chan.stats();
                bail!(
                    "received {got} of {c} datagrams in time ({} dropped for a wrong key: \
                     another passphrase?)",
                    s.dropped_wrong_key
                );
            }
            Ok(())
        }
    }
}
