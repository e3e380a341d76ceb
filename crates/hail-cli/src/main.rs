//! `hail`: devices on a local network find each other and talk, from a shell.
//!
//! `hail demo` runs several devices on loopback in one process and shows discovery,
//! messages, questions, an RPC call and a sealed multicast exchange. `hail listen`,
//! `send`, `ask`, `call` and `scout` join the network as a device; `hail mcast` uses the
//! multicast channel on its own. Errors are one line on stderr and exit code 1; usage
//! errors exit with code 2.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool prints its results and errors"
)]

/// `println!` that ends the process quietly (exit code 0) when stdout is closed, as when
/// piped into `head`, instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::say(format_args!($($arg)*))
    };
}

mod demo;
mod device;
mod mcast;
mod out;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

/// Devices on a local network find each other and talk.
#[derive(Debug, Parser)]
#[command(name = "hail", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// Passphrase that seals discovery and secures links (PBKDF2, 600,000 iterations, once
    /// at start). Default: none, plaintext.
    #[arg(
        long,
        env = "HAIL_PASSPHRASE",
        hide_env_values = true,
        global = true,
        value_name = "PASSPHRASE"
    )]
    pub(crate) passphrase: Option<String>,
    /// IPv4 interface for multicast, by address (`lo` means 127.0.0.1); links listen on
    /// it too. Default: every up, multicast-capable interface.
    #[arg(long, global = true, value_parser = parse_interface, value_name = "ADDR")]
    pub(crate) interface: Option<Ipv4Addr>,
    /// Multicast group ADDR:PORT. Default: 239.255.72.76:5676 for devices,
    /// 239.255.72.77:5677 for `mcast`.
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    pub(crate) group: Option<SocketAddr>,
    /// Machine-readable output: one JSON object per line.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); `RUST_LOG` overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Several devices on loopback in one process: discovery, messages, a question, an
    /// RPC call and sealed multicast, with timings. Safe on any machine.
    Demo(demo::DemoArgs),
    /// Join as a device: print every event, answer questions, serve `echo` and `info`.
    Listen(device::ListenArgs),
    /// Send one message to a device by name.
    Send(device::SendArgs),
    /// Ask one or more devices a question and print every answer.
    Ask(device::AskArgs),
    /// Call a method on a device (`hail listen` serves `echo` and `info`).
    Call(device::CallArgs),
    /// Show the devices on the network: a live table, or once with `--once`.
    Scout(device::ScoutArgs),
    /// The multicast channel on its own: send or receive datagrams on a group.
    Mcast(mcast::McastArgs),
}

/// `lo` or an IPv4 address.
fn parse_interface(s: &str) -> Result<Ipv4Addr, String> {
    if s == "lo" || s == "localhost" {
        return Ok(Ipv4Addr::LOCALHOST);
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not an IPv4 address (or `lo`)"))
}

/// A duration: `500ms`, `2s`, `1.5s`, `1m`, or plain seconds (`3`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (like 500ms, 2s, 1.5s, 1m)");
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 || v * scale > 86_400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * scale))
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.common.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hail: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let common = cli.common;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(&common, args).await,
            Command::Listen(args) => device::listen(&common, args).await,
            Command::Send(args) => device::send(&common, args).await,
            Command::Ask(args) => device::ask(&common, args).await,
            Command::Call(args) => device::call(&common, args).await,
            Command::Scout(args) => device::scout(&common, args).await,
            Command::Mcast(args) => mcast::run(&common, args).await,
        }
    });
    // Tasks still running (a question handler's command, say) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hail: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e9s").is_err());
    }

    #[test]
    fn interfaces_parse() {
        assert_eq!(parse_interface("lo"), Ok(Ipv4Addr::LOCALHOST));
        assert_eq!(parse_interface("10.0.0.2"), Ok(Ipv4Addr::new(10, 0, 0, 2)));
        assert!(parse_interface("eth0").is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
