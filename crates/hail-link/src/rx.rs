//! The incoming side of a link (sans-IO): raw bytes in, frame bodies out.

use bytes::{Buf, BytesMut};
use hail_wire::frame::{HEADER_LEN, READ_AHEAD};
use hail_wire::{ByteOrder, WireError};

use crate::CloseReason;
use crate::error::ProtocolError;
use crate::seal::{self, Opener, Record};

/// Smallest read: 4 KiB (an idle link reserves no more).
pub(crate) const MIN_READ: usize = 4 * 1024;
/// Largest read: 64 KiB (the size grows while reads come back full).
pub(crate) const MAX_READ: usize = 64 * 1024;

/// Raw bytes in, frame bodies out; opens sealed records first on a secured link.
#[derive(Debug)]
pub(crate) struct Rx {
    /// Bytes read from the socket and not yet consumed.
    pub(crate) raw: BytesMut,
    opener: Option<Opener>,
    /// Opened plaintext (secured links only).
    plain: BytesMut,
    order: ByteOrder,
    max_frame_len: usize,
    max_record: usize,
    /// Free space the next read asks for; adapts between `MIN_READ` and `MAX_READ`.
    read_size: usize,
    /// `raw`, `plain` were made for the large partial frame they start (see `cut`).
    raw_sized: bool,
    plain_sized: bool,
}

impl Rx {
    /// A plaintext receiver with a frame limit.
    pub(crate) fn new(order: ByteOrder, max_frame_len: u32) -> Self {
        Self {
            raw: BytesMut::new(),
            opener: None,
            plain: BytesMut::new(),
            order,
            max_frame_len: max_frame_len as usize,
            max_record: seal::MAX_RECORD,
            read_size: MIN_READ,
            raw_sized: false,
            plain_sized: false,
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
        self.order = order;
        self.max_frame_len = max_frame_len as usize;
    }

    /// Makes room for the next read: the adaptive read size (4 KiB to 64 KiB).
    pub(crate) fn reserve_for_read(&mut self) {
        if self.raw.capacity() - self.raw.len() < self.read_size / 2 {
            self.raw.reserve(self.read_size);
        }
    }

    /// Most bytes the next read may take: the adaptive read size (4 KiB to 64 KiB), however
    /// much room the buffer has (a buffer kept after a large frame has up to
    /// `KEEP_CAPACITY`): what the budget is passed by at most, one read per worker thread.
    /// `MIN_READ` (4 KiB) while the budget is spent down to its reserve (`tight`): a
    /// connection that has not announced a large frame yet reads into the reserve, and
    /// each of many peers starting large frames then takes at most that of it before its
    /// header (or on a secured link its first record's) says it is large.
    pub(crate) fn read_limit(&self, tight: bool) -> usize {
        if tight { MIN_READ } else { self.read_size }
    }

    /// A read returned `n` bytes: grow the read size while reads fill it, shrink when idle.
    pub(crate) fn after_read(&mut self, n: usize) {
        if n >= self.read_size / 2 {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if n < self.read_size / 8 {
            self.read_size = (self.read_size / 2).max(MIN_READ);
        }
    }

    /// Memory this receiver holds, in bytes.
    pub(crate) fn buffered(&self) -> usize {
        self.raw.capacity() + self.plain.capacity()
    }

    /// Bytes held and not yet cut into frames (the partial frame, and on a secured link a
    /// partial record): what the budget counts.
    pub(crate) fn held(&self) -> usize {
        self.raw.len() + self.plain.len()
    }

    /// What this receiver's headers say it will hold (see [`Announced`]).
    pub(crate) fn announced(&self) -> Announced {
        let (src, record) = match self.opener {
            Some(_) => (
                &self.plain,
                self.raw.first_chunk::<2>().map_or(0, |&h| {
                    self.plain.len() + 2 + usize::from(u16::from_be_bytes(h))
                }),
            ),
            None => (&self.raw, 0),
        };
        let header = src
            .first_chunk::<HEADER_LEN>()
            .map_or(0, |&h| HEADER_LEN + frame_len(self.order, h));
        Announced {
            header,
            claimed: header.max(record),
        }
    }

    /// Drops the buffers that hold nothing, so an idle link holds no receive memory.
    pub(crate) fn shrink_if_idle(&mut self) {
        if self.raw.is_empty() {
            self.raw = BytesMut::new();
            self.raw_sized = false;
        }
        if self.plain.is_empty() {
            self.plain = BytesMut::new();
            self.plain_sized = false;
        }
    }

    /// Cuts one record (handshake phase only).
    pub(crate) fn next_record(&mut self) -> Result<Option<Record>, CloseReason> {
        seal::take_record(&mut self.raw, self.max_record).map_err(CloseReason::Protocol)
    }

    /// The next whole frame body, if one is complete.
    pub(crate) fn next_frame(&mut self) -> Result<Option<BytesMut>, CloseReason> {
        match self.next(None)? {
            Some(Next::Frame(f) | Next::Small(f)) => Ok(Some(f)),
            None => Ok(None),
        }
    }

    /// The next whole frame, with a fast path for small messages: a message frame (kind
    /// byte [`KIND_MESSAGE`](crate::proto::KIND_MESSAGE) under hail framing, any frame
    /// under raw framing) whose payload is at most `small.max` bytes has its payload copied
    /// into `small.slab` and is returned as [`Next::Small`] (kind byte stripped). Every
    /// other frame is returned whole as [`Next::Frame`].
    pub(crate) fn next(
        &mut self,
        mut small: Option<Small<'_>>,
    ) -> Result<Option<Next>, CloseReason> {
        let (order, max) = (self.order, self.max_frame_len);
        let Some(opener) = &mut self.opener else {
            return cut(
                &mut self.raw,
                order,
                max,
                small.as_mut(),
                &mut self.raw_sized,
            )
            .map_err(CloseReason::wire);
        };
        loop {
            if let Some(frame) = cut(
                &mut self.plain,
                order,
                max,
                small.as_mut(),
                &mut self.plain_sized,
            )
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
                Some(Record::Data(mut record)) => {
                    // Opened where it was read, then appended behind the partial frame
                    // (one copy, dropping the record's share of `raw` at once: kept as
                    // a view, it would make the next read's reserve copy the partial
                    // record behind it into a new buffer, which profiled worse).
                    opener.open_in_place(&mut record)?;
                    self.plain.extend_from_slice(&record);
                }
            }
        }
    }
}

/// The body length a frame header announces.
fn frame_len(order: ByteOrder, header: [u8; HEADER_LEN]) -> usize {
    let len = match order {
        ByteOrder::LittleEndian => u32::from_le_bytes(header),
        _ => u32::from_be_bytes(header),
    };
    len as usize
}

/// What a receiver's headers say it will hold, header included (0: nothing said yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Announced {
    /// The length of the partial frame whose header has come (on a secured link, opened).
    pub(crate) header: usize,
    /// At least `header`; on a secured link also the opened bytes plus the partial record
    /// whose length has come (a peer whose frame's header is still sealed in its first
    /// record is judged by that record, up to 64 KiB). The budget's reserve rule judges by
    /// it. A burst of small frames also comes in full records, so a link judged large by
    /// its record alone is paused past the reserve line but never closed as stalled
    /// (`header` decides that).
    pub(crate) claimed: usize,
}

