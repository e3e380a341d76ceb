//! Length-prefixed frames: a u32 header, then that many body bytes.
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +---------------------------------------------------------------+
//! |              body length N (u32, big-endian default)          |
//! +---------------------------------------------------------------+
//! |                      body: N bytes ...                        |
//! +---------------------------------------------------------------+
//! ```
//!
//! * The length counts the body only, not the header. `N = 0` is a valid, empty frame.
//! * Byte order is big-endian by default; little-endian is byte-compatible with Python Comms
//!   (`ReliableCommunication`), whose header is `struct.pack("<I", len)`.
//! * A header announcing more than the maximum frame length ([`DEFAULT_MAX_FRAME_LEN`],
//!   16 MiB, unless configured) fails with [`WireError::TooLarge`] and leaves the decoder
//!   broken: every later call fails with [`WireError::Broken`]. There is no attempt to find
//!   the next frame, because in a stream without markers any "resync" is a guess.
//! * The decoder never reserves memory for bytes that have not arrived: while a body is
//!   incomplete it asks for at most [`READ_AHEAD`] (64 KiB) more than it holds. A peer that
//!   announces 16 MiB and then goes silent costs what it sent, not 16 MiB.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::WireError;

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 4;

/// Default maximum body length: 16 MiB.
///
/// Large enough for a camera still or a sensor batch in one message, small enough that a
/// server holding a partly received maximum frame from each of a few hundred clients still
/// fits in a small device's memory (and the decoder only ever holds what actually arrived).
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// How much the decoder reserves beyond what it holds while a body is incomplete: 64 KiB.
pub const READ_AHEAD: usize = 64 * 1024;

/// Byte order of the u32 length header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    /// Most significant byte first (network order). The default.
    #[default]
    BigEndian,
    /// Least significant byte first (Python Comms' format).
    LittleEndian,
}

impl ByteOrder {
    fn write(self, len: u32) -> [u8; HEADER_LEN] {
        match self {
            Self::BigEndian => len.to_be_bytes(),
            Self::LittleEndian => len.to_le_bytes(),
        }
    }

    fn read(self, header: [u8; HEADER_LEN]) -> u32 {
        match self {
            Self::BigEndian => u32::from_be_bytes(header),
            Self::LittleEndian => u32::from_le_bytes(header),
        }
    }
}

/// Builder for a [`FrameCodec`]; every setting has a default.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodecBuilder {
    order: ByteOrder,
    max_frame_len: Option<u32>,
}

impl FrameCodecBuilder {
    /// Sets the header byte order. Default: [`ByteOrder::BigEndian`].
    pub fn byte_order(mut self, order: ByteOrder) -> Self {
        self.order = order;
        self
    }

    /// Big-endian header (the default).
    pub fn big_endian(self) -> Self {
        self.byte_order(ByteOrder::BigEndian)
    }

    /// Little-endian header, as Python Comms writes it.
    pub fn little_endian(self) -> Self {
        self.byte_order(ByteOrder::LittleEndian)
    }

    /// Sets the maximum body length in bytes. Default: [`DEFAULT_MAX_FRAME_LEN`] (16 MiB).
    ///
    /// The header is a u32, so no frame can be longer than `u32::MAX` anyway.
    pub fn max_frame_len(mut self, max: u32) -> Self {
        self.max_frame_len = Some(max);
        self
    }

