//! The public [`Connection`] handle: connect, send, close, watch.

use std::borrow::Borrow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use hail_wire::{Binary, FrameCodec, PayloadCodec, WireError};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::AbortHandle;

use super::queue::Queued;
use super::{ConnStats, Counters, Outbox, Phase, Push, Shared, encode_message, reader, writer};
use crate::budget::{Account, Budget, Hold};
use crate::chan;
use crate::config::{Framing, LinkConfig};
use crate::error::{CloseReason, LinkError};
use crate::events::{EventSender, Events, Incoming, ServerEvent, Sink};
use crate::handshake::{self, Established};
use crate::id::ConnId;

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
        config: LinkConfig,
        payload: P,
    ) -> Result<(Self, Incoming<P::Item>), LinkError> {
        let est = handshake::dial(addr, &config, config.handshake_timeout).await?;
        let (tx, rx) = chan::channel(config.incoming_capacity);
        let conn = Self::start(est, &config, payload, Sink::Own(tx), None, None);
        Ok((conn, Events::new(rx)))
    }

    /// Dials `addr` like [`connect`](Self::connect), but hands the connection's messages,
    /// undecodable frames and end to `events`, as a [`Server`](crate::Server) does for
    /// its connections ([`ServerEvent::Message`], [`ServerEvent::Undecodable`] and
    /// [`ServerEvent::Closed`], with this connection's [`id`](Self::id); no `Connected`):
    /// one stream, read by one task, for many dialed connections, with the same
    /// backpressure (a full stream stops the connection reading, and TCP slows its peer).
    ///
    /// The connection reads nothing until the returned [`ReadGate`] is opened or dropped,
    /// so its owner can register it first and never sees an event of a connection it
    /// does not know yet.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), hail_link::LinkError> {
    /// use hail_link::{Connection, Events, LinkConfig, ServerEvent};
    /// use hail_wire::Binary;
    ///
    /// let (tx, mut events) = Events::channel(1024);
    /// let addr = "127.0.0.1:7000".parse().unwrap();
    /// let (conn, gate) = Connection::connect_into(addr, LinkConfig::default(), Binary, &tx).await?;
    /// let mine = conn.id(); // remember it, then let it read
    /// gate.open();
    /// if let Some(ServerEvent::Message { id, msg }) = events.recv().await {
    ///     assert_eq!(id, mine);
    /// #   let _ = msg;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn connect_into(
        addr: SocketAddr,
        config: LinkConfig,
        payload: P,
        events: &EventSender<ServerEvent<P::Item>>,
    ) -> Result<(Self, ReadGate), LinkError> {
        let est = handshake::dial(addr, &config, config.handshake_timeout).await?;
        let (go, gate) = oneshot::channel();
        let sink = Sink::Server {
            tx: events.tx.clone(),
            id: ConnId::fresh(),
            on_close: None,
        };
        let conn = Self::start(est, &config, payload, sink, None, Some(gate));
        Ok((conn, ReadGate(go)))
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
            rd,
            wr,
            rx,
            sealer,
            peer,
            local,
            peer_key,
        } = est;
        let id = match &sink {
            Sink::Server { id, .. } => *id,
            _ => ConnId::fresh(),
        };
        let budget = cfg.budget.clone().unwrap_or_default();
        let mut outbox = Outbox::new(budget.clone());
        if let Some((buf, frames)) = seed {
            budget.take(buf.len());
            outbox.charged = buf.len();
            outbox.q = Queued::from_buf(buf);
            outbox.frames = frames;
        }
        // Every frame the link accepts must be able to arrive whole: a share below one
        // largest frame (header included) and one sealed record would stall it.
        let share = budget.peer_share().max(
            (cfg.max_frame_len as usize)
                .saturating_add(hail_wire::frame::HEADER_LEN + crate::seal::MAX_RECORD),
        );
        let shared = Arc::new(Shared {
            id,
            peer,
            local,
            secure: sealer.is_some(),
            peer_key: peer_key.map(Box::new),
            frames: FrameCodec::builder()
                .byte_order(cfg.byte_order)
                .max_frame_len(cfg.max_frame_len)
                .build(),
            hail: cfg.framing == Framing::Hail,
            limit: cfg.queue_bytes,
            account: Account::new(budget),
            share,
            stall: cfg.budget_stall,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            out: Mutex::new(outbox),
            wake: Notify::new(),
            space: Notify::new(),
            phase: watch::Sender::new(Phase::Open),
            reason: OnceLock::new(),
            done: watch::Sender::new(false),
            flushed: watch::Sender::new(false),
            stats: Counters::default(),
        });
        let hb = cfg.heartbeat_active();
        let reader = tokio::spawn(reader::run(Box::new(reader::Start {
            shared: Arc::clone(&shared),
            rd,
            rx,
            payload: payload.clone(),
            sink,
            hb,
            linger: cfg.close_linger,
            gate,
        })));
        let writer = tokio::spawn(writer::run(Box::new(writer::Start {
            shared: Arc::clone(&shared),
            wr,
            sealer,
            hb,
            order: cfg.byte_order,
        })));
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