/// Where [`Rx::next`] copies small messages.
pub(crate) struct Small<'a> {
    /// The buffer small payloads are appended to and split from.
    pub(crate) slab: &'a mut BytesMut,
    /// Largest payload copied, in bytes.
    pub(crate) max: usize,
    /// Hail framing (a kind byte leads every body) rather than raw.
    pub(crate) hail: bool,
}

/// One frame from [`Rx::next`].
#[derive(Debug)]
pub(crate) enum Next {
    /// A whole frame body, as it came (kind byte included under hail framing).
    Frame(BytesMut),
    /// A small message's payload (without the kind byte), split from the slab.
    Small(BytesMut),
}

/// Most bytes one slab allocation holds: 16 KiB.
const SLAB: usize = 16 * 1024;

/// Cuts the next whole frame from `src`. Consumes nothing until the whole frame is there,
/// so it keeps no state between calls.
///
/// `sized` says that `src` was made for the partial frame it starts (set here when it
/// grows a buffer for a large frame, taken when that frame is cut).
fn cut(
    src: &mut BytesMut,
    order: ByteOrder,
    max: usize,
    small: Option<&mut Small<'_>>,
    sized: &mut bool,
) -> Result<Option<Next>, WireError> {
    let Some(&header) = src.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = frame_len(order, header);
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    let Some(body) = src.get(HEADER_LEN..HEADER_LEN + len) else {
        // Room for what is likely to arrive next, never for the whole announced body
        // before its bytes come.
        let need = HEADER_LEN + len;
        let room = (need - src.len()).min(READ_AHEAD);
        if src.capacity() - src.len() < room {
            if len >= OWN_ALLOCATION_FROM && src.capacity().saturating_mul(2) > need + READ_AHEAD {
                // Doubling would pass the frame's end (up to twice the frame, not counted
                // in the budget): grow to the frame plus a read, once. The frame is then
                // cut from this buffer as it is (see below).
                let mut grown = BytesMut::with_capacity(need + READ_AHEAD);
                grown.extend_from_slice(src);
                *src = grown;
                *sized = true;
            } else {
                src.reserve(room);
            }
        }
        return Ok(None);
    };
    if let Some(s) = small {
        let payload = if s.hail {
            match body.split_first() {
                Some((&crate::proto::KIND_MESSAGE, rest)) => Some(rest),
                _ => None,
            }
        } else {
            Some(body)
        };
        if let Some(payload) = payload.filter(|p| p.len() <= s.max) {
            let n = payload.len();
            if s.slab.capacity() - s.slab.len() < n {
                // Sized by what is already buffered: one allocation for a burst, a small
                // one for a lone message.
                s.slab.reserve(src.len().min(SLAB).max(n));
            }
            s.slab.extend_from_slice(payload);
            let msg = s.slab.split();
            src.advance(HEADER_LEN + len);
            return Ok(Some(Next::Small(msg)));
        }
    }
    src.advance(HEADER_LEN);
    let made_for_it = std::mem::take(sized);
    if made_for_it && src.capacity() <= len + 2 * READ_AHEAD {
        // The buffer was made for this frame (it starts it, and holds at most a read
        // beyond): cut as it is, no copy; what follows (at most a read) moves to a buffer
        // of its own, so the frame alone keeps this one alive.
        let frame = src.split_to(len);
        *src = BytesMut::from(&src[..]);
        return Ok(Some(Next::Frame(frame)));
    }
    if len >= OWN_ALLOCATION_FROM {
        // Cut as a view, the frame would keep the whole buffer alive for as long as it
        // waits (the buffer grew by doubling: up to four times the frame, and a view can
        // not tell how much of the buffer lies behind it), while the budget counts the
        // frame's length: 48 MiB of 64 KiB frames held 100-150 MiB (docs/security.md,
        // "Whole devices under attack"). Copied once into an allocation of its own size
        // instead (about 2 us per 64 KiB); the buffer stays unshared and is reused.
        let frame = BytesMut::from(&src[..len]);
        src.advance(len);
        if src.capacity() > KEEP_CAPACITY {
            // The buffer grew to the frame (its pages are resident) and the budget no
            // longer counts them: a peer sending 15 MiB frames kept 15 MiB of buffer
            // beside each frame it delivered. What follows the frame (at most a read or
            // a record) moves to a buffer of its own size.
            *src = BytesMut::from(&src[..]);
        }
        return Ok(Some(Next::Frame(frame)));
    }
    Ok(Some(Next::Frame(src.split_to(len))))
}

