//! `hail-peers`: hail against the systems users would pick instead, same machine, same run.
//!
//! - `peers/discover-N`: hail `Device` against zenoh peer-mode sessions (multicast
//!   scouting restricted to loopback).
//! - `peers/ask-N-p50|p99`: hail `ask` of N peers against a zenoh `get` answered by N
//!   queryables.
//! - `peers/send-<size>`: one-way messages, hail `send` against zenoh put/subscriber.
//! - `peers/rpc-*`: hail-rpc against tarpc.
//!
//! Prints one JSON object per figure on stdout (the `hail-benches` format, read by
//! `cargo xtask bench --peers`), then the goals, pass or fail, as plain lines (which the
//! xtask passes on to stderr, in order).
//!
//! Usage: `hail-peers [--quick] [FILTER]`

#![allow(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

mod ask;
mod discover;
mod rpc;
mod send;
mod zconf;

use hail_benches::harness::{Ctx, Record};

/// A group of figures: its name prefix and the function that measures it.
type Group = (&'static str, fn(&Ctx) -> anyhow::Result<Vec<Record>>);

const GROUPS: &[Group] = &[
    ("peers/discover", discover::run),
    ("peers/ask", ask::run),
    ("peers/send", send::run),
    ("peers/rpc", rpc::run),
];

fn main() -> anyhow::Result<()> {
    let Some(ctx) = Ctx::from_args(std::env::args().skip(1))? else {
        println!("usage: hail-peers [--quick] [FILTER]");
        return Ok(());
    };
    let mut all = Vec::new();
    for (prefix, run) in GROUPS {
        if !ctx.wants(prefix) {
            continue;
        }
        for record in run(&ctx)? {
            println!("{}", record.to_json());
            all.push(record);
        }
    }
    goals(&all);
    Ok(())
}

/// Prints each goal that a figure of this run answers, with pass or fail: issue 8's, and
/// issue 13's for one-way sends (1.5x zenoh's pub/sub rate).
fn goals(records: &[Record]) {
    for r in records {
        let (goal, min_ratio) = match r.name.as_str() {
            n if n.starts_with("peers/discover-") => {
                ("discovery at most half of zenoh's time with defaults", 2.0)
            }
            n if n.starts_with("peers/ask-") => ("ask latency at or below zenoh get", 1.0),
            n if n.starts_with("peers/send-") => ("throughput 1.5x zenoh's or more", 1.5),
            // hail-rpc against tarpc has no goal: reported only.
            _ => continue,
        };
        let ratio = r.ratio();
        let verdict = if ratio >= min_ratio { "PASS" } else { "FAIL" };
        println!(
            "goal {verdict}: {} ratio {ratio:.2} (needs >= {min_ratio:.1}): {goal}",
            r.name
        );
    }
}
