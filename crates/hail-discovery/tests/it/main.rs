//! Integration tests of hail-discovery: real sockets (multicast on the loopback interface
//! or inside network namespaces the tests create, links on 127.0.0.1 or inside those
//! namespaces), and whole devices on the in-memory network in paused time (`memory`,
//! `attack`, `passphrase`). Counters are waited on through `wait`, events directly.

mod attack;
mod delivery;
mod device;
mod dual;
mod fair;
mod format;
mod graceful_stop;
#[cfg(target_os = "linux")]
mod host;
mod interfaces;
mod lan;
mod memory;
#[cfg(target_os = "linux")]
mod netns;
#[cfg(target_os = "linux")]
mod netns_dual;
#[cfg(target_os = "linux")]
mod netns_fallback;
#[cfg(target_os = "linux")]
mod netns_runtime;
#[cfg(target_os = "linux")]
mod netns_v6;
mod passphrase;
mod wait;
