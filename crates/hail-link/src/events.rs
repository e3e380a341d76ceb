//! Event streams: the one bounded stream type [`Events`], the events of servers and
//! clients, and the sink a connection's reader delivers to.
//!
//! This module sits below the connection, the server and the client: a connection hands
//! its messages to a [`Sink`] without knowing who made it.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hail_crypto::PublicKey;

use crate::budget::Charge;
use crate::chan;
use crate::error::CloseReason;
use crate::id::{ClientId, ConnId};

/// A bounded stream of events, in order; a [`Stream`](futures_core::Stream) as well.
///
/// The same type carries a server's events ([`ServerEvents`]), a client's
/// ([`ClientEvents`]) and the messages of one connection ([`Incoming`]); make one of your
/// own with [`Events::channel`]. It holds at most its capacity of events (1024 by default
/// where hail-link makes one, [`DEFAULT_EVENT_CAPACITY`](crate::DEFAULT_EVENT_CAPACITY)):
/// while it is full, senders wait (a connection stops reading, and its peer is slowed down
/// by flow control). Events are handed over in batches, so a burst costs one wake-up of
/// the receiver rather than one per event.
///
/// A connection's messages count in its memory budget ([`Budget`](crate::Budget)) until
/// they are taken, and the last batch taken until the next `recv`/`try_recv`: a consumer
/// that keeps what it takes (in holds of its own, as hail-discovery's device does) takes
/// it over before the bytes are given back, so the budget never counts them nowhere.
/// So ask again promptly: a consumer that, between two `recv`s, waits for something only
/// another link of the same budget can bring keeps its last batch counted meanwhile, and
/// if that batch keeps the budget spent the other link does not read (handle such an event
/// on a task of its own).
///
/// It ends (`None`) once every sender is gone and every event was taken.
pub struct Events<T> {
    rx: chan::Receiver<T>,
}

impl<T> fmt::Debug for Events<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl<T> Events<T> {
    /// A new stream that holds up to `capacity` events (at least 1), and its sender.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, mut events) = hail_link::Events::channel(2);
    /// tx.send("a").await.unwrap();
    /// tx.try_send("b").unwrap();
    /// assert_eq!(tx.try_send("c"), Err("c"), "full");
    /// assert_eq!(events.recv().await, Some("a"));
    /// assert_eq!(events.try_recv(), Some("b"));
    /// drop(tx);
    /// assert_eq!(events.recv().await, None);
    /// # }
    /// ```
    pub fn channel(capacity: usize) -> (EventSender<T>, Self) {
        let (tx, rx) = chan::channel(capacity);
        (EventSender { tx }, Self { rx })
    }

    pub(crate) fn new(rx: chan::Receiver<T>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await
    }

    /// The next event if one is waiting, without waiting; `None` when none is (or the
    /// stream has ended).
    pub fn try_recv(&mut self) -> Option<T> {
        self.rx.try_recv()
    }

    /// Waits for at least one event, then moves up to `limit` available events into
    /// `buf`; returns how many (0 once the stream has ended, or for a `limit` of 0).
    /// Cheaper per event than [`recv`](Self::recv) under load.
    pub async fn recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit).await
    }
}

impl<T> futures_core::Stream for Events<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.rx.poll_recv(cx)
    }
}

/// The sending side of an [`Events`] stream; cheap to clone.
pub struct EventSender<T> {
    pub(crate) tx: chan::Sender<T>,
}

impl<T> Clone for EventSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T> fmt::Debug for EventSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSender").finish_non_exhaustive()
    }
}

impl<T> EventSender<T> {
    /// Sends one event, waiting while the stream is full; gives it back if the stream
    /// was dropped.
    pub async fn send(&self, event: T) -> Result<(), T> {
        self.tx.send(event).await
    }

    /// Sends one event if the stream has room now; gives it back otherwise (full, or
    /// dropped).
    pub fn try_send(&self, event: T) -> Result<(), T> {
        self.tx.try_send(event)
    }

