//! The incoming side of a link (sans-IO): raw bytes in, frame bodies out.

use bytes::BytesMut;
use hail_wire::{ByteOrder, FrameCodec};
use tokio_util::codec::Decoder;

use crate::CloseReason;
use crate::error::ProtocolError;
use crate::seal::{self, Opener, Record};

/// How much free space a read asks for: 16 KiB (grown to 64 KiB under load).
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Raw bytes in, frame bodies out; opens sealed records first on a secured link.
#[derive(Debug)]
pub(crate) struct Rx {
    /// Bytes read from the socket and not yet consumed.
    pub(crate) raw: BytesMut,
    opener: Option<Opener>,
    /// Opened plaintext (secured links only).
    plain: BytesMut,
    frames: FrameCodec,
    max_record: usize,
}

impl Rx {
    /// A plaintext receiver with a frame limit.
    pub(crate) fn new(order: ByteOrder, max_frame_len: u32) -> Self {
        Self {
            raw: BytesMut::new(),
            opener: None,
            plain: BytesMut::new(),
            frames: FrameCodec::builder()
                .byte_order(order)
                .max_frame_len(max_frame_len)
                .build(),
            max_record: seal::MAX_RECORD,
        }
    }

    /// Limits the record length (before the handshake completes).
    pub(crate) fn set_max_record(&mut self, max: usize) {
        self.max_record = max;
    }

    /// From now on, records are opened with `opener`.
    pub(crate) fn set_opener(&mut self, opener: Opener) {
        self.opener = Some(opener);
    }

    /// Replaces the frame limit (after the handshake). Only valid between frames.
    pub(crate) fn set_frame_limit(&mut self, order: ByteOrder, max_frame_len: u32) {
        self.frames = FrameCodec::builder()
            .byte_order(order)
            .max_frame_len(max_frame_len)
            .build();
    }

    /// Makes room for the next read: at least 8 KiB free, never more than 64 KiB asked for.
    pub(crate) fn reserve_for_read(&mut self) {
        if self.raw.capacity() - self.raw.len() < 8 * 1024 {
            self.raw.reserve(READ_CHUNK);
        }
    }

    /// Memory this receiver holds, in bytes.
    pub(crate) fn buffered(&self) -> usize {
        self.raw.capacity() + self.plain.capacity()
    }

    /// Drops spare capacity when idle, so an idle link holds little memory.
    pub(crate) fn shrink_if_idle(&mut self) {
        if self.raw.is_empty() && self.raw.capacity() > READ_CHUNK {
            self.raw = BytesMut::new();
        }
        if self.plain.is_empty() && self.plain.capacity() > READ_CHUNK {
            self.plain = BytesMut::new();
        }
    }

    /// Cuts one record (handshake phase only).
    pub(crate) fn next_record(&mut self) -> Result<Option<Record>, CloseReason> {
        seal::take_record(&mut self.raw, self.max_record).map_err(CloseReason::Protocol)
    }

    /// The next whole frame body, if one is complete.
    pub(crate) fn next_frame(&mut self) -> Result<Option<BytesMut>, CloseReason> {
        let Some(opener) = &mut self.opener else {
            return self.frames.decode(&mut self.raw).map_err(CloseReason::wire);
        };
        loop {
            if let Some(frame) = self
                .frames
                .decode(&mut self.plain)
                .map_err(CloseReason::wire)?
            {
                return Ok(Some(frame));
            }
            match seal::take_record(&mut self.raw, self.max_record)
                .map_err(CloseReason::Protocol)?
            {
                None => return Ok(None),
                Some(Record::Alert(_)) => {
                    return Err(CloseReason::Protocol(ProtocolError::BadRecord));
                }
                Some(Record::Data(record)) => opener.open(&record, &mut self.plain)?,
            }
        }
    }
}
