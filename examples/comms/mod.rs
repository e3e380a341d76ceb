//! The two halves of the Python Comms examples, shared by `comms_server` and `comms_clients`
//! so that each example runs alone (it starts the other half in-process) and the two also
//! run against each other from two terminals, or against a Python Comms peer.
//!
//! Both speak Python Comms (`ReliableCommunication`) on the wire: a u32 little-endian length
//! and `json.dumps(obj).encode()` ([`link_config`], [`payload`]). Messages are JSON objects
//! (`serde_json::Value`), as Python Comms users sent dicts: `{"type": "hello", "name": ..}`,
//! `{"type": "chat", "from": .., "text": ..}` from clients; `{"type": "welcome", ..}`,
//! `{"type": "news", "text": ..}`, `{"type": "bye"}` from the server.

use std::fmt::Display;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hail_link::{CloseReason, LinkConfig, ProtocolError};
use hail_wire::{Json, WireError};
use serde_json::Value;

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

/// Largest frame either side sends or accepts: 16 KiB. Python Comms' `recv` is not looped,
/// so bigger frames (split over several reads) can break a Python peer; hail refuses to send
/// them rather than desync it.
pub(crate) const MAX_FRAME_LEN: u32 = 16 * 1024;

/// Python Comms' wire format: bare frames with a little-endian u32 length, no handshake,
/// heartbeat or encryption.
pub(crate) fn link_config() -> LinkConfig {
    LinkConfig::builder()
        .python_comms()
        .max_frame_len(MAX_FRAME_LEN)
        .build()
        .expect("Python Comms settings with a non-zero frame limit are valid")
}

/// JSON written as Python's `json.dumps` writes it (`", "` and `": "` separators).
pub(crate) fn payload() -> Json<Value> {
    Json::python_style()
}

/// Why a connection closed, with the likely cause when the peer does not speak Python
/// Comms: hail's own framing starts with a big-endian length, which read little-endian
/// announces a frame far over the limit.
pub(crate) fn close_reason(reason: &CloseReason) -> String {
    if let CloseReason::Protocol(ProtocolError::Framing(e)) = reason
        && matches!(**e, WireError::TooLarge { .. })
    {
        return format!(
            "{reason}; this example speaks Python Comms (little-endian length + JSON), and a \
             peer speaking hail's own framing (LinkConfig::default()) gets nothing from it"
        );
    }
    reason.to_string()
}
