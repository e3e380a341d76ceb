//! hail's test support (not published): network namespaces for the tests that need a network
//! of their own, shared by hail-multicast's and hail-discovery's namespace tests and by
//! `cargo xtask netsim`.
//!
//! - [`Namespaces`]: a guard over the namespaces a test made; dropping it kills what still runs
//!   in them and deletes them, on success, failure or panic. Creating one probes first: not
//!   root, no `ip`, `ip netns add` refused (or, with [`Namespaces::require_nft`], no working
//!   `nft` inside a namespace) is [`Error::Unavailable`], which [`OrSkip::or_skip`] turns into
//!   a printed `SKIPPED: <reason>` and `None`.
//! - [`veth`]: a veth pair between two namespaces; [`link_local_pair`]: two namespaces on a
//!   veth pair with IPv6 link-local addresses only; [`Lan`]: hosts on a bridge that lives in a
//!   namespace of its own (nothing touches the host's interfaces), each host's `eth0` with the
//!   addresses of its [`Family`]: IPv4 (an address of one /24 and the multicast route), IPv6
//!   (link-local, optionally a ULA, no duplicate address detection) or both.
//! - [`nft`] runs an nftables script inside a namespace; [`impairment`] and [`impairment_of`]
//!   write the script that drops and duplicates a share of a host's packets, IPv4 and IPv6.
//! - [`in_netns`] runs a closure on a thread that has entered a namespace.
//!
//! ```no_run
//! use hail_testsupport::{Lan, Namespaces, OrSkip, impairment, nft};
//!
//! let Some(lan) = Namespaces::for_test("example")
//!     .and_then(Namespaces::require_nft)
//!     .and_then(|ns| Lan::create(ns, [10, 80, 0], 2))
//!     .or_skip()
//! else {
//!     return; // printed: SKIPPED: <why>
//! };
//! nft(lan.host(1), &impairment(10, 0, None)).expect("10% loss at host 1");
//! let handle = hail_testsupport::in_netns(lan.host(0), || {
//!     // sockets made here live in host 0's namespace, on 10.80.0.1
//! });
//! handle.join().unwrap();
//! ```
//!
//! Network safety: everything here stays inside the namespaces it made; the bridge is in a
//! namespace too, so no packet reaches an interface of the machine.

mod netns;
mod nft;

#[cfg(target_os = "linux")]
pub use netns::in_netns;
pub use netns::{
    Family, Lan, Namespaces, host_ip, host_link_local, host_ula, link_local_pair, list, remove,
    remove_all, veth,
};
pub use nft::{impairment, impairment_of, nft};

use std::process::Command;

/// Why a namespace helper failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Namespaces cannot be made here (not root, no `ip`, `ip netns add` refused, no working
    /// `nft`): the caller should skip, saying why.
    #[error("{0}")]
    Unavailable(String),
    /// A command failed after the probe passed: a real failure, with the command and its
    /// stderr.
    #[error("{0}")]
    Command(String),
}

/// Skips on [`Error::Unavailable`]: prints `SKIPPED: <reason>` and gives `None`; panics on
/// any other error (a setup that should have worked did not).
pub trait OrSkip<T> {
    /// The value, or `None` after printing why the test is skipped.
    fn or_skip(self) -> Option<T>;
}

impl<T> OrSkip<T> for Result<T, Error> {
    fn or_skip(self) -> Option<T> {
        match self {
            Ok(v) => Some(v),
            Err(Error::Unavailable(reason)) => {
                skip(&reason);
                None
            }
            Err(e @ Error::Command(_)) => panic!("namespace setup failed: {e}"),
        }
    }
}

/// Prints `SKIPPED: <reason>` on the test output.
#[allow(
    clippy::print_stderr,
    reason = "a skipped test says why on the test output"
)]
pub fn skip(reason: &str) {
    eprintln!("SKIPPED: {reason}");
}

/// Prints a measured figure on the test output (visible with `--nocapture`).
#[allow(
    clippy::print_stderr,
    reason = "the measured figure goes to the test output"
)]
pub fn report(line: &str) {
    eprintln!("{line}");
}

/// Runs `program args...`; its stdout, or an [`Error::Command`] naming the command and
/// quoting its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Command(format!("{program}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs `ip args...` (see [`run`]).
pub fn ip(args: &[&str]) -> Result<(), Error> {
    run("ip", args).map(drop)
}

/// Whether `program args...` runs and exits 0 (output discarded).
pub fn runs(program: &str, args: &[&str]) -> bool {
    run(program, args).is_ok()
}
