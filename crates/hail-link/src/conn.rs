//! One link: the [`Connection`] handle and its reader and writer tasks.

use std::any::Any;
use std::borrow::Borrow;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use hail_wire::{Binary, ByteOrder, FrameCodec, PayloadCodec, WireError};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::chan;
use crate::client::ClientEvent;
use crate::config::{Framing, Heartbeat, LinkConfig};
use crate::error::ProtocolError;
use crate::handshake::{self, Established};
use crate::proto::{self, CloseCode, Control};
use crate::rx::{Next, Rx, Small};
use crate::seal::Sealer;
use crate::server::ServerEvent;
use crate::timing::Liveness;
use crate::{CloseReason, LinkError};

/// Identifies one connection for the life of the process (also used as the server's client id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

/// A server's name for one of its clients: the [`ConnId`] of that client's connection.
pub type ClientId = ConnId;

impl ConnId {
    pub(crate) fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The number behind the id (unique in this process, never reused).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

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
    /// Messages received after the receiving side ([`Incoming`] or the event stream) was dropped.
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

/// Where a connection's incoming messages go.
pub(crate) enum Sink<T> {
    Own(chan::Sender<T>),
    Server {
        tx: chan::Sender<ServerEvent<T>>,
        id: ConnId,
        /// Runs when the connection ends, before the `Closed` event; what it returns is
        /// dropped after the event was sent.
        on_close: Option<Box<dyn FnOnce() -> Box<dyn Any + Send> + Send + Sync>>,
    },
    Client(chan::Sender<ClientEvent<T>>),
}

impl<T> Sink<T> {
    /// Hands every message of `batch` over, in order, waiting for room; returns how many
    /// could not be delivered because the receiver is gone.
    async fn deliver_all(&self, batch: &mut Vec<T>) -> u64 {
        match self {
            Self::Own(tx) => tx.send_all(batch, |m| m).await,
            Self::Server { tx, id, .. } => {
                let id = *id;
                tx.send_all(batch, |msg| ServerEvent::Message { id, msg })
                    .await
            }
            Self::Client(tx) => tx.send_all(batch, ClientEvent::Message).await,
        }
    }

    async fn closed(self, reason: CloseReason) {
        if let Self::Server { tx, id, on_close } = self {
            let guard = on_close.map(|f| f());
            let _ = tx.send(ServerEvent::Closed { id, reason }).await;
            drop(guard);
        }
    }
}

/// Messages up to this size are copied out of the read buffer: 512 bytes. They are copied
/// into one shared allocation per delivered batch (at most 16 KiB), so the receiving task
/// never touches the read buffer's reference count (a contended cache line) and a burst of
/// small messages costs one allocation rather than one each. A larger message is handed
/// out as a slice of the read buffer, without a copy.
const SMALL_COPY: usize = 512;

/// Most messages handed to the receiver in one go: 256.
const MAX_BATCH: usize = 256;

struct Tasks {
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// A handle to one established link, the same for an accepted and a dialed connection.
///
/// Cheap to clone; all clones drive the same connection. Messages are encoded with the
/// payload codec `P` (default [`Binary`]: `Bytes` in, `Bytes` out) and queued in a bounded
/// send queue ([`LinkConfig::queue_bytes`], default 512 KiB) that one writer task drains,
/// coalescing everything queued into few system calls. One reader task decodes incoming
/// frames and hands them to the connection's receiver ([`Incoming`], or the server's or
/// client's event stream).
///
/// * [`send`](Self::send) waits for room; [`try_send`](Self::try_send) fails with
///   [`LinkError::Full`]. A message for which either returned `Ok` is in the queue and
///   will be written unless the connection dies first; then the connection's close
///   reason ([`closed`](Self::closed)) tells why.
/// * [`close`](Self::close) is graceful: queued messages go out, then a close frame,
///   then the stream ends. Dropping the last handle closes at once without flushing.
pub struct Connection<P: PayloadCodec = Binary> {
    shared: Arc<Shared>,
    payload: P,
    _tasks: Arc<Tasks>,
}

impl<P: PayloadCodec + Clone> Clone for Connection<P> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            payload: self.payload.clone(),
            _tasks: Arc::clone(&self._tasks),
        }
    }
}

