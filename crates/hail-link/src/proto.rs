//! hail framing: the kind byte in front of each frame body, and the control frames (sans-IO).
//!
//! With [`Framing::Hail`](crate::Framing::Hail) every frame body starts with one kind byte:
//!
//! ```text
//! +--------------------+----------------+--------------------------------------------+
//! | u32 length N (hdr) | kind (1 byte)  | rest: N - 1 bytes                          |
//! +--------------------+----------------+--------------------------------------------+
//!   kind 0x00 MESSAGE    rest = the payload (Binary, Text, Json, Postcard, ...)
//!   kind 0x01 HEARTBEAT  rest = empty
//!   kind 0x02 CLOSE      rest = [reason code u8]   0 normal, 1 shutdown, 2 server full,
//!                                                   3 slow consumer, 4 protocol error,
//!                                                   5 timeout, 6 unsupported version
//!   kind 0x03 HELLO      rest = "HAIL" [version u8 = 1]    (client -> server, plaintext)
//!   kind 0x04 WELCOME    rest = [version u8 = 1]           (server -> client)
//! ```
//!
//! With [`Framing::Raw`](crate::Framing::Raw) the body is the payload and nothing else.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::CloseReason;
use crate::error::{ProtocolError, RefuseReason};

/// Kind byte of a message frame.
pub(crate) const KIND_MESSAGE: u8 = 0x00;
/// Kind byte of a heartbeat frame.
pub(crate) const KIND_HEARTBEAT: u8 = 0x01;
/// Kind byte of a close frame.
pub(crate) const KIND_CLOSE: u8 = 0x02;
/// Kind byte of a hello frame.
pub(crate) const KIND_HELLO: u8 = 0x03;
/// Kind byte of a welcome frame.
pub(crate) const KIND_WELCOME: u8 = 0x04;

/// Magic in the hello frame.
pub(crate) const HELLO_MAGIC: &[u8; 4] = b"HAIL";
/// The link protocol version this crate speaks.
pub(crate) const VERSION: u8 = 1;

/// A close frame's reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCode {
    Normal,
    Shutdown,
    ServerFull,
    SlowConsumer,
    Protocol,
    Timeout,
    Version,
    /// A code this version does not know (kept so a newer peer's reason is not an error).
    Other(u8),
}

impl CloseCode {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Self::Normal => 0,
            Self::Shutdown => 1,
            Self::ServerFull => 2,
            Self::SlowConsumer => 3,
            Self::Protocol => 4,
            Self::Timeout => 5,
            Self::Version => 6,
            Self::Other(c) => c,
        }
    }

    pub(crate) fn from_u8(c: u8) -> Self {
        match c {
            0 => Self::Normal,
            1 => Self::Shutdown,
            2 => Self::ServerFull,
            3 => Self::SlowConsumer,
            4 => Self::Protocol,
            5 => Self::Timeout,
            6 => Self::Version,
            c => Self::Other(c),
        }
    }

    /// What the receiver of this code reports as the close reason.
    pub(crate) fn received_reason(self) -> CloseReason {
        match self {
            Self::Shutdown => CloseReason::Shutdown,
            Self::ServerFull => CloseReason::Refused(RefuseReason::ServerFull),
            Self::Version => CloseReason::Refused(RefuseReason::Version),
            Self::SlowConsumer => CloseReason::SlowConsumer,
            Self::Normal | Self::Protocol | Self::Timeout | Self::Other(_) => {
                CloseReason::PeerClosed
            }
        }
    }

    /// The code we send for a local close reason.
    pub(crate) fn for_reason(reason: &CloseReason) -> Self {
        match reason {
            CloseReason::Shutdown => Self::Shutdown,
            CloseReason::Refused(RefuseReason::ServerFull) => Self::ServerFull,
            CloseReason::Refused(RefuseReason::ShuttingDown) => Self::Shutdown,
            CloseReason::Refused(RefuseReason::Version) => Self::Version,
            CloseReason::SlowConsumer => Self::SlowConsumer,
            CloseReason::Protocol(_) => Self::Protocol,
            CloseReason::Timeout => Self::Timeout,
            _ => Self::Normal,
        }
    }
}

