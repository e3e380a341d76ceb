//! hail's benchmarks: each measures hail and its baseline side by side in one run and
//! reports one [`harness::Record`] per figure. The `hail-benches` binary prints them as JSON
//! lines; `cargo xtask bench` runs it, prints the table and writes `target/bench/`.
//!
//! To add a benchmark group: a module here with
//! `pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Record>>`, listed in [`GROUPS`]. Each
//! benchmark checks [`harness::Ctx::wants`] with its name before running, and honours
//! [`harness::Ctx::quick`].

pub mod crypto;
pub mod discovery;
pub mod harness;
pub mod link;
pub mod multicast;
pub mod rpc;
pub mod veth;
pub mod wire;

use harness::{Ctx, Record};

/// A benchmark group: its name prefix and the function that runs it.
pub type Group = (&'static str, fn(&Ctx) -> anyhow::Result<Vec<Record>>);

/// Every benchmark group, in the order they run. Each layer adds its own here.
pub const GROUPS: &[Group] = &[
    ("wire/", wire::run),
    ("crypto/", crypto::run),
    ("multicast/", multicast::run),
    ("link/", link::run),
    ("rpc/", rpc::run),
    ("discovery/", discovery::run),
];
