//! hail's task runner, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! ```text
//! cargo xtask ci                              fmt, clippy, doc, test, layering, toolchain
//!                                             floor, fuzz targets, packages, examples
//! cargo xtask bench [--quick] [--json] [--peers] [FILTER]
//!                                             benchmarks: table + target/bench/*.json
//!                                             (--peers: hail vs zenoh and tarpc, peers/)
//! cargo xtask fuzz [--minutes M] [TARGET]     every cargo-fuzz target (or one) for M minutes
//! cargo xtask netsim [--quick] [OPTIONS]      hail on a simulated LAN (root, namespaces)
//! cargo xtask soak [--minutes M] [OPTIONS]    ten device processes under random restarts
//! cargo xtask attack [--secs N] [ATTACK...]   the adversarial suite, goals checked
//! ```
//!
//! One binary, a module per task; the command line is parsed by clap (`cli.rs`), so every
//! task has `--help` and an unknown option is an error (exit code 2). Cargo is run through
//! the `CARGO` variable that `cargo run` sets, from the workspace root found through
//! `CARGO_MANIFEST_DIR`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports on stdout and stderr"
)]

mod attack;
mod bench;
mod ci;
mod cli;
mod cmd;
mod fuzz;
mod imports;
mod layering;
mod msrv;
mod netsim;
mod soak;

use std::process::ExitCode;

use cli::Task;

fn main() -> ExitCode {
    let task = cli::parse();
    let name = cli::task_name(&task);
    let result = match task {
        Task::Ci => ci::run(),
        Task::Bench(args) => bench::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::Netsim(flags) => netsim::run(&flags.resolve()),
        Task::Soak(args) => soak::run(&args),
        Task::Attack(args) => attack::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