/// A decoded hail frame body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// A user message; the payload without the kind byte.
    Message(Bytes),
    Heartbeat,
    Close(CloseCode),
    Hello {
        version: u8,
    },
    Welcome {
        version: u8,
    },
}

/// Splits a hail frame body into its kind and content. Never panics on any input.
pub(crate) fn parse(mut body: Bytes) -> Result<Control, ProtocolError> {
    let Some(&kind) = body.first() else {
        return Err(ProtocolError::BadControl("empty"));
    };
    body.advance(1);
    match kind {
        KIND_MESSAGE => Ok(Control::Message(body)),
        KIND_HEARTBEAT if body.is_empty() => Ok(Control::Heartbeat),
        KIND_HEARTBEAT => Err(ProtocolError::BadControl("heartbeat")),
        KIND_CLOSE => match body[..] {
            [code] => Ok(Control::Close(CloseCode::from_u8(code))),
            _ => Err(ProtocolError::BadControl("close")),
        },
        KIND_HELLO => match body[..] {
            [b'H', b'A', b'I', b'L', version] => Ok(Control::Hello { version }),
            _ => Err(ProtocolError::NotHail),
        },
        KIND_WELCOME => match body[..] {
            [version] => Ok(Control::Welcome { version }),
            _ => Err(ProtocolError::BadControl("welcome")),
        },
        other => Err(ProtocolError::UnknownKind(other)),
    }
}

/// Appends a whole control frame (header included) to `dst`.
pub(crate) fn put_control(dst: &mut BytesMut, big_endian: bool, kind: u8, rest: &[u8]) {
    let len = 1 + rest.len() as u32;
    if big_endian {
        dst.put_u32(len);
    } else {
        dst.put_u32_le(len);
    }
    dst.put_u8(kind);
    dst.put_slice(rest);
}

pub(crate) fn hello_body() -> [u8; 5] {
    let mut b = [0; 5];
    b[..4].copy_from_slice(HELLO_MAGIC);
    b[4] = VERSION;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_every_kind() {
        let m = parse(Bytes::copy_from_slice(&b"\x00hi"[..])).unwrap();
        assert_eq!(m, Control::Message(Bytes::from_static(b"hi")));
        assert_eq!(
            parse(Bytes::copy_from_slice(&b"\x01"[..])).unwrap(),
            Control::Heartbeat
        );
        assert_eq!(
            parse(Bytes::copy_from_slice(&b"\x02\x01"[..])).unwrap(),
            Control::Close(CloseCode::Shutdown)
        );
        assert_eq!(
            parse(Bytes::copy_from_slice(&b"\x03HAIL\x01"[..])).unwrap(),
            Control::Hello { version: 1 }
        );
        assert_eq!(
            parse(Bytes::copy_from_slice(&b"\x04\x01"[..])).unwrap(),
            Control::Welcome { version: 1 }
        );
    }

    #[test]
    fn malformed_control_frames_are_typed_errors() {
        for bad in [
            &b""[..],
            b"\x01x",
            b"\x02",
            b"\x02\x01\x02",
            b"\x03HAIL",
            b"\x03JSON\x01",
            b"\x04",
            b"\x09",
        ] {
            assert!(parse(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse(Bytes::copy_from_slice(&b"\x7f"[..])),
            Err(ProtocolError::UnknownKind(0x7f))
        ));
    }

    #[test]
    fn close_codes_round_trip() {
        for c in 0..=255u8 {
            assert_eq!(CloseCode::from_u8(c).to_u8(), c);
        }
        assert!(matches!(
            CloseCode::ServerFull.received_reason(),
            CloseReason::Refused(RefuseReason::ServerFull)
        ));
    }

    #[test]
    fn control_frame_layout() {
        let mut b = BytesMut::new();
        put_control(&mut b, true, KIND_CLOSE, &[1]);
        assert_eq!(&b[..], &[0, 0, 0, 2, 2, 1]);
        b.clear();
        put_control(&mut b, false, KIND_HELLO, &hello_body());
        assert_eq!(&b[..], b"\x06\x00\x00\x00\x03HAIL\x01");
    }
}
