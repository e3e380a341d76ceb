//! `cargo xtask soak [--minutes M] [options]`: ten devices, each its own process
//! (`hail-benches`' `soak_node`), exchange messages, asks and RPC calls on loopback while
//! devices are restarted at random; every minute a table of RSS and counts; at the end
//! the message accounting and the RSS drift.
//!
//! Options: `cargo xtask soak --help` ([`Args`]: `--minutes`, `--nodes`, `--restart-secs`,
//! `--kill-ratio`, `--stable`, `--warmup-secs`, `--msg-ms`, `--ask-ms`, `--rpc-ms`,
//! `--seed`).
//!
//! Files: `args.rs` the options, `node.rs` the lines a node prints, `ledger.rs` every
//! message's fate, `run.rs` the processes and the restart schedule, `report.rs` the
//! summary and the goals.
//!
//! Accounting. Every message carries (sender, incarnation, number); the sender prints the
//! result of each `Device::send`, the receiver each message it gets, both as they happen,
//! so even a SIGKILLed node's record is exact up to its death. At the end every message
//! is exactly one of: delivered (sent OK, received once by its target), failed (send
//! reported an error, never received) or a discrepancy. Discrepancies are sorted by cause:
//! sent OK to a receiver SIGKILLed around the send (in flight, the honest gap), sent OK
//! by a sender SIGKILLed just after, and the rest (lost around a graceful stop, or with no
//! restart near: hail bugs), plus duplicates, deliveries to the wrong node and messages
//! reported failed but received. Asks and RPC calls are counted by each node: every call
//! is answered or failed, checked on every incarnation that stopped gracefully.
//!
//! Goals (the exit status): no discrepancy other than the SIGKILL gap, every ask and call

mod args;
mod ledger;
mod node;
mod report;
mod run;

pub(crate) use args::Args;
pub(crate) use run::run;
