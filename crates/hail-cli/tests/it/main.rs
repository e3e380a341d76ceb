//! Runs the real `hail` binary as a process, on loopback only (`--interface 127.0.0.1`,
//! multicast TTL 1). Every process a test starts is killed on drop, every wait has a
//! timeout.

mod cli;
mod demo;
mod devices;
mod proc;
