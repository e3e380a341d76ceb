//! The sans-IO RPC session (`hail_rpc::proto::Session`) driven by arbitrary bytes, through
//! `hail_rpc::fuzzing::session` (feature `fuzzing`).
//!
//! Input: records `[op, len, bytes...]`, each one step of a connection with small limits:
//! a packet from the peer, a call or notification of ours, a handler ending, time passing,
//! the link dropping and coming back, a caller giving up (see the module docs of
//! `hail_rpc::fuzzing`).
//!
//! Checked there (a violation panics): everything the session sends decodes, and only
//! while a link is up; no waiter is woken twice; stale handler reports change nothing;
//! after a handled timeout the next one lies ahead; and whatever arrives, the tables stay
//! within their limits, so memory is bounded.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hail_rpc::fuzzing::session(data);
});
