//! Entry points for the cargo-fuzz targets (feature `fuzzing`; not a stable API).
//!
//! They run the sans-IO decoders that see untrusted bytes exactly as the connection does:
//! the pre-authentication phase of a server (plaintext hello), each handshake message of
//! the three Noise patterns (`NNpsk0` message 1, 2 and key confirmation; `XX` and `XXpsk0`
//! messages 1, 2 and 3 with their identity payloads) and an established sealed stream
//! (records, then frames, then control frames).

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use hail_crypto::Identity;
use hail_wire::ByteOrder;

use crate::CloseReason;
use crate::config::PRE_AUTH_MAX_FRAME_LEN;
use crate::handshake::read_identity;
use crate::identity::{LocalIdentity, PAYLOAD_LEN};
use crate::proto::{self, Control};
use crate::rx::Rx;
use crate::seal::{self, Keys, Pattern, Record};

/// What a fuzz input produced; every error is typed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Frames (or records) that decoded.
    pub frames: u32,
    /// Message frames among them.
    pub messages: u32,
    /// A handshake message that authenticated (should never happen for random input).
    pub authenticated: bool,
}

fn chunks(data: &[u8], chunk: usize) -> impl Iterator<Item = &[u8]> {
    data.chunks(chunk.max(1))
}

fn count(outcome: &mut Outcome, body: Bytes) -> Result<(), CloseReason> {
    outcome.frames += 1;
    match proto::parse(body).map_err(CloseReason::Protocol)? {
        Control::Message(_) => outcome.messages += 1,
        Control::Close(code) => {
            let _ = code.received_reason();
        }
        Control::Heartbeat | Control::Hello { .. } | Control::Welcome { .. } => {}
    }
    Ok(())
}

/// A server's view of the first bytes of a connection: plaintext hello frames, or (with
/// `secure`) `NNpsk0` message 1 records checked against a fixed key. `chunk` cuts the
/// input into reads.
pub fn pre_auth(data: &[u8], secure: bool, chunk: usize) -> Result<Outcome, CloseReason> {
    if secure {
        return handshake(data, 0, 0, chunk);
    }
    let mut rx = pre_auth_rx();
    let mut out = Outcome::default();
    for piece in chunks(data, chunk) {
        rx.raw.extend_from_slice(piece);
        while let Some(frame) = rx.next_frame()? {
            count(&mut out, frame)?;
        }
        check_bounded(&rx, data);
    }
    Ok(out)
}

fn pre_auth_rx() -> Rx {
    let mut rx = Rx::new(ByteOrder::BigEndian, PRE_AUTH_MAX_FRAME_LEN);
    rx.set_max_record(PRE_AUTH_MAX_FRAME_LEN as usize);
    rx
}

fn check_bounded(rx: &Rx, data: &[u8]) {
    assert!(
        rx.buffered() <= 4 * (data.len() + 64 * 1024),
        "receive buffer grew beyond what arrived"
    );
}

/// The handshake pattern for a fuzz selector: `n % 3` is 0 `NNpsk0`, 1 `XX`, 2 `XXpsk0`.
fn pattern_of(n: u8) -> Pattern {
    match n % 3 {
        0 => Pattern::NNpsk0,
        1 => Pattern::Xx,
        _ => Pattern::XXpsk0,
    }
}

/// The two fixed identities of the fuzzed handshakes (initiator, responder), made once.
fn identities() -> &'static (LocalIdentity, LocalIdentity) {
    static IDS: OnceLock<(LocalIdentity, LocalIdentity)> = OnceLock::new();
    IDS.get_or_init(|| {
        let make = |seed: u8| {
            LocalIdentity::new(&Identity::from_secret_bytes(&[seed; 32]))
                .expect("the system's random number generator works")
        };
        (make(1), make(2))
    })
}

const FUZZ_PSK: [u8; 32] = [0x11; 32];

fn keys(pattern: Pattern, local: &LocalIdentity) -> Keys<'_> {
    Keys {
        pattern,
        psk: matches!(pattern, Pattern::NNpsk0 | Pattern::XXpsk0).then_some(&FUZZ_PSK),
        local: pattern.has_identity().then_some(local),
    }
}

