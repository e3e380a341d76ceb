//! hail's task runner, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! ```text
//! cargo xtask ci                              fmt, clippy, doc, test, layering, examples
//! cargo xtask bench [--quick] [--json] [--peers] [FILTER]
//!                                             benchmarks: table + target/bench/*.json
//!                                             (--peers: hail vs zenoh and tarpc, peers/)
//! cargo xtask fuzz [--minutes M] [TARGET]     every cargo-fuzz target (or one) for M minutes
//! cargo xtask netsim [--quick] [OPTIONS]      hail on a simulated LAN (root, namespaces)
//! cargo xtask soak [--minutes M] [OPTIONS]    ten device processes under random restarts
//! ```
//!
//! One binary, a module per task, no argument-parsing crate. Cargo is run through the
//! `CARGO` variable that `cargo run` sets, from the workspace root found through
//! `CARGO_MANIFEST_DIR`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports on stdout and stderr"
)]

mod bench;
mod ci;
mod cmd;
mod fuzz;
mod layering;
mod netsim;
mod soak;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  ci                               cargo fmt --check, clippy -D warnings, doc -D warnings,
                                   test, the layering check, every example of hail-examples
  bench [--quick] [--json] [--peers] [FILTER]
                                   run the benchmarks (hail-benches, release build); print a
                                   table (or with --json one JSON object per line) and write
                                   target/bench/latest.json and target/bench/bench-<secs>.json;
                                   --peers: hail vs zenoh and tarpc instead (peers/, outside
                                   the workspace; target/bench/peers-latest.json)
  fuzz [--minutes M] [TARGET]      run every cargo-fuzz target under fuzz/ (or TARGET) for
                                   M minutes each (default 1); installs cargo-fuzz if missing
  netsim [--quick] [--runs R] [--sizes 5,10,25] [--loss 0,10,20] [--dup PCT]
         [--fault-runs R] [--fault-size N] [--fault-loss PCT] [--modes plain,sealed]
         [--scenarios discovery,kill,partition,restart] [--strict]
                                   hail devices in network namespaces on a bridge, with
                                   nftables loss and duplication: discovery, kill, partition,
                                   restart; figures and goals (root; skips where it cannot)
  soak [--minutes M] [options]     10 device processes exchange messages, asks and RPC calls
                                   on loopback while restarted at random; per-minute table,
                                   message accounting and RSS drift (options: xtask/src/soak.rs)
  help                             this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match task.as_str() {
        "ci" if rest.is_empty() => ci::run(),
        "bench" => match bench::Args::parse(rest) {
            Ok(args) => bench::run(&args),
            Err(msg) => return usage_error(&msg),
        },
        "fuzz" => match fuzz::Args::parse(rest) {
            Ok(args) => fuzz::run(&args),
            Err(msg) => return usage_error(&msg),
        },
        "netsim" => match netsim::Args::parse(rest) {
            Ok(args) => netsim::run(&args),
            Err(msg) => return usage_error(&msg),
        },
        "soak" => match soak::Args::parse(rest) {
            Ok(args) => soak::run(&args),
            Err(msg) => return usage_error(&msg),
        },
        "help" | "-h" | "--help" if rest.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => return usage_error(&format!("unknown task or arguments: {}", args.join(" "))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `msg` and the usage; exit code 2, as for any command-line misuse.
fn usage_error(msg: &str) -> ExitCode {
    eprintln!("xtask: {msg}\n");
    eprint!("{USAGE}");
    ExitCode::from(2)
}