/// Holds a connection made by [`Connection::connect_into`] back from reading until it is
/// [`open`](Self::open)ed or dropped.
#[derive(Debug)]
pub struct ReadGate(oneshot::Sender<()>);

impl ReadGate {
    /// Lets the connection read (dropping the gate does the same).
    pub fn open(self) {
        let _ = self.0.send(());
    }
}

impl Connection<Binary> {
    /// Queues one message made of `parts` written one after another (a header of the
    /// caller's and a payload, say), waiting while the send queue is full: the parts are
    /// copied once, straight into the send queue, with no buffer of their own in between.
    /// The receiver gets one message of their total length. Errors and cancel safety as
    /// for [`send`](Self::send).
    ///
    /// ```no_run
    /// # async fn demo(conn: hail_link::Connection) -> Result<(), hail_link::LinkError> {
    /// conn.send_parts(&[b"M", b"payload"]).await?; // the peer receives b"Mpayload"
    /// # Ok(()) }
    /// ```
    pub async fn send_parts(&self, parts: &[&[u8]]) -> Result<(), LinkError> {
        self.push_waiting(|dst| self.encode_parts(parts, dst)).await
    }

    /// [`send_parts`](Self::send_parts) if the send queue has room, or
    /// [`LinkError::Full`] at once.
    pub fn try_send_parts(&self, parts: &[&[u8]]) -> Result<(), LinkError> {
        self.push_now(|dst| self.encode_parts(parts, dst))
    }

    /// Queues one message of `head` followed by `payload`, waiting while the send queue is
    /// full: `head` (a tag of the caller's, say; empty for none) is copied into the send
    /// queue, `payload` is not copied when it is [`SEND_COPY_BELOW`](crate::SEND_COPY_BELOW)
    /// (512) bytes or longer. It is kept as it is until written: written from where its
    /// owner put it by a vectored write on a plaintext link, or sealed from there on a
    /// secured one (the seal's copy then the only one). The receiver gets one message of
    /// `head` and `payload`, in order with every other message sent on the link.
    ///
    /// A kept payload counts its length in the send queue's bound and in the memory
    /// budget, as a copied one does. It also keeps whatever owns its bytes alive until it
    /// is written (a [`Bytes`] cut from a larger buffer keeps that buffer): hand it a
    /// payload of its own. Errors and cancel safety as for [`send`](Self::send); on an
    /// error the payload is dropped (clone it first to try again: a reference count).
    ///
    /// ```no_run
    /// # async fn demo(conn: hail_link::Connection) -> Result<(), hail_link::LinkError> {
    /// use bytes::Bytes;
    ///
    /// let frame = Bytes::from(vec![7u8; 64 * 1024]);
    /// conn.send_bytes(b"M", frame).await?; // the peer receives b"M" and the 64 KiB
    /// # Ok(()) }
    /// ```
    pub async fn send_bytes(&self, head: &[u8], payload: Bytes) -> Result<(), LinkError> {
        if payload.len() < super::SEND_COPY_BELOW {
            return self.send_parts(&[head, &payload]).await;
        }
        let mut payload = Some(payload);
        self.waiting(|| self.shared.push_kept(head, &mut payload))
            .await
    }

    /// [`send_bytes`](Self::send_bytes) if the send queue has room, or
    /// [`LinkError::Full`] at once (the payload then dropped).
    pub fn try_send_bytes(&self, head: &[u8], payload: Bytes) -> Result<(), LinkError> {
        if payload.len() < super::SEND_COPY_BELOW {
            return self.try_send_parts(&[head, &payload]);
        }
        self.shared
            .link_result(self.shared.push_kept(head, &mut Some(payload)))
    }

