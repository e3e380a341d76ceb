//! hail-link's untrusted-input path: a server's pre-authentication phase (plaintext hello
//! frames, or Noise message 1 records) and an established sealed link (records, frames,
//! control frames).
//!
//! Input: `[mode, chunk, stream...]`. `mode % 4` picks: 0 plaintext hello phase, 1 Noise
//! message 1 phase, 2 raw bytes into an established sealed link, 3 bytes sealed by the
//! genuine peer into an established link (so frames and control frames get fuzzed inside
//! valid records). `chunk` (1..=256) cuts the stream into reads.
//!
//! Beyond "no panic, every error typed": random bytes never authenticate as a Noise
//! handshake, raw (unsealed) bytes never yield a frame on a sealed link, and the receive
//! buffer stays bounded by what arrived (asserted inside `pre_auth`).

#![no_main]

use hail_link::fuzzing::{established, pre_auth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, chunk], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    match mode % 4 {
        0 => {
            let _ = pre_auth(stream, false, chunk);
        }
        1 => {
            if let Ok(out) = pre_auth(stream, true, chunk) {
                assert!(!out.authenticated, "random bytes authenticated");
            }
        }
        2 => {
            if let Ok(out) = established(stream, false, chunk) {
                assert_eq!(out.frames, 0, "unsealed bytes produced a frame");
            }
        }
        _ => {
            let _ = established(stream, true, chunk);
        }
    }
});
