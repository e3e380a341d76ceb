//! hail-link's integration tests: real sockets on 127.0.0.1 and ::1 only, and the
//! in-memory network in paused time (`memory`, `timing`, and one test each in `reconnect` and `shutdown`).
#![allow(clippy::print_stderr, reason = "a skipped test prints why it skipped")]

mod admission;
mod budget;
mod common;
mod fanout;
mod limits;
mod memory;
mod python;
mod reconnect;
mod security;
mod send_bytes;
mod shutdown;
mod timing;
