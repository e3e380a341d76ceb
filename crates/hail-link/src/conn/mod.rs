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
use std::sync::{Mutex, MutexGuard, OnceLock};

use bytes::{BufMut, BytesMut};
use hail_wire::{FrameCodec, PayloadCodec, WireError};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

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

#[derive(Debug, Default)]
struct Outbox {
    /// Whole frames (header included), in order, not yet taken by the writer.
    buf: BytesMut,
    /// How many frames `buf` holds.
    frames: u64,
    /// A graceful close was asked for: no new frames, flush, then close.
    closing: bool,
    /// The connection is finished: nothing more will be written.
    dead: bool,
}

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

    /// Appends one whole frame written by `write`, if the queue has room.
    fn push(&self, write: impl FnOnce(&mut BytesMut) -> Result<(), WireError>) -> Result<(), Push> {
        let mut out = self.out();
        if out.dead || out.closing {
            return Err(Push::Closed);
        }
        let before = out.buf.len();
        if before >= self.limit {
            return Err(Push::Full);
        }
        write(&mut out.buf).map_err(Push::Encode)?;
        if before > 0 && out.buf.len() > self.limit {
            out.buf.truncate(before);
            return Err(Push::Full);
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

    /// Takes the frames that were queued but never written (for the reconnecting client).
    pub(crate) fn take_unsent(&self) -> (BytesMut, u64) {
        let mut out = self.out();
        (
            std::mem::take(&mut out.buf),
            std::mem::take(&mut out.frames),
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
