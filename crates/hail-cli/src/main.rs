//! `hail`: devices on a local network find each other and talk, from a shell.
//!
//! `hail demo` runs several devices on loopback in one process and shows discovery,
//! messages, questions, an RPC call and a sealed multicast exchange. `hail listen`,
//! `send`, `ask`, `call` and `scout` join the network as a device; `hail mcast` uses the
//! multicast channel on its own; `hail comms` is a Python Comms server or client. Errors
//! are one line on stderr (a JSON object with `--json`, see `fail.rs`) and exit code 1;
//! usage errors exit with code 2.
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

mod answer;
mod comms;
mod demo;
mod device;
mod fail;
mod mcast;
mod out;
mod printer;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hail::multicast::Interface;
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
    /// Passphrase of the group; each command says what it protects with it. A key is
    /// derived from it once at start (PBKDF2, 600,000 iterations). Default: none, plaintext.
    #[arg(
        long,
        env = "HAIL_PASSPHRASE",
        hide_env_values = true,
        global = true,
        value_name = "PASSPHRASE"
    )]
    pub(crate) passphrase: Option<String>,
    /// Interface, by name (`eth0`, `lo`), index (`3`) or address (`192.168.1.20`,
    /// `fe80::1`); repeat it for several. Multicast goes out and comes in on each. Devices'
    /// links listen on every address (`[::]`, IPv4 too, where the host allows it) and
    /// advertise the interfaces' addresses of both families, except with one interface
    /// named by an address: there. `comms listen` listens on the one interface's first
    /// IPv4 address (or the IPv6 one named). An unknown one is an error that lists the
    /// host's interfaces. Default: every up, multicast-capable interface.
    #[arg(long, global = true, value_parser = parse_interface, value_name = "IF", action = ArgAction::Append)]
    pub(crate) interface: Vec<Interface>,
    /// Multicast group ADDR:PORT, IPv4 or IPv6 (`'[ff02::1:2]:5676'`: link-local scope,
    /// with `--interface eth0`; devices then listen on `[::]` and link over IPv6,
    /// link-local addresses dialed with the interface's scope). Default:
    /// for devices both 239.255.72.76:5676 and '[ff02::4841:494c]:5676' where their
    /// interfaces have both families (else the one of theirs), 239.255.72.77:5677 for
    /// `mcast`. Port 0 is refused for devices (each would pick its
    /// own port and be alone) and for `mcast send`; `mcast recv` picks a free port and
    /// prints it.
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    pub(crate) group: Option<SocketAddr>,
    /// Keep this device's identity (its key, hence its id) in FILE across runs, created
    /// on first use (mode 0600). Default: a fresh key per run.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) identity: Option<std::path::PathBuf>,
    /// Pin each peer's name to the first key that joins under it, kept in FILE (trust on
    /// first use, like ssh's known_hosts); a device with another key under a pinned name
    /// is refused. Default: any key under any name.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) known_devices: Option<std::path::PathBuf>,
    /// Metadata KEY=VALUE signed into this device's adverts and shown by `scout`; repeat
    /// it (at most 16 entries, 512 bytes; keys of a-z 0-9 . _ -).
    #[arg(long, global = true, value_name = "KEY=VALUE", value_parser = parse_meta, action = ArgAction::Append)]
    pub(crate) meta: Vec<(String, String)>,
    /// Machine-readable output: one JSON object per line on stdout; an error is one
    /// `{"error": .., "kind": ..}` line on stderr.
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
    ///
    /// With `--passphrase`, discovery is sealed and every link encrypted (Noise).
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
    ///
    /// UDP datagrams to and from a group (multisock's job), no devices and no links.
    /// Default group 239.255.72.77:5677, TTL 1 (this network segment only).
    ///
    /// With --passphrase every datagram is sealed (AES-256-GCM, 45 bytes more on the wire)
    /// under a key derived from the passphrase, and a receiver drops, and counts, datagrams
    /// sealed with another passphrase, replayed, or not sealed at all. Without it a datagram
    /// is the bare bytes, so socat and other plain UDP tools interoperate.
    Mcast(mcast::McastArgs),
    /// A Python Comms server or client: print what arrives, send each line of stdin.
    ///
    /// Python Comms' (ReliableCommunication's) wire format: a u32 little-endian length and
    /// the payload, no handshake and no encryption (--passphrase does not apply). `--format`
    /// matches the Python side's mode: json, string or binary.
    ///
    /// Python Comms' own limits: its recv is not looped, so frames over about 16 KiB can
    /// break it; its client retries a lost connection once, after 1 s.
    Comms(comms::CommsArgs),
}

impl Command {
    /// Whether the command joins the network as a device (and so needs a real group port).
    fn is_device(&self) -> bool {
        matches!(
            self,
            Self::Listen(_) | Self::Send(_) | Self::Ask(_) | Self::Call(_) | Self::Scout(_)
        )
    }
}

