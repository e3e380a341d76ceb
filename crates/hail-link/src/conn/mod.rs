//! One link: the [`Connection`] handle ([`handle`]), the state its clones and its two
//! tasks share, with the send queue (here), and the [`reader`] and [`writer`] tasks.
//!
//! The handle queues whole encoded frames in the [`Outbox`]; the writer takes everything
//! queued at once, seals it on a secured link and writes it. The reader decodes frames
//! and hands them to the connection's [`Sink`](crate::events::Sink). Closing is a
//! [`Phase`] both tasks watch.

mod handle;
mod reader;
mod writer;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::{BufMut, BytesMut};
use hail_wire::{FrameCodec, PayloadCodec, WireError};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::budget::{Account, Budget};
use crate::error::{CloseReason, LinkError};
use crate::id::ConnId;
use crate::proto;

pub use handle::{Connection, ReadGate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Closing,
    Kill,
}

#[derive(Debug)]
struct Outbox {
    /// Whole frames (header included), in order, not yet taken by the writer. Counted in
    /// the budget (`charged`), from `push` until the writer has written it.
    buf: BytesMut,
    /// Bytes of the budget `buf` holds: its length rounded up to [`CHARGE_STEP`]s.
    charged: usize,
    /// How many frames `buf` holds.
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
            buf: BytesMut::new(),
            charged: 0,
            frames: 0,
            closing: false,
            dead: false,
            budget,
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
    /// The peer's identity key, proven in the handshake.
    peer_key: Option<hail_crypto::PublicKey>,
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

    /// Appends one whole frame written by `write`, if the queue has room (and, when
    /// `budgeted`, the memory budget is not spent or the queue is empty).
    fn push(
        &self,
        write: impl FnOnce(&mut BytesMut) -> Result<(), WireError>,
        budgeted: bool,
    ) -> Result<(), Push> {
        let mut out = self.out();
        if out.dead || out.closing {
            return Err(Push::Closed);
        }
        let before = out.buf.len();
        if before >= self.limit || (budgeted && before > 0 && out.budget.is_spent()) {
            return Err(Push::Full);
        }
        write(&mut out.buf).map_err(Push::Encode)?;
        if before > 0 && out.buf.len() > self.limit {
            out.buf.truncate(before);
            return Err(Push::Full);
        }
        let len = out.buf.len();
        if len > out.charged {
            let step = (len - out.charged).max(CHARGE_STEP);
            out.budget.take(step);
            out.charged += step;
        }
        out.frames += 1;
        drop(out);
        if before == 0 {
            self.wake.notify_one();
        }
        Ok(())
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
        let mut out = self.out();
        let charged = std::mem::take(&mut out.charged);
        out.budget.give(charged);
        (
            std::mem::take(&mut out.buf),
            std::mem::take(&mut out.frames),
        )
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
