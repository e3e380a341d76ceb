//! `hail_crypto::Opener` on arbitrary datagrams, and on mutations of valid ones.
//!
//! Input: `[mode, rest...]`.
//! - `mode` even: `rest` is one datagram, opened as is. A refusal must be `Malformed` or
//!   `WrongGroupOrKey` and admit no session; if it opens (libFuzzer's comparison tracing can
//!   learn the tag of the fixed test key), it admits one session and is a replay the second
//!   time.
//! - `mode` odd: `rest` is `[n_flips, flips (2 bytes each)..., payload...]`. A valid datagram
//!   of `payload` is sealed and opened once (it must open, to the same payload), then again
//!   (it must be `Replayed`); then a copy with the given bit flips applied (positions taken
//!   modulo the datagram's bit length; flips that cancel leave it unchanged) is opened: a
//!   changed datagram is refused, an unchanged one is `Replayed`. Finally the next datagram
//!   of the session still opens: refusals changed no state.

#![no_main]

use hail_crypto::{GroupKey, OVERHEAD, OpenError, Opener, Sealer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = GroupKey::from_bytes([0x5c; 32]);
    let mut opener = Opener::new(&key);
    if mode % 2 == 0 {
        let mut datagram = rest.to_vec();
        match opener.open(&mut datagram) {
            // libFuzzer's comparison tracing sees the expected tag, so it can build a valid
            // datagram for the fixed test key. Then the state must be right: one session,
            // and the same datagram again is a replay.
            Ok(_) => {
                assert_eq!(opener.sessions(), 1);
                assert_eq!(
                    opener.open(&mut rest.to_vec()).unwrap_err(),
                    OpenError::Replayed
                );
            }
            Err(OpenError::Malformed(_) | OpenError::WrongGroupOrKey) => {
                assert_eq!(
                    opener.sessions(),
                    0,
                    "a refused datagram admitted a session"
                );
            }
            Err(e) => panic!(
                "refusal before any session exists must be malformed or wrong key, got {e:?}"
            ),
        }
        return;
    }
    let Some((&n_flips, rest)) = rest.split_first() else {
        return;
    };
    let n_flips = usize::from(n_flips % 8);
    if rest.len() < 2 * n_flips {
        return;
    }
    let (flips, payload) = rest.split_at(2 * n_flips);
    let mut sealer = Sealer::new(&key).expect("system RNG");
    let mut datagram = vec![0u8; payload.len() + OVERHEAD];
    let n = sealer
        .seal_into(payload, &mut datagram)
        .expect("buffer is large enough");
    assert_eq!(n, datagram.len());

    let mut first = datagram.clone();
    let opened = opener
        .open(&mut first)
        .expect("a fresh valid datagram opens");
    assert_eq!(&*opened.payload, payload);
    assert_eq!(
        opener.open(&mut datagram.clone()).unwrap_err(),
        OpenError::Replayed
    );

    let bits = datagram.len() * 8;
    let mut mutated = datagram.clone();
    for f in flips.chunks_exact(2) {
        let bit = usize::from(u16::from_le_bytes([f[0], f[1]])) % bits;
        mutated[bit / 8] ^= 1 << (bit % 8);
    }
    let changed = mutated != datagram;
    match opener.open(&mut mutated) {
        Ok(_) => panic!("a replay or a forgery opened (changed: {changed})"),
        Err(OpenError::Replayed) => {
            // Unchanged, or changed only in the body/tag of counter 0, which the replay
            // window refuses before the tag is checked.
        }
        Err(OpenError::Malformed(_) | OpenError::WrongGroupOrKey) => assert!(changed),
        Err(e) => panic!("unexpected refusal {e:?}"),
    }

    let mut next = vec![0u8; payload.len() + OVERHEAD];
    sealer.seal_into(payload, &mut next).expect("seal");
    assert_eq!(
        &*opener
            .open(&mut next)
            .expect("state unchanged by refusals")
            .payload,
        payload
    );
    assert_eq!(opener.sessions(), 1);
});
