//! One link: the [`Connection`] handle ([`handle`]), the state its clones and its two
//! tasks share, with the send queue (here), and the [`reader`] and [`writer`] tasks.
//!
//! The handle queues whole encoded frames in the [`Outbox`] (copied in, or a header copied
//! and an owned payload kept: [`queue`]); the writer takes everything queued at once, seals
//! it on a secured link and writes it. The reader decodes frames
//! and hands them to the connection's [`Sink`](crate::events::Sink). Closing is a
//! [`Phase`] both tasks watch.

mod handle;
mod queue;
mod reader;
mod writer;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use hail_wire::{ByteOrder, FrameCodec, PayloadCodec, WireError};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::budget::{Account, Budget};
use crate::error::{CloseReason, LinkError};
use crate::id::ConnId;
use crate::proto;

pub use handle::{Connection, ReadGate};
use queue::Queued;

/// [`Connection::send_bytes`] and [`Connection::try_send_bytes`] copy a payload shorter
/// than this (512 bytes) into the send queue, as [`Connection::send_parts`] does, and keep
/// a longer one as it is, written from where its owner put it. Below it a copy costs less
/// than keeping the payload (its reference count, a slot in the queue, a slice of the
/// vectored write); a caller that must make a [`Bytes`] for the call (wrapping a buffer
/// of its own) can copy below it instead.
pub const SEND_COPY_BELOW: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Closing,
    Kill,
}

#[derive(Debug)]
struct Outbox {
    /// Whole frames (header included), in order, not yet taken by the writer, kept
    /// payloads included. Counted in the budget (`charged`), from `push` until the writer
    /// has written it; a kept payload counts its length.
    q: Queued,
    /// Bytes of the budget `q` holds: its length rounded up to [`CHARGE_STEP`]s.
    charged: usize,
    /// How many frames `q` holds.
    frames: u64,
    /// A graceful close was asked for: no new frames, flush, then close.
    closing: bool,
    /// The connection is finished: nothing more will be written.
    dead: bool,
    /// The budget `buf`'s bytes are counted in.
    budget: Budget,
}

impl Outbox {
    fn new(budget: Budget) -> Self {
        Self {
            q: Queued::default(),
            charged: 0,
            frames: 0,
            closing: false,
            dead: false,
            budget,
        }
    }
}

impl Outbox {
    /// Counts what the queue holds in the budget, in [`CHARGE_STEP`]s.
    fn charge(&mut self) {
        let len = self.q.len();
        if len > self.charged {
            let step = (len - self.charged).max(CHARGE_STEP);
            self.budget.take(step);
            self.charged += step;
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.budget.give(self.charged);
    }
}

/// The send queue takes the budget in steps of 4 KiB: one count per step rather than per
/// frame. So a queue counts up to 4 KiB more than it holds (never less).
const CHARGE_STEP: usize = 4 * 1024;

#[derive(Debug, Default)]
struct Counters {
    frames_written: AtomicU64,
    bytes_written: AtomicU64,
    messages_received: AtomicU64,
    bytes_received: AtomicU64,
    undecodable: AtomicU64,
    undelivered: AtomicU64,
    rx_buffered: AtomicUsize,
}

/// Counters of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnStats {
    /// Frames (messages and control frames) written to the socket.
    pub frames_written: u64,
    /// Bytes written to the socket (after sealing).
    pub bytes_written: u64,
    /// Messages received and decoded.
    pub messages_received: u64,
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Frames whose payload could not be decoded (dropped, logged at debug level).
    pub undecodable: u64,
    /// Messages received after the receiving side ([`Incoming`](crate::Incoming) or the event stream) was dropped.
    pub undelivered: u64,
    /// Encoded bytes waiting in the send queue.
    pub queued_bytes: usize,
    /// Memory held by the receive buffers, in bytes.
    pub rx_buffered_bytes: usize,
}

