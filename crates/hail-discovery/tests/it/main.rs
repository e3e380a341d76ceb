//! Real-socket tests of hail-discovery: multicast on the loopback interface or inside
//! network namespaces the tests create, links on 127.0.0.1 or inside those namespaces.

mod delivery;
mod device;
mod format;
mod graceful_stop;
mod interfaces;
#[cfg(target_os = "linux")]
mod netns;
#[cfg(target_os = "linux")]
mod netns_v6;
mod passphrase;
