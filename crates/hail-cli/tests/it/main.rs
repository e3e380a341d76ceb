//! Runs the real `hail` binary as a process, on loopback only (`--interface 127.0.0.1`,
//! multicast TTL 1). Every process a test starts is killed on drop, every wait has a
//! timeout.
#![allow(
    clippy::print_stderr,
    reason = "a test that cannot run here says why on stderr"
)]

mod answer;
mod cli;
mod comms;
mod demo;
mod devices;
mod hostile;
mod proc;
mod slow_stdout;