/// An interface by name, index or address (`localhost` means 127.0.0.1).
fn parse_interface(s: &str) -> Result<Interface, String> {
    if s == "localhost" {
        return Ok(Interface::from(Ipv4Addr::LOCALHOST));
    }
    s.parse::<Interface>().map_err(|e| e.to_string())
}

impl Common {
    /// Where a device's links listen: [`hail::discovery::listen_ip`]'s address for the
    /// interfaces named (one named by an address: there, in the family `v6` names or the
    /// device's default group's there for `None`), else every address: `[::]` when `v6`
    /// is `Some(true)`, `0.0.0.0` otherwise (which `start` turns into the device's default,
    /// dual-stack where the host allows it). One interface named by name or index listens
    /// everywhere, so the device links over every family it has.
    pub(crate) fn listen_ip(&self, v6: Option<bool>) -> anyhow::Result<IpAddr> {
        Ok(hail::discovery::listen_ip(&self.interface, v6)?.unwrap_or(any_ip(v6 == Some(true))))
    }

    /// Where `comms listen` (a plain TCP server, not a device) listens: on the one
    /// interface named, there if named by an address, else its first address of the
    /// family `v6` (link-local IPv6 skipped); else every address of that family.
    pub(crate) fn comms_listen_ip(&self, v6: bool) -> anyhow::Result<IpAddr> {
        let ip = match self.interface.as_slice() {
            [one] if !matches!(one, Interface::Addr(_)) => {
                one.resolve()?.addrs.into_iter().find(|a| match a {
                    IpAddr::V4(_) => !v6,
                    IpAddr::V6(a6) => v6 && !a6.is_unicast_link_local(),
                })
            }
            _ => hail::discovery::listen_ip(&self.interface, Some(v6))?,
        };
        Ok(ip.unwrap_or(any_ip(v6)))
    }
}

/// Every address of one family: `[::]` or `0.0.0.0`.
fn any_ip(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
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

/// Ctrl-C or, on Unix, SIGTERM or SIGHUP (the terminal closed): the long-running commands
/// stop on any of them the same way, with a goodbye to their peers.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Log lines go to stderr, coloured only when stderr is a terminal.
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Parses the command line; a usage error under `--json` is a JSON line (exit code 2),
/// help and version print as usual.
fn parse() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind as ClapKind;
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if matches!(e.kind(), ClapKind::DisplayHelp | ClapKind::DisplayVersion) => e.exit(),
        Err(e) if wants_json(std::env::args_os()) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("bad arguments");
            let msg = first.strip_prefix("error: ").unwrap_or(first);
            fail::report_line(msg, fail::Kind::Usage, true);
            Err(ExitCode::from(2))
        }
        Err(e) => e.exit(),
    }
}

/// Whether `--json` is among the arguments (before a `--`), for errors found before the
/// command line could be parsed.
fn wants_json(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.take_while(|a| a != "--").any(|a| a == "--json")
}

/// The checks clap cannot make because they tie a global flag to a subcommand.
fn check(cli: &Cli) -> Result<(), String> {
    if let Some(g) = cli.common.group
        && g.port() == 0
        && cli.command.is_device()
    {
        return Err(format!(
            "--group {g}: a device needs a real port; on port 0 each device would pick its \
             own and be alone (the default is {})",
            hail::discovery::DEFAULT_GROUP
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let json = cli.common.json;
    if let Err(msg) = check(&cli) {
        fail::report_line(&msg, fail::Kind::Usage, json);
        return ExitCode::from(2);
    }
    init_tracing(cli.common.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            fail::report_line(
                &format!("cannot start the async runtime: {e}"),
                fail::Kind::Failed,
                json,
            );
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
            Command::Comms(args) => comms::run(&common, args).await,
        }
    });
    // Tasks still running (a question handler's command, say) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fail::report(&e, json);
            if fail::kind_of(&e) == fail::Kind::Usage {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `KEY=VALUE` of `--meta`.
fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
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
        assert_eq!(parse_interface("lo"), Ok(Interface::Name("lo".into())));
        assert_eq!(
            parse_interface("localhost"),
            Ok(Interface::from(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            parse_interface("10.0.0.2"),
            Ok(Interface::from(Ipv4Addr::new(10, 0, 0, 2)))
        );
        assert_eq!(
            parse_interface("fe80::1"),
            Ok(Interface::Addr("fe80::1".parse().unwrap()))
        );
        assert_eq!(parse_interface("3"), Ok(Interface::Index(3)));
        assert_eq!(parse_interface("eth0"), Ok(Interface::Name("eth0".into())));
        assert!(parse_interface("").is_err());
        assert!(parse_interface("a-name-longer-than-ifnamsiz").is_err());
    }

    #[test]
    fn json_is_seen_before_a_double_dash_only() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(wants_json(args(&["hail", "--json", "x"]).into_iter()));
        assert!(!wants_json(
            args(&["hail", "send", "--", "--json"]).into_iter()
        ));
        assert!(!wants_json(args(&["hail", "--jsonx"]).into_iter()));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
