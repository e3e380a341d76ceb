//! Whole messages: a payload codec inside a frame.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::{FrameCodec, PayloadCodec, WireError};

/// A [`PayloadCodec`] inside a [`FrameCodec`]: a tokio-util codec for whole messages.
///
/// Encoding writes header and payload into the output buffer in one pass (the payload
/// is serialized in place, the header filled in after), so a message is never copied
/// through an intermediate buffer. A payload error on decode consumes exactly its frame,
/// so the next call starts at the next frame; framing errors break the stream.
///
/// ```
/// use bytes::BytesMut;
/// use hail_wire::{FrameCodec, Json, MessageCodec};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// // Python Comms' format: little-endian u32 length, then UTF-8 JSON.
/// let frames = FrameCodec::builder().little_endian().build();
/// let mut codec = MessageCodec::new(frames, Json::<serde_json::Value>::new());
/// let mut buf = BytesMut::new();
/// codec.encode(serde_json::json!({"hello": "world"}), &mut buf)?;
/// assert_eq!(&buf[..4], &[17, 0, 0, 0]); // compact: {"hello":"world"}
/// let back = codec.decode(&mut buf)?.expect("a whole frame");
/// assert_eq!(back["hello"], "world");
/// # Ok::<(), hail_wire::WireError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MessageCodec<P> {
    frames: FrameCodec,
    payload: P,
}

impl<P> MessageCodec<P> {
    /// Ties `payload` to `frames`.
    pub fn new(frames: FrameCodec, payload: P) -> Self {
        Self { frames, payload }
    }

    /// The frame codec.
    pub fn frames(&self) -> &FrameCodec {
        &self.frames
    }

    /// The payload codec.
    pub fn payload(&self) -> &P {
        &self.payload
    }
}

impl<P: PayloadCodec> MessageCodec<P> {
    /// Appends one framed message to `dst`, taking the message by reference.
    ///
    /// On error (payload cannot be encoded, or is longer than the maximum frame length)
    /// `dst` is left as it was.
    pub fn encode_ref(&self, item: &P::Item, dst: &mut BytesMut) -> Result<(), WireError> {
        self.frames
            .encode_with(dst, |dst| self.payload.encode_payload(item, dst))
    }
}

impl<P: PayloadCodec> Decoder for MessageCodec<P> {
    type Item = P::Item;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<P::Item>, WireError> {
        match self.frames.decode(src)? {
            Some(body) => self.payload.decode_payload(body.freeze()).map(Some),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<P::Item>, WireError> {
        match self.frames.decode_eof(src)? {
            Some(body) => self.payload.decode_payload(body.freeze()).map(Some),
            None => Ok(None),
        }
    }
}

impl<P: PayloadCodec> Encoder<P::Item> for MessageCodec<P> {
    type Error = WireError;

    fn encode(&mut self, item: P::Item, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encode_ref(&item, dst)
    }
}