impl<P: PayloadCodec> fmt::Debug for Connection<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl<P> Connection<P>
where
    P: PayloadCodec + Clone + Send + Sync + 'static,
    P::Item: Send + 'static,
{
    /// Connects to `addr`, runs the handshake and returns the connection and its messages.
    ///
    /// No reconnection: use [`Client`](crate::Client) for that. Fails with
    /// [`LinkError::AuthFailed`] on a passphrase mismatch, [`LinkError::Refused`] when the
    /// server refuses, [`LinkError::HandshakeTimeout`] after the handshake deadline.
    pub async fn connect(
        addr: SocketAddr,
        config: &LinkConfig,
        payload: P,
    ) -> Result<(Self, Incoming<P::Item>), LinkError> {
        config.validate()?;
        let est = handshake::dial(addr, config, config.handshake_timeout).await?;
        let (tx, rx) = chan::channel(config.incoming_capacity);
        let conn = Self::start(est, config, payload, Sink::Own(tx), None, None);
        Ok((conn, Incoming { rx }))
    }

    pub(crate) fn start(
        est: Established,
        cfg: &LinkConfig,
        payload: P,
        sink: Sink<P::Item>,
        seed: Option<(BytesMut, u64)>,
        gate: Option<oneshot::Receiver<()>>,
    ) -> Self {
        let Established {
            stream,
            rx,
            sealer,
            peer,
            local,
        } = est;
        let id = match &sink {
            Sink::Server { id, .. } => *id,
            _ => ConnId::fresh(),
        };
        let mut outbox = Outbox::default();
        if let Some((buf, frames)) = seed {
            outbox.buf = buf;
            outbox.frames = frames;
        }
        let shared = Arc::new(Shared {
            id,
            peer,
            local,
            secure: sealer.is_some(),
            frames: FrameCodec::builder()
                .byte_order(cfg.byte_order)
                .max_frame_len(cfg.max_frame_len)
                .build(),
            hail: cfg.framing == Framing::Hail,
            limit: cfg.queue_bytes,
            out: Mutex::new(outbox),
            wake: Notify::new(),
            space: Notify::new(),
            phase: watch::Sender::new(Phase::Open),
            reason: OnceLock::new(),
            done: watch::Sender::new(false),
            flushed: watch::Sender::new(false),
            stats: Counters::default(),
        });
        let (rd, wr) = stream.into_split();
        let hb = cfg.heartbeat_active();
        let reader = tokio::spawn(reader_task(
            Arc::clone(&shared),
            rd,
            rx,
            payload.clone(),
            sink,
            (hb, cfg.close_linger),
            gate,
        ));
        let writer = tokio::spawn(writer_task(
            Arc::clone(&shared),
            wr,
            sealer,
            hb,
            cfg.byte_order,
        ));
        Self {
            shared,
            payload,
            _tasks: Arc::new(Tasks {
                reader: reader.abort_handle(),
                writer: writer.abort_handle(),
            }),
        }
    }
}

