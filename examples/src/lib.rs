//! Runnable examples of hail. Each example is a file beside this crate's manifest, runs on
//! loopback only, ends by itself in a few seconds, and exits non-zero if what it shows fails:
//!
//! ```text
//! cargo run -p hail-examples --example frames
//! ```
//!
//! | example | what it shows | the job of |
//! |---|---|---|
//! | `frames` | `hail-wire` frames and payload codecs over a TCP socket | Python Comms' wire format |
//! | `comms_server`, `comms_clients` | `hail-link` server with callbacks, `send_to`, `broadcast`; reconnecting clients across a server restart; Python Comms' wire format (`LinkConfig::builder().python_comms()`, little-endian length + JSON) | Python Comms |
//! | `multicast` | `hail-multicast` channel, plaintext and sealed by a passphrase; what outsiders, replays and plaintext injection get | multisock |
//! | `commands` | `hail-rpc` named commands on server and clients, calling each other; a client limit | CLOVIS |
//! | `talks` | `hail-rpc` opcodes, `execute`, `send` + `poll`, typed remote errors, a passphrase on the link | TCPTalks |
//!
//! `comms_server -- --listen ADDR` and `comms_clients -- ADDR` also run against each other
//! from two terminals.

/// The Rust examples of the repository's `README.md`, run here as doctests
/// (`cargo test --doc -p hail-examples`, part of `cargo test --workspace`), so that they
/// compile and run as written. They live in this crate because it is never packaged
/// (`publish = false`): the README sits outside every published crate's tarball, which
/// therefore never names it.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