/// One handshake message of `pattern` (see [`pattern_of`]) replaced by the first record
/// of `data`, checked exactly as the link checks it (record limit, Noise, the identity
/// payload and its binding). `stage` (`% 3`) picks the message: 0 message 1 at the
/// responder, 1 message 2 at the initiator (after a genuine message 1), 2 message 3 (or,
/// for `NNpsk0`, the key confirmation) at the responder after genuine messages 1 and 2.
/// `Outcome::authenticated` is set when the message was accepted: for stages 1 and 2, and
/// for stage 0 of the patterns with a key, never for random input. `chunk` cuts the input
/// into reads.
pub fn handshake(
    data: &[u8],
    pattern: u8,
    stage: u8,
    chunk: usize,
) -> Result<Outcome, CloseReason> {
    let pattern = pattern_of(pattern);
    let with_identity = pattern.has_identity();
    let (ia, ra) = identities();
    let bad = |_| CloseReason::AuthFailed;
    let mut i = seal::initiator(keys(pattern, ia)).map_err(bad)?;
    let mut r = seal::responder(keys(pattern, ra)).map_err(bad)?;
    let stage = stage % 3;
    let mut wire = BytesMut::new();
    if stage > 0 {
        // Genuine message 1, and for stage 2 message 2 (read by the initiator).
        seal::put_handshake(&mut i, &[], &mut wire).map_err(bad)?;
        let m1 = genuine(&mut wire)?;
        let mut empty = [0u8; PAYLOAD_LEN];
        seal::read_handshake(&mut r, &m1, &mut empty).map_err(bad)?;
        if stage == 2 {
            let ours = if with_identity {
                &ra.payload()[..]
            } else {
                &[][..]
            };
            seal::put_handshake(&mut r, ours, &mut wire).map_err(bad)?;
            let m2 = genuine(&mut wire)?;
            let key =
                read_identity(&mut i, &m2, with_identity).map_err(|()| CloseReason::AuthFailed)?;
            assert_eq!(key.is_some(), with_identity, "a genuine message 2");
        }
    }
    let mut rx = pre_auth_rx();
    let mut out = Outcome::default();
    for piece in chunks(data, chunk) {
        rx.raw.extend_from_slice(piece);
        check_bounded(&rx, data);
        let Some(record) = rx.next_record()? else {
            continue;
        };
        out.frames += 1;
        let Record::Data(m) = record else {
            return Err(CloseReason::AuthFailed);
        };
        out.authenticated = match stage {
            0 => {
                let mut empty = [0u8; PAYLOAD_LEN];
                matches!(seal::read_handshake(&mut r, &m, &mut empty), Ok(0))
            }
            1 => read_identity(&mut i, &m, with_identity).is_ok(),
            _ if with_identity => read_identity(&mut r, &m, true).is_ok_and(|k| k.is_some()),
            _ => {
                let (_, mut opener) = seal::split(r).map_err(bad)?;
                seal::open_confirmation(&mut opener, &m).is_ok()
            }
        };
        // One message per handshake state: a failed one ends the handshake.
        break;
    }
    Ok(out)
}

fn genuine(wire: &mut BytesMut) -> Result<BytesMut, CloseReason> {
    match seal::take_record(wire, PRE_AUTH_MAX_FRAME_LEN as usize) {
        Ok(Some(Record::Data(m))) => Ok(m),
        _ => Err(CloseReason::AuthFailed),
    }
}

/// An established sealed link receiving `data`. With `seal_input`, the input is sealed by
/// the genuine peer first (exercising frames and control frames inside valid records);
/// otherwise it is fed raw (exercising the record layer and authentication).
pub fn established(data: &[u8], seal_input: bool, chunk: usize) -> Result<Outcome, CloseReason> {
    let psk = [0x22; 32];
    let keys = Keys {
        pattern: Pattern::NNpsk0,
        psk: Some(&psk),
        local: None,
    };
    let mut i = seal::initiator(keys).expect("valid pattern");
    let mut r = seal::responder(keys).expect("valid pattern");
    let mut wire = BytesMut::new();
    seal::put_handshake(&mut i, &[], &mut wire).expect("message 1");
    let mut scratch = [0u8; PAYLOAD_LEN];
    let m1 = genuine(&mut wire).expect("message 1 is a data record");
    seal::read_handshake(&mut r, &m1, &mut scratch).expect("same key");
    seal::put_handshake(&mut r, &[], &mut wire).expect("message 2");
    let m2 = genuine(&mut wire).expect("message 2 is a data record");
    seal::read_handshake(&mut i, &m2, &mut scratch).expect("same key");
    let (mut sealer, _) = seal::split(i).expect("handshake done");
    let (_, opener) = seal::split(r).expect("handshake done");

    let mut rx = Rx::new(ByteOrder::BigEndian, 1 << 20);
    rx.set_opener(opener);
    let input = if seal_input {
        let mut sealed = BytesMut::new();
        sealer.seal(data, &mut sealed);
        sealed
    } else {
        BytesMut::from(data)
    };
    let mut out = Outcome::default();
    for piece in chunks(&input, chunk) {
        rx.raw.extend_from_slice(piece);
        while let Some(frame) = rx.next_frame()? {
            count(&mut out, frame)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_hello_and_sealed_messages_decode() {
        let mut hello = BytesMut::new();
        proto::put_control(&mut hello, true, proto::KIND_HELLO, &proto::hello_body());
        let out = pre_auth(&hello, false, 3).unwrap();
        assert_eq!(out.frames, 1);

        let mut frames = BytesMut::new();
        proto::put_control(&mut frames, true, proto::KIND_MESSAGE, b"hi");
        proto::put_control(&mut frames, true, proto::KIND_HEARTBEAT, b"");
        let out = established(&frames, true, 7).unwrap();
        assert_eq!((out.frames, out.messages), (2, 1));
    }

    #[test]
    fn random_handshake_messages_are_refused() {
        for pattern in 0..3 {
            for stage in 0..3 {
                for len in [0usize, 16, 32, 48, 160, 192, 300] {
                    let mut data = vec![(len >> 8) as u8, len as u8];
                    data.extend((0..len).map(|i| (i * 7 + 3) as u8));
                    let out = handshake(&data, pattern, stage, 5);
                    // Without a key anything 32 bytes long is a valid XX message 1.
                    let may = pattern == 1 && stage == 0 && len == 32;
                    if let Ok(out) = out {
                        assert!(
                            may || !out.authenticated,
                            "pattern {pattern} stage {stage} len {len}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(pre_auth(&[0xff; 64], false, 5).is_err());
        assert!(pre_auth(&[0, 48, 1, 2, 3], true, 1).unwrap().frames == 0);
        let noise = [0x42u8; 100];
        assert!(matches!(
            pre_auth(&[&[0u8, 48][..], &noise[..48]].concat(), true, 9),
            Ok(Outcome {
                authenticated: false,
                ..
            })
        ));
        assert!(
            established(
                &[
                    0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
                ],
                false,
                4
            )
            .is_err()
        );
        assert!(established(&[0, 0, 0, 1, 9], true, 2).is_err());
    }
}