    /// Builds the codec.
    pub fn build(self) -> FrameCodec {
        FrameCodec {
            order: self.order,
            max: self.max_frame_len.unwrap_or(DEFAULT_MAX_FRAME_LEN) as usize,
            state: DecodeState::Head,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for a header.
    Head,
    /// Header read; waiting for this many body bytes.
    Body(usize),
    /// A framing error happened; the stream can no longer be trusted.
    Broken,
}

/// Length-prefixed framing as a tokio-util [`Encoder`] and [`Decoder`].
///
/// Decodes to whole frame bodies as [`BytesMut`]; encodes `Bytes`, `&[u8]` and `BytesMut`
/// bodies, and payloads written in place with [`FrameCodec::encode_with`].
/// See the [module docs](self) for the byte layout and the limits.
///
/// ```
/// use bytes::BytesMut;
/// use hail_wire::FrameCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::builder().little_endian().max_frame_len(1024).build();
/// let mut buf = BytesMut::new();
/// codec.encode(&b"hi"[..], &mut buf)?;
/// assert_eq!(&buf[..], b"\x02\x00\x00\x00hi");
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"hi"[..]));
/// # Ok::<(), hail_wire::WireError>(())
/// ```
#[derive(Clone)]
pub struct FrameCodec {
    order: ByteOrder,
    max: usize,
    state: DecodeState,
}

