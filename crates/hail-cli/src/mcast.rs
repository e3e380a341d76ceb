//! `hail mcast send|recv`: the multicast channel on its own.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use hail::crypto::OVERHEAD;
use hail::crypto::datagram::MAGIC;
use hail::multicast::Stats;
use hail::prelude::*;
use serde_json::json;

use crate::fail::{Kind, KindExt, fail};
use crate::out::{json_line, payload_json, text, waiting};
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
    /// Send one datagram to the group and say how many bytes went on the wire.
    Send {
        /// The message (UTF-8 text).
        message: String,
    },
    /// Receive datagrams from the group and print them; when fewer than `--count` came,
    /// say what was dropped and why.
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
    if group.port() == 0 && matches!(args.command, McastCommand::Send { .. }) {
        return Err(fail(
            Kind::Usage,
            format!(
                "--group {group}: `mcast send` needs the receivers' port (`mcast recv` on \
                 port 0 prints the one it picked)"
            ),
        ));
    }
    let mut builder = ChannelConfig::builder();
    for i in &common.interface {
        builder = builder.interface(i.clone());
    }
    let sealed = common.passphrase.is_some();
    if let Some(p) = &common.passphrase {
        builder = builder.key(GroupKey::derive(p, KEY_GROUP));
    }
    let (chan, mut rx) = builder
        .build()
        .and_then(|config| Channel::bind(group, config))
        .with_context(|| format!("cannot open the multicast channel on {group}"))
        .kind(Kind::Network)?;
    match args.command {
        McastCommand::Send { message } => {
            chan.send(message.as_bytes())
                .await
                .with_context(|| format!("cannot send to {group}"))
                .kind(Kind::Network)?;
            let len = message.len();
            let wire = if sealed { len + OVERHEAD } else { len };
            let interfaces = chan.stats().sent;
            if common.json {
                json_line(&json!({
                    "event": "sent", "group": group.to_string(), "bytes": len,
                    "wire_bytes": wire, "sealed": sealed, "interfaces": interfaces,
                }));
            } else if sealed {
                say!(
                    "sent {len} bytes ({wire} on the wire, sealed) to {group} on {}",
                    plural(interfaces, "interface")
                );
            } else {
                say!(
                    "sent {len} bytes (plaintext) to {group} on {}",
                    plural(interfaces, "interface")
                );
            }
            Ok(())
        }
        McastCommand::Recv { count, timeout } => {
            if !common.json {
                say!(
                    "receiving on {} ({}); datagrams from other hail mcast senders need the \
                     same passphrase",
                    chan.group(),
                    if sealed { "sealed" } else { "plaintext" }
                );
            }
            let spinner = waiting("waiting for datagrams");
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            let mut got = 0u64;
            let mut warned_sealed = false;
            while count.is_none_or(|c| got < c) {
                let d = match deadline {
                    Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                        Ok(d) => d,
                        Err(_) => break,
                    },
                    None => rx.recv().await,
                }
                .context("receive")
                .kind(Kind::Network)?;
                got += 1;
                spinner.suspend(|| {
                    if common.json {
                        json_line(&json!({
                            "event": "datagram", "from": d.from.to_string(),
                            "message": payload_json(&d.payload),
                        }));
                    } else {
                        say!("{}: {}", d.from, text(&d.payload));
                    }
                    if !sealed && !warned_sealed && d.payload.starts_with(&MAGIC) {
                        warned_sealed = true;
                        eprintln!(
                            "hail: note: datagrams from {} look sealed by hail; receive with \
                             the sender's --passphrase to open them",
                            d.from
                        );
                    }
                });
            }
            drop(spinner);
            if let Some(c) = count.filter(|&c| got < c) {
                return Err(fail(
                    Kind::Timeout,
                    format!(
                        "received {got} of {c} datagrams in time; {}",
                        why_missing(&chan.stats(), chan.group(), sealed)
                    ),
                ));
            }
            Ok(())
        }
    }
}

/// What the counters say about datagrams that did not arrive: only what was counted.
fn why_missing(s: &Stats, group: SocketAddr, sealed: bool) -> String {
    let mut parts = Vec::new();
    if s.dropped_wrong_key > 0 {
        parts.push(format!(
            "{} dropped for a wrong key (sealed with another passphrase)",
            s.dropped_wrong_key
        ));
    }
    if s.dropped_malformed > 0 {
        parts.push(format!(
            "{} dropped as not sealed (a sender without --passphrase, or not hail)",
            s.dropped_malformed
        ));
    }
    if s.dropped_replayed + s.dropped_too_old > 0 {
        parts.push(format!(
            "{} dropped as replayed or too old",
            s.dropped_replayed + s.dropped_too_old
        ));
    }
    if parts.is_empty() && s.delivered == 0 {
        return format!(
            "nothing arrived on {group} (is a sender on the same group and interface{}? \
             does a firewall drop UDP port {}?)",
            if sealed {
                ", with the same passphrase"
            } else {
                ""
            },
            group.port()
        );
    }
    if parts.is_empty() {
        return "no more arrived, and none was dropped".into();
    }
    parts.join(", ")
}

fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> SocketAddr {
        DEFAULT_MCAST_GROUP
    }

    #[test]
    fn hints_name_only_what_was_counted() {
        let none = why_missing(&Stats::default(), group(), true);
        assert!(none.starts_with("nothing arrived"), "{none}");
        assert!(!none.contains("wrong key"), "{none}");

        let mut wrong = Stats::default();
        wrong.dropped_wrong_key = 2;
        let s = why_missing(&wrong, group(), true);
        assert_eq!(
            s,
            "2 dropped for a wrong key (sealed with another passphrase)"
        );

        let mut plain = Stats::default();
        plain.dropped_malformed = 1;
        let s = why_missing(&plain, group(), true);
        assert!(s.contains("not sealed"), "{s}");
        assert!(!s.contains("wrong key"), "{s}");

        let mut some = Stats::default();
        some.delivered = 1;
        assert_eq!(
            why_missing(&some, group(), false),
            "no more arrived, and none was dropped"
        );
    }
}
