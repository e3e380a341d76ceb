//! hail-link's untrusted-input path: a server's pre-authentication phase (plaintext hello
//! frames), every handshake message of the three Noise patterns, and an established
//! sealed link (records, frames, control frames).
//!
//! Input: `[mode, chunk, stream...]`. `mode % 8` picks: 0 plaintext hello phase, 1 `NNpsk0`
//! message 1 phase, 2 raw bytes into an established sealed link, 3 and 7 bytes sealed by
//! the genuine peer into an established link (so frames and control frames get fuzzed
//! inside valid records), 4, 5, 6 the stream's first record as handshake message 1
//! (at the responder), 2 (at the initiator, after a genuine message 1) or 3 (`XX`,
//! `XXpsk0`: with its identity payload; `NNpsk0`: the key confirmation) of the pattern
//! `mode / 8 % 3` (0 `NNpsk0`, 1 `XX`, 2 `XXpsk0`). `chunk` (1..=256) cuts the stream
//! into reads.
//!
//! Beyond "no panic, every error typed": random bytes never authenticate as a Noise
//! handshake message (except an `XX` message 1, which has no key to check), raw (unsealed)
//! bytes never yield a frame on a sealed link, and the receive buffer stays bounded by
//! what arrived (asserted inside `pre_auth` and `handshake`).

#![no_main]

use hail_link::fuzzing::{established, handshake, pre_auth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, chunk], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    match mode % 8 {
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
        stage @ 4..=6 => {
            let (pattern, stage) = (mode / 8, stage - 4);
            if let Ok(out) = handshake(stream, pattern, stage, chunk) {
                // `XX` message 1 (pattern 1, stage 0) carries no key: any 32 bytes pass.
                let keyless = pattern % 3 == 1 && stage == 0;
                assert!(keyless || !out.authenticated, "random bytes authenticated");
            }
        }
        _ => {
            let _ = established(stream, true, chunk);
        }
    }
});
