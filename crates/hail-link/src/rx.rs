//! The incoming side of a link (sans-IO): raw bytes in, frame bodies out.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use hail_wire::frame::{HEADER_LEN, READ_AHEAD};
use hail_wire::{ByteOrder, WireError};

use crate::CloseReason;
use crate::error::ProtocolError;
use crate::seal::{self, Opener, Record};

mod large;

use self::large::{Large, MAPPED_FROM};

/// Smallest read: 4 KiB (an idle link reserves no more).
pub(crate) const MIN_READ: usize = 4 * 1024;
/// Free space a read asks for during the handshake: 512 bytes. Handshake messages are a
/// few hundred bytes at most, and every link being set up holds its buffer meanwhile; a
/// larger record (up to the pre-auth limit) grows the buffer as it comes.
pub(crate) const HANDSHAKE_READ: usize = 512;
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
    /// Free space the next read asks for; adapts between `MIN_READ` and `MAX_READ` once
    /// the link is established (`HANDSHAKE_READ`, fixed, before).
    read_size: usize,
    /// The large frame being received, if one is (see [`MAPPED_FROM`]).
    large: Option<Large>,
    /// The allocation `raw` (plaintext links) or `plain` (secured ones) is in: what a
    /// run of views would keep alive (see [`cut_run`]).
    alloc: Alloc,
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
            large: None,
            alloc: Alloc::default(),
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

    /// Sets the free space the next read asks for (the handshake's
    /// [`HANDSHAKE_READ`], then [`MIN_READ`] again); reads adapt it from there.
    pub(crate) fn set_read_size(&mut self, n: usize) {
        self.read_size = n;
    }

    /// Makes room for the next read: the adaptive read size (4 KiB to 64 KiB; 512 bytes
    /// during the handshake, which never adapts it: `after_read` would raise it to 4 KiB).
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
        let large = self.large.as_ref().map_or(0, Large::resident);
        self.raw.capacity() + self.plain.capacity() + large
    }

    /// Bytes held and not yet cut into frames (the partial frame, and on a secured link a
    /// partial record): what the budget counts.
    pub(crate) fn held(&self) -> usize {
        let large = self.large.as_ref().map_or(0, |l| l.filled);
        self.raw.len() + self.plain.len() + large
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
        let header = match &self.large {
            Some(l) => HEADER_LEN + l.len(),
            None => src
                .first_chunk::<HEADER_LEN>()
                .map_or(0, |&h| HEADER_LEN + frame_len(self.order, h)),
        };
        Announced {
            header,
            claimed: header.max(record),
        }
    }

    /// Drops the buffers that hold nothing, so an idle link holds no receive memory.
    pub(crate) fn shrink_if_idle(&mut self) {
        if self.raw.is_empty() {
            self.raw = BytesMut::new();
        }
        if self.plain.is_empty() {
            self.plain = BytesMut::new();
        }
    }

    /// Cuts one record (handshake phase only).
    pub(crate) fn next_record(&mut self) -> Result<Option<Record>, CloseReason> {
        seal::take_record(&mut self.raw, self.max_record).map_err(CloseReason::Protocol)
    }

    /// The next whole frame body, if one is complete (kind byte included under hail
    /// framing).
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, CloseReason> {
        let (order, max) = (self.order, self.max_frame_len);
        loop {
            let src = match self.opener {
                Some(_) => &mut self.plain,
                None => &mut self.raw,
            };
            if let Some(c) = cut(src, order, max, &mut self.large).map_err(CloseReason::wire)? {
                return Ok(Some(c.into_bytes()));
            }
            if !self.open_record()? {
                return Ok(None);
            }
        }
    }

    /// The next frames, with a fast path for runs of messages: the whole message frames
    /// (kind byte [`KIND_MESSAGE`](crate::proto::KIND_MESSAGE) under hail framing, any
    /// frame under raw framing) of less than [`OWN_ALLOCATION_FROM`] that lead what is
    /// buffered, at most `room` of them, have their payloads (kind byte stripped) appended
    /// to `out` in order, cut in one go ([`Next::Run`], see [`cut_run`]). Any other frame
    /// comes whole, as from [`next_frame`](Self::next_frame) ([`Next::Frame`]).
    pub(crate) fn next_run(
        &mut self,
        hail: bool,
        room: usize,
        out: &mut VecDeque<Bytes>,
    ) -> Result<Option<Next>, CloseReason> {
        let (order, max) = (self.order, self.max_frame_len);
        loop {
            let src = match self.opener {
                Some(_) => &mut self.plain,
                None => &mut self.raw,
            };
            if self.large.is_none() {
                let alloc = self.alloc.len(src);
                let n = cut_run(src, order, max, hail, room, alloc, out);
                if n > 0 {
                    return Ok(Some(Next::Run));
                }
            }
            if let Some(c) = cut(src, order, max, &mut self.large).map_err(CloseReason::wire)? {
                return Ok(Some(Next::Frame(c.into_bytes())));
            }
            if !self.open_record()? {
                return Ok(None);
            }
        }
    }

    /// On a secured link, opens the next whole record into the plaintext; false when
    /// there is none (or the link is not secured).
    fn open_record(&mut self) -> Result<bool, CloseReason> {
        let Some(opener) = &mut self.opener else {
            return Ok(false);
        };
        match seal::take_record(&mut self.raw, self.max_record).map_err(CloseReason::Protocol)? {
            None => Ok(false),
            Some(Record::Alert(_)) => Err(CloseReason::Protocol(ProtocolError::BadRecord)),
            Some(Record::Data(mut record)) => {
                // Opened where it was read, then appended behind the partial frame (one
                // copy, dropping the record's share of `raw` at once: kept as a view, it
                // would make the next read's reserve copy the partial record behind it
                // into a new buffer, which profiled worse). A large frame under way takes
                // its part straight from the record.
                opener.open_in_place(&mut record)?;
                let mut opened = &record[..];
                if let Some(large) = &mut self.large
                    && self.plain.is_empty()
                {
                    large.take(&mut opened).map_err(CloseReason::wire)?;
                }
                self.plain.extend_from_slice(opened);
                Ok(true)
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

/// What [`Rx::next_run`] cut.
#[derive(Debug)]
pub(crate) enum Next {
    /// Message payloads (at least one) were appended to the caller's queue.
    Run,
    /// A whole frame body, as it came (kind byte included under hail framing).
    Frame(Bytes),
}

/// One frame from [`cut`], as its buffer holds it.
#[derive(Debug)]
enum Cut {
    /// A frame body cut from the receive buffer (or copied from it, see [`cut`]).
    Frame(BytesMut),
    /// A large frame body, in the allocation it was received into (see [`MAPPED_FROM`]).
    Large(Bytes),
}

impl Cut {
    fn into_bytes(self) -> Bytes {
        match self {
            Self::Frame(f) => f.freeze(),
            Self::Large(f) => f,
        }
    }
}

/// Message payloads up to this size (512 bytes) are copied out of the read buffer by
/// [`cut_run`], a run of them into one allocation of exactly their bytes: a message
/// the application keeps then keeps alive no more than its run's payloads, which the
/// budget counted while they waited (never the 64 KiB read buffer a view would pin),
/// and a burst of small messages costs one allocation. A larger one is handed out as
/// a slice of the read buffer, without a copy, when its run fills at least half of the
/// buffer (else copied too, see [`cut_run`]).
pub(crate) const COPY_UP_TO: usize = 512;

/// The bytes a run's messages share (see [`cut_run`]), their count in a cache line of
/// its own: the count (`bytes`' `from_owner` puts it first) is taken by the reader for
/// each message and given back by the application as it drops them, while the reader
/// counts the next run's; shared with any other allocation's line, as the read buffer's
/// count was (a small `malloc` of its own), those counts on two cores missed the cache
/// (about 10 % of `link/throughput-64B`).
#[repr(align(64))]
struct RunBytes<T>(T);

impl<T: AsRef<[u8]>> AsRef<[u8]> for RunBytes<T> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref()
    }
}

/// The payloads of the whole message frames that lead `buf`, each as (start, length)
/// within `buf`: frames of less than [`OWN_ALLOCATION_FROM`] and within `max`, of kind
/// [`KIND_MESSAGE`](crate::proto::KIND_MESSAGE) under hail framing (its byte left out).
/// Ends at the first frame that is not whole or not such a message.
fn messages(
    buf: &[u8],
    order: ByteOrder,
    max: usize,
    hail: bool,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = *buf.get(at..)?.first_chunk::<HEADER_LEN>()?;
        let len = frame_len(order, header);
        if len > max || len >= OWN_ALLOCATION_FROM {
            return None;
        }
        let body = buf.get(at + HEADER_LEN..at + HEADER_LEN + len)?;
        let kind = usize::from(hail);
        if hail && body.first() != Some(&crate::proto::KIND_MESSAGE) {
            return None;
        }
        let start = at + HEADER_LEN + kind;
        at += HEADER_LEN + len;
        Some((start, len - kind))
    })
}