/// A frame of at least this many bytes (16 KiB) gets an allocation of its own size (see
/// [`cut`]): what a waiting frame keeps alive is then what the budget counts.
const OWN_ALLOCATION_FROM: usize = 16 * 1024;
/// Largest receive buffer kept after a frame was cut from it: 1 MiB (see [`cut`]); a
/// larger one, grown by a large frame, is given back then.
const KEEP_CAPACITY: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(len: usize) -> Vec<u8> {
        let mut v = (len as u32).to_be_bytes().to_vec();
        v.resize(HEADER_LEN + len, 0x5a);
        v
    }

    #[test]
    fn a_large_frame_in_a_roomy_buffer_gets_an_allocation_of_its_own_size() {
        let len = 64 * 1024;
        // As a buffer grown by doubling holds it: four times the frame.
        let mut src = BytesMut::with_capacity(4 * len);
        src.extend_from_slice(&framed(len));
        src.extend_from_slice(&framed(10)[..8]);
        let Some(Next::Frame(f)) =
            cut(&mut src, ByteOrder::BigEndian, 1 << 20, None, &mut false).unwrap()
        else {
            panic!("a whole frame")
        };
        assert_eq!(f.len(), len);
        assert!(f.capacity() <= len + len / 4, "{}", f.capacity());
        assert!(f.iter().all(|&b| b == 0x5a));
        // What follows stays, in order.
        assert_eq!(src.len(), 8);
        assert_eq!(&src[..4], &10u32.to_be_bytes());
    }

    #[test]
    fn a_buffer_grown_by_a_large_frame_is_given_back_with_it() {
        let len = 2 << 20;
        let mut src = BytesMut::with_capacity(2 * len);
        src.extend_from_slice(&framed(len));
        src.extend_from_slice(&framed(10)[..8]);
        let Some(Next::Frame(f)) =
            cut(&mut src, ByteOrder::BigEndian, 4 << 20, None, &mut false).unwrap()
        else {
            panic!("a whole frame")
        };
        assert_eq!(f.len(), len);
        assert!(src.capacity() < KEEP_CAPACITY, "{}", src.capacity());
        assert_eq!(&src[..4], &10u32.to_be_bytes(), "what follows stays");
        assert_eq!(src.len(), 8);
    }

    #[test]
    fn small_frames_are_cut_without_a_copy() {
        let mut src = BytesMut::with_capacity(64 * 1024);
        src.extend_from_slice(&framed(1024));
        let at = src.as_ptr() as usize + HEADER_LEN;
        let Some(Next::Frame(f)) =
            cut(&mut src, ByteOrder::BigEndian, 1 << 20, None, &mut false).unwrap()
        else {
            panic!("a whole frame")
        };
        assert_eq!(f.as_ptr() as usize, at, "a view, not a copy");
    }

    /// Found in review: the last large frame of a full buffer was cut as a view (little
    /// room after it) and kept the whole buffer, four frames long, alive.
    #[test]
    fn no_large_frame_is_a_view_into_a_buffer_of_several() {
        let len = 64 * 1024;
        let cap = 4 * (HEADER_LEN + len);
        let mut src = BytesMut::with_capacity(cap);
        for _ in 0..4 {
            src.extend_from_slice(&framed(len));
        }
        let base = src.as_ptr() as usize;
        let mut frames = Vec::new();
        while let Some(Next::Frame(f)) =
            cut(&mut src, ByteOrder::BigEndian, 1 << 20, None, &mut false).unwrap()
        {
            frames.push(f);
        }
        assert_eq!(frames.len(), 4);
        for (i, f) in frames.iter().enumerate() {
            let at = f.as_ptr() as usize;
            assert!(!(base..base + cap).contains(&at), "frame {i} is a view");
            assert_eq!(f.capacity(), len);
        }
    }

    /// Frames cut across sealed records in every way (a header split between records, a
    /// body spanning several, many frames in one record) come out whole and in order,
    /// whether the records arrive at once or a byte at a time; a header over the limit in
    /// a spanning frame is refused.
    #[test]
    fn sealed_frames_across_record_boundaries() {
        let lens = [0usize, 1, 3, 600, 70_000, 100, 5, 20_000, 2];
        let mut stream = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            stream.extend_from_slice(&(len as u32).to_be_bytes());
            stream.extend((0..len).map(|j| (i + j) as u8));
        }
        for record in [1, 2, 5, 7, 1000, 65_000] {
            for trickle in [false, true] {
                let ((mut sealer, _), (_, opener)) = crate::seal::test_ends();
                let mut wire = BytesMut::new();
                for chunk in stream.chunks(record) {
                    sealer.seal(chunk, &mut wire);
                }
                let mut rx = Rx::new(ByteOrder::BigEndian, 1 << 20);
                rx.set_opener(opener);
                let mut slab = BytesMut::new();
                let mut got = Vec::new();
                let step = if trickle { 1 } else { wire.len() };
                for piece in wire.chunks(step) {
                    rx.raw.extend_from_slice(piece);
                    loop {
                        let small = Small {
                            slab: &mut slab,
                            max: 512,
                            hail: false,
                        };
                        match rx.next(Some(small)).unwrap() {
                            Some(Next::Frame(f) | Next::Small(f)) => got.push(f),
                            None => break,
                        }
                    }
                }
                assert_eq!(
                    got.len(),
                    lens.len(),
                    "records of {record}, trickle {trickle}"
                );
                for (i, (f, &len)) in got.iter().zip(&lens).enumerate() {
                    assert_eq!(f.len(), len);
                    assert!(f.iter().enumerate().all(|(j, &b)| b == (i + j) as u8));
                }
                assert_eq!(rx.held(), 0);
            }
        }
        // A spanning frame whose header announces more than the limit.
        let ((mut sealer, _), (_, opener)) = crate::seal::test_ends();
        let mut wire = BytesMut::new();
        sealer.seal(&[0, 0], &mut wire);
        sealer.seal(&[0x10, 0, 1, 2], &mut wire);
        let mut rx = Rx::new(ByteOrder::BigEndian, 1024);
        rx.set_opener(opener);
        rx.raw.extend_from_slice(&wire);
        assert!(rx.next(None).is_err());
    }

    /// Under misbehave's `frames`, a 15 MiB frame grew its buffer by doubling (to 16 MiB,
    /// up to twice the frame) and was then copied whole into an allocation of its own:
    /// for a moment twice the frame per worker, none of it counted beyond the frame. Now
    /// the buffer grows to the frame plus a read once doubling would pass that, and the
    /// frame is cut from it as it is, without a copy.
    #[test]
    fn a_large_frame_is_cut_without_a_copy_from_a_buffer_of_its_size() {
        let len = 3 << 20;
        let wire = framed(len);
        let mut rx = Rx::new(ByteOrder::BigEndian, 16 << 20);
        let mut fed = 0;
        let mut base = 0;
        let frame = loop {
            if let Some(f) = rx.next_frame().unwrap() {
                break f;
            }
            rx.reserve_for_read();
            // A read: at most the read size, into the room the buffer has.
            let room = rx.raw.capacity() - rx.raw.len();
            let n = room.min(rx.read_limit(false)).min(wire.len() - fed);
            assert!(n > 0, "room for the next read");
            base = rx.raw.as_ptr() as usize;
            rx.raw.extend_from_slice(&wire[fed..fed + n]);
            assert_eq!(
                rx.raw.as_ptr() as usize,
                base,
                "a read never moves the buffer"
            );
            rx.after_read(n);
            fed += n;
            assert!(
                rx.raw.capacity() <= HEADER_LEN + len + READ_AHEAD,
                "{} after {fed}",
                rx.raw.capacity()
            );
        };
        assert_eq!(frame.len(), len);
        assert_eq!(frame.as_ptr() as usize, base + HEADER_LEN, "not a copy");
        assert!(frame.iter().all(|&b| b == 0x5a));
    }

    /// Under misbehave's `frames` (secured links), a flooder's next frame had its header
    /// sealed in a record of 64 KiB: until that record was whole, nothing said the frame
    /// was large, and 64 flooders read 4 MiB of the reserve kept for small frames; under
    /// `answer`, 20 peers' bursts of small questions did the same and the legitimate
    /// device's call timed out. Judged by the record, but only an opened header counts
    /// for the stall rule (a burst of small messages comes in full records too).
    #[test]
    fn a_partial_record_announces_what_it_will_hold() {
        let ((mut sealer, _), (_, opener)) = crate::seal::test_ends();
        let mut wire = BytesMut::new();
        sealer.seal(&framed(seal::MAX_PLAIN)[..seal::MAX_PLAIN], &mut wire);
        let mut rx = Rx::new(ByteOrder::BigEndian, 1 << 20);
        rx.set_opener(opener);
        assert_eq!(rx.announced().claimed, 0);
        rx.raw.extend_from_slice(&wire[..100]);
        assert!(rx.next(None).unwrap().is_none());
        assert_eq!(rx.announced().claimed, 2 + seal::MAX_RECORD);
        assert!(
            rx.announced().claimed >= crate::budget::SMALL_HOLDER,
            "a full record is large"
        );
        assert_eq!(rx.announced().header, 0, "but no header is open");
        rx.raw.extend_from_slice(&wire[100..]);
        assert!(
            rx.next(None).unwrap().is_none(),
            "the frame is not whole yet"
        );
        assert_eq!(
            rx.announced().claimed,
            HEADER_LEN + seal::MAX_PLAIN,
            "its header opened"
        );
        assert_eq!(rx.announced().header, HEADER_LEN + seal::MAX_PLAIN);
    }

    #[test]
    fn read_size_adapts() {
        let mut rx = Rx::new(ByteOrder::BigEndian, 1024);
        rx.reserve_for_read();
        assert!(rx.raw.capacity() >= MIN_READ && rx.raw.capacity() < MAX_READ);
        for _ in 0..10 {
            rx.after_read(MAX_READ);
        }
        assert_eq!(rx.read_size, MAX_READ);
        for _ in 0..10 {
            rx.after_read(10);
        }
        assert_eq!(rx.read_size, MIN_READ);
        rx.raw.reserve(MAX_READ * 4);
        rx.shrink_if_idle();
        assert_eq!(rx.buffered(), 0);
        assert_eq!(rx.raw.capacity(), 0);
    }
}