pub(crate) struct Shared {
    id: ConnId,
    peer: SocketAddr,
    local: SocketAddr,
    secure: bool,
    /// The peer's identity key, proven in the handshake. Boxed: a key is 192 bytes, and
    /// it is read once or twice in a connection's life.
    peer_key: Option<Box<hail_crypto::PublicKey>>,
    frames: FrameCodec,
    hail: bool,
    limit: usize,
    /// This connection's draw on the memory budget.
    account: Arc<Account>,
    /// The most this connection's partial frame and undelivered messages may hold before
    /// it stops reading: the budget's peer share, or one largest frame and a record.
    share: usize,
    /// How long a partial frame or a write may stall on the budget (`LinkConfig::budget_stall`).
    stall: std::time::Duration,
    /// Bytes of the batch the writer is writing now (0 between writes): a paused reader
    /// tells a peer that reads nothing by it.
    in_flight: AtomicUsize,
    out: Mutex<Outbox>,
    wake: Notify,
    space: Notify,
    phase: watch::Sender<Phase>,
    reason: OnceLock<CloseReason>,
    done: watch::Sender<bool>,
    /// Set by the writer once a graceful close wrote everything (close frame and FIN).
    flushed: watch::Sender<bool>,
    stats: Counters,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn out(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding this lock cannot leave the outbox inconsistent (every
        // update is a plain field write), so a poisoned lock is still usable.
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn closed_error(&self) -> LinkError {
        LinkError::Closed(self.reason.get().cloned().unwrap_or(CloseReason::Closed))
    }

    /// What a push's outcome is to the sender.
    fn link_result(&self, r: Result<(), Push>) -> Result<(), LinkError> {
        match r {
            Ok(()) => Ok(()),
            Err(Push::Full) => Err(LinkError::Full),
            Err(Push::Closed) => Err(self.closed_error()),
            Err(Push::Encode(e)) => Err(LinkError::Encode(e)),
        }
    }

    /// Appends one whole frame written by `write`, if the queue has room (and, when
    /// `budgeted`, the memory budget is not spent or the queue is empty).
    ///
    /// The budget is looked at only when the frame needs more of it than the queue has
    /// counted already (a new [`CHARGE_STEP`]): a frame that fits in what is counted
    /// spends nothing more, so the bound holds with one look per step, not per frame (its
    /// counter is written by every link that reads, on every core).
    fn push(
        &self,
        write: impl FnOnce(&mut BytesMut) -> Result<(), WireError>,
        budgeted: bool,
    ) -> Result<(), Push> {
        let mut out = self.out();
        if out.dead || out.closing {
            return Err(Push::Closed);
        }
        let before = out.q.len();
        if before >= self.limit {
            return Err(Push::Full);
        }
        write(&mut out.q.buf).map_err(Push::Encode)?;
        let len = out.q.len();
        if before > 0
            && (len > self.limit || (budgeted && len > out.charged && out.budget.is_spent()))
        {
            out.q.truncate(before);
            return Err(Push::Full);
        }
        self.queued(out, before);
        Ok(())
    }

    /// Appends one message frame of `head` and `payload`: `head` copied, `payload` kept as
    /// it is (taken out of the `Option` once queued; its length counted in the queue and
    /// the budget); the rules of [`push`](Self::push) with `budgeted`.
    fn push_kept(&self, head: &[u8], payload: &mut Option<Bytes>) -> Result<(), Push> {
        let Some(len) = payload.as_ref().map(Bytes::len) else {
            return Ok(());
        };
        let body = usize::from(self.hail) + head.len() + len;
        if body > self.frames.max_frame_len() {
            return Err(Push::Encode(WireError::TooLarge {
                len: body,
                max: self.frames.max_frame_len(),
            }));
        }
        let mut out = self.out();
        if out.dead || out.closing {
            return Err(Push::Closed);
        }
        let before = out.q.len();
        let len = before + hail_wire::frame::HEADER_LEN + body;
        if before > 0
            && (before >= self.limit
                || len > self.limit
                || (len > out.charged && out.budget.is_spent()))
        {
            return Err(Push::Full);
        }
        // `body <= max_frame_len <= u32::MAX` was checked above.
        let n = body as u32;
        let buf = &mut out.q.buf;
        match self.frames.byte_order() {
            ByteOrder::BigEndian => buf.put_u32(n),
            ByteOrder::LittleEndian => buf.put_u32_le(n),
        }
        if self.hail {
            buf.put_u8(proto::KIND_MESSAGE);
        }
        buf.put_slice(head);
        if let Some(p) = payload.take() {
            out.q.keep(p);
        }
        self.queued(out, before);
        Ok(())
    }

    /// A frame was queued after `before` bytes: counts it, and wakes the writer if the
    /// queue was empty.
    fn queued(&self, mut out: MutexGuard<'_, Outbox>, before: usize) {
        out.charge();
        out.frames += 1;
        drop(out);
        if before == 0 {
            self.wake.notify_one();
        }
    }

    /// Starts a graceful close: queued frames go out, then a close frame, then FIN.
    pub(crate) fn begin_close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        {
            let mut out = self.out();
            if out.closing || out.dead {
                return;
            }
            out.closing = true;
        }
        self.phase.send_if_modified(|p| {
            if *p == Phase::Open {
                *p = Phase::Closing;
                true
            } else {
                false
            }
        });
        self.wake.notify_one();
        self.space.notify_waiters();
    }

    /// Ends the connection at once.
    pub(crate) fn kill(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.out().dead = true;
        self.phase.send_replace(Phase::Kill);
        self.space.notify_waiters();
    }

    fn finish(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.out().dead = true;
        self.phase.send_replace(Phase::Kill);
        self.space.notify_waiters();
        self.done.send_replace(true);
    }

    fn final_reason(&self) -> CloseReason {
        self.reason.get().cloned().unwrap_or(CloseReason::Closed)
    }

    /// Takes the frames that were queued but never written (for the reconnecting client);
    /// they leave the budget.
    pub(crate) fn take_unsent(&self) -> (BytesMut, u64) {
        let (q, frames) = {
            let mut out = self.out();
            let charged = std::mem::take(&mut out.charged);
            out.budget.give(charged);
            (std::mem::take(&mut out.q), std::mem::take(&mut out.frames))
        };
        // Kept payloads are copied here, outside the lock (only after a link was lost).
        (q.into_buf(), frames)
    }

    /// True when the reader must not read now ([`Budget::holds_back`]): what it holds
    /// (its partial frame, `rx_held` bytes, its messages not yet taken and the holds made
    /// on it) is its share, or the budget is spent (to its reserve, for larger holders:
    /// a partial frame counts there as the `claimed` bytes its headers announced).
    fn over_budget(&self, rx_held: usize, claimed: usize) -> bool {
        let waiting = self.account.waiting_here();
        self.account.budget.holds_back(
            rx_held + waiting,
            rx_held.max(claimed) + waiting,
            self.share,
        )
    }
}

enum Push {
    Full,
    Closed,
    Encode(WireError),
}

/// Appends `msg` as one whole frame (with the message kind byte under hail framing).
pub(crate) fn encode_message<P: PayloadCodec>(
    frames: &FrameCodec,
    hail: bool,
    payload: &P,
    msg: &P::Item,
    dst: &mut BytesMut,
) -> Result<(), WireError> {
    frames.encode_with(dst, |dst| {
        if hail {
            dst.put_u8(proto::KIND_MESSAGE);
        }
        payload.encode_payload(msg, dst)
    })
}

fn min_deadline(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn wait_kill(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p == Phase::Kill).await;
}