/// Cuts the run of whole message frames that leads `src` (see [`messages`]), at most
/// `room`, all copied or all views (by [`COPY_UP_TO`]), all of payloads that start with
/// the same byte (an empty one with none), appending their payloads to `out` in order;
/// returns how many (0 when `src` does not start with one). One first byte a run: the
/// layer above tells its kinds of message by it (hail-discovery: device messages,
/// discovery frames, RPC packets), keeps some (waiting for the application, counted)
/// and consumes others at once; a kept payload's allocation then holds only payloads
/// of its own kind, never consumed ones it would keep alive uncounted (a peer sending
/// 255 RPC packets of 512 B and then a 1-byte device message, over and over, made each
/// waiting message, counted 256 B, keep its run's 130 KiB). Views are copied
/// too when the run's frames fill less than half of `alloc`, the bytes of the allocation
/// `src` is in: a view keeps the whole allocation alive, and the budget counts the
/// run's bytes (a peer sending one 600-byte message per read, the rest of the buffer
/// heartbeats, made each such message hold a 64 KiB buffer). So a waiting run keeps
/// alive at most twice what it counts. A run of less than [`MIN_READ`] (4 KiB) is copied
/// whatever the buffer: the reader does not count a delivered batch of 2 KiB or less while
/// it waits (bounded by the event channel's capacity), so such a batch holds no view. The run costs one
/// allocation (its payloads copied into one of exactly their size, or for views, the
/// run's count) and the payloads count it, not the read buffer: one reference count of
/// the read buffer per run of views rather than one per message, on the reader's core
/// alone while the application drops earlier runs' messages.
fn cut_run(
    src: &mut BytesMut,
    order: ByteOrder,
    max: usize,
    hail: bool,
    room: usize,
    alloc: usize,
    out: &mut VecDeque<Bytes>,
) -> usize {
    let (mut n, mut bytes, mut last, mut copy, mut first) = (0, 0, (0, 0), true, None);
    for (start, len) in messages(src, order, max, hail).take(room) {
        let small = len <= COPY_UP_TO;
        // The payload's first byte: a run's payloads all start with the same one.
        let tag = src[start..start + len].first().copied();
        if n == 0 {
            (copy, first) = (small, tag);
        } else if small != copy || tag != first {
            break;
        }
        n += 1;
        bytes += len;
        last = (start, len);
    }
    let end = last.0 + last.1;
    if n == 0 {
        return 0;
    }
    if copy || 2 * end < alloc || end < MIN_READ {
        let mut whole = if bytes == 0 {
            Bytes::new()
        } else {
            let mut slab = Vec::with_capacity(bytes);
            for (start, len) in messages(src, order, max, hail).take(n) {
                slab.extend_from_slice(&src[start..start + len]);
            }
            Bytes::from_owner(RunBytes(slab))
        };
        for (_, len) in messages(src, order, max, hail).take(n - 1) {
            out.push_back(whole.split_to(len));
        }
        out.push_back(whole);
        src.advance(end);
    } else {
        let mut whole = Bytes::from_owner(RunBytes(src.split_to(end).freeze()));
        for (start, len) in messages(&whole, order, max, hail).take(n - 1) {
            out.push_back(whole.slice(start..start + len));
        }
        whole.advance(last.0);
        whole.truncate(last.1);
        out.push_back(whole);
    }
    n
}