impl fmt::Debug for FrameCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCodec")
            .field("order", &self.order)
            .field("max_frame_len", &self.max)
            .field("state", &self.state)
            .finish()
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    /// A codec with the defaults: big-endian header, 16 MiB maximum body.
    pub fn new() -> Self {
        FrameCodecBuilder::default().build()
    }

    /// A builder to choose byte order and maximum frame length.
    pub fn builder() -> FrameCodecBuilder {
        FrameCodecBuilder::default()
    }

    /// The header byte order.
    pub fn byte_order(&self) -> ByteOrder {
        self.order
    }

    /// The maximum body length in bytes.
    pub fn max_frame_len(&self) -> usize {
        self.max
    }

    /// True once a framing error has made the stream untrustworthy.
    pub fn is_broken(&self) -> bool {
        self.state == DecodeState::Broken
    }

    /// Appends one frame whose body `write` produces directly in `dst`.
    ///
    /// A header is reserved, `write` appends the body, then the header is filled in. If
    /// `write` fails or the body exceeds the maximum, `dst` is restored to its previous
    /// length and the error returned, so nothing of a failed frame is ever sent.
    pub fn encode_with<F>(&self, dst: &mut BytesMut, write: F) -> Result<(), WireError>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), WireError>,
    {
        let start = dst.len();
        dst.put_slice(&[0; HEADER_LEN]);
        if let Err(e) = write(dst) {
            dst.truncate(start);
            return Err(e);
        }
        let len = dst.len() - start - HEADER_LEN;
        if len > self.max {
            dst.truncate(start);
            return Err(WireError::TooLarge { len, max: self.max });
        }
        // `len <= self.max <= u32::MAX` was just checked.
        let header = self.order.write(len as u32);
        dst[start..start + HEADER_LEN].copy_from_slice(&header);
        Ok(())
    }

    /// Appends one frame holding `body` to `dst`: one reservation, header and body together.
    pub fn encode_slice(&self, body: &[u8], dst: &mut BytesMut) -> Result<(), WireError> {
        if body.len() > self.max {
            return Err(WireError::TooLarge {
                len: body.len(),
                max: self.max,
            });
        }
        dst.reserve(HEADER_LEN + body.len());
        dst.put_slice(&self.order.write(body.len() as u32));
        dst.put_slice(body);
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, WireError> {
        let len = match self.state {
            DecodeState::Broken => return Err(WireError::Broken),
            DecodeState::Body(len) => len,
            DecodeState::Head => {
                let Some(header) = src.first_chunk::<HEADER_LEN>() else {
                    return Ok(None);
                };
                let len = self.order.read(*header) as usize;
                if len > self.max {
                    self.state = DecodeState::Broken;
                    return Err(WireError::TooLarge { len, max: self.max });
                }
                src.advance(HEADER_LEN);
                self.state = DecodeState::Body(len);
                len
            }
        };
        if src.len() < len {
            // Room for what is likely to arrive next, never for the whole announced body.
            src.reserve((len - src.len()).min(READ_AHEAD));
            return Ok(None);
        }
        self.state = DecodeState::Head;
        Ok(Some(src.split_to(len)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, WireError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        match self.state {
            DecodeState::Head if src.is_empty() => Ok(None),
            DecodeState::Head => Err(WireError::TruncatedHeader { got: src.len() }),
            DecodeState::Body(expected) => Err(WireError::TruncatedBody {
                expected,
                got: src.len(),
            }),
            DecodeState::Broken => Err(WireError::Broken),
        }
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, body: &[u8], dst: &mut BytesMut) -> Result<(), WireError> {
        self.encode_slice(body, dst)
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encode_slice(&body, dst)
    }
}

impl Encoder<BytesMut> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, body: BytesMut, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encode_slice(&body, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> FrameCodec {
        FrameCodec::builder().max_frame_len(100).build()
    }

    #[test]
    fn empty_frame_is_valid() {
        let mut c = codec();
        let mut buf = BytesMut::new();
        c.encode(Bytes::new(), &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 0]);
        assert_eq!(c.decode(&mut buf).unwrap().unwrap().len(), 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn header_byte_orders() {
        let mut be = codec();
        let mut le = FrameCodec::builder().little_endian().build();
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        be.encode(&[7u8; 3][..], &mut a).unwrap();
        le.encode(&[7u8; 3][..], &mut b).unwrap();
        assert_eq!(&a[..4], &[0, 0, 0, 3]);
        assert_eq!(&b[..4], &[3, 0, 0, 0]);
    }

    #[test]
    fn over_limit_header_breaks_the_stream() {
        let mut c = codec();
        let mut buf = BytesMut::from(&[0, 0, 0, 101, 1, 2, 3][..]);
        assert!(matches!(
            c.decode(&mut buf),
            Err(WireError::TooLarge { len: 101, max: 100 })
        ));
        assert!(c.is_broken());
        // Later calls do not try to resynchronise, even on bytes that look like a frame.
        let mut good = BytesMut::from(&[0, 0, 0, 1, 9][..]);
        assert!(matches!(c.decode(&mut good), Err(WireError::Broken)));
        assert!(matches!(c.decode_eof(&mut good), Err(WireError::Broken)));
    }

    #[test]
    fn oversized_body_is_refused_before_writing() {
        let mut c = codec();
        let mut buf = BytesMut::from(&b"keep"[..]);
        let err = c.encode(&[0u8; 101][..], &mut buf).unwrap_err();
        assert!(matches!(err, WireError::TooLarge { len: 101, max: 100 }));
        assert_eq!(&buf[..], b"keep");
        let err = c
            .encode_with(&mut buf, |dst| {
                dst.put_slice(&[1; 150]);
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, WireError::TooLarge { len: 150, max: 100 }));
        assert_eq!(&buf[..], b"keep");
    }

    #[test]
    fn failed_in_place_write_leaves_nothing() {
        let c = codec();
        let mut buf = BytesMut::from(&b"x"[..]);
        let err = c
            .encode_with(&mut buf, |dst| {
                dst.put_slice(b"partial");
                Err(WireError::TrailingBytes { count: 1 })
            })
            .unwrap_err();
        assert!(matches!(err, WireError::TrailingBytes { count: 1 }));
        assert_eq!(&buf[..], b"x");
    }

    #[test]
    fn truncated_header_and_body_at_eof() {
        let mut c = codec();
        let mut buf = BytesMut::from(&[0, 0][..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            c.decode_eof(&mut buf),
            Err(WireError::TruncatedHeader { got: 2 })
        ));

        let mut c = codec();
        let mut buf = BytesMut::from(&[0, 0, 0, 5, 1, 2][..]);
        assert!(matches!(
            c.decode_eof(&mut buf),
            Err(WireError::TruncatedBody {
                expected: 5,
                got: 2
            })
        ));

        let mut c = codec();
        assert!(c.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }

    #[test]
    fn incomplete_body_reserves_bounded_read_ahead() {
        let mut c = FrameCodec::new();
        let mut buf = BytesMut::new();
        buf.put_u32(DEFAULT_MAX_FRAME_LEN);
        buf.put_slice(&[0; 10]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= 2 * (READ_AHEAD + 14),
            "{}",
            buf.capacity()
        );
    }
}
