//! `hail_rpc::Packet::decode` on arbitrary bytes.
//!
//! Checked: decoding never panics, and every packet that decodes encodes to bytes that
//! decode to the same packet. The session that takes these packets has its own target,
//! `rpc_session`.

#![no_main]

use hail_rpc::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        assert_eq!(
            Packet::decode(&p.to_bytes()).expect("re-encoded packet decodes"),
            p
        );
    }
});
