//! The two halves of the Python Comms examples, shared by `comms_server` and `comms_clients`
//! so that each example runs alone (it starts the other half in-process) and the two also
//! run against each other from two terminals.
//!
//! Messages are JSON objects (`serde_json::Value`), as Python Comms users sent dicts:
//! `{"type": "hello", "name": ..}`, `{"type": "chat", "from": .., "text": ..}` from clients;
//! `{"type": "welcome", ..}`, `{"type": "news", "text": ..}`, `{"type": "bye"}` from the server.

use std::fmt::Display;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub(crate) mod client;
pub(crate) mod server;

/// How many clients a run has.
pub(crate) const CLIENTS: usize = 2;

/// The clients' names.
pub(crate) const NAMES: [&str; CLIENTS] = ["alice", "bob"];

/// How long the first wait for clients lasts when they come from another terminal.
pub(crate) const WAIT_FOR_OTHER_TERMINAL: Duration = Duration::from_secs(60);

static START: OnceLock<Instant> = OnceLock::new();

/// Prints one line: time since the first line, who speaks, what happened.
pub(crate) fn log(who: &str, what: impl Display) {
    let t = START.get_or_init(Instant::now).elapsed();
    println!("{:>8.1} ms  {who:<7} {what}", t.as_secs_f64() * 1e3);
}

/// Milliseconds, for messages.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