    /// Sends every event of `batch`, in order, waiting for room (one hand-over per
    /// batch that fits); returns how many could not be delivered because the stream was
    /// dropped. Cancel-safe: what was not sent stays in `batch`.
    pub async fn send_all(&self, batch: &mut Vec<T>) -> u64 {
        self.tx.send_all(batch, |e| e, &mut None).await
    }
}

/// The messages of one connection made with [`Connection::connect`](crate::Connection::connect),
/// in order; a [`Stream`](futures_core::Stream) as well.
///
/// Ends (`None`) when the connection has ended;
/// [`Connection::closed`](crate::Connection::closed) says why.
pub type Incoming<T> = Events<T>;

/// What happens on a server.
///
/// Small (56 bytes with `T = Bytes`, checked by a unit test): every message is moved as
/// one of these through the event channel, so the rare large field (the `Connected`
/// event's key) is boxed rather than making each message event its size.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerEvent<T> {
    /// A client finished its handshake, proved itself (its identity, or its key
    /// confirmation on an `NNpsk0` link) and was admitted.
    Connected {
        /// The client's id.
        id: ClientId,
        /// The client's address.
        addr: SocketAddr,
        /// The client's identity key, proven in the handshake (`Some` exactly when the
        /// server's config has an [`identity`](crate::LinkConfigBuilder::identity); the same as
        /// [`Connection::peer_key`](crate::Connection::peer_key)). Boxed: a
        /// [`PublicKey`] is about 200 bytes (a decompressed point), and inline it made
        /// every event, each message among them, that large (see [`ServerEvent`]'s size
        /// note).
        peer_key: Option<Box<PublicKey>>,
    },
    /// A client sent a message.
    Message {
        /// The sender.
        id: ClientId,
        /// The decoded message.
        msg: T,
    },
    /// A client sent a frame its payload codec could not decode (a Python Comms
    /// string-mode peer on a `Json` link, say). The frame is dropped, the connection goes
    /// on; counted in [`ServerStats::undecodable`](crate::ServerStats::undecodable). In
    /// order with the client's messages, and held back like them when the stream is full.
    Undecodable {
        /// The sender.
        id: ClientId,
        /// What the codec said.
        error: String,
    },
    /// A client's connection ended; no more events for this id follow.
    Closed {
        /// The client's id.
        id: ClientId,
        /// Why it ended.
        reason: CloseReason,
    },
}

/// The server's event stream; a [`Stream`](futures_core::Stream) as well.
///
/// Take events continuously: when the stream's buffer (default 1024 events) is full, the
/// connections stop reading and their peers are slowed down by TCP flow control.
/// [`recv`](Events::recv) returns `None` once the server is shut down and every
/// connection reported; [`run_callbacks`](Events::run_callbacks) runs Python
/// Comms-style callbacks.
pub type ServerEvents<T> = Events<ServerEvent<T>>;

/// What happens on a client; small like [`ServerEvent`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent<T> {
    /// Connected (first connection or a reconnection) to the server at `addr`.
    Connected {
        /// The server's address.
        addr: SocketAddr,
        /// The server's identity key, proven in this connection's handshake (`Some`
        /// exactly when the client's config has an [`identity`](crate::LinkConfigBuilder::identity)).
        /// A reconnection may reach another process at the same address: compare it.
        /// Boxed, as in [`ServerEvent::Connected`], to keep every event small.
        peer_key: Option<Box<PublicKey>>,
    },
    /// The connection ended. With reconnection on, the client keeps trying.
    Disconnected {
        /// Why it ended.
        reason: CloseReason,
    },
    /// A message from the server.
    Message(T),
    /// The server sent a frame the payload codec could not decode; it is dropped, the
    /// connection goes on; counted in [`ClientStats::undecodable`](crate::ClientStats).
    Undecodable {
        /// What the codec said.
        error: String,
    },
}

