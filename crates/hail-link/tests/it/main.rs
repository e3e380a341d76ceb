//! hail-link's real-socket tests, on 127.0.0.1 and ::1 only.

mod common;
mod fanout;
mod limits;
mod python;
mod reconnect;
mod security;
mod shutdown;
