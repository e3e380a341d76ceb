//! hail-link's real-socket tests, on 127.0.0.1 and ::1 only.
#![allow(clippy::print_stderr, reason = "a skipped test prints why it skipped")]

mod common;
mod fanout;
mod limits;
mod python;
mod reconnect;
mod security;
mod shutdown;