    fn encode_parts(&self, parts: &[&[u8]], dst: &mut BytesMut) -> Result<(), WireError> {
        let hail = self.shared.hail;
        self.shared.frames.encode_with(dst, |dst| {
            if hail {
                dst.put_u8(crate::proto::KIND_MESSAGE);
            }
            for part in parts {
                dst.put_slice(part);
            }
            Ok(())
        })
    }
}

impl<P: PayloadCodec> Connection<P> {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// This connection's id (unique in the process; the server's [`ClientId`](crate::ClientId)).
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

    /// The peer's identity key, as the handshake proved it: `Some` exactly when both ends
    /// were configured with [`LinkConfigBuilder::identity`](crate::LinkConfigBuilder::identity) (Noise `XX` or `XXpsk0`), in which
    /// the peer proved its identity key (its Noise static key is that key's X25519
    /// form). `None` on plaintext and `NNpsk0` links, which prove no individual key.
    pub fn peer_key(&self) -> Option<hail_crypto::PublicKey> {
        self.shared.peer_key.as_deref().copied()
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
        self.push_waiting(|dst| self.encode_frame(msg, dst)).await
    }

    /// Queues `msg` if the send queue has room, or fails with [`LinkError::Full`].
    pub fn try_send(&self, msg: impl Borrow<P::Item>) -> Result<(), LinkError> {
        self.push_now(|dst| self.encode_frame(msg.borrow(), dst))
    }

    /// Queues the frame `write` appends, waiting while the send queue is full.
    async fn push_waiting(
        &self,
        write: impl Fn(&mut BytesMut) -> Result<(), WireError>,
    ) -> Result<(), LinkError> {
        self.waiting(|| self.shared.push(&write, true)).await
    }

    /// Runs `push` until it finds room in the send queue, waiting for room after each
    /// `Full`.
    async fn waiting(&self, mut push: impl FnMut() -> Result<(), Push>) -> Result<(), LinkError> {
        // Fast path: room in the queue, no waiter registration.
        match push() {
            Err(Push::Full) => {}
            r => return self.shared.link_result(r),
        }
        loop {
            let notified = self.shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match push() {
                Err(Push::Full) => notified.await,
                r => return self.shared.link_result(r),
            }
        }
    }

    /// Queues the frame `write` appends if there is room.
    fn push_now(
        &self,
        write: impl FnOnce(&mut BytesMut) -> Result<(), WireError>,
    ) -> Result<(), LinkError> {
        self.push_now_with(write, true)
    }

    fn push_now_with(
        &self,
        write: impl FnOnce(&mut BytesMut) -> Result<(), WireError>,
        budgeted: bool,
    ) -> Result<(), LinkError> {
        self.shared.link_result(self.shared.push(write, budgeted))
    }

    /// Queues an already encoded frame if there is room (broadcast). Only the queue's
    /// own bound applies: a budget spent by others must not make a reading client look
    /// like a slow consumer.
    pub(crate) fn try_send_frame(&self, frame: &[u8]) -> Result<(), LinkError> {
        self.push_now_with(
            |dst| {
                dst.extend_from_slice(frame);
                Ok(())
            },
            false,
        )
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

    /// The memory budget this connection draws on ([`LinkConfig::budget`], or one of its
    /// own when none was set).
    pub fn budget(&self) -> &Budget {
        &self.shared.account.budget
    }

    /// A [`Hold`] of 0 bytes on this connection: what a layer above keeps of what the
    /// peer sent (a message waiting for the application, say) counts, until the hold is
    /// dropped, in the budget and in this connection's share, as its undelivered messages
    /// do. While the connection holds its share its reading pauses (TCP flow control slows
    /// the peer down); other connections read on. See [`Budget`] for the rules.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use hail_link::{Connection, LinkConfig, Server, ServerConfig};
    /// use hail_wire::Binary;
    ///
    /// let (server, _events) = Server::bind("127.0.0.1:0".parse()?, ServerConfig::default(), Binary).await?;
    /// let (conn, _incoming) = Connection::connect(server.local_addr(), LinkConfig::default(), Binary).await?;
    /// let mut hold = conn.hold();
    /// hold.set(1000);
    /// assert_eq!(conn.budget().in_use(), 1000);
    /// drop(hold);
    /// assert_eq!(conn.budget().in_use(), 0);
    /// # Ok(()) }
    /// ```
    pub fn hold(&self) -> Hold {
        Hold::on(&self.shared.account)
    }

    /// Bytes waiting in the send queue.
    pub fn queued_bytes(&self) -> usize {
        self.shared.out().q.len()
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