/// The allocation a receive buffer is in, as [`Rx`] last saw it: its end does not move
/// while the allocation lives (a buffer split from it keeps it), and its start is where
/// the buffer began when that end was first seen (a buffer is first seen right after it
/// grew into a new allocation, so that is the allocation's start).
#[derive(Debug, Default)]
struct Alloc {
    start: usize,
    end: usize,
}

impl Alloc {
    /// The bytes of the allocation `buf` is in.
    fn len(&mut self, buf: &BytesMut) -> usize {
        let start = buf.as_ptr() as usize;
        let end = start + buf.capacity();
        if end != self.end || start < self.start {
            *self = Self { start, end };
        }
        self.end - self.start
    }
}

/// Cuts the next whole frame from `src`. A frame below [`MAPPED_FROM`] is consumed only
/// once it is whole; a larger one is held in `large` while it is received: its header is
/// consumed when it comes, and its body moves out of `src` as it arrives.
fn cut(
    src: &mut BytesMut,
    order: ByteOrder,
    max: usize,
    large: &mut Option<Large>,
) -> Result<Option<Cut>, WireError> {
    let mut body = match large.take() {
        Some(body) => body,
        None => {
            let Some(&header) = src.first_chunk::<HEADER_LEN>() else {
                return Ok(None);
            };
            let len = frame_len(order, header);
            if len > max {
                return Err(WireError::TooLarge { len, max });
            }
            if len < MAPPED_FROM {
                return cut_buffered(src, len);
            }
            src.advance(HEADER_LEN);
            Large::new(len)
        }
    };
    let mut from: &[u8] = src;
    body.take(&mut from)?;
    let taken = src.len() - from.len();
    src.advance(taken);
    if !body.is_whole() {
        *large = Some(body);
        return Ok(None);
    }
    give_back_if_grown(src);
    Ok(Some(Cut::Large(body.into_bytes())))
}

/// Gives back a receive buffer grown past [`KEEP_CAPACITY`] once a frame was cut from it
/// (its pages are resident, and the budget no longer counts them): what follows the frame
/// (at most a read or a record) moves to a buffer of its own size.
fn give_back_if_grown(src: &mut BytesMut) {
    if src.capacity() > KEEP_CAPACITY {
        *src = BytesMut::from(&src[..]);
    }
}

