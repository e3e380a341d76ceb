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
        let make = |seed: u8| LocalIdentity::new(&Identity::from_secret_bytes(&[seed; 32]));
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
/// payload against the proven static key). `stage` (`% 3`) picks the message: 0 message 1 at the
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

/// The two ends of a fresh `NNpsk0` link: the peer's sealer and this side's opener.
fn sealed_ends() -> (seal::Sealer, seal::Opener) {
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
    let (sealer, _) = seal::split(i).expect("handshake done");
    let (_, opener) = seal::split(r).expect("handshake done");
    (sealer, opener)
}

/// What an [`Rx`] cut from `input` fed in reads of `chunk`, in order (a message's payload
/// as `(true, payload)`, any other frame whole as `(false, frame)`), and how it ended.
/// With `room`, cut as the connection's reader cuts (`Rx::next_run`, runs of at most
/// `room` messages); without, frame by frame (`Rx::next_frame`).
type Cuts = (Vec<(bool, Bytes)>, Result<(), CloseReason>);

fn cut_all(rx: &mut Rx, input: &[u8], chunk: usize, room: Option<usize>) -> Cuts {
    let mut got = Vec::new();
    let mut run = std::collections::VecDeque::new();
    let frame = |f: Bytes, got: &mut Vec<(bool, Bytes)>| match f.first() {
        Some(&proto::KIND_MESSAGE) => got.push((true, f.slice(1..))),
        _ => got.push((false, f)),
    };
    for piece in chunks(input, chunk) {
        rx.raw.extend_from_slice(piece);
        loop {
            let next = match room {
                Some(room) => rx.next_run(true, room, &mut run).map(|n| match n {
                    Some(crate::rx::Next::Run) => {
                        assert!(
                            !run.is_empty() && run.len() <= room,
                            "a run within its room"
                        );
                        let first = run[0].first().copied();
                        assert!(
                            run.iter().all(|p| p.first().copied() == first),
                            "a run holds payloads of one first byte"
                        );
                        got.extend(run.drain(..).map(|p| (true, p)));
                        true
                    }
                    Some(crate::rx::Next::Frame(f)) => {
                        frame(f, &mut got);
                        true
                    }
                    None => false,
                }),
                None => rx
                    .next_frame()
                    .map(|f| f.map(|f| frame(f, &mut got)).is_some()),
            };
            match next {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return (got, Err(e)),
            }
        }
    }
    (got, Ok(()))
}

/// An established sealed link receiving `data`. With `seal_input`, the input is sealed by
/// the genuine peer first (exercising frames and control frames inside valid records);
/// otherwise it is fed raw (exercising the record layer and authentication). Cut as the
/// connection's reader cuts it (runs of messages, `room` from `chunk`), and checked
/// against the same input cut frame by frame: the same frames, in the same order, and the
/// same end (a difference panics: a fuzz finding).
pub fn established(data: &[u8], seal_input: bool, chunk: usize) -> Result<Outcome, CloseReason> {
    let cut = |room| {
        let (mut sealer, opener) = sealed_ends();
        let mut rx = Rx::new(ByteOrder::BigEndian, 1 << 20);
        rx.set_opener(opener);
        let input = if seal_input {
            let mut sealed = BytesMut::new();
            sealer.seal(data, &mut sealed);
            sealed
        } else {
            BytesMut::from(data)
        };
        cut_all(&mut rx, &input, chunk, room)
    };
    let room = 1 + chunk % 256;
    let (runs, end) = cut(Some(room));
    let (frames, frames_end) = cut(None);
    assert!(runs == frames, "runs cut other frames than one by one");
    assert_eq!(
        format!("{end:?}"),
        format!("{frames_end:?}"),
        "runs end otherwise than one by one"
    );
    let mut out = Outcome::default();
    for (message, f) in runs {
        if message {
            out.frames += 1;
            out.messages += 1;
        } else {
            count(&mut out, f)?;
        }
    }
    end.map(|()| out)
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

    /// Streams of frames as a hostile peer might send them, sealed and raw, cut in reads
    /// and runs of every size: the connection's runs give the same frames as frame by
    /// frame, and the same end (the checks are `established`'s own).
    #[test]
    fn runs_and_frames_agree_on_hostile_streams() {
        let mut next = crate::test_rng(0x5eed_1234);
        let (mut ok, mut refused) = (0, 0);
        for case in 0..300 {
            let mut data = BytesMut::new();
            for _ in 0..next() % 40 {
                let len = [
                    0usize, 1, 2, 100, 511, 512, 513, 2000, 16_383, 16_384, 70_000,
                ][next() % 11];
                let mut body: Vec<u8> = (0..len).map(|_| next() as u8 % 4).collect();
                match next() % 10 {
                    // Messages of one kind or another (their first byte).
                    0..=6 => body.insert(0, proto::KIND_MESSAGE),
                    7 => body = vec![proto::KIND_HEARTBEAT],
                    // Any kind byte, or a header announcing more than the limit.
                    8 => body.insert(0, next() as u8),
                    _ => {
                        data.extend_from_slice(&(2u32 << 20).to_be_bytes());
                        continue;
                    }
                }
                data.extend_from_slice(&(body.len() as u32).to_be_bytes());
                data.extend_from_slice(&body);
            }
            if case % 7 == 0 {
                // A cut short.
                let keep = next() % (data.len() + 1);
                data.truncate(keep);
            }
            let chunk = [1usize, 5, 64, 1000, 4096, 65_536][case % 6];
            match established(&data, true, chunk + next() % 3) {
                Ok(_) => ok += 1,
                Err(_) => refused += 1,
            }
            // Unsealed, the same bytes never pass the record layer's authentication.
            let raw = established(&data, false, chunk);
            assert!(
                raw.is_err() || raw.is_ok_and(|o| o.frames == 0),
                "case {case}"
            );
        }
        assert!(
            ok > 20 && refused > 20,
            "both kinds of stream: {ok} ok, {refused} refused"
        );
    }

    #[test]
    fn random_handshake_messages_are_refused() {
        for pattern in 0..3 {
            for stage in 0..3 {
                for len in [0usize, 16, 32, 48, 96, 128, 160, 192, 300] {
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