/// The client's event stream; a [`Stream`](futures_core::Stream) as well. It ends after
/// the client is closed (or, without reconnection, after the connection ended).
pub type ClientEvents<T> = Events<ClientEvent<T>>;

/// Runs when a server's connection ends (with the reason), before its `Closed` event;
/// what it returns is dropped after the event was sent.
pub(crate) type OnClose = Box<dyn FnOnce(&CloseReason) -> Box<dyn Any + Send> + Send + Sync>;

/// Where a connection's incoming messages go.
pub(crate) enum Sink<T> {
    /// A connection of its own ([`Incoming`]).
    Own(chan::Sender<T>),
    /// One of a server's connections.
    Server {
        tx: chan::Sender<ServerEvent<T>>,
        id: ConnId,
        on_close: Option<OnClose>,
    },
    /// A client's current connection.
    Client(chan::Sender<ClientEvent<T>>),
}

impl<T> Sink<T> {
    /// Hands every message of `batch` over, in order, waiting for room; returns how many
    /// could not be delivered because the receiver is gone. `charge` (what the batch
    /// holds of the budget) goes with it and is released once the receiver took it all.
    pub(crate) async fn deliver_all(&self, batch: &mut Vec<T>, charge: &mut Option<Charge>) -> u64 {
        match self {
            Self::Own(tx) => tx.send_all(batch, |m| m, charge).await,
            Self::Server { tx, id, .. } => {
                let id = *id;
                tx.send_all(batch, |msg| ServerEvent::Message { id, msg }, charge)
                    .await
            }
            Self::Client(tx) => tx.send_all(batch, ClientEvent::Message, charge).await,
        }
    }

    /// A frame could not be decoded: reported in order with the messages, waiting for
    /// room like them, to a server's or a client's stream (a connection of its own only
    /// counts it). Returns false when the receiver is gone.
    pub(crate) async fn undecodable(&self, error: String) -> bool {
        match self {
            Self::Own(_) => true,
            Self::Server { tx, id, .. } => tx
                .send(ServerEvent::Undecodable { id: *id, error })
                .await
                .is_ok(),
            Self::Client(tx) => tx.send(ClientEvent::Undecodable { error }).await.is_ok(),
        }
    }

    /// The connection ended: a server's connection reports it (a client's supervisor
    /// reports it itself).
    pub(crate) async fn closed(self, reason: CloseReason) {
        if let Self::Server { tx, id, on_close } = self {
            let guard = on_close.map(|f| f(&reason));
            let _ = tx.send(ServerEvent::Closed { id, reason }).await;
            drop(guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each message is moved as an event (written by the reader, moved through the
    /// channel, out to the consumer): at 240 bytes that was a large share of the cost of
    /// a 64-byte message.
    #[test]
    fn events_stay_small() {
        use std::mem::size_of;
        assert!(
            size_of::<ServerEvent<bytes::Bytes>>() <= 56,
            "{}",
            size_of::<ServerEvent<bytes::Bytes>>()
        );
        assert!(
            size_of::<ClientEvent<bytes::Bytes>>() <= 56,
            "{}",
            size_of::<ClientEvent<bytes::Bytes>>()
        );
    }

    #[tokio::test]
    async fn a_stream_of_your_own() {
        let (tx, mut events) = Events::channel(3);
        let mut batch = vec![1, 2, 3, 4];
        let all = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send_all(&mut batch).await }
        });
        let mut got = Vec::new();
        while got.len() < 4 {
            events.recv_many(&mut got, 10).await;
        }
        assert_eq!(all.await.unwrap(), 0);
        assert_eq!(got, [1, 2, 3, 4]);
        assert_eq!(events.try_recv(), None);
        drop(events);
        assert_eq!(tx.send(5).await, Err(5), "the stream is gone");
        assert_eq!(tx.send_all(&mut vec![6, 7]).await, 2);
    }
}