/// Cuts a frame of `len` bytes (below [`MAPPED_FROM`]) whose header leads `src`, once
/// it is whole (see [`cut`]).
fn cut_buffered(src: &mut BytesMut, len: usize) -> Result<Option<Cut>, WireError> {
    if src.len() < HEADER_LEN + len {
        // Room for what is likely to arrive next, never for the whole announced body
        // before its bytes come.
        let need = HEADER_LEN + len;
        let room = (need - src.len()).min(READ_AHEAD);
        if src.capacity() - src.len() < room {
            src.reserve(room);
        }
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    if len >= OWN_ALLOCATION_FROM {
        // Cut as a view, the frame would keep the whole buffer alive for as long as it
        // waits (the buffer grew by doubling: up to four times the frame, and a view can
        // not tell how much of the buffer lies behind it), while the budget counts the
        // frame's length: 48 MiB of 64 KiB frames held 100-150 MiB (docs/security.md,
        // "Whole devices under attack"). Copied once into an allocation of its own size
        // instead (about 2 us per 64 KiB); the buffer stays unshared and is reused.
        let frame = BytesMut::from(&src[..len]);
        src.advance(len);
        give_back_if_grown(src);
        return Ok(Some(Cut::Frame(frame)));
    }
    Ok(Some(Cut::Frame(src.split_to(len))))
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

    /// `plain` sealed by the peer in full records (the rest last), `rx` set to open them.
    fn secured(rx: &mut Rx, plain: &[u8]) -> BytesMut {
        let ((mut sealer, _), (_, opener)) = crate::seal::test_ends();
        let mut wire = BytesMut::new();
        for chunk in plain.chunks(seal::MAX_PLAIN) {
            sealer.seal(chunk, &mut wire);
        }
        rx.set_opener(opener);
        wire
    }

    /// A frame under hail framing: the kind byte, then `rest`.
    fn hail_frame(kind: u8, rest: &[u8]) -> Vec<u8> {
        let mut v = ((rest.len() + 1) as u32).to_be_bytes().to_vec();
        v.push(kind);
        v.extend_from_slice(rest);
        v
    }

    /// A payload of `len` bytes that starts with `M` (one kind for the layer above, as
    /// a run's payloads all are) and then repeats `b`.
    fn tagged(b: u8, len: usize) -> Vec<u8> {
        let mut v = vec![b; len];
        v[0] = b'M';
        v
    }

    /// Every frame that `next_run` hands out, in order: message payloads as runs or
    /// (control frames and large messages) whole.
    fn drain_runs(rx: &mut Rx, room: usize, got: &mut Vec<(bool, Vec<u8>)>) {
        let mut run = VecDeque::new();
        loop {
            match rx.next_run(true, room, &mut run).unwrap() {
                Some(Next::Run) => {
                    assert!(!run.is_empty() && run.len() <= room, "{}", run.len());
                    got.extend(run.drain(..).map(|p| (true, p.to_vec())));
                }
                Some(Next::Frame(f)) if f.first() == Some(&crate::proto::KIND_MESSAGE) => {
                    got.push((true, f[1..].to_vec()));
                }
                Some(Next::Frame(f)) => got.push((false, f.to_vec())),
                None => return,
            }
        }
    }

    /// Runs of messages of every size beside control frames, plaintext and sealed, read
    /// in pieces of every size and cut with every room: the same frames, in the same
    /// order, as they were sent, and nothing held at the end.
    #[test]
    fn runs_hand_out_every_frame_in_order_whatever_the_reads() {
        let sizes = [
            0usize, 1, 63, 64, 512, 513, 1024, 9000, 16_382, 16_383, 70_000, 200_000,
        ];
        let mut next = crate::test_rng(0x2545_f491_u32);
        let mut stream = Vec::new();
        let mut sent = Vec::new();
        for i in 0..400 {
            if next().is_multiple_of(9) {
                stream.extend(hail_frame(crate::proto::KIND_HEARTBEAT, &[]));
                sent.push((false, vec![crate::proto::KIND_HEARTBEAT]));
                continue;
            }
            let len = sizes[next() % sizes.len()];
            let payload: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
            stream.extend(hail_frame(crate::proto::KIND_MESSAGE, &payload));
            sent.push((true, payload));
        }
        for sealed in [false, true] {
            for (read, room) in [(1, 1), (7, 256), (1000, 3), (4096, 256), (65_536, 17)] {
                let mut rx = Rx::new(ByteOrder::BigEndian, 1 << 20);
                let wire = if sealed {
                    secured(&mut rx, &stream)
                } else {
                    BytesMut::from(&stream[..])
                };
                let mut got = Vec::new();
                for piece in wire.chunks(read) {
                    rx.raw.extend_from_slice(piece);
                    drain_runs(&mut rx, room, &mut got);
                }
                assert_eq!(got.len(), sent.len(), "sealed {sealed}, reads of {read}");
                assert!(got == sent, "sealed {sealed}, reads of {read}, room {room}");
                assert_eq!(rx.held(), 0);
            }
        }
    }

    /// The layer above consumes some payloads at once and keeps others (hail-discovery:
    /// RPC packets and device messages, told apart by their first byte). A peer sending
    /// 255 payloads of 512 B of one kind and then one of 1 byte of another, over and over:
    /// each run holds one kind, so a kept 1-byte payload's allocation holds none of the
    /// consumed 130 KiB (it held them all, uncounted, while the message waited).
    #[test]
    fn a_run_holds_payloads_of_one_first_byte() {
        let mut rx = Rx::new(ByteOrder::BigEndian, 1 << 20);
        for i in 0..4u8 {
            for _ in 0..255 {
                let mut rpc = vec![b'R'; 512];
                rpc[1] = i;
                rx.raw.extend(hail_frame(crate::proto::KIND_MESSAGE, &rpc));
            }
            rx.raw
                .extend(hail_frame(crate::proto::KIND_MESSAGE, &[b'M', i]));
        }
        let (mut consumed, mut kept) = (Vec::new(), Vec::new());
        let mut run = VecDeque::new();
        while let Some(Next::Run) = rx.next_run(true, 256, &mut run).unwrap() {
            let first = run[0][0];
            assert!(run.iter().all(|p| p[0] == first), "one first byte a run");
            if first == b'R' {
                let (a, b) = (run[0].as_ptr_range(), run[run.len() - 1].as_ptr_range());
                consumed.push(a.start as usize..b.end as usize);
            } else {
                kept.extend(run.iter().cloned());
            }
            run.clear();
        }
        assert_eq!(consumed.len(), 4);
        assert_eq!(kept.len(), 4);
        for (i, m) in kept.iter().enumerate() {
            assert_eq!(m[..], [b'M', i as u8]);
            let at = m.as_ptr() as usize;
            assert!(
                consumed.iter().all(|r| !r.contains(&at)),
                "a kept 2-byte payload shares its allocation with 255 consumed ones"
            );
        }
        assert_eq!(rx.held(), 0);
    }

    /// Larger messages in a small buffer, filling most of it but less than 4 KiB in all:
    /// copied (a delivered batch of 2 KiB or less is not counted, so it must hold no view).
    #[test]
    fn a_run_of_larger_messages_under_4_kib_is_copied() {
        let mut rx = Rx::new(ByteOrder::BigEndian, 1 << 20);
        rx.raw.reserve(3100);
        for j in 0..3 {
            rx.raw
                .extend(hail_frame(crate::proto::KIND_MESSAGE, &tagged(j, 1000)));
        }
        let buffer = rx.raw.as_ptr() as usize..rx.raw.as_ptr() as usize + rx.raw.capacity();
        let mut run = VecDeque::new();
        assert!(matches!(
            rx.next_run(true, 256, &mut run),
            Ok(Some(Next::Run))
        ));
        assert_eq!(run.len(), 3);
        assert!(
            run.iter()
                .enumerate()
                .all(|(j, p)| p[..] == tagged(j as u8, 1000))
        );
        assert!(
            run.iter().all(|p| !buffer.contains(&(p.as_ptr() as usize))),
            "copied"
        );
    }

    /// Python Comms framing (little-endian lengths, no kind byte): every frame is a
    /// message, empty ones too; runs hand them all out in order whatever the reads, and
    /// an over-long header is refused after the frames before it.
    #[test]
    fn raw_little_endian_runs_hand_out_every_frame_in_order() {
        let mut next = crate::test_rng(0x0c0f_fee5_u32);
        let sizes = [0usize, 0, 1, 512, 513, 4000, 16_383, 16_384, 40_000];
        let mut stream = Vec::new();
        let mut sent = Vec::new();
        for i in 0..300 {
            let len = sizes[next() % sizes.len()];
            let payload: Vec<u8> = (0..len).map(|j| (i * 3 + j) as u8).collect();
            stream.extend((len as u32).to_le_bytes());
            stream.extend_from_slice(&payload);
            sent.push(payload);
        }
        stream.extend(1_000_001u32.to_le_bytes());
        for (read, room) in [(1, 1), (3, 256), (5000, 2), (65_536, 256)] {
            let mut rx = Rx::new(ByteOrder::LittleEndian, 1_000_000);
            let mut run = VecDeque::new();
            let mut got = Vec::new();
            let mut refused = false;
            for piece in stream.chunks(read) {
                rx.raw.extend_from_slice(piece);
                loop {
                    match rx.next_run(false, room, &mut run) {
                        Ok(Some(Next::Run)) => got.extend(run.drain(..).map(|p| p.to_vec())),
                        Ok(Some(Next::Frame(f))) => got.push(f.to_vec()),
                        Ok(None) => break,
                        Err(_) => {
                            refused = true;
                            break;
                        }
                    }
                }
            }
            assert!(refused, "reads of {read}: the over-long header");
            assert!(got == sent, "reads of {read}, room {room}");
        }
    }

    /// A run of small messages is copied into one allocation of exactly their payloads:
    /// none is a view of the read buffer (which a kept message would pin, uncounted).
    /// Larger ones filling most of the buffer are views, a run of them one count of the
    /// buffer.
    #[test]
    fn small_messages_are_copied_in_runs_larger_ones_viewed() {
        let mut rx = Rx::new(ByteOrder::BigEndian, 1 << 20);
        rx.raw.reserve(64 * 1024);
        for i in 0..100u8 {
            rx.raw
                .extend(hail_frame(crate::proto::KIND_MESSAGE, &tagged(i, 64)));
        }
        for j in 0..40 {
            rx.raw
                .extend(hail_frame(crate::proto::KIND_MESSAGE, &tagged(j, 1000)));
        }
        rx.raw.extend(hail_frame(crate::proto::KIND_HEARTBEAT, &[]));
        rx.raw
            .extend(hail_frame(crate::proto::KIND_MESSAGE, &[9; 10]));
        let buffer = rx.raw.as_ptr() as usize..rx.raw.as_ptr() as usize + rx.raw.capacity();
        let mut run = VecDeque::new();
        assert!(matches!(
            rx.next_run(true, 256, &mut run),
            Ok(Some(Next::Run))
        ));
        assert_eq!(run.len(), 100, "the small ones, up to the first larger one");
        let first = run[0].as_ptr() as usize;
        for (i, p) in run.iter().enumerate() {
            assert_eq!(p[..], tagged(i as u8, 64));
            assert_eq!(p.as_ptr() as usize, first + 64 * i, "one allocation");
            assert!(!buffer.contains(&(p.as_ptr() as usize)), "copied");
        }
        run.clear();
        assert!(matches!(
            rx.next_run(true, 256, &mut run),
            Ok(Some(Next::Run))
        ));
        assert_eq!(run.len(), 40, "the larger ones");
        assert!(
            run.iter().all(|p| buffer.contains(&(p.as_ptr() as usize))),
            "views"
        );
        assert!(
            run.iter()
                .enumerate()
                .all(|(j, p)| p[..] == tagged(j as u8, 1000))
        );
        run.clear();
        match rx.next_run(true, 256, &mut run) {
            Ok(Some(Next::Frame(f))) => assert_eq!(&f[..], &[crate::proto::KIND_HEARTBEAT]),
            other => panic!("the heartbeat, whole: {other:?}"),
        }
        assert!(matches!(
            rx.next_run(true, 1, &mut run),
            Ok(Some(Next::Run))
        ));
        assert_eq!(&run[0][..], &[9; 10]);
        assert!(matches!(rx.next_run(true, 256, &mut run), Ok(None)));
        assert_eq!(rx.held(), 0);
    }

    /// A peer sends one 600-byte message, then (once it was read) heartbeats that fill
    /// the rest of the read buffer, again and again: the messages it leaves waiting count
    /// 600 bytes each, and must not keep alive much more than that. Cut as views, each
    /// kept the whole 64 KiB buffer it was read into alive (about 100 times what the
    /// budget counted: with the default share, 16 MiB of such messages held 1.7 GiB).
    #[test]
    fn a_lone_view_does_not_pin_a_read_buffer_the_budget_does_not_count() {
        let mut rx = Rx::new(ByteOrder::BigEndian, 1 << 20);
        for _ in 0..8 {
            rx.after_read(MAX_READ);
        }
        let heartbeat = hail_frame(crate::proto::KIND_HEARTBEAT, &[]);
        // Each receive buffer seen, by its end: its capacity when it was new.
        let mut buffers = std::collections::HashMap::new();
        let mut kept: Vec<Bytes> = Vec::new();
        let mut run = VecDeque::new();
        let mut got = Vec::new();
        for i in 0..32u8 {
            rx.reserve_for_read();
            let end = rx.raw.as_ptr() as usize + rx.raw.capacity();
            buffers.entry(end).or_insert(rx.raw.capacity());
            rx.raw
                .extend(hail_frame(crate::proto::KIND_MESSAGE, &[i; 600]));
            assert!(matches!(
                rx.next_run(true, 256, &mut run),
                Ok(Some(Next::Run))
            ));
            kept.extend(run.drain(..));
            // The next read fills the buffer's room with heartbeats.
            while rx.raw.capacity() - rx.raw.len() >= heartbeat.len() {
                rx.raw.extend_from_slice(&heartbeat);
            }
            drain_runs(&mut rx, 256, &mut got);
        }
        assert!(got.iter().all(|(message, _)| !message), "heartbeats only");
        let pinned: usize = buffers
            .iter()
            .filter(|&(&end, &cap)| {
                kept.iter()
                    .any(|m| (end - cap..end).contains(&(m.as_ptr() as usize)))
            })
            .map(|(_, &cap)| cap)
            .sum();
        let counted: usize = kept.iter().map(Bytes::len).sum();
        assert!(
            kept.iter()
                .enumerate()
                .all(|(i, m)| m[..] == [i as u8; 600]),
            "the messages, whole"
        );
        assert!(
            pinned <= 2 * counted,
            "{} messages counting {counted} bytes keep {pinned} bytes of read buffers alive",
            kept.len()
        );
    }

    /// A frame over the limit, and an empty frame under hail framing, end a run and are
    /// refused as before (`next_frame`'s errors).
    #[test]
    fn a_run_ends_at_a_bad_frame_which_is_refused() {
        let mut rx = Rx::new(ByteOrder::BigEndian, 100);
        rx.raw.extend(hail_frame(crate::proto::KIND_MESSAGE, b"a"));
        rx.raw.extend(framed(101));
        let mut run = VecDeque::new();
        assert!(matches!(
            rx.next_run(true, 256, &mut run),
            Ok(Some(Next::Run))
        ));
        assert_eq!(run.len(), 1);
        assert!(rx.next_run(true, 256, &mut run).is_err(), "too large");
        let mut rx = Rx::new(ByteOrder::BigEndian, 100);
        rx.raw.extend(hail_frame(crate::proto::KIND_MESSAGE, b"a"));
        rx.raw.extend(framed(0));
        assert!(matches!(
            rx.next_run(true, 256, &mut run),
            Ok(Some(Next::Run))
        ));
        match rx.next_run(true, 256, &mut run) {
            Ok(Some(Next::Frame(f))) => {
                assert!(f.is_empty());
                assert!(crate::proto::parse(f).is_err(), "no kind byte");
            }
            other => panic!("the empty frame, whole: {other:?}"),
        }
    }

    #[test]
    fn a_large_frame_in_a_roomy_buffer_gets_an_allocation_of_its_own_size() {
        let len = 64 * 1024;
        // As a buffer grown by doubling holds it: four times the frame.
        let mut src = BytesMut::with_capacity(4 * len);
        src.extend_from_slice(&framed(len));
        src.extend_from_slice(&framed(10)[..8]);
        let Some(Cut::Frame(f)) = cut(&mut src, ByteOrder::BigEndian, 1 << 20, &mut None).unwrap()
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
        let Some(Cut::Large(f)) = cut(&mut src, ByteOrder::BigEndian, 4 << 20, &mut None).unwrap()
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
        let Some(Cut::Frame(f)) = cut(&mut src, ByteOrder::BigEndian, 1 << 20, &mut None).unwrap()
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
        while let Some(Cut::Frame(f)) =
            cut(&mut src, ByteOrder::BigEndian, 1 << 20, &mut None).unwrap()
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
        let lens = [0usize, 1, 3, 600, 70_000, 100, 5, 300_000, 20_000, 2];
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
                let mut run = VecDeque::new();
                let mut got = Vec::new();
                let step = if trickle { 1 } else { wire.len() };
                for piece in wire.chunks(step) {
                    rx.raw.extend_from_slice(piece);
                    loop {
                        match rx.next_run(false, 3, &mut run).unwrap() {
                            Some(Next::Frame(f)) => got.push(f),
                            Some(Next::Run) => {
                                assert!((1..=3).contains(&run.len()));
                                got.extend(run.drain(..));
                            }
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
        assert!(rx.next_frame().is_err());
    }

    /// Under misbehave's `frames`, a 15 MiB frame grew its buffer by doubling (to 16 MiB,
    /// up to twice the frame) and was then copied whole into an allocation of its own:
    /// for a moment twice the frame per worker, none of it counted beyond the frame. A
    /// large frame now moves into its mapping as its bytes come: the receive buffer never
    /// holds more than a read, and what is resident is what came.
    #[test]
    fn a_large_frame_never_grows_the_receive_buffer() {
        let len = 3 << 20;
        let wire = framed(len);
        let mut rx = Rx::new(ByteOrder::BigEndian, 16 << 20);
        let mut fed: usize = 0;
        let frame = loop {
            if let Some(f) = rx.next_frame().unwrap() {
                break f;
            }
            // Every byte of the body that came is held, and counted (the header is read).
            assert_eq!(rx.held(), fed.saturating_sub(HEADER_LEN));
            assert!(
                rx.buffered() <= fed + 2 * MAX_READ + large::PAGE,
                "{}",
                rx.buffered()
            );
            if fed >= HEADER_LEN {
                assert_eq!(rx.announced().header, HEADER_LEN + len);
            }
            rx.reserve_for_read();
            // A read: at most the read size, into the room the buffer has.
            let room = rx.raw.capacity() - rx.raw.len();
            let n = room.min(rx.read_limit(false)).min(wire.len() - fed);
            assert!(n > 0, "room for the next read");
            rx.raw.extend_from_slice(&wire[fed..fed + n]);
            rx.after_read(n);
            fed += n;
            assert!(
                rx.raw.capacity() <= 2 * MAX_READ,
                "{} after {fed}",
                rx.raw.capacity()
            );
        };
        assert_eq!(fed, wire.len());
        assert_eq!(frame.len(), len);
        assert!(frame.iter().all(|&b| b == 0x5a));
        assert_eq!(rx.held(), 0);
    }

    /// Under misbehave's `frames` for 60 s the process grew by 71 MiB over idle while the
    /// budget counted 28: once glibc had freed one mapped 15 MiB buffer it raised its mmap
    /// threshold to that size, and every later frame buffer came from its arenas, which
    /// keep what is freed. A large frame now lives in an anonymous mapping of its own
    /// (whatever the allocator), given back to the system when the frame is dropped.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_frame_lives_in_a_mapping_given_back_when_it_is_dropped() {
        // What a freed 20 MiB buffer does to glibc's threshold (nothing elsewhere).
        drop(std::hint::black_box(vec![1u8; 20 << 20]));
        // Larger than the mappings kept for the next frames (`large::POOL_BYTES`).
        let len = large::POOL_BYTES + (1 << 20);
        for sealed in [false, true] {
            let mut rx = Rx::new(ByteOrder::BigEndian, 16 << 20);
            let wire = if sealed {
                secured(&mut rx, &framed(len))
            } else {
                BytesMut::from(&framed(len)[..])
            };
            let mut frame = None;
            for piece in wire.chunks(MAX_READ) {
                assert!(frame.is_none(), "one frame");
                rx.raw.extend_from_slice(piece);
                if let Some(f) = rx.next_frame().unwrap() {
                    frame = Some(f);
                }
                assert!(rx.held() <= wire.len(), "{}", rx.held());
            }
            let frame = frame.expect("the whole frame");
            assert_eq!(frame.len(), len);
            assert!(frame.iter().all(|&b| b == 0x5a));
            assert_eq!(rx.held(), 0);
            let at = frame.as_ptr() as usize;
            assert_eq!(
                at % large::PAGE,
                0,
                "sealed {sealed}: the frame starts a mapping"
            );
            let holder = mapping_of(at).expect("the frame is mapped");
            assert!(
                holder.end >= at + len,
                "sealed {sealed}: one mapping holds it"
            );
            drop(frame);
            // Unmapped, the frame's mapping is gone (a neighbour it was merged with is
            // split from it): the span that held it is no longer one mapping. Heap memory
            // kept by an allocator would still be.
            assert_ne!(
                mapping_of(at),
                Some(holder),
                "sealed {sealed}: dropped, the frame's memory is given back"
            );
        }
    }

    /// Found in review: the mapping was made of the whole announced length when the header
    /// came, so 4 bytes made the process reserve 16 MiB, and a thousand connections each
    /// sending a header 16 GiB (past a 32-bit address space, or the commit limit under
    /// strict overcommit). Now a header reserves nothing; with the first bytes a frame's
    /// whole length is reserved only within the process's `MAX_RESERVED`, and past it
    /// the room grows with what came, at most twice it.
    #[test]
    fn large_frames_reserve_room_only_within_the_cap_or_for_what_came() {
        let len = 16 << 20;
        let wire = framed(len);
        let room = |rx: &Rx| rx.large.as_ref().map_or(0, Large::capacity);
        // Twice as many frames as the cap holds whole (other tests may hold some of it).
        let mut rxs: Vec<Rx> = (0..2 * large::MAX_RESERVED / len)
            .map(|_| Rx::new(ByteOrder::BigEndian, 16 << 20))
            .collect();
        for rx in &mut rxs {
            rx.raw.extend_from_slice(&wire[..HEADER_LEN]);
            assert!(rx.next_frame().unwrap().is_none());
            assert_eq!(room(rx), 0, "a header alone reserves nothing");
            assert_eq!(rx.announced().header, HEADER_LEN + len);
        }
        let first = &wire[HEADER_LEN..HEADER_LEN + MAX_READ];
        for rx in &mut rxs {
            rx.raw.extend_from_slice(first);
            assert!(rx.next_frame().unwrap().is_none());
        }
        let whole = rxs.iter().filter(|rx| room(rx) >= len).count();
        assert!(whole <= large::MAX_RESERVED / len, "{whole} reserved whole");
        assert!(
            rxs.iter()
                .all(|rx| room(rx) >= len || room(rx) <= MAPPED_FROM),
            "past the cap, room for what came"
        );
        // One of those past the cap, to its end: its room stays within twice what came
        // (or becomes its whole length once the cap has room again).
        let mut rx = rxs
            .into_iter()
            .find(|rx| room(rx) < len)
            .expect("one frame past the cap");
        let mut fed = HEADER_LEN + MAX_READ;
        let frame = loop {
            let n = MAX_READ.min(wire.len() - fed);
            rx.raw.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            if let Some(f) = rx.next_frame().unwrap() {
                break f;
            }
            let came = fed - HEADER_LEN;
            assert!(room(&rx) >= came);
            assert!(
                room(&rx) >= len || room(&rx) <= (2 * came).max(MAPPED_FROM),
                "{} for {came}",
                room(&rx)
            );
        };
        assert_eq!(frame.len(), len);
        assert!(frame.iter().all(|&b| b == 0x5a));
    }

    /// The span of the mapping that holds address `at` in this process (`/proc/self/maps`).
    #[cfg(target_os = "linux")]
    fn mapping_of(at: usize) -> Option<std::ops::Range<usize>> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().find_map(|line| {
            let span = line.split(' ').next()?;
            let (a, b) = span.split_once('-')?;
            let a = usize::from_str_radix(a, 16).ok()?;
            let b = usize::from_str_radix(b, 16).ok()?;
            (a..b).contains(&at).then_some(a..b)
        })
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
        assert!(rx.next_frame().unwrap().is_none());
        assert_eq!(rx.announced().claimed, 2 + seal::MAX_RECORD);
        assert!(
            rx.announced().claimed >= crate::budget::SMALL_HOLDER,
            "a full record is large"
        );
        assert_eq!(rx.announced().header, 0, "but no header is open");
        rx.raw.extend_from_slice(&wire[100..]);
        assert!(
            rx.next_frame().unwrap().is_none(),
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
