//! Entry points for the cargo-fuzz targets (feature `fuzzing`; not a stable API).
//!
//! They run the sans-IO decoders that see untrusted bytes exactly as the connection does:
//! the pre-authentication phase of a server (plaintext hello or Noise message 1) and an
//! established sealed stream (records, then frames, then control frames).

use bytes::BytesMut;
use hail_wire::ByteOrder;

use crate::CloseReason;
use crate::config::PRE_AUTH_MAX_FRAME_LEN;
use crate::proto::{self, Control};
use crate::rx::Rx;
use crate::seal::{self, Record};

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

fn count(outcome: &mut Outcome, body: BytesMut) -> Result<(), CloseReason> {
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
/// `secure`) Noise message 1 records checked against a fixed key. `chunk` cuts the input
/// into reads.
pub fn pre_auth(data: &[u8], secure: bool, chunk: usize) -> Result<Outcome, CloseReason> {
    let mut rx = Rx::new(ByteOrder::BigEndian, PRE_AUTH_MAX_FRAME_LEN);
    rx.set_max_record(PRE_AUTH_MAX_FRAME_LEN as usize);
    let mut out = Outcome::default();
    for piece in chunks(data, chunk) {
        rx.raw.extend_from_slice(piece);
        if secure {
            while let Some(record) = rx.next_record()? {
                out.frames += 1;
                match record {
                    Record::Alert(_) => return Err(CloseReason::AuthFailed),
                    Record::Data(m) => {
                        let mut hs =
                            seal::responder(&[0x11; 32]).map_err(|_| CloseReason::AuthFailed)?;
                        let mut scratch = [0u8; 64];
                        if hs.read_message(&m, &mut scratch).is_ok() {
                            out.authenticated = true;
                        }
                    }
                }
            }
        } else {
            while let Some(frame) = rx.next_frame()? {
                count(&mut out, frame)?;
            }
        }
        assert!(
            rx.buffered() <= 4 * (data.len() + 64 * 1024),
            "receive buffer grew beyond what arrived"
        );
    }
    Ok(out)
}

/// An established sealed link receiving `data`. With `seal_input`, the input is sealed by
/// the genuine peer first (exercising frames and control frames inside valid records);
/// otherwise it is fed raw (exercising the record layer and authentication).
pub fn established(data: &[u8], seal_input: bool, chunk: usize) -> Result<Outcome, CloseReason> {
    let psk = [0x22; 32];
    let mut i = seal::initiator(&psk).expect("valid pattern");
    let mut r = seal::responder(&psk).expect("valid pattern");
    let mut wire = BytesMut::new();
    seal::put_handshake(&mut i, &mut wire).expect("message 1");
    let mut scratch = [0u8; 64];
    let Some(Record::Data(m1)) = seal::take_record(&mut wire, 4096).expect("record") else {
        unreachable!("message 1 is a data record")
    };
    r.read_message(&m1, &mut scratch).expect("same key");
    seal::put_handshake(&mut r, &mut wire).expect("message 2");
    let Some(Record::Data(m2)) = seal::take_record(&mut wire, 4096).expect("record") else {
        unreachable!("message 2 is a data record")
    };
    i.read_message(&m2, &mut scratch).expect("same key");
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