impl<P: PayloadCodec> Connection<P> {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This connection's id (unique in the process; the server's [`ClientId`]).
    pub fn id(&self) -> ConnId {
        self.shared.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// Our local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// True when the link is encrypted and authenticated (Noise).
    pub fn is_secure(&self) -> bool {
        self.shared.secure
    }

    fn encode_frame(&self, msg: &P::Item, dst: &mut BytesMut) -> Result<(), WireError> {
        encode_message(
            &self.shared.frames,
            self.shared.hail,
            &self.payload,
            msg,
            dst,
        )
    }

    /// Encodes one message as a whole frame (for sending the same bytes to many links).
    pub(crate) fn encode_to(&self, msg: &P::Item, dst: &mut BytesMut) -> Result<(), LinkError> {
        self.encode_frame(msg, dst).map_err(LinkError::Encode)
    }

    /// Queues `msg`, waiting while the send queue is full.
    ///
    /// Errors: [`LinkError::Closed`] (with the reason) when the connection is closing or
    /// closed, [`LinkError::Encode`] when the message cannot be encoded or is longer than
    /// the frame limit. Cancel-safe: if the future is dropped, the message was either
    /// queued whole or not at all.
    pub async fn send(&self, msg: impl Borrow<P::Item>) -> Result<(), LinkError> {
        let msg = msg.borrow();
        // Fast path: room in the queue, no waiter registration.
        match self.shared.push(|dst| self.encode_frame(msg, dst)) {
            Ok(()) => return Ok(()),
            Err(Push::Full) => {}
            Err(Push::Closed) => return Err(self.shared.closed_error()),
            Err(Push::Encode(e)) => return Err(LinkError::Encode(e)),
        }
        loop {
            let notified = self.shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.shared.push(|dst| self.encode_frame(msg, dst)) {
                Ok(()) => return Ok(()),
                Err(Push::Full) => notified.await,
                Err(Push::Closed) => return Err(self.shared.closed_error()),
                Err(Push::Encode(e)) => return Err(LinkError::Encode(e)),
            }
        }
    }

    /// Queues `msg` if the send queue has room, or fails with [`LinkError::Full`].
    pub fn try_send(&self, msg: impl Borrow<P::Item>) -> Result<(), LinkError> {
        match self.shared.push(|dst| self.encode_frame(msg.borrow(), dst)) {
            Ok(()) => Ok(()),
            Err(Push::Full) => Err(LinkError::Full),
            Err(Push::Closed) => Err(self.shared.closed_error()),
            Err(Push::Encode(e)) => Err(LinkError::Encode(e)),
        }
    }

    /// Queues an already encoded frame if there is room (broadcast).
    pub(crate) fn try_send_frame(&self, frame: &[u8]) -> Result<(), LinkError> {
        match self.shared.push(|dst| {
            dst.extend_from_slice(frame);
            Ok(())
        }) {
            Ok(()) => Ok(()),
            Err(Push::Full) => Err(LinkError::Full),
            Err(Push::Closed) => Err(self.shared.closed_error()),
            Err(Push::Encode(e)) => Err(LinkError::Encode(e)),
        }
    }

    /// Closes gracefully: no new messages are accepted, queued ones are written, then the
    /// peer is told (a close frame) and the stream ends. Returns at once; await
    /// [`closed`](Self::closed) to wait for the end (bounded by
    /// [`LinkConfig::close_linger`], default 2 s, after the last write).
    pub fn close(&self) {
        self.shared.begin_close(CloseReason::Closed);
    }

    pub(crate) fn close_with(&self, reason: CloseReason) {
        self.shared.begin_close(reason);
    }

    /// Closes at once, dropping queued messages.
    pub(crate) fn kill(&self, reason: CloseReason) {
        self.shared.kill(reason);
    }

    /// True once the connection stopped accepting messages (closing or closed).
    pub fn is_closed(&self) -> bool {
        let out = self.shared.out();
        out.closing || out.dead
    }

    /// The close reason, once the connection has ended.
    pub fn close_reason(&self) -> Option<CloseReason> {
        if *self.shared.done.borrow() {
            Some(self.shared.final_reason())
        } else {
            None
        }
    }

    /// Waits until the connection has ended and returns why. Every message received
    /// before the end has been handed to the receiver by then.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.shared.done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
        self.shared.final_reason()
    }

    /// Bytes waiting in the send queue.
    pub fn queued_bytes(&self) -> usize {
        self.shared.out().buf.len()
    }

    /// This connection's counters.
    pub fn stats(&self) -> ConnStats {
        let c = &self.shared.stats;
        ConnStats {
            frames_written: c.frames_written.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            messages_received: c.messages_received.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            undecodable: c.undecodable.load(Ordering::Relaxed),
            undelivered: c.undelivered.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes(),
            rx_buffered_bytes: c.rx_buffered.load(Ordering::Relaxed),
        }
    }
}

/// The messages of one connection made with [`Connection::connect`], in order.
///
/// Ends (`None`) when the connection has ended; [`Connection::closed`] says why.
/// A [`Stream`](futures_core::Stream) as well.
#[derive(Debug)]
pub struct Incoming<T> {
    rx: chan::Receiver<T>,
}

impl<T> Incoming<T> {
    /// The next message, or `None` once the connection has ended.
    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await
    }

    /// Waits for at least one message, then moves up to `limit` available messages into
    /// `buf`; returns how many (0 once the connection has ended).
    pub async fn recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit).await
    }
}

impl<T> futures_core::Stream for Incoming<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
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

async fn reader_task<P: PayloadCodec>(
    shared: Arc<Shared>,
    rd: OwnedReadHalf,
    mut rx: Rx,
    payload: P,
    sink: Sink<P::Item>,
    (hb, linger): (Option<Heartbeat>, Duration),
    gate: Option<oneshot::Receiver<()>>,
) {
    // The owner announces the connection (e.g. the server's `Connected` event) first.
    if let Some(gate) = gate {
        let _ = gate.await;
    }
    let mut phase = shared.phase.subscribe();
    let mut live = hb.map(|h| Liveness::new(h, Instant::now().into_std()));
    let mut linger_at: Option<Instant> = None;
    let stats = &shared.stats;
    let mut batch: Vec<P::Item> = Vec::new();
    // Small messages are copied into one slab per batch (see `SMALL_COPY`).
    let mut slab = BytesMut::new();
    let reason = 'run: loop {
        // Decode everything that is whole (up to a batch), then hand it over in one go:
        // one wake-up of the receiver per batch rather than per message.
        let mut failed = None;
        while batch.len() < MAX_BATCH {
            let small = Small {
                slab: &mut slab,
                max: SMALL_COPY,
                hail: shared.hail,
            };
            let body = match rx.next(Some(small)) {
                Ok(Some(Next::Small(body))) => body,
                Ok(Some(Next::Frame(frame))) if shared.hail => match proto::parse(frame) {
                    Ok(Control::Message(body)) => body,
                    Ok(Control::Heartbeat) => continue,
                    Ok(Control::Close(code)) => {
                        shared.begin_close(code.received_reason());
                        continue;
                    }
                    Ok(Control::Hello { .. } | Control::Welcome { .. }) => {
                        failed = Some(CloseReason::Protocol(ProtocolError::Unexpected(
                            "handshake",
                        )));
                        break;
                    }
                    Err(e) => {
                        failed = Some(CloseReason::Protocol(e));
                        break;
                    }
                },
                Ok(Some(Next::Frame(frame))) => frame,
                Ok(None) => break,
                Err(r) => {
                    failed = Some(r);
                    break;
                }
            };
            match payload.decode_payload(body) {
                Ok(msg) => batch.push(msg),
                Err(e) if e.is_payload_error() => {
                    stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(conn = %shared.id, error = %e, "undecodable message dropped");
                }
                Err(e) => {
                    failed = Some(CloseReason::wire(e));
                    break;
                }
            }
        }
        if !batch.is_empty() {
            stats
                .messages_received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            // A receiver that takes nothing must not keep a killed connection alive.
            let lost = tokio::select! {
                biased;
                lost = sink.deliver_all(&mut batch) => lost,
                () = wait_kill(&mut phase) => break 'run CloseReason::Closed,
            };
            // The next batch copies into a slab of its own: the receiver releasing this
            // batch's messages never shares a reference count with the reader.
            slab = BytesMut::new();
            if lost > 0 {
                stats.undelivered.fetch_add(lost, Ordering::Relaxed);
            }
            if let Some(l) = &mut live {
                // Time spent handing messages to a slow receiver is not the peer's silence.
                l.on_receive(Instant::now().into_std());
            }
            if failed.is_none() {
                continue;
            }
        }
        if let Some(r) = failed {
            break 'run r;
        }
        // Try the socket first; only a link with nothing to read waits, and it waits
        // without a read buffer (an idle link holds no receive memory).
        // A peer that never pauses must not hide a close or a kill from us.
        match *phase.borrow_and_update() {
            Phase::Open => {}
            Phase::Closing => {
                linger_at.get_or_insert(Instant::now() + linger);
            }
            Phase::Kill => break CloseReason::Closed,
        }
        if linger_at.is_some_and(|at| Instant::now() >= at) {
            break CloseReason::Closed;
        }
        rx.reserve_for_read();
        match rd.try_read_buf(&mut rx.raw) {
            Ok(0) => {
                // The peer finished its side. While we close gracefully (its close frame
                // or ours), our writer may still be writing what `send` accepted: the
                // peer keeps reading until our FIN, so let the writer finish first.
                if let Some(at) = linger_at {
                    let mut flushed = shared.flushed.subscribe();
                    tokio::select! {
                        biased;
                        _ = flushed.wait_for(|f| *f) => {}
                        () = wait_kill(&mut phase) => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                break CloseReason::PeerClosed;
            }
            Ok(n) => {
                rx.after_read(n);
                stats.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                if let Some(l) = &mut live {
                    l.on_receive(Instant::now().into_std());
                }
                // Reads that never block would never yield: give the scheduler its turn.
                tokio::task::consume_budget().await;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => break CloseReason::io(e),
        }
        rx.shrink_if_idle();
        stats.rx_buffered.store(rx.buffered(), Ordering::Relaxed);
        let dead_at = live.as_ref().map(|l| Instant::from_std(l.dead_at()));
        let deadline = min_deadline(if linger_at.is_some() { None } else { dead_at }, linger_at);
        tokio::select! {
            biased;
            r = rd.readable() => {
                if let Err(e) = r {
                    break CloseReason::io(e);
                }
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    break CloseReason::Closed;
                }
                match *phase.borrow_and_update() {
                    Phase::Open => {}
                    Phase::Closing => {
                        linger_at.get_or_insert(Instant::now() + linger);
                    }
                    Phase::Kill => break CloseReason::Closed,
                }
            }
            () = sleep_until_opt(deadline) => {
                let now = Instant::now();
                if linger_at.is_some_and(|at| now >= at) {
                    break CloseReason::Closed;
                }
                if live.as_ref().is_some_and(|l| l.is_dead(now.into_std())) {
                    break CloseReason::Timeout;
                }
            }
        }
    };
    if matches!(reason, CloseReason::Timeout | CloseReason::Protocol(_)) {
        tracing::debug!(conn = %shared.id, %reason, "closing");
    }
    shared.finish(reason);
    stats.rx_buffered.store(0, Ordering::Relaxed);
    drop(rd);
    sink.closed(shared.final_reason()).await;
}

/// Keeps at most this much spare capacity in the writer's buffers while idle: 64 KiB.
const IDLE_KEEP: usize = 64 * 1024;

async fn writer_task(
    shared: Arc<Shared>,
    mut wr: OwnedWriteHalf,
    mut sealer: Option<Sealer>,
    hb: Option<Heartbeat>,
    order: ByteOrder,
) {
    let big = order == ByteOrder::BigEndian;
    let mut phase = shared.phase.subscribe();
    let mut batch = BytesMut::new();
    let mut sealed = BytesMut::new();
    let mut live = hb.map(|h| Liveness::new(h, Instant::now().into_std()));
    let stats = &shared.stats;
    loop {
        let (frames, closing) = {
            let mut out = shared.out();
            if out.dead {
                return;
            }
            std::mem::swap(&mut out.buf, &mut batch);
            (std::mem::take(&mut out.frames), out.closing)
        };
        let mut frames = frames;
        let mut last = false;
        if batch.is_empty() {
            if closing {
                if shared.hail {
                    let code = CloseCode::for_reason(&shared.final_reason());
                    proto::put_control(&mut batch, big, proto::KIND_CLOSE, &[code.to_u8()]);
                    frames = 1;
                }
                last = true;
            } else {
                if batch.capacity() > IDLE_KEEP {
                    batch = BytesMut::new();
                }
                if sealed.capacity() > IDLE_KEEP {
                    sealed = BytesMut::new();
                }
                let ping_at = live.as_ref().map(|l| Instant::from_std(l.ping_at()));
                tokio::select! {
                    biased;
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow_and_update() == Phase::Kill {
                            return;
                        }
                        continue;
                    }
                    () = shared.wake.notified() => {
                        // Let the senders that woke us queue a little more first: one
                        // yield turns a write per message into a write per burst.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    () = sleep_until_opt(ping_at) => {
                        if !live.as_ref().is_some_and(|l| l.ping_due(Instant::now().into_std())) {
                            continue;
                        }
                        proto::put_control(&mut batch, big, proto::KIND_HEARTBEAT, &[]);
                        frames = 1;
                    }
                }
            }
        } else {
            shared.space.notify_waiters();
        }
        let bytes: &[u8] = match &mut sealer {
            Some(s) => {
                s.seal_over(&batch, &mut sealed);
                &sealed
            }
            None => &batch,
        };
        let n = bytes.len();
        let res = tokio::select! {
            biased;
            r = wr.write_all(bytes) => r,
            () = wait_kill(&mut phase) => return,
        };
        if let Err(e) = res {
            shared.kill(CloseReason::io(e));
            return;
        }
        stats.frames_written.fetch_add(frames, Ordering::Relaxed);
        stats.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(l) = &mut live {
            l.on_send(Instant::now().into_std());
        }
        batch.clear();
        if last {
            let _ = wr.shutdown().await;
            shared.flushed.send_replace(true);
            // Keep the write half (and so the socket) open until the reader is done.
            let _ = wait_kill(&mut phase).await;
            return;
        }
    }
}

async fn wait_kill(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p == Phase::Kill).await;
}
